"""The platform's workload policy, checked on every rendered Kubernetes object.

A container fails it when it is privileged, may run as root, may escalate privileges, keeps
capabilities, keeps a writable root filesystem, lacks CPU or memory requests or limits, or uses
an image without a pinned tag (none, or `latest`). The deploy tests apply it to every rendered
overlay; `iotgw-k8s-policy` applies it to YAML on stdin, for example
`kubectl kustomize deploy/overlays/prod | iotgw-k8s-policy`.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload object (CronJob included), or None for other kinds."""
    kind = obj.get("kind")
    spec = obj.get("spec", {})
    if kind == "Pod":
        return dict(spec)
    if kind == "CronJob":
        return dict(spec["jobTemplate"]["spec"]["template"]["spec"])
    if kind in WORKLOAD_KINDS:
        return dict(spec["template"]["spec"])
    return None


def _image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return f"image {image!r} has no tag"
    if name.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} is tagged latest"
    return None


def violations(obj: dict[str, Any]) -> list[str]:
    """Every policy violation of one object, as readable messages (empty when compliant)."""
    spec = pod_spec(obj)
    if spec is None:
        return []
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    pod_sc = spec.get("securityContext", {})
    problems = []
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        at = f"{where} container {container['name']}"
        sc = {**pod_sc, **container.get("securityContext", {})}
        if sc.get("privileged", False):
            problems.append(f"{at}: privileged")
        if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", 1) == 0:
            problems.append(f"{at}: may run as root")
        if sc.get("allowPrivilegeEscalation", True):
            problems.append(f"{at}: allows privilege escalation")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: writable root filesystem")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{at}: capabilities not dropped")
        resources = container.get("resources", {})
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(section, {}):
                    problems.append(f"{at}: missing {resource} {section[:-1]}")
        image_problem = _image_problem(container.get("image", ""))
        if image_problem:
            problems.append(f"{at}: {image_problem}")
    return problems


def main() -> int:
    """Read YAML documents on stdin; print each violation; exit 1 if there is any."""
    problems = [
        problem
        for document in yaml.safe_load_all(sys.stdin)
        if isinstance(document, dict)
        for problem in violations(document)
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0
