"""The sensor plugin interface, the agent's built-in sensors and plugin discovery.

A sensor is any object with a `name`, the `metrics` it produces and `read(now)`. Plugins are
found through the `iotgw.sensors` entry-point group (a factory `() -> Sensor`), so a module's
firmware package adds hardware sensors without touching the agent; the simulator registers its
simulated ones there too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

from iotgw.contracts.payloads import MetricValue

ENTRY_POINT_GROUP = "iotgw.sensors"


@runtime_checkable
class Sensor(Protocol):
    """One source of metrics."""

    name: str
    metrics: tuple[str, ...]

    def read(self, now: float) -> dict[str, MetricValue]:
        """Current values, keyed by metric name (a subset of `metrics`)."""
        ...


class SystemSensor:
    """The module's own health: load average, available memory, uptime, CPU temperature."""

    name: str = "system"
    metrics: tuple[str, ...] = ("load1", "mem_available_mb", "uptime_s", "cpu_temp_c")

    def __init__(self, proc: Path = Path("/proc"), sys: Path = Path("/sys")) -> None:
        self._proc = proc
        self._thermal = sys / "class" / "thermal" / "thermal_zone0" / "temp"

    def read(self, now: float) -> dict[str, MetricValue]:
        """Read /proc (and the first thermal zone when the board has one)."""
        values: dict[str, MetricValue] = {"load1": os.getloadavg()[0]}
        for line in (self._proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                values["mem_available_mb"] = int(line.split()[1]) / 1024
                break
        values["uptime_s"] = float((self._proc / "uptime").read_text().split()[0])
        # Boards without a thermal zone simply do not report it.
        with contextlib.suppress(OSError, ValueError):
            values["cpu_temp_c"] = int(self._thermal.read_text()) / 1000
        return values


class CounterSensor:
    """A monotonically increasing counter: handy to check a pipeline end to end."""

    name: str = "counter"
    metrics: tuple[str, ...] = ("count",)

    def __init__(self) -> None:
        self._count = 0

    def read(self, now: float) -> dict[str, MetricValue]:
        """The next count."""
        self._count += 1
        return {"count": self._count}


BUILTIN: dict[str, Callable[[], Sensor]] = {"system": SystemSensor, "counter": CounterSensor}


class UnknownSensorError(ValueError):
    """A sensor name that neither the agent nor an installed plugin provides."""


def load_sensors(names: Sequence[str]) -> list[Sensor]:
    """Instantiate the named sensors: built-ins first, then `iotgw.sensors` entry points."""
    plugins = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    sensors: list[Sensor] = []
    for name in names:
        if name in BUILTIN:
            sensors.append(BUILTIN[name]())
        elif name in plugins:
            sensor = plugins[name].load()()
            if not isinstance(sensor, Sensor):
                raise UnknownSensorError(f"plugin {name!r} does not return a Sensor")
            sensors.append(sensor)
        else:
            known = sorted({*BUILTIN, *plugins})
            raise UnknownSensorError(f"unknown sensor {name!r}; known: {', '.join(known)}")
    return sensors
