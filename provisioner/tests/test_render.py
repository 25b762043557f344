"""Rendering: exactly the expected objects, hardened pods, tiers, and strict schema validation."""

from __future__ import annotations

import itertools
from typing import Any

import kubernetes_validate
import pytest

from iotgw.provisioner.catalog import load_catalog
from iotgw.provisioner.render import render_stack
from iotgw.provisioner.request import StackSpec

K8S_VERSION = "1.33.0"
TRACE = "9a2ae9de-1111-4222-8333-444455556666"


def spec(product: str = "Product-A", hardware: str = "Classic") -> StackSpec:
    return StackSpec("acme", product, "Production", hardware, TRACE)  # type: ignore[arg-type]


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_a_purchase_renders_exactly_the_stack() -> None:
    objects = render_stack(spec(), load_catalog(), "iotgw")
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [
        ("Namespace", "acme"),
        ("ServiceAccount", "workload"),
        ("ResourceQuota", "tier-quota"),
        ("LimitRange", "tier-defaults"),
        ("NetworkPolicy", "default-deny-ingress"),
        ("Service", "product-a"),
        ("Deployment", "product-a"),
    ]
    for obj in objects:
        meta = obj["metadata"]
        assert meta["labels"]["iotgw.io/client"] == "acme"
        assert meta["labels"]["iotgw.io/product"] == "Product-A"
        assert meta["labels"]["iotgw.io/environment"] == "Production"
        assert meta["annotations"]["iotgw.io/trace-id"] == TRACE
        assert meta.get("namespace", "acme") == "acme"


def test_pods_are_hardened_and_traced() -> None:
    objects = by_kind(render_stack(spec(), load_catalog(), "iotgw"))
    assert objects["ServiceAccount"]["automountServiceAccountToken"] is False
    template = objects["Deployment"]["spec"]["template"]
    assert template["metadata"]["labels"]["iotgw.io/trace-id"] == TRACE
    assert template["metadata"]["labels"]["iotgw.io/client"] == "acme"
    assert template["metadata"]["annotations"]["iotgw.io/trace-id"] == TRACE
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert container["image"] == "ghcr.io/mycompany/product-a:1.4.2"
    assert "nodeSelector" not in pod


def test_network_policy_denies_all_but_the_platform() -> None:
    policy = by_kind(render_stack(spec(), load_catalog(), "platform"))["NetworkPolicy"]
    assert policy["spec"]["podSelector"] == {}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}}}
    ]


def test_dedicated_gets_its_node_pool_and_guaranteed_qos() -> None:
    objects = by_kind(render_stack(spec(hardware="Dedicated"), load_catalog(), "iotgw"))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"iotgw.io/dedicated": "acme"}
    assert pod["tolerations"][0]["value"] == "acme"
    resources = pod["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]
    (limits,) = objects["LimitRange"]["spec"]["limits"]
    assert limits["default"] == limits["defaultRequest"]
    classic = by_kind(render_stack(spec(), load_catalog(), "iotgw"))
    classic_res = classic["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert classic_res["requests"] != classic_res["limits"]
    assert objects["ResourceQuota"]["spec"]["hard"] != classic["ResourceQuota"]["spec"]["hard"]


@pytest.mark.parametrize(
    ("product", "hardware"),
    list(itertools.product(["Product-A", "Product-B", "Product-C"], ["Classic", "Dedicated"])),
)
def test_every_rendered_object_passes_strict_validation(product: str, hardware: str) -> None:
    for obj in render_stack(spec(product, hardware), load_catalog(), "iotgw"):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_typo() -> None:
    obj = render_stack(spec(), load_catalog(), "iotgw")[-1]
    obj["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
