"""The sensor models stay in plausible ranges and the agent can load them as plugins."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

from iotgw.device_sim.identities import fleet, module_password
from iotgw.device_sim.models import SimClock, module_sensors
from iotgw.edge_agent.sensors import load_sensors

HOUR = 3600.0


def test_a_simulated_day_looks_real() -> None:
    start = 1_700_000_000.0
    clock = SimClock(start)
    temperature, humidity, battery, rssi = module_sensors("acme/m-1", clock)
    temps, hums, charges, rssis = [], [], [], []
    for i in range(24 * 6):
        now = start + i * 600
        temps.append(float(temperature.read(now)["temperature"]))
        hums.append(float(humidity.read(now)["humidity"]))
        charges.append(float(battery.read(now)["battery_pct"]))
        rssis.append(float(rssi.read(now)["rssi"]))
    assert max(temps) - min(temps) > 4  # a daily cycle, not flat noise
    assert all(-10 < t < 45 for t in temps)
    assert all(5 <= h <= 100 for h in hums)
    assert all(0 <= c <= 100 for c in charges)
    assert any(b > a for a, b in itertools.pairwise(charges))  # recharges by day
    assert any(b < a for a, b in itertools.pairwise(charges))  # drains by night
    assert all(-120 <= r <= -30 for r in rssis)


def test_modules_differ_and_time_scale_speeds_the_day() -> None:
    start = 1_700_000_000.0
    a = module_sensors("acme/m-1", SimClock(start))[0]
    b = module_sensors("acme/m-2", SimClock(start))[0]
    assert a.base != b.base
    fast = module_sensors("acme/m-1", SimClock(start, time_scale=24.0))[0]
    # One real hour at 24x is a whole model day: back to the same phase.
    assert abs(fast.value(start + HOUR) - fast.value(start)) < 0.5


def test_identities_and_passwords_are_stable() -> None:
    ids = fleet("acme", "m", 3)
    assert [i.device for i in ids] == ["m-00001", "m-00002", "m-00003"]
    assert module_password("s", ids[0]) == module_password("s", ids[0])
    assert module_password("s", ids[0]) != module_password("s", ids[1])


def test_agent_loads_simulated_sensors_as_plugins() -> None:
    sensors = load_sensors(["system", "temperature", "battery"])
    assert [s.name for s in sensors] == ["system", "temperature", "battery"]
    assert "temperature" in sensors[1].read(1_700_000_000.0)


def test_missing_fleet_secret_fails_naming_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    result = subprocess.run(
        [sys.executable, "-m", "iotgw.device_sim", "--json", "--count", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "IOTGW_SIM_SECRET" in result.stderr
    assert "IOTGW_SIM_COUNT" in result.stderr
