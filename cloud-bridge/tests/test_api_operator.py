"""Operator endpoints, health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.settings import ApiSettings
from iotgw.cloud_bridge.api.testing import ApiServer, serve_api, wait_for
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import ProvisioningData
from iotgw.contracts.topology import TOPIC_EXCHANGE
from iotgw.localstack.pytest_plugin import Broker

ORDER = {
    "product": "Product-B",
    "environment": "Production",
    "archtype": "Edge",
    "hardware": "Dedicated",
    "quantity": 1,
}


def test_operator_lists_every_client_with_products_hardware_deployment_and_status(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("cliente02")
    api.new_client("idle")
    with api.http(key) as http:
        order = http.post("/v1/orders", json=ORDER).json()
    envelope = Envelope.new(
        client="cliente02",
        product="Product-B",
        app="provisioner",
        action="ready",
        publisher="provisioner",
        data=ProvisioningData(order_id=order["id"]).model_dump(),
    )
    topology_broker.channel().basic_publish(
        TOPIC_EXCHANGE, "provisioning.cliente02.ready", envelope.to_json()
    )
    with api.http(api.settings.operator_key.get_secret_value()) as http:  # type: ignore[union-attr]

        def ready() -> bool:
            rows = http.get("/v1/operator/clients").json()
            return bool(rows[0]["status"] == "Ready")

        wait_for(ready, what="client Ready in the operator list")
        rows = http.get("/v1/operator/clients").json()
        assert http.post("/v1/operator/clients", json={"name": "idle"}).status_code == 409
        bad = http.post("/v1/operator/clients", json={"name": "Not_A_Label"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["field"] == "name"
        extra = http.post("/v1/operator/clients/cliente02/keys")
        assert extra.status_code == 201
        assert http.post("/v1/operator/clients/nobody/keys").status_code == 404
    first, idle = rows
    assert first["name"] == "cliente02"
    assert (first["products"], first["hardware"], first["devices"]) == (
        ["Product-B"],
        ["Dedicated"],
        1,
    )
    assert first["deployed_at"] is not None
    assert first["orders"][0]["trace_id"] == order["trace_id"]
    assert (idle["name"], idle["status"], idle["orders"]) == ("idle", None, [])
    with api.http(extra.json()["api_key"]) as http:
        assert http.get(f"/v1/orders/{order['id']}").status_code == 200


def test_operator_endpoints_refuse_without_a_configured_key(
    sessions: sessionmaker[Session], api_settings: ApiSettings
) -> None:
    settings = api_settings.model_copy(update={"operator_key": None})
    with serve_api(sessions, settings, workers=False) as api, api.http("anything") as http:
        assert http.get("/v1/operator/clients").status_code == 403
        assert http.post("/v1/operator/clients", json={"name": "x"}).status_code == 403
    with serve_api(sessions, api_settings, workers=False) as api, api.http("wrong") as http:
        assert http.get("/v1/operator/clients").status_code == 401


def test_health_readiness_metrics_and_docs(
    api: ApiServer, sessions: sessionmaker[Session], api_settings: ApiSettings
) -> None:
    with api.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"database": "ok", "broker": "ok"}
        http.get("/v1/orders")
        metrics = http.get("/metrics").text
        assert 'iotgw_api_requests_total{method="GET",route="/v1/orders",status="401"}' in metrics
        assert "iotgw_outbox_backlog 0.0" in metrics
        paths = http.get("/openapi.json").json()["paths"]
        assert {"/v1/orders", "/v1/devices/{device_id}/config", "/v1/operator/clients"} <= set(
            paths
        )
        assert http.get("/docs").status_code == 200
    no_broker = api_settings.model_copy(update={"amqp_url": "amqp://guest:guest@127.0.0.1:9/%2F"})
    with serve_api(sessions, no_broker, workers=False) as down, down.http() as http:
        answer = http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["broker"] == "unreachable"
