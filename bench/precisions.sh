#!/bin/bash
# The precisions side by side on one machine, interleaved so that a noisy machine slows them alike:
# `lcm bench` (one run each, two rounds) of a float model in fp32 and bf16, of its int8 UNet
# (`lcm quantize`) and of its int8 UNet + decoder (`lcm quantize --vae`), then the peak RSS of one
# `lcm generate` of each int8 model. Not CI; results go to BENCHMARKS.md by hand with the CPU.
#   bench/precisions.sh FLOAT_DIR INT8_DIR [INT8_VAE_DIR] [SIZE]
# e.g. after `lcm synth ... --out /tmp/lcm-full` and `lcm quantize --model /tmp/lcm-full
# --calibration F --samples 1 --steps 2 [--vae] --output /tmp/lcm-full-int8[v]`.
set -u
FLOAT=$1 INT8=$2 INT8V=${3:-} SIZE=${4:-512}
LCM=${LCM:-$(cd "$(dirname "$0")/.." && pwd)/build/lcm}
echo "$(date -u) | $(lscpu | sed -n 's/^Model name: *//p') | $(uptime | sed 's/.*load/load/')"
stage() { echo "-- $1 $(date -u +%T)"; shift; "$LCM" bench --size "${SIZE}x${SIZE}" --runs 1 "$@" 2>&1 | grep -E "^run|^load|^peak RSS"; }
for round in 1 2; do
    stage "fp32 ($round)" --model "$FLOAT"
    stage "bf16 ($round)" --model "$FLOAT" --precision bf16
    stage "int8 UNet ($round)" --model "$INT8"
    [ -n "$INT8V" ] && stage "int8 UNet + decoder ($round)" --model "$INT8V"
done
for m in "$INT8" $INT8V; do
    /usr/bin/time -f "$m: lcm generate wall %e s, peak RSS %M KB" "$LCM" generate --model "$m" --prompt "a cat" \
        --seed 1 --steps 4 --width "$SIZE" --height "$SIZE" --output /tmp/precisions-$$.png 2>&1 | tail -1
done
rm -f /tmp/precisions-$$.png
echo "$(date -u) | $(uptime | sed 's/.*load/load/')"
