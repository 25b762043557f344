"""Every read and write of the registry: the api and the presence process both call these.

Functions take a `Session` and never commit: the caller owns the transaction, so an order, its
devices and its outbox message are written together or not at all. Every query about orders
and devices is scoped to one client; a row of another client is simply not found.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from iotgw.cloud_bridge.registry.events import desired_config_message, purchase_event
from iotgw.cloud_bridge.registry.models import (
    ApiKey,
    Client,
    Device,
    Order,
    OrderStatus,
    OutboxMessage,
    utcnow,
)
from iotgw.contracts import credentials
from iotgw.contracts.payloads import DesiredConfig
from iotgw.contracts.topics import PurchaseAction
from iotgw.contracts.topology import TOPIC_EXCHANGE

API_KEY_PREFIX = "iotgw_"
DEVICE_SUFFIX_BYTES = 5


class RegistryError(Exception):
    """Base of the registry's domain errors."""


class ClientExistsError(RegistryError):
    """A client of that name is already registered."""


class UnknownClientError(RegistryError):
    """No client of that name."""


class IdempotencyConflictError(RegistryError):
    """The Idempotency-Key was used before for a different request."""


class DeviceNotFoundError(RegistryError):
    """No such device for this client."""


class VersionMismatchError(RegistryError):
    """If-Match named a desired config version that is not the current one."""

    def __init__(self, current: int) -> None:
        super().__init__(f"current desired config version is {current}")
        self.current = current


# --- clients and API keys -------------------------------------------------------------------


def hash_api_key(key: str) -> str:
    """sha256 of an API key, hex.

    A plain fast hash is enough here: keys are 256 random bits, so there is no dictionary to
    try and brute force is out of reach; a slow password hash would only cost every request.
    """
    return hashlib.sha256(key.encode()).hexdigest()


def create_client(session: Session, name: str) -> tuple[Client, str]:
    """Register client `name` (a DNS label, checked by the caller) and issue its first API key.

    Returns the client and the key, which is shown once and stored only as its hash.
    """
    if session.get(Client, name) is not None:
        raise ClientExistsError(name)
    client = Client(name=name, created_at=utcnow())
    session.add(client)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise ClientExistsError(name) from exc
    return client, issue_api_key(session, name)


def issue_api_key(session: Session, client: str) -> str:
    """A new API key for `client` (the existing ones stay valid); returned once."""
    if session.get(Client, client) is None:
        raise UnknownClientError(client)
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(client=client, key_hash=hash_api_key(key), prefix=key[:12], created_at=utcnow())
    )
    session.flush()
    return key


def client_for_api_key(session: Session, key: str) -> str | None:
    """The client owning `key`, or None for an unknown or revoked key."""
    row = session.execute(
        select(ApiKey.client).where(
            ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None)
        )
    ).first()
    return row[0] if row else None


# --- orders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRequest:
    """What a client buys (already validated against the contracts)."""

    product: str
    environment: str
    archtype: str
    hardware: str
    quantity: int

    def fingerprint(self) -> str:
        """Stable hash of the request, to tell a retry from a different request."""
        canonical = json.dumps(self.__dict__, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class PlacedOrder:
    """Result of `place_order`: the order, and the device secrets when it was created now."""

    order: Order
    created: bool
    secrets: dict[str, str] = field(default_factory=dict)


def place_order(
    session: Session,
    client: str,
    request: OrderRequest,
    idempotency_key: str | None = None,
) -> PlacedOrder:
    """Write an order, its devices (each with a fresh secret) and its purchase event.

    With an `idempotency_key` already used by this client for the same request, the first
    order is returned (`created` False, no secrets) and nothing is written; for a different
    request, IdempotencyConflictError. Two concurrent calls with one key race on a unique index:
    the loser rolls back its savepoint and returns the winner's order.
    """
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        existing = _order_by_key(session, client, idempotency_key)
        if existing is not None:
            return _replayed(existing, fingerprint)
    now = utcnow()
    order = Order(
        id=uuid.uuid4().hex,
        client=client,
        product=request.product,
        environment=request.environment,
        archtype=request.archtype,
        hardware=request.hardware,
        quantity=request.quantity,
        status=OrderStatus.PENDING.value,
        trace_id=str(uuid.uuid4()),
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        created_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(order)
            session.flush()
    except IntegrityError:
        if idempotency_key is None:
            raise
        winner = _order_by_key(session, client, idempotency_key)
        if winner is None:
            raise
        return _replayed(winner, fingerprint)
    issued: dict[str, str] = {}
    devices = []
    prefix = request.product.lower()[:40].rstrip("-")
    for _ in range(request.quantity):
        device_id = f"{prefix}-{secrets.token_hex(DEVICE_SUFFIX_BYTES)}"
        secret = credentials.new_secret()
        issued[device_id] = secret
        devices.append(
            Device(
                client=client,
                id=device_id,
                product=request.product,
                order_id=order.id,
                online=False,
                epoch=-1,
                desired_version=0,
                reported_version=0,
                password_hash=credentials.rabbit_password_hash(secret),
                created_at=now,
            )
        )
    session.add_all(devices)
    routing_key, body = purchase_event(order, devices)
    enqueue(session, routing_key, body, trace_id=order.trace_id, order_id=order.id)
    session.flush()
    return PlacedOrder(order=order, created=True, secrets=issued)


def _order_by_key(session: Session, client: str, key: str) -> Order | None:
    return session.scalars(
        select(Order).where(Order.client == client, Order.idempotency_key == key)
    ).first()


def _replayed(order: Order, fingerprint: str) -> PlacedOrder:
    if order.request_hash != fingerprint:
        raise IdempotencyConflictError("Idempotency-Key was already used for a different order")
    return PlacedOrder(order=order, created=False)


def get_order(session: Session, client: str, order_id: str) -> Order | None:
    """The order `order_id` of `client`, or None (also for another client's order)."""
    return session.scalars(
        select(Order).where(Order.client == client, Order.id == order_id)
    ).first()


def list_orders(session: Session, client: str, *, limit: int = 100, offset: int = 0) -> list[Order]:
    """A client's orders, newest first."""
    return list(
        session.scalars(
            select(Order)
            .where(Order.client == client)
            .order_by(Order.created_at.desc(), Order.id)
            .limit(limit)
            .offset(offset)
        )
    )


def order_devices(session: Session, client: str, order_id: str) -> list[Device]:
    """Devices bought with one order."""
    return list(
        session.scalars(
            select(Device)
            .where(Device.client == client, Device.order_id == order_id)
            .order_by(Device.id)
        )
    )


def apply_provisioning_outcome(
    session: Session,
    client: str,
    order_id: str,
    *,
    ready: bool,
    reason: str | None = None,
) -> Order | None:
    """Apply a provisioner status event: Ready, or Failed with `reason`.

    Idempotent and order-tolerant: a duplicate changes nothing, a Ready is final (a late
    failure of an earlier attempt does not undo it), a Failed order may still become Ready
    when a retry succeeds. Returns the order, or None when the client has no such order.
    """
    order = session.scalars(
        select(Order).where(Order.client == client, Order.id == order_id).with_for_update()
    ).first()
    if order is None:
        return None
    if order.status == OrderStatus.READY.value:
        return order
    now = utcnow()
    if ready:
        order.status = OrderStatus.READY.value
        order.reason = None
        order.ready_at = now
    else:
        order.status = OrderStatus.FAILED.value
        order.reason = (reason or "provisioning failed")[:2000]
    order.updated_at = now
    session.flush()
    return order


def order_for_trace(session: Session, client: str, trace_id: str) -> Order | None:
    """The order of `client` carrying `trace_id` (status events without an order id)."""
    return session.scalars(
        select(Order).where(Order.client == client, Order.trace_id == trace_id)
    ).first()


# --- devices --------------------------------------------------------------------------------


def list_devices(
    session: Session,
    client: str,
    *,
    order_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Device]:
    """A client's devices, optionally of one order, by id."""
    query = select(Device).where(Device.client == client)
    if order_id is not None:
        query = query.where(Device.order_id == order_id)
    return list(session.scalars(query.order_by(Device.id).limit(limit).offset(offset)))


def get_device(session: Session, client: str, device_id: str) -> Device | None:
    """Device `device_id` of `client`, or None (also for another client's device)."""
    return session.get(Device, (client, device_id))


def _locked_device(session: Session, client: str, device_id: str) -> Device | None:
    return session.scalars(
        select(Device).where(Device.client == client, Device.id == device_id).with_for_update()
    ).first()


def set_desired_config(
    session: Session,
    client: str,
    device_id: str,
    expected_version: int,
    settings: dict[str, Any],
) -> DesiredConfig:
    """Record a new desired config (version `expected_version` + 1) and queue its delivery.

    `expected_version` is the If-Match value: when it is not the current desired version,
    VersionMismatchError (the caller answers 412). `settings` are DesiredConfig's fields without
    `version`; they are validated here (pydantic ValidationError on bad values).
    """
    device = _locked_device(session, client, device_id)
    if device is None:
        raise DeviceNotFoundError(device_id)
    if device.desired_version != expected_version:
        raise VersionMismatchError(device.desired_version)
    config = DesiredConfig.model_validate({**settings, "version": device.desired_version + 1})
    device.desired_version = config.version
    device.desired_config = config.model_dump(mode="json")
    routing_key, body = desired_config_message(client, device_id, config)
    enqueue(session, routing_key, body, trace_id=None)
    session.flush()
    return config


def desired_config(session: Session, client: str, device_id: str) -> DesiredConfig | None:
    """The device's current desired config, or None when none was ever set or no such device."""
    device = get_device(session, client, device_id)
    if device is None or device.desired_config is None:
        return None
    return DesiredConfig.model_validate(device.desired_config)


def rotate_credentials(session: Session, client: str, device_id: str) -> str:
    """Give the device a new secret (returned once); the provisioner updates its broker user.

    The new hash travels in a `purchases.<client>.credentials` event through the outbox.
    """
    device = _locked_device(session, client, device_id)
    if device is None:
        raise DeviceNotFoundError(device_id)
    order = session.get(Order, device.order_id)
    if order is None:  # the foreign key makes this impossible; keep mypy and readers sure
        raise DeviceNotFoundError(device_id)
    secret = credentials.new_secret()
    device.password_hash = credentials.rabbit_password_hash(secret)
    device.credentials_rotated_at = utcnow()
    routing_key, body = purchase_event(order, [device], PurchaseAction.CREDENTIALS)
    enqueue(session, routing_key, body, trace_id=order.trace_id)
    session.flush()
    return secret


def _as_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def record_status(
    session: Session, client: str, device: str, online: bool, epoch: int, ts: float
) -> bool:
    """Apply a presence message (`Status`: online/offline, connection epoch, Unix time `ts`).

    A stale offline from an older epoch never overrides a newer online: a message from an
    older epoch is ignored; within one epoch `offline` is final (the Last Will ends the
    connection, so a redelivered `online` of that epoch cannot revive it); a newer epoch wins.
    `last_seen` only moves forward. Returns True when the row changed, False when the message
    was stale or the device is unknown.
    """
    row = _locked_device(session, client, device)
    if row is None:
        return False
    if epoch < row.epoch or (epoch == row.epoch and online and not row.online):
        return False
    seen = _as_datetime(ts)
    changed = row.online != online or row.epoch != epoch
    row.online = online
    row.epoch = epoch
    if row.last_seen is None or seen > row.last_seen:
        row.last_seen = seen
        changed = True
    session.flush()
    return changed


def record_state(
    session: Session,
    client: str,
    device: str,
    applied_version: int,
    ts: float,
    rejected_version: int | None = None,
    reason: str | None = None,
) -> bool:
    """Apply a device's reported state (`ReportedState`): the config version in force.

    Reports older than the last applied one (by `ts`) are ignored. A rejection keeps
    `rejected_version` and `reason` until a later report applies a version at least as new.
    Returns True when applied, False when stale or the device is unknown.
    """
    row = _locked_device(session, client, device)
    if row is None:
        return False
    at = _as_datetime(ts)
    if row.reported_at is not None and at < row.reported_at:
        return False
    row.reported_version = applied_version
    row.reported_at = at
    if rejected_version is not None:
        row.rejected_version = rejected_version
        row.rejected_reason = (reason or "rejected")[:1000]
    elif row.rejected_version is not None and applied_version >= row.rejected_version:
        row.rejected_version = None
        row.rejected_reason = None
    session.flush()
    return True


# --- operator view --------------------------------------------------------------------------


@dataclass
class ClientOverview:
    """One row of the operator's client list."""

    name: str
    created_at: datetime
    products: list[str]
    hardware: list[str]
    deployed_at: datetime | None
    status: str | None
    devices: int
    orders: list[Order]


def client_overview(session: Session) -> list[ClientOverview]:
    """Every client with products, hardware, first deployment, latest order status."""
    clients = list(session.scalars(select(Client).order_by(Client.name)))
    orders: dict[str, list[Order]] = {c.name: [] for c in clients}
    for order in session.scalars(select(Order).order_by(Order.created_at.desc(), Order.id)):
        orders.setdefault(order.client, []).append(order)
    counts: dict[str, int] = {
        name: int(count)
        for name, count in session.execute(
            select(Device.client, func.count()).group_by(Device.client)
        )
    }
    rows = []
    for c in clients:
        mine = orders[c.name]
        ready = [o.ready_at for o in mine if o.ready_at is not None]
        rows.append(
            ClientOverview(
                name=c.name,
                created_at=c.created_at,
                products=sorted({o.product for o in mine}),
                hardware=sorted({o.hardware for o in mine}),
                deployed_at=min(ready) if ready else None,
                status=mine[0].status if mine else None,
                devices=counts.get(c.name, 0),
                orders=mine,
            )
        )
    return rows


# --- outbox ---------------------------------------------------------------------------------


def enqueue(
    session: Session,
    routing_key: str,
    body: bytes,
    *,
    trace_id: str | None,
    order_id: str | None = None,
    exchange: str = TOPIC_EXCHANGE,
) -> OutboxMessage:
    """Add a message to the outbox in the caller's transaction."""
    message = OutboxMessage(
        message_id=str(uuid.uuid4()),
        exchange=exchange,
        routing_key=routing_key,
        body=body,
        content_type="application/json",
        trace_id=trace_id,
        order_id=order_id,
        created_at=utcnow(),
        attempts=0,
    )
    session.add(message)
    return message


def claim_unsent(session: Session, limit: int = 100) -> list[OutboxMessage]:
    """The oldest unsent messages, locked for this transaction (PostgreSQL skips rows another
    relay holds, so several relays never publish the same row at once)."""
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None))
            .order_by(OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def mark_sent(session: Session, message: OutboxMessage) -> None:
    """The broker confirmed `message`: mark it sent; a purchase's order is now Provisioning."""
    now = utcnow()
    message.sent_at = now
    message.attempts += 1
    message.last_error = None
    if message.order_id is not None:
        session.execute(
            update(Order)
            .where(Order.id == message.order_id, Order.status == OrderStatus.PENDING.value)
            .values(status=OrderStatus.PROVISIONING.value, updated_at=now)
        )
    session.flush()


def mark_failed(session: Session, message: OutboxMessage, error: str) -> None:
    """Publishing `message` failed; it stays unsent for the next round."""
    message.attempts += 1
    message.last_error = error[:1000]
    session.flush()


def outbox_backlog(session: Session) -> int:
    """How many messages wait to be published."""
    return int(
        session.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
        )
        or 0
    )
