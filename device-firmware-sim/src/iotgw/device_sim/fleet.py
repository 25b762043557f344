"""Many simulated modules in one process: the agent's own DeviceCore and MqttSession, one loop.

Nothing here re-implements the device: each module is a `DeviceCore` (buffer, seq, presence,
config) with simulated sensors and an `MqttSession`, all driven by one `NetLoop` and one SQLite
store (one file for the fleet: file descriptors are kept for sockets). The fleet adds only what
a fleet needs: identities, staggered start, faults, totals, and a drain at the end so that
"acknowledged" is final before the summary.
"""

from __future__ import annotations

import random
import resource
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iotgw.device_sim.faults import FaultInjector, FaultPlan
from iotgw.device_sim.identities import module_password
from iotgw.device_sim.models import SimClock, module_sensors
from iotgw.edge_agent.buffer import BufferLimits, Store
from iotgw.edge_agent.device import DeviceCore, DeviceIdentity
from iotgw.edge_agent.netloop import NetLoop
from iotgw.edge_agent.session import ConnectGate, LinkSettings, MqttSession

CHECK_INTERVAL_S = 0.2


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (each module holds a socket); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class FleetConfig:
    """What to simulate and where to connect."""

    identities: list[DeviceIdentity]
    host: str
    port: int
    secret: str
    state_dir: Path
    # username -> secret for modules with issued credentials; the rest derive from `secret`.
    passwords: Mapping[str, str] = field(default_factory=dict)
    vhost: str | None = None
    rate_hz: float = 1.0
    jitter: float = 0.1
    window: int = 20
    keepalive_s: int = 60
    connect_parallel: int = 200
    time_scale: float = 1.0
    buffer_max_readings: int = 100_000
    seed: int = 0


@dataclass
class Totals:
    """Fleet-wide counters (a snapshot)."""

    modules: int = 0
    connected: int = 0
    sampled: int = 0
    sent: int = 0
    acked: int = 0
    buffered: int = 0
    dropped: int = 0
    inflight: int = 0
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    extra_sent: int = 0
    max_connected: int = 0
    disconnect_reasons: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    rate_acked_per_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for --json)."""
        return asdict(self)


class Fleet:
    """Builds, runs, drains and stops a fleet of simulated modules."""

    def __init__(self, config: FleetConfig, faults: FaultPlan | None = None) -> None:
        self.config = config
        self.open_files = raise_open_files_limit()
        self.loop = NetLoop()
        self.store = Store(config.state_dir / "fleet.db", synchronous="normal")
        self.loop.after_iteration.append(self.store.flush_acks)
        self.loop.timer_batch = self.store.transaction
        self.rng = random.Random(config.seed)  # noqa: S311 - simulation
        self.gate = ConnectGate(self.loop, config.connect_parallel)
        self.faults = FaultInjector(faults or FaultPlan(), self.loop, self.rng)
        self.clock = SimClock(time.time(), config.time_scale)
        self.sessions: list[MqttSession] = []
        self._started = 0.0
        self.connected_now = 0
        self._idle = False
        self._max_connected = 0
        self._buffered = 0
        self._dropped = 0
        self._rate = 0.0
        self._last_rate = (0.0, 0)
        self._build()

    def _build(self) -> None:
        cfg = self.config
        interval = 1.0 / cfg.rate_hz
        limits = BufferLimits(max_readings=cfg.buffer_max_readings)
        with self.store.transaction():
            for identity in cfg.identities:
                buffer = self.store.device(identity.client_id, limits)
                core = DeviceCore(
                    identity, buffer, module_sensors(identity.client_id, self.clock), interval
                )
                user = identity.username
                link = LinkSettings(
                    host=cfg.host,
                    port=cfg.port,
                    username=f"{cfg.vhost}:{user}" if cfg.vhost else user,
                    password=cfg.passwords.get(user) or module_password(cfg.secret, identity),
                    keepalive_s=cfg.keepalive_s,
                    window=cfg.window,
                    backoff_min_s=1.0,
                    backoff_max_s=30.0,
                )
                session = MqttSession(
                    core,
                    link,
                    self.loop,
                    self.gate,
                    random.Random(self.rng.random()),  # noqa: S311 - simulation
                    tick_jitter=cfg.jitter,
                    on_reading=self.faults.on_reading,
                )
                self.sessions.append(session)

    # --- running -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect every module (in parallel, gated) and start sampling, staggered."""
        self._started = time.monotonic()
        interval = 1.0 / self.config.rate_hz
        for session in self.sessions:
            session.start(first_tick_s=self.rng.uniform(0, interval))
        self.faults.install(self.sessions)
        self._check()

    def _check(self) -> None:
        """Every CHECK_INTERVAL_S: the fleet-wide figures the loop's `until` tests read."""
        connected = sum(1 for s in self.sessions if s.connected)
        self.connected_now = connected
        self._max_connected = max(self._max_connected, connected)
        self._buffered = self.store.total_buffered()
        self._idle = self._buffered == 0 and all(s.inflight == 0 for s in self.sessions)
        now = time.monotonic()
        acked = sum(s.stats.acked for s in self.sessions)
        last_t, last_acked = self._last_rate
        if now - last_t >= 1.0:
            if last_t:
                self._rate = (acked - last_acked) / (now - last_t)
            self._last_rate = (now, acked)
        self.loop.call_later(CHECK_INTERVAL_S, self._check)

    def run_for(self, seconds: float) -> None:
        """Run the loop for `seconds`."""
        self.loop.run(timeout=seconds)

    def drain(self, timeout: float = 60) -> bool:
        """Stop sampling and run until every buffered reading is acknowledged (or `timeout`)."""
        for session in self.sessions:
            session.stop_sampling()
        self._idle = False
        self.loop.run(until=lambda: self._idle, timeout=timeout)
        self._buffered = self.store.total_buffered()
        return self._buffered == 0

    def stop(self, timeout: float = 30) -> None:
        """Publish `offline`, DISCONNECT every module, close the store."""
        for session in self.sessions:
            session.stop()
        self.loop.run(until=lambda: all(s.closed for s in self.sessions), timeout=timeout)
        self.totals()
        self.store.close()
        self.loop.close()

    def totals(self) -> Totals:
        """Counters summed over the fleet."""
        t = Totals(modules=len(self.sessions), buffered=self._buffered)
        for s in self.sessions:
            st = s.stats
            t.connected += s.connected
            t.sampled += st.sampled
            t.sent += st.sent
            t.acked += st.acked
            t.inflight += s.inflight
            t.connects += st.connects
            t.disconnects += st.disconnects
            t.connect_failures += st.connect_failures
            t.extra_sent += st.extra_sent
            if st.last_disconnect_reason:
                reason = st.last_disconnect_reason
                t.disconnect_reasons[reason] = t.disconnect_reasons.get(reason, 0) + 1
        t.max_connected = max(self._max_connected, t.connected)
        t.elapsed_s = round(time.monotonic() - self._started, 2) if self._started else 0.0
        t.rate_acked_per_s = round(self._rate, 1)
        t.dropped = self._dropped_total()
        return t

    def _dropped_total(self) -> int:
        try:
            row = self.store.db.execute(
                "SELECT COALESCE(SUM(dropped_overflow + dropped_expired), 0) FROM devices"
            ).fetchone()
        except sqlite3.ProgrammingError:  # the store is closed after stop()
            return self._dropped
        self._dropped = int(row[0])
        return self._dropped
