"""Config apply through the device core: interval, enabled sensors, thresholds; refusals."""

from __future__ import annotations

from pathlib import Path

from iotgw.contracts.payloads import DesiredConfig, MetricValue
from iotgw.edge_agent.buffer import Store
from iotgw.edge_agent.device import DeviceCore, DeviceIdentity
from iotgw.edge_agent.sensors import CounterSensor


class Level:
    """A sensor whose value the test sets."""

    name: str = "level"
    metrics: tuple[str, ...] = ("level",)

    def __init__(self) -> None:
        self.value = 0.0

    def read(self, now: float) -> dict[str, MetricValue]:
        return {"level": self.value}


def make(tmp_path: Path, level: Level) -> DeviceCore:
    buf = Store(tmp_path / "b.db").device("acme/dev-1")
    return DeviceCore(DeviceIdentity("acme", "dev-1"), buf, [CounterSensor(), level], 10.0, 1.0)


def test_config_applied_persisted_and_reported(tmp_path: Path) -> None:
    core = make(tmp_path, Level())
    cfg = DesiredConfig(version=2, sampling_interval_s=5, enabled_sensors=["level"])
    state = core.receive_config(cfg.to_json())
    assert (state.status, state.applied_version) == ("applied", 2)
    assert core.sampling.interval_s == 5
    reading, _ = core.tick(1000.0)
    assert reading is not None
    assert set(reading.metrics) == {"level"}  # counter disabled
    # A restarted device resumes with the persisted config.
    again = make(tmp_path, Level())
    assert again.config.applied_version == 2
    assert again.sampling.interval_s == 5


def test_invalid_configs_refused_with_reason_last_good_kept(tmp_path: Path) -> None:
    core = make(tmp_path, Level())
    core.receive_config(DesiredConfig(version=2, sampling_interval_s=5).to_json())
    cases = {
        DesiredConfig(version=3, enabled_sensors=["camera"]).to_json(): "camera",
        DesiredConfig(version=3, thresholds={"nope": 1.0}).to_json(): "nope",
        b'{"version": 3, "sampling_interval_s": -1}': "sampling_interval_s",
        b"not json": "invalid config",
        DesiredConfig(version=1).to_json(): "stale",
    }
    for raw, reason in cases.items():
        state = core.receive_config(raw)
        assert state.status == "rejected", raw
        assert state.applied_version == 2
        assert reason in (state.reason or ""), (raw, state.reason)
    assert core.sampling.interval_s == 5


def test_threshold_reports_early(tmp_path: Path) -> None:
    level = Level()
    core = make(tmp_path, level)
    core.receive_config(
        DesiredConfig(version=1, sampling_interval_s=60, thresholds={"level": 2.0}).to_json()
    )
    first, delay = core.tick(1000.0)
    assert first is not None
    assert delay == 1.0  # probing for threshold crossings
    level.value = 1.5
    assert core.tick(1001.0)[0] is None  # moved less than the threshold
    level.value = 2.5
    early, _ = core.tick(1002.0)
    assert early is not None
    assert early.metrics["level"] == 2.5
