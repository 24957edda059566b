#!/usr/bin/env bash
# Writes the seed corpora under fuzz/corpus/: a few tiny safetensors files and JSON configs, all made
# up here (no fixture data). Rerun after changing it; the output is deterministic.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
st="$here/corpus/fuzz_safetensors"
js="$here/corpus/fuzz_json_config"
mkdir -p "$st" "$js"

# Little-endian u64 of $1 as raw bytes.
le64() {
    local v=$1 i
    for i in 0 1 2 3 4 5 6 7; do
        printf "\\x$(printf %02x $((v & 255)))"
        v=$((v >> 8))
    done
}

# safetensors FILE HEADER_JSON DATA_HEX: header space-padded to a multiple of 8 like real writers.
safetensors() {
    local file=$1 header=$2 data=$3
    while (( ${#header} % 8 )); do header+=" "; done
    { le64 ${#header}; printf '%s' "$header"; printf "$(sed 's/\(..\)/\\x\1/g' <<<"$data")"; } >"$file"
}

safetensors "$st/empty_header.safetensors" '{}' ''
safetensors "$st/one_f32.safetensors" \
    '{"__metadata__":{"info":"{\"seed\": 1}"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}' \
    '0000803f000000c00000004000000000'
safetensors "$st/mixed_dtypes.safetensors" \
    '{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[6,10]},"ids":{"dtype":"I64","shape":[1,2],"data_offsets":[10,26]},"px":{"dtype":"U8","shape":[2,1,1],"data_offsets":[26,28]},"m":{"dtype":"BOOL","shape":[2],"data_offsets":[28,30]}}' \
    '003c0100007c803fc0c0b1bc000000000000feffffffffffffff00ff0100'
safetensors "$st/empty_and_scalar.safetensors" \
    '{"none":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"i":{"dtype":"I32","shape":[2],"data_offsets":[8,16]},"__metadata__":{"format":"pt"}}' \
    '000000000000f03ffeffffff07000000'

cat >"$js/unet_config.json" <<'JSON'
{
  "_class_name": "UNet2DConditionModel",
  "_diffusers_version": "0.26.3",
  "act_fn": "silu",
  "attention_head_dim": [2, 4],
  "block_out_channels": [32, 64],
  "cross_attention_dim": 32,
  "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
  "in_channels": 4,
  "layers_per_block": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "sample_size": 8,
  "time_cond_proj_dim": null,
  "use_linear_projection": false
}
JSON
cat >"$js/model_index.json" <<'JSON'
{"_class_name": "LatentConsistencyModelPipeline", "requires_safety_checker": true,
 "safety_checker": [null, null], "scheduler": ["diffusers", "LCMScheduler"],
 "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
JSON
cat >"$js/scheduler_config.json" <<'JSON'
{"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": false,
 "num_train_timesteps": 1000, "original_inference_steps": 50, "set_alpha_to_one": true,
 "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": null}
JSON
cat >"$js/weight_index.json" <<'JSON'
{"metadata": {"total_size": 48}, "weight_map": {"a.weight": "shard-1.safetensors",
 "b.bias": "shard-2.safetensors"}}
JSON
cat >"$js/edge_values.json" <<'JSON'
{"big": 9223372036854775807, "neg": -9223372036854775808, "frac": 2.5, "tiny": 1e-320,
 "huge": 1e308, "s": "\u00e9\ud83d\ude00", "nested": {"a": [[1], [2]]}, "t": true, "n": null,
 "ints": [1, -2, 3, 4, 5, 6, 7, 8, 9], "mixed": [1, "2", 3.5, null]}
JSON
printf '{"a":1}' >"$js/minimal.json"
