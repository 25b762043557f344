"""The topic scheme and the RabbitMQ MQTT plugin's topic <-> routing key mapping.

MQTT topic `a/b/c` is AMQP routing key `a.b.c` on `amq.topic`; the plugin swaps `/` and `.`,
so a `.` inside an MQTT segment would become a separator on the AMQP side: segments may not hold
one. Every segment is a DNS-1123 label, which also keeps out `+`, `#`, `/` and empty segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from iotgw.contracts.names import check_dns_label

MAX_TOPIC_BYTES = 255


class DeviceKind(StrEnum):
    """What a device topic carries."""

    TELEMETRY = "telemetry"
    STATUS = "status"
    STATE = "state"
    CONFIG = "config"


class PurchaseAction(StrEnum):
    """Purchase events."""

    CREATED = "created"
    CANCELLED = "cancelled"
    # Device credentials issued or rotated after the purchase: the provisioner owns broker users.
    CREDENTIALS = "credentials"


class ProvisioningOutcome(StrEnum):
    """Provisioner status events."""

    READY = "ready"
    FAILED = "failed"


class TopicError(ValueError):
    """A topic or routing key that does not fit the scheme."""


def _segments(topic: str, sep: str, count: int) -> list[str]:
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        raise TopicError(f"topic longer than {MAX_TOPIC_BYTES} bytes")
    parts = topic.split(sep)
    if len(parts) != count:
        raise TopicError(f"topic {topic!r} must have {count} segments")
    for part in parts:
        if part in {"+", "#", "*"} or any(c in part for c in "+#*"):
            raise TopicError(f"topic {topic!r} contains a wildcard")
        if not part:
            raise TopicError(f"topic {topic!r} has an empty segment")
    return parts


@dataclass(frozen=True)
class DeviceTopic:
    """`devices/<client>/<device>/<kind>`."""

    client: str
    device: str
    kind: DeviceKind

    def __post_init__(self) -> None:
        try:
            check_dns_label(self.client, "client")
            check_dns_label(self.device, "device")
        except ValueError as exc:
            raise TopicError(str(exc)) from exc

    @property
    def mqtt(self) -> str:
        """The MQTT topic."""
        return f"devices/{self.client}/{self.device}/{self.kind.value}"

    @property
    def routing_key(self) -> str:
        """The AMQP routing key on `amq.topic`."""
        return mqtt_to_routing_key(self.mqtt)

    @classmethod
    def parse(cls, topic: str) -> DeviceTopic:
        """Parse an MQTT topic; raises TopicError on anything outside the scheme."""
        root, client, device, kind = _segments(topic, "/", 4)
        if root != "devices":
            raise TopicError(f"topic {topic!r} does not start with devices/")
        try:
            parsed_kind = DeviceKind(kind)
        except ValueError as exc:
            raise TopicError(f"unknown device message kind {kind!r}") from exc
        return cls(client, device, parsed_kind)

    @classmethod
    def from_routing_key(cls, key: str) -> DeviceTopic:
        """Parse an AMQP routing key such as `devices.acme.dev-1.telemetry`."""
        return cls.parse(routing_key_to_mqtt(key))


@dataclass(frozen=True)
class PurchaseTopic:
    """`purchases/<client>/<action>`."""

    client: str
    action: PurchaseAction

    def __post_init__(self) -> None:
        try:
            check_dns_label(self.client, "client")
        except ValueError as exc:
            raise TopicError(str(exc)) from exc

    @property
    def mqtt(self) -> str:
        """The MQTT topic."""
        return f"purchases/{self.client}/{self.action.value}"

    @property
    def routing_key(self) -> str:
        """The AMQP routing key on `amq.topic`."""
        return mqtt_to_routing_key(self.mqtt)

    @classmethod
    def parse(cls, topic: str) -> PurchaseTopic:
        """Parse an MQTT topic; raises TopicError on anything outside the scheme."""
        root, client, action = _segments(topic, "/", 3)
        if root != "purchases":
            raise TopicError(f"topic {topic!r} does not start with purchases/")
        try:
            parsed = PurchaseAction(action)
        except ValueError as exc:
            raise TopicError(f"unknown purchase action {action!r}") from exc
        return cls(client, parsed)

    @classmethod
    def from_routing_key(cls, key: str) -> PurchaseTopic:
        """Parse an AMQP routing key such as `purchases.acme.created`."""
        return cls.parse(routing_key_to_mqtt(key))


def provisioning_routing_key(client: str, outcome: ProvisioningOutcome) -> str:
    """`provisioning.<client>.ready|failed`, the provisioner's status event."""
    check_dns_label(client, "client")
    return f"provisioning.{client}.{outcome.value}"


def desired_config_routing_key(client: str, device: str) -> str:
    """`config.<client>.<device>.desired`: the api's request to deliver a device's config."""
    check_dns_label(client, "client")
    check_dns_label(device, "device")
    return f"config.{client}.{device}.desired"


def mqtt_to_routing_key(topic: str) -> str:
    """The RabbitMQ MQTT plugin's mapping: `/` becomes `.`, `.` becomes `/`, `+` becomes `*`."""
    return topic.translate(_TO_AMQP)


def routing_key_to_mqtt(key: str) -> str:
    """Inverse of `mqtt_to_routing_key`."""
    return key.translate(_TO_MQTT)


def device_filter(client: str, device: str) -> str:
    """MQTT filter for everything under one device: `devices/<client>/<device>/#`."""
    check_dns_label(client, "client")
    check_dns_label(device, "device")
    return f"devices/{client}/{device}/#"


_TO_AMQP = str.maketrans({"/": ".", ".": "/", "+": "*"})
_TO_MQTT = str.maketrans({".": "/", "/": ".", "*": "+"})
