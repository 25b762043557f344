"""Telemetry ingest end to end: devices publish over MQTT (QoS 1), points land in InfluxDB.

Real RabbitMQ (MQTT plugin), real InfluxDB 1.x, real VictoriaMetrics for the v2 API. The core
check everywhere: per device, points in InfluxDB == readings the broker acknowledged (PUBACK):
nothing lost, nothing doubled, whatever happened in between.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.cloud_bridge.ingest.health import IngestMetrics
from iotgw.cloud_bridge.ingest.main import run
from iotgw.cloud_bridge.ingest.settings import IngestSettings
from iotgw.contracts.measurements import DEAD_LETTERS, INGEST, TELEMETRY
from iotgw.contracts.topology import (
    DEFAULT_TOPOLOGY,
    HEADER_ORIGINAL_ROUTING_KEY,
    HEADER_REASON,
    TELEMETRY_QUEUE,
)
from iotgw.localstack.influxdb import InfluxNode, VictoriaNode
from iotgw.localstack.processes import free_ports
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase

DEAD_QUEUE = DEFAULT_TOPOLOGY.queue(TELEMETRY_QUEUE).dead_letter_queue


# ---------------------------------------------------------------- helpers


def eventually(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s; last: {last!r}")


def points_per_device(db: InfluxDatabase, measurement: str = TELEMETRY) -> dict[str, int]:
    """`count(seq)` per device tag."""
    q = f"SELECT count(seq) FROM {measurement} GROUP BY device"  # noqa: S608 - constant name
    body = db.node.query(q, db=db.name)
    series = body["results"][0].get("series", [])  # type: ignore[index]
    return {s["tags"]["device"]: s["values"][0][1] for s in series}


def scalar(db: InfluxDatabase, what: str, measurement: str, where: str = "") -> Any:
    """`SELECT <what> FROM <measurement> [WHERE ...]`: first value of the first series, or None."""
    q = f"SELECT {what} FROM {measurement} {where}"  # noqa: S608 - test's own constant text
    body = db.node.query(q, db=db.name)
    series = body["results"][0].get("series")  # type: ignore[index]
    return series[0]["values"][0][1] if series else None


def queue_counts(broker: Broker, queue: str = TELEMETRY_QUEUE) -> tuple[int, int]:
    """(ready messages, consumers) of `queue`, straight from the broker (no stats delay)."""
    channel = broker.channel()
    ok = channel.queue_declare(queue, passive=True).method
    channel.close()
    return int(ok.message_count), int(ok.consumer_count)


def wait_consuming(broker: Broker, timeout: float = 30) -> None:
    """Until the ingest has declared the topology and subscribed."""
    eventually(lambda: queue_counts(broker)[1] >= 1, timeout, "ingest consuming")


def settings_for(broker: Broker, db: InfluxDatabase, **overrides: Any) -> IngestSettings:
    """Ingest settings pointing at this test's vhost and database."""
    values: dict[str, Any] = {
        "amqp_url": broker.amqp_url,
        "influx_url": db.url,
        "influx_database": db.name,
        "ingest_batch_interval_ms": 50,
        "ingest_retry_initial_s": 0.1,
        "ingest_retry_max_s": 1.0,
        "ingest_instance": "test",
    }
    values.update(overrides)
    return IngestSettings(**values)


@contextlib.contextmanager
def ingest_running(settings: IngestSettings) -> Iterator[IngestMetrics]:
    """The ingest in a thread of this process; stopped (gracefully) on exit."""
    stop = threading.Event()
    metrics = IngestMetrics()
    thread = threading.Thread(target=run, args=(settings, stop, metrics), daemon=True)
    thread.start()
    try:
        yield metrics
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "ingest did not stop"


def ingest_env(settings: IngestSettings) -> dict[str, str]:
    """Environment for an `iotgw-ingest` subprocess with these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            env[f"IOTGW_{name.upper()}"] = str(secret() if secret else value)
    return env


def start_ingest_process(settings: IngestSettings, log: Path) -> subprocess.Popen[bytes]:
    """`iotgw-ingest` as a child process, JSON logs to `log`."""
    program = Path(sys.executable).parent / "iotgw-ingest"
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(program)], env=ingest_env(settings), stdout=out, stderr=subprocess.STDOUT
        )


@dataclass
class Device:
    """One simulated module: its own MQTT session, QoS 1, counting PUBACKs."""

    broker: Broker
    client_name: str
    name: str
    acked: int = 0
    published: int = 0
    seq: int = 0
    last_ts: float = 0.0
    mqtt: mqtt.Client = field(init=False)

    def __post_init__(self) -> None:
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.client_name}/{self.name}",
            protocol=mqtt.MQTTv311,
        )
        self.mqtt.username_pw_set(self.broker.mqtt_username(), self.broker.mqtt_password)
        self.mqtt.on_publish = self._on_publish
        connected = threading.Event()
        self.mqtt.on_connect = lambda *_args: connected.set()
        self.mqtt.connect(self.broker.mqtt_host, self.broker.mqtt_port)
        self.mqtt.loop_start()
        assert connected.wait(10), f"device {self.name} could not connect"

    def _on_publish(self, _c: Any, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        self.acked += 1  # called once per PUBACK, on the client's network thread

    @property
    def topic(self) -> str:
        return f"devices/{self.client_name}/{self.name}/telemetry"

    def reading(self, **metrics: Any) -> bytes:
        """The next reading; device time strictly increases (distinct points)."""
        self.seq += 1
        self.last_ts = max(time.time(), self.last_ts + 0.001)
        values = metrics or {"temperature": round(random.uniform(15, 30), 2), "rssi": -60}
        return json.dumps({"ts": self.last_ts, "seq": self.seq, "metrics": values}).encode()

    def publish(self, body: bytes) -> None:
        """Publish one message at QoS 1."""
        self.mqtt.publish(self.topic, body, qos=1)
        self.published += 1

    def wait_acked(self, timeout: float = 60) -> None:
        """Until every publish has its PUBACK."""
        eventually(lambda: self.acked == self.published, timeout, f"PUBACKs of {self.name}")

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@dataclass
class Fleet:
    """Devices of one client publishing readings, each from its own thread."""

    broker: Broker
    size: int
    client_name: str = "acme"
    devices: list[Device] = field(init=False)
    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.devices = [Device(self.broker, self.client_name, f"dev-{i}") for i in range(self.size)]

    def start(self, count: int, interval: float) -> None:
        """Each device publishes `count` readings, `interval` s apart (until `stop`)."""

        def loop(device: Device) -> None:
            for _ in range(count):
                if self.stop.wait(interval):
                    return
                device.publish(device.reading())

        self.threads = [threading.Thread(target=loop, args=(d,)) for d in self.devices]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        """Wait for the publishers, then for every PUBACK."""
        for thread in self.threads:
            thread.join(120)
        for device in self.devices:
            device.wait_acked()

    def acked(self) -> dict[str, int]:
        return {d.name: d.acked for d in self.devices}

    def total_acked(self) -> int:
        return sum(d.acked for d in self.devices)

    def close(self) -> None:
        self.stop.set()
        for device in self.devices:
            device.close()


@pytest.fixture
def fleet_factory() -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []

    def make(broker: Broker, size: int, client_name: str = "acme") -> Fleet:
        fleet = Fleet(broker, size, client_name)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.close()


def assert_points_equal_acks(db: InfluxDatabase, fleet: Fleet, timeout: float = 60) -> None:
    acked = fleet.acked()
    assert sum(acked.values()) > 0
    assert_points(db, acked, timeout)


def assert_points(db: InfluxDatabase, expected: dict[str, int], timeout: float = 60) -> None:
    """Until the points per device are `expected`; the failure shows what was there."""
    seen: list[dict[str, int]] = [{}]

    def check() -> bool:
        seen[0] = points_per_device(db)
        return seen[0] == expected

    with contextlib.suppress(AssertionError):
        eventually(check, timeout, "points per device")
        return
    raise AssertionError(f"points per device {seen[0]} != expected {expected}")


def drain_dead_letters(broker: Broker, expected: int) -> list[tuple[Any, Any, bytes]]:
    """Consume the dead-letter queue until `expected` arrived, then check nothing else comes."""
    channel = broker.channel()
    got: list[tuple[Any, Any, bytes]] = []
    for method, props, body in channel.consume(DEAD_QUEUE, inactivity_timeout=15):
        if method is None:
            break
        got.append((method, props, body))
        channel.basic_ack(method.delivery_tag)
        if len(got) == expected:
            break
    channel.cancel()
    extra = channel.basic_get(DEAD_QUEUE)[0]
    assert extra is None, "more dead letters than expected"
    return got


# ---------------------------------------------------------------- must-show tests


def test_points_equal_readings_acknowledged_per_device(
    broker: Broker, influx_db: InfluxDatabase, fleet_factory: Callable[..., Fleet]
) -> None:
    """Plain vhost: the ingest declares the topology itself, then every PUBACKed reading lands."""
    with ingest_running(settings_for(broker, influx_db)) as metrics:
        wait_consuming(broker)
        fleet = fleet_factory(broker, 5)
        fleet.start(count=300, interval=0.003)
        fleet.join()
        assert_points_equal_acks(influx_db, fleet)
        total = fleet.total_acked()
        assert total == 1500
        eventually(
            lambda: metrics.registry.get_sample_value("iotgw_ingest_written_total") == total,
            10,
            "written metric",
        )
        assert metrics.registry.get_sample_value("iotgw_ingest_received_total") == total
        assert metrics.registry.get_sample_value("iotgw_ingest_batch_size_count")
    # Its own health went into InfluxDB too, for Grafana.
    written = eventually(
        lambda: scalar(influx_db, "sum(written)", INGEST) == total,
        10,
        "ingest health points",
    )
    assert written


def test_kill_9_mid_stream_then_restart_loses_and_doubles_nothing(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    fleet_factory: Callable[..., Fleet],
    tmp_path: Path,
) -> None:
    (metrics_port,) = free_ports(1)
    settings = settings_for(topology_broker, influx_db, metrics_port=metrics_port)
    log = tmp_path / "ingest.log"
    process = start_ingest_process(settings, log)
    try:
        wait_consuming(topology_broker)
        fleet = fleet_factory(topology_broker, 4)
        fleet.start(count=1000, interval=0.002)
        eventually(lambda: sum(points_per_device(influx_db).values()) > 300, 30, "first points")
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        for name in (
            "iotgw_ingest_received_total",
            "iotgw_ingest_written_total",
            "iotgw_ingest_batch_size_bucket",
            "iotgw_ingest_write_seconds_bucket",
            "iotgw_ingest_queue_depth",
            "iotgw_ingest_lag_seconds",
        ):
            assert name in scraped
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed_at = sum(points_per_device(influx_db).values())
        before = fleet.total_acked()
        eventually(lambda: fleet.total_acked() > before + 300, 30, "publishing goes on")
        process = start_ingest_process(settings, log)
        fleet.join()
        assert_points_equal_acks(influx_db, fleet)
        assert killed_at < fleet.total_acked(), "the kill came after the stream ended"
    finally:
        process.kill()
        process.wait(10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line["msg"] == "consuming") == 2


def _outage(
    broker: Broker,
    db: InfluxDatabase,
    influxdb: InfluxNode,
    fleet_factory: Callable[..., Fleet],
    outage_s: float,
) -> None:
    settings = settings_for(broker, db, ingest_prefetch=300, ingest_batch_size=100)
    with ingest_running(settings) as metrics:
        wait_consuming(broker)
        fleet = fleet_factory(broker, 4)
        per_device = int((outage_s + 8) / 0.01)
        fleet.start(count=per_device, interval=0.01)
        eventually(lambda: sum(points_per_device(db).values()) > 100, 30, "first points")
        influxdb.stop()
        down_at = time.monotonic()
        try:
            # Back-pressure: with InfluxDB gone nothing is acked, the prefetch fills, and the
            # broker keeps the rest in the queue.
            eventually(lambda: queue_counts(broker)[0] > 200, outage_s + 30, "queue backing up")
            time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))  # the outage itself
        finally:
            influxdb.start()
        assert metrics.registry.get_sample_value("iotgw_ingest_write_retries_total")
        fleet.join()
        assert_points_equal_acks(db, fleet, timeout=120)
        eventually(lambda: queue_counts(broker)[0] == 0, 30, "backlog drained")


def test_influxdb_down_for_a_while_then_back_loses_nothing(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    influxdb: InfluxNode,
    fleet_factory: Callable[..., Fleet],
) -> None:
    _outage(topology_broker, influx_db, influxdb, fleet_factory, outage_s=6)


@pytest.mark.slow
def test_influxdb_down_30_s_then_back_loses_nothing(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    influxdb: InfluxNode,
    fleet_factory: Callable[..., Fleet],
) -> None:
    _outage(topology_broker, influx_db, influxdb, fleet_factory, outage_s=30)


# Each template holds {i}, so every dead letter can be matched to the message sent.
MALFORMED: list[str] = [
    "not json {i}",
    "{{{i}",
    '{{"ts": 1700000000, "seq": {i}}}',
    '{{"ts": 1700000000, "seq": -{i}, "metrics": {{"t": 1}}}}',
    '{{"ts": "yesterday", "seq": {i}, "metrics": {{"t": 1}}}}',
    '{{"ts": 1700000000, "seq": {i}, "metrics": {{}}}}',
    '{{"ts": 1700000000, "seq": {i}, "metrics": {{"t": [1, 2]}}}}',
    '{{"ts": 1700000000, "seq": {i}, "metrics": {{"no spaces": 1}}}}',
    '{{"ts": 1700000000, "seq": {i}, "metrics": {{"t": NaN}}}}',
    '{{"ts": 1700000000, "seq": {i}, "metrics": {{"seq": 3}}}}',
]


def test_100_malformed_among_good_ones_go_to_the_dead_letter_queue_alone(
    topology_broker: Broker, influx_db: InfluxDatabase, fleet_factory: Callable[..., Fleet]
) -> None:
    fleet = fleet_factory(topology_broker, 1)
    device = fleet.devices[0]
    rng = random.Random(4)
    bad_at = set(rng.sample(range(1100), 100))
    bad_bodies: list[bytes] = []
    with ingest_running(settings_for(topology_broker, influx_db)) as metrics:
        wait_consuming(topology_broker)
        for i in range(1100):
            if i in bad_at:
                body = MALFORMED[i % len(MALFORMED)].format(i=i + 1).encode()
                bad_bodies.append(body)
                device.publish(body)
            else:
                device.publish(device.reading())
        device.wait_acked()
        assert device.acked == 1100
        assert_points(influx_db, {"dev-0": 1000})
        dead = drain_dead_letters(topology_broker, 100)
        assert sorted(body for _m, _p, body in dead) == sorted(bad_bodies)
        for method, props, _body in dead:
            assert method.routing_key == "devices.acme.dev-0.telemetry"
            assert props.headers[HEADER_ORIGINAL_ROUTING_KEY] == "devices.acme.dev-0.telemetry"
            reason = props.headers[HEADER_REASON]
            assert reason.startswith(("bad_json: ", "schema: ")), reason
        assert metrics.registry.get_sample_value(
            "iotgw_ingest_dead_lettered_total", {"reason": "schema"}
        )
    eventually(
        lambda: scalar(influx_db, "count(count)", DEAD_LETTERS) == 100,
        10,
        "dead_letters points",
    )


def test_field_type_conflict_is_bisected_out_and_the_rest_written(
    topology_broker: Broker, influx_db: InfluxDatabase
) -> None:
    """InfluxDB refuses a string where the field is a float: only those lines are dead letters."""
    settings = settings_for(topology_broker, influx_db, ingest_batch_interval_ms=500)
    channel = topology_broker.channel()
    channel.confirm_delivery()
    key = "devices.acme.dev-9.telemetry"
    now = time.time()

    def send(seq: int, value: object) -> bytes:
        body = json.dumps({"ts": now + seq / 1000, "seq": seq, "metrics": {"t": value}}).encode()
        channel.basic_publish("amq.topic", key, body)
        return body

    with ingest_running(settings):
        wait_consuming(topology_broker)
        send(0, 1.5)
        eventually(lambda: points_per_device(influx_db) == {"dev-9": 1}, 20, "the float field")
        conflicting = [
            send(seq, "hot" if seq in {5, 17, 33} else 20.0 + seq) for seq in range(1, 41)
        ]
        eventually(lambda: points_per_device(influx_db) == {"dev-9": 38}, 20, "good points")
        dead = drain_dead_letters(topology_broker, 3)
    assert sorted(body for _m, _p, body in dead) == sorted(conflicting[i - 1] for i in (5, 17, 33))
    for _method, props, _body in dead:
        reason = props.headers[HEADER_REASON]
        assert reason.startswith("influx_rejected: "), reason
        assert "conflict" in reason, reason


def test_redelivered_reading_rewrites_the_same_point_and_skew_is_guarded(
    topology_broker: Broker, influx_db: InfluxDatabase
) -> None:
    channel = topology_broker.channel()
    channel.confirm_delivery()
    key = "devices.acme.dev-1.telemetry"
    reading = json.dumps({"ts": time.time(), "seq": 1, "metrics": {"t": 1.0}}).encode()
    far_future = time.time() + 86_400
    skewed = json.dumps({"ts": far_future, "seq": 2, "metrics": {"t": 2.0}}).encode()
    with ingest_running(settings_for(topology_broker, influx_db)):
        wait_consuming(topology_broker)
        for body in (reading, reading, skewed, reading):
            channel.basic_publish("amq.topic", key, body)
        eventually(lambda: scalar(influx_db, "sum(received)", INGEST) == 4, 20, "received")
    assert points_per_device(influx_db) == {"dev-1": 2}
    answer = influx_db.node.query(
        f"SELECT seq, skew_s FROM {TELEMETRY} WHERE seq = 2",  # noqa: S608 - constant name
        db=influx_db.name,
    )
    when, seq, skew = answer["results"][0]["series"][0]["values"][0]  # type: ignore[index]
    assert seq == 2
    assert 86_000 < skew <= 86_400
    # The point sits at the receive time, not a day ahead.
    assert when < time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(far_future - 3600))
    assert scalar(influx_db, "sum(skew_corrected)", INGEST) == 1


def test_v2_writer_against_a_real_v2_write_api(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    victoria: VictoriaNode,
    fleet_factory: Callable[..., Fleet],
) -> None:
    """`influxdb-client` (token, org, bucket) into VictoriaMetrics' /api/v2/write."""
    client_name = f"v2-{uuid.uuid4().hex[:8]}"
    settings = settings_for(
        topology_broker,
        influx_db,
        influx_api="v2",
        influx_url=victoria.url,
        influx_token="test-token",
        influx_org="iotgw",
        influx_bucket="telemetry",
    )
    with ingest_running(settings) as metrics:
        wait_consuming(topology_broker)
        fleet = fleet_factory(topology_broker, 3, client_name)
        fleet.start(count=50, interval=0.01)
        fleet.join()
        acked = fleet.acked()

        def samples() -> dict[str, int]:
            response = httpx.get(
                f"{victoria.url}/api/v1/export",
                params={"match[]": f'{{__name__="telemetry_seq",client="{client_name}"}}'},
                timeout=10,
            )
            series = [json.loads(line) for line in response.text.splitlines() if line]
            return {s["metric"]["device"]: len(s["values"]) for s in series}

        eventually(lambda: samples() == acked, 30, f"victoria samples == {acked}")
        assert metrics.registry.get_sample_value("iotgw_ingest_written_total") == 150


def test_database_dropped_under_the_ingest_is_created_again(
    topology_broker: Broker, influx_db: InfluxDatabase
) -> None:
    channel = topology_broker.channel()
    channel.confirm_delivery()
    key = "devices.acme.dev-1.telemetry"

    def send(seq: int) -> None:
        body = json.dumps({"ts": time.time(), "seq": seq, "metrics": {"t": 1.0}}).encode()
        channel.basic_publish("amq.topic", key, body)

    with ingest_running(settings_for(topology_broker, influx_db)):
        wait_consuming(topology_broker)
        send(1)
        assert_points(influx_db, {"dev-1": 1}, 20)
        influx_db.node.query(f'DROP DATABASE "{influx_db.name}"')
        send(2)
        send(3)
        assert_points(influx_db, {"dev-1": 2}, 20)
