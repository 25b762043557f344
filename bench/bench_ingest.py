"""Telemetry ingest throughput and latency against baselines measured in the same run.

Starts its own RabbitMQ node and InfluxDB (iotgw.localstack, free ports, a temporary folder) and
measures, one after another on the same machine:
- baseline A, the broker's delivery limit: a bare pika consumer that only acks (prefetch 300,
  ack every 30) draining a pre-filled q.telemetry;
- baseline B, the database's write limit: raw 5000-line POSTs to InfluxDB's /write;
- `iotgw-ingest` (a child process, default settings) draining the same pre-filled queue;
- a batch-size sweep of the ingest;
- the MQTT plugin's QoS 1 ingress limit (publishers flat out, PUBACKs counted);
- end-to-end latency, device timestamp -> readable in InfluxDB, with devices publishing over
  MQTT (QoS 1) at half the path's maximum rate, min(ingest drain, MQTT ingress).
Prints one JSON object per figure and the ratio summary as the LAST line.
Run: `.venv/bin/python bench/bench_ingest.py` (BENCH_MESSAGES sets the queue size).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pika
from _common import emit, rabbit_node, topology_vhost
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.cloud_bridge.ingest.points import PointBuilder, SkewGuard
from iotgw.contracts.measurements import TELEMETRY
from iotgw.contracts.topology import TELEMETRY_QUEUE
from iotgw.localstack.influxdb import InfluxNode
from iotgw.localstack.processes import free_ports
from iotgw.localstack.rabbitmq import RabbitNode

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "60000"))
DEVICES = 100
VHOST = "bench"
SWEEP = (250, 1000, 2000, 5000, 10_000)
LATENCY_SECONDS = 10.0
PROBE = "probe"
PROBE_RATE = 100
POLL_S = 0.01
LOAD_PROCESSES = 2
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
INGEST = Path(sys.executable).parent / "iotgw-ingest"


def reading(seq: int, ts: float) -> bytes:
    """A realistic small reading."""
    metrics = {
        "temperature": round(random.uniform(15, 30), 2),
        "humidity": round(random.uniform(30, 70), 1),
        "rssi": random.randint(-90, -40),
    }
    return json.dumps({"ts": ts, "seq": seq, "metrics": metrics}).encode()


def routing_key(seq: int) -> str:
    return f"devices.bench.dev-{seq % DEVICES}.telemetry"


class Bench:
    """The services and the measurements."""

    def __init__(self, rabbit: RabbitNode, influx: InfluxNode) -> None:
        self.rabbit = rabbit
        self.influx = influx
        self.amqp_url = rabbit.endpoints.amqp_url(VHOST)
        self._db_counter = 0

    def channel(self) -> Any:
        return pika.BlockingConnection(pika.URLParameters(self.amqp_url)).channel()

    def depth(self) -> tuple[int, int]:
        channel = self.channel()
        ok = channel.queue_declare(TELEMETRY_QUEUE, passive=True).method
        channel.connection.close()
        return int(ok.message_count), int(ok.consumer_count)

    def fill(self, count: int) -> None:
        """Put `count` readings in q.telemetry (as the MQTT plugin would route them)."""
        channel = self.channel()
        start = time.time() - count * 1e-4
        for seq in range(count):
            channel.basic_publish("amq.topic", routing_key(seq), reading(seq, start + seq * 1e-4))
        channel.connection.close()
        deadline = time.monotonic() + 120
        while self.depth()[0] < count:
            if time.monotonic() > deadline:
                raise RuntimeError("queue did not fill")
            time.sleep(0.1)

    def new_database(self) -> str:
        self._db_counter += 1
        name = f"bench_{self._db_counter}"
        self.influx.query(f'DROP DATABASE "{name}"')
        return name

    def count(self, database: str) -> int:
        answer = httpx.post(
            self.influx.url + "/query",
            params={"q": f"SELECT count(seq) FROM {TELEMETRY}", "db": database},  # noqa: S608
            timeout=30,
        ).json()
        series = answer["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    # ------------------------------------------------------------ baselines

    def bare_consumer(self, count: int) -> tuple[float, float]:
        """Baseline A: msg/s of a consumer that only acks (prefetch 300, ack every 30)."""
        self.fill(count)
        channel = self.channel()
        channel.basic_qos(prefetch_count=300)
        received = 0
        cpu = time.process_time()
        started = time.perf_counter()

        def on_message(ch: Any, method: Any, _props: Any, _body: bytes) -> None:
            nonlocal received
            received += 1
            if received % 30 == 0 or received == count:
                ch.basic_ack(method.delivery_tag, multiple=True)
            if received == count:
                ch.stop_consuming()

        channel.basic_consume(TELEMETRY_QUEUE, on_message)
        channel.start_consuming()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        channel.connection.close()
        return count / elapsed, cpu / count * 1e6

    def raw_writes(self, count: int, lines_per_post: int = 5000) -> float:
        """Baseline B: points/s of raw `lines_per_post`-line POSTs to /write."""
        database = self.new_database()
        self.influx.query(f'CREATE DATABASE "{database}"')
        builder = PointBuilder(SkewGuard())
        start = time.time() - count * 1e-4
        lines = [
            builder.build(routing_key(seq), reading(seq, start + seq * 1e-4)).line
            for seq in range(count)
        ]
        bodies = [b"".join(lines[i : i + lines_per_post]) for i in range(0, count, lines_per_post)]
        with httpx.Client(base_url=self.influx.url, timeout=60) as client:
            started = time.perf_counter()
            for body in bodies:
                response = client.post("/write", params={"db": database}, content=body)
                response.raise_for_status()
            elapsed = time.perf_counter() - started
        assert self.count(database) == count
        return count / elapsed

    # ------------------------------------------------------------ ingest

    def start_ingest(self, database: str, **settings: Any) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
        env.update(
            IOTGW_AMQP_URL=self.amqp_url,
            IOTGW_INFLUX_URL=self.influx.url,
            IOTGW_INFLUX_DATABASE=database,
            IOTGW_LOG_LEVEL="WARNING",
        )
        env.update({f"IOTGW_{k.upper()}": str(v) for k, v in settings.items()})
        return subprocess.Popen([str(INGEST)], env=env, stdout=subprocess.DEVNULL)

    def stop_ingest(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def ingest_drain(self, count: int, **settings: Any) -> tuple[float, float]:
        """msg/s of `iotgw-ingest` draining `count` pre-filled readings into InfluxDB.

        Progress is read from the ingest's own Prometheus counter (written = InfluxDB answered
        2xx), which costs far less than asking InfluxDB to count points over and over; the
        final count comes from InfluxDB.
        """
        self.fill(count)
        database = self.new_database()
        (port,) = free_ports(1)
        process = self.start_ingest(database, metrics_port=port, **settings)
        channel = self.channel()
        try:
            while channel.queue_declare(TELEMETRY_QUEUE, passive=True).method.consumer_count < 1:
                time.sleep(0.005)
            cpu = cpu_seconds(process.pid)
            started = time.perf_counter()
            with httpx.Client(timeout=10) as client:
                while written_counter(client, port) < count:
                    time.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(process.pid) - cpu
        finally:
            channel.connection.close()
            self.stop_ingest(process)
        written = self.count(database)
        if written != count:
            raise RuntimeError(f"ingest wrote {written} points, expected {count}")
        return count / elapsed, cpu / count * 1e6

    # ------------------------------------------------------------ latency

    def mqtt_ingress(self, per_process: int) -> float:
        """msg/s the MQTT plugin PUBACKs from LOAD_PROCESSES publishers going flat out."""
        ep = self.rabbit.endpoints
        ctx = multiprocessing.get_context("spawn")
        counts = ctx.Queue()
        loaders = [
            ctx.Process(
                target=publish_load,
                args=(ep.host, ep.mqtt_port, f"{VHOST}:{ep.username}", ep.password, n),
                kwargs={"rate": 1e9, "seconds": 120, "counts": counts, "limit": per_process},
            )
            for n in range(LOAD_PROCESSES)
        ]
        for loader in loaders:
            loader.start()
        results = [counts.get(timeout=240) for _ in loaders]
        for loader in loaders:
            loader.join(60)
        channel = self.channel()
        channel.queue_purge(TELEMETRY_QUEUE)
        channel.connection.close()
        acked: int = sum(acked for acked, _ in results)
        elapsed: float = max(elapsed for _, elapsed in results)
        return acked / elapsed

    def latency(self, rate: float, seconds: float) -> dict[str, Any]:
        """p50/p99 ms from device timestamp to readable in InfluxDB, devices on MQTT QoS 1.

        Load publishers run in child processes (their own GIL); a probe device publishes
        PROBE_RATE readings/s from here, and a reader polls InfluxDB for the probe's new points:
        latency = time first seen - device timestamp (includes up to one poll interval).
        """
        database = self.new_database()
        process = self.start_ingest(database)
        try:
            while self.depth()[1] < 1:
                time.sleep(0.01)
            ep = self.rabbit.endpoints
            load_rate = max(0.0, rate - PROBE_RATE) / LOAD_PROCESSES
            ctx = multiprocessing.get_context("spawn")
            counts = ctx.Queue()
            loaders = [
                ctx.Process(
                    target=publish_load,
                    args=(ep.host, ep.mqtt_port, f"{VHOST}:{ep.username}", ep.password, n),
                    kwargs={"rate": load_rate, "seconds": seconds, "counts": counts},
                )
                for n in range(LOAD_PROCESSES)
            ]
            for loader in loaders:
                loader.start()
            samples: list[float] = []
            done = threading.Event()
            reader = threading.Thread(target=self._read_probe, args=(database, samples, done))
            reader.start()
            probes = publish_probe(
                ep.host, ep.mqtt_port, f"{VHOST}:{ep.username}", ep.password, seconds
            )
            results = [counts.get(timeout=180) for _ in loaders]
            sent = probes + sum(acked for acked, _ in results)
            publish_s = max(elapsed for _, elapsed in results)
            for loader in loaders:
                loader.join(60)
            published_at = time.monotonic()
            deadline = time.monotonic() + 30
            while len(samples) < probes and time.monotonic() < deadline:
                time.sleep(0.05)
            done.set()
            reader.join()
            # Did it keep up? Time from the end of publishing until every reading is written.
            written = 0
            while (
                time.monotonic() < published_at + 120 and (written := self.count(database)) < sent
            ):
                time.sleep(0.2)
            backlog_s = time.monotonic() - published_at
        finally:
            self.stop_ingest(process)
        # The first second is warm-up (connections, first batches).
        steady = sorted(samples[PROBE_RATE:])
        return {
            "target_rate_msg_s": round(rate),
            "achieved_rate_msg_s": round(sent / publish_s),
            "pubacked": sent,
            "written": written,
            "all_written_s_after_publishing": round(backlog_s, 2),
            "probes": probes,
            "probes_seen": len(samples),
            "p50_ms": round(steady[len(steady) // 2] * 1000, 1),
            "p99_ms": round(steady[int(len(steady) * 0.99)] * 1000, 1),
            "max_ms": round(steady[-1] * 1000, 1),
        }

    def _read_probe(self, database: str, samples: list[float], done: threading.Event) -> None:
        """Poll for the probe's new points (one MQTT session: they arrive in time order)."""
        watermark = 0
        with httpx.Client(base_url=self.influx.url, timeout=10) as client:
            while not done.is_set():
                q = (
                    f"SELECT seq FROM {TELEMETRY} "  # noqa: S608 - constant names
                    f"WHERE device = '{PROBE}' AND time > {watermark}"
                )
                answer = client.get("/query", params={"q": q, "db": database, "epoch": "ns"}).json()
                now_ns = time.time_ns()
                for result in answer.get("results", []):
                    for series in result.get("series", []):
                        for point_ns, _seq in series["values"]:
                            samples.append((now_ns - point_ns) / 1e9)
                            watermark = max(watermark, point_ns)
                time.sleep(POLL_S)


def written_counter(client: httpx.Client, port: int) -> float:
    """`iotgw_ingest_written_total` of the ingest serving metrics on `port` (0 until it answers)."""
    try:
        text = client.get(f"http://127.0.0.1:{port}/metrics").text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("iotgw_ingest_written_total "):
            return float(line.split()[1])
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Acks:
    """PUBACKs counted by paho's network thread."""

    def __init__(self) -> None:
        self.count = 0

    def on_publish(self, *_args: Any) -> None:
        self.count += 1

    def wait(self, expected: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count < expected and time.monotonic() < deadline:
            time.sleep(0.01)


def _mqtt_client(
    host: str, port: int, username: str, password: str, name: str
) -> tuple[mqtt.Client, _Acks]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    client.max_inflight_messages_set(1000)
    acks = _Acks()
    client.on_publish = acks.on_publish
    client.connect(host, port)
    client.loop_start()
    return client, acks


def publish_load(
    host: str,
    port: int,
    username: str,
    password: str,
    worker: int,
    *,
    rate: float,
    seconds: float,
    counts: Any,
    limit: int | None = None,
) -> None:
    """Child process: DEVICES devices' readings at `rate` msg/s over MQTT QoS 1.

    Stops after `seconds` or `limit` readings; puts (PUBACKed readings, seconds until the last
    PUBACK) on `counts`.
    """
    client, acks = _mqtt_client(host, port, username, password, f"load-{worker}")
    sent = 0
    started = time.monotonic()
    last_ts = 0.0
    cap = limit if limit is not None else sys.maxsize
    while (now := time.monotonic()) - started < seconds and sent < cap:
        due = min(cap, int((now - started) * rate))
        while sent < due:
            last_ts = max(time.time(), last_ts + 1e-6)
            topic = f"devices/bench/w{worker}-{sent % DEVICES}/telemetry"
            client.publish(topic, reading(sent, last_ts), qos=1)
            sent += 1
        time.sleep(0.005)
    acks.wait(sent, 120)
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    counts.put((acks.count, elapsed))


def publish_probe(host: str, port: int, username: str, password: str, seconds: float) -> int:
    """PROBE_RATE readings/s from the probe device; returns how many were PUBACKed."""
    client, acks = _mqtt_client(host, port, username, password, "probe")
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        client.publish(f"devices/bench/{PROBE}/telemetry", reading(sent, time.time()), qos=1)
        sent += 1
        time.sleep(1 / PROBE_RATE)
    acks.wait(sent, 60)
    client.disconnect()
    client.loop_stop()
    return acks.count


def main() -> None:
    """Start the services, measure, print JSON, ratios last."""
    base = Path(tempfile.mkdtemp(prefix="iotgw-bench-"))
    base.chmod(0o755)
    rabbit = rabbit_node(base, "iotgw-bench")
    influx = InfluxNode(base / "influxdb", 0, 0)
    try:
        rabbit.start()
        # Ports picked only now: the node opens ports of its own while it starts.
        influx.http_port, influx.rpc_port = free_ports(2)
        influx.start()
        topology_vhost(rabbit, VHOST)
        bench = Bench(rabbit, influx)

        # Other work shares this machine: interleave the runs and keep each one's best.
        broker_runs: list[tuple[float, float]] = []
        ingest_runs: list[tuple[float, float]] = []
        database_runs: list[float] = []
        for round_ in range(ROUNDS):
            broker_runs.append(bench.bare_consumer(MESSAGES))
            rate, cpu = broker_runs[-1]
            emit(
                figure="baseline_a_bare_consumer",
                round=round_,
                msg_s=round(rate),
                cpu_us_per_msg=round(cpu, 1),
            )
            database_runs.append(bench.raw_writes(MESSAGES))
            emit(
                figure="baseline_b_raw_5000_line_posts",
                round=round_,
                points_s=round(database_runs[-1]),
            )
            ingest_runs.append(bench.ingest_drain(MESSAGES))
            rate, cpu = ingest_runs[-1]
            emit(
                figure="ingest_drain", round=round_, msg_s=round(rate), cpu_us_per_msg=round(cpu, 1)
            )
        broker_limit = max(rate for rate, _ in broker_runs)
        ingest = max(rate for rate, _ in ingest_runs)
        database_limit = max(database_runs)
        # CPU per message is far less sensitive to other load than a rate is.
        broker_cpu = min(cpu for _, cpu in broker_runs)
        ingest_cpu = min(cpu for _, cpu in ingest_runs)
        sweep = {}
        for size in SWEEP:
            prefetch = min(65_535, 4 * size)
            rate, cpu = bench.ingest_drain(
                MESSAGES // 2, ingest_batch_size=size, ingest_prefetch=prefetch
            )
            sweep[size] = round(rate)
            emit(
                figure="batch_size_sweep",
                batch_size=size,
                prefetch=prefetch,
                msg_s=round(rate),
                cpu_us_per_msg=round(cpu, 1),
            )
        # The end-to-end path is as fast as its slower part: the MQTT plugin or the ingest.
        mqtt_limit = bench.mqtt_ingress(MESSAGES // (2 * LOAD_PROCESSES))
        emit(figure="mqtt_ingress_qos1", msg_s=round(mqtt_limit))
        latency = bench.latency(min(ingest, mqtt_limit) / 2, LATENCY_SECONDS)
        emit(figure="latency_at_half_max_rate", **latency)
        limit = min(broker_limit, database_limit)
        emit(
            ratio_ingest_vs_min_baseline=round(ingest / limit, 3),
            ingest_msg_s=round(ingest),
            broker_limit_msg_s=round(broker_limit),
            database_limit_points_s=round(database_limit),
            cpu_us_per_msg_ingest=round(ingest_cpu, 1),
            cpu_us_per_msg_bare_consumer=round(broker_cpu, 1),
            best_sweep_batch_size=max(sweep, key=lambda k: sweep[k]),
            mqtt_ingress_msg_s=round(mqtt_limit),
            latency_rate_msg_s=latency["achieved_rate_msg_s"],
            latency_p50_ms=latency["p50_ms"],
            latency_p99_ms=latency["p99_ms"],
            goals={"ratio": 0.8, "p99_ms": 1000},
        )
    finally:
        influx.stop()
        rabbit.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
