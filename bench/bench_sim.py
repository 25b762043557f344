"""Simulator throughput against a raw paho publisher, and how many modules one process holds.

Starts its own RabbitMQ node (iotgw.localstack, free ports, a temporary folder) with the
platform's topology, then measures one after another on the same machine:
- baseline: one raw paho client publishing QoS 1 (100 in flight) into the MQTT plugin, msg/s
  acknowledged, messages landing on q.telemetry;
- the simulator (in this process, the same Fleet `iotgw-sim` runs): SIM_MODULES modules
  offering more than the broker takes, msg/s acknowledged, each reading persisted in the
  SQLite buffer before publishing and deleted on PUBACK;
- the connection ramp: RAMP_MODULES modules (goal 10,000) connecting in parallel from one
  process, time to all connected, how many stay connected over a hold period, process RSS.
Prints one JSON object per figure and the ratio summary as the LAST line.
Run: `.venv/bin/python bench/bench_sim.py` (BENCH_RAMP_MODULES, BENCH_SECONDS override).
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pika
from _common import emit, rabbit_node
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.contracts.topology import DEFAULT_TOPOLOGY, TELEMETRY_QUEUE
from iotgw.device_sim.fleet import Fleet, FleetConfig
from iotgw.device_sim.identities import fleet, provision
from iotgw.localstack.rabbitmq import RabbitNode

SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
SIM_MODULES = 200
SIM_RATE_HZ = 50.0
RAMP_MODULES = int(os.environ.get("BENCH_RAMP_MODULES", "10000"))
RAMP_HOLD_S = 20.0
SECRET = secrets.token_urlsafe(16)  # module passwords derive from it; never stored
PAYLOAD = (
    b'{"ts":1700000000.123,"seq":123456,"metrics":{"temperature":21.53,"humidity":48.2,'
    b'"battery_pct":87.31,"battery_v":4.086,"rssi":-71}}'
)


def rss_mb() -> float:
    """This process's resident memory now, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Bench:
    """The node and helpers shared by the measurements."""

    def __init__(self, node: RabbitNode, work: Path) -> None:
        self.node = node
        self.work = work
        channel = pika.BlockingConnection(pika.URLParameters(node.endpoints.amqp_url())).channel()
        DEFAULT_TOPOLOGY.declare(channel)
        self.channel = channel

    def queued(self) -> int:
        """Messages on q.telemetry."""
        return int(self.channel.queue_declare(TELEMETRY_QUEUE, passive=True).method.message_count)

    def purge(self) -> None:
        """Empty q.telemetry between measurements."""
        self.channel.queue_purge(TELEMETRY_QUEUE)

    def baseline(self) -> float:
        """Raw paho publisher, QoS 1, 100 in flight: acknowledged msg/s over SECONDS."""
        acked = 0
        done = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
        client.username_pw_set("guest", "guest")
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(1000)

        def on_publish(*_args: Any) -> None:
            nonlocal acked
            acked += 1

        client.on_publish = on_publish
        client.connect(self.node.endpoints.host, self.node.endpoints.mqtt_port)
        client.loop_start()
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < SECONDS:
            # Keep the in-flight window and the queue full; paho sends as PUBACKs free slots.
            if sent - acked < 1000:
                client.publish("devices/bench/raw-1/telemetry", PAYLOAD, qos=1)
                sent += 1
            else:
                done.wait(0.001)
        count = acked
        elapsed = time.monotonic() - start
        client.disconnect()
        client.loop_stop()
        rate = count / elapsed
        emit(figure="baseline_raw_paho_qos1", msg_per_s=round(rate), acked=count)
        return rate

    def simulator(self) -> float:
        """The simulator's acknowledged msg/s with SIM_MODULES modules over SECONDS."""
        identities = fleet("bench", "t", SIM_MODULES)
        provision(self.node.endpoints.management_url, ("guest", "guest"), "/", identities, SECRET)
        sim = Fleet(
            FleetConfig(
                identities=identities,
                host=self.node.endpoints.host,
                port=self.node.endpoints.mqtt_port,
                secret=SECRET,
                state_dir=self.work / "sim",
                rate_hz=SIM_RATE_HZ,
                window=20,
            )
        )
        sim.start()
        sim.loop.run(until=lambda: sim.connected_now == SIM_MODULES, timeout=60)
        acked0, t0 = sim.totals().acked, time.monotonic()
        sim.run_for(SECONDS)
        totals = sim.totals()
        elapsed = time.monotonic() - t0
        rate = (totals.acked - acked0) / elapsed
        drained = sim.drain(120)
        sim.stop()
        final = sim.totals()
        queued = self.queued()
        emit(
            figure="simulator",
            modules=SIM_MODULES,
            offered_per_s=SIM_MODULES * SIM_RATE_HZ,
            msg_per_s=round(rate),
            acked_total=final.acked,
            on_queue=queued,
            queue_equals_acked=queued == final.acked,
            drained=drained,
        )
        return rate

    def ramp(self) -> dict[str, Any]:
        """RAMP_MODULES modules from this process: time to connect all, held over RAMP_HOLD_S."""
        identities = fleet("bench", "r", RAMP_MODULES)
        t = time.monotonic()
        provision(self.node.endpoints.management_url, ("guest", "guest"), "/", identities, SECRET)
        provision_s = time.monotonic() - t
        sim = Fleet(
            FleetConfig(
                identities=identities,
                host=self.node.endpoints.host,
                port=self.node.endpoints.mqtt_port,
                secret=SECRET,
                state_dir=self.work / "ramp",
                rate_hz=1 / 30,
                keepalive_s=120,
                connect_parallel=500,
            )
        )
        start = time.monotonic()
        sim.start()
        sim.loop.run(until=lambda: sim.connected_now >= RAMP_MODULES, timeout=300)
        connect_s = time.monotonic() - start
        reached = sim.totals().connected
        sim.run_for(RAMP_HOLD_S)
        held = sim.totals()
        figures = {
            "figure": "connection_ramp",
            "modules": RAMP_MODULES,
            "connected_after_ramp": reached,
            "connect_seconds": round(connect_s, 1),
            "connects_per_s": round(reached / connect_s),
            "held_connected": held.connected,
            "max_connected": held.max_connected,
            "disconnects_during_hold": held.disconnects,
            "disconnect_reasons": held.disconnect_reasons,
            "acked_during_run": held.acked,
            "open_files_limit": sim.open_files,
            "sim_rss_mb": round(rss_mb()),
            "provision_seconds": round(provision_s, 1),
        }
        sim.stop(timeout=120)
        emit(**figures)
        return figures


def main() -> None:
    """Run the measurements; the ratio summary is the last line."""
    base = Path(tempfile.mkdtemp(prefix="iotgw-bench-sim-"))
    base.chmod(0o755)
    node = rabbit_node(base, "iotgw-bench-sim")
    try:
        node.start()
        bench = Bench(node, base)
        raw = bench.baseline()
        bench.purge()
        sim = bench.simulator()
        bench.purge()
        ramp = bench.ramp()
        emit(
            summary="bench_sim",
            raw_paho_msg_per_s=round(raw),
            sim_msg_per_s=round(sim),
            ratio_sim_vs_raw_paho=round(sim / raw, 3),
            modules_connected=ramp["held_connected"],
            modules_goal=10_000,
            ratio_connected_vs_goal=round(ramp["held_connected"] / 10_000, 3),
        )
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
