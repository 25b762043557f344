"""Render the Kustomize overlays the way CI and an operator do: `kubectl kustomize`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

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
