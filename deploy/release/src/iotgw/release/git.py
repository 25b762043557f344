"""Read the last release tag and the commit messages since it from a git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from iotgw.release.semver import Version, VersionError

_RECORD_END = "\x1e"


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return result.stdout


def last_release(repo: Path) -> tuple[Version, str | None]:
    """The highest `vX.Y.Z` tag reachable from HEAD (prereleases ignored), or 0.0.0 and None."""
    best: tuple[Version, str] | None = None
    for tag in _git(repo, "tag", "--list", "v*", "--merged", "HEAD").split():
        try:
            version = Version.parse(tag)
        except VersionError:
            continue
        if version.prerelease:
            continue
        if best is None or version > best[0]:
            best = (version, tag)
    if best is None:
        return Version(0, 0, 0), None
    return best


def messages_since(repo: Path, tag: str | None) -> list[str]:
    """Full commit messages (subject and body) from `tag` (exclusive) to HEAD."""
    revision = f"{tag}..HEAD" if tag else "HEAD"
    out = _git(repo, "log", f"--format=%B{_RECORD_END}", revision)
    return [message.strip() for message in out.split(_RECORD_END) if message.strip()]
