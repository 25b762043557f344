"""Semantic versions from commit messages: the original release rules plus Conventional Commits.

The original pipeline matched a fixed prefix per rule (`major:`, `fix:`, `test:` ...) and pasted
whatever followed into the image tag, so `fix(api): ...` or `feat!: ...` produced tags that were
neither SemVer nor valid OCI tags. Here a subject is parsed as `type(scope)!: description`, the
type alone picks the bump, `!` or a `BREAKING CHANGE:` footer makes it major, and every version is
checked against the SemVer 2.0.0 grammar and the OCI tag grammar before it leaves this module.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum


class Bump(IntEnum):
    """How far a commit moves the version; the largest bump of a release range wins."""

    NONE = 0
    PRERELEASE = 1
    PATCH = 2
    MINOR = 3
    MAJOR = 4


# The original rules, keyed by commit type (lower case).
TYPE_BUMPS: dict[str, Bump] = {
    "major": Bump.MAJOR,
    "breaking": Bump.MAJOR,
    "release": Bump.MAJOR,
    "minor": Bump.MINOR,
    "enhancement": Bump.MINOR,
    "update": Bump.MINOR,
    "feature": Bump.MINOR,
    "patch": Bump.PATCH,
    "fix": Bump.PATCH,
    "feat": Bump.PATCH,
    "test": Bump.PRERELEASE,
}

# `type(scope)!: description`; scope and `!` optional, spaces tolerated before the colon.
_SUBJECT = re.compile(
    r"^(?P<type>[A-Za-z]+)(?:\((?P<scope>[^()\r\n]*)\))?(?P<breaking>!)?\s*:\s*\S",
)
_BREAKING_FOOTER = re.compile(r"^BREAKING[ -]CHANGE\s*:", re.MULTILINE)

# SemVer 2.0.0, the regular expression semver.org publishes.
_SEMVER = re.compile(
    r"^(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
# The OCI distribution spec's tag grammar.
_OCI_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

PRERELEASE_LABEL = "test"
_SUFFIX_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SUFFIX_CHARS = _SUFFIX_LETTERS + "0123456789"


class VersionError(ValueError):
    """A string is not a SemVer version, or a version is not a valid OCI tag."""


@dataclass(frozen=True, order=True)
class Version:
    """A SemVer 2.0.0 version without build metadata (tags carry no `+`)."""

    major: int
    minor: int
    patch: int
    prerelease: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Parse `1.2.3`, `v1.2.3` or `1.2.3-test.abc`; anything else raises VersionError."""
        match = _SEMVER.match(text.removeprefix("v"))
        if match is None or match["build"]:
            raise VersionError(f"not a SemVer release version: {text!r}")
        major, minor, patch = int(match["major"]), int(match["minor"]), int(match["patch"])
        return cls(major, minor, patch, match["pre"] or "")

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.prerelease}" if self.prerelease else core

    def bumped(self, bump: Bump, suffix: str = "") -> Version:
        """The next version for `bump`; PRERELEASE gives the next patch with `test.<suffix>`."""
        if bump is Bump.MAJOR:
            return Version(self.major + 1, 0, 0)
        if bump is Bump.MINOR:
            return Version(self.major, self.minor + 1, 0)
        if bump is Bump.PATCH:
            return Version(self.major, self.minor, self.patch + 1)
        if bump is Bump.PRERELEASE:
            return Version(self.major, self.minor, self.patch + 1, f"{PRERELEASE_LABEL}.{suffix}")
        return self


def random_suffix(length: int = 8) -> str:
    """A random prerelease identifier that always starts with a letter.

    A purely numeric identifier with a leading zero is invalid SemVer, so the first character
    is a letter and the identifier can never be numeric.
    """
    head = secrets.choice(_SUFFIX_LETTERS)
    return head + "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(length - 1))


def commit_bump(message: str) -> Bump:
    """The bump one commit message asks for (its subject line, plus a BREAKING CHANGE footer)."""
    subject = message.strip().splitlines()[0] if message.strip() else ""
    match = _SUBJECT.match(subject)
    if match is None:
        return Bump.NONE
    bump = TYPE_BUMPS.get(match["type"].lower(), Bump.NONE)
    if match["breaking"] or _BREAKING_FOOTER.search(message):
        # `!` marks any recognised or Conventional type as breaking.
        return Bump.MAJOR
    return bump


def range_bump(messages: Iterable[str]) -> Bump:
    """The largest bump among the commits of a release range."""
    return max((commit_bump(message) for message in messages), default=Bump.NONE)


def next_version(previous: Version, messages: Iterable[str], suffix: str | None = None) -> Version:
    """The version to release after `previous` given the commit messages since it."""
    bump = range_bump(messages)
    result = previous.bumped(bump, suffix if suffix is not None else random_suffix())
    validate(result)
    return result


def oci_tag(version: Version) -> str:
    """The image tag for `version`: the version itself, checked against the OCI tag grammar."""
    tag = str(version)
    if not _OCI_TAG.match(tag):
        raise VersionError(f"not a valid OCI image tag: {tag!r}")
    return tag


def validate(version: Version) -> None:
    """Raise VersionError unless `version` is valid SemVer and a valid OCI tag."""
    if not _SEMVER.match(str(version)):
        raise VersionError(f"not valid SemVer: {version}")
    oci_tag(version)
