"""The domain of ingest: one device message in, one InfluxDB line-protocol point out (no I/O).

- The measurement comes from the message kind in the routing key (`MEASUREMENT_BY_KIND`);
  tags are client and device; fields are the reading's metrics plus `seq`.
- Numbers are written as float fields whatever their JSON spelling (`21` and `21.5` are the same
  metric to a device), so a firmware that prints whole numbers without `.0` never causes a
  field type conflict; booleans and strings keep their types.
- Validation is the contract's (`Telemetry`). A plain reading, exactly as the contract describes
  it, is checked by a fast path that accepts only what `Telemetry` accepts; anything else goes
  through `Telemetry` itself, which decides and explains (pydantic per message costs more than
  the rest of the pipeline together, measured in bench/bench_ingest.py).
- The point's time is the device's timestamp, so a redelivered message rewrites the same point.
  A timestamp outside [now - max_past, now + max_future] (a device without a set clock) is
  replaced by the receive time, and the point records the correction in a `skew_s` field.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from iotgw.contracts.measurements import TAG_CLIENT, TAG_DEVICE, TELEMETRY
from iotgw.contracts.payloads import MetricValue, Telemetry
from iotgw.contracts.topics import DeviceKind, DeviceTopic, TopicError

# Which message kinds become points, and in which measurement. One row per kind.
MEASUREMENT_BY_KIND: Mapping[DeviceKind, str] = {DeviceKind.TELEMETRY: TELEMETRY}

SEQ_FIELD = "seq"
SKEW_FIELD = "skew_s"
RESERVED_FIELDS = frozenset({SEQ_FIELD, SKEW_FIELD})
NS = 1_000_000_000

# Reasons a message is dead-lettered; low cardinality, so they can be a tag and a label.
REASON_BAD_JSON = "bad_json"
REASON_SCHEMA = "schema"
REASON_ROUTING_KEY = "routing_key"
REASON_REJECTED = "influx_rejected"


class InvalidMessageError(ValueError):
    """A message that can never become a point; `category` is one of the REASON_* names."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(f"{category}: {detail}")
        self.category = category
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Point:
    """A reading turned into one line of line protocol (newline-terminated)."""

    client: str
    device: str
    seq: int
    time_ns: int
    line: bytes
    skew_s: float | None


@dataclass(frozen=True, slots=True)
class SkewGuard:
    """Accept device time within [now - max_past_s, now + max_future_s], else use now."""

    max_future_s: float = 300.0
    max_past_s: float = 30 * 86_400.0

    def correct(self, ts: float, now: float) -> float | None:
        """The time to use instead of `ts`, or None when `ts` is plausible."""
        if now - self.max_past_s <= ts <= now + self.max_future_s:
            return None
        return now


@dataclass(frozen=True, slots=True)
class _Series:
    client: str
    device: str
    prefix: bytes


class PointBuilder:
    """Turns (routing key, body) into a `Point`; remembers each device's series prefix."""

    def __init__(self, guard: SkewGuard, max_cached_series: int = 200_000) -> None:
        self.guard = guard
        self._series: dict[str, _Series] = {}
        self._max_cached = max_cached_series
        self._metric_names: set[str] = set()

    def build(self, routing_key: str, body: bytes, now: float | None = None) -> Point:
        """Validate `body` against the contract for its routing key and render its point."""
        series = self._series_of(routing_key)
        fast = fast_reading(body, self._metric_names)
        if fast is None:
            reading = parse_telemetry(body)
            ts, seq, metrics = reading.ts, reading.seq, reading.metrics
        else:
            ts, seq, metrics = fast
        received = time.time() if now is None else now
        corrected = self.guard.correct(ts, received)
        time_ns = round((ts if corrected is None else corrected) * NS)
        fields = render_fields(metrics)
        skew_s = None
        if corrected is None:
            tail = f",{SEQ_FIELD}={seq}i {time_ns}\n"
        else:
            skew_s = round(ts - corrected, 3)
            tail = f",{SEQ_FIELD}={seq}i,{SKEW_FIELD}={float(skew_s)!r} {time_ns}\n"
        line = series.prefix + (fields + tail).encode()
        return Point(series.client, series.device, seq, time_ns, line, skew_s)

    def _series_of(self, routing_key: str) -> _Series:
        series = self._series.get(routing_key)
        if series is None:
            try:
                topic = DeviceTopic.from_routing_key(routing_key)
            except TopicError as exc:
                raise InvalidMessageError(REASON_ROUTING_KEY, str(exc)) from exc
            measurement = MEASUREMENT_BY_KIND.get(topic.kind)
            if measurement is None:
                raise InvalidMessageError(
                    REASON_ROUTING_KEY, f"no measurement for message kind {topic.kind.value!r}"
                )
            # Client and device are DNS labels (checked above): nothing in them needs escaping.
            prefix = f"{measurement},{TAG_CLIENT}={topic.client},{TAG_DEVICE}={topic.device} "
            series = _Series(topic.client, topic.device, prefix.encode())
            if len(self._series) >= self._max_cached:
                self._series.clear()
            self._series[routing_key] = series
        return series


_KEYS = frozenset({"ts", "seq", "metrics"})
_MAX_METRICS = 64
_MAX_NAME = 64
_MAX_KNOWN_NAMES = 10_000
_MAX_INT_TS = 10**12  # whole seconds beyond year 33658: leave the oddity to Telemetry


def fast_reading(
    body: bytes, known_names: set[str] | None = None
) -> tuple[float, int, dict[str, MetricValue]] | None:
    """(ts, seq, metrics) when `body` is a plain valid reading; None means "ask Telemetry".

    Accepts a subset of what `Telemetry` accepts, with the same values: exact JSON types only
    (no numeric strings, no 5.0 for an int), every constraint of the contract checked here.
    `known_names` remembers metric names already found valid, so each is checked once.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if type(data) is dict and data.keys() == _KEYS:
        ts, seq, metrics = data["ts"], data["seq"], data["metrics"]
        known = set() if known_names is None else known_names
        if _plain_ts(ts) and type(seq) is int and seq >= 0 and _plain_metrics(metrics, known):
            return float(ts), seq, metrics
    return None


def _plain_ts(ts: object) -> bool:
    if type(ts) is int:
        return 0 < ts < _MAX_INT_TS
    return type(ts) is float and ts > 0 and math.isfinite(ts)


def _plain_metrics(metrics: object, known: set[str]) -> bool:
    if type(metrics) is not dict or not 0 < len(metrics) <= _MAX_METRICS:
        return False
    for name, value in metrics.items():
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                return False
        elif kind is not int and kind is not bool and kind is not str:
            return False
        if name in known:
            continue
        if not 0 < len(name) <= _MAX_NAME or not name.replace("_", "").isalnum():
            return False
        if name in RESERVED_FIELDS:
            return False
        if len(known) < _MAX_KNOWN_NAMES:
            known.add(name)
    return True


def parse_telemetry(body: bytes) -> Telemetry:
    """Validate a telemetry payload; raise InvalidMessageError naming what is wrong."""
    try:
        reading = Telemetry.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise InvalidMessageError(REASON_BAD_JSON, errors[0]["msg"]) from exc
        detail = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or 'body'}: {err['msg']}"
            for err in errors
        )
        raise InvalidMessageError(REASON_SCHEMA, detail) from exc
    reserved = RESERVED_FIELDS.intersection(reading.metrics)
    if reserved:
        raise InvalidMessageError(REASON_SCHEMA, f"metric names {sorted(reserved)} are reserved")
    return reading


def render_fields(metrics: Mapping[str, float | int | bool | str]) -> str:
    """`name=value,...` in line protocol; metric names are letters, digits and '_' already."""
    parts = []
    for name, value in metrics.items():
        kind = type(value)
        if kind is float:  # the common case first
            parts.append(f"{name}={value!r}")
        elif kind is bool:
            parts.append(f"{name}={'true' if value else 'false'}")
        elif kind is str:
            parts.append(f"{name}={quote_string(str(value))}")
        else:
            try:
                number = float(value)
            except OverflowError as exc:
                raise InvalidMessageError(
                    REASON_SCHEMA, f"metric {name!r} is out of range"
                ) from exc
            parts.append(f"{name}={number!r}")
    return ",".join(parts)


def quote_string(value: str) -> str:
    """A line-protocol string field value: quoted, with backslash, quote and newline escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
