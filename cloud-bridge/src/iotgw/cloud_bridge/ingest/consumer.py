"""The pika side of ingest: consume q.telemetry, batch, hand batches to the flusher, ack.

Guarantees, and where they come from:
- A batch is acked (`basic_ack(last_tag, multiple=True)`) only in `_complete`, which runs after
  the flusher saw InfluxDB answer 2xx for every line of it; batches complete in tag order.
- A message that can never be written is published to the dead-letter queue on a confirm-mode
  channel (so the broker holds it) before the ack that covers it.
- While InfluxDB is down the flusher retries and nothing is acked; once `prefetch` deliveries are
  unacked the broker stops sending: consumption pauses by itself (back-pressure).
- Anything that breaks the AMQP connection leaves the unacked messages to be redelivered, and
  redelivered readings rewrite the same points.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from functools import partial
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel

from iotgw.cloud_bridge.ingest.batch import Batch, DeadLetter, Delivery, Outcome
from iotgw.cloud_bridge.ingest.flusher import Flusher
from iotgw.cloud_bridge.ingest.health import HealthPoints, IngestMetrics
from iotgw.cloud_bridge.ingest.points import (
    REASON_REJECTED,
    InvalidMessageError,
    PointBuilder,
    SkewGuard,
)
from iotgw.cloud_bridge.ingest.settings import IngestSettings
from iotgw.cloud_bridge.ingest.writers import LineWriter
from iotgw.contracts.amqp import dead_letter
from iotgw.contracts.topics import DeviceTopic, TopicError
from iotgw.contracts.topology import DEFAULT_TOPOLOGY, Topology

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 10.0


class IngestConsumer:
    """One AMQP connection's worth of ingest; `run` returns when `stop` is set."""

    def __init__(
        self,
        settings: IngestSettings,
        writer: LineWriter,
        metrics: IngestMetrics,
        topology: Topology = DEFAULT_TOPOLOGY,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.topology = topology
        self.queue = topology.queue(settings.ingest_queue)
        self.builder = PointBuilder(
            SkewGuard(settings.ingest_max_future_skew_s, settings.ingest_max_past_s)
        )
        self.health = HealthPoints(settings.ingest_instance, self.queue.name)
        self._batch_size = settings.ingest_batch_size
        self._interval = settings.ingest_batch_interval_ms / 1000
        self._batch: Batch | None = None
        self._health_lines: list[bytes] = []
        self._last_flush = time.monotonic()
        self._inflight = 0
        self._depth = 0
        self._next_depth_sample = 0.0
        self._skew_warned: set[str] = set()
        self._channel: BlockingChannel | None = None
        self._dead_channel: BlockingChannel | None = None

    def run(self, stop: threading.Event) -> None:
        """Declare the topology, consume until `stop`, then write what is in hand and close."""
        connection = pika.BlockingConnection(pika.URLParameters(self.settings.amqp_url))
        flusher = Flusher(
            self.writer,
            lambda batch, outcome: connection.add_callback_threadsafe(
                partial(self._complete, batch, outcome)
            ),
            retry_initial_s=self.settings.ingest_retry_initial_s,
            retry_max_s=self.settings.ingest_retry_max_s,
            on_retry=lambda _reason: self.metrics.write_retries.inc(),
        )
        try:
            channel = connection.channel()
            self.topology.declare(channel, self.settings.queue_type)
            channel.basic_qos(prefetch_count=self.settings.ingest_prefetch)
            dead_channel = connection.channel()
            dead_channel.confirm_delivery()
            self._channel, self._dead_channel = channel, dead_channel
            flusher.start()
            consumer_tag = channel.basic_consume(self.queue.name, self._on_message)
            log.info(
                "consuming",
                extra={
                    "queue": self.queue.name,
                    "prefetch": self.settings.ingest_prefetch,
                    "batch_size": self._batch_size,
                    "influx_api": self.settings.influx_api,
                },
            )
            while not stop.is_set():
                connection.process_data_events(time_limit=self._wait_s(flusher))
                self._flush(flusher)
                self._sample_depth(channel)
            channel.basic_cancel(consumer_tag)
            self._drain(connection, flusher)
        finally:
            flusher.stop()
            with contextlib.suppress(Exception):
                if connection.is_open:
                    connection.close()

    def _on_message(
        self, _channel: Any, method: Any, properties: pika.BasicProperties, body: bytes
    ) -> None:
        delivery = Delivery(method.delivery_tag, method.routing_key, properties, body)
        batch = self._batch
        if batch is None:
            batch = self._batch = Batch(time.monotonic())
        try:
            point = self.builder.build(method.routing_key, body)
        except InvalidMessageError as exc:
            batch.add_dead(delivery, exc.category, exc.detail)
        else:
            batch.add_point(delivery, point.line, point.time_ns)
            if point.skew_s is not None:
                batch.skew_corrected += 1
                self._warn_skew(point.client, point.device, point.seq, point.skew_s)

    def _wait_s(self, flusher: Flusher) -> float:
        """How long pika may block: until the batch is due, or a write completes when busy."""
        if self._batch is None or flusher.busy:
            # A completing write wakes process_data_events (add_callback_threadsafe).
            return self._interval
        return max(0.0, self._batch.opened_at + self._interval - time.monotonic())

    def _flush(self, flusher: Flusher, force: bool = False) -> None:
        """Offer the batch to the flusher when it is full or old enough (or forced)."""
        now = time.monotonic()
        batch = self._batch
        if batch is None:
            if not self._health_lines or now - self._last_flush < self._interval:
                return
            batch = Batch(now)
        elif (
            not force
            and batch.received < self._batch_size
            and now - batch.opened_at < self._interval
        ):
            return
        batch.extra = self._health_lines
        if not flusher.offer(batch):
            batch.extra = []
            return
        self._health_lines = []
        self._batch = None
        self._inflight += 1
        self._last_flush = now
        self.metrics.received.inc(batch.received)
        if batch.received:
            self.metrics.batch_size.observe(batch.received)

    def _complete(self, batch: Batch, outcome: Outcome) -> None:
        """Runs on the pika thread once the flusher has written `batch`: dead-letter, then ack."""
        self._inflight -= 1
        dead = list(batch.dead)
        for index, message in outcome.rejected:
            if index < len(batch.lines):
                dead.append(DeadLetter(batch.sources[index], REASON_REJECTED, message))
            else:
                log.warning("influxdb refused a health point", extra={"error": message})
        assert self._channel is not None
        for letter in dead:
            self._dead_letter(letter)
        if batch.last_tag:
            self._channel.basic_ack(batch.last_tag, multiple=True)
        written = len(batch.lines) - (len(dead) - len(batch.dead))
        self.metrics.written.inc(written)
        self.metrics.write_seconds.observe(outcome.write_s)
        self.metrics.skew_corrected.inc(batch.skew_corrected)
        if batch.newest_ns:
            self.metrics.lag_seconds.set(max(0.0, time.time() - batch.newest_ns / 1e9))
        if batch.received:
            log.debug(
                "batch written",
                extra={
                    "received": batch.received,
                    "written": written,
                    "dead_lettered": len(dead),
                    "write_ms": round(outcome.write_s * 1000, 1),
                    "requests": outcome.requests,
                },
            )
            self._health_lines.append(
                self.health.flush(
                    received=batch.received,
                    written=written,
                    dead_lettered=len(dead),
                    write_ms=outcome.write_s * 1000,
                    queue_depth=self._depth,
                    skew_corrected=batch.skew_corrected,
                )
            )

    def _dead_letter(self, letter: DeadLetter) -> None:
        d = letter.delivery
        reason = f"{letter.category}: {letter.detail}"
        dead_letter(self._dead_channel, self.queue, d.body, d.properties, d.routing_key, reason)
        self.metrics.dead_lettered.labels(letter.category).inc()
        self._health_lines.append(self.health.dead_letter(letter.category))
        log.warning("dead-lettered", extra={**_context(d), "reason": reason})

    def _sample_depth(self, channel: BlockingChannel) -> None:
        now = time.monotonic()
        if now < self._next_depth_sample:
            return
        self._next_depth_sample = now + self.settings.ingest_depth_interval_s
        declared = channel.queue_declare(self.queue.name, passive=True)
        self._depth = int(declared.method.message_count)
        self.metrics.queue_depth.set(self._depth)

    def _drain(self, connection: pika.BlockingConnection, flusher: Flusher) -> None:
        """Write the batch in hand and wait (bounded) for the writes in flight to complete."""
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and (self._batch is not None or self._inflight):
            if self._batch is not None:
                self._flush(flusher, force=True)
            connection.process_data_events(time_limit=0.05)

    def _warn_skew(self, client: str, device: str, seq: int, skew_s: float) -> None:
        # Once per device and process: a device with a wrong clock is wrong on every reading.
        key = f"{client}/{device}"
        if key in self._skew_warned:
            return
        self._skew_warned.add(key)
        log.warning(
            "device clock skew corrected",
            extra={"client": client, "device": device, "seq": seq, "skew_s": skew_s},
        )


def _context(delivery: Delivery) -> dict[str, Any]:
    """client/device/seq of a delivery for logs, as far as they can be read from it."""
    context: dict[str, Any] = {"routing_key": delivery.routing_key}
    with contextlib.suppress(TopicError):
        topic = DeviceTopic.from_routing_key(delivery.routing_key)
        context.update(client=topic.client, device=topic.device)
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        context["seq"] = json.loads(delivery.body).get("seq")
    return context
