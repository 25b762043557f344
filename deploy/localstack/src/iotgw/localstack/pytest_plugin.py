"""pytest fixtures: the real services, started once per test session on free ports.

Registered as a pytest plugin (entry point `pytest11`), so every member's tests can use them:
- `rabbitmq`: our own RabbitMQ node (MQTT + management plugins), session-wide;
- `broker`: a fresh vhost on it per test, deleted afterwards, with AMQP and MQTT coordinates;
- `influxdb`: our own InfluxDB 1.x, session-wide; `influx_db`: a fresh database per test;
- `victoria`: VictoriaMetrics, the real server behind the InfluxDB v2 write API tests;
- `postgres`: our own PostgreSQL cluster (tests create and drop their databases on it).
Nothing here touches the machine's own RabbitMQ, Mosquitto or PostgreSQL.

Slow soak and load tests are marked `slow` and run only with `pytest --slow`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pika.exceptions
import pytest

from iotgw.contracts.topology import DEFAULT_TOPOLOGY
from iotgw.localstack.influxdb import InfluxNode, VictoriaNode
from iotgw.localstack.postgres import PostgresNode
from iotgw.localstack.processes import free_ports
from iotgw.localstack.rabbitmq import RabbitNode


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add `--slow`, which runs the soak and load tests too."""
    parser.addoption("--slow", action="store_true", help="also run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    """Declare the `slow` marker."""
    config.addinivalue_line("markers", "slow: soak and load runs, skipped unless --slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked slow unless `--slow` was given."""
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def services_dir() -> Iterator[Path]:
    """A directory for the session's service data, readable by the services' own users."""
    path = Path(tempfile.mkdtemp(prefix="iotgw-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbitmq(services_dir: Path) -> Iterator[RabbitNode]:
    """Our own RabbitMQ node on free ports, for the whole session."""
    node = RabbitNode.on_free_ports(services_dir / "rabbitmq", "iotgw-test")
    node.start()
    yield node
    node.stop()


@dataclass
class Broker:
    """One test's slice of the broker: its own vhost, reachable over AMQP and MQTT."""

    node: RabbitNode
    vhost: str
    connections: list[pika.BlockingConnection] = field(default_factory=list)

    @property
    def amqp_url(self) -> str:
        """AMQP URL of the vhost, admin credentials."""
        return self.node.endpoints.amqp_url(self.vhost)

    @property
    def mqtt_host(self) -> str:
        """MQTT host."""
        return self.node.endpoints.host

    @property
    def mqtt_port(self) -> int:
        """MQTT port of the node."""
        return self.node.endpoints.mqtt_port

    def mqtt_username(self, user: str | None = None) -> str:
        """The MQTT plugin picks the vhost from a `vhost:user` username."""
        return f"{self.vhost}:{user or self.node.endpoints.username}"

    @property
    def mqtt_password(self) -> str:
        """Password of the admin user."""
        return self.node.endpoints.password

    def channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        """A new blocking channel on the vhost (its connection closes with the test)."""
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        self.connections.append(connection)
        return connection.channel()


@pytest.fixture
def broker(rabbitmq: RabbitNode) -> Iterator[Broker]:
    """A fresh vhost for one test, deleted afterwards."""
    vhost = f"t-{uuid.uuid4().hex[:10]}"
    rabbitmq.add_vhost(vhost)
    slice_ = Broker(rabbitmq, vhost)
    yield slice_
    for connection in slice_.connections:
        # A test that stopped the broker (stop_app) leaves connections that cannot close cleanly.
        if connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()
    rabbitmq.delete_vhost(vhost)


@pytest.fixture
def topology_broker(broker: Broker) -> Broker:
    """A fresh vhost with the platform's topology declared."""
    DEFAULT_TOPOLOGY.declare(broker.channel())
    return broker


@pytest.fixture(scope="session")
def influxdb(services_dir: Path) -> Iterator[InfluxNode]:
    """Our own InfluxDB 1.x on free ports, for the whole session."""
    http, rpc = free_ports(2)
    node = InfluxNode(services_dir / "influxdb", http, rpc)
    node.start()
    yield node
    node.stop()


@dataclass(frozen=True)
class InfluxDatabase:
    """One test's database on the session's InfluxDB."""

    node: InfluxNode
    name: str

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return self.node.url


@pytest.fixture
def influx_db(influxdb: InfluxNode) -> Iterator[InfluxDatabase]:
    """A fresh database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    influxdb.query(f'CREATE DATABASE "{name}"')
    yield InfluxDatabase(influxdb, name)
    if influxdb.ping():
        influxdb.query(f'DROP DATABASE "{name}"')


@pytest.fixture(scope="session")
def victoria(services_dir: Path) -> Iterator[VictoriaNode]:
    """VictoriaMetrics on a free port: a real server for InfluxDB's v2 write API."""
    (port,) = free_ports(1)
    node = VictoriaNode(services_dir / "victoria", port)
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def postgres(services_dir: Path) -> Iterator[PostgresNode]:
    """Our own PostgreSQL cluster on a free port, for the whole session (never the machine's)."""
    (port,) = free_ports(1)
    node = PostgresNode(services_dir / "postgres", port)
    node.start()
    yield node
    node.stop()
