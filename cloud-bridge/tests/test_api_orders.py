"""Orders over real HTTP: purchase events, idempotency under concurrency, broker outage,
status from the provisioner, server-sent events, bad input."""

from __future__ import annotations

import json
import threading
import uuid

import httpx
from sqlalchemy import func, select

from iotgw.cloud_bridge.api.testing import ApiServer, drain, wait_for
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.cloud_bridge.registry.models import Order, OutboxMessage
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import ProvisioningData, PurchaseData
from iotgw.contracts.topics import ProvisioningOutcome, provisioning_routing_key
from iotgw.contracts.topology import API_STATUS_QUEUE, PROVISIONING_QUEUE, TOPIC_EXCHANGE
from iotgw.localstack.pytest_plugin import Broker

ORDER = {
    "product": "Product-A",
    "environment": "Development",
    "archtype": "SaaS",
    "hardware": "Dedicated",
    "quantity": 2,
}


def _status(api: ApiServer, key: str, order_id: str) -> str:
    with api.http(key) as http:
        status: str = http.get(f"/v1/orders/{order_id}").json()["status"]
    return status


def _provisioned(broker: Broker, client: str, order: dict[str, object], ready: bool) -> None:
    envelope = Envelope.new(
        client=client,
        product=str(order["product"]),
        app="provisioner",
        action="ready" if ready else "failed",
        publisher="provisioner",
        trace_id=uuid.UUID(str(order["trace_id"])),
        data=ProvisioningData(
            order_id=str(order["id"]), reason=None if ready else "quota exceeded"
        ).model_dump(),
    )
    outcome = ProvisioningOutcome.READY if ready else ProvisioningOutcome.FAILED
    broker.channel().basic_publish(
        TOPIC_EXCHANGE, provisioning_routing_key(client, outcome), envelope.to_json()
    )


def test_order_publishes_purchase_event_with_its_trace_id(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    with api.http(key) as http:
        response = http.post("/v1/orders", json=ORDER)
        assert response.status_code == 201, response.text
        order = response.json()
        assert order["status"] == "Pending"
        assert len(order["devices"]) == 2
        assert all(d["mqtt_username"].startswith("acme.") for d in order["devices"])
        assert http.get("/v1/orders").json()[0]["id"] == order["id"]
    (routing_key, props, body), *rest = drain(topology_broker.channel(), PROVISIONING_QUEUE)
    assert rest == []
    assert routing_key == "purchases.acme.created"
    envelope = Envelope.from_json(body)
    assert str(envelope.trace_id) == order["trace_id"]
    assert envelope.metadata.publisher == "api"
    assert PurchaseData.model_validate(envelope.data).order_id == order["id"]
    assert props.message_id
    assert not any(d["secret"] in body.decode() for d in order["devices"])
    wait_for(lambda: _status(api, key, order["id"]) == "Provisioning", what="Provisioning")


def test_concurrent_posts_with_one_idempotency_key_create_one_order_and_one_event(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def buy() -> None:
        with api.http(key) as http:
            start.wait()
            answers.append(http.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "k-1"}))

    threads = [threading.Thread(target=buy) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    with api.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1
    events = drain(topology_broker.channel(), PROVISIONING_QUEUE)
    assert [rk for rk, _, _ in events] == ["purchases.acme.created"]
    with api.http(key) as http:
        other = dict(ORDER, quantity=5)
        conflict = http.post("/v1/orders", json=other, headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409


def test_orders_taken_while_the_broker_is_down_are_published_once_it_is_back(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    node = topology_broker.node
    node.stop_app()
    try:
        with api.http(key) as http:
            ids = []
            for n in range(3):
                response = http.post(
                    "/v1/orders", json=ORDER, headers={"Idempotency-Key": f"outage-{n}"}
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            assert {o["status"] for o in http.get("/v1/orders").json()} == {"Pending"}
        with api.sessions() as s:
            assert repo.outbox_backlog(s) == 3
    finally:
        node.start_app()
    wait_for(
        lambda: all(_status(api, key, i) == "Provisioning" for i in ids),
        timeout=30,
        what="orders published after the outage",
    )
    events = drain(topology_broker.channel(), PROVISIONING_QUEUE)
    published = [
        PurchaseData.model_validate(Envelope.from_json(b).data).order_id for _, _, b in events
    ]
    assert sorted(published) == sorted(ids)


def test_provisioner_status_drives_the_order_and_its_event_stream(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    with api.http(key) as http:
        order = http.post("/v1/orders", json=ORDER).json()
        wait_for(lambda: _status(api, key, order["id"]) == "Provisioning", what="Provisioning")
        seen: list[str] = []
        with http.stream("GET", f"/v1/orders/{order['id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:])["status"])
                    if len(seen) == 1:
                        _provisioned(topology_broker, "acme", order, ready=True)
        assert seen == ["Provisioning", "Ready"]
        failed = http.post("/v1/orders", json=ORDER).json()
        _provisioned(topology_broker, "acme", failed, ready=False)
        wait_for(lambda: _status(api, key, failed["id"]) == "Failed", what="Failed")
        assert http.get(f"/v1/orders/{failed['id']}").json()["reason"] == "quota exceeded"


def test_malformed_status_event_is_dead_lettered_and_the_consumer_carries_on(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    channel = topology_broker.channel()
    channel.basic_publish(TOPIC_EXCHANGE, "provisioning.acme.ready", b"{not json")
    with api.http(key) as http:
        order = http.post("/v1/orders", json=ORDER).json()
    _provisioned(topology_broker, "acme", order, ready=True)
    wait_for(lambda: _status(api, key, order["id"]) == "Ready", what="Ready")
    dead = drain(channel, f"{API_STATUS_QUEUE}.dead", idle=0.5)
    assert len(dead) == 1
    reason = dead[0][1].headers["x-iotgw-reason"]
    assert isinstance(reason, str | bytes)


def test_bad_input_names_the_field_and_writes_nothing(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    cases = [
        (dict(ORDER, quantity=0), "quantity"),
        (dict(ORDER, environment="Prod"), "environment"),
        (dict(ORDER, product="bad product!"), "product"),
        ({k: v for k, v in ORDER.items() if k != "hardware"}, "hardware"),
        (dict(ORDER, extra="x"), "extra"),
    ]
    with api.http(key) as http:
        for body, field in cases:
            response = http.post("/v1/orders", json=body)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/json"
            assert [e["field"] for e in response.json()["errors"]] == [field]
        assert (
            http.post(
                "/v1/orders", content=b"{", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        assert http.get("/v1/orders").json() == []
    with api.sessions() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 0
    declared = topology_broker.channel().queue_declare(PROVISIONING_QUEUE, passive=True)
    assert declared.method.message_count == 0


def test_keys_are_required_and_scoped(api: ApiServer) -> None:
    key_a = api.new_client("alpha")
    key_b = api.new_client("beta")
    with api.http(key_b) as http:
        order_b = http.post("/v1/orders", json=ORDER).json()
    device_b = order_b["devices"][0]["id"]
    with api.http() as anonymous:
        assert anonymous.get("/v1/orders").status_code == 401
    with api.http("iotgw_not-a-key") as wrong:
        assert wrong.get("/v1/orders").status_code == 401
    with httpx.Client(base_url=api.url, cookies={"iotgw_api_key": key_b}) as browser:
        assert browser.get(f"/v1/orders/{order_b['id']}").status_code == 200
        # A cookie never authorises a write (cross-site request forgery).
        assert browser.post("/v1/orders", json=ORDER).status_code == 401
    with api.http(key_a) as http:
        assert http.get(f"/v1/orders/{order_b['id']}").status_code == 404
        assert http.get(f"/v1/orders/{order_b['id']}/events").status_code == 404
        assert http.get(f"/v1/devices/{device_b}").status_code == 404
        assert http.get(f"/v1/devices/{device_b}/telemetry/latest").status_code == 404
        assert http.post(f"/v1/devices/{device_b}/credentials").status_code == 404
        put = http.put(
            f"/v1/devices/{device_b}/config",
            json={"sampling_interval_s": 1},
            headers={"If-Match": '"0"'},
        )
        assert put.status_code == 404
        assert http.get("/v1/orders").json() == []
        assert http.get("/v1/devices").json() == []
        assert http.get("/v1/operator/clients").status_code == 401
    with api.http(key_b) as http:
        assert http.get(f"/v1/devices/{device_b}").json()["desired_version"] == 0
