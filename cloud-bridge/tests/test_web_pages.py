"""The pages over real HTTP (no browser): sign-in, cookie flags, access rules, escaping, headers."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from iotgw.cloud_bridge.api.auth import COOKIE
from iotgw.cloud_bridge.api.testing import ApiServer, wait_for
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import ProvisioningData
from iotgw.contracts.topics import ProvisioningOutcome, provisioning_routing_key
from iotgw.contracts.topology import TOPIC_EXCHANGE
from iotgw.localstack.pytest_plugin import Broker

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

ORDER = {
    "product": "Product-A",
    "environment": "Stage",
    "archtype": "Edge",
    "hardware": "Classic",
    "quantity": 1,
}
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _browser(api: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=api.url, timeout=30, follow_redirects=False)


def _sign_in(http: httpx.Client, key: str) -> httpx.Response:
    return http.post(
        "/portal/login",
        content=f"api_key={key}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": str(http.base_url).rstrip("/"),
        },
    )


def test_sign_in_sets_a_strict_httponly_cookie_and_opens_the_portal(api: ApiServer) -> None:
    key = api.new_client("acme")
    with _browser(api) as http:
        assert http.get("/portal").headers["location"] == "/portal/login"
        response = _sign_in(http, key)
        assert response.status_code == 303
        assert response.headers["location"] == "/portal"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        page = http.get("/portal")
        assert page.status_code == 200
        assert "Client <strong>acme</strong>" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        # The cookie reads, it never writes: buying needs the key in a header.
        assert http.post("/v1/orders", json=ORDER).status_code == 401
        signed_out = http.post("/portal/logout")
        assert signed_out.status_code == 303
        assert f'{COOKIE}=""' in signed_out.headers["set-cookie"]


def test_wrong_key_and_cross_site_sign_in_are_refused(api: ApiServer) -> None:
    key = api.new_client("acme")
    with _browser(api) as http:
        wrong = _sign_in(http, "iotgw_not-a-key")
        assert wrong.status_code == 401
        assert "Unknown API key." in wrong.text
        assert "set-cookie" not in wrong.headers
        forged = http.post(
            "/portal/login",
            content=f"api_key={key}",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": "https://evil.example",
            },
        )
        assert forged.status_code == 403
        assert "set-cookie" not in forged.headers


def test_clients_page_needs_the_operator_key(api: ApiServer) -> None:
    key = api.new_client("acme")
    operator = api.settings.operator_key
    assert operator is not None
    with _browser(api) as http:
        _sign_in(http, key)
        assert http.get("/operator/clients").headers["location"] == "/portal/login"
    with _browser(api) as http:
        response = _sign_in(http, operator.get_secret_value())
        assert response.headers["location"] == "/operator/clients"
        page = http.get("/operator/clients")
        assert page.status_code == 200
        assert 'data-client="acme"' in page.text


def test_everything_shown_is_escaped(api: ApiServer, topology_broker: Broker) -> None:
    key = api.new_client("acme")
    with api.http(key) as client:
        order = client.post("/v1/orders", json=ORDER).json()
    envelope = Envelope.new(
        client="acme",
        product="Product-A",
        app="provisioner",
        action="failed",
        publisher="provisioner",
        trace_id=uuid.UUID(order["trace_id"]),
        data=ProvisioningData(order_id=order["id"], reason=HOSTILE).model_dump(),
    )
    topology_broker.channel().basic_publish(
        TOPIC_EXCHANGE,
        provisioning_routing_key("acme", ProvisioningOutcome.FAILED),
        envelope.to_json(),
    )
    with api.http(key) as client:
        wait_for(
            lambda: client.get(f"/v1/orders/{order['id']}").json()["status"] == "Failed",
            what="order failed",
        )
    # A device's refusal reason is the device's own text: shown, escaped.
    with api.sessions.begin() as session:
        device = order["devices"][0]["id"]
        repo.record_state(
            session, "acme", device, 0, time.time(), rejected_version=1, reason=HOSTILE
        )
    with _browser(api) as http:
        _sign_in(http, key)
        page = http.get("/portal").text
    assert page.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") == 2
    assert "v1 refused: &lt;script&gt;" in page
    assert "<script>alert" not in page
    assert "<img src=x" not in page
