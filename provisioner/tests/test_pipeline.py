"""The full path through the real RabbitMQ: purchase on amq.topic -> stack -> status event.

Real broker, real InfluxDB, the provisioner's own worker threads; Kubernetes is kmock (extended
to apply like a real server) or the manifests folder.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import ProvisioningData
from iotgw.contracts.topology import TOPIC_EXCHANGE, Topology, WorkQueue
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase
from iotgw.provisioner.brokerusers import BrokerUsers
from iotgw.provisioner.kube import KubernetesTarget
from iotgw.provisioner.manifests import ManifestsTarget

TIMEOUT = 20


def publish(broker: Broker, routing_key: str, body: bytes) -> None:
    channel = broker.channel()
    channel.confirm_delivery()
    channel.basic_publish(TOPIC_EXCHANGE, routing_key, body, pika.BasicProperties(delivery_mode=2))


class Statuses:
    """A test queue bound to provisioning.#, read with a deadline."""

    def __init__(self, broker: Broker) -> None:
        self.channel = broker.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        # One at a time, acked by hand: cancelling returns the rest to the queue.
        self.channel.basic_qos(prefetch_count=1)
        self.channel.queue_bind(self.queue, TOPIC_EXCHANGE, "provisioning.#")

    def next(self) -> tuple[str, Envelope]:
        for method, _props, body in self.channel.consume(self.queue, inactivity_timeout=TIMEOUT):
            assert method is not None, "no provisioning status arrived"
            self.channel.basic_ack(method.delivery_tag)
            self.channel.cancel()
            return method.routing_key, Envelope.from_json(body)
        raise AssertionError("unreachable")


def dead_letters(broker: Broker, queue: str, count: int) -> list[tuple[bytes, dict[str, Any]]]:
    channel = broker.channel()
    channel.basic_qos(prefetch_count=1)
    found: list[tuple[bytes, dict[str, Any]]] = []
    for method, props, body in channel.consume(queue, inactivity_timeout=TIMEOUT):
        assert method is not None, f"only {len(found)} of {count} dead letters arrived"
        channel.basic_ack(method.delivery_tag)
        found.append((body, dict(props.headers or {})))
        if len(found) == count:
            break
    channel.cancel()
    return found


def data_of(envelope: Envelope) -> ProvisioningData:
    return ProvisioningData.model_validate(envelope.data or {})


def users_of(broker: Broker) -> list[str]:
    ep = broker.node.endpoints
    users = BrokerUsers(ep.management_url, broker.vhost, ep.username, ep.password)
    try:
        return [u for c in ("acme", "zeta", "other") for u in users.client_users(c)]
    finally:
        users.close()


def cleanup_users(broker: Broker) -> None:
    ep = broker.node.endpoints
    users = BrokerUsers(ep.management_url, broker.vhost, ep.username, ep.password)
    for client in ("acme", "zeta", "other"):
        users.remove_client(client)
    users.close()


@pytest.fixture
def clean_users(broker: Broker) -> Any:
    yield
    cleanup_users(broker)


def influx_rows(db: InfluxDatabase, query: str) -> list[dict[str, Any]]:
    result: Any = db.node.query(query, db=db.name)
    series = result["results"][0].get("series", [])
    return [dict(zip(s["columns"], row, strict=True)) for s in series for row in s["values"]]


@pytest.mark.usefixtures("clean_users")
def test_a_purchase_event_ends_with_a_ready_event_carrying_its_trace_id(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    settings_for: Callable[..., Any],
    running: Callable[..., Any],
    purchase: Callable[..., Envelope],
    secrets_of: dict[str, str],
    mqtt_device: Callable[..., Any],
) -> None:
    settings = settings_for(topology_broker, influx_db)
    provisioner = running(settings, ManifestsTarget(settings.manifests_dir))
    statuses = Statuses(topology_broker)
    env = purchase(devices=("dev-1", "dev-2"))
    publish(topology_broker, "purchases.acme.created", env.to_json())

    key, status = statuses.next()
    assert key == "provisioning.acme.ready"
    assert status.trace_id == env.trace_id
    assert status.client == "acme"
    data = data_of(status)
    assert data.order_id == (env.data or {})["order_id"]
    assert data.reason is None
    assert {"Namespace/acme", "Deployment/product-a", "User/acme.dev-1", "User/acme.dev-2"} <= set(
        data.applied
    )
    folder = Path(settings.manifests_dir) / "acme"
    assert len(list(folder.glob("*.yaml"))) == 8  # seven objects and the kustomization
    assert env.trace_id.hex[:8] in (folder / "06-deployment-product-a.yaml").read_text().replace(
        "-", ""
    )
    assert users_of(topology_broker) == ["acme.dev-1", "acme.dev-2"]
    device = mqtt_device(topology_broker, "acme", "dev-1", secrets_of["dev-1"])
    assert device.ok()

    (point,) = influx_rows(influx_db, 'SELECT * FROM "provisioning"')
    assert point["client"] == "acme"
    assert point["status"] == "ready"
    assert point["trace_id"] == str(env.trace_id)
    assert point["latency_ms"] > 0
    policies = influx_rows(influx_db, f'SHOW RETENTION POLICIES ON "{influx_db.name}"')
    assert any(p["name"] == "iotgw" and p["default"] for p in policies)
    registry = provisioner.metrics.registry
    ready = {"outcome": "ready"}
    assert registry.get_sample_value("iotgw_provisioner_outcomes_total", ready) == 1
    assert registry.get_sample_value("iotgw_provisioner_latency_seconds_count") == 1
    channel = topology_broker.channel()
    for queue in ("q.provisioning", "q.provisioning.dead", "q.provisioning.retry.1"):
        assert channel.queue_declare(queue, passive=True).method.message_count == 0


@pytest.mark.usefixtures("clean_users")
def test_injection_attempts_are_dead_lettered_and_nothing_is_applied(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    settings_for: Callable[..., Any],
    running: Callable[..., Any],
    purchase: Callable[..., Envelope],
) -> None:
    settings = settings_for(topology_broker, influx_db, provisioner_workers=1)
    running(settings, ManifestsTarget(settings.manifests_dir))
    statuses = Statuses(topology_broker)

    def tampered(**changes: Any) -> bytes:
        raw = json.loads(purchase().to_json())
        raw.update(changes)
        return json.dumps(raw).encode()

    bad_product = purchase(product="Product-A")
    attempts = [
        ("purchases.acme.created", tampered(product="Product-A;rm -rf /")),
        ("purchases.acme.created", tampered(client="Acme", namespace="Acme")),
        ("purchases.acme.created", tampered(client="$(reboot)", namespace="$(reboot)")),
        ("purchases.acme.created", tampered(client="../etc", namespace="../etc")),
        ("purchases.acme.created", tampered(namespace="kube-system")),
        ("purchases.$(id).created", tampered()),
        ("purchases.acme.created", tampered(client="a" * 64, namespace="a" * 64)),
    ]
    body = json.loads(bad_product.to_json())
    body["product"] = "Product-Z"
    attempts.append(("purchases.acme.created", json.dumps(body).encode()))
    for key, payload in attempts:
        publish(topology_broker, key, payload)

    dead = dead_letters(topology_broker, "q.provisioning.dead", len(attempts))
    reasons = [h["x-iotgw-reason"] for _, h in dead]
    assert all(reasons), reasons
    assert any("product" in r for r in reasons)
    assert any("namespace" in r for r in reasons)
    assert any("routing key" in r for r in reasons)

    # Failed statuses only where the client is unambiguous: the product and namespace cases.
    sentinel = purchase(client="zeta")
    publish(topology_broker, "purchases.zeta.created", sentinel.to_json())
    seen = []
    while True:
        key, status = statuses.next()
        seen.append(key)
        if key == "provisioning.zeta.ready":
            break
        assert key == "provisioning.acme.failed"
        assert data_of(status).reason
        assert data_of(status).order_id  # the api matches the failure to its order
    assert seen.count("provisioning.acme.failed") == 3
    assert sorted(p.name for p in Path(settings.manifests_dir).iterdir()) == ["zeta"]
    assert users_of(topology_broker) == ["zeta.dev-1"]


@pytest.mark.usefixtures("clean_users")
def test_a_cancellation_removes_the_stack_the_users_and_the_series(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    settings_for: Callable[..., Any],
    running: Callable[..., Any],
    purchase: Callable[..., Envelope],
) -> None:
    settings = settings_for(topology_broker, influx_db)
    running(settings, ManifestsTarget(settings.manifests_dir))
    statuses = Statuses(topology_broker)
    for client in ("acme", "other"):
        publish(topology_broker, f"purchases.{client}.created", purchase(client=client).to_json())
    assert sorted(statuses.next()[0] for _ in range(2)) == [
        "provisioning.acme.ready",
        "provisioning.other.ready",
    ]
    lines = "\n".join(f"telemetry,client={c},device=dev-1 t=1" for c in ["acme", "other"])
    httpx.post(
        f"{influx_db.url}/write", params={"db": influx_db.name}, content=lines
    ).raise_for_status()

    cancel = purchase(client="acme", action="cancelled")
    publish(topology_broker, "purchases.acme.cancelled", cancel.to_json())
    key, status = statuses.next()
    assert key == "provisioning.acme.ready"
    assert status.trace_id == cancel.trace_id
    assert {"Namespace/acme", "User/acme.dev-1"} <= set(data_of(status).applied)
    assert sorted(p.name for p in Path(settings.manifests_dir).iterdir()) == ["other"]
    assert users_of(topology_broker) == ["other.dev-1"]
    rows = influx_rows(influx_db, 'SELECT * FROM "telemetry"')
    assert [r["client"] for r in rows] == ["other"]
    outcomes = influx_rows(influx_db, 'SELECT * FROM "provisioning" WHERE "client" = \'acme\'')
    assert [o["status"] for o in outcomes] == ["ready", "cancelled"]


@pytest.mark.usefixtures("clean_users")
def test_a_credentials_event_rotates_a_devices_secret(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    settings_for: Callable[..., Any],
    running: Callable[..., Any],
    purchase: Callable[..., Envelope],
    secrets_of: dict[str, str],
    mqtt_device: Callable[..., Any],
) -> None:
    settings = settings_for(topology_broker, influx_db)
    running(settings, ManifestsTarget(settings.manifests_dir))
    statuses = Statuses(topology_broker)
    publish(topology_broker, "purchases.acme.created", purchase().to_json())
    assert statuses.next()[0] == "provisioning.acme.ready"
    old_secret = secrets_of["dev-1"]
    rotation = purchase(action="credentials")
    publish(topology_broker, "purchases.acme.credentials", rotation.to_json())
    key, status = statuses.next()
    assert key == "provisioning.acme.ready"
    assert data_of(status).applied == ["User/acme.dev-1"]
    assert not mqtt_device(topology_broker, "acme", "dev-1", old_secret).ok()
    assert mqtt_device(topology_broker, "acme", "dev-1", secrets_of["dev-1"]).ok()


@pytest.mark.asyncio
@pytest.mark.usefixtures("clean_users")
async def test_a_5xx_from_the_api_server_is_retried_then_succeeds(
    kmock: Any,
    kube_target: KubernetesTarget,
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    settings_for: Callable[..., Any],
    running: Callable[..., Any],
    purchase: Callable[..., Envelope],
) -> None:
    settings = settings_for(topology_broker, influx_db, provisioner_target="kubernetes")
    running(settings, kube_target)
    statuses = Statuses(topology_broker)
    kmock.failures.append(503)
    env = purchase()
    publish(topology_broker, "purchases.acme.created", env.to_json())
    key, status = await asyncio.to_thread(statuses.next)
    assert key == "provisioning.acme.ready"
    assert status.trace_id == env.trace_id
    assert ("deployments", "acme", "product-a") in kmock.live()
    namespace_applies = [r for r in kmock if r.method == "PATCH" and r.url.path.endswith("/acme")]
    assert len(namespace_applies) == 2  # the failed attempt and the retry
    versions = kmock.versions()

    # Redelivery of the same purchase: applied again, nothing changes.
    publish(topology_broker, "purchases.acme.created", env.to_json())
    key, _ = await asyncio.to_thread(statuses.next)
    assert key == "provisioning.acme.ready"
    assert kmock.versions() == versions
    assert set(versions.values()) == {1}


FAST = Topology((WorkQueue("q.provisioning", ("purchases.#",), retry_delays_ms=(50, 50)),))


@pytest.mark.asyncio
@pytest.mark.usefixtures("clean_users")
async def test_when_retries_are_used_up_it_dead_letters_and_fails(
    kmock: Any,
    kube_target: KubernetesTarget,
    broker: Broker,
    influx_db: InfluxDatabase,
    settings_for: Callable[..., Any],
    running: Callable[..., Any],
    purchase: Callable[..., Envelope],
) -> None:
    settings = settings_for(broker, influx_db, provisioner_target="kubernetes")
    running(settings, kube_target, topology=FAST)
    statuses = Statuses(broker)
    kmock.failures.extend([503, 503, 503])
    env = purchase()
    publish(broker, "purchases.acme.created", env.to_json())
    key, status = await asyncio.to_thread(statuses.next)
    assert key == "provisioning.acme.failed"
    assert status.trace_id == env.trace_id
    assert "503" in (data_of(status).reason or "")
    ((body, headers),) = await asyncio.to_thread(dead_letters, broker, "q.provisioning.dead", 1)
    assert "retries used up" in headers["x-iotgw-reason"]
    assert headers["x-original-routing-key"] == "purchases.acme.created"
    assert Envelope.from_json(body).message_attributes.retrace_intent == 2
    assert kmock.live() == {}


@pytest.mark.usefixtures("clean_users")
def test_workers_reconnect_after_a_broker_outage(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    settings_for: Callable[..., Any],
    running: Callable[..., Any],
    purchase: Callable[..., Envelope],
) -> None:
    settings = settings_for(topology_broker, influx_db)
    provisioner = running(settings, ManifestsTarget(settings.manifests_dir))
    topology_broker.node.stop_app()
    topology_broker.node.start_app()
    topology_broker.connections.clear()  # the outage closed them
    statuses = Statuses(topology_broker)
    env = purchase()
    publish(topology_broker, "purchases.acme.created", env.to_json())
    key, status = statuses.next()
    assert key == "provisioning.acme.ready"
    assert status.trace_id == env.trace_id
    assert provisioner.alive()
