"""AMQP transport: consume purchases from q.provisioning, answer with a status, then ack.

Per delivery: validate -> apply (Reconciler) -> publish `provisioning.<client>.ready|failed`
(confirmed by the broker) -> record the outcome in InfluxDB -> ack. Transient failures go to the
delay queues with `retrace_intent` counted up; after the last one, and for anything permanent or
invalid, the message goes to the dead-letter queue with the reason and a `failed` status is
published. A crash before the ack means redelivery, which the idempotent apply makes harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pika

from iotgw.contracts.amqp import dead_letter, original_routing_key, retry_later
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.jsonlog import trace
from iotgw.contracts.payloads import ProvisioningData
from iotgw.contracts.topics import ProvisioningOutcome, PurchaseAction, provisioning_routing_key
from iotgw.contracts.topology import TOPIC_EXCHANGE, WorkQueue
from iotgw.provisioner.catalog import Catalog
from iotgw.provisioner.errors import PermanentError, TransientError
from iotgw.provisioner.influx import InfluxStore
from iotgw.provisioner.metrics import ProvisionerMetrics
from iotgw.provisioner.reconciler import Reconciler
from iotgw.provisioner.request import InvalidPurchaseError, PurchaseRequest, parse_purchase

log = logging.getLogger(__name__)

APP = "provisioner"
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0
PUBLISHER = "iotgw-provisioner"


@dataclass(frozen=True)
class Delivery:
    """One message as pika handed it over."""

    channel: Any
    method: Any
    properties: pika.BasicProperties
    body: bytes


class PurchaseHandler:
    """Handles one delivery at a time on the channel it came from."""

    def __init__(
        self,
        queue: WorkQueue,
        reconciler: Reconciler,
        catalog: Catalog,
        influx: InfluxStore,
        platform_namespace: str,
        metrics: ProvisionerMetrics,
    ) -> None:
        self.metrics = metrics
        self.queue = queue
        self.reconciler = reconciler
        self.catalog = catalog
        self.influx = influx
        self.platform_namespace = platform_namespace

    def __call__(self, delivery: Delivery) -> None:
        """Process the delivery completely, then ack it."""
        started = time.monotonic()
        routing_key = original_routing_key(delivery.method.routing_key, delivery.properties)
        try:
            request = parse_purchase(
                routing_key, delivery.body, self.catalog, self.platform_namespace
            )
        except InvalidPurchaseError as exc:
            log.warning(
                "purchase refused", extra={"reason": exc.reason, "routing_key": routing_key}
            )
            self._dead_letter(delivery, exc.reason)
            if exc.reply is not None:
                self._finish(
                    delivery,
                    exc.reply,
                    None,
                    ProvisioningOutcome.FAILED,
                    exc.reason,
                    [],
                    started,
                    refused_order_id=exc.order_id,
                )
            delivery.channel.basic_ack(delivery.method.delivery_tag)
            return
        with trace(request.envelope.trace_id):
            self._handle(delivery, request, started)

    def _handle(self, delivery: Delivery, request: PurchaseRequest, started: float) -> None:
        try:
            applied = self.reconciler.handle(request)
        except TransientError as exc:
            retry_body = request.envelope.with_retry().to_json()
            if retry_later(
                delivery.channel,
                self.queue,
                retry_body,
                delivery.properties,
                delivery.method.routing_key,
            ):
                log.warning("transient failure, retrying later", extra={"reason": exc.reason})
                self.metrics.outcomes.labels("retried").inc()
                delivery.channel.basic_ack(delivery.method.delivery_tag)
                return
            self._fail(delivery, request, f"retries used up: {exc.reason}", started)
            return
        except PermanentError as exc:
            self._fail(delivery, request, exc.reason, started)
            return
        except Exception as exc:
            log.exception("unexpected failure")
            self._fail(delivery, request, f"internal error: {type(exc).__name__}", started)
            return
        self._finish(
            delivery,
            request.envelope,
            request,
            ProvisioningOutcome.READY,
            None,
            list(applied.items),
            started,
        )
        delivery.channel.basic_ack(delivery.method.delivery_tag)

    def _fail(
        self,
        delivery: Delivery,
        request: PurchaseRequest,
        reason: str,
        started: float,
    ) -> None:
        log.error("provisioning failed", extra={"reason": reason})
        self._dead_letter(delivery, reason)
        self._finish(
            delivery, request.envelope, request, ProvisioningOutcome.FAILED, reason, [], started
        )
        delivery.channel.basic_ack(delivery.method.delivery_tag)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        dead_letter(
            delivery.channel,
            self.queue,
            delivery.body,
            delivery.properties,
            delivery.method.routing_key,
            reason,
        )

    def _finish(
        self,
        delivery: Delivery,
        about: Envelope,
        request: PurchaseRequest | None,
        outcome: ProvisioningOutcome,
        reason: str | None,
        applied: list[str],
        started: float,
        refused_order_id: str | None = None,
    ) -> None:
        """Publish the status (the channel waits for the broker's confirm), then record it."""
        data = ProvisioningData(
            order_id=request.order_id if request is not None else refused_order_id,
            reason=reason[:2000] if reason else None,
            applied=applied,
        )
        status = about.derive(
            app=APP,
            action=outcome.value,
            publisher=PUBLISHER,
            **data.model_dump(exclude_none=True),
        )
        delivery.channel.basic_publish(
            exchange=TOPIC_EXCHANGE,
            routing_key=provisioning_routing_key(about.client, outcome),
            body=status.to_json(),
            properties=pika.BasicProperties(
                content_type="application/json",
                delivery_mode=pika.DeliveryMode.Persistent,
                # A repeated outcome of the same trace is a duplicate; ready after failed is not.
                message_id=f"{about.trace_id}.{outcome.value}",
            ),
        )
        elapsed = time.monotonic() - started
        self.metrics.latency.observe(elapsed)
        cancelled = request is not None and request.action is PurchaseAction.CANCELLED
        label = "cancelled" if cancelled and outcome is ProvisioningOutcome.READY else outcome.value
        self.metrics.outcomes.labels(label).inc()
        log.info("status published", extra={"outcome": outcome.value, "client": about.client})
        try:
            self.influx.write_outcome(
                about.client, about.product, label, str(about.trace_id), elapsed * 1000, reason
            )
        except (TransientError, PermanentError) as exc:
            # The status is out already; a missing audit point must not redo the purchase.
            log.warning("outcome point not written", extra={"reason": exc.reason})


class Worker:
    """One AMQP connection consuming the queue until `stop` is set."""

    def __init__(
        self, amqp_url: str, queue: WorkQueue, handler: PurchaseHandler, prefetch: int
    ) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set, reconnecting with a growing pause when the broker goes.

        Unacked purchases return to the queue when a connection drops, and are redelivered.
        """
        pause = RECONNECT_FIRST_S
        while not stop.is_set():
            try:
                self._consume(stop)
            except pika.exceptions.AMQPError as exc:
                log.warning("broker connection lost, reconnecting", extra={"error": repr(exc)})
                stop.wait(pause)
                pause = min(pause * 2, RECONNECT_MAX_S)
            else:
                return

    def _consume(self, stop: threading.Event) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_qos(prefetch_count=self.prefetch)

            def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
                self.handler(Delivery(ch, method, properties, body))

            channel.basic_consume(self.queue.name, on_message)
            self.ready.set()
            while not stop.is_set():
                connection.process_data_events(time_limit=0.2)
        finally:
            if connection.is_open:
                connection.close()
