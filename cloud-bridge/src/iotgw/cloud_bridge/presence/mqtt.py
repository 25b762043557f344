"""The presence process's own MQTT connection: the service identity that publishes configs.

RabbitMQ 3.10 keeps a retained message only when it was published over MQTT, so desired
configs go out through this paho client rather than over AMQP. paho runs its network loop in
its own thread and reconnects by itself; `publish_retained` blocks until the broker's PUBACK.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

KEEPALIVE_S = 30
PUBACK_SLICE_S = 0.1


class MqttUnavailableError(RuntimeError):
    """The broker did not acknowledge a publish in time (or the connection is down)."""


class ServiceMqtt:
    """A reconnecting MQTT 3.1.1 client for one service identity."""

    def __init__(self, host: str, port: int, username: str, password: str, client_id: str) -> None:
        self.host = host
        self.port = port
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        """Connect in the background; `connected` is set once the broker accepted us."""
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
        self.connected.clear()

    def publish_retained(self, topic: str, payload: bytes, timeout: float) -> float:
        """Publish `payload` retained at QoS 1; returns seconds to PUBACK.

        Raises MqttUnavailableError when the client is not connected or no PUBACK came in time.
        """
        if not self.connected.is_set():
            raise MqttUnavailableError("not connected to the MQTT broker")
        started = time.monotonic()
        deadline = started + timeout
        info = self.client.publish(topic, payload, qos=1, retain=True)
        try:
            # In slices, so a dropped connection fails the publish at once, not at the deadline.
            while not info.is_published():
                if not self.connected.is_set():
                    raise MqttUnavailableError("connection lost before PUBACK")
                if time.monotonic() >= deadline:
                    raise MqttUnavailableError(f"no PUBACK within {timeout:.1f} s")
                info.wait_for_publish(PUBACK_SLICE_S)
        except (ValueError, RuntimeError) as exc:
            raise MqttUnavailableError(str(exc)) from exc
        return time.monotonic() - started

    def _on_connect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt connect refused", extra={"reason": str(reason)})
            return
        log.info("mqtt connected", extra={"host": self.host, "port": self.port})
        self.connected.set()

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self.connected.clear()
        log.warning("mqtt disconnected", extra={"reason": str(reason)})
