"""`iotgw stack up|down|status` runs its own services and leaves the machine's own ones alone."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from iotgw.localstack.processes import free_ports, tcp_open

MACHINE_PORTS = (5672, 1883, 5432)


def _iotgw(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iotgw.localstack.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture
def stack_env() -> Iterator[dict[str, str]]:
    # Not pytest's tmp_path: the broker runs as user rabbitmq and must reach its folder.
    state = Path(tempfile.mkdtemp(prefix="iotgw-stack-"))
    state.chmod(0o755)
    ports = free_ports(7)
    names = ["AMQP", "MQTT", "MANAGEMENT", "DIST", "EPMD", "INFLUX", "INFLUX_RPC"]
    env = {
        **os.environ,
        "IOTGW_STACK_STATE_DIR": str(state),
        "IOTGW_STACK_INSTALL_PACKAGES": "false",
        **{f"IOTGW_STACK_{name}_PORT": str(port) for name, port in zip(names, ports, strict=True)},
    }
    yield env
    _iotgw(env, "stack", "down")
    shutil.rmtree(state, ignore_errors=True)


def test_up_twice_status_down_and_machine_services_untouched(stack_env: dict[str, str]) -> None:
    open_before = {port for port in MACHINE_PORTS if tcp_open(port)}

    first = _iotgw(stack_env, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert "started: rabbitmq, influxdb" in first.stdout

    second = _iotgw(stack_env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stdout

    status = json.loads(_iotgw(stack_env, "stack", "status").stdout)
    assert status["rabbitmq"]["running"] is True
    assert status["influxdb"]["running"] is True
    assert status["rabbitmq"]["amqp_port"] == int(stack_env["IOTGW_STACK_AMQP_PORT"])
    assert tcp_open(int(stack_env["IOTGW_STACK_MQTT_PORT"]))
    assert {port for port in MACHINE_PORTS if tcp_open(port)} == open_before

    down = _iotgw(stack_env, "stack", "down")
    assert down.returncode == 0, down.stderr
    assert not tcp_open(int(stack_env["IOTGW_STACK_AMQP_PORT"]))
    assert not tcp_open(int(stack_env["IOTGW_STACK_INFLUX_PORT"]))
    assert {port for port in MACHINE_PORTS if tcp_open(port)} == open_before


def test_a_taken_port_is_a_clear_error_naming_it(stack_env: dict[str, str]) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", int(stack_env["IOTGW_STACK_MQTT_PORT"])))
    squatter.listen()
    try:
        result = _iotgw(stack_env, "stack", "up")
    finally:
        squatter.close()
    assert result.returncode == 1
    assert f"{stack_env['IOTGW_STACK_MQTT_PORT']} (rabbitmq mqtt)" in result.stderr
    assert not tcp_open(int(stack_env["IOTGW_STACK_AMQP_PORT"]))


def test_a_wrong_setting_fails_naming_the_variable(stack_env: dict[str, str]) -> None:
    result = _iotgw({**stack_env, "IOTGW_STACK_AMQP_PORT": "many"}, "stack", "status")
    assert result.returncode != 0
    assert "IOTGW_STACK_AMQP_PORT" in result.stderr
