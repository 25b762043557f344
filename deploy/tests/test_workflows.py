"""The GitHub workflows validate, offline, against the workflow JSON schema that check-jsonschema
vendors from schemastore, and do what the release process promises."""

from __future__ import annotations

import importlib.resources
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))


def _schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "github-workflows.json").read_text())
    return schema


def _validator() -> jsonschema.protocols.Validator:
    schema = _schema()
    # An empty registry: a reference outside the vendored file fails instead of being fetched.
    return jsonschema.validators.validator_for(schema)(schema, registry=referencing.Registry())


def _load(path: Path) -> dict[str, Any]:
    # YAML 1.2 (ruamel), as GitHub reads it: the key `on` stays a string, not True.
    document: dict[str, Any] = YAML(typ="safe").load(path.read_text())
    return document


def _workflow(name: str) -> dict[str, Any]:
    return _load(ROOT / ".github/workflows" / name)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_schema(path: Path) -> None:
    """No schema error in any workflow."""
    errors = [error.message for error in _validator().iter_errors(_load(path))]
    assert errors == []


def test_schema_rejects_a_broken_workflow() -> None:
    """The check has teeth: a job without runs-on and a misspelt key are refused."""
    broken = _workflow("ci.yml")
    del broken["jobs"]["test"]["runs-on"]
    broken["jobs"]["secrets"]["step"] = broken["jobs"]["secrets"].pop("steps")
    assert list(_validator().iter_errors(broken))


def test_ci_tests_every_push_and_scans_for_secrets() -> None:
    """Every push runs the suite; gitleaks scans the history."""
    ci = _workflow("ci.yml")
    assert ci["on"]["push"]["branches"] == ["**"]
    assert "workflow_call" in ci["on"]
    steps = " ".join(str(step.get("run", "")) for step in ci["jobs"]["test"]["steps"])
    assert "scripts/test.sh" in steps
    scan = " ".join(str(step.get("run", "")) for step in ci["jobs"]["secrets"]["steps"])
    assert "gitleaks" in scan
    assert "detect" in scan


def test_release_scans_and_only_promotes_clean_images() -> None:
    """Version from the Python command; Trivy CRITICAL per image; a failing scan tags the image
    vulnerable and fails; only a passing scan promotes; the git tag waits for every image."""
    release = _workflow("release.yml")
    version_run = release["jobs"]["version"]["steps"][-1]["run"]
    assert "iotgw-release-version" in version_run
    image = release["jobs"]["image"]
    assert set(image["needs"]) == {"test", "version"}
    steps = {step.get("id") or step.get("name"): step for step in image["steps"]}
    scan = steps["scan"]
    assert scan["uses"].startswith("aquasecurity/trivy-action@")
    assert scan["with"]["severity"] == "CRITICAL"
    assert scan["with"]["exit-code"] == "1"
    assert scan["continue-on-error"] is True
    vulnerable = steps["Tag the image as vulnerable and stop"]
    assert vulnerable["if"] == "steps.scan.outcome == 'failure'"
    assert "-vulnerable" in vulnerable["run"]
    assert "exit 1" in vulnerable["run"]
    promote = steps["Promote to the release tag"]
    assert promote["if"] == "steps.scan.outcome == 'success'"
    assert '"$IMAGE:$TAG"' in promote["run"]
    assert set(release["jobs"]["tag"]["needs"]) == {"version", "image"}


def test_actions_are_pinned() -> None:
    """Every action is used at a version tag or commit, never a branch."""
    pinned = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+(\.\d+)*|\d+\.\d+\.\d+|[0-9a-f]{40})$")
    for path in WORKFLOWS:
        for job in _load(path)["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    assert pinned.match(step["uses"]), f"{path.name}: {step['uses']}"


def test_release_images_are_workspace_members_used_by_the_deployment() -> None:
    """Each image is built from a workspace member, and every command a Deployment of the base
    runs from an iotgw image is a console script of that image's member."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    members = {}
    for member in root["tool"]["uv"]["workspace"]["members"]:
        project = tomllib.loads((ROOT / member / "pyproject.toml").read_text())["project"]
        members[project["name"]] = set(project.get("scripts", {}))
    matrix = _workflow("release.yml")["jobs"]["image"]["strategy"]["matrix"]["include"]
    images = {entry["image"]: entry["package"] for entry in matrix}
    assert set(images.values()) <= set(members)
    yaml = YAML(typ="safe")
    for path in sorted((ROOT / "deploy/base").rglob("*.yaml")):
        for doc in yaml.load_all(path.read_text()):
            if not doc or doc.get("kind") != "Deployment":
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                repository, _ = container["image"].rsplit(":", 1)
                name = repository.rsplit("/", 1)[-1]
                if repository.startswith("ghcr.io/iotgw/"):
                    assert container["command"][0] in members[images[name]], path
