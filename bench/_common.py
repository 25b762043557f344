"""Helpers the benchmarks share: their own services on free ports, process memory, metrics.

Import from a benchmark as `from _common import ...` (bench/ is on sys.path when a benchmark
runs as `.venv/bin/python bench/<file>.py`).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import httpx
import pika

from iotgw.contracts.topology import DEFAULT_TOPOLOGY
from iotgw.localstack.influxdb import InfluxNode
from iotgw.localstack.processes import free_ports
from iotgw.localstack.rabbitmq import RabbitNode


def rabbit_node(base: Path, name: str) -> RabbitNode:
    """A RabbitMQ node (not started) under `base`/rabbitmq on free ports.

    RabbitNode starts beam as user `rabbitmq` without `su`, with the open-files limit raised to
    20,000 (about 18,000 sockets), so thousands of MQTT connections fit.
    """
    return RabbitNode.on_free_ports(base / "rabbitmq", name)


def topology_vhost(rabbit: RabbitNode, vhost: str) -> None:
    """Create `vhost` on `rabbit` with the platform's queues declared in it."""
    rabbit.add_vhost(vhost)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit.endpoints.amqp_url(vhost)))
    try:
        DEFAULT_TOPOLOGY.declare(connection.channel())
    finally:
        connection.close()


def start_influx(base: Path) -> InfluxNode:
    """Start an InfluxDB under `base`/influxdb on ports picked just now.

    Call it after the RabbitMQ node is up: the node opens ports of its own while it starts.
    """
    http_port, rpc_port = free_ports(2)
    influx = InfluxNode(base / "influxdb", http_port, rpc_port)
    influx.start()
    return influx


def emit(**figures: Any) -> None:
    """One line of JSON on stdout (benchmarks print their figures this way, ratios last)."""
    print(json.dumps(figures), flush=True)


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` now, MiB (0 if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scrape(client: httpx.Client, port: int) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text endpoint on `port` ({} until it answers)."""
    try:
        text = client.get(f"http://127.0.0.1:{port}/metrics").text
    except httpx.HTTPError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name and not name.startswith("#") and "{" not in name and value:
            try:
                values[name] = float(value.split()[0])
            except ValueError:
                continue
    return values


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank) of `values`; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def median(values: list[float]) -> float:
    """Median, 0 when empty."""
    return statistics.median(values) if values else 0.0


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0
