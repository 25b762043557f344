"""A small fleet: its readings (published over MQTT through the real ingest by the tests), the
points of processes that have no writer in this test (presence, provisioning, a lagging ingest
instance, a provisioning dead letter; written with the v1 /write API exactly as
`iotgw.contracts.measurements` describes them), and the facts the dashboards must show."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx

from iotgw.contracts.measurements import DEAD_LETTERS, INGEST, PRESENCE, PROVISIONING

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
    out.append(f"{DEAD_LETTERS},queue={queue},reason={reason} count=1i {now_s - 60}")
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
