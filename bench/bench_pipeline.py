"""The whole telemetry pipeline at rising load, against broker and database baselines.

Starts its own RabbitMQ node (open-files limit 20,000) and InfluxDB on free ports, runs
`iotgw-ingest` as a process, and for each load step starts `iotgw-sim` as a process with N
modules (each its own broker user, MQTT QoS 1, SQLite buffer) reporting every INTERVAL seconds.
Per step, over a bounded window once all modules are connected:
- end-to-end rate: readings/s written to InfluxDB (the ingest's `written` counter);
- latency: device timestamp -> readable in InfluxDB, p50/p99, from PROBES modules whose new
  points a reader polls for (includes up to one poll interval);
- memory per connected device: broker (beam.smp RSS minus its RSS before any module connected)
  / N, and simulator RSS / N;
- CPU per stage (beam.smp, simulator, ingest, influxd) as cores and as µs per reading written.
A saturation step (fewer modules reporting fast) finds the end-to-end maximum; then the
database's points, series and bytes on disk are read.
Then, with ingest and simulator stopped, the baselines of bench_ingest.py in the same run:
a bare pika consumer that only acks (prefetch 300, ack every 30) and raw 5000-line POSTs.
Writes PNG plots (rate and latency against load, memory per device), prints one JSON object per
figure and the ratio summary as the LAST line.
Run: `.venv/bin/python bench/bench_pipeline.py` (several minutes), `--quick` for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pika
from _common import (
    emit,
    median,
    percentile,
    rabbit_node,
    rss_mib,
    scrape,
    slope,
    start_influx,
    topology_vhost,
)
from bench_ingest import VHOST, Bench, cpu_seconds
from matplotlib.figure import Figure
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from iotgw.contracts.measurements import TAG_CLIENT, TAG_DEVICE, TELEMETRY
from iotgw.contracts.topology import TELEMETRY_QUEUE
from iotgw.device_sim.identities import fleet, provision
from iotgw.localstack.influxdb import InfluxNode
from iotgw.localstack.processes import free_ports
from iotgw.localstack.rabbitmq import RabbitNode
from iotgw.localstack.supervisor import Supervisor

BIN = Path(sys.executable).parent
CLIENT = "pipe"
PREFIX = "m"
DATABASE = "pipeline"
SECRET = secrets.token_urlsafe(16)  # module passwords derive from it; never stored
POLL_S = 0.05
ROOT = Path(__file__).resolve().parent.parent
# What a connection attempt to an overloaded broker raises (the second is not an AMQPError).
BROKER_ERRORS = (pika.exceptions.AMQPError, AMQPConnectorException)


@dataclass(frozen=True)
class Plan:
    """How hard and how long: the full run or the smoke run."""

    steps: tuple[int, ...]
    interval_s: float
    warmup_s: float
    measure_s: float
    connect_timeout_s: float
    baseline_messages: int
    probes: int
    saturate: tuple[int, float]  # modules, Hz: offering more than the pipeline takes


FULL = Plan((1000, 2500, 5000, 10_000), 5.0, 5.0, 20.0, 240.0, 60_000, 100, (2500, 4.0))
QUICK = Plan((50, 200), 1.0, 2.0, 6.0, 60.0, 10_000, 20, (200, 20.0))


@dataclass
class Step:
    """What one load step measured."""

    modules: int
    offered_s: float
    saturating: bool = False
    connected: int = 0
    connect_s: float = 0.0
    written_s: float = 0.0
    acked_s: float = 0.0
    backlog_end: int = 0
    latencies: list[float] = field(default_factory=list)
    broker_rss_mib: float = 0.0
    sim_rss_mib: float = 0.0
    cpu_cores: dict[str, float] = field(default_factory=dict)

    def figures(self, broker_idle_mib: float) -> dict[str, Any]:
        """The step as JSON-ready figures."""
        return {
            "figure": "pipeline_saturation" if self.saturating else "pipeline_step",
            "modules": self.modules,
            "connected": self.connected,
            "connect_s": round(self.connect_s, 1),
            "offered_msg_s": round(self.offered_s),
            "sim_acked_msg_s": round(self.acked_s),
            "end_to_end_msg_s": round(self.written_s),
            "queue_backlog_at_end": self.backlog_end,
            "latency_samples": len(self.latencies),
            "p50_ms": round(percentile(self.latencies, 0.5) * 1000, 1),
            "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 1),
            "broker_rss_mib": round(self.broker_rss_mib),
            "broker_kib_per_device": round(self.broker_kib_per_device(broker_idle_mib), 1),
            "sim_rss_mib": round(self.sim_rss_mib),
            "sim_kib_per_device": round(self.sim_rss_mib * 1024 / self.modules, 1),
            "cpu_cores": {k: round(v, 2) for k, v in self.cpu_cores.items()},
            "cpu_us_per_msg": {k: round(v, 1) for k, v in self.cpu_us_per_msg().items()},
        }

    def cpu_us_per_msg(self) -> dict[str, float]:
        """CPU microseconds each stage spent per reading written (rates drift; this less so)."""
        return {k: v / max(self.written_s, 1e-9) * 1e6 for k, v in self.cpu_cores.items()}

    def broker_kib_per_device(self, broker_idle_mib: float) -> float:
        """beam.smp RSS growth over idle, per connected module, KiB."""
        return (self.broker_rss_mib - broker_idle_mib) * 1024 / max(1, self.connected)


class Pipeline:
    """The services, the ingest process and one simulator process per step."""

    def __init__(self, rabbit: RabbitNode, influx: InfluxNode, work: Path, plan: Plan) -> None:
        self.rabbit = rabbit
        self.influx = influx
        self.work = work
        self.plan = plan
        self.supervisor = Supervisor(work / "logs")
        self.ingest_port = 0
        self.http = httpx.Client(timeout=10)

    def env(self, **settings: Any) -> dict[str, str]:
        """Our environment without IOTGW_* settings, plus `settings` as IOTGW_<NAME>."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
        env["IOTGW_LOG_LEVEL"] = "WARNING"
        env.update({f"IOTGW_{k.upper()}": str(v) for k, v in settings.items()})
        return env

    def queue(self) -> tuple[int, int]:
        """(messages, consumers) on q.telemetry.

        A connection per call: an idle BlockingConnection misses heartbeats during long waits.
        """
        connection = pika.BlockingConnection(
            pika.URLParameters(self.rabbit.endpoints.amqp_url(VHOST))
        )
        try:
            ok = connection.channel().queue_declare(TELEMETRY_QUEUE, passive=True).method
        finally:
            connection.close()
        return int(ok.message_count), int(ok.consumer_count)

    def wait(self, check: Any, timeout: float, what: str) -> None:
        """Poll `check()` until true; RuntimeError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self._true(check):
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.5)

    @staticmethod
    def _true(check: Any) -> bool:
        # A broker busy with 10,000 connections can miss an AMQP handshake: ask again.
        try:
            return bool(check())
        except BROKER_ERRORS:
            return False

    def start_ingest(self) -> None:
        """`iotgw-ingest` with its default batching, metrics on a free port."""
        (self.ingest_port,) = free_ports(1)
        self.supervisor.start(
            "ingest",
            [str(BIN / "iotgw-ingest")],
            self.env(
                amqp_url=self.rabbit.endpoints.amqp_url(VHOST),
                influx_url=self.influx.url,
                influx_database=DATABASE,
                metrics_port=self.ingest_port,
            ),
        )
        self.wait(lambda: self.queue()[1] >= 1, 60, "ingest to consume")

    def broker_rss(self, samples: int = 3) -> float:
        """Median beam.smp RSS over `samples` half-second samples, MiB."""
        pid = self.rabbit.pid()
        values = []
        for _ in range(samples):
            values.append(rss_mib(pid) if pid else 0.0)
            time.sleep(0.5)
        return median(values)

    def written(self) -> float:
        """Readings the ingest has written to InfluxDB so far."""
        return scrape(self.http, self.ingest_port).get("iotgw_ingest_written_total", 0.0)

    def step(self, modules: int, rate_hz: float, saturating: bool = False) -> Step:
        """Run `modules` simulated modules, measure over the window, stop them, drain."""
        plan = self.plan
        result = Step(modules, modules * rate_hz, saturating)
        (sim_port,) = free_ports(1)
        name = f"sim-{modules}-{rate_hz:g}hz"
        (self.work / name).mkdir()
        sim = self.supervisor.start(
            name,
            [
                str(BIN / "iotgw-sim"),
                *("--count", str(modules), "--rate", str(rate_hz)),
                *("--client", CLIENT, "--prefix", PREFIX, "--vhost", VHOST),
                *("--duration", "86400", "--connect-parallel", "500", "--drain-timeout", "30"),
                *("--state-dir", str(self.work / name), "--json"),
            ],
            self.env(
                mqtt_host=self.rabbit.endpoints.host,
                mqtt_port=self.rabbit.endpoints.mqtt_port,
                sim_secret=SECRET,
                metrics_port=sim_port,
            ),
        )
        try:
            started = time.monotonic()
            deadline = started + plan.connect_timeout_s
            while time.monotonic() < deadline and sim.alive:
                if scrape(self.http, sim_port).get("iotgw_sim_connected", 0) >= modules:
                    break
                time.sleep(0.2)
            if not sim.alive:
                raise RuntimeError(f"{name} exited: see {sim.log_path}")
            result.connect_s = time.monotonic() - started
            time.sleep(plan.warmup_s)  # first readings of every module, first batches
            self.measure(result, sim.proc.pid, sim_port)
        finally:
            with contextlib.suppress(ProcessLookupError):
                sim.proc.send_signal(signal.SIGTERM)
            try:
                sim.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.supervisor.kill(name)
        self.wait(lambda: self.queue()[0] == 0, 300, "q.telemetry to drain")
        return result

    def measure(self, result: Step, sim_pid: int, sim_port: int) -> None:
        """Rates, latency and memory over the measurement window."""
        beam = self.rabbit.pid()
        probes = [i.device for i in fleet(CLIENT, PREFIX, min(self.plan.probes, result.modules))]
        done = threading.Event()
        reader = threading.Thread(
            target=self.read_probes, args=(probes, result.latencies, done), daemon=True
        )
        pids = {
            "broker": beam,
            "simulator": sim_pid,
            "ingest": self.supervisor.processes["ingest"].proc.pid,
            "influxdb": self.influx.pid(),
        }
        cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items() if pid}
        sim0 = scrape(self.http, sim_port)
        written0, t0 = self.written(), time.monotonic()
        reader.start()
        broker_rss: list[float] = []
        sim_rss: list[float] = []
        while time.monotonic() - t0 < self.plan.measure_s:
            broker_rss.append(rss_mib(beam) if beam else 0.0)
            sim_rss.append(rss_mib(sim_pid))
            time.sleep(1.0)
        written1, t1 = self.written(), time.monotonic()
        cpu1 = {k: cpu_seconds(pid) for k, pid in pids.items() if pid}
        sim1 = scrape(self.http, sim_port)
        done.set()
        reader.join(10)
        elapsed = t1 - t0
        result.written_s = (written1 - written0) / elapsed
        result.cpu_cores = {k: (cpu1[k] - cpu0[k]) / elapsed for k in cpu0}
        result.acked_s = (sim1.get("iotgw_sim_acked", 0) - sim0.get("iotgw_sim_acked", 0)) / elapsed
        result.connected = int(sim1.get("iotgw_sim_connected", 0))
        with contextlib.suppress(*BROKER_ERRORS):
            result.backlog_end = self.queue()[0]
        result.broker_rss_mib = median(broker_rss)
        result.sim_rss_mib = median(sim_rss)

    def read_probes(self, probes: list[str], samples: list[float], done: threading.Event) -> None:
        """Poll InfluxDB for the probe modules' new points; latency = first seen - device time.

        One MQTT session per module keeps each module's points in time order, so a per-device
        watermark never skips a point.
        """
        since = time.time_ns()
        watermark = dict.fromkeys(probes, since)
        where = " OR ".join(f"{TAG_DEVICE} = '{p}'" for p in probes)
        with httpx.Client(base_url=self.influx.url, timeout=10) as client:
            while not done.is_set():
                q = (
                    f"SELECT seq FROM {TELEMETRY} WHERE {TAG_CLIENT} = '{CLIENT}' "  # noqa: S608
                    f"AND ({where}) AND time > {min(watermark.values())} GROUP BY {TAG_DEVICE}"
                )
                answer = client.get("/query", params={"q": q, "db": DATABASE, "epoch": "ns"})
                now_ns = time.time_ns()
                for res in answer.json().get("results", []):
                    for series in res.get("series", []):
                        device = series["tags"][TAG_DEVICE]
                        for point_ns, _seq in series["values"]:
                            if point_ns > watermark[device]:
                                samples.append((now_ns - point_ns) / 1e9)
                                watermark[device] = point_ns
                time.sleep(POLL_S)

    def close(self) -> None:
        """Stop the processes we started and our connections."""
        self.supervisor.stop_all()
        self.http.close()


def database_disk(influx: InfluxNode) -> dict[str, Any]:
    """Points, series and bytes on disk (TSM + WAL) of the benchmark's database.

    Minutes-old data sits mostly in the WAL (about the size of the line protocol) until a cold
    shard is compacted to TSM, so bytes per point here is an upper bound.
    """
    points = influx.scalar(f"SELECT count(seq) FROM {TELEMETRY}", DATABASE)  # noqa: S608
    answer: Any = influx.query("SHOW SERIES CARDINALITY", DATABASE)
    series = int(answer["results"][0]["series"][0]["values"][0][-1])
    size = sum(
        f.stat().st_size
        for top in (influx.base_dir / "data" / DATABASE, influx.base_dir / "wal" / DATABASE)
        for f in top.rglob("*")
        if f.is_file()
    )
    return {
        "figure": "database_disk",
        "points": points,
        "series": series,
        "bytes_on_disk": size,
        "bytes_per_point": round(size / max(1, points), 1),
    }


def plot(
    steps: list[Step],
    saturated: Step,
    idle_mib: float,
    broker: float,
    database: float,
    out: Path,
) -> list[Path]:
    """Rate and latency against load, memory per device; PNG files in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    x = [s.modules for s in steps]
    paths = [out / "pipeline_rate.png", out / "pipeline_latency.png", out / "pipeline_memory.png"]

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(x, [s.offered_s for s in steps], "k:", marker="o", label="offered (modules / interval)")
    ax.plot(x, [s.acked_s for s in steps], marker="s", label="simulator: PUBACKed by broker")
    ax.plot(x, [s.written_s for s in steps], marker="^", label="end to end: written to InfluxDB")
    ax.axhline(
        broker, color="tab:red", ls="--", label=f"broker baseline (bare consumer) {broker:,.0f}/s"
    )
    ax.axhline(
        database,
        color="tab:purple",
        ls="--",
        label=f"database baseline (5000-line POSTs) {database:,.0f}/s",
    )
    ax.plot(
        [saturated.modules],
        [saturated.written_s],
        "r*",
        markersize=14,
        label=f"end to end, saturated ({saturated.offered_s:,.0f}/s offered): "
        f"{saturated.written_s:,.0f}/s",
    )
    ax.set(xlabel="simulated modules", ylabel="readings/s", title="Pipeline rate against load")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(x, [percentile(s.latencies, 0.5) * 1000 for s in steps], marker="o", label="p50")
    ax.plot(x, [percentile(s.latencies, 0.99) * 1000 for s in steps], marker="^", label="p99")
    ax.axhline(1000, color="tab:red", ls="--", label="goal: p99 < 1 s")
    ax.set(
        xlabel="simulated modules",
        ylabel="ms, device timestamp -> readable in InfluxDB",
        title="End-to-end latency against load",
    )
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(
        x,
        [s.broker_kib_per_device(idle_mib) for s in steps],
        marker="o",
        label="broker (beam.smp RSS delta / modules)",
    )
    ax.plot(
        x,
        [s.sim_rss_mib * 1024 / s.modules for s in steps],
        marker="s",
        label="simulator (RSS / modules)",
    )
    ax.set(xlabel="simulated modules", ylabel="KiB per connected module", title="Memory per device")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    return paths


def parse() -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small steps: a smoke run")
    parser.add_argument(
        "--img-dir",
        type=Path,
        help="where the PNG plots go (default: docs/img, or a temporary folder with --quick)",
    )
    return parser.parse_args()


def prepare_broker(rabbit: RabbitNode, modules: int) -> None:
    """Our vhost with the platform's topology, and a broker user per simulated module."""
    topology_vhost(rabbit, VHOST)
    started = time.monotonic()
    identities = fleet(CLIENT, PREFIX, modules)
    provision(rabbit.endpoints.management_url, ("guest", "guest"), VHOST, identities, SECRET)
    emit(figure="provision", modules=modules, seconds=round(time.monotonic() - started, 1))


def main() -> None:
    """Start the services, step the load, run the baselines, plot, ratios last."""
    args = parse()
    # SIGTERM unwinds like Ctrl-C, so the services below are stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = QUICK if args.quick else FULL
    base = Path(tempfile.mkdtemp(prefix="iotgw-bench-pipeline-"))
    base.chmod(0o755)
    img_dir = args.img_dir or (base / "img" if args.quick else ROOT / "docs" / "img")
    rabbit = rabbit_node(base, "iotgw-bench-pipeline")
    influx: InfluxNode | None = None
    pipeline: Pipeline | None = None
    try:
        rabbit.start()
        influx = start_influx(base)
        prepare_broker(rabbit, max(plan.steps))

        pipeline = Pipeline(rabbit, influx, base, plan)
        pipeline.start_ingest()
        idle_mib = pipeline.broker_rss()
        emit(figure="broker_idle", beam_rss_mib=round(idle_mib))
        steps: list[Step] = []
        for modules in plan.steps:
            steps.append(pipeline.step(modules, 1 / plan.interval_s))
            emit(**steps[-1].figures(idle_mib))
        # The pipeline's maximum: fewer modules, each reporting fast, offering more than it takes.
        saturated = pipeline.step(*plan.saturate, saturating=True)
        emit(**saturated.figures(idle_mib))
        pipeline.close()
        disk = database_disk(influx)
        emit(**disk)

        # Baselines with nothing else running: the same code as bench_ingest.py.
        bench = Bench(rabbit, influx)
        broker, broker_cpu = bench.bare_consumer(plan.baseline_messages)
        emit(
            figure="baseline_broker_bare_consumer",
            msg_s=round(broker),
            cpu_us_per_msg=round(broker_cpu, 1),
        )
        database = bench.raw_writes(plan.baseline_messages)
        emit(figure="baseline_database_raw_5000_line_posts", points_s=round(database))

        paths = plot(steps, saturated, idle_mib, broker, database, img_dir)
        emit(figure="plots", files=[str(p) for p in paths])
        best = max([*steps, saturated], key=lambda s: s.written_s)
        top = steps[-1]
        limit = min(broker, database)
        emit(
            summary="bench_pipeline",
            interval_s=plan.interval_s,
            modules=[s.modules for s in steps],
            end_to_end_msg_s=[round(s.written_s) for s in steps],
            offered_msg_s=[round(s.offered_s) for s in steps],
            p50_ms=[round(percentile(s.latencies, 0.5) * 1000, 1) for s in steps],
            p99_ms=[round(percentile(s.latencies, 0.99) * 1000, 1) for s in steps],
            broker_limit_msg_s=round(broker),
            database_limit_points_s=round(database),
            ratio_end_to_end_vs_broker=round(best.written_s / broker, 3),
            ratio_end_to_end_vs_database=round(best.written_s / database, 3),
            ratio_end_to_end_vs_min_baseline=round(best.written_s / limit, 3),
            ratio_written_vs_offered_at_top=round(top.written_s / top.offered_s, 3),
            connected_at_top=top.connected,
            broker_kib_per_device=round(top.broker_kib_per_device(idle_mib), 1),
            broker_kib_per_device_slope=round(
                slope([s.connected for s in steps], [s.broker_rss_mib * 1024 for s in steps]), 1
            ),
            sim_kib_per_device=round(top.sim_rss_mib * 1024 / top.modules, 1),
            saturated_offered_msg_s=round(saturated.offered_s),
            saturated_sim_acked_msg_s=round(saturated.acked_s),
            saturated_end_to_end_msg_s=round(saturated.written_s),
            saturated_queue_backlog_at_end=saturated.backlog_end,
            cpu_us_per_msg_saturated={
                k: round(v, 1) for k, v in saturated.cpu_us_per_msg().items()
            },
            cpu_us_per_msg_bare_consumer=round(broker_cpu, 1),
            influx_series=disk["series"],
            influx_bytes_per_point=disk["bytes_per_point"],
        )
    finally:
        if pipeline is not None:
            pipeline.close()
        if influx is not None:
            influx.stop()
        rabbit.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
