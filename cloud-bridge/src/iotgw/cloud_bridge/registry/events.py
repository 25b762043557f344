"""The messages the registry writes to its outbox, built from the contracts.

Kept apart from the repository so the wire shape of each event is in one small place.
"""

from __future__ import annotations

import uuid

from iotgw.cloud_bridge.registry.models import Device, Order
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import DesiredConfig, DeviceCredential, PurchaseData
from iotgw.contracts.topics import PurchaseAction, PurchaseTopic, desired_config_routing_key

APP = "api"


def purchase_event(
    order: Order, devices: list[Device], action: PurchaseAction = PurchaseAction.CREATED
) -> tuple[str, bytes]:
    """Routing key and body of `purchases.<client>.<action>` for `order` and `devices`.

    Devices carry their password hash (never a secret) for the provisioner's broker users.
    """
    data = PurchaseData(
        order_id=order.id,
        quantity=order.quantity,
        devices=[DeviceCredential(id=d.id, password_hash=d.password_hash) for d in devices],
    )
    envelope = Envelope.new(
        client=order.client,
        product=order.product,
        environment=order.environment,  # type: ignore[arg-type]  # validated on the way in
        archtype=order.archtype,  # type: ignore[arg-type]
        hardware=order.hardware,  # type: ignore[arg-type]
        app=APP,
        action=action.value,
        publisher=APP,
        trace_id=uuid.UUID(order.trace_id),
        data=data.model_dump(),
    )
    return PurchaseTopic(order.client, action).routing_key, envelope.to_json()


def desired_config_message(client: str, device: str, config: DesiredConfig) -> tuple[str, bytes]:
    """Routing key and body asking the presence process to deliver `config` (retained MQTT)."""
    return desired_config_routing_key(client, device), config.to_json()
