"""The SQLite buffer on a real file: seq across restarts, bounds with counted drops, acks."""

from __future__ import annotations

import time
from pathlib import Path

from iotgw.edge_agent.buffer import BufferLimits, Store


def test_seq_is_persisted_and_monotonic_across_restarts(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    buf = store.device("acme/dev-1")
    assert [buf.append(1.0, {"t": 1}).seq for _ in range(3)] == [0, 1, 2]
    for seq in (0, 1, 2):
        buf.ack(seq)
    store.close()
    store = Store(tmp_path / "b.db")
    buf = store.device("acme/dev-1")
    assert buf.count() == 0
    assert buf.append(2.0, {"t": 2}).seq == 3  # never reused, even with an empty buffer
    assert store.device("acme/dev-2").append(2.0, {"t": 2}).seq == 0  # per device
    store.close()


def test_pending_oldest_first_and_acks_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db", synchronous="normal")
    buf = store.device("d")
    for i in range(5):
        buf.append(100.0 + i, {"t": i})
    assert [p.seq for p in buf.pending(limit=3)] == [0, 1, 2]
    assert [p.seq for p in buf.pending(after=2)] == [3, 4]
    buf.ack(0)
    buf.ack(3)
    assert store.flush_acks() == 2
    assert [p.seq for p in buf.pending()] == [1, 2, 4]
    assert b'"seq":1' in buf.pending()[0].payload


def test_full_buffer_drops_oldest_and_counts(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    buf = store.device("d", BufferLimits(max_readings=10))
    for i in range(15):
        buf.append(1.0, {"t": i})
    assert buf.count() == 10
    assert [p.seq for p in buf.pending(limit=1)] == [5]
    assert buf.dropped() == (5, 0)
    # What was dropped is reported in the next reading.
    assert buf.append(1.0, {"t": 0}).metrics["buffer_dropped"] == 5


def test_old_readings_expire_and_are_counted(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    buf = store.device("d", BufferLimits(max_age_s=0.2))
    buf.append(1.0, {"t": 1})
    buf.append(1.0, {"t": 2})
    time.sleep(0.3)  # age is wall-clock time in the buffer; nothing to await
    buf.append(1.0, {"t": 3})
    assert buf.count() == 1
    assert buf.dropped() == (0, 2)


def test_epoch_and_applied_config_persist(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.db")
    buf = store.device("d")
    assert buf.next_epoch() == 1
    assert buf.next_epoch() == 2
    buf.save_applied_config({"version": 2})
    store.close()
    buf = Store(tmp_path / "b.db").device("d")
    assert buf.next_epoch() == 3
    assert buf.applied_config() == {"version": 2}
