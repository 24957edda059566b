// Arithmetic work of one forward pass, counted from a model's config at a given size (for
// `lcm bench`). A FLOP is one multiply or one add, so a multiply-accumulate is 2 FLOPs:
//   convolution   2 * Cin * Cout * k * k * Hout * Wout
//   linear        2 * in * out * tokens
//   attention     2 * Nq * Nk * C  (Q·Kᵀ)  +  2 * Nq * Nk * C  (P·V), C = heads * head size, with
//                 every key counted (also under a causal mask)
// Normalisations, activations, softmax, adds and resampling copies are not counted (under 1% of
// the total for these networks). The counts walk the same block structure the loaders build
// (src/models/unet.c, vae.c, models/clip_text.c).
#ifndef LCM_TOOLS_FLOPS_H
#define LCM_TOOLS_FLOPS_H

#include "models/controlnet.h"
#include "models/taesd.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/clip_text.h"

// The parts of a count, in FLOPs.
typedef struct flop_count {
    double conv3x3;   // every convolution with a kernel larger than 1
    double conv1x1;   // 1x1 convolutions (ResNet shortcuts, SD1.5 proj_in/proj_out, VAE quant convs)
    double linear;    // linear layers (attention projections, feed-forward, time embedding)
    double attention; // Q·Kᵀ and P·V
} flop_count;

double flop_total(const flop_count *f);

// One UNet evaluation of `batch` latents of latent_h x latent_w with `context_tokens` text tokens.
flop_count unet_flops(const unet_config *cfg, int batch, int latent_h, int latent_w,
                      int context_tokens);

// One ControlNet evaluation (conditioning embedding, encoder half, zero convs) on `batch` latents of
// latent_h x latent_w and conditioning images 8x that size.
flop_count controlnet_flops(const controlnet_config *cfg, int batch, int latent_h, int latent_w,
                            int context_tokens);

// One VAE decode of `batch` latents of latent_h x latent_w (image latent_h*f x latent_w*f).
flop_count vae_decode_flops(const vae_config *cfg, int batch, int latent_h, int latent_w);

// One TAESD (AutoencoderTiny) decode of `batch` latents of latent_h x latent_w.
flop_count taesd_decode_flops(const taesd_config *cfg, int batch, int latent_h, int latent_w);

// One CLIP text-encoder pass of `batch` sequences of `tokens` tokens.
flop_count clip_text_flops(const clip_text_config *cfg, int batch, int tokens);

#endif
