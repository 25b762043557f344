"""The agent against the real RabbitMQ MQTT plugin, run through its CLI as on a module."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pika
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.contracts.payloads import DesiredConfig
from iotgw.contracts.topology import STATE_QUEUE, STATUS_QUEUE, TELEMETRY_QUEUE
from iotgw.localstack.pytest_plugin import Broker
from iotgw.localstack.rabbitmq import RabbitNode

Wait = Callable[[Callable[[], bool], float, str], None]
Consume = Callable[..., list[dict[str, Any]]]
Check = Callable[[list[dict[str, Any]], int], None]


def test_broker_outage_loses_nothing_and_keeps_order(
    rabbitmq: RabbitNode,
    topology_broker: Broker,
    agent: Any,
    wait: Wait,
    consume: Consume,
    complete_in_order: Check,
) -> None:
    agent.start()
    # Our own connection, closed before the outage (the fixture's would be dead at teardown).
    connection = pika.BlockingConnection(pika.URLParameters(topology_broker.amqp_url))
    channel = connection.channel()

    def queued() -> int:
        return int(channel.queue_declare(TELEMETRY_QUEUE, passive=True).method.message_count)

    try:
        wait(lambda: queued() >= 10, 30, "readings on the queue before the outage")
    finally:
        connection.close()
    for fixture_connection in topology_broker.connections:
        fixture_connection.close()  # the outage would leave them dead for the fixture's teardown
    rabbitmq.stop_app()
    try:
        # The agent keeps sampling into its buffer while the broker is gone.
        wait(lambda: agent.buffered() >= 40, 30, "readings buffered during the outage")
    finally:
        rabbitmq.start_app()
    outage_seq = agent.next_seq()
    wait(
        lambda: agent.next_seq() > outage_seq + 20 and agent.buffered() == 0,
        60,
        "buffer replayed after the broker came back",
    )
    assert agent.terminate() == 0
    last = agent.next_seq() - 1
    bodies = consume(TELEMETRY_QUEUE, lambda b: {x["seq"] for x in b} >= set(range(last + 1)))
    complete_in_order(bodies, last)
    assert last > outage_seq


def test_kill_9_with_readings_buffered_loses_nothing(
    topology_broker: Broker, agent: Any, wait: Wait, consume: Consume, complete_in_order: Check
) -> None:
    # Phase 1: the broker is unreachable (nothing listens on port 1), readings pile up on disk.
    agent.start(mqtt_port=1)
    wait(lambda: agent.buffered() >= 30, 30, "readings buffered while unreachable")
    agent.kill9()
    buffered = agent.buffered()
    assert buffered >= 30
    # Phase 2: connected, killed again in the middle of publishing.
    agent.start()
    wait(lambda: agent.next_seq() > buffered + 20, 30, "agent publishing after restart")
    agent.kill9()
    # Phase 3: restart; everything accepted into the buffer goes out.
    before = agent.next_seq()
    agent.start()
    wait(
        lambda: agent.next_seq() > before + 10 and agent.buffered() == 0,
        60,
        "buffer drained after restart",
    )
    assert agent.terminate() == 0
    last = agent.next_seq() - 1
    bodies = consume(TELEMETRY_QUEUE, lambda b: {x["seq"] for x in b} >= set(range(last + 1)))
    complete_in_order(bodies, last)


def _publish_retained(broker: Broker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cloud-{time.monotonic_ns()}")
    client.username_pw_set(broker.mqtt_username(), broker.mqtt_password)
    client.connect(broker.mqtt_host, broker.mqtt_port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def test_retained_config_applied_and_invalid_one_refused(
    topology_broker: Broker, agent: Any, consume: Consume, wait: Wait
) -> None:
    topic = "devices/acme/dev-1/config"
    good = DesiredConfig(version=3, sampling_interval_s=0.2, enabled_sensors=["counter"])
    _publish_retained(topology_broker, topic, good.to_json())
    agent.start()
    states = consume(STATE_QUEUE, lambda b: any(s.get("applied_version") == 3 for s in b))
    assert states[-1]["status"] == "applied"
    # Unknown sensor: refused with the reason, version 3 stays in force.
    bad = DesiredConfig(version=4, enabled_sensors=["camera"])
    _publish_retained(topology_broker, topic, bad.to_json())
    refused = consume(STATE_QUEUE, lambda b: any(s["status"] == "rejected" for s in b))[-1]
    assert refused["applied_version"] == 3
    assert refused["rejected_version"] == 4
    assert "camera" in refused["reason"]
    # Not even JSON: refused too.
    _publish_retained(topology_broker, topic, b"{not json")
    refused = consume(STATE_QUEUE, lambda b: any(s["status"] == "rejected" for s in b))[-1]
    assert refused["applied_version"] == 3
    assert "invalid config" in refused["reason"]
    # The applied config survives a restart (persisted beside the buffer).
    assert agent.terminate() == 0
    assert agent.db("SELECT applied_config FROM devices")[0].find('"version": 3') >= 0


def test_cut_connection_gives_offline_then_online_with_newer_epoch(
    topology_broker: Broker, agent: Any, consume: Consume
) -> None:
    agent.start()
    online = consume(STATUS_QUEUE, lambda b: any(s["state"] == "online" for s in b))[-1]
    # The module loses power: its TCP connection dies without DISCONNECT. (RabbitMQ 3.10 does
    # not close MQTT connections through the management API, so the process is killed.)
    agent.kill9()
    offline = consume(STATUS_QUEUE, lambda b: any(s["state"] == "offline" for s in b))[-1]
    assert offline["epoch"] == online["epoch"]
    agent.start()
    back = consume(STATUS_QUEUE, lambda b: any(s["state"] == "online" for s in b))[-1]
    assert back["epoch"] > offline["epoch"]
