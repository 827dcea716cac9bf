#!/usr/bin/env bash
# Coverage-guided fuzzing of the fast path's request loop (the C files of
# csi_vduse/dataplane/fast/ but sandbox.c) and of the RBD backend (csi_vduse/dataplane/rbd/rbd.c,
# on the fake librbd of fuzz/fake_librbd.c) with the libFuzzer target
# csi_vduse/dataplane/fast/fuzz/fuzz_ring.c, under ASan and UBSan.
#
#   bash scripts/fuzz.sh build                 build only (build/fuzz/fuzz_ring)
#   bash scripts/fuzz.sh replay [--skip-defects] [FILE|DIR ...]
#        run each input once; fails on any crash, leak or timeout. Without paths: the
#        seeds (corpus/seeds) and the known-defect inputs (corpus/defects), which crash
#        until their fixes land; --skip-defects leaves the latter out.
#   bash scripts/fuzz.sh run SECONDS           fuzz from the seeds for SECONDS into a
#        scratch corpus; fails if anything is found (the input is saved in build/fuzz/).
#   bash scripts/fuzz.sh coverage [FILE|DIR ...]
#        line coverage of the request loop's files by these inputs (default: the seeds), from a
#        build without sanitizers; shows which lines no input reaches.
#
# CI: bash scripts/fuzz.sh replay && bash scripts/fuzz.sh run 180
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FAST=$ROOT/csi_vduse/dataplane/fast
SEEDS=$FAST/fuzz/corpus/seeds
DEFECTS=$FAST/fuzz/corpus/defects
BUILD=${FUZZ_BUILD_DIR:-$ROOT/build/fuzz}
BIN=$BUILD/fuzz_ring
CC=${CC:-clang-14}
LIBURING=/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)/liburing.a
# Every run: a hang is a finding after 10 s, and memory is bounded.
LIMITS=(-timeout=10 -rss_limit_mb=2048)
# The request loop: every C file of the fast path but the seccomp filter (cffi writes _ring.c).
LOOP=()
for f in "$FAST"/[a-z]*.c; do [[ $f == */sandbox.c ]] || LOOP+=("$f"); done
# The RBD backend, built through fuzz/rbd_fuzz.c (its locks and poll go through the fake
# librbd), against the fake; the real <rbd/librbd.h> (librbd-dev) declares what both define.
RBD=$ROOT/csi_vduse/dataplane/rbd
HARNESS=("$FAST/fuzz/fuzz_ring.c" "$FAST/fuzz/fake_librbd.c" "$FAST/fuzz/rbd_fuzz.c")

build() {
    mkdir -p "$BUILD"
    local sources=("${HARNESS[@]}" "${LOOP[@]}")
    # Rebuild only when a source changed, so replay and run can be called back to back.
    if [[ -x $BIN ]] && [[ -z $(find "${sources[@]}" "$FAST"/*.h "$FAST"/fuzz/*.h "$RBD"/*.[ch] \
        "$0" -newer "$BIN") ]]; then
        return
    fi
    "$CC" -g -O1 -fno-omit-frame-pointer \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Wall -Wextra -Wno-unused-parameter -I"$FAST" -Dio_uring_submit=fuzz_io_uring_submit \
        "${sources[@]}" "$LIBURING" -lpthread -o "$BIN"
}

replay() {
    local skip_defects=0 paths=()
    for arg in "$@"; do
        case $arg in
            --skip-defects) skip_defects=1 ;;
            *) paths+=("$arg") ;;
        esac
    done
    if [[ ${#paths[@]} -eq 0 ]]; then
        paths=("$SEEDS")
        [[ $skip_defects -eq 1 ]] || paths+=("$DEFECTS")
    fi
    local files=() failed=()
    for path in "${paths[@]}"; do
        if [[ -d $path ]]; then
            while IFS= read -r -d '' f; do files+=("$f"); done \
                < <(find "$path" -type f -print0 | sort -z)
        else
            files+=("$path")
        fi
    done
    [[ ${#files[@]} -gt 0 ]] || { echo "replay: no inputs" >&2; return 1; }
    # One process per input, so each failure is reported, not only the first.
    local log=$BUILD/replay.log
    for f in "${files[@]}"; do
        if "$BIN" "${LIMITS[@]}" "$f" >"$log" 2>&1; then
            echo "ok      ${f#"$ROOT"/}"
        else
            echo "FAILED  ${f#"$ROOT"/}: $(grep -m1 -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' \
                "$log" || tail -n1 "$log")"
            cp "$log" "$BUILD/replay-$(basename "$f").log"
            failed+=("$f")
        fi
    done
    echo "replay: ${#files[@]} inputs, ${#failed[@]} failed (logs: ${BUILD#"$ROOT"/}/replay-*.log)"
    [[ ${#failed[@]} -eq 0 ]]
}

run() {
    local seconds=${1:?run SECONDS}
    local scratch findings
    scratch=$(mktemp -d "$BUILD/run-corpus.XXXXXX")
    findings=$(mktemp -d "$BUILD/findings.XXXXXX")
    # Fork mode with crashes and timeouts ignored: one finding does not end the run, so a
    # known defect cannot hide a new one. New inputs go to the scratch corpus (the first
    # directory); the seeds are only read. Known-defect inputs stay out of it.
    "$BIN" "${LIMITS[@]}" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_total_time="$seconds" -artifact_prefix="$findings/" "$scratch" "$SEEDS" \
        >"$BUILD/run.log" 2>&1 || true
    # The last status line: coverage, features, corpus, exec/s, findings.
    grep -E '^#[0-9]+: cov:' "$BUILD/run.log" | tail -n1
    echo "run: $(find "$scratch" -type f | wc -l) inputs in ${scratch#"$ROOT"/}," \
        "log in ${BUILD#"$ROOT"/}/run.log"
    local found=("$findings"/*)
    [[ -e ${found[0]} ]] || { echo "run: nothing found in $seconds s"; return 0; }
    # What each finding is, from replaying it alone: the harness's own complaint (the contract
    # checker's or the fake librbd's) or else its sanitizer summary, and the first frame in
    # the C under test; the same defect found many times is listed once, counted.
    echo "run: FOUND ${#found[@]} inputs (in ${findings#"$ROOT"/}), by kind:" >&2
    for f in "${found[@]}"; do
        "$BIN" "${LIMITS[@]}" "$f" >"$f.log" 2>&1 || true
        local kind
        kind=$(grep -m1 -E '^(backend|fake librbd): ' "$f.log" | sed -E 's/[0-9]+/N/g') ||
            kind=$(grep -m1 -E '^SUMMARY' "$f.log" | sed -E 's/^SUMMARY: //; s| /[^ ]*/| |; s|string/../sysdeps/[^ ]*||')
        echo "$kind |" \
            "$(grep -m1 -oE 'in [a-z_]+ [^ ]*/(fast|rbd)/[a-z]+\.c:[0-9]+' "$f.log" | sed -E 's|/[^ ]*/||')" \
            "| e.g. $(basename "$f")"
    done | sort | awk -F' [|] e.g. ' '{n[$1]++; if (!($1 in ex)) ex[$1]=$2}
        END {for (k in n) printf "  %4d x %s (e.g. %s)\n", n[k], k, ex[k]}' >&2
    return 1
}

coverage() {
    local paths=("$@") bin=$BUILD/fuzz_ring_cov
    [[ ${#paths[@]} -gt 0 ]] || paths=("$SEEDS")
    "$CC" -g -O0 -fprofile-instr-generate -fcoverage-mapping -fsanitize=fuzzer \
        -I"$FAST" "${HARNESS[@]}" "${LOOP[@]}" "$LIBURING" \
        -lpthread -o "$bin"
    rm -f "$BUILD"/cov-*.profraw
    local files=()
    for path in "${paths[@]}"; do
        if [[ -d $path ]]; then
            while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$path" -type f -print0)
        else
            files+=("$path")
        fi
    done
    LLVM_PROFILE_FILE="$BUILD/cov-%p.profraw" "$bin" -runs=1 "${files[@]}" >/dev/null 2>&1 || true
    llvm-profdata-14 merge -sparse "$BUILD"/cov-*.profraw -o "$BUILD/cov.profdata"
    llvm-cov-14 report "$bin" -instr-profile="$BUILD/cov.profdata" "${LOOP[@]}" "$RBD/rbd.c"
    llvm-cov-14 show "$bin" -instr-profile="$BUILD/cov.profdata" "${LOOP[@]}" "$RBD/rbd.c" \
        >"$BUILD/coverage.txt"
    echo "coverage: annotated sources in ${BUILD#"$ROOT"/}/coverage.txt"
}

cmd=${1:-}
shift || true
case $cmd in
    build) build ;;
    replay) build && replay "$@" ;;
    run) build && run "$@" ;;
    coverage) mkdir -p "$BUILD" && coverage "$@" ;;
    *) sed -n '7,18p' "$0" >&2; exit 2 ;;
esac
