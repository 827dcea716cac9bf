#!/usr/bin/env bash
# The volume lifecycle on a real VDUSE kernel: boots the test VM and runs `csi-vduse demo` in it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tests.vm run -- "$PWD/.venv/bin/csi-vduse" -v demo
