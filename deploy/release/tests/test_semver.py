"""The release rules: the original prefixes, Conventional Commits scopes and `!`, valid tags."""

from __future__ import annotations

import random
import string

import pytest

from iotgw.release.semver import (
    Bump,
    Version,
    VersionError,
    commit_bump,
    next_version,
    oci_tag,
    random_suffix,
    validate,
)

BASE = Version(1, 4, 2)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("major: new wire format", "2.0.0"),
        ("breaking: drop v1 topics", "2.0.0"),
        ("release: 2.0", "2.0.0"),
        ("minor: add presence", "1.5.0"),
        ("enhancement: faster ingest", "1.5.0"),
        ("update: newer pika", "1.5.0"),
        ("feature: kiosk purchases", "1.5.0"),
        ("patch: typo", "1.4.3"),
        ("fix: reconnect loop", "1.4.3"),
        ("feat: small thing", "1.4.3"),
        ("Fix: upper-case type", "1.4.3"),
        ("fix(api): 404 body", "1.4.3"),
        ("feature(ingest): batch by size", "1.5.0"),
        ("fix(api)!: rename field", "2.0.0"),
        ("feat!: new envelope", "2.0.0"),
        ("chore(deps)!: drop python 3.10", "2.0.0"),
        ("fix: x\n\nBREAKING CHANGE: the api key header moved", "2.0.0"),
        ("docs: readme", "1.4.2"),
        ("merge branch 'main'", "1.4.2"),
        ("fix:", "1.4.2"),
    ],
)
def test_rules(message: str, expected: str) -> None:
    """Each rule bumps as the original did, scopes and `!` included."""
    assert str(next_version(BASE, [message], suffix="abc")) == expected


def test_test_prefix_gives_prerelease_with_random_suffix() -> None:
    """`test:` gives the next patch as a prerelease with a random, valid suffix."""
    first = next_version(BASE, ["test: try the canary"])
    second = next_version(BASE, ["test(ingest): again"])
    assert first.prerelease.startswith("test.")
    assert (first.major, first.minor, first.patch) == (1, 4, 3)
    assert first != second
    validate(first)


def test_largest_bump_of_the_range_wins() -> None:
    """A range with a test, a fix and a feature releases the minor."""
    messages = ["test: canary", "fix(api): bug", "feature: thing", "docs: words"]
    assert str(next_version(BASE, messages)) == "1.5.0"


def test_bump_order() -> None:
    """Prerelease < patch < minor < major."""
    assert commit_bump("test: a") < commit_bump("fix: a") < commit_bump("minor: a")
    assert commit_bump("minor: a") < commit_bump("major: a")
    assert commit_bump("nothing") is Bump.NONE


def test_random_suffix_never_numeric() -> None:
    """A numeric identifier with a leading zero is invalid SemVer: suffixes start with a letter."""
    for _ in range(500):
        suffix = random_suffix()
        assert suffix[0] in string.ascii_lowercase
        validate(Version(0, 0, 1, f"test.{suffix}"))


def test_any_message_gives_valid_semver_and_oci_tag() -> None:
    """Whatever the messages (scopes with odd characters, `!`, unicode), the tag is valid."""
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "()!:/ -_.+#@é\n"
    prefixes = ["fix(api)!", "feat(a/b)", "test(x y)", "major", "fix(", "release!", ""]
    for _ in range(2000):
        noise = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        message = rng.choice(prefixes) + rng.choice([":", "", ": "]) + noise
        version = next_version(BASE, [message])
        validate(version)
        assert oci_tag(version) == str(version)


def test_parse_round_trip_and_errors() -> None:
    """Tags parse with or without `v`; junk and build metadata are refused."""
    assert Version.parse("v1.2.3") == Version(1, 2, 3)
    assert str(Version.parse("1.2.3-test.abc")) == "1.2.3-test.abc"
    for bad in ["1.2", "01.2.3", "1.2.3-01", "1.2.3+build", "fix(api)", "latest"]:
        with pytest.raises(VersionError):
            Version.parse(bad)
