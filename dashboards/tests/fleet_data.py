"""A small fleet's worth of points, written with InfluxDB's v1 /write exactly as
`iotgw.contracts.measurements` describes them, and the facts the dashboards must show."""

from __future__ import annotations

import time

import httpx

from iotgw.contracts.measurements import (
    DEAD_LETTERS,
    INGEST,
    PRESENCE,
    PROVISIONING,
    TELEMETRY,
)

DEVICES = {"acme": ("d1", "d2"), "globex": ("g1",)}
LOW_BATTERY = ("acme", "d2")
OFFLINE = ("acme", "d2")
READINGS_PER_DEVICE = 20
TRACE_RETRIED = "7d0c9a52-2f6e-4a8e-9d1b-5c3f1e0a2b44"
TRACE_READY = "0b1e6c8f-91d2-4c55-a2e7-3c4d5e6f7a8b"
LAGGING_INSTANCE = "ingest-0"
DEAD_LETTER_REASONS = {("q.telemetry", "malformed"): 3, ("q.provisioning", "retries-exhausted"): 1}


def lines(now_s: int) -> list[str]:
    """Line protocol for the fleet, timestamps in seconds, all within the last 25 minutes."""
    out = []
    for client, devices in DEVICES.items():
        for device in devices:
            battery_end = 12.0 if (client, device) == LOW_BATTERY else 80.0
            for i in range(READINGS_PER_DEVICE):
                ts = now_s - (READINGS_PER_DEVICE - i) * 60
                battery = battery_end + (READINGS_PER_DEVICE - 1 - i) * 0.1
                out.append(
                    f"{TELEMETRY},client={client},device={device} temperature={20 + i * 0.1},"
                    f"humidity={40 + i},battery={battery},rssi={-60 - i},seq={i}i {ts}"
                )
            online = 0 if (client, device) == OFFLINE else 1
            out.append(
                f"{PRESENCE},client={client},device={device} online=1i,epoch=1i {now_s - 1500}"
            )
            out.append(
                f"{PRESENCE},client={client},device={device} online={online}i,epoch=2i "
                f"{now_s - 600}"
            )
    for i in range(10):
        ts = now_s - (10 - i) * 60
        for instance, depth in ((LAGGING_INSTANCE, 20_000 + i), ("ingest-1", 5)):
            out.append(
                f"{INGEST},instance={instance} received=500i,written=498i,dead_lettered=2i,"
                f"batch_size=250i,write_ms={8 + i}.5,queue_depth={depth}i,skew_corrected=0i {ts}"
            )
    for (queue, reason), count in DEAD_LETTER_REASONS.items():
        for i in range(count):
            out.append(f"{DEAD_LETTERS},queue={queue},reason={reason} count=1i {now_s - 60 - i}")
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


def write_fleet(influx_url: str, database: str) -> int:
    """Write the fleet through /write (precision seconds); returns the 'now' used."""
    now_s = int(time.time())
    response = httpx.post(
        f"{influx_url}/write",
        params={"db": database, "precision": "s"},
        content="\n".join(lines(now_s)).encode(),
        timeout=30,
    )
    response.raise_for_status()
    return now_s
