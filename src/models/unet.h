// The denoising network: diffusers' UNet2DConditionModel (v0.26.3) in the Stable Diffusion 1.5
// layout, including LCM's guidance input (time_cond_proj_dim).
//
//   sample [N,4,h,w] -> conv_in -> down blocks (ResNet [+ spatial transformer] x layers, downsample)
//                    -> mid block (ResNet, transformer, ResNet)
//                    -> up blocks (concat skip, ResNet [+ transformer] x (layers+1), upsample)
//                    -> GroupNorm, SiLU, conv_out -> noise_pred [N,4,h,w]
//   timestep -> sinusoidal features (+ cond_proj(timestep_cond)) -> MLP -> temb, fed to every ResNet
//   encoder_hidden_states (text embeddings) -> cross-attention in every transformer block
//
// Supported configs: down blocks CrossAttnDownBlock2D / DownBlock2D, mid block
// UNetMidBlock2DCrossAttn, up blocks UpBlock2D / CrossAttnUpBlock2D, positional time embedding, SiLU,
// no class/addition embeddings. Anything else in unet/config.json is an LCM_ERR_UNSUPPORTED error
// naming the field and its value.
#ifndef LCM_MODELS_UNET_H
#define LCM_MODELS_UNET_H

#include <stdbool.h>

#include "core/tensor.h"
#include "io/json_config.h"
#include "io/model_folder.h"
#include "io/weights.h"
#include "lcm.h"

typedef struct ops_backend ops_backend; // ops/backend.h: the kernels layers are loaded for

#define UNET_MAX_BLOCKS 8
#define UNET_MAX_LAYERS_PER_BLOCK 16
// Upper bound of unet_config.skip_count.
#define UNET_MAX_SKIPS (UNET_MAX_BLOCKS * (UNET_MAX_LAYERS_PER_BLOCK + 1) + 1)

typedef struct unet_config {
    int in_channels, out_channels;
    int sample_size[2]; // default latent [height, width]; 0 when the config has none
    int num_blocks;     // number of down blocks = up blocks = len(block_out_channels)
    int block_out_channels[UNET_MAX_BLOCKS];
    bool down_block_has_attention[UNET_MAX_BLOCKS]; // CrossAttnDownBlock2D vs DownBlock2D
    bool up_block_has_attention[UNET_MAX_BLOCKS];   // CrossAttnUpBlock2D vs UpBlock2D, up order
    int layers_per_block[UNET_MAX_BLOCKS];          // per down block; up blocks have one more
    // Heads per transformer, from the config's `attention_head_dim`: for these unets diffusers
    // reads that field as the NUMBER of heads (num_attention_heads defaults to it); head dim =
    // channels / heads.
    int attention_heads[UNET_MAX_BLOCKS];
    int transformer_layers_per_block[UNET_MAX_BLOCKS];
    int cross_attention_dim; // features of encoder_hidden_states
    int norm_num_groups;
    float norm_eps;
    bool use_linear_projection; // proj_in/proj_out as Linear (SD2 style) or 1x1 conv (SD1.5)
    bool flip_sin_to_cos;
    float freq_shift;
    int downsample_padding;
    float resnet_out_scale_factor;
    float mid_block_scale_factor;
    int time_embed_dim;     // block_out_channels[0] * 4 unless time_embedding_dim is set
    int time_cond_proj_dim; // size of timestep_cond (LCM guidance embedding); 0 when the model has none
    // Number of skip connections from the down path to the up path (12 for SD1.5), which is also
    // the number of ControlNet down residuals the unet takes.
    int skip_count;
} unet_config;

typedef struct unet_model unet_model;

// Extra inputs added inside the network, e.g. a ControlNet's outputs (already multiplied by the
// conditioning scale). down[i] is added to skip connection i (in down-path order: conv_in output,
// then every ResNet/transformer and downsampler output) and must have its shape; mid is added to the
// mid block's output. diffusers: down_block_additional_residuals / mid_block_additional_residual.
typedef struct unet_residuals {
    const tensor *const *down; // [down_count]
    int down_count;            // must equal unet_config.skip_count
    const tensor *mid;
} unet_residuals;

// Loads the `component` ("unet") of a model folder: config.json is validated and the weights are
// converted to float32 (the folder's variant, e.g. fp16, is honoured). The weight files are closed
// before returning, so the model holds exactly one copy of its weights. `backend` chooses the
// layers' kernels and precision (only read; the model keeps what it needs). The caller owns *out.
lcm_status unet_load(const ops_backend *backend, const model_folder *folder, const char *component,
                     unet_model **out);
void unet_free(unet_model *m);

// Drops the pages of the UNet's weights from the process's memory where they are mapped from the
// packed-weight cache (ops/packed_cache.h; nothing otherwise): called before the VAE decode, so
// that the two models' weights are never resident together. They come back from the page cache
// at the next step.
void unet_release_weight_pages(const unet_model *m);

const unet_config *unet_get_config(const unet_model *m);

// sample [N, in_channels, h, w] (any h, w >= 1), one timestep for the whole batch (diffusers
// broadcasts it), encoder_hidden_states [N, L, cross_attention_dim], timestep_cond
// [N, time_cond_proj_dim] or NULL (the guidance input is then skipped, as in diffusers),
// residuals or NULL. On success *noise_pred [N, out_channels, h, w] is owned by the caller.
lcm_status unet_forward(const unet_model *m, const tensor *sample, float timestep,
                        const tensor *encoder_hidden_states, const tensor *timestep_cond,
                        const unet_residuals *residuals, tensor **noise_pred);

// Called with intermediate activations, named like the diffusers submodules whose output they are:
// "time_proj", "time_embedding", "conv_in", "down_blocks.I", "mid_block", "up_blocks.I",
// "conv_norm_out", "conv_out". The tensor is borrowed for the duration of the call.
typedef void (*unet_observer)(void *user, const char *name, const tensor *value);

// unet_forward, reporting intermediates to `observe` (may be NULL). For tests and debugging.
lcm_status unet_forward_observed(const unet_model *m, const tensor *sample, float timestep,
                                 const tensor *encoder_hidden_states, const tensor *timestep_cond,
                                 const unet_residuals *residuals, unet_observer observe,
                                 void *user, tensor **noise_pred);

// ---- the encoder half, shared with ControlNetModel ------------------------------------------
// A ControlNet is a copy of the UNet's time embedding, conv_in, down blocks and mid block (same
// weight names), so it is built from these.

// Parses a UNet-family config.json whose `_class_name` must be `class_name`
// ("UNet2DConditionModel", "ControlNetModel"); with encoder_only the up-block fields are ignored.
lcm_status unet_config_parse(const json_config *config, const char *class_name, bool encoder_only,
                             unet_config *cfg);

// The channels of each skip connection in down-path order: cfg->skip_count entries.
void unet_skip_channels(const unet_config *cfg, int *channels);

// Loads only the encoder half (time embedding, conv_in, down blocks, mid block) of `cfg` from `ws`.
// `backend` as unet_load's. The caller owns *out (unet_free); unet_forward must not be called on
// it.
lcm_status unet_encoder_load(const ops_backend *backend, const weight_set *ws,
                             const unet_config *cfg, unet_model **out);

// The down path and mid block: h = conv_in(sample) (+ conv_in_addition, when not NULL, of h's
// shape), then the down blocks and the mid block. skips[0..skip_count) receive the skip
// connections (down-path order) and *mid the mid block's output; all new, owned by the caller.
// On failure nothing is returned.
lcm_status unet_encoder_forward(const unet_model *m, const tensor *sample, float timestep,
                                const tensor *encoder_hidden_states, const tensor *timestep_cond,
                                const tensor *conv_in_addition, tensor **skips, tensor **mid);

#endif
