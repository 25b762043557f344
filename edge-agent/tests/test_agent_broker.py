"""The agent against the real RabbitMQ MQTT plugin, run through its CLI as on a module."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.contracts.payloads import DesiredConfig
from iotgw.contracts.topology import STATE_QUEUE, STATUS_QUEUE, TELEMETRY_QUEUE
from iotgw.localstack.pytest_plugin import Broker
from iotgw.localstack.rabbitmq import RabbitNode

AGENT = [sys.executable, "-m", "iotgw.edge_agent"]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until true; fail the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@dataclass
class AgentRun:
    """An agent subprocess with its config file and state dir."""

    config: Path
    state_dir: Path
    log: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The current process."""
        return self.procs[-1]

    def start(self, **overrides: Any) -> subprocess.Popen[bytes]:
        """Start (or restart) the agent; `overrides` become IOTGW_* variables."""
        env = dict(self.env)
        env.update({f"IOTGW_{k.upper()}": str(v) for k, v in overrides.items()})
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [*AGENT, "--config", str(self.config)], env=env, stdout=log, stderr=log
            )
        self.procs.append(proc)
        return proc

    def kill9(self) -> None:
        """SIGKILL the current process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.proc.terminate()
        return self.proc.wait(20)

    def db(self, sql: str) -> Any:
        """Run one read-only query on the agent's buffer (it is WAL: readers do not block it)."""
        path = self.state_dir / "agent.db"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None  # the agent has created the file but not its schema yet
            raise
        finally:
            db.close()

    def buffered(self) -> int:
        """Readings in the buffer."""
        if not (self.state_dir / "agent.db").exists():
            return 0
        row = self.db("SELECT COUNT(*) FROM readings")
        return int(row[0]) if row else 0

    def next_seq(self) -> int:
        """The seq the next reading will get."""
        if not (self.state_dir / "agent.db").exists():
            return 0
        row = self.db("SELECT next_seq FROM devices")
        return int(row[0]) if row else 0


@pytest.fixture
def device_user(broker: Broker) -> Callable[[str, str], tuple[str, str]]:
    """Create the broker user of a device; returns (MQTT username with vhost, password)."""

    def make(client: str, device: str) -> tuple[str, str]:
        user, password = f"{client}.{device}", uuid.uuid4().hex
        broker.node.add_user(user, password)
        broker.node.set_permissions(user, broker.vhost, ".*", ".*", ".*")
        return user, password

    return make


@pytest.fixture
def agent(
    tmp_path: Path, broker: Broker, device_user: Callable[[str, str], tuple[str, str]]
) -> Iterator[AgentRun]:
    """An agent for device acme/dev-1 on the test's vhost, sampling every 50 ms (not started)."""
    _, password = device_user("acme", "dev-1")
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(
        "\n".join(
            [
                'client = "acme"',
                'device = "dev-1"',
                f'mqtt_host = "{broker.mqtt_host}"',
                f"mqtt_port = {broker.mqtt_port}",
                f'mqtt_vhost = "{broker.vhost}"',
                f'state_dir = "{state}"',
                'sensors = ["counter"]',
                "sampling_interval_s = 0.05",
                "backoff_min_s = 0.2",
                "backoff_max_s = 1.0",
                "mqtt_keepalive_s = 5",
                "",
            ]
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    # The secret comes from the environment, as it would on a module (not from the file).
    env["IOTGW_MQTT_PASSWORD"] = password
    run = AgentRun(config, state, tmp_path / "agent.log", env)
    yield run
    for proc in run.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def drain(
    broker: Broker, queue: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """Consume JSON bodies from `queue` until `until(bodies)` holds; fail after `timeout` s."""
    channel = broker.channel()
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for method, _props, body in channel.consume(queue, inactivity_timeout=0.5):
        if method is not None:
            bodies.append(json.loads(body))
            channel.basic_ack(method.delivery_tag)
        if until(bodies):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{queue}: condition not met after {timeout} s; got {len(bodies)} messages")
    channel.cancel()
    return bodies


@pytest.fixture
def consume(broker: Broker) -> Callable[..., list[dict[str, Any]]]:
    """`consume(queue, until, timeout)`: bodies of `queue` until `until(bodies)` holds."""

    def run(
        queue: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
    ) -> list[dict[str, Any]]:
        return drain(broker, queue, until, timeout)

    return run


def assert_complete_in_order(bodies: list[dict[str, Any]], last_seq: int) -> None:
    """Every seq 0..last_seq arrived; first arrivals in ascending order (resends may repeat)."""
    first: list[int] = []
    seen: set[int] = set()
    for body in bodies:
        if body["seq"] not in seen:
            seen.add(body["seq"])
            first.append(body["seq"])
    missing = sorted(set(range(last_seq + 1)) - seen)
    assert not missing, f"missing seqs: {missing[:20]} ({len(missing)} in all)"
    assert first == sorted(first), "readings arrived out of order"


@pytest.fixture
def wait() -> Callable[[Callable[[], bool], float, str], None]:
    """`wait(check, timeout, what)`: poll until `check()`; fails naming `what`."""
    return wait_for


@pytest.fixture
def complete_in_order() -> Callable[[list[dict[str, Any]], int], None]:
    """`complete_in_order(bodies, last_seq)`: asserts none missing, first arrivals ordered."""
    return assert_complete_in_order


Wait = Callable[[Callable[[], bool], float, str], None]
Consume = Callable[..., list[dict[str, Any]]]
Check = Callable[[list[dict[str, Any]], int], None]


def test_broker_outage_loses_nothing_and_keeps_order(
    rabbitmq: RabbitNode,
    topology_broker: Broker,
    agent: Any,
    wait: Wait,
    consume: Consume,
    complete_in_order: Check,
) -> None:
    agent.start()
    # Our own connection, closed before the outage (the fixture's would be dead at teardown).
    connection = pika.BlockingConnection(pika.URLParameters(topology_broker.amqp_url))
    channel = connection.channel()

    def queued() -> int:
        return int(channel.queue_declare(TELEMETRY_QUEUE, passive=True).method.message_count)

    try:
        wait(lambda: queued() >= 10, 30, "readings on the queue before the outage")
    finally:
        connection.close()
    for fixture_connection in topology_broker.connections:
        fixture_connection.close()  # the outage would leave them dead for the fixture's teardown
    rabbitmq.stop_app()
    try:
        # The agent keeps sampling into its buffer while the broker is gone.
        wait(lambda: agent.buffered() >= 40, 30, "readings buffered during the outage")
    finally:
        rabbitmq.start_app()
    outage_seq = agent.next_seq()
    wait(
        lambda: agent.next_seq() > outage_seq + 20 and agent.buffered() == 0,
        60,
        "buffer replayed after the broker came back",
    )
    assert agent.terminate() == 0
    last = agent.next_seq() - 1
    bodies = consume(TELEMETRY_QUEUE, lambda b: {x["seq"] for x in b} >= set(range(last + 1)))
    complete_in_order(bodies, last)
    assert last > outage_seq


def test_kill_9_with_readings_buffered_loses_nothing(
    topology_broker: Broker, agent: Any, wait: Wait, consume: Consume, complete_in_order: Check
) -> None:
    # Phase 1: the broker is unreachable (nothing listens on port 1), readings pile up on disk.
    agent.start(mqtt_port=1)
    wait(lambda: agent.buffered() >= 30, 30, "readings buffered while unreachable")
    agent.kill9()
    buffered = agent.buffered()
    assert buffered >= 30
    # Phase 2: connected, killed again in the middle of publishing.
    agent.start()
    wait(lambda: agent.next_seq() > buffered + 20, 30, "agent publishing after restart")
    agent.kill9()
    # Phase 3: restart; everything accepted into the buffer goes out.
    before = agent.next_seq()
    agent.start()
    wait(
        lambda: agent.next_seq() > before + 10 and agent.buffered() == 0,
        60,
        "buffer drained after restart",
    )
    assert agent.terminate() == 0
    last = agent.next_seq() - 1
    bodies = consume(TELEMETRY_QUEUE, lambda b: {x["seq"] for x in b} >= set(range(last + 1)))
    complete_in_order(bodies, last)


def _publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cloud-{time.monotonic_ns()}")
    client.username_pw_set(broker.mqtt_username(), broker.mqtt_password)
    client.connect(broker.mqtt_host, broker.mqtt_port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_retained_config_applied_and_invalid_one_refused(
    topology_broker: Broker, agent: Any, consume: Consume, wait: Wait
) -> None:
    topic = "devices/acme/dev-1/config"
    good = DesiredConfig(version=3, sampling_interval_s=0.2, enabled_sensors=["counter"])
    _publish_retained(topology_broker, topic, good.to_json())
    agent.start()
    states = consume(STATE_QUEUE, lambda b: any(s.get("applied_version") == 3 for s in b))
    assert states[-1]["status"] == "applied"
    # Unknown sensor: refused with the reason, version 3 stays in force.
    bad = DesiredConfig(version=4, enabled_sensors=["camera"])
    _publish_retained(topology_broker, topic, bad.to_json())
    refused = consume(STATE_QUEUE, lambda b: any(s["status"] == "rejected" for s in b))[-1]
    assert refused["applied_version"] == 3
    assert refused["rejected_version"] == 4
    assert "camera" in refused["reason"]
    # Not even JSON: refused too.
    _publish_retained(topology_broker, topic, b"{not json")
    refused = consume(STATE_QUEUE, lambda b: any(s["status"] == "rejected" for s in b))[-1]
    assert refused["applied_version"] == 3
    assert "invalid config" in refused["reason"]
    # The applied config survives a restart (persisted beside the buffer).
    assert agent.terminate() == 0
    assert agent.db("SELECT applied_config FROM devices")[0].find('"version": 3') >= 0


class TcpProxy:
    """A TCP forwarder between the agent and the broker whose connections the test can cut.

    RabbitMQ 3.10 does not close MQTT connections through the management API, so the network
    is cut here: both sockets are shut down, as a dropped link would do. With `tls`, the proxy
    terminates TLS in front of the broker (as a load balancer would), to test the agent's TLS.
    """

    def __init__(self, target_port: int, tls: ssl.SSLContext | None = None) -> None:
        self.target_port = target_port
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.links: list[socket.socket] = []
        self.handshakes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                if self.tls is not None:
                    client = self.tls.wrap_socket(client, server_side=True)
                    self.handshakes += 1
            except OSError:
                if self.listener.fileno() == -1:
                    return
                continue  # a failed handshake: keep serving
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.links += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        with selectors.DefaultSelector() as sel, contextlib.suppress(OSError, ValueError):
            sel.register(a, selectors.EVENT_READ)
            sel.register(b, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        raise OSError("closed")
                    # TLS may hold decrypted bytes that select() does not announce.
                    while isinstance(src, ssl.SSLSocket) and src.pending():
                        data += src.recv(src.pending())
                    peer[src].sendall(data)
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Break every current connection (new ones are accepted again)."""
        links, self.links = self.links, []
        for sock in links:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Stop accepting and cut what is open."""
        self.listener.close()
        self.cut()


def test_cut_connection_gives_offline_then_online_with_newer_epoch(
    topology_broker: Broker, agent: Any, consume: Consume, wait: Wait
) -> None:
    proxy = TcpProxy(topology_broker.mqtt_port)
    try:
        agent.start(mqtt_port=proxy.port)
        first = consume(STATUS_QUEUE, lambda b: any(s["state"] == "online" for s in b))[-1]
        proxy.cut()
        # The broker publishes the Will of the dead connection; the same agent process
        # reconnects (backoff) and announces a newer epoch.
        statuses = consume(
            STATUS_QUEUE,
            lambda b: (
                any(s["state"] == "offline" for s in b) and any(s["state"] == "online" for s in b)
            ),
        )
        offline = next(s for s in statuses if s["state"] == "offline")
        back = next(s for s in statuses if s["state"] == "online")
        assert offline["epoch"] == first["epoch"]
        assert back["epoch"] > first["epoch"]
        assert agent.proc.poll() is None  # same process: it reconnected by itself
    finally:
        proxy.close()


def test_power_loss_gives_offline_then_online_with_newer_epoch(
    topology_broker: Broker, agent: Any, consume: Consume
) -> None:
    agent.start()
    online = consume(STATUS_QUEUE, lambda b: any(s["state"] == "online" for s in b))[-1]
    # The module loses power: its TCP connection dies without DISCONNECT.
    agent.kill9()
    offline = consume(STATUS_QUEUE, lambda b: any(s["state"] == "offline" for s in b))[-1]
    assert offline["epoch"] == online["epoch"]
    agent.start()
    back = consume(STATUS_QUEUE, lambda b: any(s["state"] == "online" for s in b))[-1]
    assert back["epoch"] > offline["epoch"]


def test_tls_when_configured(
    tmp_path: Path, topology_broker: Broker, agent: Any, wait: Wait
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    proxy = TcpProxy(topology_broker.mqtt_port, tls=context)
    channel = topology_broker.channel()
    try:
        agent.start(mqtt_port=proxy.port, mqtt_tls="true", mqtt_ca_file=cert)
        wait(
            lambda: channel.queue_declare(TELEMETRY_QUEUE, passive=True).method.message_count >= 5,
            30,
            "readings over TLS",
        )
        assert proxy.handshakes >= 1
    finally:
        proxy.close()
