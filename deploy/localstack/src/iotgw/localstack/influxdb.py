"""Our own InfluxDB 1.x (Debian's `influxdb`) and, for the v2 write API, VictoriaMetrics.

InfluxDB 1.6 takes `-config` with its own meta, data and wal paths and bind addresses.
VictoriaMetrics (Debian's `victoria-metrics`) serves `/api/v2/write`, which is how the v2 path of
the ingest writer is tested against a real server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from iotgw.localstack.processes import (
    StackError,
    chown_tree,
    live_pid,
    require_free,
    service_user,
    spawn,
    tail,
    terminate,
    wait_until,
)


def _get_ok(url: str, codes: tuple[int, ...] = (200, 204)) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code in codes
    except httpx.HTTPError:
        return False


@dataclass
class InfluxNode:
    """An InfluxDB 1.x server under `base_dir` answering HTTP on `http_port`."""

    base_dir: Path
    http_port: int
    rpc_port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Base URL of the HTTP API (v1: /write, /query)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid_file(self) -> Path:
        """Our record of the server's pid."""
        return self.base_dir / "influxd.pid"

    @property
    def log_file(self) -> Path:
        """The server's output."""
        return self.base_dir / "influxd.log"

    def _write_config(self) -> Path:
        d = self.base_dir
        conf = d / "influxdb.conf"
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d / "meta"}"

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.http_port}"
  log-enabled = false
  max-body-size = 0

[logging]
  level = "warn"

[continuous_queries]
  log-enabled = false
"""
        )
        return conf

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until /ping answers."""
        require_free({"influxdb http": self.http_port, "influxdb rpc": self.rpc_port})
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        conf = self._write_config()
        user = service_user("influxdb")
        chown_tree(self.base_dir, user)
        proc = spawn(["influxd", "-config", str(conf)], env={}, log_file=self.log_file, user=user)
        self.pid_file.write_text(str(proc.pid))

        def ready() -> bool:
            if proc.poll() is not None:
                raise StackError(f"influxd exited with {proc.returncode}:\n{tail(self.log_file)}")
            return self.ping()

        wait_until(ready, timeout, "influxdb")

    def ping(self) -> bool:
        """True when the server answers /ping."""
        return _get_ok(self.url + "/ping")

    def pid(self) -> int | None:
        """The server's pid when it is alive."""
        return live_pid(self.pid_file)

    def stop(self) -> None:
        """Stop the server; harmless when it is not running."""
        pid = self.pid()
        if pid is not None:
            terminate(pid)

    def query(self, q: str, db: str | None = None) -> dict[str, object]:
        """Run an InfluxQL statement through /query; raise StackError on an error answer."""
        params = {"q": q, **({"db": db} if db else {})}
        response = httpx.post(self.url + "/query", params=params, timeout=30)
        body: dict[str, object] = response.json()
        if response.status_code >= 300 or "error" in body:
            raise StackError(f"influxdb query {q!r}: {response.status_code} {body}")
        return body

    def scalar(self, q: str, db: str | None = None) -> int:
        """The single number a `SELECT count(...)`-style query returns (0 when no series)."""
        body = self.query(q, db)
        results = body.get("results")
        if not isinstance(results, list) or not results:
            return 0
        series = results[0].get("series")
        return int(series[0]["values"][0][1]) if series else 0


@dataclass
class VictoriaNode:
    """A VictoriaMetrics single node, the real server behind the v2 write API tests."""

    base_dir: Path
    http_port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Base URL (`/api/v2/write`, `/api/v1/export`, `/health`)."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def pid_file(self) -> Path:
        """Our record of the server's pid."""
        return self.base_dir / "victoria-metrics.pid"

    def start(self, timeout: float = 60) -> None:
        """Start the server and wait until /health answers."""
        require_free({"victoria-metrics http": self.http_port})
        self.base_dir.mkdir(parents=True, exist_ok=True)
        log = self.base_dir / "victoria-metrics.log"
        proc = spawn(
            [
                "victoria-metrics",
                f"-storageDataPath={self.base_dir / 'data'}",
                f"-httpListenAddr={self.host}:{self.http_port}",
                "-loggerLevel=WARN",
                "-retentionPeriod=1d",
                # Tests read back what they wrote at once; skip the query cache and its delay.
                "-search.disableCache",
                "-search.latencyOffset=0s",
            ],
            env={},
            log_file=log,
        )
        self.pid_file.write_text(str(proc.pid))

        def ready() -> bool:
            if proc.poll() is not None:
                raise StackError(f"victoria-metrics exited with {proc.returncode}:\n{tail(log)}")
            return _get_ok(self.url + "/health", (200,))

        wait_until(ready, timeout, "victoria-metrics")

    def stop(self) -> None:
        """Stop the server; harmless when it is not running."""
        pid = live_pid(self.pid_file)
        if pid is not None:
            terminate(pid)
