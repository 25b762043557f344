"""iotgw wire contracts: the event envelope, device payloads, topic scheme and AMQP topology."""

from iotgw.contracts.envelope import Envelope, EventType, MessageAttributes, Metadata
from iotgw.contracts.payloads import DesiredConfig, ReportedState, Status, Telemetry
from iotgw.contracts.topics import (
    DeviceKind,
    DeviceTopic,
    ProvisioningOutcome,
    PurchaseAction,
    PurchaseTopic,
    TopicError,
    mqtt_to_routing_key,
    routing_key_to_mqtt,
)
from iotgw.contracts.topology import DEFAULT_TOPOLOGY, Topology, WorkQueue

__all__ = [
    "DEFAULT_TOPOLOGY",
    "DesiredConfig",
    "DeviceKind",
    "DeviceTopic",
    "Envelope",
    "EventType",
    "MessageAttributes",
    "Metadata",
    "ProvisioningOutcome",
    "PurchaseAction",
    "PurchaseTopic",
    "ReportedState",
    "Status",
    "Telemetry",
    "TopicError",
    "Topology",
    "WorkQueue",
    "mqtt_to_routing_key",
    "routing_key_to_mqtt",
]
