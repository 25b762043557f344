"""q.config to retained MQTT: each desired config is acked only after the broker's PUBACK.

The api records a desired config and, in the same transaction, queues
`config.<client>.<device>.desired` (the outbox). Here it is published retained at QoS 1 on
`devices/<client>/<device>/config` over MQTT, so a device connecting later still receives it.
A config older than the registry's current desired version is acked without publishing: a late
redelivery must never replace a newer retained config. While MQTT or the database is down,
consumption pauses and the message goes back to its queue; nothing is acked early.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.presence.messages import BadMessageError, ConfigMessage, parse_config
from iotgw.cloud_bridge.presence.metrics import PresenceMetrics
from iotgw.cloud_bridge.presence.mqtt import MqttUnavailableError, ServiceMqtt
from iotgw.cloud_bridge.presence.settings import PresenceSettings
from iotgw.cloud_bridge.presence.worker import AmqpWorker
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.contracts.amqp import original_routing_key
from iotgw.contracts.topology import CONFIG_QUEUE, DEFAULT_TOPOLOGY, WorkQueue

log = logging.getLogger(__name__)

CONFIG = DEFAULT_TOPOLOGY.queue(CONFIG_QUEUE)


class Freshness(StrEnum):
    """How a queued config compares with the registry's current desired config."""

    CURRENT = "current"
    SUPERSEDED = "superseded"
    UNKNOWN_DEVICE = "unknown_device"


def freshness(session: Session, message: ConfigMessage) -> Freshness:
    """Whether `message` is still the config to deliver."""
    device = repo.get_device(session, message.client, message.device)
    if device is None:
        return Freshness.UNKNOWN_DEVICE
    if message.config.version < device.desired_version:
        return Freshness.SUPERSEDED
    return Freshness.CURRENT


class ConfigDelivery(AmqpWorker):
    """Publishes desired configs, retained, with the service identity's MQTT connection."""

    queues = (CONFIG,)

    def __init__(
        self,
        settings: PresenceSettings,
        metrics: PresenceMetrics,
        sessions: sessionmaker[Session],
        mqtt: ServiceMqtt,
    ) -> None:
        super().__init__(settings, metrics)
        self.sessions = sessions
        self.mqtt = mqtt

    def ready_to_consume(self) -> bool:
        """Take configs off the queue only while the MQTT side can deliver them."""
        return self.mqtt.connected.is_set()

    def handle(
        self,
        queue: WorkQueue,
        channel: BlockingChannel,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        """Check, publish retained, wait for PUBACK, then ack."""
        routing_key = original_routing_key(str(method.routing_key), properties)
        try:
            message = parse_config(routing_key, body)
        except BadMessageError as exc:
            self.dead_letter(channel, queue, method, properties, body, routing_key, str(exc))
            return
        try:
            with self.sessions() as session:
                fresh = freshness(session, message)
        except SQLAlchemyError as exc:
            self.requeue_after_pause(channel, queue, method, f"database: {exc}")
            return
        if fresh is Freshness.UNKNOWN_DEVICE:
            reason = "unknown_device: not in the registry"
            self.dead_letter(channel, queue, method, properties, body, routing_key, reason)
            return
        if fresh is Freshness.CURRENT:
            try:
                seconds = self.mqtt.publish_retained(
                    message.topic,
                    message.config.to_json(),
                    self.settings.presence_puback_timeout_s,
                )
            except MqttUnavailableError as exc:
                self.requeue_after_pause(channel, queue, method, f"mqtt: {exc}")
                return
            self.metrics.puback_seconds.observe(seconds)
            log.info(
                "config delivered",
                extra={
                    "client": message.client,
                    "device": message.device,
                    "version": message.config.version,
                },
            )
        self.succeeded()
        channel.basic_ack(method.delivery_tag)
        self.metrics.messages.labels(queue.name, fresh.value).inc()
