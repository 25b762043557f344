"""Benchmark of the purchase API: orders/s and device reads/s against a trivial endpoint.

Starts its own RabbitMQ node (and, for `--backend postgresql`, its own PostgreSQL cluster) on
free ports in a temporary folder, runs the real `iotgw-api` process (HTTP + outbox relay +
status consumer) on loopback, and drives it with a concurrent httpx load generator. The
baseline is the same process answering `/healthz` (same server, middleware and metrics, no
auth and no database), measured in the same run. Each phase is bounded by a request count and
a time limit. Figures print as JSON lines; the ratios are the last line.

    .venv/bin/python bench/bench_api.py [--backend sqlite|postgresql] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from iotgw.localstack.postgres import PostgresNode
from iotgw.localstack.processes import free_ports
from iotgw.localstack.rabbitmq import RabbitEndpoints, RabbitNode

OPERATOR_KEY = uuid.uuid4().hex
ORDER = {
    "product": "Product-A",
    "environment": "Development",
    "archtype": "SaaS",
    "hardware": "Classic",
    "quantity": 1,
}


@dataclass
class Phase:
    """Outcome of one load phase."""

    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    def figures(self) -> dict[str, object]:
        """JSON-ready figures."""
        lat = sorted(self.latencies_ms)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        return {
            "phase": self.name,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(statistics.median(lat), 2) if lat else None,
            "p99_ms": round(p99, 2),
        }


Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def load(
    name: str, base_url: str, send: Send, *, total: int, concurrency: int, time_limit: float
) -> Phase:
    """Run `send(client, n)` for n = 0.. with `concurrency` workers, `total` times at most."""
    numbers = itertools.count()
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + time_limit
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                n = next(numbers)
                if n >= total:
                    return
                started = time.perf_counter()
                response = await send(client, n)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code >= 300:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Phase(name, len(latencies), errors, elapsed, latencies)


def start_api(env: dict[str, str], port: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Run `iotgw-api` and wait until /healthz answers."""
    program = Path(sys.executable).with_name("iotgw-api")
    with log.open("wb") as out:
        proc = subprocess.Popen([str(program)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"iotgw-api exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit("iotgw-api did not start")


async def run_phases(url: str, total: int, concurrency: int, time_limit: float) -> list[Phase]:
    """Baseline, orders, device reads."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as admin:
        created = await admin.post(
            "/v1/operator/clients",
            json={"name": "bench"},
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        )
        created.raise_for_status()
        key = created.json()["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    run_id = uuid.uuid4().hex[:8]
    devices: list[str] = []

    async def trivial(client: httpx.AsyncClient, _n: int) -> httpx.Response:
        return await client.get("/healthz")

    async def order(client: httpx.AsyncClient, n: int) -> httpx.Response:
        response = await client.post(
            "/v1/orders", json=ORDER, headers={**auth, "Idempotency-Key": f"{run_id}-{n}"}
        )
        if response.status_code == 201:
            devices.append(response.json()["devices"][0]["id"])
        return response

    async def read(client: httpx.AsyncClient, n: int) -> httpx.Response:
        return await client.get(f"/v1/devices/{devices[n % len(devices)]}", headers=auth)

    phases: list[Phase] = []
    # Warm up connections and lazy imports before measuring.
    await load("warmup", url, trivial, total=200, concurrency=concurrency, time_limit=time_limit)
    for name, send in (("baseline_trivial", trivial), ("orders", order), ("device_reads", read)):
        phases.append(
            await load(name, url, send, total=total, concurrency=concurrency, time_limit=time_limit)
        )
    return phases


def main() -> int:
    """Run the benchmark; print JSON figures, the ratios last."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--requests", type=int, default=1500, help="per phase, at most")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=30.0, help="seconds per phase")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="iotgw-bench-api-"))
    workdir.chmod(0o755)
    amqp, mqtt, mgmt, dist, epmd, pg_port = free_ports(6)
    rabbit = RabbitNode(
        workdir / "rabbitmq",
        RabbitEndpoints(amqp, mqtt, mgmt, dist, epmd, node_name=f"iotgw-bench-{amqp}@localhost"),
    )
    postgres = PostgresNode(workdir / "postgres", pg_port) if args.backend == "postgresql" else None
    proc: subprocess.Popen[bytes] | None = None
    try:
        rabbit.start()
        if postgres is not None:
            postgres.start()
            postgres.create_database("bench")
            database_url = postgres.url("bench")
        else:
            database_url = f"sqlite:///{workdir / 'registry.db'}"
        # Picked last: the broker takes seconds to start, and a port picked early may be gone.
        (api_port,) = free_ports(1)
        env = {
            **os.environ,
            "IOTGW_DATABASE_URL": database_url,
            "IOTGW_AMQP_URL": rabbit.endpoints.amqp_url("/"),
            "IOTGW_API_PORT": str(api_port),
            "IOTGW_OPERATOR_KEY": OPERATOR_KEY,
            "IOTGW_LOG_LEVEL": "WARNING",
            "IOTGW_METRICS_PORT": "0",
        }
        proc, url = start_api(env, api_port, workdir / "api.log")
        phases = asyncio.run(run_phases(url, args.requests, args.concurrency, args.time_limit))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if postgres is not None:
            postgres.stop()
        rabbit.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    figures = {p.name: p.figures() for p in phases}
    for phase in figures.values():
        print(json.dumps({"backend": args.backend, "concurrency": args.concurrency, **phase}))
    base = figures["baseline_trivial"]["per_s"]
    assert isinstance(base, float)
    orders, reads = figures["orders"]["per_s"], figures["device_reads"]["per_s"]
    assert isinstance(orders, float)
    assert isinstance(reads, float)
    print(
        json.dumps(
            {
                "backend": args.backend,
                "orders_per_s": orders,
                "device_reads_per_s": reads,
                "baseline_per_s": base,
                "orders_vs_baseline": round(orders / base, 3),
                "device_reads_vs_baseline": round(reads / base, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
