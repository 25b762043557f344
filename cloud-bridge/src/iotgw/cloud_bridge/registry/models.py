"""Tables of the registry. Alembic migrations in `migrations/versions` create exactly these."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        """Normalise to UTC before writing."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the registry; use timezone-aware UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        """Attach UTC when the database returned a naive value."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the registry."""


class OrderStatus(StrEnum):
    """Life of an order: Pending (written) -> Provisioning (event confirmed) -> Ready | Failed."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    FAILED = "Failed"


class Client(Base):
    """A customer; `name` is a DNS label and names its namespace, vhost slice and topics."""

    __tablename__ = "clients"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKey(Base):
    """An API key of a client, stored as the sha256 of the key (the key is shown once)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client: Mapped[str] = mapped_column(ForeignKey("clients.name", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Order(Base):
    """A purchase of `quantity` modules of `product` by a client."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("client", "idempotency_key", name="uq_orders_client_idempotency_key"),
        Index("ix_orders_client_created", "client", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client: Mapped[str] = mapped_column(ForeignKey("clients.name", ondelete="CASCADE"))
    product: Mapped[str] = mapped_column(String(63))
    environment: Mapped[str] = mapped_column(String(16))
    archtype: Mapped[str] = mapped_column(String(16))
    hardware: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.PENDING.value)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    trace_id: Mapped[str] = mapped_column(String(36), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    ready_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Device(Base):
    """A module of a client: presence, desired and reported config, broker credential hash."""

    __tablename__ = "devices"
    __table_args__ = (
        ForeignKeyConstraint(["order_id"], ["orders.id"], ondelete="CASCADE"),
        Index("ix_devices_order", "order_id"),
    )

    client: Mapped[str] = mapped_column(
        ForeignKey("clients.name", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    product: Mapped[str] = mapped_column(String(63))
    order_id: Mapped[str] = mapped_column(String(32))
    online: Mapped[bool] = mapped_column(default=False)
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=-1)
    desired_version: Mapped[int] = mapped_column(Integer, default=0)
    desired_config: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    reported_version: Mapped[int] = mapped_column(Integer, default=0)
    reported_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    rejected_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rejected_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    credentials_rotated_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    @property
    def in_sync(self) -> bool:
        """True when the device reports the configuration version the cloud wants."""
        return self.reported_version == self.desired_version


class OutboxMessage(Base):
    """A message to publish, written in the same transaction as the change it announces."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(36), unique=True)
    exchange: Mapped[str] = mapped_column(String(255))
    routing_key: Mapped[str] = mapped_column(String(255))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str] = mapped_column(String(64), default="application/json")
    trace_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # Set for a purchase's `created` event: its confirmed publish moves the order to Provisioning.
    order_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
