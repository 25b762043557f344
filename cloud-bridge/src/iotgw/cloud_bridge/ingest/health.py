"""The ingest's own health: Prometheus metrics, and the same figures as InfluxDB points.

Grafana reads only InfluxDB, so each flush also yields one `ingest` point and one
`dead_letters` point per dead-lettered message (measurements.py); they travel with the next
batch written, so they cost no request of their own.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from iotgw.contracts.measurements import DEAD_LETTERS, INGEST

BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000, 20_000)
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IngestMetrics:
    """Prometheus metrics of one ingest process, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("iotgw_ingest_received", "Messages received", registry=r)
        self.written = Counter("iotgw_ingest_written", "Points InfluxDB accepted", registry=r)
        self.dead_lettered = Counter(
            "iotgw_ingest_dead_lettered", "Messages dead-lettered", ["reason"], registry=r
        )
        self.skew_corrected = Counter(
            "iotgw_ingest_skew_corrected", "Readings whose device time was replaced", registry=r
        )
        self.write_retries = Counter(
            "iotgw_ingest_write_retries", "InfluxDB writes that failed and were retried", registry=r
        )
        self.batch_size = Histogram(
            "iotgw_ingest_batch_size", "Messages per batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.write_seconds = Histogram(
            "iotgw_ingest_write_seconds",
            "Time to write a batch, retries and bisection included",
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "iotgw_ingest_queue_depth", "Messages waiting in the queue (consumer lag)", registry=r
        )
        self.lag_seconds = Gauge(
            "iotgw_ingest_lag_seconds",
            "Age of the newest reading of the last batch written, at write time",
            registry=r,
        )

    def serve(self, port: int) -> None:
        """Serve /metrics on `port` (a daemon thread)."""
        start_http_server(port, registry=self.registry)


def _escape_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


class HealthPoints:
    """Renders the ingest's health as line protocol, with strictly increasing timestamps."""

    def __init__(self, instance: str, queue: str) -> None:
        self._instance = _escape_tag(instance)
        self._queue = _escape_tag(queue)
        self._last_ns = 0

    def _now_ns(self) -> int:
        # Two dead letters in the same nanosecond would otherwise be one point.
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now
        return now

    def flush(
        self,
        *,
        received: int,
        written: int,
        dead_lettered: int,
        write_ms: float,
        queue_depth: int,
        skew_corrected: int,
    ) -> bytes:
        """One `ingest` point for one flush."""
        return (
            f"{INGEST},instance={self._instance} received={received}i,written={written}i,"
            f"dead_lettered={dead_lettered}i,batch_size={received}i,write_ms={write_ms:.3f},"
            f"queue_depth={queue_depth}i,skew_corrected={skew_corrected}i {self._now_ns()}\n"
        ).encode()

    def dead_letter(self, reason: str) -> bytes:
        """One `dead_letters` point for one dead-lettered message."""
        return (
            f"{DEAD_LETTERS},queue={self._queue},reason={_escape_tag(reason)} count=1i "
            f"{self._now_ns()}\n"
        ).encode()
