"""Simulated sensors that look real on a dashboard (they implement the agent's `Sensor`).

Each module gets its own random but reproducible character (seeded by its name): a base
temperature and daily amplitude, a longitude that shifts its day, a battery capacity and a
radio position. Values are functions of the reading's time, so any sampling rate draws the same
curves; `time_scale` > 1 plays days in minutes for demos.
"""

from __future__ import annotations

import math
import random

from iotgw.contracts.payloads import MetricValue

DAY_S = 86_400.0


class SimClock:
    """Model time: real time, optionally sped up from a start instant."""

    def __init__(self, start: float, time_scale: float = 1.0) -> None:
        self.start = start
        self.time_scale = time_scale

    def model_time(self, now: float) -> float:
        """`now` on the model's (possibly accelerated) clock."""
        return self.start + (now - self.start) * self.time_scale


def _day_fraction(t: float, longitude_deg: float) -> float:
    """Local solar time of day in [0, 1)."""
    return ((t / DAY_S) + longitude_deg / 360.0) % 1.0


class Temperature:
    """Daily cycle (coolest near 05:00, warmest near 15:00), slow drift and sensor noise."""

    name: str = "temperature"
    metrics: tuple[str, ...] = ("temperature",)

    def __init__(self, rng: random.Random, clock: SimClock, longitude_deg: float) -> None:
        self._rng = rng
        self._clock = clock
        self._longitude = longitude_deg
        self.base = 18.0 + rng.uniform(-4, 6)
        self.amplitude = rng.uniform(3, 7)
        self._drift = 0.0

    def value(self, now: float) -> float:
        """The noiseless daily curve plus drift (humidity follows it)."""
        t = self._clock.model_time(now)
        phase = 2 * math.pi * (_day_fraction(t, self._longitude) - 10 / 24)
        return self.base + self.amplitude * math.sin(phase) + self._drift

    def read(self, now: float) -> dict[str, MetricValue]:
        """One reading, rounded like a real sensor's."""
        self._drift = 0.98 * self._drift + self._rng.gauss(0, 0.05)
        return {"temperature": round(self.value(now) + self._rng.gauss(0, 0.15), 2)}


class Humidity:
    """Relative humidity, falling as the same module's temperature rises."""

    name: str = "humidity"
    metrics: tuple[str, ...] = ("humidity",)

    def __init__(self, rng: random.Random, temperature: Temperature) -> None:
        self._rng = rng
        self._temperature = temperature
        self.base = rng.uniform(40, 70)

    def read(self, now: float) -> dict[str, MetricValue]:
        """One reading in percent, clamped to [5, 100]."""
        delta = self._temperature.value(now) - self._temperature.base
        value = self.base - 3.0 * delta + self._rng.gauss(0, 1.0)
        return {"humidity": round(min(100.0, max(5.0, value)), 1)}


class Battery:
    """State of charge: drains all the time, recharges from a solar panel in daylight."""

    name: str = "battery"
    metrics: tuple[str, ...] = ("battery_pct", "battery_v")

    def __init__(self, rng: random.Random, clock: SimClock, longitude_deg: float) -> None:
        self._clock = clock
        self._longitude = longitude_deg
        self.charge = rng.uniform(40, 100)
        self.drain_per_h = rng.uniform(0.5, 1.5)
        self.solar_per_h = rng.uniform(1.0, 3.0)
        self._last: float | None = None

    def read(self, now: float) -> dict[str, MetricValue]:
        """Integrate charge since the last reading; volts follow a Li-ion curve roughly."""
        t = self._clock.model_time(now)
        if self._last is not None:
            hours = max(0.0, t - self._last) / 3600
            hour = _day_fraction(t, self._longitude) * 24
            sun = max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0
            self.charge += hours * (sun * self.solar_per_h - self.drain_per_h)
            self.charge = min(100.0, max(0.0, self.charge))
        self._last = t
        volts = 3.3 + 0.9 * self.charge / 100
        return {"battery_pct": round(self.charge, 2), "battery_v": round(volts, 3)}


class Rssi:
    """Received signal strength: a mean-reverting random walk around the module's spot."""

    name: str = "rssi"
    metrics: tuple[str, ...] = ("rssi",)

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.base = rng.uniform(-95, -55)
        self._value = self.base

    def read(self, now: float) -> dict[str, MetricValue]:
        """dBm, integer like a modem reports it, within [-120, -30]."""
        self._value += 0.2 * (self.base - self._value) + self._rng.gauss(0, 1.5)
        self._value = min(-30.0, max(-120.0, self._value))
        return {"rssi": round(self._value)}


def module_sensors(name: str, clock: SimClock) -> tuple[Temperature, Humidity, Battery, Rssi]:
    """The four sensors of one simulated module, with a character seeded by `name`."""
    rng = random.Random(name)  # noqa: S311 - simulation, not cryptography
    longitude = rng.uniform(-30, 40)
    temperature = Temperature(rng, clock, longitude)
    return temperature, Humidity(rng, temperature), Battery(rng, clock, longitude), Rssi(rng)
