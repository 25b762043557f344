"""The AMQP topology as data, and one idempotent `declare(channel)`.

Every work queue is durable and gets:
- a dead-letter exchange `<queue>.dlx` (fanout) bound to `<queue>.dead`: a message rejected by a
  consumer, or dead-lettered explicitly with a reason, lands there with its original routing key;
- optional retry queues `<queue>.retry.<n>` with growing TTLs whose expired messages go back to the
  work queue (TTL + DLX), for transient failures.
Adding a device message kind is one row in `DEFAULT_TOPOLOGY`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

QueueType = Literal["classic", "quorum"]

TOPIC_EXCHANGE = "amq.topic"
# Headers a consumer sets when it dead-letters or retries a message itself.
HEADER_REASON = "x-iotgw-reason"
HEADER_ORIGINAL_ROUTING_KEY = "x-original-routing-key"
HEADER_ATTEMPT = "x-iotgw-attempt"


class Channel(Protocol):
    """The part of a pika channel that declaring needs (kept structural: no pika import here)."""

    def exchange_declare(self, exchange: str, exchange_type: Any = ..., **kwargs: Any) -> Any:
        """Declare an exchange."""

    def queue_declare(self, queue: str, **kwargs: Any) -> Any:
        """Declare a queue."""

    def queue_bind(self, queue: str, exchange: str, routing_key: str | None = ...) -> Any:
        """Bind a queue to an exchange."""


@dataclass(frozen=True)
class WorkQueue:
    """A durable queue fed from `amq.topic` by `bindings` (AMQP routing-key patterns)."""

    name: str
    bindings: tuple[str, ...]
    retry_delays_ms: tuple[int, ...] = ()

    @property
    def dead_letter_exchange(self) -> str:
        """Fanout exchange that dead-lettered messages go through."""
        return f"{self.name}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        """Where messages that cannot be processed end up, reason in their headers."""
        return f"{self.name}.dead"

    def retry_queue(self, attempt: int) -> str | None:
        """Delay queue for retry number `attempt` (1-based), or None when retries are used up."""
        if 1 <= attempt <= len(self.retry_delays_ms):
            return f"{self.name}.retry.{attempt}"
        return None


@dataclass(frozen=True)
class Topology:
    """Work queues bound to one topic exchange."""

    queues: tuple[WorkQueue, ...]
    exchange: str = TOPIC_EXCHANGE
    _index: dict[str, WorkQueue] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {q.name: q for q in self.queues})

    def queue(self, name: str) -> WorkQueue:
        """The work queue called `name`."""
        return self._index[name]

    def declare(self, channel: Channel, queue_type: QueueType = "classic") -> None:
        """Declare every exchange, queue and binding; declaring again changes nothing."""
        for q in self.queues:
            channel.exchange_declare(
                exchange=q.dead_letter_exchange, exchange_type="fanout", durable=True
            )
            channel.queue_declare(
                queue=q.dead_letter_queue, durable=True, arguments=_type_args(queue_type)
            )
            channel.queue_bind(queue=q.dead_letter_queue, exchange=q.dead_letter_exchange)
            channel.queue_declare(
                queue=q.name,
                durable=True,
                arguments={
                    **_type_args(queue_type),
                    "x-dead-letter-exchange": q.dead_letter_exchange,
                },
            )
            for pattern in q.bindings:
                channel.queue_bind(queue=q.name, exchange=self.exchange, routing_key=pattern)
            for attempt, delay in enumerate(q.retry_delays_ms, start=1):
                channel.queue_declare(
                    queue=f"{q.name}.retry.{attempt}",
                    durable=True,
                    arguments={
                        **_type_args(queue_type),
                        "x-message-ttl": delay,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": q.name,
                    },
                )


def _type_args(queue_type: QueueType) -> dict[str, Any]:
    if queue_type == "quorum":
        return {"x-queue-type": "quorum"}
    # Classic queues v2 keep memory flat with long backlogs (RabbitMQ 3.10+).
    return {"x-queue-version": 2}


TELEMETRY_QUEUE = "q.telemetry"
STATUS_QUEUE = "q.status"
STATE_QUEUE = "q.state"
PROVISIONING_QUEUE = "q.provisioning"
API_STATUS_QUEUE = "q.api.status"
CONFIG_QUEUE = "q.config"

DEFAULT_TOPOLOGY = Topology(
    queues=(
        WorkQueue(TELEMETRY_QUEUE, ("devices.*.*.telemetry",)),
        WorkQueue(STATUS_QUEUE, ("devices.*.*.status",)),
        WorkQueue(STATE_QUEUE, ("devices.*.*.state",)),
        WorkQueue(PROVISIONING_QUEUE, ("purchases.#",), retry_delays_ms=(1_000, 5_000, 30_000)),
        WorkQueue(API_STATUS_QUEUE, ("provisioning.*.*",)),
        # Desired configs recorded by the api, delivered as retained MQTT by the presence process.
        WorkQueue(CONFIG_QUEUE, ("config.*.*.desired",)),
    )
)
