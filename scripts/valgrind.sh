#!/usr/bin/env bash
# valgrind memcheck over the Release `lcm` (build/): one tiny generation, one generation with a
# LoRA and one with a ControlNet, on the fixture models found by their class (no names assumed).
# Exits non-zero when valgrind reports any error or a definite/indirect leak in any run.
#
#   scripts/valgrind.sh            (make valgrind: builds first)
# Logs: build/valgrind/*.log. Needs valgrind (scripts/install-deps.sh installs it).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
fixtures="${LCM_FIXTURES:-$root/../shared/fixtures}"
lcm="${LCM_BIN:-$root/build/lcm}"
out="$root/build/valgrind"
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "valgrind is not installed (scripts/install-deps.sh)"; exit 1; }

# The first folder under the fixtures whose FILE names CLASS.
find_by_class() { # FILE CLASS
    grep -l "\"_class_name\": *\"$2\"" "$fixtures"/*/"$1" 2>/dev/null | head -n 1 | xargs -r dirname
}
lcm_model=$(find_by_class model_index.json LatentConsistencyModelPipeline)
sd_model=$(find_by_class model_index.json StableDiffusionPipeline)
controlnet=$(find_by_class config.json ControlNetModel)
lora=$(find "${sd_model:-/nonexistent}" -path '*loras*' -name '*.safetensors' 2>/dev/null | sort | head -n 1)
for what in lcm_model sd_model controlnet lora; do
    [ -n "${!what}" ] || { echo "valgrind.sh: no $what among the fixtures in $fixtures"; exit 1; }
done

status=0
# run NAME ARGS...: lcm under memcheck; its own exit status must be 0 and valgrind must find nothing.
run() {
    local name=$1
    shift
    echo "== $name: lcm $*"
    # Errors in the process exit with 99; leaks of kinds definite/indirect count as errors.
    OMP_NUM_THREADS=2 XDG_CACHE_HOME="$out/cache" valgrind --tool=memcheck --error-exitcode=99 \
        --leak-check=full --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect \
        --track-origins=yes --log-file="$out/$name.log" "$lcm" "$@" --quiet
    local rc=$?
    grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|possibly lost' "$out/$name.log" | sed 's/^==[0-9]*== /   /'
    if [ $rc -ne 0 ]; then
        echo "!! $name: exit $rc (see $out/$name.log)"
        status=1
    fi
}

run generate generate --model "$lcm_model" --prompt "a red cube" --steps 1 --width 64 --height 64 --seed 1 \
    --output "$out/generate.png"
run lora generate --model "$sd_model" --lora "$lora" --prompt "a red cube" --steps 1 --guidance 1 --width 64 \
    --height 64 --seed 1 --output "$out/lora.png"
# The first run's picture serves as the control image.
run controlnet generate --model "$sd_model" --controlnet "$controlnet" --control-image "$out/generate.png" \
    --prompt "a red cube" --steps 1 --guidance 1 --width 64 --height 64 --seed 1 --output "$out/controlnet.png"
exit $status
