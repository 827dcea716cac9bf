#!/usr/bin/env bash
# Benchmark the dataplane against qemu-storage-daemon and the loop device in the test VM:
#   bash bench/run.sh [--runtime SECONDS] [--queues 1,2] [--jobs NAME,...] [--json FILE]
# Prints the table; writes every number as JSON to FILE (default bench-results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
json=bench-results.json
args=()
while (( $# )); do
    if [[ $1 == --json ]]; then json=$2; shift 2; else args+=("$1"); shift; fi
done
bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
.venv/bin/python -m tests.vm run --timeout 3600 -- \
    "$PWD/.venv/bin/python" bench/compare.py "${args[@]}" | tee "$log"
sed -n 's/^.*BENCH-JSON //p' "$log" | tail -1 > "$json"
echo "bench: results in $json"
