"""A bad setting stops the agent at start with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iotgw.edge_agent.settings import load_agent_settings


def run_agent(tmp_path: Path, file_text: str, **env: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "agent.toml"
    config.write_text(file_text)
    base = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    return subprocess.run(
        [sys.executable, "-m", "iotgw.edge_agent", "--config", str(config)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


GOOD = 'client = "acme"\ndevice = "dev-1"\nmqtt_password = "x"\nstate_dir = "{}"\n'


def test_bad_environment_value_named(tmp_path: Path) -> None:
    result = run_agent(tmp_path, GOOD.format(tmp_path), IOTGW_MQTT_PORT="not-a-port")
    assert result.returncode != 0
    assert "IOTGW_MQTT_PORT" in result.stderr


def test_bad_file_value_named(tmp_path: Path) -> None:
    result = run_agent(tmp_path, GOOD.format(tmp_path) + "buffer_max_readings = 1\n")
    assert result.returncode != 0
    assert "IOTGW_BUFFER_MAX_READINGS" in result.stderr


def test_missing_secret_and_bad_device_named(tmp_path: Path) -> None:
    result = run_agent(tmp_path, f'client = "acme"\ndevice = "Dev_1"\nstate_dir = "{tmp_path}"\n')
    assert result.returncode != 0
    assert "IOTGW_MQTT_PASSWORD" in result.stderr


def test_unknown_sensor_named(tmp_path: Path) -> None:
    result = run_agent(tmp_path, GOOD.format(tmp_path), IOTGW_SENSORS='["camera"]')
    assert result.returncode != 0
    assert "IOTGW_SENSORS" in result.stderr
    assert "camera" in result.stderr


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(GOOD.format(tmp_path) + "sampling_interval_s = 5\n")
    monkeypatch.setenv("IOTGW_SAMPLING_INTERVAL_S", "7")
    settings = load_agent_settings(config)
    assert settings.sampling_interval_s == 7
    assert settings.broker_username == "acme.dev-1"
