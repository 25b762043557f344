"""`iotgw-dashboards`: write the Grafana files from the code, or `--check` they are current."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iotgw.dashboards.provisioning import stale, write

# dashboards/grafana/ beside this member's src/.
DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "grafana"


def main(argv: list[str] | None = None) -> int:
    """Generate (default) or check; exit 1 naming each stale file when checking."""
    parser = argparse.ArgumentParser(prog="iotgw-dashboards", description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="output folder")
    parser.add_argument("--check", action="store_true", help="fail if files are not current")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale(args.root)
        for relative in problems:
            print(f"stale: {args.root / relative} (run iotgw-dashboards)", file=sys.stderr)
        return 1 if problems else 0
    for path in write(args.root):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
