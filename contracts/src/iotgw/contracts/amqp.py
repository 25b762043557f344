"""pika helpers for consumers: dead-letter with a reason, retry through the delay queues.

Needs the `amqp` extra (pika). The channel must be in confirm mode
(`channel.confirm_delivery()`), so a publish here returns only once the broker holds the
message; the caller acks the original afterwards, and nothing is lost between the two.
"""

from __future__ import annotations

from typing import Any

import pika

from iotgw.contracts.topology import (
    HEADER_ATTEMPT,
    HEADER_ORIGINAL_ROUTING_KEY,
    HEADER_REASON,
    WorkQueue,
)

MAX_REASON_CHARS = 1000


def original_routing_key(routing_key: str, properties: pika.BasicProperties) -> str:
    """The routing key a message first had: retries travel under the retry queue's name."""
    headers = properties.headers or {}
    value = headers.get(HEADER_ORIGINAL_ROUTING_KEY)
    return value.decode() if isinstance(value, bytes) else str(value or routing_key)


def attempt_of(properties: pika.BasicProperties) -> int:
    """How many times this message has been retried so far."""
    value = (properties.headers or {}).get(HEADER_ATTEMPT, 0)
    return int(value) if isinstance(value, int | str) else 0


def dead_letter(
    channel: Any,
    queue: WorkQueue,
    body: bytes,
    properties: pika.BasicProperties,
    routing_key: str,
    reason: str,
) -> None:
    """Publish `body` to the queue's dead-letter queue with the reason and original key."""
    original = original_routing_key(routing_key, properties)
    headers = dict(properties.headers or {})
    headers[HEADER_REASON] = reason[:MAX_REASON_CHARS]
    headers[HEADER_ORIGINAL_ROUTING_KEY] = original
    channel.basic_publish(
        exchange=queue.dead_letter_exchange,
        routing_key=original,
        body=body,
        properties=_copy(properties, headers),
    )


def retry_later(
    channel: Any,
    queue: WorkQueue,
    body: bytes,
    properties: pika.BasicProperties,
    routing_key: str,
) -> bool:
    """Send `body` to the next delay queue; False when its retries are used up."""
    attempt = attempt_of(properties) + 1
    target = queue.retry_queue(attempt)
    if target is None:
        return False
    headers = dict(properties.headers or {})
    headers[HEADER_ATTEMPT] = attempt
    headers[HEADER_ORIGINAL_ROUTING_KEY] = original_routing_key(routing_key, properties)
    channel.basic_publish(
        exchange="", routing_key=target, body=body, properties=_copy(properties, headers)
    )
    return True


def _copy(properties: pika.BasicProperties, headers: dict[str, Any]) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=properties.content_type,
        correlation_id=properties.correlation_id,
        message_id=properties.message_id,
        timestamp=properties.timestamp,
        delivery_mode=pika.DeliveryMode.Persistent,
        headers=headers,
    )
