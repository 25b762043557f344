"""Fixtures of the cloud-bridge tests: a fresh registry database per test, SQLite and PostgreSQL.

Tests that take `registry_engine` run twice, once per backend; each run creates its own
database (a SQLite file in tmp_path, or a database on the session's own PostgreSQL cluster)
and drops it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.registry.database import make_engine, migrate, session_factory
from iotgw.localstack.postgres import PostgresNode


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty database of its own, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    node: PostgresNode = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    node.create_database(name)
    yield node.url(name)
    node.drop_database(name)


@pytest.fixture
def registry_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty registry."""
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(registry_engine: Engine) -> sessionmaker[Session]:
    """Session factory of the registry under test."""
    return session_factory(registry_engine)
