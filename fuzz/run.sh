#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan + UBSan) and runs each for a bounded time.
#
#   fuzz/run.sh [seconds-per-harness]     (default 60)
#
# New corpus entries go to build-fuzz/corpus/<harness>/ (the committed seeds in fuzz/corpus/ are only
# read); crash reproducers go to build-fuzz/artifacts/<harness>/. Exits non-zero if any harness
# crashes, leaks or trips a sanitizer. Reproduce one with: build-fuzz/<harness> <artifact file>.
set -uo pipefail
seconds=${1:-60}
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${LCM_FUZZ_BUILD:-$root/build-fuzz}"
jobs=${JOBS:-2}
# fuzz_tokenizer reads the fixture tokenizer (see tests: ../shared/fixtures beside the repository).
export LCM_FIXTURES="${LCM_FIXTURES:-$root/../shared/fixtures}"

CC=clang cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DLCM_FUZZ=ON -DLCM_SANITIZE=ON \
    >/dev/null || exit 1
harnesses=()
for harness_src in "$root"/fuzz/fuzz_*.c; do harnesses+=("$(basename "$harness_src" .c)"); done
cmake --build "$build" -j "$jobs" --target "${harnesses[@]}" >/dev/null || exit 1

status=0
for harness_src in "$root"/fuzz/fuzz_*.c; do
    harness=$(basename "$harness_src" .c)
    corpus="$build/corpus/$harness"
    artifacts="$build/artifacts/$harness"
    mkdir -p "$corpus" "$artifacts"
    dict="$root/fuzz/${harness#fuzz_}.dict"
    dict_arg=()
    [ -f "$dict" ] && dict_arg=(-dict="$dict")
    echo "== $harness: ${seconds}s"
    # One thread for OpenMP (nothing fuzzed uses it) keeps runs reproducible and the machine usable.
    OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$build/$harness" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "${dict_arg[@]}" \
        "$corpus" "$root/fuzz/corpus/$harness" 2>&1 |
        grep -E '^(#[0-9]+[[:space:]]+(DONE|INITED)|stat::|==[0-9]+==|SUMMARY|Done|.*runtime error|artifact_prefix|Test unit written|ERROR|fuzz_)'
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "!! $harness failed (exit $rc); reproducers in $artifacts"
        status=1
    fi
done
exit $status
