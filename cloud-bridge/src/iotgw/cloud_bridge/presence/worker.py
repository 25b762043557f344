"""The AMQP side both presence workers share: connect, consume, reconnect with backoff.

Each worker owns one connection with a confirm-mode channel (a dead-letter publish returns only
once the broker holds it, and only then is the original acked). A subclass names its queues
and handles one delivery at a time; `pause` backs off while a dependency (the database, the
MQTT broker) is down, after which the delivery goes back to its queue unacked.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from iotgw.cloud_bridge.presence.metrics import PresenceMetrics
from iotgw.cloud_bridge.presence.settings import PresenceSettings
from iotgw.contracts.amqp import dead_letter
from iotgw.contracts.topology import DEFAULT_TOPOLOGY, WorkQueue

log = logging.getLogger(__name__)


class AmqpWorker:
    """Consume `queues` until `stop` is set; subclasses implement `handle`."""

    queues: tuple[WorkQueue, ...] = ()

    def __init__(self, settings: PresenceSettings, metrics: PresenceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.consuming = threading.Event()
        self._stop = threading.Event()
        self._backoff = settings.presence_retry_initial_s

    def stop(self) -> None:
        """Ask `run` to return (within about half a second)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until `stop`, reconnecting with growing delays when the broker goes away."""
        delay = self.settings.presence_retry_initial_s
        while not self._stop.is_set():
            try:
                self._consume()
                delay = self.settings.presence_retry_initial_s
            except (pika.exceptions.AMQPError, OSError) as exc:
                # Unacked deliveries return to their queue with the connection: nothing is lost.
                self.consuming.clear()
                log.warning("amqp unavailable, reconnecting", extra={"error": repr(exc)})
                self._stop.wait(delay)
                delay = min(delay * 2, self.settings.presence_retry_max_s)

    def ready_to_consume(self) -> bool:
        """Whether to start consuming now (the config worker waits for MQTT)."""
        return True

    def handle(
        self,
        queue: WorkQueue,
        channel: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        """Process one delivery from `queue`: ack, dead-letter or `requeue_after_pause` it."""
        raise NotImplementedError

    def _consume(self) -> None:
        params = pika.URLParameters(self.settings.amqp_url)
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            DEFAULT_TOPOLOGY.declare(channel, self.settings.queue_type)
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.settings.presence_prefetch)
            while not self._stop.is_set() and not self.ready_to_consume():
                connection.process_data_events(time_limit=0.2)
            for queue in self.queues:
                channel.basic_consume(queue.name, partial(self.handle, queue))
            self.consuming.set()
            log.info("consuming", extra={"queues": [q.name for q in self.queues]})
            while not self._stop.is_set():
                connection.process_data_events(time_limit=0.5)
        finally:
            self.consuming.clear()
            if connection.is_open:
                connection.close()

    def dead_letter(
        self,
        channel: BlockingChannel,
        queue: WorkQueue,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
        routing_key: str,
        reason: str,
    ) -> None:
        """Move the delivery to the queue's dead-letter queue with `reason`, then ack it."""
        dead_letter(channel, queue, body, properties, routing_key, reason)
        channel.basic_ack(method.delivery_tag)
        self.metrics.dead_lettered.labels(queue.name, reason.split(":", 1)[0]).inc()
        log.warning(
            "dead-lettered",
            extra={"queue": queue.name, "routing_key": routing_key, "reason": reason},
        )

    def requeue_after_pause(
        self, channel: BlockingChannel, queue: WorkQueue, method: Any, why: str
    ) -> None:
        """A dependency is down: wait (growing delays), then hand the delivery back unacked.

        `why` starts with the dependency's name (`database: ...`, `mqtt: ...`).
        """
        self.metrics.pauses.labels(queue.name, why.split(":", 1)[0]).inc()
        log.warning("dependency unavailable, pausing", extra={"error": why, "delay": self._backoff})
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.presence_retry_max_s)
        channel.basic_nack(method.delivery_tag, requeue=True)

    def succeeded(self) -> None:
        """A delivery went through: reset the pause delay."""
        self._backoff = self.settings.presence_retry_initial_s
