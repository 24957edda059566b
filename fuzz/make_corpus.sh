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

# fuzz_lora: first byte 0 = strict, 1 = lenient; then adapter tensors, "--", model weights (see
# fuzz/fuzz_lora.c for the format).
lora="$here/corpus/fuzz_lora"
mkdir -p "$lora"
lora_seed() { { printf "$1"; cat; } >"$lora/$2"; }
lora_seed '\x00' kohya_linear_alpha <<'TXT'
lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight 4 8
lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight 8 4
lora_unet_down_blocks_0_attentions_0_proj_in.alpha
--
down_blocks.0.attentions.0.proj_in.weight 8 8
TXT
lora_seed '\x00' diffusers_conv <<'TXT'
unet.conv_in.lora.down.weight 2 4 3 3
unet.conv_in.lora.up.weight 8 2 1 1
--
conv_in.weight 8 4 3 3
TXT
lora_seed '\x00' text_encoder_kohya_and_diffusers <<'TXT'
lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight BF16 2 16
lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight BF16 16 2
text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_linear_layer.down.weight 2 16
text_encoder.text_model.encoder.layers.0.self_attn.k_proj.lora_linear_layer.up.weight 16 2
--
te:text_model.encoder.layers.0.self_attn.q_proj.weight 16 16
te:text_model.encoder.layers.0.self_attn.k_proj.weight 16 16
TXT
lora_seed '\x00' legacy_processor <<'TXT'
unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight 2 8
unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight 8 2
unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight 2 8
unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight 8 2
--
mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight 8 8
mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.weight 8 8
TXT
lora_seed '\x01' peft_lenient_unknown <<'TXT'
base_model.model.unet.down_blocks.0.resnets.0.conv1.lora_A.weight F16 2 4 3 3
base_model.model.unet.down_blocks.0.resnets.0.conv1.lora_B.weight F16 4 2 1 1
base_model.model.unet.up_blocks.1.resnets.0.conv2.lora_A.weight 2 4 3 3
base_model.model.unet.up_blocks.1.resnets.0.conv2.lora_B.weight 4 2 1 1
some.other.tensor 3
--
down_blocks.0.resnets.0.conv1.weight 4 4 3 3
down_blocks.0.resnets.0.conv1.bias 4
TXT
lora_seed '\x00' ambiguous_kohya <<'TXT'
lora_unet_a_b.lora_down.weight 2 4
lora_unet_a_b.lora_up.weight 4 2
--
a.b.weight 4 4
a_b.weight 4 4
TXT

# fuzz_checkpoint_config: tensor tables of made-up SD1.x-shaped checkpoints (names and shapes only;
# see fuzz/fuzz_checkpoint_config.c for the format).
ckpt="$here/corpus/fuzz_checkpoint_config"
mkdir -p "$ckpt"
# A two-block UNet (one layer per block, attention in the first), a two-block VAE and a two-layer
# CLIP; $1 = the text encoder's width, $2 = "lcm" for an LCM-distilled UNet.
sd_table() {
    local u=model.diffusion_model. v=first_stage_model. t=cond_stage_model.transformer.text_model.
    echo "${u}input_blocks.0.0.weight 32 4 3 3"
    echo "${u}input_blocks.1.0.out_layers.3.weight 32 32 3 3"
    echo "${u}input_blocks.1.1.proj_in.weight 32 32 1 1"
    echo "${u}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight 32 $1"
    echo "${u}input_blocks.2.0.op.weight 32 32 3 3"
    echo "${u}input_blocks.3.0.out_layers.3.weight 64 64 3 3"
    echo "${u}middle_block.1.proj_in.weight 64 64 1 1"
    echo "${u}middle_block.1.transformer_blocks.0.attn2.to_k.weight 64 $1"
    echo "${u}output_blocks.0.0.out_layers.3.weight 64 64 3 3"
    echo "${u}output_blocks.1.0.out_layers.3.weight 64 64 3 3"
    echo "${u}output_blocks.2.0.out_layers.3.weight 32 32 3 3"
    echo "${u}output_blocks.2.1.proj_in.weight 32 32 1 1"
    echo "${u}output_blocks.3.0.out_layers.3.weight 32 32 3 3"
    echo "${u}out.2.weight 4 32 3 3"
    [ "${2:-}" = lcm ] && echo "${u}time_embed.cond_proj.weight 128 256"
    echo "${v}encoder.conv_in.weight 32 3 3 3"
    echo "${v}encoder.down.0.block.0.conv1.weight 32 32 3 3"
    echo "${v}encoder.down.1.block.0.conv1.weight 64 32 3 3"
    echo "${v}decoder.conv_in.weight 64 4 3 3"
    echo "${v}decoder.conv_out.weight 3 32 3 3"
    echo "${t}embeddings.token_embedding.weight 1000 $1"
    echo "${t}embeddings.position_embedding.weight 77 $1"
    echo "${t}encoder.layers.0.mlp.fc1.weight 256 $1"
    echo "${t}encoder.layers.1.mlp.fc1.weight 256 $1"
}
{ sd_table 64; echo "?unet down_blocks.0.attentions.0.proj_in.weight"; echo "?vae decoder.up_blocks.0.resnets.0.conv1.weight"; } \
    >"$ckpt/sd_like"
{ sd_table 64 lcm; echo "?unet up_blocks.1.resnets.0.conv1.weight"; echo "?unet mid_block.attentions.0.proj_in.weight"; } \
    >"$ckpt/lcm_like"
{ sd_table 48; echo "@lcm.config.text_encoder/config.json {\"hidden_size\": 48, \"num_attention_heads\": 2}"; } \
    >"$ckpt/odd_width_with_metadata"
{ sd_table 64 | sed 's/cond_stage_model.transformer.text_model./cond_stage_model.transformer./'; } >"$ckpt/legacy_clip"
printf 'conditioner.embedders.0.transformer.x 1\nmodel.diffusion_model.input_blocks.0.0.weight 4 4 3 3\n' \
    >"$ckpt/sdxl_refused"

# fuzz_hub: first byte = reader (0 header lines, 1 revision answer (+3: tokenizer, +6: single
# model; +9: variant fp16), 2 shard index); see fuzz/fuzz_hub.c.
hub="$here/corpus/fuzz_hub"
mkdir -p "$hub"
commit=0123456789abcdef0123456789abcdef01234567
{ printf '\x00'; printf 'HTTP/1.1 302 Found\r\nLocation: /lfs/abc\r\nX-Linked-Etag: "%s"\r\nX-Linked-Size: 1234\r\nETag: W/"abc"\r\nX-Repo-Commit: %s\r\n\r\nHTTP/2 200\r\ncontent-length: 1234\r\n\r\n' \
    "$(printf 'e%.0s' {1..64})" "$commit"; } >"$hub/headers_redirect"
siblings() { local sep="" f; printf '{"id":"org/m","sha":"%s","siblings":[' "$commit"; for f in "$@"; do
    printf '%s{"rfilename":"%s"}' "$sep" "$f"; sep=,; done; printf ']}'; }
{ printf '\x01'; siblings model_index.json scheduler/scheduler_config.json tokenizer/vocab.json tokenizer/merges.txt \
    tokenizer/special_tokens_map.json text_encoder/config.json text_encoder/model.safetensors unet/config.json \
    unet/diffusion_pytorch_model.safetensors vae/config.json vae/diffusion_pytorch_model.safetensors README.md; } \
    >"$hub/revision_pipeline"
{ printf '\x0a'; siblings model_index.json scheduler/scheduler_config.json tokenizer/vocab.json tokenizer/merges.txt \
    text_encoder/config.json text_encoder/model.fp16.safetensors unet/config.json \
    unet/diffusion_pytorch_model.fp16.safetensors.index.json vae/config.json vae/diffusion_pytorch_model.safetensors; } \
    >"$hub/revision_variant"
{ printf '\x04'; siblings vocab.json merges.txt tokenizer_config.json model.safetensors; } >"$hub/revision_tokenizer"
{ printf '\x07'; siblings config.json diffusion_pytorch_model.safetensors.index.json ../escape; } >"$hub/revision_single"
{ printf '\x02'; printf '{"metadata":{"total_size":8},"weight_map":{"a.weight":"diffusion_pytorch_model-00001-of-00002.safetensors","b.weight":"diffusion_pytorch_model-00002-of-00002.safetensors"}}'; } \
    >"$hub/shards"

# fuzz_tokenizer: prompts (any bytes are a prompt).
tok="$here/corpus/fuzz_tokenizer"
mkdir -p "$tok"
printf 'a photo of an astronaut riding a horse, 4k, highly detailed' >"$tok/plain"
printf 'Caf\xc3\xa9 \xe2\x80\x94 na\xc3\xafve  r\xc3\xa9sum\xc3\xa9 \xf0\x9f\x98\x80 <|startoftext|> don'"'"'t  (word:1.2)' >"$tok/unicode_and_specials"
printf 'broken \xff\xfe utf-8 \xc3 and a tab\there' >"$tok/invalid_utf8"
