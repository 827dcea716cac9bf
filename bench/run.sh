#!/usr/bin/env bash
# Benchmark the dataplane against qemu-storage-daemon in the test VM: bash bench/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m tests.vm run -- "$PWD/.venv/bin/python" bench/dataplane_vs_qsd.py "$@"
