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

from iotgw.cloud_bridge.api.settings import ApiSettings
from iotgw.cloud_bridge.api.testing import ApiServer, serve_api
from iotgw.cloud_bridge.registry.database import make_engine, migrate, session_factory
from iotgw.localstack.postgres import PostgresNode
from iotgw.localstack.pytest_plugin import Broker


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


OPERATOR_KEY = "test-operator-key-" + uuid.uuid4().hex


@pytest.fixture
def api_settings(database_url: str, topology_broker: Broker) -> ApiSettings:
    """Settings pointing at the test's database and vhost; no InfluxDB unless overridden."""
    return ApiSettings(
        database_url=database_url,
        amqp_url=topology_broker.amqp_url,
        operator_key=OPERATOR_KEY,
        influx_url="http://127.0.0.1:9",
        outbox_poll_interval_s=0.2,
        sse_poll_interval_s=0.1,
    )


@pytest.fixture
def api(sessions: sessionmaker[Session], api_settings: ApiSettings) -> Iterator[ApiServer]:
    """The api on a fresh database and vhost, relay and status consumer running."""
    with serve_api(sessions, api_settings) as server:
        yield server
