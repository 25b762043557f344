"""A batch of deliveries: the points to write and the messages to dead-letter, in tag order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Delivery:
    """What is needed to ack or dead-letter one message later."""

    tag: int
    routing_key: str
    properties: Any
    body: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that will not be written, with the reason category and its detail."""

    delivery: Delivery
    category: str
    detail: str


@dataclass(slots=True)
class Batch:
    """Deliveries collected since the last flush.

    `lines[i]` is the point of `sources[i]`; `extra` are the ingest's own health points, written
    along with the batch and tied to no delivery. `last_tag` is the highest delivery tag, which
    the batch acks with `multiple=True` once written.
    """

    opened_at: float
    lines: list[bytes] = field(default_factory=list)
    sources: list[Delivery] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    extra: list[bytes] = field(default_factory=list)
    last_tag: int = 0
    newest_ns: int = 0
    skew_corrected: int = 0

    def add_point(self, delivery: Delivery, line: bytes, time_ns: int) -> None:
        """Queue one point for writing."""
        self.lines.append(line)
        self.sources.append(delivery)
        self.last_tag = delivery.tag
        self.newest_ns = max(self.newest_ns, time_ns)

    def add_dead(self, delivery: Delivery, category: str, detail: str) -> None:
        """Queue one message for the dead-letter queue."""
        self.dead.append(DeadLetter(delivery, category, detail))
        self.last_tag = delivery.tag

    @property
    def received(self) -> int:
        """Deliveries in this batch."""
        return len(self.sources) + len(self.dead)

    def __len__(self) -> int:
        return self.received + len(self.extra)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What writing a batch came to: lines InfluxDB refused for good, and how long it took."""

    rejected: list[tuple[int, str]]
    write_s: float
    requests: int
