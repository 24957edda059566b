#!/usr/bin/env bash
# Warm-start figures of the packed-weight cache (issue 18): for each precision, `lcm bench`'s
# end-to-end time and load beside the wall time and peak RSS of whole `lcm generate` runs with a
# warm cache and with --no-cache, and whether both give the same PNG bytes.
#   bench/warm_start.sh MODEL_DIR [SIZE]      (e.g. /tmp/lcm-full from `lcm synth`, 512)
# Uses its own cache folder (XDG_CACHE_HOME=build/warm-start-cache). Set LCM_AMX=0 etc. outside.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/warm_start.sh MODEL_DIR [SIZE]}
size=${2:-512}
export XDG_CACHE_HOME=$PWD/build/warm-start-cache
lcm=./build/lcm
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gen=("$lcm" generate --model "$model" --prompt 'a photo of a cat' --seed 7 --width "$size" --height "$size" --quiet)
date -u; lscpu | grep 'Model name'; uptime
for p in fp32 bf16; do
    "${gen[@]}" --precision "$p" --steps 1 --output "$out/warm-up.png" >/dev/null 2>&1 # kernel table + cache
    "$lcm" bench --model "$model" --size "${size}x${size}" --runs 1 --precision "$p" --json >"$out/bench.json"
    python3 - "$out/bench.json" "$p" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
stages = {k: round(v["median_s"], 3) for k, v in d["stages"].items()}
print(sys.argv[2], "bench", stages, "load", round(d.get("load_s", 0), 2), "s, peak RSS", round(d["peak_rss_bytes"] / 1e9, 2), "GB")
PY
    for i in 1 2; do
        /usr/bin/time -f "$p generate, warm cache: wall %e s, peak RSS %M KiB" "${gen[@]}" --precision "$p" --output "$out/cached-$i.png" 2>&1 | tail -1
    done
    /usr/bin/time -f "$p generate --no-cache: wall %e s, peak RSS %M KiB" "${gen[@]}" --precision "$p" --no-cache --output "$out/plain.png" 2>&1 | tail -1
    cmp -s "$out/cached-1.png" "$out/plain.png" && echo "$p: same PNG bytes with and without the cache" \
        || echo "$p: PNG bytes DIFFER with and without the cache"
done
uptime
