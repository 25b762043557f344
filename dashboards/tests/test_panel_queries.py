"""Every panel's query, read from the committed dashboard JSON with its variables filled, runs
against the real InfluxDB holding a fleet's telemetry and returns the series it expects; the
alert rules' queries pick out exactly the devices and queues that should fire.

The telemetry goes through the real pipeline: each device publishes its readings over MQTT
into RabbitMQ's MQTT plugin and `iotgw-ingest` writes them (and its own health points and a
dead letter for a malformed message). Presence and provisioning points, whose writers are not
part of this test, are written with the v1 /write API as `iotgw.contracts.measurements` says.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.cloud_bridge.ingest.health import IngestMetrics
from iotgw.cloud_bridge.ingest.main import run
from iotgw.cloud_bridge.ingest.points import REASON_BAD_JSON
from iotgw.cloud_bridge.ingest.settings import IngestSettings
from iotgw.contracts.credentials import device_client_id
from iotgw.contracts.measurements import DEAD_LETTERS as DEAD_LETTERS_MEASUREMENT
from iotgw.contracts.measurements import INGEST, PRESENCE, PROVISIONING
from iotgw.contracts.topics import DeviceKind, DeviceTopic
from iotgw.contracts.topology import TELEMETRY_QUEUE
from iotgw.dashboards.alerts import ALERT_RULES, unescape_env
from iotgw.dashboards.catalog import DASHBOARDS
from iotgw.dashboards.cli import DEFAULT_ROOT
from iotgw.dashboards.influxql import fill
from iotgw.dashboards.model import Expect
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase

DEVICES = {"acme": ("d1", "d2"), "globex": ("g1",)}
LOW_BATTERY = ("acme", "d2")
OFFLINE = ("acme", "d2")
READINGS_PER_DEVICE = 20
TRACE_RETRIED = "7d0c9a52-2f6e-4a8e-9d1b-5c3f1e0a2b44"
TRACE_READY = "0b1e6c8f-91d2-4c55-a2e7-3c4d5e6f7a8b"
LAGGING_INSTANCE = "ingest-lagging"
PROVISIONING_DEAD_LETTER = ("q.provisioning", "retries-exhausted")


def readings(now_s: int) -> Iterator[tuple[str, str, bytes]]:
    """(client, device, telemetry payload) for one reading a minute over the last 20 minutes."""
    for client, devices in DEVICES.items():
        for device in devices:
            battery_end = 12.0 if (client, device) == LOW_BATTERY else 80.0
            for i in range(READINGS_PER_DEVICE):
                metrics = {
                    "temperature": round(20 + i * 0.1, 2),
                    "humidity": 40.0 + i,
                    "battery": round(battery_end + (READINGS_PER_DEVICE - 1 - i) * 0.1, 2),
                    "rssi": -60.0 - i,
                }
                ts = now_s - (READINGS_PER_DEVICE - i) * 60
                yield client, device, json.dumps({"ts": ts, "seq": i, "metrics": metrics}).encode()


def other_writers_lines(now_s: int) -> list[str]:
    """Line protocol for presence, provisioning and the extra health points (seconds)."""
    out = []
    for client, devices in DEVICES.items():
        for device in devices:
            online = 0 if (client, device) == OFFLINE else 1
            tags = f"client={client},device={device}"
            out.append(f"{PRESENCE},{tags} online=1i,epoch=1i {now_s - 1500}")
            out.append(f"{PRESENCE},{tags} online={online}i,epoch=2i {now_s - 600}")
    for i in range(10):
        out.append(
            f"{INGEST},instance={LAGGING_INSTANCE} received=500i,written=500i,dead_lettered=0i,"
            f"batch_size=500i,write_ms=9.5,queue_depth={20_000 + i}i,skew_corrected=0i "
            f"{now_s - (10 - i) * 60}"
        )
    queue, reason = PROVISIONING_DEAD_LETTER
    out.append(f"{DEAD_LETTERS_MEASUREMENT},queue={queue},reason={reason} count=1i {now_s - 60}")
    out.append(
        f'{PROVISIONING},client=acme,product=Product-A,status=failed trace_id="{TRACE_RETRIED}",'
        f'latency_ms=950.0,reason="quota exceeded" {now_s - 900}'
    )
    out.append(
        f'{PROVISIONING},client=acme,product=Product-A,status=ready trace_id="{TRACE_RETRIED}",'
        f"latency_ms=420.0 {now_s - 840}"
    )
    out.append(
        f'{PROVISIONING},client=globex,product=Product-B,status=ready trace_id="{TRACE_READY}",'
        f"latency_ms=380.0 {now_s - 800}"
    )
    return out


def write_lines(influx_url: str, database: str, lines: list[str]) -> None:
    """POST line protocol (precision seconds) to the v1 /write API."""
    response = httpx.post(
        f"{influx_url}/write",
        params={"db": database, "precision": "s"},
        content="\n".join(lines).encode(),
        timeout=30,
    )
    response.raise_for_status()


INGEST_INSTANCE = "dashboards-test"


def poll_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` every 0.2 s until truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


@contextmanager
def ingest_running(broker: Broker, db: InfluxDatabase) -> Iterator[None]:
    """The ingest consuming the test's vhost into the test's database, stopped on exit."""
    settings = IngestSettings(
        amqp_url=broker.amqp_url,
        influx_url=db.url,
        influx_database=db.name,
        ingest_batch_interval_ms=50,
        ingest_instance=INGEST_INSTANCE,
    )
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop, IngestMetrics()), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "ingest did not stop"


def publish(broker: Broker, messages: Iterable[tuple[str, str, bytes]]) -> int:
    """Publish each (client, device, payload) at QoS 1 from that device's own MQTT session and
    wait for every PUBACK; returns the number published."""
    sessions: dict[tuple[str, str], mqtt.Client] = {}
    acked = threading.Semaphore(0)
    count = 0
    try:
        for client, device, payload in messages:
            session = sessions.get((client, device))
            if session is None:
                session = mqtt.Client(
                    CallbackAPIVersion.VERSION2,
                    client_id=device_client_id(client, device),
                    protocol=mqtt.MQTTv311,
                )
                session.username_pw_set(broker.mqtt_username(), broker.mqtt_password)
                session.on_publish = lambda *_args: acked.release()
                connected = threading.Event()
                session.on_connect = lambda *_args, e=connected: e.set()
                session.connect(broker.mqtt_host, broker.mqtt_port)
                session.loop_start()
                assert connected.wait(10), f"{client}/{device} could not connect"
                sessions[(client, device)] = session
            topic = DeviceTopic(client, device, DeviceKind.TELEMETRY).mqtt
            session.publish(topic, payload, qos=1)
            count += 1
        for _ in range(count):
            assert acked.acquire(timeout=30), "a PUBACK did not come"
    finally:
        for session in sessions.values():
            session.disconnect()
            session.loop_stop()
    return count


# Dead letters the dashboards must show: the pipeline's malformed reading, the planted one.
EXPECTED_DEAD_LETTERS = {(TELEMETRY_QUEUE, REASON_BAD_JSON), PROVISIONING_DEAD_LETTER}
VARIABLES = {"client": "acme", "device": "d1", "trace_id": TRACE_RETRIED}


@dataclass(frozen=True)
class Target:
    """One target of one panel in the committed JSON, with the catalog's expectation."""

    dashboard: str
    panel: str
    query: str
    expect: Expect


def _targets() -> Iterator[Target]:
    for board in DASHBOARDS:
        document = json.loads((DEFAULT_ROOT / "dashboards" / f"{board.uid}.json").read_text())
        specs = {panel.title: panel for panel in board.panels}
        assert [panel["title"] for panel in document["panels"]] == list(specs)
        for panel in document["panels"]:
            queries = {query.ref_id: query for query in specs[panel["title"]].queries}
            for target in panel["targets"]:
                yield Target(
                    board.uid, panel["title"], target["query"], queries[target["refId"]].expect
                )


TARGETS = list(_targets())


@pytest.fixture(scope="module")
def fleet_now() -> int:
    """'Now' for the fleet's timestamps, in seconds."""
    return int(time.time())


@pytest.fixture
def fleet(topology_broker: Broker, influx_db: InfluxDatabase, fleet_now: int) -> InfluxDatabase:
    """The test's database after the fleet's readings went through MQTT and the ingest, plus
    one malformed message, plus the other writers' points."""
    total = sum(len(devices) for devices in DEVICES.values()) * READINGS_PER_DEVICE
    malformed = ("acme", "d1", b"{not json")
    with ingest_running(topology_broker, influx_db):
        publish(topology_broker, [*readings(fleet_now), malformed])
        poll_until(
            lambda: (
                _count(influx_db, 'SELECT count("seq") FROM "telemetry"') == total
                and _count(influx_db, 'SELECT sum("count") FROM "dead_letters"') == 1
            ),
            60,
            "every reading written and the malformed one dead-lettered",
        )
    write_lines(influx_db.url, influx_db.name, other_writers_lines(fleet_now))
    return influx_db


def _count(db: InfluxDatabase, query: str) -> int:
    series = _series(db, query)
    return int(series[0]["values"][0][1]) if series else 0


def _series(db: InfluxDatabase, query: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = db.node.query(query, db=db.name)
    (result,) = body["results"]
    assert "error" not in result, f"{query}: {result}"
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def _column(series: dict[str, Any], name: str) -> list[Any]:
    index = series["columns"].index(name)
    return [row[index] for row in series["values"]]


def test_every_panel_is_covered() -> None:
    """All five dashboards' panels are in the run below."""
    assert {target.dashboard for target in TARGETS} == {board.uid for board in DASHBOARDS}
    assert len(TARGETS) == sum(len(panel.queries) for b in DASHBOARDS for panel in b.panels)


def test_every_panel_query_returns_its_series(fleet: InfluxDatabase) -> None:
    """Each query returns series named for its measurement, grouped by its tags, with its
    columns, each column holding data in some row."""
    for target in TARGETS:
        where = f"{target.dashboard} / {target.panel}"
        series = _series(fleet, fill(target.query, VARIABLES))
        assert series, f"{where}: no series"
        for one in series:
            assert one["name"] == target.expect.measurement, where
            assert set(one.get("tags", {})) == set(target.expect.group_by), where
            assert tuple(one["columns"]) == target.expect.columns, where
            for column in target.expect.columns:
                assert any(v is not None for v in _column(one, column)), f"{where}: {column}"


def _only(fleet: InfluxDatabase, uid: str, title: str) -> list[dict[str, Any]]:
    (query,) = [t.query for t in TARGETS if t.dashboard == uid and t.panel == title]
    return _series(fleet, fill(query, VARIABLES))


def test_panels_show_the_fleet(fleet: InfluxDatabase) -> None:
    """The numbers on the main panels are the fleet's."""
    total_devices = sum(len(devices) for devices in DEVICES.values())
    (online,) = _only(fleet, "iotgw-fleet", "Devices online")
    assert _column(online, "online") == [total_devices - 1]
    (offline,) = _only(fleet, "iotgw-fleet", "Devices offline")
    assert _column(offline, "offline") == [1]
    by_client = {
        s["tags"]["client"]: _column(s, "devices")[0]
        for s in _only(fleet, "iotgw-fleet", "Devices reporting, by client")
    }
    assert by_client == {client: len(devices) for client, devices in DEVICES.items()}
    rate = _only(fleet, "iotgw-fleet", "Messages/s")[0]
    assert sum(_column(rate, "messages")) * 60 == pytest.approx(total_devices * READINGS_PER_DEVICE)
    devices = {s["tags"]["device"] for s in _only(fleet, "iotgw-client", "Devices (last reading)")}
    assert devices == set(DEVICES["acme"])
    (last_seen,) = _only(fleet, "iotgw-device", "Last seen")
    assert _column(last_seen, "seq") == [READINGS_PER_DEVICE - 1]
    dead = _only(fleet, "iotgw-pipeline", "Dead letters by reason")
    assert {s["tags"]["reason"] for s in dead} == {reason for _, reason in EXPECTED_DEAD_LETTERS}
    (trace,) = _only(fleet, "iotgw-provisioning", "Trace $trace_id")
    assert _column(trace, "status") == ["failed", "ready"]
    assert set(_column(trace, "trace_id")) == {TRACE_RETRIED}


def test_template_variable_queries(fleet: InfluxDatabase) -> None:
    """The client and device pickers list the fleet's clients and the chosen client's devices."""
    for board in DASHBOARDS:
        for variable in board.variables:
            if variable.textbox:
                continue
            (series,) = _series(fleet, fill(variable.query, VARIABLES))
            values = set(_column(series, "value"))
            expected = set(DEVICES) if variable.name == "client" else set(DEVICES["acme"])
            assert values == expected, variable.name


def test_alert_rules_fire_for_the_right_series(fleet: InfluxDatabase) -> None:
    """Each provisioned rule's query, reduced and compared as Grafana does, fires exactly for
    the planted offline device, low battery, dead letters and lagging ingest instance."""
    document = yaml.safe_load((DEFAULT_ROOT / "provisioning/alerting/iotgw-rules.yaml").read_text())
    provisioned = {rule["uid"]: rule for rule in document["groups"][0]["rules"]}
    expected_firing = {
        "iotgw-device-offline": {OFFLINE},
        "iotgw-battery-low": {LOW_BATTERY},
        "iotgw-dead-letters-growing": EXPECTED_DEAD_LETTERS,
        "iotgw-ingest-lag": {(LAGGING_INSTANCE,)},
    }
    reducers: dict[str, Callable[[list[float]], float]] = {
        "last": lambda v: v[-1],
        "sum": sum,
        "max": max,
    }
    for rule in ALERT_RULES:
        model = provisioned[rule.uid]["data"][0]
        query = fill(unescape_env(model["model"]["query"]), {}, time_range=f"{rule.window_s}s")
        firing = set()
        for series in _series(fleet, query):
            values = [v for v in _column(series, rule.query.expect.columns[1]) if v is not None]
            if rule.fires(reducers[rule.reducer](values)):
                firing.add(tuple(series["tags"][key] for key in rule.query.expect.group_by))
        assert firing == expected_firing[rule.uid], rule.uid
