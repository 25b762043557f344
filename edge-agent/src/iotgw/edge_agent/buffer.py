"""The on-disk store-and-forward buffer: SQLite in WAL mode, one file, one or many devices.

Semantics (decided):
- A reading is inserted with its per-device `seq` and committed BEFORE it is handed to MQTT;
  it is deleted only when its PUBACK arrives. So a crash (even `kill -9`) loses nothing that was
  accepted; at worst a reading whose PUBACK was in flight is sent twice (at-least-once;
  consumers key on client/device/seq).
- `seq` comes from a per-device counter in the same transaction as the insert: monotonic across
  restarts, never reused, even when the buffer is empty or readings were dropped.
- Bounded by count (`max_readings` per device) and age (`max_age_s`): when full, the OLDEST
  reading is dropped (the newest data is worth more to a dashboard); expired readings are dropped
  too. Both are counted per device (`dropped_overflow`, `dropped_expired`) and persisted, so
  the counters survive restarts and are reported (metrics, logs, and the `buffer_dropped` metric
  of the next reading).
- PUBACK deletions may be batched (`flush_acks`): deleting late only risks a duplicate.
- `synchronous=FULL` (the agent's default) also survives power loss; `NORMAL` survives a
  process crash, which is what the simulator needs, at a fraction of the fsyncs.
One store holds many devices (the simulator runs thousands of modules against one file, which
keeps file descriptors for sockets); each device sees only its own rows through `DeviceBuffer`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from iotgw.contracts.payloads import MetricValue, Telemetry

Synchronous = Literal["full", "normal"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (device, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL DEFAULT 0,
    epoch INTEGER NOT NULL DEFAULT 0,
    dropped_overflow INTEGER NOT NULL DEFAULT 0,
    dropped_expired INTEGER NOT NULL DEFAULT 0,
    applied_config TEXT
);
"""


@dataclass(frozen=True)
class BufferLimits:
    """How much one device may hold before the oldest readings are dropped."""

    max_readings: int = 100_000
    max_age_s: float = 7 * 86_400


@dataclass(frozen=True)
class Pending:
    """A buffered reading waiting for its PUBACK."""

    seq: int
    payload: bytes


class Store:
    """One SQLite file (WAL) holding the buffers, counters and applied configs of devices."""

    def __init__(self, path: Path, synchronous: Synchronous = "full") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Autocommit mode: every statement outside an explicit BEGIN commits on its own.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.executescript(_SCHEMA)
        self._acks: list[tuple[str, int]] = []

    def device(self, device: str, limits: BufferLimits | None = None) -> DeviceBuffer:
        """The buffer of `device` (created on first use)."""
        self._db.execute("INSERT OR IGNORE INTO devices (device) VALUES (?)", (device,))
        return DeviceBuffer(self, device, limits or BufferLimits())

    def queue_ack(self, device: str, seq: int) -> None:
        """Remember a PUBACK; the row is deleted at the next `flush_acks`."""
        self._acks.append((device, seq))

    def flush_acks(self) -> int:
        """Delete every acknowledged reading in one transaction; returns how many."""
        if not self._acks:
            return 0
        acks, self._acks = self._acks, []
        with self.transaction():
            self._db.executemany("DELETE FROM readings WHERE device = ? AND seq = ?", acks)
            # Once a device's rows are gone, only this keeps its seq from going back.
            newest: dict[str, int] = {}
            for device, seq in acks:
                newest[device] = max(seq, newest.get(device, seq))
            self._db.executemany(
                "UPDATE devices SET next_seq = MAX(next_seq, ? + 1) WHERE device = ?",
                [(seq, device) for device, seq in newest.items()],
            )
        return len(acks)

    def total_buffered(self) -> int:
        """Readings of all devices still waiting for a PUBACK."""
        row = self._db.execute("SELECT COUNT(*) FROM readings").fetchone()
        return int(row[0]) - len(self._acks)

    def close(self) -> None:
        """Write pending deletions and close the file."""
        self.flush_acks()
        self._db.close()

    def transaction(self) -> _Commit:
        """`with store.transaction():` groups statements into one commit (nesting joins it)."""
        return _Commit(self._db)

    @property
    def db(self) -> sqlite3.Connection:
        """The connection (for `DeviceBuffer`)."""
        return self._db


class _Commit:
    """Context manager: BEGIN, then COMMIT on success or ROLLBACK on error; inside an open
    transaction it does nothing (the outer one commits)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._outer = False

    def __enter__(self) -> sqlite3.Connection:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._outer = True
        return self._db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._outer:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")


class DeviceBuffer:
    """One device's view of the store: append readings, list pending ones, counters, config.

    The hot path is one INSERT per reading (its own transaction). The next seq, the row count
    and the drop counters are mirrored in memory; `next_seq` is persisted when readings leave
    (PUBACK or drop), and on open it is the larger of the stored value and the newest row + 1,
    so it never goes back whatever was deleted.
    """

    def __init__(self, store: Store, device: str, limits: BufferLimits) -> None:
        self._store = store
        self._db = store.db
        self.device = device
        self.limits = limits
        stored, overflow, expired = self._db.execute(
            "SELECT next_seq, dropped_overflow, dropped_expired FROM devices WHERE device = ?",
            (device,),
        ).fetchone()
        newest, count = self._db.execute(
            "SELECT MAX(seq), COUNT(*) FROM readings WHERE device = ?", (device,)
        ).fetchone()
        self._next_seq = max(int(stored), -1 if newest is None else int(newest) + 1)
        self._count = int(count)
        self._dropped = [int(overflow), int(expired)]
        self._next_age_check = 0.0
        self.last_appended: Pending | None = None

    def append(self, ts: float, metrics: dict[str, MetricValue]) -> Telemetry:
        """Give the reading the next seq and persist it (bounds enforced) before returning it."""
        now = time.time()
        seq = self._next_seq
        dropped = self._dropped[0] + self._dropped[1]
        if dropped:
            metrics = {**metrics, "buffer_dropped": dropped}
        reading = Telemetry(ts=ts, seq=seq, metrics=metrics)
        payload = reading.to_json()
        self._db.execute(
            "INSERT INTO readings (device, seq, created, payload) VALUES (?, ?, ?, ?)",
            (self.device, seq, now, payload),
        )
        self.last_appended = Pending(seq, payload)
        self._next_seq = seq + 1
        self._count += 1
        if self._count > self.limits.max_readings or now >= self._next_age_check:
            self._enforce_limits(now)
        return reading

    def _enforce_limits(self, now: float) -> None:
        self._next_age_check = now + min(60.0, self.limits.max_age_s / 10)
        self._store.flush_acks()
        with self._store.transaction():
            expired = self._db.execute(
                "DELETE FROM readings WHERE device = ? AND created < ?",
                (self.device, now - self.limits.max_age_s),
            ).rowcount
            overflow = self._db.execute(
                "DELETE FROM readings WHERE device = ? AND seq IN (SELECT seq FROM readings "
                "WHERE device = ? ORDER BY seq DESC LIMIT -1 OFFSET ?)",
                (self.device, self.device, self.limits.max_readings),
            ).rowcount
            if expired or overflow:
                self._db.execute(
                    "UPDATE devices SET dropped_expired = dropped_expired + ?, "
                    "dropped_overflow = dropped_overflow + ?, next_seq = ? WHERE device = ?",
                    (expired, overflow, self._next_seq, self.device),
                )
        self._dropped[0] += overflow
        self._dropped[1] += expired
        self._count -= expired + overflow

    def pending(self, after: int = -1, limit: int = 100) -> list[Pending]:
        """Buffered readings with seq > `after`, oldest first."""
        rows = self._db.execute(
            "SELECT seq, payload FROM readings WHERE device = ? AND seq > ? ORDER BY seq LIMIT ?",
            (self.device, after, limit),
        ).fetchall()
        return [Pending(int(seq), bytes(payload)) for seq, payload in rows]

    def ack(self, seq: int) -> None:
        """The broker acknowledged `seq`: delete it (batched, see `Store.flush_acks`)."""
        self._count -= 1
        self._store.queue_ack(self.device, seq)

    def flush_acks(self) -> None:
        """Delete acknowledged readings now (before a replay, so none is sent twice)."""
        self._store.flush_acks()

    def count(self) -> int:
        """Readings of this device still in the file (PUBACKs not yet flushed included)."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM readings WHERE device = ?", (self.device,)
        ).fetchone()
        return int(row[0])

    def next_seq(self) -> int:
        """The seq the next reading will get."""
        return self._next_seq

    def dropped(self) -> tuple[int, int]:
        """(dropped because full, dropped because too old), since the buffer was created."""
        return self._dropped[0], self._dropped[1]

    def next_epoch(self) -> int:
        """Increment and persist the connection epoch; returns the new value."""
        (epoch,) = self._db.execute(
            "UPDATE devices SET epoch = epoch + 1 WHERE device = ? RETURNING epoch",
            (self.device,),
        ).fetchone()
        return int(epoch)

    def applied_config(self) -> dict[str, object] | None:
        """The last config applied, as persisted."""
        raw = self._field("applied_config")
        return json.loads(raw) if raw else None

    def save_applied_config(self, config: dict[str, object]) -> None:
        """Persist the config now in force."""
        self._db.execute(
            "UPDATE devices SET applied_config = ? WHERE device = ?",
            (json.dumps(config), self.device),
        )

    def _field(self, name: str) -> Any:
        row = self._db.execute(
            f"SELECT {name} FROM devices WHERE device = ?",  # noqa: S608 - fixed column names
            (self.device,),
        ).fetchone()
        return row[0]
