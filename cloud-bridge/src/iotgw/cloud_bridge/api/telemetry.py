"""The latest telemetry point of a device, read from InfluxDB through the v1 /query API."""

from __future__ import annotations

import json
from typing import Any

import httpx

from iotgw.contracts.measurements import TAG_CLIENT, TAG_DEVICE, TELEMETRY
from iotgw.contracts.names import check_dns_label


class TelemetryUnavailableError(RuntimeError):
    """InfluxDB did not answer, or answered with an error."""


def latest_point(
    http: httpx.Client, database: str, client: str, device: str
) -> dict[str, Any] | None:
    """`{"time": ..., <field>: ...}` of the newest point, or None when there is none.

    Client and device are checked as DNS labels and bound as InfluxQL parameters.
    """
    check_dns_label(client, "client")
    check_dns_label(device, "device")
    # Only module constants are formatted in; the client and device travel as bound parameters.
    query = (
        f'SELECT * FROM "{TELEMETRY}" WHERE "{TAG_CLIENT}" = $client '  # noqa: S608
        f'AND "{TAG_DEVICE}" = $device ORDER BY time DESC LIMIT 1'
    )
    bound = json.dumps({"client": client, "device": device})
    try:
        response = http.get("/query", params={"db": database, "q": query, "params": bound})
    except httpx.HTTPError as exc:
        raise TelemetryUnavailableError(f"influxdb unreachable: {exc}") from exc
    if response.status_code >= 300:
        raise TelemetryUnavailableError(f"influxdb answered {response.status_code}")
    body = response.json()
    results = body.get("results") or [{}]
    if "error" in results[0]:
        if "database not found" in str(results[0]["error"]):
            return None
        raise TelemetryUnavailableError(str(results[0]["error"]))
    series = results[0].get("series") or []
    if not series:
        return None
    columns: list[str] = series[0]["columns"]
    values: list[Any] = series[0]["values"][0]
    return {
        name: value
        for name, value in zip(columns, values, strict=True)
        if name not in {TAG_CLIENT, TAG_DEVICE} and value is not None
    }
