"""The kubernetes target against kmock over real HTTP (server-side apply, one field manager)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes import client as k8s

from iotgw.provisioner.catalog import load_catalog
from iotgw.provisioner.errors import PermanentError, TransientError
from iotgw.provisioner.kube import KubernetesTarget
from iotgw.provisioner.render import render_stack
from iotgw.provisioner.request import StackSpec

TRACE = "0b7c3c8e-5d2a-4d55-9a8e-2f6f7d1c0e11"
EXPECTED = {
    ("namespaces", None, "acme"),
    ("serviceaccounts", "acme", "workload"),
    ("resourcequotas", "acme", "tier-quota"),
    ("limitranges", "acme", "tier-defaults"),
    ("networkpolicies", "acme", "default-deny-ingress"),
    ("services", "acme", "product-b"),
    ("deployments", "acme", "product-b"),
}


def stack(hardware: str = "Classic") -> list[dict[str, Any]]:
    spec = StackSpec("acme", "Product-B", "Stage", hardware, TRACE)  # type: ignore[arg-type]
    return render_stack(spec, load_catalog(), "iotgw")


@pytest.mark.asyncio
async def test_a_purchase_results_in_exactly_the_expected_objects(
    kmock: Any, kube_target: KubernetesTarget
) -> None:
    objects = stack()
    applied = await asyncio.to_thread(kube_target.apply, "acme", objects)
    assert applied == [f"{o['kind']}/{o['metadata']['name']}" for o in objects]
    live = kmock.live()
    assert set(live) == EXPECTED
    assert live["deployments", "acme", "product-b"] == objects[-1]
    assert next(r.method for r in kmock) == "GET"  # ownership check of the namespace first
    patches = [r for r in kmock if r.method == "PATCH"]
    assert len(patches) == len(EXPECTED)
    for request in patches:
        assert request.headers["Content-Type"] == "application/apply-patch+yaml"
        assert request.params == {"fieldManager": "iotgw-provisioner", "force": "true"}
    assert not [r for r in kmock if r.method in {"POST", "PUT", "DELETE"}]
    assert len([r for r in kmock if r.method == "GET"]) == 1


@pytest.mark.asyncio
async def test_applying_twice_changes_nothing(kmock: Any, kube_target: KubernetesTarget) -> None:
    await asyncio.to_thread(kube_target.apply, "acme", stack())
    first, versions = kmock.live(), kmock.versions()
    await asyncio.to_thread(kube_target.apply, "acme", stack())
    assert kmock.live() == first
    assert kmock.versions() == versions
    assert set(versions.values()) == {1}


@pytest.mark.asyncio
async def test_a_changed_purchase_updates_in_place(
    kmock: Any, kube_target: KubernetesTarget
) -> None:
    await asyncio.to_thread(kube_target.apply, "acme", stack("Classic"))
    await asyncio.to_thread(kube_target.apply, "acme", stack("Dedicated"))
    pod = kmock.live()["deployments", "acme", "product-b"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"iotgw.io/dedicated": "acme"}
    assert set(kmock.live()) == EXPECTED


@pytest.mark.asyncio
async def test_a_5xx_is_transient_and_the_retry_succeeds(
    kmock: Any, kube_target: KubernetesTarget
) -> None:
    kmock.failures.extend([503])
    with pytest.raises(TransientError, match="503"):
        await asyncio.to_thread(kube_target.apply, "acme", stack())
    assert kmock.live() == {}
    await asyncio.to_thread(kube_target.apply, "acme", stack())
    assert set(kmock.live()) == EXPECTED


@pytest.mark.asyncio
async def test_a_4xx_is_permanent(kmock: Any, kube_target: KubernetesTarget) -> None:
    kmock.failures.extend([403])
    with pytest.raises(PermanentError, match="403"):
        await asyncio.to_thread(kube_target.apply, "acme", stack())


@pytest.mark.asyncio
async def test_an_unreachable_server_is_transient() -> None:
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"
    target = KubernetesTarget(k8s.ApiClient(configuration), timeout=2)
    with pytest.raises(TransientError):
        await asyncio.to_thread(target.apply, "acme", stack())


@pytest.mark.asyncio
async def test_remove_deletes_the_namespace_and_is_idempotent(
    kmock: Any, kube_target: KubernetesTarget
) -> None:
    await asyncio.to_thread(kube_target.apply, "acme", stack())
    assert await asyncio.to_thread(kube_target.remove, "acme") == ["Namespace/acme"]
    assert kmock.live() == {}
    assert await asyncio.to_thread(kube_target.remove, "acme") == []


@pytest.mark.asyncio
async def test_a_namespace_the_provisioner_does_not_own_is_never_touched(
    kmock: Any, kube_target: KubernetesTarget
) -> None:
    kmock.add_namespace("acme", {"team": "observability"})
    before = kmock.live()
    with pytest.raises(PermanentError, match="not managed by"):
        await asyncio.to_thread(kube_target.apply, "acme", stack())
    with pytest.raises(PermanentError, match="not managed by"):
        await asyncio.to_thread(kube_target.remove, "acme")
    assert kmock.live() == before
    assert not [r for r in kmock if r.method in {"PATCH", "DELETE"}]


def test_objects_outside_the_clients_namespace_are_refused() -> None:
    objects = stack()
    objects[1]["metadata"]["namespace"] = "kube-system"
    target = KubernetesTarget(k8s.ApiClient(k8s.Configuration()))  # refused before any call
    with pytest.raises(PermanentError, match="outside"):
        target.apply("acme", objects[1:2])
