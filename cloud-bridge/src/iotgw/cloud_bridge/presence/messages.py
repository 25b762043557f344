"""What arrives on q.status, q.state and q.config, parsed and checked (no I/O here).

Each parser raises `BadMessageError` with a one-line reason for anything that can never be
applied; the consumers dead-letter such messages with that reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from iotgw.contracts.envelope import describe_error
from iotgw.contracts.names import check_dns_label
from iotgw.contracts.payloads import DesiredConfig, ReportedState, Status
from iotgw.contracts.topics import DeviceKind, DeviceTopic, TopicError


class BadMessageError(ValueError):
    """A message that can never be applied; its text is the dead-letter reason."""


@dataclass(frozen=True)
class StatusMessage:
    """A device's presence: online/offline in connection `epoch`, at device time `ts`."""

    client: str
    device: str
    status: Status


@dataclass(frozen=True)
class StateMessage:
    """A device's reported state: the config version in force (or a refused one)."""

    client: str
    device: str
    state: ReportedState


@dataclass(frozen=True)
class ConfigMessage:
    """A desired config to deliver to one device."""

    client: str
    device: str
    config: DesiredConfig

    @property
    def topic(self) -> str:
        """The device's MQTT config topic."""
        return DeviceTopic(self.client, self.device, DeviceKind.CONFIG).mqtt


def _device_topic(routing_key: str, kind: DeviceKind) -> DeviceTopic:
    try:
        topic = DeviceTopic.from_routing_key(routing_key)
    except TopicError as exc:
        raise BadMessageError(f"topic: {exc}") from exc
    if topic.kind is not kind:
        raise BadMessageError(f"topic: expected a {kind.value} topic, got {topic.kind.value}")
    return topic


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadMessageError(f"json: {exc}") from exc


def parse_status(routing_key: str, body: bytes) -> StatusMessage:
    """`devices.<client>.<device>.status` with a `Status` body."""
    topic = _device_topic(routing_key, DeviceKind.STATUS)
    try:
        status = Status.model_validate(_json(body))
    except ValidationError as exc:
        raise BadMessageError(f"schema: {describe_error(exc)}") from exc
    return StatusMessage(topic.client, topic.device, status)


def parse_state(routing_key: str, body: bytes) -> StateMessage:
    """`devices.<client>.<device>.state` with a `ReportedState` body."""
    topic = _device_topic(routing_key, DeviceKind.STATE)
    try:
        state = ReportedState.model_validate(_json(body))
    except ValidationError as exc:
        raise BadMessageError(f"schema: {describe_error(exc)}") from exc
    return StateMessage(topic.client, topic.device, state)


def parse_config(routing_key: str, body: bytes) -> ConfigMessage:
    """`config.<client>.<device>.desired` with a `DesiredConfig` body."""
    parts = routing_key.split(".")
    if len(parts) != 4 or parts[0] != "config" or parts[3] != "desired":
        raise BadMessageError(f"topic: {routing_key!r} is not config.<client>.<device>.desired")
    try:
        client = check_dns_label(parts[1], "client")
        device = check_dns_label(parts[2], "device")
    except ValueError as exc:
        raise BadMessageError(f"topic: {exc}") from exc
    try:
        config = DesiredConfig.model_validate(_json(body))
    except ValidationError as exc:
        raise BadMessageError(f"schema: {describe_error(exc)}") from exc
    return ConfigMessage(client, device, config)
