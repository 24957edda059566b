// diffusers' ControlNetModel (v0.26.3, SD1.5 layout): a trainable copy of the UNet's encoder half
// that turns a conditioning image (edges, normals, depth...) into residuals for the UNet.
//
//   cond image [N,3,H,W] in [0,1] -> conditioning embedding (convs, 3 stride-2) -> [N,C0,H/8,W/8]
//   sample [N,4,H/8,W/8] -> conv_in (+ the embedding) -> down blocks -> mid block   (the UNet's)
//   each skip connection -> 1x1 "zero conv" (controlnet_down_blocks.i) -> down residual i
//   mid block output     -> 1x1 conv (controlnet_mid_block)            -> mid residual
//   every residual * conditioning_scale
//
// The residuals go into unet_forward's `unet_residuals`. Supported: global_pool_conditions false,
// no guess mode, conditioning channel order "rgb" or "bgr", and the UNet configs unet.h supports.
#ifndef LCM_MODELS_CONTROLNET_H
#define LCM_MODELS_CONTROLNET_H

#include <stdbool.h>

#include "core/tensor.h"
#include "lcm.h"
#include "models/unet.h"

#define CONTROLNET_MAX_EMBEDDING_BLOCKS 8

typedef struct controlnet_config {
    unet_config unet;         // the copied encoder half (up-block fields unused)
    int conditioning_channels; // channels of the conditioning image (3)
    int embedding_count;      // len(conditioning_embedding_out_channels)
    int embedding_channels[CONTROLNET_MAX_EMBEDDING_BLOCKS];
    bool bgr;                 // controlnet_conditioning_channel_order == "bgr": channels flipped
} controlnet_config;

typedef struct controlnet_model controlnet_model;

// Loads a ControlNetModel folder (config.json + diffusion_pytorch_model[.variant].safetensors at
// its root, like lllyasviel/control_v11p_sd15_normalbae). `variant` may be NULL. The caller owns
// *out (controlnet_free). `backend` chooses the layers' kernels and precision (only read).
// `packed_cache`: the layers may use the packed-weight cache (ops/packed_cache.h).
lcm_status controlnet_load(const ops_backend *backend, const char *dir, const char *variant,
                           bool packed_cache, controlnet_model **out);
void controlnet_free(controlnet_model *m);

// As unet_release_weight_pages, for the ControlNet's weights.
void controlnet_release_weight_pages(const controlnet_model *m);

const controlnet_config *controlnet_get_config(const controlnet_model *m);

// Whether the ControlNet's residuals fit the UNet: same latent channels, text embedding size and
// number of skip connections, and the same channels at every skip connection and the mid block.
// An LCM_ERR_UNSUPPORTED naming both folders and the first mismatch otherwise.
lcm_status controlnet_check_fits(const controlnet_model *m, const unet_config *unet,
                                 const char *unet_label);

// sample [N, in, h, w], one timestep, encoder_hidden_states [N, L, cross_attention_dim], cond
// [N, conditioning_channels, 8h, 8w] in [0, 1] -> down[0..skip_count) and *mid, already multiplied
// by `scale`, all new and owned by the caller. On failure nothing is returned.
lcm_status controlnet_forward(const controlnet_model *m, const tensor *sample, float timestep,
                              const tensor *encoder_hidden_states, const tensor *cond, float scale,
                              tensor **down, tensor **mid);

#endif
