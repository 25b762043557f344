"""Drive the real telemetry pipeline: readings published over MQTT (QoS 1) into RabbitMQ's MQTT
plugin, consumed by `iotgw-ingest` (in a thread), written to InfluxDB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.cloud_bridge.ingest.health import IngestMetrics
from iotgw.cloud_bridge.ingest.main import run
from iotgw.cloud_bridge.ingest.settings import IngestSettings
from iotgw.contracts.credentials import device_client_id
from iotgw.contracts.topics import DeviceKind, DeviceTopic
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase

INGEST_INSTANCE = "dashboards-test"


def poll_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` every 0.2 s until truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


@contextmanager
def ingest_running(broker: Broker, db: InfluxDatabase) -> Iterator[None]:
    """The ingest consuming the test's vhost into the test's database, stopped on exit."""
    settings = IngestSettings(
        amqp_url=broker.amqp_url,
        influx_url=db.url,
        influx_database=db.name,
        ingest_batch_interval_ms=50,
        ingest_instance=INGEST_INSTANCE,
    )
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(settings, stop, IngestMetrics()), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "ingest did not stop"


def publish(broker: Broker, messages: Iterable[tuple[str, str, bytes]]) -> int:
    """Publish each (client, device, payload) at QoS 1 from that device's own MQTT session and
    wait for every PUBACK; returns the number published."""
    sessions: dict[tuple[str, str], mqtt.Client] = {}
    acked = threading.Semaphore(0)
    count = 0
    try:
        for client, device, payload in messages:
            session = sessions.get((client, device))
            if session is None:
                session = mqtt.Client(
                    CallbackAPIVersion.VERSION2,
                    client_id=device_client_id(client, device),
                    protocol=mqtt.MQTTv311,
                )
                session.username_pw_set(broker.mqtt_username(), broker.mqtt_password)
                session.on_publish = lambda *_args: acked.release()
                connected = threading.Event()
                session.on_connect = lambda *_args, e=connected: e.set()
                session.connect(broker.mqtt_host, broker.mqtt_port)
                session.loop_start()
                assert connected.wait(10), f"{client}/{device} could not connect"
                sessions[(client, device)] = session
            topic = DeviceTopic(client, device, DeviceKind.TELEMETRY).mqtt
            session.publish(topic, payload, qos=1)
            count += 1
        for _ in range(count):
            assert acked.acquire(timeout=30), "a PUBACK did not come"
    finally:
        for session in sessions.values():
            session.disconnect()
            session.loop_stop()
    return count
