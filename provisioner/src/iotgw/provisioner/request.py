"""Turn a raw AMQP delivery into a validated request, before anything is applied.

Everything that later reaches Kubernetes, RabbitMQ, InfluxDB or the file system is checked here:
the routing key, the envelope (DNS-label client and namespace), the product against the catalog,
the device list and each password hash. A refusal carries the reason and, when the client can be
told safely, a reply envelope so a `failed` status can still be published.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from iotgw.contracts.envelope import PRODUCT_RE, Envelope, Environment, Hardware, describe_error
from iotgw.contracts.payloads import DeviceCredential, PurchaseData
from iotgw.contracts.topics import PurchaseAction, PurchaseTopic, TopicError
from iotgw.provisioner.catalog import Catalog

ORDER_ID_MAX = 64
HASH_BYTES = 36  # RabbitMQ sha256: 4 bytes of salt + 32 bytes of digest
RESERVED_PREFIXES = ("kube-", "openshift-")
RESERVED_NAMES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class StackSpec:
    """What a client's stack is rendered from (no transport, no I/O)."""

    client: str
    product: str
    environment: Environment
    hardware: Hardware
    trace_id: str


@dataclass(frozen=True)
class PurchaseRequest:
    """A validated purchase event."""

    action: PurchaseAction
    envelope: Envelope
    order_id: str | None
    devices: tuple[DeviceCredential, ...]

    @property
    def client(self) -> str:
        """The client whose stack this is."""
        return self.envelope.client

    @property
    def spec(self) -> StackSpec:
        """What the Kubernetes objects are rendered from."""
        env = self.envelope
        return StackSpec(
            client=env.client,
            product=env.product,
            environment=env.environment,
            hardware=env.hardware,
            trace_id=str(env.trace_id),
        )


class InvalidPurchaseError(Exception):
    """Refused input: dead-letter it; publish `failed` on `reply` when there is one."""

    def __init__(self, reason: str, reply: Envelope | None, order_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply
        self.order_id = order_id


def parse_purchase(
    routing_key: str, body: bytes, catalog: Catalog, platform_ns: str
) -> PurchaseRequest:
    """Validate a delivery; raise InvalidPurchaseError naming the first problem."""
    try:
        topic = PurchaseTopic.from_routing_key(routing_key)
    except TopicError as exc:
        raise InvalidPurchaseError(f"routing key {routing_key!r}: {exc}", None) from exc

    raw = _json_object(body)
    try:
        envelope = Envelope.from_json(body)
    except ValidationError as exc:
        reply = _fallback_reply(topic.client, raw)
        raise InvalidPurchaseError(describe_error(exc), reply, _order_id(raw)) from exc

    def refuse(reason: str) -> InvalidPurchaseError:
        reply = envelope if envelope.client == topic.client else None
        return InvalidPurchaseError(reason, reply, _order_id({"Data": envelope.data}))

    if envelope.client != topic.client:
        raise refuse(f"routing key client {topic.client!r} differs from client {envelope.client!r}")
    if envelope.namespace != envelope.client:
        raise refuse("namespace must equal client")
    client = envelope.client
    if client in RESERVED_NAMES or client == platform_ns or client.startswith(RESERVED_PREFIXES):
        raise refuse(f"client {envelope.client!r} is a reserved name")
    if topic.action is not PurchaseAction.CANCELLED and envelope.product not in catalog.products:
        raise refuse(f"unknown product {envelope.product!r}")
    if topic.action is PurchaseAction.CANCELLED:
        order = (envelope.data or {}).get("order_id")
        return PurchaseRequest(
            topic.action, envelope, order if isinstance(order, str) else None, ()
        )
    try:
        data = PurchaseData.model_validate(envelope.data or {})
    except ValidationError as exc:
        raise refuse("Data." + describe_error(exc)) from exc
    ids = [d.id for d in data.devices]
    if len(set(ids)) != len(ids):
        raise refuse("Data.devices: device ids must be unique")
    for device in data.devices:
        if not _is_rabbit_hash(device.password_hash):
            raise refuse(
                f"Data.devices: password_hash of {device.id!r} is not a RabbitMQ sha256 hash"
            )
    return PurchaseRequest(topic.action, envelope, data.order_id, tuple(data.devices))


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _order_id(raw: dict[str, Any]) -> str | None:
    """`Data.order_id` of a refused purchase when it is a plausible id, so the api can match it."""
    data = raw.get("Data")
    order = data.get("order_id") if isinstance(data, dict) else None
    return order if isinstance(order, str) and 0 < len(order) <= ORDER_ID_MAX else None


def _is_rabbit_hash(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == HASH_BYTES
    except (binascii.Error, ValueError):
        return False


def _fallback_reply(client: str, raw: dict[str, Any]) -> Envelope | None:
    """A reply envelope for a body that failed validation, if its client is unambiguous.

    The client comes from the (validated) routing key; a body naming another client makes it
    ambiguous, and then only the dead-letter queue hears about it.
    """
    body_client = raw.get("client")
    if body_client is not None and body_client != client:
        return None
    attrs = raw.get("MessageAttributes")
    trace = attrs.get("trace_id") if isinstance(attrs, dict) else None
    try:
        trace_id = uuid.UUID(str(trace)) if trace is not None else uuid.uuid4()
    except ValueError:
        trace_id = uuid.uuid4()
    product = raw.get("product")
    if not (isinstance(product, str) and PRODUCT_RE.fullmatch(product)):
        product = "unknown"
    return Envelope.new(
        client=client,
        product=product,
        app="provisioner",
        action="refused",
        publisher="iotgw-provisioner",
        trace_id=trace_id,
    )
