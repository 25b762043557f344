"""A PostgreSQL cluster of our own (Debian's binaries), for tests that need a real server.

Its own data dir, socket dir and free port: the machine's PostgreSQL on 5432 is never touched.
Running as root, `initdb` and `postgres` run as the `postgres` user (the server refuses root).
Authentication is `trust` on 127.0.0.1 only: a throwaway cluster for one test session.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from iotgw.localstack.processes import (
    StackError,
    chown_tree,
    live_pid,
    require_free,
    run,
    service_user,
    spawn,
    tail,
    terminate,
    wait_until,
)

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def pg_bin_dir() -> Path:
    """The newest installed `/usr/lib/postgresql/<version>/bin`."""
    versions = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if not versions:
        raise StackError(f"no PostgreSQL server under {PG_ROOT}: install the postgresql package")
    return versions[-1]


class PostgresNode:
    """One cluster under `base_dir`, listening on 127.0.0.1:`port`."""

    def __init__(self, base_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.base_dir = base_dir
        self.port = port
        self.host = host
        self.bin = pg_bin_dir()
        self.user = service_user("postgres")

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        """The server's output."""
        return self.base_dir / "postgres.log"

    @property
    def pid_file(self) -> Path:
        """Our record of the postmaster's pid."""
        return self.base_dir / "postgres.pid"

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of `database` on this cluster."""
        return f"{driver}://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def start(self, timeout: float = 60) -> None:
        """initdb (skipped on a restart: the cluster exists), start, wait for connections."""
        require_free({"postgresql": self.port})
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        (self.base_dir / "run").mkdir(exist_ok=True)
        chown_tree(self.base_dir, self.user)
        if not (self.data_dir / "PG_VERSION").is_file():
            init = run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
                user=self.user,
                timeout=120,
            )
            if init.returncode != 0:
                raise StackError(f"initdb failed: {init.stdout}{init.stderr}")
        proc = spawn(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-k",
                str(self.base_dir / "run"),
                "-c",
                f"listen_addresses={self.host}",
                # A test cluster: durability traded for speed, like the other test services.
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            env={"LANG": "C.UTF-8"},
            log_file=self.log_file,
            user=self.user,
        )
        self.pid_file.write_text(str(proc.pid))

        def ready() -> bool:
            if proc.poll() is not None:
                raise StackError(f"postgres exited with {proc.returncode}:\n{tail(self.log_file)}")
            return self._psql("SELECT 1").returncode == 0

        wait_until(ready, timeout, "postgresql")

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        return run(
            [
                str(self.bin / "psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            timeout=30,
        )

    def create_database(self, name: str) -> None:
        """Create database `name` (a plain identifier: letters, digits, '_')."""
        self._checked(f'CREATE DATABASE "{_identifier(name)}"')

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting whoever still uses it."""
        self._checked(f'DROP DATABASE IF EXISTS "{_identifier(name)}" WITH (FORCE)')

    def _checked(self, sql: str) -> None:
        result = self._psql(sql)
        if result.returncode != 0:
            raise StackError(f"psql {sql!r}: {result.stderr.strip()}")

    def pid(self) -> int | None:
        """The postmaster's pid when it is alive."""
        return live_pid(self.pid_file)

    def stop(self) -> None:
        """Stop the server (SIGINT: fast shutdown); harmless when it is not running."""
        pid = self.pid()
        if pid is None:
            return
        # SIGTERM would wait for every client (a test's pooled connections) to leave.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        # terminate() reaps our child; its SIGTERM cannot downgrade a fast shutdown already begun.
        terminate(pid)


def _identifier(name: str) -> str:
    if not _IDENT_RE.fullmatch(name):
        raise ValueError(f"database name {name!r} must be letters, digits and '_'")
    return name


_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
