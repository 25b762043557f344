"""Device users on the real RabbitMQ: a device connects with paho, confined to its topics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iotgw.contracts.credentials import rabbit_password_hash
from iotgw.contracts.payloads import DeviceCredential
from iotgw.localstack.pytest_plugin import Broker
from iotgw.provisioner.brokerusers import BrokerUsers

TIMEOUT = 10
DeviceFactory = Callable[[Broker, str, str, str], Any]


@pytest.fixture
def users(broker: Broker) -> Iterator[BrokerUsers]:
    ep = broker.node.endpoints
    api = BrokerUsers(ep.management_url, broker.vhost, ep.username, ep.password)
    yield api
    for client in ("acme", "other"):
        api.remove_client(client)
    api.close()


def provision(users: BrokerUsers, client: str, *ids: str) -> dict[str, str]:
    secrets = {i: f"secret-{client}-{i}" for i in ids}
    creds = tuple(
        DeviceCredential(id=i, password_hash=rabbit_password_hash(s)) for i, s in secrets.items()
    )
    users.ensure_devices(client, creds)
    return secrets


def watch(broker: Broker) -> tuple[Any, str]:
    channel = broker.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, "amq.topic", "devices.#")
    return channel, queue


def received_until(channel: Any, queue: str, sentinel: str) -> list[str]:
    """Routing keys that arrived on `queue` up to and including `sentinel`."""
    keys: list[str] = []
    for method, _props, _body in channel.consume(queue, auto_ack=True, inactivity_timeout=TIMEOUT):
        assert method is not None, f"{sentinel} never arrived; got {keys}"
        keys.append(method.routing_key)
        if method.routing_key == sentinel:
            break
    channel.cancel()
    return keys


def test_a_device_publishes_and_subscribes_under_its_own_topics(
    broker: Broker, users: BrokerUsers, mqtt_device: DeviceFactory
) -> None:
    secrets = provision(users, "acme", "dev-1")
    channel, queue = watch(broker)
    device = mqtt_device(broker, "acme", "dev-1", secrets["dev-1"])
    assert device.ok()
    device.mqtt.subscribe("devices/acme/dev-1/config", qos=1)
    assert device.subscribed.wait(TIMEOUT)
    assert [c.value for c in device.granted] == [1]
    device.publish("devices/acme/dev-1/telemetry")
    assert received_until(channel, queue, "devices.acme.dev-1.telemetry") == [
        "devices.acme.dev-1.telemetry"
    ]


@pytest.mark.parametrize("topic", ["devices/acme/dev-2/telemetry", "devices/other/dev-1/telemetry"])
def test_publishing_under_another_devices_topics_is_refused(
    broker: Broker, users: BrokerUsers, mqtt_device: DeviceFactory, topic: str
) -> None:
    secrets = provision(users, "acme", "dev-1", "dev-2")
    provision(users, "other", "dev-1")
    channel, queue = watch(broker)
    intruder = mqtt_device(broker, "acme", "dev-1", secrets["dev-1"])
    assert intruder.ok()
    intruder.publish(topic)
    assert intruder.disconnected.wait(TIMEOUT), "the broker kept the intruder connected"
    # A legitimate publish after the refusal: the forbidden one would have arrived before it.
    honest = mqtt_device(broker, "acme", "dev-2", secrets["dev-2"])
    assert honest.ok()
    honest.publish("devices/acme/dev-2/state")
    assert received_until(channel, queue, "devices.acme.dev-2.state") == [
        "devices.acme.dev-2.state"
    ]


@pytest.mark.parametrize("topic", ["devices/acme/dev-2/#", "devices/other/dev-1/config", "#"])
def test_subscribing_to_another_devices_topics_is_refused(
    broker: Broker, users: BrokerUsers, mqtt_device: DeviceFactory, topic: str
) -> None:
    secrets = provision(users, "acme", "dev-1", "dev-2")
    device = mqtt_device(broker, "acme", "dev-1", secrets["dev-1"])
    assert device.ok()
    device.mqtt.subscribe(topic, qos=1)
    assert device.answered.wait(TIMEOUT)
    refused = device.disconnected.is_set() or all(c.is_failure for c in device.granted)
    assert refused, device.granted


def test_a_wrong_secret_or_a_cancelled_client_cannot_connect(
    broker: Broker, users: BrokerUsers, mqtt_device: DeviceFactory
) -> None:
    secrets = provision(users, "acme", "dev-1")
    other = provision(users, "other", "dev-1")
    wrong = mqtt_device(broker, "acme", "dev-1", "not-the-secret")
    assert not wrong.ok()
    assert users.remove_client("acme") == ["User/acme.dev-1"]
    gone = mqtt_device(broker, "acme", "dev-1", secrets["dev-1"])
    assert not gone.ok()
    still = mqtt_device(broker, "other", "dev-1", other["dev-1"])
    assert still.ok()


def test_users_are_created_from_the_hash_never_a_password(
    broker: Broker, users: BrokerUsers
) -> None:
    provision(users, "acme", "dev-1")
    user = broker.node.api("GET", "/api/users/acme.dev-1").json()
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    topic = broker.node.api("GET", "/api/users/acme.dev-1/topic-permissions").json()
    assert topic == [
        {
            "user": "acme.dev-1",
            "vhost": broker.vhost,
            "exchange": "amq.topic",
            "write": r"^devices\.acme\.dev\-1\.",
            "read": r"^devices\.acme\.dev\-1\.",
        }
    ]
    provision(users, "acme", "dev-1")  # again: nothing new, no error
    assert users.client_users("acme") == ["acme.dev-1"]
