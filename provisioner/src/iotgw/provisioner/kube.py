"""The `kubernetes` target: server-side apply through the official client, one field manager.

Each object is sent as `PATCH ...?fieldManager=<manager>&force=true` with content type
`application/apply-patch+yaml`: the API server creates a missing object and leaves an unchanged
one as it is, so a redelivered purchase changes nothing. Removal deletes the client's namespace,
which takes every namespaced object with it.

`RESOURCES` is the complete list of what the provisioner touches; the RBAC in
deploy/base/provisioner grants exactly these resources and `VERBS`, which a test checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from iotgw.contracts.names import check_dns_label
from iotgw.provisioner.errors import PermanentError, TransientError, is_transient_status
from iotgw.provisioner.render import LABEL_CLIENT, MANAGED_BY, MANAGED_BY_LABEL, Manifest
from iotgw.provisioner.targets import object_ref

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the API."""

    group: str
    version: str
    plural: str
    namespaced: bool

    def path(self, name: str, namespace: str | None) -> str:
        """The object's URL path."""
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        scope = f"/namespaces/{namespace}" if self.namespaced else ""
        return f"{base}{scope}/{self.plural}/{name}"


RESOURCES: dict[tuple[str, str], Resource] = {
    ("v1", "Namespace"): Resource("", "v1", "namespaces", namespaced=False),
    ("v1", "ServiceAccount"): Resource("", "v1", "serviceaccounts", namespaced=True),
    ("v1", "ResourceQuota"): Resource("", "v1", "resourcequotas", namespaced=True),
    ("v1", "LimitRange"): Resource("", "v1", "limitranges", namespaced=True),
    ("v1", "Service"): Resource("", "v1", "services", namespaced=True),
    ("networking.k8s.io/v1", "NetworkPolicy"): Resource(
        "networking.k8s.io", "v1", "networkpolicies", namespaced=True
    ),
    ("apps/v1", "Deployment"): Resource("apps", "v1", "deployments", namespaced=True),
}

# Server-side apply is a PATCH; on a missing object the API server also checks `create`.
# Cancelling deletes the namespace (and nothing else: the namespace takes its contents along).
# `get` on namespaces only: a namespace that exists but is not the provisioner's is refused.
VERBS: dict[str, frozenset[str]] = {
    "namespaces": frozenset({"get", "create", "patch", "delete"}),
    **{
        r.plural: frozenset({"create", "patch"})
        for r in RESOURCES.values()
        if r.plural != "namespaces"
    },
}


def resource_of(manifest: Manifest) -> Resource:
    """The API resource of a manifest; PermanentError for a kind the provisioner does not own."""
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    try:
        return RESOURCES[key]
    except KeyError as exc:
        raise PermanentError(f"the provisioner does not manage {key[1]} ({key[0]})") from exc


def api_client_from_config(
    kubeconfig: Path | None = None, context: str | None = None
) -> k8s.ApiClient:
    """An ApiClient from a kubeconfig file, or in-cluster, or the default kubeconfig."""
    configuration = k8s.Configuration()
    if kubeconfig is not None:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), context=context, client_configuration=configuration
        )
    else:
        try:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                context=context, client_configuration=configuration
            )
    return k8s.ApiClient(configuration)


class KubernetesTarget:
    """Applies and removes a client's objects on a cluster."""

    def __init__(
        self, api: k8s.ApiClient, field_manager: str = "iotgw-provisioner", timeout: float = 10.0
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.timeout = timeout

    def apply(self, client: str, objects: list[Manifest]) -> list[str]:
        """Server-side apply each object, in order (the namespace first)."""
        check_dns_label(client, "client")
        targets = []
        for obj in objects:
            resource = resource_of(obj)
            meta = obj["metadata"]
            namespace = meta.get("namespace") if resource.namespaced else None
            outside = namespace != client if resource.namespaced else meta["name"] != client
            if outside:
                raise PermanentError(f"{object_ref(obj)} is outside the namespace of {client}")
            targets.append((obj, resource.path(meta["name"], namespace)))
        self._owned(client)
        applied = []
        for obj, path in targets:
            self._call(
                "PATCH",
                path,
                query=[("fieldManager", self.field_manager), ("force", "true")],
                body=obj,
                content_type=APPLY_CONTENT_TYPE,
            )
            applied.append(object_ref(obj))
        return applied

    def remove(self, client: str) -> list[str]:
        """Delete the client's namespace; a namespace already gone is fine."""
        path = RESOURCES[("v1", "Namespace")].path(check_dns_label(client, "client"), None)
        if not self._owned(client):
            return []
        status, _ = self._call(
            "DELETE",
            path,
            query=[],
            body={"propagationPolicy": "Background"},
            content_type="application/json",
            missing_ok=True,
        )
        return [] if status == 404 else [f"Namespace/{client}"]

    def _owned(self, client: str) -> bool:
        """True if the client's namespace exists and is ours, False if it does not exist.

        A namespace of the same name made by someone else (a team's `monitoring`, say) is never
        patched or deleted: PermanentError.
        """
        path = RESOURCES[("v1", "Namespace")].path(client, None)
        status, data = self._call(
            "GET", path, query=[], body=None, content_type="application/json", missing_ok=True
        )
        if status == 404:
            return False
        labels = (json.loads(data or b"{}").get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or labels.get(LABEL_CLIENT) != client:
            raise PermanentError(f"namespace {client} exists and is not managed by {MANAGED_BY}")
        return True

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]],
        body: dict[str, Any] | None,
        content_type: str,
        missing_ok: bool = False,
    ) -> tuple[int, bytes]:
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*request, _request_timeout=self.timeout)
            response.read()  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        status = int(response.status)
        if 200 <= status < 300 or (missing_ok and status == 404):
            return status, response.data or b""
        message = _status_message(response.data)
        reason = f"{method} {path}: HTTP {status} {message}"
        if is_transient_status(status):
            raise TransientError(reason)
        raise PermanentError(reason)


def _status_message(data: bytes | None) -> str:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        return (data or b"")[:200].decode(errors="replace")
    return str(body.get("message", ""))[:300] if isinstance(body, dict) else ""
