"""Run the presence workers in-process for tests and benchmarks (real broker, real registry)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.presence.main import Presence
from iotgw.cloud_bridge.presence.settings import PresenceSettings

if TYPE_CHECKING:  # the local stack is a workspace (test) package, not a runtime dependency
    from iotgw.localstack.pytest_plugin import Broker


@contextlib.contextmanager
def service_identity(broker: Broker) -> Iterator[tuple[str, str]]:
    """A broker user of its own for presence, allowed only to publish to amq.topic over MQTT.

    Yields the MQTT username (`vhost:user`) and password; the user is deleted afterwards.
    """
    node = broker.node
    user, password = f"presence-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    node.add_user(user, password)
    # The MQTT plugin needs configure/read only on its own subscription queues (none here).
    node.set_permissions(user, broker.vhost, "^mqtt-subscription-.*", "^amq\\.topic$", "^$")
    try:
        yield broker.mqtt_username(user), password
    finally:
        node.api("DELETE", f"/api/users/{user}")


@contextlib.contextmanager
def run_presence(
    broker: Broker, sessions: sessionmaker[Session], identity: tuple[str, str]
) -> Iterator[Presence]:
    """Both presence workers against `broker`'s vhost and the registry behind `sessions`."""
    username, password = identity
    settings = PresenceSettings(
        database_url="sqlite://",  # unused: the sessions are handed over below
        amqp_url=broker.amqp_url,
        mqtt_host=broker.mqtt_host,
        mqtt_port=broker.mqtt_port,
        presence_mqtt_username=username,
        presence_mqtt_password=password,
        presence_mqtt_client_id=f"presence-{uuid.uuid4().hex[:8]}",
        presence_retry_initial_s=0.1,
        presence_retry_max_s=1.0,
    )
    running = Presence(settings, sessions)
    running.start()
    try:
        if not running.wait_ready(30):
            raise RuntimeError("presence workers did not start consuming")
        yield running
    finally:
        running.stop()
