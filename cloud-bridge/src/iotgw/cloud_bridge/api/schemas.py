"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from iotgw.cloud_bridge.registry.models import Device, Order
from iotgw.cloud_bridge.registry.repository import ClientOverview
from iotgw.contracts.credentials import device_client_id, device_username
from iotgw.contracts.envelope import Archtype, Environment, Hardware, Product
from iotgw.contracts.names import DnsLabel


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderCreate(_In):
    """Buy `quantity` modules of `product` for the caller's client."""

    product: Product
    environment: Environment
    archtype: Archtype
    hardware: Hardware
    quantity: int = Field(ge=1, le=1000)


class OrderOut(BaseModel):
    """An order and where it stands."""

    id: str
    client: str
    product: str
    environment: str
    archtype: str
    hardware: str
    quantity: int
    status: str = Field(description="Pending, Provisioning, Ready or Failed")
    reason: str | None = Field(description="why it failed, when it did")
    trace_id: str
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        """From the registry row."""
        return cls(
            id=order.id,
            client=order.client,
            product=order.product,
            environment=order.environment,
            archtype=order.archtype,
            hardware=order.hardware,
            quantity=order.quantity,
            status=order.status,
            reason=order.reason,
            trace_id=order.trace_id,
            created_at=order.created_at,
            updated_at=order.updated_at,
            ready_at=order.ready_at,
        )


class DeviceSecret(BaseModel):
    """A device's broker credentials; the secret is shown this once and stored only hashed."""

    id: str
    mqtt_username: str
    mqtt_client_id: str
    secret: str

    @classmethod
    def of(cls, client: str, device: str, secret: str) -> DeviceSecret:
        """Credentials of `device`."""
        return cls(
            id=device,
            mqtt_username=device_username(client, device),
            mqtt_client_id=device_client_id(client, device),
            secret=secret,
        )


class OrderCreated(OrderOut):
    """A new order with its devices' secrets (empty when this answers a retried request)."""

    devices: list[DeviceSecret]


class DeviceOut(BaseModel):
    """A device: presence, desired and reported configuration."""

    id: str
    client: str
    product: str
    order_id: str
    online: bool
    last_seen: datetime | None
    epoch: int
    desired_version: int
    desired_config: dict[str, Any] | None
    reported_version: int
    in_sync: bool
    rejected_version: int | None
    rejected_reason: str | None
    mqtt_username: str
    mqtt_client_id: str
    created_at: datetime

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        """From the registry row."""
        return cls(
            id=device.id,
            client=device.client,
            product=device.product,
            order_id=device.order_id,
            online=device.online,
            last_seen=device.last_seen,
            epoch=device.epoch,
            desired_version=device.desired_version,
            desired_config=device.desired_config,
            reported_version=device.reported_version,
            in_sync=device.in_sync,
            rejected_version=device.rejected_version,
            rejected_reason=device.rejected_reason,
            mqtt_username=device_username(device.client, device.id),
            mqtt_client_id=device_client_id(device.client, device.id),
            created_at=device.created_at,
        )


class ConfigUpdate(_In):
    """A desired configuration (the version is assigned by the server).

    Limits are those of the contracts' DesiredConfig; a value outside them is a 422.
    """

    sampling_interval_s: float = 10.0
    enabled_sensors: list[str] | None = None
    thresholds: dict[str, float] = Field(default_factory=dict)


class TelemetryOut(BaseModel):
    """The latest reading of a device stored in InfluxDB."""

    device: str
    time: str
    metrics: dict[str, Any]


class ClientCreate(_In):
    """A new client; its name becomes its namespace and topic segment."""

    name: DnsLabel


class ClientCreated(BaseModel):
    """A client and its API key, shown this once."""

    name: str
    api_key: str


class ApiKeyOut(BaseModel):
    """A new API key, shown this once."""

    client: str
    api_key: str


class ClientRow(BaseModel):
    """One client in the operator's list."""

    name: str
    created_at: datetime
    products: list[str]
    hardware: list[str]
    deployed_at: datetime | None = Field(description="when its first order became Ready")
    status: str | None = Field(description="status of its latest order")
    devices: int
    orders: list[OrderOut]

    @classmethod
    def of(cls, row: ClientOverview) -> ClientRow:
        """From the repository's overview."""
        return cls(
            name=row.name,
            created_at=row.created_at,
            products=row.products,
            hardware=row.hardware,
            deployed_at=row.deployed_at,
            status=row.status,
            devices=row.devices,
            orders=[OrderOut.of(o) for o in row.orders],
        )
