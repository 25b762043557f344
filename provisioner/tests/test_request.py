"""Validation before any use: injection attempts and bad names are refused with a reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from iotgw.contracts.envelope import Envelope
from iotgw.provisioner.catalog import load_catalog
from iotgw.provisioner.request import InvalidPurchaseError, parse_purchase

CATALOG = load_catalog()


def tamper(envelope: Envelope, **changes: Any) -> bytes:
    raw = json.loads(envelope.to_json())
    raw.update(changes)
    return json.dumps(raw).encode()


def test_a_valid_purchase_parses(purchase: Any) -> None:
    env = purchase(devices=("dev-1", "dev-2"))
    request = parse_purchase("purchases.acme.created", env.to_json(), CATALOG, "iotgw")
    assert request.client == "acme"
    assert [d.id for d in request.devices] == ["dev-1", "dev-2"]
    assert request.spec.trace_id == str(env.trace_id)


@pytest.mark.parametrize(
    "client",
    ["Acme", "acme;rm -rf /", "$(reboot)", "../etc", "a" * 64, "acme.evil", "-acme", ""],
)
def test_bad_client_names_are_refused_without_a_reply(purchase: Any, client: str) -> None:
    body = tamper(purchase(), client=client, namespace=client)
    with pytest.raises(InvalidPurchaseError) as refused:
        parse_purchase("purchases.acme.created", body, CATALOG, "iotgw")
    assert "client" in refused.value.reason
    # The body names another client than the routing key: nobody to tell safely.
    assert refused.value.reply is None


@pytest.mark.parametrize("key", ["purchases.Acme.created", "purchases.$(x).created", "x.acme.y"])
def test_bad_routing_keys_are_refused(purchase: Any, key: str) -> None:
    with pytest.raises(InvalidPurchaseError) as refused:
        parse_purchase(key, purchase().to_json(), CATALOG, "iotgw")
    assert refused.value.reply is None


@pytest.mark.parametrize("product", ["Product-Z", "Product-A;ls", "$(id)", "../Product-A"])
def test_bad_products_are_refused_with_a_reply_to_the_client(purchase: Any, product: str) -> None:
    env = purchase()
    with pytest.raises(InvalidPurchaseError) as refused:
        parse_purchase("purchases.acme.created", tamper(env, product=product), CATALOG, "iotgw")
    assert "product" in refused.value.reason
    reply = refused.value.reply
    assert reply is not None
    assert reply.client == "acme"
    assert reply.trace_id == env.trace_id
    assert refused.value.order_id == (env.data or {})["order_id"]


@pytest.mark.parametrize("client", ["kube-system", "default", "iotgw", "kube-anything"])
def test_reserved_namespaces_are_refused(purchase: Any, client: str) -> None:
    body = purchase(client=client).to_json()
    with pytest.raises(InvalidPurchaseError, match="reserved"):
        parse_purchase(f"purchases.{client}.created", body, CATALOG, "iotgw")


def test_namespace_must_be_the_client(purchase: Any) -> None:
    body = tamper(purchase(), namespace="kube-system")
    with pytest.raises(InvalidPurchaseError, match="namespace"):
        parse_purchase("purchases.acme.created", body, CATALOG, "iotgw")


def test_routing_key_and_body_must_agree(purchase: Any) -> None:
    with pytest.raises(InvalidPurchaseError, match="differs"):
        parse_purchase("purchases.other.created", purchase().to_json(), CATALOG, "iotgw")


@pytest.mark.parametrize(
    "devices",
    [
        [{"id": "Dev;1", "password_hash": "x" * 48}],
        [{"id": "dev-1", "password_hash": "not-a-hash-at-all"}],
    ],
)
def test_bad_devices_are_refused(purchase: Any, devices: list[dict[str, str]]) -> None:
    env = purchase()
    data = dict(env.data or {}) | {"devices": devices}
    with pytest.raises(InvalidPurchaseError, match="Data"):
        parse_purchase("purchases.acme.created", tamper(env, Data=data), CATALOG, "iotgw")


def test_duplicate_devices_are_refused(purchase: Any) -> None:
    env = purchase(devices=("dev-1",))
    data = dict(env.data or {})
    data["devices"] = data["devices"] * 2
    with pytest.raises(InvalidPurchaseError, match="unique"):
        parse_purchase("purchases.acme.created", tamper(env, Data=data), CATALOG, "iotgw")


def test_garbage_is_refused_and_answered_on_the_routing_keys_client() -> None:
    with pytest.raises(InvalidPurchaseError) as refused:
        parse_purchase("purchases.acme.created", b"\xff not json", CATALOG, "iotgw")
    assert refused.value.reply is not None
    assert refused.value.reply.client == "acme"
