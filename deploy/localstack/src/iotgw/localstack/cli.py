"""`iotgw`: the local stack (`iotgw stack up|down|status`) and the demo (`iotgw demo`)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys

from iotgw.contracts.settings import load_settings
from iotgw.localstack import packages
from iotgw.localstack.demo import DemoOptions, run_demo
from iotgw.localstack.processes import StackError
from iotgw.localstack.stack import DEBIAN_PACKAGES, Stack, StackSettings

# The tests also need a server for InfluxDB's v2 write API, a browser for the web pages and a
# PostgreSQL server for the registry (its binaries only: the tests run their own cluster), and
# iproute2 (`ip netns`) for the fault drill that cuts one module's network link.
TEST_PACKAGES = ["victoria-metrics", "chromium", "postgresql", "iproute2"]
# `kubectl kustomize` renders the deploy overlays in the tests: Debian ships kubectl in
# kubernetes-client (1.20, kustomize v2.0.3; deploy/ is written to render with it too).
KUBECTL_PACKAGE = "kubernetes-client"


def test_packages() -> list[str]:
    """TEST_PACKAGES, plus Debian's kubectl unless a kubectl is already on PATH (one installed
    from another vendor's package owns /usr/bin/kubectl, and Debian's would conflict with it)."""
    return TEST_PACKAGES + ([] if shutil.which("kubectl") else [KUBECTL_PACKAGE])


def _stack_command(action: str) -> int:
    cfg = load_settings(StackSettings)
    stack = Stack.from_settings(cfg)
    if action == "up":
        started = stack.up(install=cfg.install_packages)
        print("started: " + (", ".join(started) if started else "nothing (already running)"))
        print(stack.describe())
    elif action == "down":
        stack.down()
        print("stopped")
    else:
        print(json.dumps(stack.status(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `iotgw` command."""
    parser = argparse.ArgumentParser(prog="iotgw", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    stack = sub.add_parser("stack", help="the local RabbitMQ (MQTT plugin) and InfluxDB")
    stack.add_argument("action", choices=["up", "down", "status"])
    demo = sub.add_parser("demo", help="stack up, a purchase provisioned, modules' telemetry")
    demo.add_argument("--modules", type=int, default=200, help="modules to buy and simulate")
    demo.add_argument("--rate", type=float, default=0.5, help="readings/s per module")
    demo.add_argument("--duration", type=float, help="seconds of live view (default: Ctrl-C)")
    demo.add_argument("--api-port", type=int, default=8000, help="a free one is used if taken")
    setup = sub.add_parser("setup", help="install the Debian packages the stack (and tests) need")
    setup.add_argument("--tests", action="store_true", help="also what the test suite needs")
    args = parser.parse_args(argv)
    try:
        if args.command == "stack":
            return _stack_command(args.action)
        if args.command == "setup":
            packages.ensure(DEBIAN_PACKAGES + (test_packages() if args.tests else []))
            return 0
        return run_demo(
            DemoOptions(
                modules=args.modules,
                rate_hz=args.rate,
                duration_s=args.duration,
                api_port=args.api_port,
            )
        )
    except StackError as exc:
        print(f"iotgw: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
