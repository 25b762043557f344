"""`iotgw-release-version`: print the next release version computed from the commits since the
last `vX.Y.Z` tag, and write it as GitHub Actions step outputs when asked."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from iotgw.release.git import last_release, messages_since
from iotgw.release.semver import Bump, VersionError, next_version, oci_tag, range_bump


def main(argv: list[str] | None = None) -> int:
    """Compute the version; exit 1 with a message on any git or version error."""
    parser = argparse.ArgumentParser(prog="iotgw-release-version", description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="git repository")
    parser.add_argument(
        "--github-output",
        type=Path,
        help="append version, tag, bump and release=true|false to this file ($GITHUB_OUTPUT)",
    )
    args = parser.parse_args(argv)
    try:
        previous, tag = last_release(args.repo)
        messages = messages_since(args.repo, tag)
        bump = range_bump(messages)
        version = next_version(previous, messages)
        result = {
            "previous": str(previous),
            "version": str(version),
            "tag": oci_tag(version),
            "bump": bump.name.lower(),
            "release": "true" if bump is not Bump.NONE else "false",
        }
    except (subprocess.CalledProcessError, VersionError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        print(f"iotgw-release-version: {detail.strip()}", file=sys.stderr)
        return 1
    if args.github_output:
        with args.github_output.open("a", encoding="utf-8") as out:
            out.writelines(f"{key}={value}\n" for key, value in result.items())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
