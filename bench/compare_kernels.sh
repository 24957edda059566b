#!/usr/bin/env bash
# The default kernel choice against every forced kernel combination, stage by stage, in one run
# (issue "Every CPU gets its fastest path": the default must be within 5% of the fastest).
#
#   bench/compare_kernels.sh MODEL_DIR [--precision fp32|bf16] [--runs N] [--size 512x512]
#
# Each configuration is one `lcm bench` process (JSON), run one after another; the table gives
# each stage's median and the default's ratio to the best forced combination. The default runs
# after a first load that fills the kernel cache (the tuning is not part of any timed stage).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/compare_kernels.sh MODEL_DIR [lcm bench options]}
shift
lcm=./build/lcm
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lscpu | grep -m1 'Model name' || true
configs=("default::" "direct:LCM_CONV_KERNEL=direct LCM_LINEAR_KERNEL=direct"
         "onednn:LCM_CONV_KERNEL=onednn LCM_LINEAR_KERNEL=onednn"
         "conv-direct+linear-onednn:LCM_CONV_KERNEL=direct LCM_LINEAR_KERNEL=onednn")
"$lcm" bench --model "$model" --runs 1 "$@" --json >/dev/null 2>&1 || true # fills the kernel cache
for c in "${configs[@]}"; do
  name=${c%%:*}; envs=${c#*:}; envs=${envs%:}
  echo "== $name ${envs}" >&2
  env $envs "$lcm" bench --model "$model" "$@" --json >"$out/$name.json"
done
python3 - "$out" "${configs[@]%%:*}" <<'PY'
import json, sys, os
folder, names = sys.argv[1], sys.argv[2:]
runs = {n: json.load(open(os.path.join(folder, n + ".json"))) for n in names}
stages = list(runs["default"]["stages"])
print("stage".ljust(16) + "".join(n[:26].rjust(28) for n in names) + "   default / best forced")
for st in stages:
    med = {n: runs[n]["stages"][st]["median_s"] for n in names}
    best = min(v for n, v in med.items() if n != "default")
    print(st.ljust(16) + "".join(f"{med[n]:28.3f}" for n in names) + f"   {med['default'] / best:.3f}")
print("peak RSS GB".ljust(16) + "".join(f"{runs[n]['peak_rss_bytes'] / 1e9:28.2f}" for n in names))
PY
