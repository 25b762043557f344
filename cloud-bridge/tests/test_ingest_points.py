"""Ingest's domain: a device message becomes one line-protocol point (or a reason it cannot)."""

from __future__ import annotations

import json

import httpx
import pytest

from iotgw.cloud_bridge.ingest.points import (
    REASON_BAD_JSON,
    REASON_ROUTING_KEY,
    REASON_SCHEMA,
    InvalidMessageError,
    PointBuilder,
    SkewGuard,
    fast_reading,
    quote_string,
)
from iotgw.contracts.payloads import Telemetry
from iotgw.localstack.pytest_plugin import InfluxDatabase

KEY = "devices.acme.dev-1.telemetry"
NOW = 1_700_000_000.0


def _body(**fields: object) -> bytes:
    reading: dict[str, object] = {"ts": NOW - 1.5, "seq": 7, "metrics": {"temperature": 21.5}}
    reading.update(fields)
    return json.dumps(reading).encode()


def _build(body: bytes, key: str = KEY) -> bytes:
    return PointBuilder(SkewGuard()).build(key, body, now=NOW).line


def test_reading_becomes_one_point_with_tags_fields_seq_and_device_time() -> None:
    line = _build(_body(metrics={"temperature": 21.5, "door": True, "mode": "eco"}))
    assert line == (
        b'telemetry,client=acme,device=dev-1 temperature=21.5,door=true,mode="eco",seq=7i '
        b"1699999998500000000\n"
    )


def test_whole_numbers_are_floats_so_json_spelling_never_conflicts() -> None:
    assert b"temperature=21.0," in _build(_body(metrics={"temperature": 21}))


def test_same_message_gives_the_same_point() -> None:
    builder = PointBuilder(SkewGuard())
    body = _body()
    assert builder.build(KEY, body, now=NOW) == builder.build(KEY, body, now=NOW + 60)


@pytest.mark.parametrize("offset", [3600.0, -40 * 86_400.0])
def test_skewed_device_time_is_replaced_and_the_correction_recorded(offset: float) -> None:
    point = PointBuilder(SkewGuard(300, 30 * 86_400)).build(KEY, _body(ts=NOW + offset), now=NOW)
    assert point.time_ns == int(NOW) * 1_000_000_000
    assert point.skew_s == offset
    assert f",skew_s={offset!r} ".encode() in point.line


@pytest.mark.parametrize(
    ("body", "category", "words"),
    [
        (b"not json", REASON_BAD_JSON, "JSON"),
        (b'{"ts": 1, "seq": 1}', REASON_SCHEMA, "metrics"),
        (b'{"ts": 1, "seq": -1, "metrics": {"t": 1}}', REASON_SCHEMA, "seq"),
        (b'{"ts": 1, "seq": 1, "metrics": {"t": NaN}}', REASON_SCHEMA, "finite"),
        (b'{"ts": 1, "seq": 1, "metrics": {"bad name": 1}}', REASON_SCHEMA, "metric name"),
        (b'{"ts": 1, "seq": 1, "metrics": {"seq": 1}}', REASON_SCHEMA, "reserved"),
        (b'{"ts": 1, "seq": 1, "metrics": {"t": 1}, "x": 2}', REASON_SCHEMA, "x"),
        (b'{"ts": 1, "seq": 1, "metrics": {"t": 1' + b"0" * 400 + b"}}", REASON_SCHEMA, "range"),
    ],
)
def test_messages_that_cannot_be_points_say_why(body: bytes, category: str, words: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        _build(body)
    assert caught.value.category == category
    assert words in caught.value.detail


@pytest.mark.parametrize("key", ["devices.acme.dev-1.status", "devices.ACME.dev-1.telemetry"])
def test_routing_key_outside_the_mapping_is_refused(key: str) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        _build(_body(), key)
    assert caught.value.category == REASON_ROUTING_KEY


def test_string_fields_survive_influxdb_unchanged(influx_db: InfluxDatabase) -> None:
    """Quotes and backslashes are escaped so the real server reads back what the device sent."""
    value = 'say "hi" \\ bye'
    body = json.dumps({"ts": NOW, "seq": 1, "metrics": {"note": value}}).encode()
    line = PointBuilder(SkewGuard(1e12, 1e12)).build(KEY, body, now=NOW).line
    response = httpx.post(f"{influx_db.url}/write", params={"db": influx_db.name}, content=line)
    assert response.status_code == 204, response.text
    result = influx_db.node.query("SELECT note FROM telemetry", db=influx_db.name)
    assert result["results"][0]["series"][0]["values"][0][1] == value  # type: ignore[index]
    assert quote_string("a\nb") == '"a\\nb"'


@pytest.mark.parametrize(
    "body",
    [
        b'{"ts": 1700000000.5, "seq": 3, "metrics": {"t": 1.5, "n": 2, "on": false, "s": "x"}}',
        b'{"ts": 1700000000, "seq": 0, "metrics": {"t_1": -0.0}}',
        b'{"ts": "1700000000", "seq": 3, "metrics": {"t": 1}}',
        b'{"ts": 1700000000, "seq": 3.0, "metrics": {"t": 1}}',
        b'{"ts": 1700000000, "seq": true, "metrics": {"t": 1}}',
        b'{"ts": 0, "seq": 3, "metrics": {"t": 1}}',
        b'{"ts": 1e999, "seq": 3, "metrics": {"t": 1}}',
        b'{"ts": 1' + b"0" * 30 + b', "seq": 3, "metrics": {"t": 1}}',
        b'{"ts": 1700000000, "seq": 3, "metrics": {"t": null}}',
        b'{"ts": 1700000000, "seq": 3, "metrics": {"t": Infinity}}',
        b'{"ts": 1700000000, "seq": 3, "metrics": {"": 1}}',
        b'{"ts": 1700000000, "seq": 3, "metrics": {"t": {"deep": 1}}}',
        b"[1, 2]",
    ],
)
def test_fast_path_accepts_only_what_the_contract_accepts_with_the_same_values(
    body: bytes,
) -> None:
    fast = fast_reading(body)
    try:
        reading = Telemetry.model_validate_json(body)
    except ValueError:
        assert fast is None
        return
    if fast is not None:
        assert fast == (reading.ts, reading.seq, reading.metrics)
        assert [type(v) for v in fast[2].values()] == [type(v) for v in reading.metrics.values()]
