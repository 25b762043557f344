"""The component Dockerfile: multi-stage, pinned base images, a non-root user, locked deps."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/docker/Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _base_images() -> list[str]:
    args = {}
    images = []
    for keyword, rest in _instructions():
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args[name] = value
        if keyword == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def test_multi_stage_with_pinned_bases() -> None:
    """At least a build and a runtime stage; each base an exact version, never latest."""
    images = _base_images()
    assert len(images) >= 2
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name, f"{image}: no tag"
        assert tag != "latest"
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image}: not an exact version"


def test_runs_as_a_numeric_non_root_user() -> None:
    """The last USER is numeric and not 0 (Kubernetes' runAsNonRoot can check it)."""
    users = [rest for keyword, rest in _instructions() if keyword == "USER"]
    assert users
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_installs_the_locked_versions() -> None:
    """Dependencies come from uv.lock, without the dev group, as wheels (not editable)."""
    runs = " ".join(rest for keyword, rest in _instructions() if keyword == "RUN")
    assert "uv sync --frozen --no-dev --no-editable" in runs
    ignore = (ROOT / "deploy/docker/Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "deploy/overlays/dev/secrets.env"} <= set(ignore)
