"""Writes batches in order on a thread of its own, retrying until InfluxDB has taken them.

The pika thread keeps receiving (up to the prefetch) while a batch is on the wire, so writing
and receiving overlap. Batches are written strictly one after another, in the order they were
offered, so acking each with `multiple=True` never acks a later, unwritten one.

A 400 from InfluxDB means some line is bad: the batch is split in halves and each half written
again, down to single lines, which are the ones to dead-letter. InfluxDB 1.x writes the good
points of a refused request, so a good point may be written twice: same series and timestamp,
the same point, harmless.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from iotgw.cloud_bridge.ingest.batch import Batch, Outcome
from iotgw.cloud_bridge.ingest.writers import LineWriter, WriteRejectedError, WriteUnavailableError

log = logging.getLogger(__name__)


class StoppedError(Exception):
    """The flusher was stopped before the batch was written; it stays unacked."""


class Flusher:
    """One writer thread; `offer` a batch, `on_done(batch, outcome)` is called once written."""

    def __init__(
        self,
        writer: LineWriter,
        on_done: Callable[[Batch, Outcome], None],
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        queued: int = 1,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.writer = writer
        self._on_done = on_done
        self._on_retry = on_retry
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=queued)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def offer(self, batch: Batch) -> bool:
        """Queue `batch` for writing; False when the writer is busy with enough already."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            return False
        return True

    @property
    def busy(self) -> bool:
        """True when `offer` would refuse a batch now."""
        return self._queue.full()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the batch being written (or abandon its retries); queued ones stay unacked."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                outcome = self.write(batch)
            except StoppedError:
                return
            self._on_done(batch, outcome)

    def write(self, batch: Batch) -> Outcome:
        """Write every line of `batch`; return the lines InfluxDB refused for good."""
        started = time.perf_counter()
        lines = batch.lines + batch.extra
        requests = [0]
        rejected = self._write_bisecting(lines, 0, requests) if lines else []
        return Outcome(rejected, time.perf_counter() - started, requests[0])

    def _write_bisecting(
        self, lines: list[bytes], offset: int, requests: list[int]
    ) -> list[tuple[int, str]]:
        try:
            requests[0] += 1
            self._write_retrying(b"".join(lines))
        except WriteRejectedError as exc:
            if len(lines) == 1:
                return [(offset, exc.message)]
            mid = len(lines) // 2
            return self._write_bisecting(lines[:mid], offset, requests) + self._write_bisecting(
                lines[mid:], offset + mid, requests
            )
        return []

    def _write_retrying(self, body: bytes) -> None:
        delay = self._retry_initial
        while True:
            if self._stop.is_set():
                raise StoppedError
            try:
                self.writer.write(body)
                return
            except WriteUnavailableError as exc:
                log.warning("influxdb write failed, retrying in %.1f s: %s", delay, exc)
                if self._on_retry is not None:
                    self._on_retry(str(exc))
            if self._stop.wait(delay):
                raise StoppedError
            delay = min(delay * 2, self._retry_max)
