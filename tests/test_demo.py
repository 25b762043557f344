"""The README's demo command, run for real: stack, platform, a purchase, telemetry, Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from iotgw.localstack.processes import free_ports, tcp_open

STACK_PORTS = ["AMQP", "MQTT", "MANAGEMENT", "DIST", "EPMD", "INFLUX", "INFLUX_RPC"]


@pytest.fixture
def demo_env() -> Iterator[dict[str, str]]:
    # Not pytest's tmp_path: the broker runs as user rabbitmq and must reach its folder.
    root = Path(tempfile.mkdtemp(prefix="iotgw-demo-"))
    root.chmod(0o755)
    ports = free_ports(len(STACK_PORTS) + 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    env.update(
        IOTGW_STACK_STATE_DIR=str(root / "stack"),
        IOTGW_STACK_INSTALL_PACKAGES="false",
        **{f"IOTGW_STACK_{n}_PORT": str(p) for n, p in zip(STACK_PORTS, ports, strict=False)},
        DEMO_API_PORT=str(ports[-1]),
    )
    yield env
    subprocess.run(
        [sys.executable, "-m", "iotgw.localstack.cli", "stack", "down"],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    shutil.rmtree(root, ignore_errors=True)


def _points(influx_port: str) -> int:
    try:
        body = httpx.get(
            f"http://127.0.0.1:{influx_port}/query",
            params={"db": "iotgw", "q": "SELECT count(seq) FROM telemetry"},
            timeout=5,
        ).json()
    except httpx.HTTPError:
        return 0
    series = body["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def test_demo_provisions_a_purchase_streams_telemetry_and_stops_on_ctrl_c(
    demo_env: dict[str, str],
) -> None:
    api_port = demo_env["DEMO_API_PORT"]
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iotgw.localstack.cli",
            "demo",
            "--modules",
            "5",
            "--rate",
            "2",
            "--api-port",
            api_port,
        ],
        env=demo_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    lines = []
    for line in demo.stdout:
        lines.append(line)
        if "5/5 live view" in line:
            break
    output = "".join(lines)
    assert "Ready" in output, output[-3000:]

    deadline = time.monotonic() + 60
    while _points(demo_env["IOTGW_STACK_INFLUX_PORT"]) == 0:
        assert demo.poll() is None, output
        assert time.monotonic() < deadline, "no telemetry reached InfluxDB"
        time.sleep(0.5)

    demo.send_signal(signal.SIGINT)
    rest, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, rest[-3000:]
    assert '{"online"' in rest, rest[-3000:]
    figures = json.loads(rest[rest.index('{"online"') :].splitlines()[0])
    assert figures["points"] > 0
    assert figures["modules"] == 5
    assert figures["dead_letters"] == 0
    assert "stopped everything the demo started" in rest
    # Everything it started is gone: the api and the stack it brought up.
    assert not tcp_open(int(api_port))
    assert not tcp_open(int(demo_env["IOTGW_STACK_AMQP_PORT"]))
    assert not tcp_open(int(demo_env["IOTGW_STACK_INFLUX_PORT"]))
