#!/usr/bin/env bash
# lcm.c beside its peers (OpenVINO with NNCF int8, PyTorch + diffusers) on the same model folder, CPU,
# thread count, prompt, size and steps; prints one table and appends it to BENCHMARKS.md.
# See bench/peers/README.md. Never part of the product, never run by CI.
set -uo pipefail

usage() {
    echo "usage: bench/peers/run.sh --model DIR [--size 512x512] [--steps 4] [--threads 2] [--runs 2]" >&2
    echo "                          [--samples 4] [--only lcm,torch,openvino,torch-autocast] [--tiers fp32,fast,int8,autocast]" >&2
    echo "                          [--no-append]" >&2
    echo "                          [--controlnet CN_DIR --lora LCM_LORA.safetensors --control-image IMAGE] [--guidance 8.5]" >&2
    echo "                          [--prepare-only] [--from-results RESULTS.jsonl]" >&2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
model="" size=512x512 steps=4 threads=2 runs=2 samples=4 only="lcm,torch,openvino,torch-autocast" append=1 prepare_only=0 from_results=""
tiers="fp32,fast,int8,autocast"
controlnet="" lora="" control_image=""
prompt="a beautiful pink unicorn, 8k"
guidance=8.5
while [ $# -gt 0 ]; do
    case "$1" in
        --model) model=${2:-}; shift 2 ;;
        --size) size=${2:-}; shift 2 ;;
        --steps) steps=${2:-}; shift 2 ;;
        --threads) threads=${2:-}; shift 2 ;;
        --runs) runs=${2:-}; shift 2 ;;
        --samples) samples=${2:-}; shift 2 ;;
        --only) only=${2:-}; shift 2 ;;
        --tiers) tiers=${2:-}; shift 2 ;;
        --controlnet) controlnet=${2:-}; shift 2 ;;
        --lora) lora=${2:-}; shift 2 ;;
        --control-image) control_image=${2:-}; shift 2 ;;
        --guidance) guidance=${2:-}; shift 2 ;;
        --no-append) append=0; shift ;;
        --prepare-only) prepare_only=1; shift ;;
        --from-results) from_results=${2:-}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option '$1'" >&2; usage; exit 2 ;;
    esac
done
if [ -z "$model" ] || [ ! -f "$model/model_index.json" ]; then
    echo "run.sh: --model must name a diffusers model folder (with model_index.json); got '$model'" >&2
    usage; exit 2
fi
# The ControlNet variant (SD1.5 + LCM-LoRA fused + ControlNet): --model is the SD1.5 folder.
if [ -n "$controlnet$lora$control_image" ]; then
    if [ ! -f "$controlnet/config.json" ] || [ ! -f "$lora" ] || [ ! -f "$control_image" ]; then
        echo "run.sh: the ControlNet variant needs --controlnet CN_DIR (with config.json), --lora FILE and" >&2
        echo "        --control-image FILE, all existing; got '$controlnet', '$lora', '$control_image'" >&2
        exit 2
    fi
    controlnet=$(cd "$controlnet" && pwd)
    lora=$(cd "$(dirname "$lora")" && pwd)/$(basename "$lora")
    control_image=$(cd "$(dirname "$control_image")" && pwd)/$(basename "$control_image")
fi
case "$guidance" in [0-9]*) ;; *) echo "run.sh: --guidance '$guidance': expected a number" >&2; exit 2 ;; esac
case "$size" in [0-9]*x[0-9]*) ;; *) echo "run.sh: --size '$size': expected WIDTHxHEIGHT" >&2; exit 2 ;; esac
model=$(cd "$model" && pwd)
lcm="$root/build/lcm"
if [ ! -x "$lcm" ]; then echo "run.sh: $lcm is missing: run 'make' first" >&2; exit 2; fi

# ---- the virtual environment: installed once, reused while requirements.txt is unchanged ----------
venv="$root/build/peers-venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== setting up $venv (pinned packages of $requirements; once)" >&2
    python3 -m venv "$venv" || exit 1
    "$venv/bin/pip" install --quiet -r "$requirements" || { echo "run.sh: pip install failed" >&2; exit 1; }
    echo "$want" > "$stamp"
else
    echo "== reusing $venv (requirements unchanged: nothing installed)" >&2
fi
py="$venv/bin/python"
peers="$here/peers.py"

# ---- where the converted and quantized models and the results go ---------------------------------
variant=""
[ -n "$controlnet" ] && variant="-controlnet"
key=$(stat -c '%n %s %Y' "$model"/unet/*.safetensors "$model"/text_encoder/*.safetensors \
    ${controlnet:+"$controlnet"/*.safetensors "$lora" "$control_image"} 2>/dev/null | sha256sum | cut -c1-12)
work="$root/build/peers/$(basename "$model")$variant-$key"
mkdir -p "$work"
stamp_now=$(date -u +%Y%m%dT%H%M%SZ)
results="$work/results-$stamp_now.jsonl"
logs="$work/logs-$stamp_now"
mkdir -p "$logs"
export OMP_NUM_THREADS="$threads"
calibration="$root/data/calibration-prompts.txt"
common=(--model "$model" --size "$size" --steps "$steps" --threads "$threads" --runs "$runs" --guidance "$guidance")
# What the ControlNet variant adds to every PyTorch and OpenVINO command (peers.py) and to lcm bench.
peer_cn=() lcm_cn=()
if [ -n "$controlnet" ]; then
    peer_cn=(--control-image "$control_image")
    lcm_cn=(--lora "$lora" --controlnet "$controlnet" --control-image "$control_image")
fi

wanted() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
tier() { case ",$tiers," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# A failed row: the system, its precision and the last line it wrote to stderr.
fail_row() {
    local system=$1 precision=$2 log=$3
    local why
    why=$(grep -v '^\s*$' "$log" 2>/dev/null | tail -n 1 | tr -d '|' | cut -c1-200)
    "$py" -c 'import json,sys; print(json.dumps({"system": sys.argv[1], "precision": sys.argv[2], "error": sys.argv[3]}))' \
        "$system" "$precision" "${why:-no output}" >> "$results"
    echo "   FAILED: ${why:-no output} (log: $log)" >&2
}

# Runs one system in its own process; its last stdout line is its JSON result.
run_system() {
    local system=$1 precision=$2; shift 2
    local name="${system// /_}-$precision"
    echo "== $system $precision" >&2
    if "$@" > "$logs/$name.out" 2> "$logs/$name.err"; then
        tail -n 1 "$logs/$name.out" | "$py" -c 'import json,sys; r=json.loads(sys.stdin.read()); r["system"]=sys.argv[1]; r["precision"]=sys.argv[2]; print(json.dumps(r))' \
            "$system" "$precision" >> "$results" || fail_row "$system" "$precision" "$logs/$name.err"
        tail -n 1 "$results" >&2
    else
        fail_row "$system" "$precision" "$logs/$name.err"
    fi
}

# lcm bench's JSON in the table's terms.
lcm_row() {
    "$py" -c '
import json, sys
r = json.load(sys.stdin)
s = r["stages"]
print(json.dumps({"text_encoding_s": s["text_encoding"]["median_s"], "unet_step_s": s["unet_step"]["median_s"],
                  "vae_decode_s": s["vae_decode"]["median_s"], "end_to_end_s": s["end_to_end"]["median_s"],
                  "end_to_end_cpu_s": s["end_to_end"]["median_cpu_s"],
                  "cpu_s": {"text": s["text_encoding"]["median_cpu_s"], "unet": s["unet_step"]["median_cpu_s"],
                            "vae": s["vae_decode"]["median_cpu_s"], "e2e": s["end_to_end"]["median_cpu_s"]},
                  "load_s": r["load_s"], "peak_rss_bytes": r["peak_rss_bytes"],
                  "note": "threads %d, peak %.0f GFLOP/s" % (r["threads"], r["peak_gflops"])}))'
}
lcm_bench() { # model, precision, then extra options of lcm bench
    local bench_model=$1 precision=$2; shift 2
    "$lcm" bench --model "$bench_model" --precision "$precision" --size "$size" --steps "$steps" --threads "$threads" \
        --runs "$runs" --guidance "$guidance" --prompt "$prompt" "$@" --json | lcm_row
}

# ---- preparation, cached under $work: the OpenVINO IR, the int8 lcm.c model, the NNCF int8 UNet ----
lcm_int8="$work/lcm-int8-s$samples"
# The ControlNet variant: cn-prepare's diffusers folder of SD1.5 with the LoRA fused (lcm quantize
# cannot fuse a LoRA into the UNet it quantizes) and the ControlNet quantized beside it.
fused="$work/sd15-lora-fused"
lcm_cn_int8="$work/lcm-controlnet-int8-s$samples"
prepare_lcm_int8() {
    # Another run still quantizing into the same folder: wait for it rather than start over.
    while pgrep -f -- "--output $lcm_int8" > /dev/null; do sleep 10; done
    [ -f "$lcm_int8/model_index.json" ] && return
    echo "== lcm quantize ($samples calibration prompts, once)" >&2
    rm -rf "$lcm_int8" "$lcm_cn_int8"
    # (lcm quantize runs one thread per physical core: it has no --threads)
    if [ -z "$controlnet" ]; then
        "$lcm" quantize --model "$model" --calibration "$calibration" --samples "$samples" --steps "$steps" \
            --output "$lcm_int8" --quiet > "$work/lcm-quantize.log" 2>&1
        return
    fi
    [ -f "$fused/model_index.json" ] || { echo "no LoRA-fused model (cn-prepare failed: $work/cn-prepare.log)" > "$work/lcm-quantize.log"; return; }
    # Both networks of the step in 8 bits, as the notebook quantizes both (the ControlNet last, since
    # the UNet's folder is what the row checks for).
    "$lcm" quantize --controlnet "$controlnet" --model "$fused" --calibration "$calibration" --samples "$samples" \
        --steps "$steps" --guidance "$guidance" --control-image "$control_image" --output "$lcm_cn_int8" --quiet \
        > "$work/lcm-quantize.log" 2>&1 &&
    "$lcm" quantize --model "$fused" --calibration "$calibration" --samples "$samples" --steps "$steps" \
        --guidance "$guidance" --output "$lcm_int8" --quiet >> "$work/lcm-quantize.log" 2>&1
}
ir="$work/openvino-ir"
unet_int8="$work/openvino-unet-int8-s$samples-$size/openvino_model.xml"
controlnet_int8=""
if [ -n "$controlnet" ]; then
    unet_int8="$work/openvino-int8-s$samples-$size/unet_controlnet.xml"
    controlnet_int8="$work/openvino-int8-s$samples-$size/controlnet.xml"
    # The fused model and the IR, converted part by part with ov.convert_model as the notebook does.
    if [ -z "$from_results" ] && { wanted openvino || wanted lcm; } && [ ! -f "$ir/vae_decoder.xml" ]; then
        echo "== fusing the LoRA and converting to OpenVINO IR with ov.convert_model (once)" >&2
        "$py" "$peers" cn-prepare "${common[@]}" --controlnet "$controlnet" --lora "$lora" --out "$work" \
            > "$work/cn-prepare.log" 2>&1 || echo "   cn-prepare failed (log: $work/cn-prepare.log)" >&2
        cp "$work/cn-prepare.log" "$work/ov-convert.log"
    fi
fi
if [ -z "$from_results" ] && [ -z "$controlnet" ] && wanted openvino; then
    if [ ! -f "$ir/model_index.json" ]; then
        # optimum-intel's exporter, fp16 weights as OpenVINO's LCM notebook saves them (decompressed to the
        # inference precision when compiled). The notebook's own ov.convert_model of CLIPTextModel fails to
        # trace with transformers 5 (README); optimum-intel patches that model for export.
        echo "== converting to OpenVINO IR with optimum-cli (once)" >&2
        # The exporter loads every part model_index.json names; a folder without the safety checker and
        # its feature extractor (lcm synth writes none) is exported through a view that names them null.
        view="$work/model-for-export"
        rm -rf "$view" "$ir.partial"
        mkdir -p "$view"
        for part in "$model"/*; do
            [ "$(basename "$part")" = model_index.json ] || ln -s "$part" "$view/"
        done
        "$py" -c '
import json, os, sys
index = json.load(open(os.path.join(sys.argv[1], "model_index.json")))
for part in ("safety_checker", "feature_extractor", "image_encoder"):
    if part in index and not os.path.isdir(os.path.join(sys.argv[1], part)):
        index[part] = [None, None]
index["requires_safety_checker"] = False
json.dump(index, open(os.path.join(sys.argv[2], "model_index.json"), "w"), indent=2)' "$model" "$view"
        "$venv/bin/optimum-cli" export openvino --model "$view" --task text-to-image --weight-format fp16 \
            "$ir.partial" > "$work/ov-convert.log" 2>&1 && mv "$ir.partial" "$ir" ||
            echo "   conversion failed (log: $work/ov-convert.log)" >&2
    fi
fi
# The IR is complete: optimum-cli's folder, or cn-prepare's (its VAE decoder is written last).
ir_ready() { [ -f "$ir/model_index.json" ] || [ -f "$ir/vae_decoder.xml" ]; }
prepare_nncf_int8() {
    ir_ready && [ ! -f "$unet_int8" ] || return
    echo "== nncf.quantize of the UNet${controlnet:+ and the ControlNet} ($samples calibration captions, once)" >&2
    "$py" "$peers" ov-quantize "${common[@]}" --ir "$ir" --precision default --captions "$calibration" \
        --samples "$samples" --out "$unet_int8" ${controlnet:+--controlnet-int8 "$controlnet_int8"} "${peer_cn[@]}" \
        > "$work/ov-quantize.log" 2>&1 ||
        echo "   nncf.quantize failed (log: $work/ov-quantize.log)" >&2
}
# The int8 models are made right before their tier, so that the float rows come first.
if [ "$prepare_only" = 1 ]; then
    wanted lcm && prepare_lcm_int8
    wanted openvino && prepare_nncf_int8
    echo "== prepared under $work (nothing timed)" >&2
    exit 0
fi

# ---- the timed runs, each system in its own process ------------------------------------------------
# --from-results: no runs, the table of the rows an interrupted run left (the rest marked not run).
if [ -n "$from_results" ]; then
    results=$from_results
    load_before=$(cat "${results%.jsonl}.load" 2>/dev/null || echo unknown)
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    "$py" - "$results" "$only" "$tiers" <<'EOF2'
import json, sys
path, only, tiers = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
done = {(r["system"], r["precision"]) for r in map(json.loads, filter(str.strip, open(path)))}
expected = [("fp32", "lcm", "lcm.c", "fp32"), ("fp32", "torch", "PyTorch+diffusers", "fp32"),
            ("fp32", "openvino", "OpenVINO", "fp32"), ("fast", "lcm", "lcm.c", "bf16"),
            ("fast", "torch", "PyTorch+diffusers", "bf16"), ("fast", "openvino", "OpenVINO", "default"),
            ("int8", "lcm", "lcm.c", "int8"), ("int8", "openvino", "OpenVINO+NNCF", "int8"),
            ("autocast", "torch-autocast", "PyTorch+diffusers", "bf16-autocast")]
with open(path, "a") as out:
    for tier, group, system, precision in expected:
        if tier in tiers and group in only and (system, precision) not in done:
            out.write(json.dumps({"system": system, "precision": precision,
                                  "error": "not run: the run was stopped before this row"}) + "\n")
EOF2
else
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "$load_before" > "${results%.jsonl}.load"
echo "== load average before: $load_before" >&2

# In tiers of precision, so that the rows compared with each other run minutes apart on a shared machine.
has_bf16=0
grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo && has_bf16=1
have_ir=0
ir_ready && have_ir=1
openvino_row() { # precision, then extra arguments of peers.py ov
    local system=OpenVINO precision=$1; shift
    [ "$precision" = int8 ] && system=OpenVINO+NNCF
    if [ "$have_ir" = 0 ]; then fail_row "$system" "$precision" "$work/ov-convert.log"; return; fi
    run_system "$system" "$precision" "$py" "$peers" ov "${common[@]}" --ir "$ir" --prompt "$prompt" "${peer_cn[@]}" "$@"
}
torch_row() { # precision
    run_system "PyTorch+diffusers" "$1" "$py" "$peers" torch "${common[@]}" --precision "$1" --prompt "$prompt" \
        ${controlnet:+--controlnet "$controlnet" --lora "$lora"} "${peer_cn[@]}"
}

# fp32
if tier fp32; then
    wanted lcm && run_system "lcm.c" fp32 lcm_bench "$model" fp32 "${lcm_cn[@]}"
    wanted torch && torch_row fp32
    wanted openvino && openvino_row fp32 --precision fp32
fi
# the CPU's fast float precision
if tier fast; then
    [ "$has_bf16" = 1 ] && wanted lcm && run_system "lcm.c" bf16 lcm_bench "$model" bf16 "${lcm_cn[@]}"
    wanted torch && torch_row bf16
    wanted openvino && openvino_row default --precision default
fi
# int8
if tier int8; then
    wanted lcm && prepare_lcm_int8
    wanted openvino && prepare_nncf_int8
    if wanted lcm; then
        if [ -f "$lcm_int8/model_index.json" ] && [ -z "$controlnet" ]; then run_system "lcm.c" int8 lcm_bench "$lcm_int8" fp32
        elif [ -f "$lcm_int8/model_index.json" ]; then
            run_system "lcm.c" int8 lcm_bench "$lcm_int8" fp32 --controlnet "$lcm_cn_int8" --control-image "$control_image"
        else fail_row "lcm.c" int8 "$work/lcm-quantize.log"; fi
    fi
    if wanted openvino; then
        if [ -f "$unet_int8" ]; then
            openvino_row int8 --precision default --unet "$unet_int8" ${controlnet:+--controlnet-int8 "$controlnet_int8"}
        elif [ "$have_ir" = 1 ]; then fail_row "OpenVINO+NNCF" int8 "$work/ov-quantize.log"
        else fail_row "OpenVINO+NNCF" int8 "$work/ov-convert.log"; fi
    fi
fi
# bf16 by autocast over fp32 weights, the other way PyTorch users get bf16
tier autocast && wanted torch-autocast && torch_row bf16-autocast

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
fi

# ---- the table -----------------------------------------------------------------------------------
table=$("$py" "$peers" table --results "$results")
cpu=$(lscpu | sed -n 's/^Model name:\s*//p' | head -n 1)
flags=$(for f in avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_int8 amx_tile; do
    grep -qw "$f" /proc/cpuinfo && printf '%s ' "$f"; done)
versions=$("$py" - <<'EOF'
import importlib.metadata as m, platform
names = ["torch", "diffusers", "transformers", "openvino", "nncf", "optimum-intel", "peft", "numpy"]
print(", ".join(f"{n} {m.version(n)}" for n in names) + f", python {platform.python_version()}")
EOF
)
revision=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
title="lcm.c beside OpenVINO and PyTorch" cn_args="" cn_words="" tiers_arg=""
[ "$tiers" != "fp32,fast,int8,autocast" ] && tiers_arg=" --tiers $tiers"
if [ -n "$controlnet" ]; then
    title="SD1.5 + LCM-LoRA + ControlNet: lcm.c beside OpenVINO and PyTorch"
    cn_args=" --controlnet $(basename "$controlnet") --lora $(basename "$lora") --control-image $(basename "$control_image") --guidance $guidance"
    cn_words="

The ControlNet variant: SD1.5 with the LCM-LoRA fused (lcm.c: \`--lora\` at load; diffusers:
load_lora_weights + fuse_lora; OpenVINO: converted after fusing) and the ControlNet on one control
image; a UNet step is the ControlNet and the UNet on the step's batch (2 rows under classifier-free
guidance, guidance above 1); int8: UNet and ControlNet both 8-bit (lcm quantize of the fused model
and of the ControlNet; nncf.quantize of both IRs)."
fi
section=$(cat <<EOF

## Peers, $(date -u '+%Y-%m-%d %H:%M UTC'): $title (bench/peers/run.sh)

\`bench/peers/run.sh --model $(basename "$model") --size $size --steps $steps --threads $threads --runs $runs --samples $samples$cn_args${tiers_arg}\`
(lcm.c $revision). CPU: "$cpu", $(nproc) cores, flags: ${flags% }. Load average (1/5/15 min)
before: $load_before, after: $load_after. Prompt "$prompt", guidance $guidance, every system in its own
process, one warm-up of each stage then $runs rounds of every stage in turn, the median of each; end to
end = a whole generation with the model loaded, its CPU seconds (the process, all threads) beside; load =
reading the model until it can run (OpenVINO: compile of the IR; lcm.c: lcm_pipeline_open). int8: lcm quantize and nncf.quantize each calibrated on the first $samples prompts of
data/calibration-prompts.txt. Packages (all pinned in bench/peers/requirements.txt): $versions.$cn_words

$table
EOF
)
echo "$section"
if [ "$append" = 1 ]; then
    # Newest figures on top: the section goes in before the file's first "## " section, so earlier
    # peer tables move down into the history.
    printf '%s\n' "$section" | "$py" -c '
import sys
path = sys.argv[1]
section = sys.stdin.read().strip("\n") + "\n\n"
lines = open(path, encoding="utf-8").read().splitlines(keepends=True)
at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
open(path, "w", encoding="utf-8").write("".join(lines[:at]) + section + "".join(lines[at:]))' "$root/BENCHMARKS.md"
    echo "== added to $root/BENCHMARKS.md" >&2
fi
