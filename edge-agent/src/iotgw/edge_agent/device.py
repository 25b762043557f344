"""The device core: sampling, thresholds, presence and config, with no transport in it.

`DeviceCore.tick(now)` decides whether a reading is due (the sampling interval has passed, or a
metric moved by more than its threshold since it was last reported), persists it in the buffer
and returns it with the delay until the next tick. The MQTT session (or anything else) only
moves bytes. Both the agent and every simulated module are a `DeviceCore`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from iotgw.contracts.credentials import device_client_id, device_username
from iotgw.contracts.payloads import DesiredConfig, MetricValue, ReportedState, Status, Telemetry
from iotgw.contracts.topics import DeviceKind, DeviceTopic
from iotgw.edge_agent.buffer import DeviceBuffer
from iotgw.edge_agent.config import ConfigManager, ConfigRejectedError
from iotgw.edge_agent.sensors import Sensor


@dataclass(frozen=True)
class DeviceIdentity:
    """Who the device is on the broker, and its four topics."""

    client: str
    device: str

    @property
    def username(self) -> str:
        """Broker username `<client>.<device>`."""
        return device_username(self.client, self.device)

    @property
    def client_id(self) -> str:
        """MQTT client id `<client>/<device>`."""
        return device_client_id(self.client, self.device)

    def topic(self, kind: DeviceKind) -> str:
        """`devices/<client>/<device>/<kind>`."""
        return DeviceTopic(self.client, self.device, kind).mqtt


@dataclass
class Sampling:
    """What the config handler controls."""

    interval_s: float
    enabled: frozenset[str] | None = None
    thresholds: dict[str, float] | None = None
    probe_interval_s: float = 1.0


class DeviceCore:
    """One module's behaviour: readings into the buffer, presence payloads, config apply."""

    def __init__(
        self,
        identity: DeviceIdentity,
        buffer: DeviceBuffer,
        sensors: Sequence[Sensor],
        sampling_interval_s: float,
        probe_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.buffer = buffer
        self.sensors = list(sensors)
        self.sampling = Sampling(sampling_interval_s, probe_interval_s=probe_interval_s)
        self.clock = clock
        # Added to reading timestamps only: the simulator's clock-skew fault.
        self.clock_offset_s = 0.0
        self._last_report_at = 0.0
        self._last_reported: dict[str, MetricValue] = {}
        self.config = ConfigManager(buffer, self.apply_config, clock)
        self.config.restore()
        self.epoch = 0

    @property
    def metric_names(self) -> set[str]:
        """Every metric the device's sensors can produce."""
        return {m for s in self.sensors for m in s.metrics}

    def apply_config(self, config: DesiredConfig) -> None:
        """The config handler: sampling interval, enabled sensors, reporting thresholds."""
        names = {s.name for s in self.sensors}
        if config.enabled_sensors is not None:
            unknown = sorted(set(config.enabled_sensors) - names)
            if unknown:
                raise ConfigRejectedError(
                    f"unknown sensor(s) {', '.join(unknown)}; this device has "
                    f"{', '.join(sorted(names))}"
                )
        unknown_metrics = sorted(set(config.thresholds) - self.metric_names)
        if unknown_metrics:
            raise ConfigRejectedError(
                f"threshold for unknown metric(s) {', '.join(unknown_metrics)}"
            )
        negative = sorted(m for m, t in config.thresholds.items() if t <= 0)
        if negative:
            raise ConfigRejectedError(f"threshold must be > 0 for {', '.join(negative)}")
        self.sampling.interval_s = config.sampling_interval_s
        self.sampling.enabled = (
            frozenset(config.enabled_sensors) if config.enabled_sensors is not None else None
        )
        self.sampling.thresholds = dict(config.thresholds) or None

    def receive_config(self, raw: bytes) -> ReportedState:
        """A message on the config topic: apply or refuse it; returns the state to report."""
        return self.config.receive(raw)

    def _read(self, now: float) -> dict[str, MetricValue]:
        values: dict[str, MetricValue] = {}
        enabled = self.sampling.enabled
        for sensor in self.sensors:
            if enabled is None or sensor.name in enabled:
                values.update(sensor.read(now))
        return values

    def _moved(self, values: dict[str, MetricValue]) -> bool:
        for metric, threshold in (self.sampling.thresholds or {}).items():
            new, old = values.get(metric), self._last_reported.get(metric)
            if (
                isinstance(new, int | float)
                and isinstance(old, int | float)
                and abs(float(new) - float(old)) > threshold
            ):
                return True
        return False

    def tick(self, now: float | None = None) -> tuple[Telemetry | None, float]:
        """Sample if due; returns (the persisted reading or None, seconds until the next tick)."""
        now = self.clock() if now is None else now
        interval = self.sampling.interval_s
        due = now - self._last_report_at >= interval * 0.999
        probing = bool(self.sampling.thresholds) and self.sampling.probe_interval_s < interval
        if not due and not probing:
            return None, self._last_report_at + interval - now
        values = self._read(now)
        if not values or not (due or self._moved(values)):
            return None, min(self.sampling.probe_interval_s, interval)
        reading = self.buffer.append(now + self.clock_offset_s, values)
        self._last_report_at = now
        self._last_reported = values
        return reading, min(self.sampling.probe_interval_s, interval) if probing else interval

    def next_connection(self) -> bytes:
        """A new connection epoch (persisted); returns its Last Will (`offline`)."""
        self.epoch = self.buffer.next_epoch()
        return self.status("offline")

    def status(self, state: Literal["online", "offline"]) -> bytes:
        """The retained presence payload for the current epoch."""
        return Status(state=state, epoch=self.epoch, ts=self.clock()).to_json()
