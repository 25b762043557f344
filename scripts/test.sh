#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest against real services the tests start.
# Extra arguments go to pytest (for example --slow for the soak and load runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --tests
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Every Python file of the checkout (tracked, or new and not ignored), members and tests alike.
git ls-files -z --cached --others --exclude-standard '*.py' | xargs -0 .venv/bin/mypy
exec .venv/bin/pytest "$@"
