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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from iotgw.cloud_bridge.ingest.points import REASON_BAD_JSON
from iotgw.contracts.topology import TELEMETRY_QUEUE
from iotgw.dashboards.alerts import ALERT_RULES, unescape_env
from iotgw.dashboards.catalog import DASHBOARDS
from iotgw.dashboards.cli import DEFAULT_ROOT
from iotgw.dashboards.influxql import fill
from iotgw.dashboards.model import Expect
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase

from .fleet_data import (
    DEVICES,
    LAGGING_INSTANCE,
    LOW_BATTERY,
    OFFLINE,
    PROVISIONING_DEAD_LETTER,
    READINGS_PER_DEVICE,
    TRACE_RETRIED,
    other_writers_lines,
    readings,
    write_lines,
)
from .pipeline import ingest_running, poll_until, publish

DEAD_LETTERS = {(TELEMETRY_QUEUE, REASON_BAD_JSON), PROVISIONING_DEAD_LETTER}

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
    assert {s["tags"]["reason"] for s in dead} == {reason for _, reason in DEAD_LETTERS}
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
        "iotgw-dead-letters-growing": DEAD_LETTERS,
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
