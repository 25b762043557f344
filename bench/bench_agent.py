"""Edge agent resident memory (RSS) while it runs, against a bare paho publisher's.

Starts its own RabbitMQ node (iotgw.localstack, free ports, a temporary folder), then runs, one
after another, each as its own process for RUN_SECONDS publishing 10 readings/s:
- baseline: a raw paho client (loop_start, QoS 1) publishing a fixed reading - the least a
  Python MQTT publisher costs;
- `iotgw-agent` with its SQLite buffer, sensors, config handling and presence.
RSS is sampled from /proc every 0.5 s; the figures are the peak and the final value.
Prints one JSON object per figure and the ratio summary as the LAST line.
Run: `.venv/bin/python bench/bench_agent.py`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import emit, rabbit_node

RUN_SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
AGENT = Path(sys.executable).parent / "iotgw-agent"

RAW_PUBLISHER = """
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw-agent")
c.username_pw_set(user, password)
c.connect(host, port)
c.loop_start()
seq = 0
while True:
    body = '{"ts":%f,"seq":%d,"metrics":{"count":%d}}' % (time.time(), seq, seq)
    c.publish("devices/bench/raw/telemetry", body.encode(), qos=1)
    seq += 1
    time.sleep(0.1)
"""


def rss_kb(pid: int) -> int:
    """Resident memory of `pid`, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def measure(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run `argv` for RUN_SECONDS, sampling its RSS; returns peak and final MiB."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[int] = []
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            samples.append(rss_kb(proc.pid))
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(20)
    figures = {
        "figure": name,
        "rss_peak_mib": round(max(samples) / 1024, 1),
        "rss_final_mib": round(samples[-1] / 1024, 1),
    }
    emit(**figures)
    return figures


def main() -> None:
    """Baseline, then the agent; the ratio summary is the last line."""
    base = Path(tempfile.mkdtemp(prefix="iotgw-bench-agent-"))
    base.chmod(0o755)
    node = rabbit_node(base, "iotgw-bench-agent")
    try:
        node.start()
        password = secrets.token_urlsafe(16)
        node.add_user("bench.agent-1", password)
        node.set_permissions("bench.agent-1", "/", ".*", ".*", ".*")
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
        host, port = node.endpoints.host, str(node.endpoints.mqtt_port)
        raw = measure(
            "baseline_raw_paho_publisher",
            [sys.executable, "-c", RAW_PUBLISHER, host, port, "bench.agent-1", password],
            env,
        )
        agent_env = {
            **env,
            "IOTGW_CLIENT": "bench",
            "IOTGW_DEVICE": "agent-1",
            "IOTGW_MQTT_HOST": host,
            "IOTGW_MQTT_PORT": port,
            "IOTGW_MQTT_PASSWORD": password,
            "IOTGW_STATE_DIR": str(base / "agent"),
            "IOTGW_SENSORS": '["system", "counter"]',
            "IOTGW_SAMPLING_INTERVAL_S": "0.1",
        }
        agent = measure("iotgw_agent", [str(AGENT)], agent_env)
        emit(
            summary="bench_agent",
            agent_rss_mib=agent["rss_peak_mib"],
            raw_paho_rss_mib=raw["rss_peak_mib"],
            ratio_agent_vs_raw_paho_rss=round(agent["rss_peak_mib"] / raw["rss_peak_mib"], 2),
        )
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
