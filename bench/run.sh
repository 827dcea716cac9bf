#!/usr/bin/env bash
# Benchmark the dataplane against qemu-storage-daemon and the loop device in the test VM:
#   bash bench/run.sh [--runtime SECONDS] [--queues 1,2] [--jobs NAME,...] [--json FILE]
# Prints the table; writes every number as JSON to FILE (default bench-results.json).
#   bash bench/run.sh --backend rbd [--runtime SECONDS] [--queues 1,2] [--jobs NAME,...]
#       [--size-mib 256] [--json FILE]
# runs the same jobs on RBD images of a one-node test Ceph in the VM instead: ours, krbd,
# rbd-nbd and qsd's rbd driver (bench/compare_rbd.py; JSON default rbd-bench-results.json).
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
out=
while (( $# )); do
    case $1 in
        --json) out=$2; shift 2 ;;
        --backend)
            case $script:${2:-} in
                bench.compare:file) ;;
                bench.compare:rbd)
                    # 4 systems x 6 jobs x 2 queue counts of 30 s, after the cluster and
                    # the images' prefill
                    script=bench.compare_rbd json=rbd-bench-results.json
                    marker=RBD-BENCH-JSON timeout=5400 ;;
                bench.takeover:*)
                    echo "bench: takeover takes --backing file|rbd, not --backend" >&2; exit 2 ;;
                *) echo "bench: --backend is file or rbd, not '${2:-}'" >&2; exit 2 ;;
            esac
            shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
json=${out:-$json}
bash scripts/setup.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
.venv/bin/python -m tests.vm run --timeout "$timeout" -- \
    "$PWD/.venv/bin/python" -m "$script" "${args[@]}" | tee "$log"
sed -n "s/^.*$marker //p" "$log" | tail -1 > "$json"
echo "bench: results in $json"
