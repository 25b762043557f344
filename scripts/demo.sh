#!/usr/bin/env bash
# The demo: the local stack, simulated modules, telemetry flowing, a purchase provisioned.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/iotgw demo "$@"
