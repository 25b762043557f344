"""The `iotgw-api` entry point: migrate-only mode, a wrong setting fails naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

PROGRAM = str(Path(sys.executable).with_name("iotgw-api"))


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    return subprocess.run(
        [PROGRAM, *args],
        check=False,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_migrate_creates_the_registry_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'registry.db'}"
    for _ in range(2):
        done = _run(["migrate"], IOTGW_DATABASE_URL=url)
        assert done.returncode == 0, done.stderr
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"clients", "api_keys", "orders", "devices", "outbox", "alembic_version"} <= tables


def test_a_wrong_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    done = _run(
        ["migrate"], IOTGW_API_PORT="eighty", IOTGW_DATABASE_URL=f"sqlite:///{tmp_path}/r.db"
    )
    assert done.returncode != 0
    assert "IOTGW_API_PORT" in done.stderr
