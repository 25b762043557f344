"""Every overlay renders with `kubectl kustomize`; every object validates strictly; the
platform's pieces are all there; no secret is in the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from iotgw.release.policy import pod_spec, violations

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
# What a render reads: the base, the overlays and Grafana's generated files.
TREES = ("deploy/base", "deploy/overlays", "dashboards/grafana")


def kubectl() -> str:
    """The kubectl on PATH (Debian's kubernetes-client on a fresh machine)."""
    path = shutil.which("kubectl")
    if path is None:
        raise AssertionError("kubectl not found: `bash scripts/bootstrap.sh --tests` installs it")
    return path


def checkout_copy(dest: Path) -> Path:
    """A copy of the deploy trees with the dev overlay's secrets.env made from the example, so
    the render never touches (or needs) the developer's own ignored secrets file."""
    for tree in TREES:
        shutil.copytree(ROOT / tree, dest / tree, ignore=shutil.ignore_patterns("secrets.env"))
    dev = dest / "deploy/overlays/dev"
    shutil.copy(dev / "secrets.env.example", dev / "secrets.env")
    return dest


def render(kustomization: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize <dir>` parsed into objects; raises on any render error."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(kustomization)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


KUBERNETES_VERSION = "1.30.0"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

# kubernetes-validate knows only built-in kinds; the one custom resource we ship is checked
# against the fields of External Secrets Operator's v1beta1 ExternalSecret that we use.
EXTERNAL_SECRET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "external-secrets.io/v1beta1"},
        "kind": {"const": "ExternalSecret"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["secretStoreRef", "target", "dataFrom"],
            "additionalProperties": False,
            "properties": {
                "refreshInterval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                "secretStoreRef": {
                    "type": "object",
                    "required": ["kind", "name"],
                    "additionalProperties": False,
                    "properties": {
                        "kind": {"enum": ["SecretStore", "ClusterSecretStore"]},
                        "name": {"type": "string"},
                    },
                },
                "target": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string"},
                        "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]},
                    },
                },
                "dataFrom": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "extract": {
                                "type": "object",
                                "required": ["key"],
                                "properties": {"key": {"type": "string"}},
                            }
                        },
                    },
                },
            },
        },
    },
}


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each overlay (and the base) rendered from a copy of the checkout."""
    root = checkout_copy(tmp_path_factory.mktemp("checkout"))
    out = {name: render(root / "deploy/overlays" / name) for name in OVERLAYS}
    out["base"] = render(root / "deploy/base")
    return out


_HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def _named(objects: list[dict[str, Any]], kind: str) -> set[str]:
    """Names of the objects of `kind`, without the content hash generated objects carry."""
    return {_HASH_SUFFIX.sub("", obj["metadata"]["name"]) for obj in objects if obj["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_platform(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """RabbitMQ, InfluxDB, PostgreSQL, Grafana and the iotgw processes, with their
    autoscaler, disruption budgets, network policies and Grafana's ConfigMaps."""
    objects = rendered[overlay]
    assert _named(objects, "StatefulSet") == {"rabbitmq", "influxdb", "postgres"}
    assert _named(objects, "Deployment") == {"api", "ingest", "presence", "provisioner", "grafana"}
    assert _named(objects, "HorizontalPodAutoscaler") == {"ingest"}
    assert {"ingest", "api"} <= _named(objects, "PodDisruptionBudget")
    assert "default-deny-ingress" in _named(objects, "NetworkPolicy")
    assert {
        "grafana-dashboards",
        "grafana-datasources",
        "grafana-dashboard-providers",
        "grafana-alerting",
        "rabbitmq-config",
        "iotgw-config",
    } <= _named(objects, "ConfigMap")
    namespace = "iotgw-dev" if overlay == "dev" else "iotgw"
    assert _named(objects, "Namespace") == {namespace}
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]
    # The provisioner runs under its own ServiceAccount, bound in the overlay's namespace.
    provisioner = _one(objects, "Deployment", "provisioner")["spec"]["template"]["spec"]
    assert provisioner["serviceAccountName"] in _named(objects, "ServiceAccount")
    (binding,) = [obj for obj in objects if obj["kind"] == "ClusterRoleBinding"]
    account = provisioner["serviceAccountName"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    ]


def test_grafana_configmaps_carry_the_generated_files(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The dashboards ConfigMap holds the committed JSON byte for byte, and Grafana mounts it."""
    (dashboards,) = [
        obj
        for obj in rendered["prod"]
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("grafana-dashboards")
    ]
    committed = sorted((ROOT / "dashboards/grafana/dashboards").glob("*.json"))
    assert sorted(dashboards["data"]) == [path.name for path in committed]
    for path in committed:
        assert dashboards["data"][path.name] == path.read_text()
    (grafana,) = [
        obj
        for obj in rendered["prod"]
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "grafana"
    ]
    volumes = {v["name"]: v for v in grafana["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dashboards"]["configMap"]["name"] == dashboards["metadata"]["name"]


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_object_validates_strictly(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """kubernetes-validate in strict mode (unknown fields are errors) on every object."""
    for obj in rendered[overlay]:
        if obj["kind"] == "ExternalSecret":
            jsonschema.validate(obj, EXTERNAL_SECRET_SCHEMA)
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_passes_the_policy(
    rendered: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    """No privileged or root container, no missing limit, no writable root, no latest image."""
    workloads = [obj for obj in rendered[overlay] if pod_spec(obj) is not None]
    assert len(workloads) >= 7
    problems = [problem for obj in workloads for problem in violations(obj)]
    assert problems == []


def test_credentials_come_from_the_overlay_not_the_repository(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Dev generates the Secret from the ignored secrets.env, prod from an ExternalSecret; the
    example names every key the workloads read; nothing tracked is a Secret."""
    dev_secrets = [obj for obj in rendered["dev"] if obj["kind"] == "Secret"]
    assert _named(dev_secrets, "Secret") == {"iotgw-credentials"}
    assert not [obj for obj in rendered["prod"] if obj["kind"] == "Secret"]
    assert _named(rendered["prod"], "ExternalSecret") == {"iotgw-credentials"}
    ignored = subprocess.run(
        ["git", "-C", str(ROOT), "check-ignore", "-q", "deploy/overlays/dev/secrets.env"],
        check=False,
    )
    assert ignored.returncode == 0, "deploy/overlays/dev/secrets.env must be git-ignored"
    example = (ROOT / "deploy/overlays/dev/secrets.env.example").read_text()
    provided = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line}
    wanted = set()
    for obj in rendered["prod"]:
        spec = pod_spec(obj)
        for container in spec.get("containers", []) if spec else []:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == "iotgw-credentials":
                    wanted.add(ref["key"])
    assert wanted <= provided, wanted - provided
    assert set(dev_secrets[0]["data"]) == provided
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "grep", "-l", "-E", "^kind: *Secret *$", "--", "deploy"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tracked.stdout == ""


def test_dev_overlay_patches_apply(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The overlays' patches land: dev logs at DEBUG with one api replica, prod exposes MQTT."""
    (config,) = [
        obj
        for obj in rendered["dev"]
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("iotgw-config")
    ]
    assert config["data"]["IOTGW_LOG_LEVEL"] == "DEBUG"
    assert config["data"]["IOTGW_METRICS_PORT"] == "9100"
    (api,) = [
        o for o in rendered["dev"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "api"
    ]
    assert api["spec"]["replicas"] == 1
    (mqtt,) = [
        o
        for o in rendered["prod"]
        if o["kind"] == "Service" and o["metadata"]["name"] == "rabbitmq-mqtt"
    ]
    assert mqtt["spec"]["type"] == "LoadBalancer"


def test_render_uses_a_copy(tmp_path: Path) -> None:
    """The dev overlay cannot render without secrets.env: the copy supplies the example's."""
    root = checkout_copy(tmp_path)
    assert (root / "deploy/overlays/dev/secrets.env").read_text() == (
        ROOT / "deploy/overlays/dev/secrets.env.example"
    ).read_text()
