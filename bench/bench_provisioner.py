"""Purchase -> ready latency of the provisioner, against the bare render+write baseline.

Starts its own RabbitMQ node and InfluxDB (iotgw.localstack, free ports, a temporary folder),
runs `iotgw-provisioner` as a child process with the `manifests` target, publishes PURCHASES
purchases (two devices each, so six management API calls per purchase) onto amq.topic at RATE
per second, and times each from its publish to its `provisioning.<client>.ready` event.
Baseline, measured in the same run: rendering the same stacks and writing them as YAML, no
broker, no InfluxDB, no device users. Prints one JSON object per figure, the summary LAST.
Run: `.venv/bin/python bench/bench_provisioner.py` (BENCH_PURCHASES, BENCH_RATE change the load).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pika
from _common import emit

from iotgw.contracts.credentials import rabbit_password_hash
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import DeviceCredential, PurchaseData
from iotgw.contracts.topics import PurchaseAction
from iotgw.contracts.topology import DEFAULT_TOPOLOGY, TOPIC_EXCHANGE
from iotgw.localstack.influxdb import InfluxNode
from iotgw.localstack.processes import StackError, free_ports, tcp_open, wait_until
from iotgw.localstack.rabbitmq import RabbitEndpoints, RabbitNode
from iotgw.provisioner.catalog import load_catalog
from iotgw.provisioner.manifests import ManifestsTarget
from iotgw.provisioner.render import render_stack
from iotgw.provisioner.request import PurchaseRequest

PURCHASES = int(os.environ.get("BENCH_PURCHASES", "200"))
RATE = float(os.environ.get("BENCH_RATE", "20"))
GOAL_P99_MS = 2000.0
PRODUCTS = ("Product-A", "Product-B", "Product-C")
ENTRY = Path(sys.executable).parent / "iotgw-provisioner"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def purchases(prefix: str) -> list[Envelope]:
    """The purchases, built (and their device hashes computed) before any timing."""
    out = []
    for i in range(PURCHASES):
        devices = [
            DeviceCredential(id=f"dev-{d}", password_hash=rabbit_password_hash(f"secret-{i}-{d}"))
            for d in range(2)
        ]
        data = PurchaseData(order_id=f"bench-{i}", quantity=2, devices=devices)
        out.append(
            Envelope.new(
                client=f"{prefix}-{i:04d}",
                product=PRODUCTS[i % len(PRODUCTS)],
                hardware="Dedicated" if i % 2 else "Classic",
                app="api",
                action="created",
                publisher="bench",
                data=data.model_dump(),
            )
        )
    return out


def baseline(envelopes: list[Envelope], folder: Path) -> list[float]:
    """Per purchase: render the stack and write it as YAML (what the target does, alone)."""
    catalog = load_catalog()
    target = ManifestsTarget(folder)
    times = []
    for env in envelopes:
        request = PurchaseRequest(PurchaseAction.CREATED, env, "x", ())
        started = time.perf_counter()
        target.apply(env.client, render_stack(request.spec, catalog, "iotgw"))
        times.append((time.perf_counter() - started) * 1000)
    return times


class ReadyWatcher(threading.Thread):
    """Consumes provisioning.# and records when each client's status arrived."""

    def __init__(self, amqp_url: str) -> None:
        super().__init__(daemon=True)
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        self.channel.queue_bind(self.queue, TOPIC_EXCHANGE, "provisioning.#")
        self.arrived: dict[str, tuple[float, str]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        for method, _props, body in self.channel.consume(
            self.queue, auto_ack=True, inactivity_timeout=1
        ):
            if method is not None:
                env = Envelope.from_json(body)
                outcome = method.routing_key.rsplit(".", 1)[-1]
                self.arrived[env.client] = (time.monotonic(), outcome)
            if self.done.is_set():
                break
        self.connection.close()


def measure(
    channel: Any, watcher: ReadyWatcher, envelopes: list[Envelope], rate: float | None, name: str
) -> tuple[float, float]:
    """Publish `envelopes` (at `rate` per second, or all at once) and time each to its status."""
    sent: dict[str, float] = {}
    started = time.monotonic()
    for i, envelope in enumerate(envelopes):
        if rate is not None:
            # Paced: purchase i is due at started + i / rate.
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        sent[envelope.client] = time.monotonic()
        channel.basic_publish(
            TOPIC_EXCHANGE,
            f"purchases.{envelope.client}.created",
            envelope.to_json(),
            pika.BasicProperties(delivery_mode=2, content_type="application/json"),
        )
    wait_until(lambda: all(c in watcher.arrived for c in sent), 180, f"every status ({name})")
    elapsed = time.monotonic() - started
    latencies = [(watcher.arrived[c][0] - t) * 1000 for c, t in sent.items()]
    ready = sum(1 for c in sent if watcher.arrived[c][1] == "ready")
    if ready != len(sent):
        raise SystemExit(f"{name}: only {ready} of {len(sent)} purchases became ready")
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    emit(
        figure=name,
        purchases=len(sent),
        ready=ready,
        rate_per_s=rate,
        achieved_per_s=round(len(sent) / elapsed, 1),
        p50_ms=round(p50, 1),
        p99_ms=round(p99, 1),
        max_ms=round(max(latencies), 1),
    )
    return p50, p99


def start_services(base: Path, attempts: int = 3) -> tuple[RabbitNode, InfluxNode]:
    """Our own RabbitMQ and InfluxDB on free ports; new ports when another process took one."""
    for attempt in range(1, attempts + 1):
        amqp, mqtt_port, mgmt, dist, epmd, influx_http, influx_rpc = free_ports(7)
        rabbit = RabbitNode(
            base / f"rabbitmq-{attempt}",
            RabbitEndpoints(amqp, mqtt_port, mgmt, dist, epmd, f"iotgw-bench-{amqp}@localhost"),
        )
        influx = InfluxNode(base / f"influxdb-{attempt}", influx_http, influx_rpc)
        try:
            rabbit.start()
            influx.start()
        except StackError:
            rabbit.stop()
            influx.stop()
            if attempt == attempts:
                raise
            continue
        return rabbit, influx
    raise AssertionError("unreachable")


def main() -> int:
    """Start the services, measure, print the figures."""
    base = Path(tempfile.mkdtemp(prefix="iotgw-bench-prov-"))
    base.chmod(0o755)
    proc: subprocess.Popen[bytes] | None = None
    rabbit, influx = start_services(base)
    amqp = rabbit.endpoints.amqp_port
    try:
        envelopes = purchases("paced")
        base_ms = baseline(envelopes, base / "baseline")
        emit(
            figure="baseline_render_write",
            purchases=len(base_ms),
            p50_ms=round(statistics.median(base_ms), 3),
            p99_ms=round(percentile(base_ms, 99), 3),
        )

        amqp_url = rabbit.endpoints.amqp_url()
        wait_until(lambda: tcp_open(amqp), 30, "rabbitmq amqp listener")
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        DEFAULT_TOPOLOGY.declare(channel)
        channel.confirm_delivery()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")} | {
            "IOTGW_AMQP_URL": amqp_url,
            "IOTGW_RABBITMQ_MANAGEMENT_URL": rabbit.endpoints.management_url,
            "IOTGW_INFLUX_URL": influx.url,
            "IOTGW_PROVISIONER_TARGET": "manifests",
            "IOTGW_MANIFESTS_DIR": str(base / "gitops"),
            "IOTGW_LOG_LEVEL": "WARNING",
        }
        proc = subprocess.Popen([str(ENTRY)], env=env, stdout=subprocess.DEVNULL)
        wait_until(
            lambda: channel.queue_declare("q.provisioning", passive=True).method.consumer_count > 0,
            30,
            "iotgw-provisioner consuming",
        )
        watcher = ReadyWatcher(amqp_url)
        watcher.start()
        p50, p99 = measure(channel, watcher, envelopes, RATE, "purchase_to_ready")
        # The same load all at once: how a backlog drains (informative, not the goal).
        measure(channel, watcher, purchases("burst"), None, "burst_purchase_to_ready")
        watcher.done.set()
        watcher.join(timeout=5)
        connection.close()
        base_p50, base_p99 = statistics.median(base_ms), percentile(base_ms, 99)
        emit(
            summary="provisioner",
            p50_ms=round(p50, 1),
            p99_ms=round(p99, 1),
            goal_p99_ms=GOAL_P99_MS,
            goal_met=p99 < GOAL_P99_MS,
            baseline_p50_ms=round(base_p50, 3),
            baseline_p99_ms=round(base_p99, 3),
            ratio_p50_to_baseline=round(p50 / base_p50, 1),
            ratio_p99_to_baseline=round(p99 / base_p99, 1),
        )
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        rabbit.stop()
        influx.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
