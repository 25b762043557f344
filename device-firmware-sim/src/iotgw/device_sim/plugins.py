"""The simulated sensors as `iotgw.sensors` plugins, so the real agent can run with them
(`IOTGW_SENSORS='["temperature","battery"]'`), e.g. on a bench module without hardware."""

from __future__ import annotations

import random
import socket
import time

from iotgw.device_sim.models import Battery, Humidity, Rssi, SimClock, Temperature


def _rng() -> random.Random:
    return random.Random(socket.gethostname())  # noqa: S311 - simulation


def temperature() -> Temperature:
    """Temperature with a daily cycle."""
    return Temperature(_rng(), SimClock(time.time()), 0.0)


def humidity() -> Humidity:
    """Humidity following a temperature curve of its own."""
    rng = _rng()
    return Humidity(rng, Temperature(rng, SimClock(time.time()), 0.0))


def battery() -> Battery:
    """Battery that drains and recharges in daylight."""
    return Battery(_rng(), SimClock(time.time()), 0.0)


def rssi() -> Rssi:
    """Signal strength."""
    return Rssi(_rng())
