"""The platform's dashboards: fleet, device, client, pipeline health and provisioning.

Queries are raw InfluxQL over the measurements named in `iotgw.contracts.measurements`.
Grafana replaces `$timeFilter`, `$__interval`, `$__interval_ms` and the template variables;
`iotgw.dashboards.influxql.fill` does the same for the tests.
"""

from __future__ import annotations

from iotgw.contracts.measurements import (
    DEAD_LETTERS,
    INGEST,
    PRESENCE,
    PROVISIONING,
    TAG_CLIENT,
    TAG_DEVICE,
    TELEMETRY,
)
from iotgw.dashboards.model import Dashboard, Expect, Panel, Query, Variable

# The metrics the simulated and real modules report; the device dashboard plots each one.
DEVICE_METRICS: tuple[tuple[str, str], ...] = (
    ("temperature", "celsius"),
    ("humidity", "humidity"),
    ("battery", "percent"),
    ("rssi", "dBm"),
)

_CLIENT = f""""{TAG_CLIENT}" = '$client'"""
_DEVICE = f""""{TAG_DEVICE}" = '$device'"""
# Messages per second over Grafana's auto interval.
_RATE = 'count("seq") * 1000 / $__interval_ms'
# The last presence of each device; summing `online` counts online devices.
_LAST_PRESENCE = (
    f'SELECT last("online") AS "online" FROM "{PRESENCE}" WHERE {{where}}$timeFilter '
    f'GROUP BY "{TAG_CLIENT}", "{TAG_DEVICE}"'
)

CLIENT_VARIABLE = Variable(
    "client", "Client", f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "{TAG_CLIENT}"'
)
DEVICE_VARIABLE = Variable(
    "device",
    "Device",
    f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "{TAG_DEVICE}" WHERE {_CLIENT}',
)
TRACE_VARIABLE = Variable("trace_id", "Trace id", textbox=True)


def _presence(where: str = "") -> str:
    return _LAST_PRESENCE.format(where=where)


FLEET = Dashboard(
    uid="iotgw-fleet",
    title="iotgw / Fleet overview",
    description="Devices online and offline, messages per second, by client and product.",
    panels=(
        Panel(
            "Devices online",
            "stat",
            (
                Query(
                    "A",
                    f'SELECT sum("online") AS "online" FROM ({_presence()})',
                    Expect(PRESENCE, columns=("time", "online")),
                ),
            ),
            width=6,
            height=5,
        ),
        Panel(
            "Devices offline",
            "stat",
            (
                Query(
                    "A",
                    f'SELECT count("online") - sum("online") AS "offline" FROM ({_presence()})',
                    Expect(PRESENCE, columns=("time", "offline")),
                ),
            ),
            width=6,
            height=5,
        ),
        Panel(
            "Devices reporting, by client",
            "table",
            (
                Query(
                    "A",
                    f'SELECT count("last_seq") AS "devices" FROM (SELECT last("seq") AS '
                    f'"last_seq" FROM "{TELEMETRY}" WHERE $timeFilter GROUP BY "{TAG_CLIENT}", '
                    f'"{TAG_DEVICE}") GROUP BY "{TAG_CLIENT}"',
                    Expect(TELEMETRY, (TAG_CLIENT,), ("time", "devices")),
                ),
            ),
            width=6,
            height=5,
        ),
        Panel(
            "Stacks ready, by product",
            "table",
            (
                Query(
                    "A",
                    f'SELECT count("latency_ms") AS "stacks" FROM "{PROVISIONING}" WHERE '
                    '"status" = \'ready\' AND $timeFilter GROUP BY "product"',
                    Expect(PROVISIONING, ("product",), ("time", "stacks")),
                ),
            ),
            width=6,
            height=5,
        ),
        Panel(
            "Messages/s",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT {_RATE} AS "messages" FROM "{TELEMETRY}" WHERE $timeFilter '
                    "GROUP BY time($__interval) fill(0)",
                    Expect(TELEMETRY, columns=("time", "messages")),
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Messages/s by client",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT {_RATE} AS "messages" FROM "{TELEMETRY}" WHERE $timeFilter '
                    f'GROUP BY time($__interval), "{TAG_CLIENT}" fill(0)',
                    Expect(TELEMETRY, (TAG_CLIENT,), ("time", "messages")),
                    alias="$tag_client",
                ),
            ),
            unit="reqps",
        ),
    ),
)

DEVICE = Dashboard(
    uid="iotgw-device",
    title="iotgw / Device detail",
    description="One device: each metric over time, battery, RSSI, presence and last seen.",
    variables=(CLIENT_VARIABLE, DEVICE_VARIABLE),
    panels=(
        *(
            Panel(
                metric.capitalize() if metric != "rssi" else "RSSI",
                "timeseries",
                (
                    Query(
                        "A",
                        f'SELECT mean("{metric}") AS "{metric}" FROM "{TELEMETRY}" WHERE '
                        f"{_CLIENT} AND {_DEVICE} AND $timeFilter GROUP BY time($__interval) "
                        "fill(null)",
                        Expect(TELEMETRY, columns=("time", metric)),
                    ),
                ),
                unit=unit,
            )
            for metric, unit in DEVICE_METRICS
        ),
        Panel(
            "Last seen",
            "table",
            (
                Query(
                    "A",
                    f'SELECT last("seq") AS "seq" FROM "{TELEMETRY}" WHERE {_CLIENT} AND '
                    f"{_DEVICE} AND $timeFilter",
                    Expect(TELEMETRY, columns=("time", "seq")),
                ),
            ),
            description="Time and sequence number of the device's last reading.",
        ),
        Panel(
            "Online",
            "state-timeline",
            (
                Query(
                    "A",
                    f'SELECT last("online") AS "online" FROM "{PRESENCE}" WHERE {_CLIENT} AND '
                    f"{_DEVICE} AND $timeFilter GROUP BY time($__interval) fill(previous)",
                    Expect(PRESENCE, columns=("time", "online")),
                ),
            ),
        ),
    ),
)

CLIENT = Dashboard(
    uid="iotgw-client",
    title="iotgw / Client",
    description="One client's devices: who reports, how often, battery, orders.",
    variables=(CLIENT_VARIABLE,),
    panels=(
        Panel(
            "Devices online",
            "stat",
            (
                Query(
                    "A",
                    f'SELECT sum("online") AS "online" FROM ({_presence(_CLIENT + " AND ")})',
                    Expect(PRESENCE, columns=("time", "online")),
                ),
            ),
            width=6,
        ),
        Panel(
            "Devices (last reading)",
            "table",
            (
                Query(
                    "A",
                    f'SELECT last("seq") AS "seq" FROM "{TELEMETRY}" WHERE {_CLIENT} AND '
                    f'$timeFilter GROUP BY "{TAG_DEVICE}"',
                    Expect(TELEMETRY, (TAG_DEVICE,), ("time", "seq")),
                ),
            ),
            width=18,
        ),
        Panel(
            "Messages/s by device",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT {_RATE} AS "messages" FROM "{TELEMETRY}" WHERE {_CLIENT} AND '
                    f'$timeFilter GROUP BY time($__interval), "{TAG_DEVICE}" fill(0)',
                    Expect(TELEMETRY, (TAG_DEVICE,), ("time", "messages")),
                    alias="$tag_device",
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Battery by device",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT mean("battery") AS "battery" FROM "{TELEMETRY}" WHERE {_CLIENT} '
                    f'AND $timeFilter GROUP BY time($__interval), "{TAG_DEVICE}" fill(null)',
                    Expect(TELEMETRY, (TAG_DEVICE,), ("time", "battery")),
                    alias="$tag_device",
                ),
            ),
            unit="percent",
        ),
        Panel(
            "Orders by status",
            "table",
            (
                Query(
                    "A",
                    f'SELECT count("latency_ms") AS "orders" FROM "{PROVISIONING}" WHERE '
                    f'{_CLIENT} AND $timeFilter GROUP BY "status"',
                    Expect(PROVISIONING, ("status",), ("time", "orders")),
                ),
            ),
            width=24,
        ),
    ),
)

PIPELINE = Dashboard(
    uid="iotgw-pipeline",
    title="iotgw / Pipeline health",
    description="Ingest rate, batch latency and size, queue depth, dead letters by reason.",
    panels=(
        Panel(
            "Ingest rate",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT sum("received") * 1000 / $__interval_ms AS "received", '
                    f'sum("written") * 1000 / $__interval_ms AS "written" FROM "{INGEST}" '
                    "WHERE $timeFilter GROUP BY time($__interval) fill(0)",
                    Expect(INGEST, columns=("time", "received", "written")),
                ),
            ),
            unit="reqps",
        ),
        Panel(
            "Batch latency",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT mean("write_ms") AS "mean", max("write_ms") AS "max" FROM '
                    f'"{INGEST}" WHERE $timeFilter GROUP BY time($__interval) fill(null)',
                    Expect(INGEST, columns=("time", "mean", "max")),
                ),
            ),
            unit="ms",
        ),
        Panel(
            "Batch size",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT mean("batch_size") AS "batch_size" FROM "{INGEST}" WHERE '
                    "$timeFilter GROUP BY time($__interval) fill(null)",
                    Expect(INGEST, columns=("time", "batch_size")),
                ),
            ),
        ),
        Panel(
            "Queue depth",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT max("queue_depth") AS "queue_depth" FROM "{INGEST}" WHERE '
                    '$timeFilter GROUP BY time($__interval), "instance" fill(null)',
                    Expect(INGEST, ("instance",), ("time", "queue_depth")),
                    alias="$tag_instance",
                ),
            ),
        ),
        Panel(
            "Dead letters by reason",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT sum("count") AS "dead_letters" FROM "{DEAD_LETTERS}" WHERE '
                    '$timeFilter GROUP BY time($__interval), "reason" fill(0)',
                    Expect(DEAD_LETTERS, ("reason",), ("time", "dead_letters")),
                    alias="$tag_reason",
                ),
            ),
        ),
        Panel(
            "Dead letters by queue and reason",
            "table",
            (
                Query(
                    "A",
                    f'SELECT sum("count") AS "dead_letters" FROM "{DEAD_LETTERS}" WHERE '
                    '$timeFilter GROUP BY "queue", "reason"',
                    Expect(DEAD_LETTERS, ("queue", "reason"), ("time", "dead_letters")),
                ),
            ),
        ),
    ),
)

PROVISIONING_DASHBOARD = Dashboard(
    uid="iotgw-provisioning",
    title="iotgw / Provisioning",
    description="Orders by status and product, latency, failures; everything for one trace id.",
    variables=(TRACE_VARIABLE,),
    panels=(
        Panel(
            "Orders by status",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT count("latency_ms") AS "orders" FROM "{PROVISIONING}" WHERE '
                    '$timeFilter GROUP BY time($__interval), "status" fill(0)',
                    Expect(PROVISIONING, ("status",), ("time", "orders")),
                    alias="$tag_status",
                ),
            ),
        ),
        Panel(
            "Orders by product and status",
            "table",
            (
                Query(
                    "A",
                    f'SELECT count("latency_ms") AS "orders" FROM "{PROVISIONING}" WHERE '
                    '$timeFilter GROUP BY "product", "status"',
                    Expect(PROVISIONING, ("product", "status"), ("time", "orders")),
                ),
            ),
        ),
        Panel(
            "Provisioning latency",
            "timeseries",
            (
                Query(
                    "A",
                    f'SELECT mean("latency_ms") AS "mean", max("latency_ms") AS "max" FROM '
                    f'"{PROVISIONING}" WHERE $timeFilter GROUP BY time($__interval) fill(null)',
                    Expect(PROVISIONING, columns=("time", "mean", "max")),
                ),
            ),
            unit="ms",
        ),
        Panel(
            "Failures",
            "table",
            (
                Query(
                    "A",
                    f'SELECT "trace_id", "client", "product", "reason" FROM "{PROVISIONING}" '
                    "WHERE \"status\" = 'failed' AND $timeFilter",
                    Expect(
                        PROVISIONING, columns=("time", "trace_id", "client", "product", "reason")
                    ),
                ),
            ),
        ),
        Panel(
            "Trace $trace_id",
            "table",
            (
                Query(
                    "A",
                    f'SELECT "trace_id", "client", "product", "status", "latency_ms", "reason" '
                    f'FROM "{PROVISIONING}" WHERE "trace_id" = \'$trace_id\' AND $timeFilter',
                    Expect(
                        PROVISIONING,
                        columns=(
                            "time",
                            "trace_id",
                            "client",
                            "product",
                            "status",
                            "latency_ms",
                            "reason",
                        ),
                    ),
                ),
            ),
            description="Every provisioning event carrying the trace id typed above.",
            width=24,
        ),
    ),
)

DASHBOARDS: tuple[Dashboard, ...] = (FLEET, DEVICE, CLIENT, PIPELINE, PROVISIONING_DASHBOARD)
