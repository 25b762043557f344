"""The JSON event envelope every cloud event carries, wire-compatible with the original system.

Wire keys stay exactly as the original producers wrote them (`MessageAttributes`, `origing`,
a string `retrace_intent`); Python code uses clean snake_case names through pydantic aliases.
"""

from __future__ import annotations

import re
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from iotgw.contracts.names import DnsLabel

Environment = Literal["Development", "Stage", "Production"]
Archtype = Literal["SaaS", "Edge", "On-Prem"]
Hardware = Literal["Classic", "Dedicated"]

PRODUCT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
EVENT_SEGMENT_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The original producers wrote `date +%Y.%m.%d.%H.%M.%N`; some omitted zero padding (the
# example has day "2"), so parsing accepts one or two digits and writing always pads.
PUBLISHED_ON_RE = re.compile(
    r"^(?P<y>\d{4})\.(?P<mo>\d{1,2})\.(?P<d>\d{1,2})\.(?P<h>\d{1,2})\.(?P<mi>\d{1,2})\.(?P<ns>\d{9})$"
)


def _check_product(value: str) -> str:
    if not PRODUCT_RE.fullmatch(value):
        raise ValueError("product must be letters, digits and '-', 1 to 63 characters")
    return value


Product = Annotated[str, AfterValidator(_check_product)]


def _parse_retrace(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("retrace_intent must be a non-negative integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isdigit():
        number = int(value)
    else:
        raise ValueError("retrace_intent must be a non-negative integer (as a string on the wire)")
    if number < 0:
        raise ValueError("retrace_intent must be a non-negative integer")
    return number


RetraceCount = Annotated[
    int,
    PlainSerializer(str, return_type=str, when_used="always"),
]


def format_published_on(moment: datetime | None = None) -> str:
    """Render a timestamp the way the original producers did: `%Y.%m.%d.%H.%M.%N` in UTC."""
    if moment is None:
        ns = time.time_ns()
        moment = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
        frac = ns % 1_000_000_000
    else:
        moment = moment.astimezone(UTC)
        frac = moment.microsecond * 1000
    return f"{moment:%Y.%m.%d.%H.%M}.{frac:09d}"


def parse_published_on(value: str) -> datetime:
    """Parse a `published_on` string into an aware UTC datetime (seconds are not carried)."""
    match = PUBLISHED_ON_RE.fullmatch(value)
    if match is None:
        raise ValueError("published_on must look like YYYY.MM.DD.HH.MM.NNNNNNNNN")
    try:
        return datetime(
            int(match["y"]),
            int(match["mo"]),
            int(match["d"]),
            int(match["h"]),
            int(match["mi"]),
            microsecond=int(match["ns"]) // 1000,
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise ValueError(f"published_on is not a real date and time: {exc}") from exc


class _Wire(BaseModel):
    """Base for wire models: populate by Python name or wire alias, reject unknown keys."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class EventType(_Wire):
    """`{"Type": "String", "Value": "<company>.<app>.<messageType>.<client>.<action>"}`."""

    type: Literal["String"] = Field(default="String", alias="Type")
    value: str = Field(alias="Value")

    @field_validator("value")
    @classmethod
    def _five_segments(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) != 5 or not all(EVENT_SEGMENT_RE.fullmatch(p) for p in parts):
            raise ValueError(
                "event_type must be <company>.<app>.<messageType>.<client>.<action>, "
                "each a lowercase DNS label"
            )
        return value

    @property
    def company(self) -> str:
        """First segment: the company that owns the event."""
        return self.value.split(".")[0]

    @property
    def app(self) -> str:
        """Second segment: the publishing application."""
        return self.value.split(".")[1]

    @property
    def message_type(self) -> str:
        """Third segment: the kind of message."""
        return self.value.split(".")[2]

    @property
    def client(self) -> str:
        """Fourth segment: the client the event concerns."""
        return self.value.split(".")[3]

    @property
    def action(self) -> str:
        """Fifth segment: what happened."""
        return self.value.split(".")[4]


class MessageAttributes(_Wire):
    """Routing and tracing attributes of an event."""

    event_type: EventType
    published_on: str
    trace_id: uuid.UUID
    retrace_intent: Annotated[RetraceCount, Field(ge=0)] = 0

    @field_validator("published_on")
    @classmethod
    def _published_on_shape(cls, value: str) -> str:
        parse_published_on(value)
        return value

    @field_validator("retrace_intent", mode="before")
    @classmethod
    def _retrace(cls, value: object) -> int:
        return _parse_retrace(value)

    @property
    def published_at(self) -> datetime:
        """`published_on` as an aware datetime."""
        return parse_published_on(self.published_on)


class Metadata(_Wire):
    """Who published the event and from where."""

    host: str = Field(min_length=1, max_length=253)
    origin: str = Field(alias="origing", min_length=1, max_length=63)
    publisher: str = Field(min_length=1, max_length=63)


class Envelope(_Wire):
    """The event envelope of the original system, validated.

    `data` is an optional object for event-specific fields (an order id, a failure reason); the
    original consumers ignore keys they do not know, and it is left out of the JSON when empty.
    """

    client: DnsLabel
    namespace: DnsLabel
    environment: Environment
    archtype: Archtype
    hardware: Hardware
    product: Product
    message_attributes: MessageAttributes = Field(alias="MessageAttributes")
    metadata: Metadata = Field(alias="Metadata")
    data: dict[str, Any] | None = Field(default=None, alias="Data")

    @model_validator(mode="after")
    def _event_names_client(self) -> Self:
        if self.message_attributes.event_type.client != self.client:
            raise ValueError("event_type's client segment must equal client")
        return self

    @property
    def trace_id(self) -> uuid.UUID:
        """Shortcut to `message_attributes.trace_id`."""
        return self.message_attributes.trace_id

    @classmethod
    def new(
        cls,
        *,
        client: str,
        product: str,
        environment: Environment = "Development",
        archtype: Archtype = "SaaS",
        hardware: Hardware = "Classic",
        app: str,
        message_type: str = "event",
        action: str,
        publisher: str,
        company: str = "mycompany",
        origin: str = "Cloud",
        namespace: str | None = None,
        trace_id: uuid.UUID | None = None,
        retrace_intent: int = 0,
        data: dict[str, Any] | None = None,
        host: str | None = None,
    ) -> Envelope:
        """Build a valid envelope, filling trace_id, published_on and Metadata for the caller."""
        return cls.model_validate(
            {
                "client": client,
                "namespace": namespace or client,
                "environment": environment,
                "archtype": archtype,
                "hardware": hardware,
                "product": product,
                "MessageAttributes": {
                    "event_type": {
                        "Type": "String",
                        "Value": f"{company}.{app}.{message_type}.{client}.{action}",
                    },
                    "published_on": format_published_on(),
                    "trace_id": str(trace_id or uuid.uuid4()),
                    "retrace_intent": str(retrace_intent),
                },
                "Metadata": {
                    "host": host or socket.gethostname(),
                    "origing": origin,
                    "publisher": publisher,
                },
                "Data": data,
            }
        )

    def derive(self, *, app: str, action: str, publisher: str, **data: Any) -> Envelope:
        """A follow-up event about the same client and trace (a status reply, for example)."""
        et = self.message_attributes.event_type
        return Envelope.new(
            client=self.client,
            namespace=self.namespace,
            product=self.product,
            environment=self.environment,
            archtype=self.archtype,
            hardware=self.hardware,
            company=et.company,
            app=app,
            message_type=et.message_type,
            action=action,
            publisher=publisher,
            trace_id=self.trace_id,
            data=data or None,
        )

    def with_retry(self) -> Envelope:
        """The same event with `retrace_intent` counted up by one."""
        attrs = self.message_attributes.model_copy(
            update={"retrace_intent": self.message_attributes.retrace_intent + 1}
        )
        return self.model_copy(update={"message_attributes": attrs})

    def to_json(self) -> bytes:
        """Serialise with the original wire keys."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        """Parse and validate; raises `pydantic.ValidationError` naming the bad field."""
        return cls.model_validate_json(raw)


def describe_error(exc: ValidationError) -> str:
    """One line naming each invalid field by its wire path, for logs and dead-letter headers."""
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
