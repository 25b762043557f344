"""Our own real RabbitMQ node: MQTT topics reach AMQP queues, dead letters keep their key."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import pika
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.contracts.amqp import dead_letter, retry_later
from iotgw.contracts.topology import (
    DEFAULT_TOPOLOGY,
    HEADER_ORIGINAL_ROUTING_KEY,
    HEADER_REASON,
    TELEMETRY_QUEUE,
    Topology,
    WorkQueue,
)
from iotgw.localstack.pytest_plugin import Broker


def _mqtt_publish(broker: Broker, topic: str, payload: bytes) -> None:
    """Publish one QoS 1 message as a device and wait for its PUBACK."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-1", protocol=mqtt.MQTTv311)
    client.username_pw_set(broker.mqtt_username(), broker.mqtt_password)
    client.connect(broker.mqtt_host, broker.mqtt_port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _get(channel: Any, queue: str) -> tuple[Any, Any, bytes]:
    """Wait for one message on `queue` (consume with a timeout, no polling sleep)."""
    for method, properties, body in channel.consume(queue, inactivity_timeout=10):
        assert method is not None, f"nothing arrived on {queue}"
        channel.cancel()
        return method, properties, body
    raise AssertionError("unreachable")


def test_mqtt_telemetry_arrives_on_the_telemetry_queue(topology_broker: Broker) -> None:
    _mqtt_publish(topology_broker, "devices/acme/dev-1/telemetry", b'{"seq": 1}')
    channel = topology_broker.channel()
    method, _props, body = _get(channel, TELEMETRY_QUEUE)
    assert method.routing_key == "devices.acme.dev-1.telemetry"
    assert body == b'{"seq": 1}'
    channel.basic_ack(method.delivery_tag)


def test_rejected_message_lands_in_the_dead_letter_queue_with_its_key(
    topology_broker: Broker,
) -> None:
    _mqtt_publish(topology_broker, "devices/acme/dev-2/telemetry", b"not json")
    channel = topology_broker.channel()
    method, _props, _body = _get(channel, TELEMETRY_QUEUE)
    channel.basic_reject(method.delivery_tag, requeue=False)
    dead, _props, body = _get(channel, DEFAULT_TOPOLOGY.queue(TELEMETRY_QUEUE).dead_letter_queue)
    assert dead.routing_key == "devices.acme.dev-2.telemetry"
    assert body == b"not json"


def test_explicit_dead_letter_carries_reason_and_original_key(topology_broker: Broker) -> None:
    _mqtt_publish(topology_broker, "devices/acme/dev-3/telemetry", b"{}")
    channel = topology_broker.channel()
    channel.confirm_delivery()
    method, props, body = _get(channel, TELEMETRY_QUEUE)
    queue = DEFAULT_TOPOLOGY.queue(TELEMETRY_QUEUE)
    dead_letter(channel, queue, body, props, method.routing_key, "metrics: field required")
    channel.basic_ack(method.delivery_tag)
    dead, dead_props, _ = _get(channel, queue.dead_letter_queue)
    assert dead.routing_key == "devices.acme.dev-3.telemetry"
    assert dead_props.headers[HEADER_REASON] == "metrics: field required"
    assert dead_props.headers[HEADER_ORIGINAL_ROUTING_KEY] == "devices.acme.dev-3.telemetry"


def _snapshot(broker: Broker) -> dict[str, Any]:
    node = broker.node
    vhost = broker.vhost.replace("/", "%2F")
    queues = node.api("GET", f"/api/queues/{vhost}").json()
    bindings = node.api("GET", f"/api/bindings/{vhost}").json()
    exchanges = node.api("GET", f"/api/exchanges/{vhost}").json()
    return {
        "queues": sorted((q["name"], repr(sorted(q["arguments"].items()))) for q in queues),
        "bindings": sorted((b["source"], b["destination"], b["routing_key"]) for b in bindings),
        "exchanges": sorted((e["name"], e["type"]) for e in exchanges),
    }


def test_declaring_the_topology_twice_changes_nothing(topology_broker: Broker) -> None:
    before = _snapshot(topology_broker)
    assert any(name == "q.provisioning.retry.3" for name, _ in before["queues"])
    DEFAULT_TOPOLOGY.declare(topology_broker.channel())
    assert _snapshot(topology_broker) == before


def test_quorum_queues_by_setting(broker: Broker) -> None:
    DEFAULT_TOPOLOGY.declare(broker.channel(), queue_type="quorum")
    info = broker.node.queue_info(broker.vhost, TELEMETRY_QUEUE)
    assert info["type"] == "quorum"


def test_retry_queue_returns_message_to_work_queue(broker: Broker) -> None:
    """The delay queues are wired TTL -> DLX -> work queue (checked with a short TTL here)."""
    queue = WorkQueue("q.fast", ("fast.#",), retry_delays_ms=(50,))
    Topology((queue,)).declare(broker.channel())
    channel = broker.channel()
    channel.confirm_delivery()
    channel.basic_publish("amq.topic", "fast.one", b"x")
    method, props, body = _get(channel, "q.fast")
    assert retry_later(channel, queue, body, props, method.routing_key)
    channel.basic_ack(method.delivery_tag)
    again, again_props, _ = _get(channel, "q.fast")
    assert again_props.headers[HEADER_ORIGINAL_ROUTING_KEY] == "fast.one"
    assert not retry_later(channel, queue, body, again_props, again.routing_key)
    channel.basic_ack(again.delivery_tag)


def test_quorum_declared_queue_conflict_is_reported(broker: Broker) -> None:
    """Declaring a different queue type over an existing queue fails loudly, not silently."""
    DEFAULT_TOPOLOGY.declare(broker.channel())
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        DEFAULT_TOPOLOGY.declare(broker.channel(), queue_type="quorum")


def test_mqtt_publish_needs_credentials(broker: Broker) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=mqtt.MQTTv311)
    refused = threading.Event()

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            refused.set()

    client.on_connect = on_connect
    client.connect(broker.mqtt_host, broker.mqtt_port)
    client.loop_start()
    try:
        assert refused.wait(10), "anonymous MQTT connection was accepted"
    finally:
        client.loop_stop()
