#!/bin/sh
# Soak test of `lcm serve` (not CI): starts a server on the fixtures' ControlNet workflow (SD1.5 +
# LCM-LoRA + ControlNet + NormalBae, as tests/control_fixtures.h finds it) and runs
# bench_soak_serve against it with 200 clients for SECONDS (default 180), then stops it with
# SIGTERM and checks that it exits 0.
#   bench/soak_serve.sh [SECONDS] [CLIENTS]
# Results go to BENCHMARKS.md by hand, with the CPU and the duration.
set -eu
SECONDS_TO_RUN=${1:-180}
CLIENTS=${2:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
FIX=${LCM_FIXTURES:-$ROOT/../shared/fixtures}
BUILD=${BUILD:-$ROOT/build}
LORA=$(ls "$FIX"/tiny-sd15/loras/lcm-lora-diffusers/*.safetensors | head -1)
PHOTO=$FIX/normalbae/golden/input.png
OUT=$(mktemp)
# All clients come from 127.0.0.1: the per-address limit is raised to let 200 of them in.
"$BUILD/lcm" serve --model "$FIX/tiny-sd15" --controlnet "$FIX/tiny-controlnet" --lora "$LORA" \
    --control-weights "$FIX/normalbae/normalbae.safetensors" --port 0 --threads 1 --max-per-ip 1000 \
    >"$OUT" 2>"$OUT.log" &
PID=$!
for _ in $(seq 1 120); do grep -q listening "$OUT" && break; sleep 0.5; done
URL=$(sed -n 's/.*listening on \(http:[^ ]*\)\/$/\1/p' "$OUT")
echo "server $PID at $URL; CPU: $(lscpu | sed -n 's/^Model name: *//p'); $(date -u)"
STATUS=0
"$BUILD/bench_soak_serve" "$URL" "$PID" "$SECONDS_TO_RUN" "$CLIENTS" "$PHOTO" || STATUS=$?
kill -TERM "$PID"
wait "$PID" && echo "server exited 0 after SIGTERM" || { echo "server exit status $?"; STATUS=1; }
grep -c "lcm serve: job" "$OUT.log" | sed 's/^/jobs run: /'
rm -f "$OUT" "$OUT.log"
exit $STATUS
