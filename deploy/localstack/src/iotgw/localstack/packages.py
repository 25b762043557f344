"""Install the Debian packages the local stack runs, without starting their system services."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

from iotgw.localstack.processes import StackError

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


def missing(packages: list[str]) -> list[str]:
    """The packages of `packages` that dpkg does not report installed."""
    absent = []
    for name in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in result.stdout:
            absent.append(name)
    return absent


def ensure(packages: list[str]) -> None:
    """apt-get install what is missing; the packages' own services are not started.

    Debian's rabbitmq-server and influxdb would start system-wide services on the standard
    ports; a policy-rc.d that denies every start keeps them off while we install.
    """
    absent = missing(packages)
    if not absent:
        return
    if os.geteuid() != 0:
        raise StackError(
            "missing Debian packages " + " ".join(absent) + ": run as root, or install them"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    ours = not POLICY_RC_D.exists()
    if ours:
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
    try:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *absent],
            env=env,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        raise StackError(f"apt-get failed installing {' '.join(absent)}: {exc}") from exc
    finally:
        if ours:
            with contextlib.suppress(FileNotFoundError):
                POLICY_RC_D.unlink()
