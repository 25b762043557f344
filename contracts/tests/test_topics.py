"""The topic scheme and the MQTT plugin's topic <-> routing key mapping."""

from __future__ import annotations

import pytest

from iotgw.contracts.topics import (
    DeviceKind,
    DeviceTopic,
    ProvisioningOutcome,
    PurchaseAction,
    PurchaseTopic,
    TopicError,
    desired_config_routing_key,
    mqtt_to_routing_key,
    provisioning_routing_key,
    routing_key_to_mqtt,
)


def test_device_topic_builds_and_parses() -> None:
    topic = DeviceTopic("acme", "dev-1", DeviceKind.TELEMETRY)
    assert topic.mqtt == "devices/acme/dev-1/telemetry"
    assert topic.routing_key == "devices.acme.dev-1.telemetry"
    assert DeviceTopic.parse(topic.mqtt) == topic
    assert DeviceTopic.from_routing_key(topic.routing_key) == topic


def test_purchase_topic_builds_and_parses() -> None:
    topic = PurchaseTopic("acme", PurchaseAction.CREATED)
    assert topic.mqtt == "purchases/acme/created"
    assert PurchaseTopic.from_routing_key("purchases.acme.created") == topic


@pytest.mark.parametrize(
    "bad",
    [
        "devices/+/dev-1/telemetry",
        "devices/acme/#",
        "devices/acme/dev-1/#",
        "devices/acme//telemetry",
        "devices/acme/dev-1/telemetry/extra",
        "devices/acme/dev-1/unknown",
        "devices/Acme/dev-1/telemetry",
        "devices/acme/dev.1/telemetry",
        "things/acme/dev-1/telemetry",
        f"devices/{'a' * 64}/dev-1/telemetry",
        "devices/acme/" + "d" * 300 + "/telemetry",
    ],
)
def test_device_topic_parsing_rejects(bad: str) -> None:
    with pytest.raises(TopicError):
        DeviceTopic.parse(bad)


@pytest.mark.parametrize("bad", ["purchases/acme", "purchases/acme/bought", "purchases/*/created"])
def test_purchase_topic_parsing_rejects(bad: str) -> None:
    with pytest.raises(TopicError):
        PurchaseTopic.parse(bad)


def test_plugin_mapping_swaps_slash_and_dot_and_wildcards() -> None:
    assert mqtt_to_routing_key("a/b.c/+/#") == "a.b/c.*.#"
    assert routing_key_to_mqtt("a.b/c.*.#") == "a/b.c/+/#"


def test_provisioning_key_validates_the_client() -> None:
    assert provisioning_routing_key("acme", ProvisioningOutcome.READY) == "provisioning.acme.ready"
    with pytest.raises(ValueError, match="client"):
        provisioning_routing_key("ac;me", ProvisioningOutcome.FAILED)


def test_desired_config_key_validates_names() -> None:
    assert desired_config_routing_key("acme", "dev-1") == "config.acme.dev-1.desired"
    with pytest.raises(ValueError, match="device"):
        desired_config_routing_key("acme", "dev.1")
