// The CLIP text transformer (transformers' CLIPTextModel, v4.36) that turns 77 token ids into the
// prompt embeddings the UNet attends to.
//
//   ids [B, N] ──► token embedding + position embedding ──► x [B, N, C]
//   repeat num_hidden_layers times (pre-LayerNorm):
//       x = x + out_proj(attention(q, k, v of layer_norm1(x), causal))
//       x = x + fc2(act(fc1(layer_norm2(x))))
//   last_hidden_state = final_layer_norm(x)                               [B, N, C]
//   pooler_output     = last_hidden_state at the end-of-text token         [B, C]
//
// Stable Diffusion pipelines use last_hidden_state, called without an attention mask (the causal
// mask only), which is what this computes. The projection head (text_projection, projection_dim)
// is not part of CLIPTextModel and is ignored.
#ifndef LCM_MODELS_CLIP_TEXT_H
#define LCM_MODELS_CLIP_TEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "io/model_folder.h"
#include "lcm.h"

typedef struct ops_backend ops_backend; // ops/backend.h: the kernels layers are loaded for

typedef enum clip_activation { CLIP_ACT_QUICK_GELU, CLIP_ACT_GELU } clip_activation;

// The fields of text_encoder/config.json this model uses.
typedef struct clip_text_config {
    int hidden_size;       // C
    int intermediate_size; // MLP width
    int num_hidden_layers;
    int num_attention_heads;     // head dim = C / heads
    int max_position_embeddings; // the longest sequence (77 for SD)
    int vocab_size;
    float layer_norm_eps;
    clip_activation hidden_act; // "quick_gelu" or "gelu"
    int64_t eos_token_id;       // picks the pooled token, see clip_text_forward
} clip_text_config;

typedef struct clip_text_model clip_text_model;

// Reads and validates a text encoder config. Unsupported values (an activation other than
// quick_gelu/gelu, heads not dividing hidden_size) are LCM_ERR_UNSUPPORTED naming file and field.
lcm_status clip_text_config_read(const json_config *config, clip_text_config *out);

// Loads folder/component/config.json and the component's weights (model[.variant].safetensors,
// sharded or not, any float dtype, converted to float32; or 8-bit as `lcm quantize
// --compress-weights` writes them, then dequantized per forward pass and not kept, see
// clip_text_loads_weights_on_use). `component` is usually "text_encoder". `backend` chooses the
// layers' kernels (only read; the model keeps a copy, always in float32: the encoder is cheap and
// its output conditions every step). On success the caller owns *out (clip_text_free).
lcm_status clip_text_load(const ops_backend *backend, const model_folder *folder,
                          const char *component, clip_text_model **out);
void clip_text_free(clip_text_model *m);

// Drops the weights the model uses in place (the token embedding in its weight file and the
// layers packed in the packed-weight cache's file; see clip_text.c) from the process's memory until
// the next forward pass reads them again, usually from the page cache: a pipeline calls it after
// encoding its prompts so that the text encoder is not resident while the UNet and VAE run.
// Results do not change. Safe while another thread runs a forward pass (it reads the pages back).
void clip_text_release_pages(const clip_text_model *m);

// Whether the model holds its weights only in the file's mapping and loads them per forward pass,
// one encoder layer at a time, freed after use: true for weights stored in 8 bits (their float32
// copies, 4x the file, would otherwise stay resident: ~0.5 GB for SD's encoder). Results are the
// same bits as with the copies kept; each pass dequantizes and packs every weight once (123M for
// SD's encoder; not yet timed at full size).
bool clip_text_loads_weights_on_use(const clip_text_model *m);

const clip_text_config *clip_text_get_config(const clip_text_model *m);
int clip_text_hidden_size(const clip_text_model *m);
// Number of weights held (every loaded tensor's element count).
int64_t clip_text_param_count(const clip_text_model *m);

// ids [batch, n_tokens] (row-major, borrowed) -> *last_hidden_state [batch, n_tokens, hidden].
// `pooled` may be NULL; otherwise *pooled receives [batch, hidden]: the row of last_hidden_state at
// the first position of the largest id when eos_token_id == 2 (configs written before transformers
// learned the real eos id: CLIP's <|endoftext|> is the largest id), else at the first position of
// eos_token_id (position 0 if absent), as transformers does. The caller frees both tensors.
// Fails (nothing allocated) on ids outside [0, vocab_size) or n_tokens outside
// 1..max_position_embeddings.
lcm_status clip_text_forward(const clip_text_model *m, const int32_t *ids, int batch, int n_tokens,
                             tensor **last_hidden_state, tensor **pooled);

// Called with each intermediate activation, named like the transformers module whose output it is:
// "text_model.embeddings", "text_model.encoder.layers.0", ... The tensor is borrowed for the call.
typedef void (*clip_text_probe)(void *user, const char *name, const tensor *value);

// clip_text_forward that also reports intermediates to `probe` (for golden tests and debugging).
lcm_status clip_text_forward_probed(const clip_text_model *m, const int32_t *ids, int batch,
                                    int n_tokens, clip_text_probe probe, void *user,
                                    tensor **last_hidden_state, tensor **pooled);

#endif
