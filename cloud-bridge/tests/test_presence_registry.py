"""Presence against the real broker and registry: status and state over MQTT into the registry,
reconnect races, dead letters, and desired configs delivered as retained MQTT messages.

Every test runs on SQLite and on PostgreSQL (the `sessions` fixture), with `iotgw-presence`'s
workers running in this process against a fresh vhost with the platform's topology.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.testing import ApiServer, drain, wait_for
from iotgw.cloud_bridge.presence import testing
from iotgw.cloud_bridge.presence.main import Presence
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.cloud_bridge.registry.models import Device
from iotgw.contracts.payloads import DesiredConfig, ReportedState, Status
from iotgw.contracts.topics import DeviceKind, DeviceTopic
from iotgw.contracts.topology import (
    CONFIG_QUEUE,
    HEADER_REASON,
    STATE_QUEUE,
    STATUS_QUEUE,
    TOPIC_EXCHANGE,
)
from iotgw.localstack.pytest_plugin import Broker

CLIENT = "acme"


@dataclass
class Registry:
    """The registry under test with one client and two devices of one order."""

    sessions: sessionmaker[Session]
    devices: list[str]

    def device(self, device_id: str) -> Device:
        """A fresh read of one device row."""
        with self.sessions() as session:
            row = repo.get_device(session, CLIENT, device_id)
            assert row is not None
            return row


@pytest.fixture
def registry(sessions: sessionmaker[Session]) -> Registry:
    """Client `acme` with an order of two devices, written through the repository."""
    with sessions.begin() as session:
        repo.create_client(session, CLIENT)
        placed = repo.place_order(
            session,
            CLIENT,
            repo.OrderRequest("Product-A", "Development", "SaaS", "Dedicated", 2),
        )
    return Registry(sessions, sorted(placed.secrets))


@pytest.fixture
def service_identity(topology_broker: Broker) -> Iterator[tuple[str, str]]:
    """The presence process's own broker user on the test's vhost."""
    with testing.service_identity(topology_broker) as identity:
        yield identity


@pytest.fixture
def presence(
    sessions: sessionmaker[Session],
    topology_broker: Broker,
    service_identity: tuple[str, str],
) -> Iterator[Presence]:
    """Both presence workers running against the test's vhost and registry."""
    with testing.run_presence(topology_broker, sessions, service_identity) as running:
        yield running


def _topic(device: str, kind: DeviceKind) -> str:
    return DeviceTopic(CLIENT, device, kind).mqtt


def _mqtt(broker: Broker, client_id: str | None = None) -> mqtt.Client:
    """A connected paho client (admin user on the test's vhost), network loop running."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"t-{uuid.uuid4().hex[:10]}",
        protocol=mqtt.MQTTv311,
    )
    client.username_pw_set(broker.mqtt_username(), broker.mqtt_password)
    return client


def _connect(client: mqtt.Client, broker: Broker) -> mqtt.Client:
    client.connect(broker.mqtt_host, broker.mqtt_port, keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected():
        assert time.monotonic() < deadline, "MQTT connect timed out"
        time.sleep(0.01)
    return client


def _publish(client: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(10)
    assert info.is_published()


def _count(presence: Presence, queue_name: str, outcome: str) -> float:
    value = presence.metrics.registry.get_sample_value(
        "iotgw_presence_messages_total", {"queue": queue_name, "outcome": outcome}
    )
    return value or 0.0


def _status(state: str, epoch: int, ts: float | None = None) -> bytes:
    return Status(state=state, epoch=epoch, ts=ts or time.time()).to_json()


def test_status_published_over_mqtt_updates_the_registry(
    registry: Registry, presence: Presence, topology_broker: Broker
) -> None:
    device = registry.devices[0]
    client = _connect(_mqtt(topology_broker), topology_broker)
    try:
        before = time.time()
        _publish(client, _topic(device, DeviceKind.STATUS), _status("online", 1), retain=True)
        wait_for(lambda: registry.device(device).online, what="device online")
        row = registry.device(device)
        assert row.epoch == 1
        assert row.last_seen is not None
        assert row.last_seen.timestamp() >= before - 1
        _publish(client, _topic(device, DeviceKind.STATUS), _status("offline", 1), retain=True)
        wait_for(lambda: not registry.device(device).online, what="device offline")
        assert registry.device(registry.devices[1]).online is False
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_late_offline_from_an_older_epoch_never_overrides_a_newer_online(
    registry: Registry, presence: Presence, topology_broker: Broker
) -> None:
    device = registry.devices[0]
    client = _connect(_mqtt(topology_broker), topology_broker)
    try:
        now = time.time()
        _publish(client, _topic(device, DeviceKind.STATUS), _status("online", 5, now))
        _publish(client, _topic(device, DeviceKind.STATUS), _status("offline", 4, now + 1))
        wait_for(lambda: _count(presence, STATUS_QUEUE, "stale") == 1, what="stale offline seen")
    finally:
        client.loop_stop()
        client.disconnect()
    row = registry.device(device)
    assert row.online is True
    assert row.epoch == 5


class Agent:
    """Behaves like the edge agent's presence: a retained `offline` Last Will with the
    connection's epoch, a retained `online` with it as the first publish after CONNACK."""

    def __init__(self, broker: Broker, device: str) -> None:
        self.broker = broker
        self.device = device
        self.client_id = f"{CLIENT}/{device}"
        self.client: mqtt.Client | None = None

    def connect(self, epoch: int) -> None:
        """Open a session with connection epoch `epoch` and announce it."""
        client = _mqtt(self.broker, self.client_id)
        topic = _topic(self.device, DeviceKind.STATUS)
        client.will_set(topic, _status("offline", epoch), qos=1, retain=True)
        _connect(client, self.broker)
        _publish(client, topic, _status("online", epoch), retain=True)
        self.client = client

    def drop(self) -> None:
        """Lose the connection without DISCONNECT, as a module losing power or network does:
        the broker publishes the Last Will."""
        assert self.client is not None
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()
        self.client = None

    def close(self) -> None:
        """Disconnect cleanly (no Last Will) if connected."""
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def _tap(broker: Broker, device: str) -> tuple[str, object]:
    """A queue receiving a copy of every status message of `device`."""
    channel = broker.channel()
    name = f"tap-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, exclusive=True)
    channel.queue_bind(
        name, TOPIC_EXCHANGE, DeviceTopic(CLIENT, device, DeviceKind.STATUS).routing_key
    )
    return name, channel


def _epoch_states(bodies: list[bytes]) -> list[tuple[int, str]]:
    return [(s.epoch, s.state) for s in (Status.model_validate_json(b) for b in bodies)]


@pytest.mark.parametrize("order", ["as_the_broker_delivered", "offline_arrives_last"])
def test_agent_dropping_and_reconnecting_with_a_newer_epoch_ends_online(
    registry: Registry, presence: Presence, topology_broker: Broker, order: str
) -> None:
    """A real paho session drops (Last Will) and reconnects at once with epoch + 1.

    The broker's own messages are replayed to a second device in the other order too (the Last
    Will overtaken by the new session's `online`, as a redelivery or a slow broker would do):
    both devices end online in the newer epoch.
    """
    live, replayed = registry.devices
    tap, tap_channel = _tap(topology_broker, live)
    agent = Agent(topology_broker, live)
    try:
        agent.connect(epoch=4)
        wait_for(lambda: registry.device(live).online, what="online in epoch 4")
        agent.drop()
        agent.connect(epoch=5)
        wait_for(lambda: registry.device(live).epoch == 5, what="epoch 5 applied")
    finally:
        agent.close()
    seen = [body for _key, _props, body in drain(tap_channel, tap, idle=1.0)]
    assert _epoch_states(seen) == [(4, "online"), (4, "offline"), (5, "online")]
    row = registry.device(live)
    assert (row.online, row.epoch) == (True, 5)

    online4, offline4, online5 = seen
    replay = (
        [online4, offline4, online5]
        if order == "as_the_broker_delivered"
        else [
            online4,
            online5,
            offline4,
        ]
    )
    stale_before = _count(presence, STATUS_QUEUE, "stale")
    channel = topology_broker.channel()
    key = DeviceTopic(CLIENT, replayed, DeviceKind.STATUS).routing_key
    for body in replay:
        channel.basic_publish(TOPIC_EXCHANGE, key, body)
    expected_stale = 0 if order == "as_the_broker_delivered" else 1
    wait_for(
        lambda: (
            _count(presence, STATUS_QUEUE, "applied") + _count(presence, STATUS_QUEUE, "stale")
            >= 3 + 3 + stale_before
        ),
        what="replayed status applied",
    )
    assert _count(presence, STATUS_QUEUE, "stale") - stale_before == expected_stale
    row = registry.device(replayed)
    assert (row.online, row.epoch) == (True, 5)


def test_state_sets_the_reported_version_and_in_sync(
    registry: Registry, presence: Presence, topology_broker: Broker
) -> None:
    device = registry.devices[0]
    with registry.sessions.begin() as session:
        repo.set_desired_config(session, CLIENT, device, 0, {"sampling_interval_s": 2.0})
    assert registry.device(device).in_sync is False
    client = _connect(_mqtt(topology_broker), topology_broker)
    try:
        topic = _topic(device, DeviceKind.STATE)
        _publish(client, topic, ReportedState(applied_version=1, ts=time.time()).to_json())
        wait_for(lambda: registry.device(device).reported_version == 1, what="reported 1")
        assert registry.device(device).in_sync is True
        rejected = ReportedState(
            applied_version=1,
            ts=time.time() + 1,
            status="rejected",
            rejected_version=2,
            reason="sensor 'co2' not fitted",
        )
        _publish(client, topic, rejected.to_json())
        wait_for(lambda: registry.device(device).rejected_version == 2, what="rejection recorded")
        assert registry.device(device).rejected_reason == "sensor 'co2' not fitted"
    finally:
        client.loop_stop()
        client.disconnect()


def test_malformed_status_and_state_are_dead_lettered_with_reasons(
    registry: Registry, presence: Presence, topology_broker: Broker
) -> None:
    device = registry.devices[0]
    channel = topology_broker.channel()
    status_key = DeviceTopic(CLIENT, device, DeviceKind.STATUS).routing_key
    state_key = DeviceTopic(CLIENT, device, DeviceKind.STATE).routing_key
    unknown_key = DeviceTopic(CLIENT, "no-such-device", DeviceKind.STATUS).routing_key
    channel.basic_publish(TOPIC_EXCHANGE, status_key, b"{not json")
    channel.basic_publish(TOPIC_EXCHANGE, status_key, b'{"state": "asleep", "epoch": 1, "ts": 1}')
    channel.basic_publish(TOPIC_EXCHANGE, unknown_key, _status("online", 1))
    channel.basic_publish(TOPIC_EXCHANGE, state_key, b'{"applied_version": -1, "ts": 1}')
    channel.basic_publish(TOPIC_EXCHANGE, status_key, _status("online", 3))
    wait_for(lambda: registry.device(device).online, what="the good status applied")

    status_dead = drain(topology_broker.channel(), f"{STATUS_QUEUE}.dead")
    reasons = {key: str(props.headers[HEADER_REASON]) for key, props, _ in status_dead}
    assert len(status_dead) == 3
    assert reasons[unknown_key].startswith("unknown_device")
    bad = sorted(
        str(props.headers[HEADER_REASON]) for key, props, _ in status_dead if key == status_key
    )
    assert bad[0].startswith("json:")
    assert bad[1].startswith("schema:")
    assert "state" in bad[1]
    (key, props, _), *rest = drain(topology_broker.channel(), f"{STATE_QUEUE}.dead")
    assert rest == []
    assert key == state_key
    assert "applied_version" in str(props.headers[HEADER_REASON])


def _retained(broker: Broker, topic: str, timeout: float = 10) -> bytes:
    """Connect a new subscriber and return the retained message it receives on `topic`."""
    got: queue.Queue[bytes] = queue.Queue()
    client = _mqtt(broker)
    client.on_message = lambda _c, _u, message: got.put(bytes(message.payload))
    _connect(client, broker)
    try:
        client.subscribe(topic, qos=1)
        return got.get(timeout=timeout)
    finally:
        client.loop_stop()
        client.disconnect()


def test_desired_config_put_through_the_api_is_delivered_retained(
    api: ApiServer, presence: Presence, topology_broker: Broker
) -> None:
    key = api.new_client(CLIENT)
    with api.http(key) as http:
        order = http.post(
            "/v1/orders",
            json={
                "product": "Product-A",
                "environment": "Development",
                "archtype": "SaaS",
                "hardware": "Dedicated",
                "quantity": 1,
            },
        ).json()
        device = order["devices"][0]["id"]
        for version in (0, 1):
            response = http.put(
                f"/v1/devices/{device}/config",
                json={"sampling_interval_s": 5.0 + version, "thresholds": {"temperature": 0.5}},
                headers={"If-Match": f'"{version}"'},
            )
            assert response.status_code == 200, response.text
        # Version 1 is published, or skipped when version 2 is already recorded by then.
        wait_for(
            lambda: (
                _count(presence, CONFIG_QUEUE, "current")
                + _count(presence, CONFIG_QUEUE, "superseded")
                == 2
            ),
            what="both config requests handled",
        )
        # Only now does a subscriber connect: the broker hands it the retained config.
        config = DesiredConfig.model_validate_json(
            _retained(topology_broker, _topic(device, DeviceKind.CONFIG))
        )
        assert config.version == 2
        assert config.sampling_interval_s == 6.0
        assert config.thresholds == {"temperature": 0.5}

        # A late redelivery of version 1 must not replace the retained version 2.
        skipped = _count(presence, CONFIG_QUEUE, "superseded")
        channel = topology_broker.channel()
        stale = DesiredConfig(version=1, sampling_interval_s=5.0).to_json()
        channel.basic_publish(TOPIC_EXCHANGE, f"config.{CLIENT}.{device}.desired", stale)
        wait_for(
            lambda: _count(presence, CONFIG_QUEUE, "superseded") == skipped + 1,
            what="stale config skipped",
        )
        again = DesiredConfig.model_validate_json(
            _retained(topology_broker, _topic(device, DeviceKind.CONFIG))
        )
        assert again.version == 2
        assert http.get(f"/v1/devices/{device}").json()["desired_version"] == 2


def test_malformed_config_requests_are_dead_lettered(
    registry: Registry, presence: Presence, topology_broker: Broker
) -> None:
    device = registry.devices[0]
    channel = topology_broker.channel()
    channel.basic_publish(TOPIC_EXCHANGE, f"config.{CLIENT}.{device}.desired", b'{"version": 0}')
    channel.basic_publish(
        TOPIC_EXCHANGE, f"config.{CLIENT}.ghost.desired", DesiredConfig(version=1).to_json()
    )
    dead: list[tuple[str, pika.BasicProperties, bytes]] = []

    def two_dead_letters() -> bool:
        dead.extend(drain(topology_broker.channel(), f"{CONFIG_QUEUE}.dead", idle=0.3))
        return len(dead) >= 2

    wait_for(two_dead_letters, what="two dead letters")
    assert len(dead) == 2
    reasons = sorted(str(props.headers[HEADER_REASON]) for _key, props, _body in dead)
    assert reasons[0].startswith("schema:")
    assert "version" in reasons[0]
    assert reasons[1].startswith("unknown_device")


def test_the_iotgw_presence_process_applies_status_and_stops_on_sigterm(
    registry: Registry,
    database_url: str,
    topology_broker: Broker,
    service_identity: tuple[str, str],
) -> None:
    """The console entry point itself, as deployed: env settings, JSON logs, clean SIGTERM."""
    username, password = service_identity
    env = {
        **os.environ,
        "IOTGW_DATABASE_URL": database_url,
        "IOTGW_AMQP_URL": topology_broker.amqp_url,
        "IOTGW_MQTT_HOST": topology_broker.mqtt_host,
        "IOTGW_MQTT_PORT": str(topology_broker.mqtt_port),
        "IOTGW_PRESENCE_MQTT_USERNAME": username,
        "IOTGW_PRESENCE_MQTT_PASSWORD": password,
        "IOTGW_METRICS_PORT": "0",
    }
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("iotgw-presence"))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        device = registry.devices[0]
        channel = topology_broker.channel()
        key = DeviceTopic(CLIENT, device, DeviceKind.STATUS).routing_key
        channel.basic_publish(TOPIC_EXCHANGE, key, _status("online", 7))
        wait_for(lambda: registry.device(device).epoch == 7, what="status applied by the process")
        assert registry.device(device).online is True
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(line["msg"] == "presence started" for line in lines)
    assert password not in out


def test_a_config_is_acked_only_after_puback_and_survives_an_mqtt_outage(
    registry: Registry,
    presence: Presence,
    topology_broker: Broker,
    service_identity: tuple[str, str],
) -> None:
    """The service's MQTT connection drops and cannot come back for a while (its password was
    changed): the config request is not acked and nothing is retained; once the password is
    restored, paho reconnects and the same request is delivered and retained."""
    device = registry.devices[0]
    node = topology_broker.node
    user, password = service_identity[0].split(":", 1)[1], service_identity[1]
    node.add_user(user, "not-the-password-any-more")
    sock = presence.mqtt.client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)
    wait_for(lambda: not presence.mqtt.connected.is_set(), what="service MQTT down")
    with registry.sessions.begin() as session:
        config = repo.set_desired_config(session, CLIENT, device, 0, {"sampling_interval_s": 3.0})
    topology_broker.channel().basic_publish(
        TOPIC_EXCHANGE, f"config.{CLIENT}.{device}.desired", config.to_json()
    )

    def paused() -> float:
        value = presence.metrics.registry.get_sample_value(
            "iotgw_presence_pauses_total", {"queue": CONFIG_QUEUE, "dependency": "mqtt"}
        )
        return value or 0.0

    wait_for(lambda: paused() >= 2, what="delivery paused on MQTT")
    assert _count(presence, CONFIG_QUEUE, "current") == 0
    with pytest.raises(queue.Empty):
        _retained(topology_broker, _topic(device, DeviceKind.CONFIG), timeout=1)

    node.add_user(user, password)
    wait_for(lambda: _count(presence, CONFIG_QUEUE, "current") == 1, timeout=40, what="delivery")
    delivered = DesiredConfig.model_validate_json(
        _retained(topology_broker, _topic(device, DeviceKind.CONFIG))
    )
    assert delivered == config
