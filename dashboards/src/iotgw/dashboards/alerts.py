"""Alert rules as data, rendered to a Grafana alerting provisioning file.

Each rule is an InfluxQL query (A), reduced per series (B) and compared with a threshold (C).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from iotgw.contracts.measurements import (
    DEAD_LETTERS,
    INGEST,
    PRESENCE,
    TAG_CLIENT,
    TAG_DEVICE,
    TELEMETRY,
)
from iotgw.dashboards.model import Expect, Query

DATASOURCE_UID = "iotgw-influxdb"
EXPRESSION_UID = "__expr__"
FOLDER = "iotgw"

BATTERY_LOW_PERCENT = 15
# Messages waiting in q.telemetry that mean ingest has fallen behind.
INGEST_LAG_MESSAGES = 10_000

Reducer = Literal["last", "sum", "max"]
Comparison = Literal["lt", "gt"]


@dataclass(frozen=True)
class AlertRule:
    """One rule: a query over a recent window, a reducer, and a threshold held for `for_`."""

    uid: str
    title: str
    query: Query
    window_s: int
    reducer: Reducer
    comparison: Comparison
    threshold: float
    for_: str
    summary: str
    severity: str = "warning"

    def fires(self, value: float) -> bool:
        """Whether a reduced value crosses the threshold (the C expression)."""
        return value < self.threshold if self.comparison == "lt" else value > self.threshold


ALERT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        uid="iotgw-device-offline",
        title="Device offline for 5 minutes",
        query=Query(
            "A",
            f'SELECT last("online") AS "online" FROM "{PRESENCE}" WHERE $timeFilter '
            f'GROUP BY "{TAG_CLIENT}", "{TAG_DEVICE}"',
            Expect(PRESENCE, (TAG_CLIENT, TAG_DEVICE), ("time", "online")),
        ),
        window_s=24 * 3600,
        reducer="last",
        comparison="lt",
        threshold=1,
        for_="5m",
        summary="{{ $labels.client }}/{{ $labels.device }} has been offline for 5 minutes",
    ),
    AlertRule(
        uid="iotgw-battery-low",
        title=f"Battery under {BATTERY_LOW_PERCENT}%",
        query=Query(
            "A",
            f'SELECT last("battery") AS "battery" FROM "{TELEMETRY}" WHERE $timeFilter '
            f'GROUP BY "{TAG_CLIENT}", "{TAG_DEVICE}"',
            Expect(TELEMETRY, (TAG_CLIENT, TAG_DEVICE), ("time", "battery")),
        ),
        window_s=3600,
        reducer="last",
        comparison="lt",
        threshold=BATTERY_LOW_PERCENT,
        for_="0s",
        summary="{{ $labels.client }}/{{ $labels.device }} battery under "
        f"{BATTERY_LOW_PERCENT}%",
    ),
    AlertRule(
        uid="iotgw-dead-letters-growing",
        title="Dead letters growing",
        query=Query(
            "A",
            f'SELECT sum("count") AS "dead_letters" FROM "{DEAD_LETTERS}" WHERE $timeFilter '
            'GROUP BY "queue", "reason"',
            Expect(DEAD_LETTERS, ("queue", "reason"), ("time", "dead_letters")),
        ),
        window_s=600,
        reducer="sum",
        comparison="gt",
        threshold=0,
        for_="0s",
        summary="New dead letters on {{ $labels.queue }} ({{ $labels.reason }}) in 10 minutes",
    ),
    AlertRule(
        uid="iotgw-ingest-lag",
        title="Ingest lag over threshold",
        query=Query(
            "A",
            f'SELECT max("queue_depth") AS "queue_depth" FROM "{INGEST}" WHERE $timeFilter '
            'GROUP BY "instance"',
            Expect(INGEST, ("instance",), ("time", "queue_depth")),
        ),
        window_s=300,
        reducer="max",
        comparison="gt",
        threshold=INGEST_LAG_MESSAGES,
        for_="5m",
        summary=f"More than {INGEST_LAG_MESSAGES} telemetry messages waiting for ingest",
        severity="critical",
    ),
)


def escape_env(text: str) -> str:
    """Grafana expands `$VAR` in every provisioning file; `$$` keeps a literal `$` (for
    `$timeFilter` and `$labels`)."""
    return text.replace("$", "$$")


def unescape_env(text: str) -> str:
    """What Grafana reads from an escaped provisioning value."""
    return text.replace("$$", "$")


def _rule(rule: AlertRule) -> dict[str, object]:
    return {
        "uid": rule.uid,
        "title": rule.title,
        "condition": "C",
        "data": [
            {
                "refId": "A",
                "relativeTimeRange": {"from": rule.window_s, "to": 0},
                "datasourceUid": DATASOURCE_UID,
                "model": {
                    "refId": "A",
                    "query": escape_env(rule.query.influxql),
                    "rawQuery": True,
                    "resultFormat": "time_series",
                },
            },
            {
                "refId": "B",
                "datasourceUid": EXPRESSION_UID,
                "model": {
                    "refId": "B",
                    "type": "reduce",
                    "expression": "A",
                    "reducer": rule.reducer,
                    "settings": {"mode": "dropNN"},
                },
            },
            {
                "refId": "C",
                "datasourceUid": EXPRESSION_UID,
                "model": {
                    "refId": "C",
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [
                        {"evaluator": {"type": rule.comparison, "params": [rule.threshold]}}
                    ],
                },
            },
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": rule.for_,
        "labels": {"severity": rule.severity, "team": "iotgw"},
        "annotations": {"summary": escape_env(rule.summary)},
    }


def alert_provisioning() -> dict[str, object]:
    """The Grafana alerting provisioning document (provisioning/alerting/*.yaml)."""
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "iotgw",
                "folder": FOLDER,
                "interval": "1m",
                "rules": [_rule(rule) for rule in ALERT_RULES],
            }
        ],
    }
