#!/usr/bin/env bash
# Benchmark the dataplane against qemu-storage-daemon and the loop device in the test VM:
#   bash bench/run.sh [--runtime SECONDS] [--queues 1,2] [--jobs NAME,...] [--json FILE]
# Prints the table; writes every number as JSON to FILE (default bench-results.json).
#   bash bench/run.sh takeover [--kills N] [--json FILE]
# instead kills the serving process under fio, ours and qsd's, and prints the I/O stalls
# and our takeover's phases (bench/takeover.py; JSON default takeover-results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
script=bench.compare
json=bench-results.json
marker=BENCH-JSON
timeout=3600
if [[ ${1:-} == takeover ]]; then
    shift
    script=bench.takeover json=takeover-results.json marker=TAKEOVER-JSON timeout=1500
fi
args=()
while (( $# )); do
    if [[ $1 == --json ]]; then json=$2; shift 2; else args+=("$1"); shift; fi
done
bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
.venv/bin/python -m tests.vm run --timeout "$timeout" -- \
    "$PWD/.venv/bin/python" -m "$script" "${args[@]}" | tee "$log"
sed -n "s/^.*$marker //p" "$log" | tail -1 > "$json"
echo "bench: results in $json"
