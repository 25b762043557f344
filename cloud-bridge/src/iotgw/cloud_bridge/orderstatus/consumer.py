"""Consumer of q.api.status: applies `provisioning.<client>.ready|failed` to orders.

A message is acked only after the order's new status is committed. Malformed events go to the
dead-letter queue with the reason. A database error is the registry's outage, not the event's
fault: the event goes back on the queue and consumption pauses with a growing delay until the
database answers again, however long that takes, so an order provisioned during an outage still
turns Ready (the fault drills found that dead-lettering after a few retries lost it). Applying an
outcome is idempotent, so redelivery is safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pika
import pika.exceptions
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.registry import repository as repo
from iotgw.contracts.amqp import dead_letter, original_routing_key
from iotgw.contracts.envelope import Envelope, describe_error
from iotgw.contracts.jsonlog import trace
from iotgw.contracts.payloads import ProvisioningData
from iotgw.contracts.topics import ProvisioningOutcome
from iotgw.contracts.topology import API_STATUS_QUEUE, DEFAULT_TOPOLOGY, QueueType

log = logging.getLogger(__name__)

QUEUE = DEFAULT_TOPOLOGY.queue(API_STATUS_QUEUE)
MAX_BACKOFF_S = 5.0
FIRST_DB_PAUSE_S = 0.2


class BadStatusEventError(ValueError):
    """A status event that can never be applied (its reason goes to the dead-letter headers)."""


@dataclass(frozen=True)
class StatusEvent:
    """A provisioner outcome for one order."""

    client: str
    order_id: str | None
    trace_id: str
    ready: bool
    reason: str | None


def parse_status_event(routing_key: str, body: bytes) -> StatusEvent:
    """Read `provisioning.<client>.<outcome>` and its envelope; BadStatusEventError if invalid."""
    parts = routing_key.split(".")
    if len(parts) != 3 or parts[0] != "provisioning":
        raise BadStatusEventError(f"routing key {routing_key!r} is not provisioning.<client>.<x>")
    try:
        outcome = ProvisioningOutcome(parts[2])
    except ValueError as exc:
        raise BadStatusEventError(f"unknown provisioning outcome {parts[2]!r}") from exc
    try:
        envelope = Envelope.from_json(body)
        data = ProvisioningData.model_validate(envelope.data or {})
    except ValidationError as exc:
        raise BadStatusEventError(describe_error(exc)) from exc
    if envelope.client != parts[1]:
        raise BadStatusEventError("envelope client differs from the routing key's client")
    return StatusEvent(
        client=envelope.client,
        order_id=data.order_id,
        trace_id=str(envelope.trace_id),
        ready=outcome is ProvisioningOutcome.READY,
        reason=data.reason,
    )


def apply_status_event(session: Session, event: StatusEvent) -> bool:
    """Apply `event` to its order (found by order id, else by trace_id); False if unknown."""
    order_id = event.order_id
    if order_id is None:
        order = repo.order_for_trace(session, event.client, event.trace_id)
        order_id = order.id if order is not None else None
    if order_id is None:
        return False
    order = repo.apply_provisioning_outcome(
        session, event.client, order_id, ready=event.ready, reason=event.reason
    )
    return order is not None


class StatusConsumer:
    """Consumes q.api.status until `stop()`; reconnects when the broker goes away."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        amqp_url: str,
        *,
        queue_type: QueueType = "classic",
        prefetch: int = 50,
        on_applied: Callable[[StatusEvent], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.amqp_url = amqp_url
        self.queue_type = queue_type
        self.prefetch = prefetch
        self.on_applied = on_applied
        self._stop = threading.Event()
        self._db_pause = FIRST_DB_PAUSE_S

    def stop(self) -> None:
        """Ask `run()` to return (within about half a second)."""
        self._stop.set()

    def run(self) -> None:
        """Consume until `stop()`."""
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._consume()
                backoff = 0.2
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("status consumer: broker unavailable", extra={"error": str(exc)})
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _consume(self) -> None:
        params = pika.URLParameters(self.amqp_url)
        params.connection_attempts = 1
        connection = pika.BlockingConnection(params)
        try:
            channel = connection.channel()
            DEFAULT_TOPOLOGY.declare(channel, self.queue_type)
            # Confirms: a dead-letter or retry publish returns only once the broker holds it.
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.prefetch)
            for method, properties, body in channel.consume(QUEUE.name, inactivity_timeout=0.5):
                if self._stop.is_set():
                    break
                if method is None:
                    continue
                self._handle(channel, method, properties, body)
            channel.cancel()
        finally:
            if connection.is_open:
                connection.close()

    def _handle(
        self,
        channel: pika.adapters.blocking_connection.BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        # A retried message arrives under its retry queue's name; its headers keep the original.
        routing_key = original_routing_key(str(method.routing_key), properties)
        try:
            event = parse_status_event(routing_key, body)
        except BadStatusEventError as exc:
            log.warning("status event dead-lettered", extra={"reason": str(exc)})
            dead_letter(channel, QUEUE, body, properties, routing_key, str(exc))
            channel.basic_ack(method.delivery_tag)
            return
        with trace(event.trace_id):
            try:
                with self.sessions.begin() as session:
                    known = apply_status_event(session, event)
            except SQLAlchemyError as exc:
                log.warning(
                    "registry unavailable, status event put back",
                    extra={"error": str(exc), "pause_s": self._db_pause},
                )
                channel.basic_nack(method.delivery_tag, requeue=True)
                # connection.sleep keeps heartbeats flowing while we wait.
                channel.connection.sleep(self._db_pause)
                self._db_pause = min(self._db_pause * 2, MAX_BACKOFF_S)
                return
            self._db_pause = FIRST_DB_PAUSE_S
            if not known:
                dead_letter(channel, QUEUE, body, properties, routing_key, "unknown order")
            else:
                log.info(
                    "order status applied",
                    extra={"client": event.client, "order_id": event.order_id},
                )
            channel.basic_ack(method.delivery_tag)
        if known and self.on_applied is not None:
            self.on_applied(event)
