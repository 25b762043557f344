"""Faults on demand, applied to a running fleet from its loop.

- disconnect storm: every `storm_every_s`, a random `storm_fraction` of connected modules lose
  their TCP connection without DISCONNECT (the broker publishes their `offline` Wills);
- outage: from `outage_at_s` for `outage_for_s`, every module's network is down (readings pile
  up in the buffer; reconnects back off with jitter) - the same path a broker outage takes;
- malformed payloads: with probability `malformed_rate` per reading, a module also publishes
  garbage on its telemetry topic (the pipeline must dead-letter it);
- clock skew: each module's timestamps are off by up to +/- `clock_skew_s`;
- duplicate sends: with probability `duplicate_rate`, a reading is published a second time;
- slow consumers: `slow_fraction` of modules read their socket only every `slow_pause_s`, so
  their PUBACKs and configs arrive late and their in-flight window fills.
Extra publishes (duplicates, garbage) bypass the buffer and are counted apart (`extra_sent`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from iotgw.contracts.payloads import Telemetry
from iotgw.contracts.topics import DeviceKind
from iotgw.edge_agent.netloop import NetLoop
from iotgw.edge_agent.session import MqttSession

MALFORMED = (b"{not json", b'{"ts": "yesterday", "seq": -1, "metrics": {}}', b"\xff\xfe", b"[]")


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject; all off by default."""

    storm_every_s: float = 0.0
    storm_fraction: float = 0.0
    outage_at_s: float = 0.0
    outage_for_s: float = 0.0
    malformed_rate: float = 0.0
    duplicate_rate: float = 0.0
    clock_skew_s: float = 0.0
    slow_fraction: float = 0.0
    slow_pause_s: float = 1.0


class FaultInjector:
    """Schedules the plan's faults on the fleet's loop."""

    def __init__(self, plan: FaultPlan, loop: NetLoop, rng: random.Random) -> None:
        self.plan = plan
        self.loop = loop
        self.rng = rng
        self.storms = 0
        self.outages = 0
        self._sessions: list[MqttSession] = []
        self._slow: list[MqttSession] = []

    def install(self, sessions: list[MqttSession]) -> None:
        """Set per-module faults and schedule the fleet-wide ones."""
        plan = self.plan
        self._sessions = sessions
        for session in sessions:
            if plan.clock_skew_s:
                session.core.clock_offset_s = self.rng.uniform(
                    -plan.clock_skew_s, plan.clock_skew_s
                )
        if plan.slow_fraction:
            count = round(len(sessions) * plan.slow_fraction)
            self._slow = self.rng.sample(sessions, count)
            self.loop.call_later(0.5, self._slow_down)
        if plan.storm_every_s and plan.storm_fraction:
            self.loop.call_later(plan.storm_every_s, self._storm)
        if plan.outage_for_s:
            self.loop.call_later(plan.outage_at_s, self._outage)

    def on_reading(self, session: MqttSession, reading: Telemetry) -> None:
        """Per-reading faults: duplicates and malformed payloads."""
        if self.plan.duplicate_rate and self.rng.random() < self.plan.duplicate_rate:
            session.publish_extra(DeviceKind.TELEMETRY, reading.to_json())
        if self.plan.malformed_rate and self.rng.random() < self.plan.malformed_rate:
            session.publish_extra(DeviceKind.TELEMETRY, self.rng.choice(MALFORMED))

    def _storm(self) -> None:
        connected = [s for s in self._sessions if s.connected]
        for session in self.rng.sample(connected, round(len(connected) * self.plan.storm_fraction)):
            session.drop_connection()
        self.storms += 1
        self.loop.call_later(self.plan.storm_every_s, self._storm)

    def _outage(self) -> None:
        for session in self._sessions:
            session.network_down(self.plan.outage_for_s)
        self.outages += 1

    def _slow_down(self) -> None:
        for session in self._slow:
            self.loop.pause_reading(session.client, self.plan.slow_pause_s)
        # Read once between pauses so they stay connected (keepalive) but lag behind.
        self.loop.call_later(self.plan.slow_pause_s + 0.05, self._slow_down)
