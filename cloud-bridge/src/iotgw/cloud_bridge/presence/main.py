"""`iotgw-presence`: status and state into the registry, desired configs out as retained MQTT.

Two workers, each in its own thread with its own AMQP connection, until SIGTERM or SIGINT.
The process does not migrate the database (the api owns the schema); while the tables are not
there yet it pauses and retries like for any database outage.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass, field
from types import FrameType

from prometheus_client import start_http_server
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.presence.consumer import PresenceConsumer
from iotgw.cloud_bridge.presence.delivery import ConfigDelivery
from iotgw.cloud_bridge.presence.metrics import PresenceMetrics
from iotgw.cloud_bridge.presence.mqtt import ServiceMqtt
from iotgw.cloud_bridge.presence.settings import PresenceSettings
from iotgw.cloud_bridge.registry.database import make_engine, session_factory
from iotgw.contracts.jsonlog import configure_logging
from iotgw.contracts.settings import load_settings

log = logging.getLogger("iotgw.presence")


@dataclass
class Presence:
    """The running process: the MQTT service connection and both AMQP workers."""

    settings: PresenceSettings
    sessions: sessionmaker[Session]
    metrics: PresenceMetrics = field(default_factory=PresenceMetrics)

    def __post_init__(self) -> None:
        s = self.settings
        self.mqtt = ServiceMqtt(
            s.mqtt_host,
            s.mqtt_port,
            s.presence_mqtt_username,
            s.presence_mqtt_password.get_secret_value(),
            s.presence_mqtt_client_id,
        )
        self.consumer = PresenceConsumer(s, self.metrics, self.sessions)
        self.delivery = ConfigDelivery(s, self.metrics, self.sessions, self.mqtt)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Connect MQTT and start both workers in daemon threads."""
        self.mqtt.start()
        for name, worker in (
            ("presence-consumer", self.consumer),
            ("config-delivery", self.delivery),
        ):
            thread = threading.Thread(target=worker.run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait_ready(self, timeout: float) -> bool:
        """True once both workers consume (the config worker only after MQTT connected)."""
        return self.consumer.consuming.wait(timeout) and self.delivery.consuming.wait(timeout)

    def alive(self) -> bool:
        """True while both worker threads run."""
        return all(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 10) -> None:
        """Stop the workers (unacked messages return to their queues), then MQTT."""
        self.consumer.stop()
        self.delivery.stop()
        for thread in self._threads:
            thread.join(timeout)
        self.mqtt.stop()


def main() -> int:
    """Entry point of `iotgw-presence`."""
    settings = load_settings(PresenceSettings)
    configure_logging(settings.log_level)
    engine = make_engine(settings.database_url)
    presence = Presence(settings, session_factory(engine))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=presence.metrics.registry)
    done = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    presence.start()
    log.info("presence started", extra={"mqtt": f"{settings.mqtt_host}:{settings.mqtt_port}"})
    code = 0
    while not done.wait(1.0):
        if not presence.alive():
            log.error("a worker stopped; exiting")
            code = 1
            break
    presence.stop()
    engine.dispose()
    return code


if __name__ == "__main__":
    sys.exit(main())
