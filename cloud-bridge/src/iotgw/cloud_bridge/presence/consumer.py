"""q.status and q.state into the registry: each message is acked after its commit.

Malformed messages and messages of devices the registry does not know are dead-lettered with
the reason; stale ones (an older epoch, an older report) are acked and change nothing; while the
database is down, consumption pauses and the message goes back to its queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.presence.apply import Outcome, apply_state, apply_status
from iotgw.cloud_bridge.presence.messages import BadMessageError, parse_state, parse_status
from iotgw.cloud_bridge.presence.metrics import PresenceMetrics
from iotgw.cloud_bridge.presence.settings import PresenceSettings
from iotgw.cloud_bridge.presence.worker import AmqpWorker
from iotgw.contracts.amqp import original_routing_key
from iotgw.contracts.topology import DEFAULT_TOPOLOGY, STATE_QUEUE, STATUS_QUEUE, WorkQueue

log = logging.getLogger(__name__)

STATUS = DEFAULT_TOPOLOGY.queue(STATUS_QUEUE)
STATE = DEFAULT_TOPOLOGY.queue(STATE_QUEUE)

Handler = Callable[[Session, str, bytes], Outcome]


def _status(session: Session, routing_key: str, body: bytes) -> Outcome:
    return apply_status(session, parse_status(routing_key, body))


def _state(session: Session, routing_key: str, body: bytes) -> Outcome:
    return apply_state(session, parse_state(routing_key, body))


HANDLERS: dict[str, Handler] = {STATUS.name: _status, STATE.name: _state}


class PresenceConsumer(AmqpWorker):
    """Applies device status and reported state to the registry."""

    queues = (STATUS, STATE)

    def __init__(
        self, settings: PresenceSettings, metrics: PresenceMetrics, sessions: sessionmaker[Session]
    ) -> None:
        super().__init__(settings, metrics)
        self.sessions = sessions

    def handle(
        self,
        queue: WorkQueue,
        channel: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        """Parse, apply in one transaction, then ack (or dead-letter, or pause and requeue)."""
        routing_key = original_routing_key(str(method.routing_key), properties)
        try:
            with self.sessions.begin() as session:
                outcome = HANDLERS[queue.name](session, routing_key, body)
        except BadMessageError as exc:
            self.dead_letter(channel, queue, method, properties, body, routing_key, str(exc))
            return
        except SQLAlchemyError as exc:
            self.requeue_after_pause(channel, queue, method, f"database: {exc}")
            return
        self.succeeded()
        if outcome is Outcome.UNKNOWN_DEVICE:
            reason = "unknown_device: not in the registry"
            self.dead_letter(channel, queue, method, properties, body, routing_key, reason)
            return
        channel.basic_ack(method.delivery_tag)
        self.metrics.messages.labels(queue.name, outcome.value).inc()
        log.debug("applied", extra={"routing_key": routing_key, "outcome": outcome.value})
