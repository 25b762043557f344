"""The policy catches each thing it forbids: fed one bad object per rule, it names the fault."""

from __future__ import annotations

import copy
import io
import sys
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from iotgw.release.policy import main, violations

GOOD: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "ingest"},
    "spec": {
        "template": {
            "spec": {
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                "containers": [
                    {
                        "name": "ingest",
                        "image": "ghcr.io/iotgw/iotgw-cloud-bridge:1.2.3",
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "64Mi"},
                            "limits": {"cpu": "1", "memory": "256Mi"},
                        },
                    }
                ],
            }
        }
    },
}


def _container(obj: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def _privileged(obj: dict[str, Any]) -> None:
    _container(obj)["securityContext"]["privileged"] = True


def _root_user(obj: dict[str, Any]) -> None:
    _container(obj)["securityContext"]["runAsUser"] = 0


def _root_allowed(obj: dict[str, Any]) -> None:
    del obj["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def _no_memory_limit(obj: dict[str, Any]) -> None:
    del _container(obj)["resources"]["limits"]["memory"]


def _no_limits(obj: dict[str, Any]) -> None:
    del _container(obj)["resources"]["limits"]


def _writable_root(obj: dict[str, Any]) -> None:
    _container(obj)["securityContext"]["readOnlyRootFilesystem"] = False


def _latest(obj: dict[str, Any]) -> None:
    _container(obj)["image"] = "ghcr.io/iotgw/iotgw-cloud-bridge:latest"


def _untagged(obj: dict[str, Any]) -> None:
    _container(obj)["image"] = "registry:5000/iotgw-cloud-bridge"


def _escalation(obj: dict[str, Any]) -> None:
    del _container(obj)["securityContext"]["allowPrivilegeEscalation"]


def _bad_init_container(obj: dict[str, Any]) -> None:
    init = copy.deepcopy(_container(obj))
    init["name"] = "init"
    init["securityContext"]["privileged"] = True
    obj["spec"]["template"]["spec"]["initContainers"] = [init]


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (_privileged, "privileged"),
        (_root_user, "may run as root"),
        (_root_allowed, "may run as root"),
        (_no_memory_limit, "missing memory limit"),
        (_no_limits, "missing cpu limit"),
        (_writable_root, "writable root filesystem"),
        (_latest, "tagged latest"),
        (_untagged, "has no tag"),
        (_escalation, "allows privilege escalation"),
        (_bad_init_container, "container init: privileged"),
    ],
)
def test_policy_rejects(break_it: Callable[[dict[str, Any]], None], message: str) -> None:
    """Each broken copy of a compliant Deployment gets exactly the violation it deserves."""
    assert violations(GOOD) == []
    bad = copy.deepcopy(GOOD)
    break_it(bad)
    problems = violations(bad)
    assert problems
    assert any(message in problem for problem in problems), problems


def test_non_workloads_are_not_checked() -> None:
    """Services, ConfigMaps and the like carry no containers."""
    assert violations({"kind": "Service", "metadata": {"name": "x"}, "spec": {}}) == []


def test_policy_command_reads_rendered_yaml(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`iotgw-k8s-policy` exits 0 on compliant YAML, 1 naming the fault on a bad object."""
    bad = copy.deepcopy(GOOD)
    _latest(bad)
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump_all([GOOD])))
    assert main() == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(yaml.safe_dump_all([GOOD, None, bad])))
    assert main() == 1
    assert "tagged latest" in capsys.readouterr().err
