"""`iotgw-release-version` against a real git repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from iotgw.release.cli import main


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def _commit(repo: Path, message: str) -> None:
    _git(repo, "commit", "--allow-empty", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit tagged v1.2.3."""
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "ci@example.invalid")
    _git(tmp_path, "config", "user.name", "ci")
    _commit(tmp_path, "initial")
    _git(tmp_path, "tag", "v1.2.3")
    return tmp_path


def _run(repo: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, str]:
    assert main(["--repo", str(repo), *extra]) == 0
    result: dict[str, str] = json.loads(capsys.readouterr().out)
    return result


def test_scoped_breaking_commit_since_last_tag(
    repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Commits after the tag decide; `fix(api)!:` is a major release; outputs for Actions."""
    _commit(repo, "fix(api): small")
    _commit(repo, "fix(api)!: rename a field\n\nbody")
    out = tmp_path / "github_output"
    result = _run(repo, capsys, "--github-output", str(out))
    assert result == {
        "previous": "1.2.3",
        "version": "2.0.0",
        "tag": "2.0.0",
        "bump": "major",
        "release": "true",
    }
    assert "version=2.0.0\n" in out.read_text()
    assert "release=true\n" in out.read_text()


def test_commits_before_the_tag_do_not_count(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a fresh tag with only docs commits since, nothing is released."""
    _commit(repo, "major: old news")
    _git(repo, "tag", "v2.0.0")
    _commit(repo, "docs: words")
    result = _run(repo, capsys)
    assert result["version"] == "2.0.0"
    assert result["release"] == "false"


def test_no_tag_starts_from_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without any release tag the range is the whole history from 0.0.0."""
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "ci@example.invalid")
    _git(tmp_path, "config", "user.name", "ci")
    _commit(tmp_path, "feature: first")
    assert _run(tmp_path, capsys)["version"] == "0.1.0"


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A git failure exits 1 with a message, no traceback."""
    assert main(["--repo", str(tmp_path / "missing")]) == 1
    assert "iotgw-release-version" in capsys.readouterr().err
