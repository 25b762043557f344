#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest against real services the tests start.
# Extra arguments go to pytest (for example --slow for the soak and load runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --tests
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
