"""The outbox relay: publishes committed outbox rows with publisher confirms, then marks them.

Delivery is at-least-once: a row is marked sent only after the broker confirmed it, so a
crash between the confirm and the mark publishes it again on restart. Each message carries the
row's `message_id` (AMQP property) so a consumer can drop such a duplicate. While the broker is
unreachable rows simply wait; the relay reconnects with a growing delay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pika
import pika.exceptions
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.registry import repository as repo
from iotgw.cloud_bridge.registry.models import OutboxMessage
from iotgw.contracts.topology import DEFAULT_TOPOLOGY, QueueType

log = logging.getLogger(__name__)

BATCH = 100
MAX_BACKOFF_S = 5.0


class OutboxRelay:
    """Moves outbox rows to the broker. Run `run()` in a thread; `wake()` after a commit."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        amqp_url: str,
        *,
        poll_interval: float = 1.0,
        queue_type: QueueType = "classic",
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.amqp_url = amqp_url
        self.poll_interval = poll_interval
        self.queue_type = queue_type
        self.on_published = on_published
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None

    def wake(self) -> None:
        """Publish now rather than at the next poll (called after a commit adds rows)."""
        self._wake.set()

    def stop(self) -> None:
        """Ask `run()` to return."""
        self._stop.set()
        self._wake.set()

    def run(self) -> None:
        """Publish until `stop()`: each round drains the backlog, then waits for a wake or poll."""
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._ensure_channel()
                while self.publish_pending() == BATCH and not self._stop.is_set():
                    pass
                backoff = 0.2
                self._idle()
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("outbox relay: broker unavailable, retrying", extra={"error": str(exc)})
                self.close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        self.close()

    def _idle(self) -> None:
        # Wait in short slices so the blocking connection keeps serving heartbeats.
        remaining = self.poll_interval
        while remaining > 0 and not self._stop.is_set():
            if self._wake.wait(min(0.2, remaining)):
                break
            remaining -= 0.2
            if self._connection is not None:
                self._connection.process_data_events(time_limit=0)
        self._wake.clear()

    def _ensure_channel(self) -> pika.adapters.blocking_connection.BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        params = pika.URLParameters(self.amqp_url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        # A broker under a resource alarm blocks publishers; give up instead of holding the
        # claimed rows (and, on SQLite, the write lock) indefinitely.
        params.blocked_connection_timeout = 10
        connection = pika.BlockingConnection(params)
        channel = connection.channel()
        # Queues must exist before publishing, or a confirmed message would be dropped
        # unrouted; declaring is idempotent.
        DEFAULT_TOPOLOGY.declare(channel, self.queue_type)
        channel.confirm_delivery()
        self._connection, self._channel = connection, channel
        return channel

    def close(self) -> None:
        """Close the broker connection (`run()` does so when it returns)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except (pika.exceptions.AMQPError, OSError):
                log.debug("outbox relay: closing a broken connection failed")

    def publish_pending(self) -> int:
        """Publish one batch of unsent rows; returns how many were confirmed.

        Rows are locked while they are published, so a second relay skips them (PostgreSQL).
        A broker error propagates after the rows confirmed so far are committed.
        """
        channel = self._ensure_channel()
        published = 0
        failure: Exception | None = None
        with self.sessions.begin() as session:
            for message in repo.claim_unsent(session, BATCH):
                try:
                    self._publish(channel, message)
                except pika.exceptions.UnroutableError:
                    repo.mark_failed(session, message, "unroutable: no queue bound")
                    log.error(
                        "outbox relay: message unroutable, kept for retry",
                        extra={"routing_key": message.routing_key, "trace_id": message.trace_id},
                    )
                    continue
                except (pika.exceptions.AMQPError, OSError) as exc:
                    repo.mark_failed(session, message, str(exc) or type(exc).__name__)
                    failure = exc
                    break
                repo.mark_sent(session, message)
                published += 1
        if published and self.on_published is not None:
            self.on_published(published)
        if failure is not None:
            raise failure
        return published

    @staticmethod
    def _publish(
        channel: pika.adapters.blocking_connection.BlockingChannel, message: OutboxMessage
    ) -> None:
        headers = {"trace_id": message.trace_id} if message.trace_id else None
        channel.basic_publish(
            exchange=message.exchange,
            routing_key=message.routing_key,
            body=message.body,
            properties=pika.BasicProperties(
                content_type=message.content_type,
                delivery_mode=pika.DeliveryMode.Persistent,
                message_id=message.message_id,
                correlation_id=message.trace_id,
                headers=headers,
            ),
            mandatory=True,
        )
        log.info(
            "outbox message published",
            extra={"routing_key": message.routing_key, "trace_id": message.trace_id},
        )
