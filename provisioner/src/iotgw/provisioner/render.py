"""Render a client's Kubernetes objects: pure functions, from a StackSpec to manifest dicts.

No I/O here, so the same objects go to a cluster (server-side apply) or into a GitOps folder,
and tests can check them against the Kubernetes schemas without any server.
"""

from __future__ import annotations

from typing import Any

from iotgw.provisioner.catalog import Catalog, Product, Tier
from iotgw.provisioner.request import StackSpec

Manifest = dict[str, Any]

MANAGED_BY = "iotgw-provisioner"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
LABEL_CLIENT = "iotgw.io/client"
LABEL_PRODUCT = "iotgw.io/product"
LABEL_ENVIRONMENT = "iotgw.io/environment"
LABEL_TRACE = "iotgw.io/trace-id"
ANNOTATION_TRACE = "iotgw.io/trace-id"
DEDICATED_KEY = "iotgw.io/dedicated"
WORKLOAD_SA = "workload"
RUN_AS = 10001


def workload_name(product: str) -> str:
    """The Deployment and Service name of a product: `Product-A` -> `product-a`."""
    return product.lower()


def render_stack(spec: StackSpec, catalog: Catalog, platform_namespace: str) -> list[Manifest]:
    """Every object of the client's stack, in the order they should be applied."""
    product = catalog.product(spec.product)
    tier = catalog.tiers[spec.hardware]
    return [
        namespace(spec),
        service_account(spec),
        resource_quota(spec, tier),
        limit_range(spec, tier),
        network_policy(spec, platform_namespace),
        service(spec, product),
        deployment(spec, product),
    ]


def _labels(spec: StackSpec) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        LABEL_CLIENT: spec.client,
        LABEL_PRODUCT: spec.product,
        LABEL_ENVIRONMENT: spec.environment,
    }


def _meta(spec: StackSpec, name: str, *, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": _labels(spec),
        "annotations": {ANNOTATION_TRACE: spec.trace_id},
    }
    if namespaced:
        meta["namespace"] = spec.client
    return meta


def namespace(spec: StackSpec) -> Manifest:
    """The client's namespace; Pod Security `restricted` is enforced on it."""
    meta = _meta(spec, spec.client, namespaced=False)
    meta["labels"] |= {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def service_account(spec: StackSpec) -> Manifest:
    """The workload's identity; it never talks to the API server, so no token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(spec, WORKLOAD_SA),
        "automountServiceAccountToken": False,
    }


def resource_quota(spec: StackSpec, tier: Tier) -> Manifest:
    """The tier's quota for the whole namespace."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _meta(spec, "tier-quota"),
        "spec": {"hard": dict(tier.quota)},
    }


def limit_range(spec: StackSpec, tier: Tier) -> Manifest:
    """Container defaults, so every container counts against the quota."""
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _meta(spec, "tier-defaults"),
        "spec": {
            "limits": [
                {
                    "type": "Container",
                    "defaultRequest": dict(tier.default_request),
                    "default": dict(tier.default_limit),
                }
            ]
        },
    }


def network_policy(spec: StackSpec, platform_namespace: str) -> Manifest:
    """Deny all ingress to the client's pods except from the platform's namespace."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(spec, "default-deny-ingress"),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": platform_namespace}
                            }
                        }
                    ]
                }
            ],
        },
    }


def _selector(spec: StackSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": workload_name(spec.product), LABEL_CLIENT: spec.client}


def service(spec: StackSpec, product: Product) -> Manifest:
    """ClusterIP Service over the product's ports."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, workload_name(spec.product)),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(spec),
            "ports": [
                {"name": p.name, "port": p.port, "targetPort": p.name, "protocol": "TCP"}
                for p in product.ports
            ],
        },
    }


def _container_resources(spec: StackSpec, product: Product) -> dict[str, Any]:
    if spec.hardware == "Dedicated":
        # Guaranteed QoS: requests equal limits for every resource.
        return {
            "requests": dict(product.resources.limits),
            "limits": dict(product.resources.limits),
        }
    return {
        "requests": dict(product.resources.requests),
        "limits": dict(product.resources.limits),
    }


def deployment(spec: StackSpec, product: Product) -> Manifest:
    """The product's Deployment: non-root, read-only root, no capabilities, RuntimeDefault."""
    name = workload_name(spec.product)
    pod_labels = _labels(spec) | _selector(spec) | {LABEL_TRACE: spec.trace_id}
    pod_spec: dict[str, Any] = {
        "serviceAccountName": WORKLOAD_SA,
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": name,
                "image": product.image,
                "imagePullPolicy": "IfNotPresent",
                "ports": [
                    {"name": p.name, "containerPort": p.port, "protocol": "TCP"}
                    for p in product.ports
                ],
                "env": [
                    {"name": "IOTGW_CLIENT", "value": spec.client},
                    {"name": "IOTGW_TRACE_ID", "value": spec.trace_id},
                    *({"name": k, "value": v} for k, v in sorted(product.env.items())),
                ],
                "resources": _container_resources(spec, product),
                "securityContext": {
                    "runAsNonRoot": True,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    if spec.hardware == "Dedicated":
        pod_spec["nodeSelector"] = {DEDICATED_KEY: spec.client}
        pod_spec["tolerations"] = [
            {
                "key": DEDICATED_KEY,
                "operator": "Equal",
                "value": spec.client,
                "effect": "NoSchedule",
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, name),
        "spec": {
            "replicas": product.replicas,
            "selector": {"matchLabels": _selector(spec)},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {ANNOTATION_TRACE: spec.trace_id},
                },
                "spec": pod_spec,
            },
        },
    }
