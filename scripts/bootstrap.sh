#!/usr/bin/env bash
# Prepare a fresh Debian machine (as root) or an existing checkout: Python 3.11 with venv,
# uv in .tools/, the workspace in .venv/, then the Debian packages the stack runs.
# Usage: scripts/bootstrap.sh [--tests]
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
command -v python3 >/dev/null 2>&1 || apt_missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_missing+=(python3-venv)
command -v git >/dev/null 2>&1 || apt_missing+=(git)
if ((${#apt_missing[@]})); then
  echo "installing ${apt_missing[*]} from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${apt_missing[@]}" ca-certificates
fi

if [ ! -x .tools/bin/uv ]; then
  python3 -m venv .tools
  .tools/bin/pip install -q uv
fi

# Never download a Python: use the machine's 3.11.
export UV_PYTHON_DOWNLOADS=never
.tools/bin/uv sync -q --locked --all-packages --python python3

.venv/bin/iotgw setup "$@"
