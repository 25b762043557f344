"""The provisioner's RBAC grants exactly what kube.py uses: no more verbs, no wildcards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from iotgw.provisioner.kube import RESOURCES, VERBS

RBAC_DIR = Path(__file__).resolve().parents[2] / "deploy" / "base" / "provisioner"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((RBAC_DIR / name).read_text())
    return data


def test_the_cluster_role_grants_exactly_the_verbs_the_code_uses() -> None:
    role = load("clusterrole.yaml")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource, *rule["verbs"])
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    used = {(r.group, r.plural): set(VERBS[r.plural]) for r in RESOURCES.values()}
    assert granted == used


def test_the_folder_is_a_kustomization_of_valid_objects() -> None:
    listed = load("kustomization.yaml")["resources"]
    assert sorted(listed) == sorted(
        p.name for p in RBAC_DIR.glob("*.yaml") if p.stem != "kustomization"
    )
    for name in listed:
        kubernetes_validate.validate(load(name), "1.33.0", strict=True)
    binding = load("clusterrolebinding.yaml")
    account = load("serviceaccount.yaml")
    assert binding["roleRef"]["name"] == load("clusterrole.yaml")["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
