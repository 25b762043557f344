"""The demo: the local stack up, the topology declared, a simulated module's reading delivered.

This first stage shows the backbone: one MQTT publish as a device arriving on its AMQP queue.
Later components plug into this same command.
"""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pika
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.contracts.payloads import Telemetry
from iotgw.contracts.settings import load_settings
from iotgw.contracts.topics import DeviceKind, DeviceTopic
from iotgw.contracts.topology import DEFAULT_TOPOLOGY, TELEMETRY_QUEUE
from iotgw.localstack.stack import Stack, StackSettings


def run_demo() -> int:
    """Bring the stack up and send one reading from a module through MQTT to AMQP."""
    cfg = load_settings(StackSettings)
    stack = Stack.from_settings(cfg)
    print("starting the local stack (RabbitMQ with MQTT, InfluxDB) ...", flush=True)
    stack.up(install=cfg.install_packages)
    print(stack.describe(), flush=True)
    ep = stack.rabbit.endpoints

    connection = pika.BlockingConnection(pika.URLParameters(ep.amqp_url()))
    channel = connection.channel()
    DEFAULT_TOPOLOGY.declare(channel)
    channel.queue_purge(TELEMETRY_QUEUE)

    topic = DeviceTopic("demo", "module-1", DeviceKind.TELEMETRY)
    reading = Telemetry(ts=time.time(), seq=1, metrics={"temperature": 21.5, "humidity": 40.0})
    device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-module-1")
    device.username_pw_set(ep.username, ep.password)
    device.connect(ep.host, ep.mqtt_port)
    device.loop_start()
    info = device.publish(topic.mqtt, reading.to_json(), qos=1)
    info.wait_for_publish(timeout=10)
    device.disconnect()
    device.loop_stop()
    print(f"module demo/module-1 published on MQTT {topic.mqtt}", flush=True)

    for method, _props, body in channel.consume(TELEMETRY_QUEUE, inactivity_timeout=10):
        if method is None:
            print("no message arrived on the telemetry queue within 10 s")
            return 1
        channel.basic_ack(method.delivery_tag)
        print(
            f"arrived on AMQP queue {TELEMETRY_QUEUE} with routing key {method.routing_key}: "
            + json.dumps(json.loads(body))
        )
        break
    channel.cancel()
    connection.close()
    print("the stack keeps running; stop it with: .venv/bin/iotgw stack down")
    return 0
