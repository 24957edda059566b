// TAESD, the tiny autoencoder of Stable Diffusion latents: diffusers' AutoencoderTiny (v0.26.3),
// loaded from a single-model folder (config.json + diffusion_pytorch_model.safetensors at its root,
// the layout of madebyollin/taesd). About 1% of the VAE's decode cost, slightly softer images.
//
//   decode: latents [N,4,h,w] -> tanh(z/3)*3 -> DecoderTiny -> *2-1 -> image [N,3,8h,8w] (not clamped)
//   encode: image [N,3,H,W] in [-1,1] -> (x+1)/2 -> EncoderTiny -> latents [N,4,H/8,W/8] (raw)
//
// TAESD latents are SD latents at scale 1 (config scaling_factor 1.0): pipelines divide by
// scaling_factor before decoding exactly as for the VAE, which leaves them unchanged.
#ifndef LCM_MODELS_TAESD_H
#define LCM_MODELS_TAESD_H

#include <stdint.h>

#include "core/tensor.h"
#include "io/model_folder.h"
#include "lcm.h"

typedef struct ops_backend ops_backend; // ops/backend.h: the kernels layers are loaded for

#define TAESD_MAX_STAGES 8

// config.json, validated (fields that do not change the computation are only range-checked).
typedef struct taesd_config {
    int in_channels;     // image channels into the encoder (3)
    int out_channels;    // image channels out of the decoder (3)
    int latent_channels; // 4 for SD1.5 latents
    int channels;        // C: every entry of encoder/decoder_block_out_channels (64 in real TAESD)
    int stage_count;     // len(num_encoder_blocks) == len(num_decoder_blocks)
    int encoder_blocks[TAESD_MAX_STAGES]; // Blocks per encoder stage (1, 3, 3, 3)
    int decoder_blocks[TAESD_MAX_STAGES]; // Blocks per decoder stage (3, 3, 3, 1)
    float scaling_factor;  // 1.0
    int downscale_factor;  // 2^(stage_count-1): image pixels per latent pixel (8)
} taesd_config;

typedef struct taesd_model taesd_model;

// Loads `component` of `folder` (NULL or "." for a single-model folder). Unsupported config values
// (act_fn other than relu, upsampling factor other than 2, unequal stage widths) are
// LCM_ERR_UNSUPPORTED naming the file and field. `backend` chooses the layers' kernels and
// precision (only read). On success *out is owned by the caller (taesd_free).
lcm_status taesd_load(const ops_backend *backend, const model_folder *folder,
                      const char *component, taesd_model **out);
// Opens the folder `dir` and loads it as a single-model TAESD folder.
lcm_status taesd_load_dir(const ops_backend *backend, const char *dir, taesd_model **out);
void taesd_free(taesd_model *m);

// The validated config; borrowed from m.
const taesd_config *taesd_get_config(const taesd_model *m);
int64_t taesd_param_count(const taesd_model *m);

// Observer of intermediate activations, named as diffusers' modules: "clamped_input",
// "decoder.layers.K", "encoder.layers.K" (K = index in the nn.Sequential). Borrowed for the call.
typedef void (*taesd_tap_fn)(void *user, const char *name, const tensor *value);

// latents [N, latent_channels, h, w] -> *image [N, out_channels, h*f, w*f] in about [-1, 1]
// (NCHW, caller-owned).
lcm_status taesd_decode(const taesd_model *m, const tensor *latents, tensor **image);
lcm_status taesd_decode_tapped(const taesd_model *m, const tensor *latents, taesd_tap_fn tap,
                               void *user, tensor **image);

// image [N, in_channels, H, W] in [-1, 1] -> *latents [N, latent_channels, H', W'] with each
// stride-2 stage mapping a side n -> ceil(n/2). NCHW, caller-owned.
lcm_status taesd_encode(const taesd_model *m, const tensor *image, tensor **latents);
lcm_status taesd_encode_tapped(const taesd_model *m, const tensor *image, taesd_tap_fn tap,
                               void *user, tensor **latents);

#endif
