// From denoised latents to pixels: the full VAE, the tiled VAE (diffusers' enable_tiling) or TAESD,
// chosen per generation, and the cheap per-step previews.
//
// generate.c calls pipeline_decode() once; `lcm bench` and bench/decode_bench.c call decode_run()
// with an explicit plan to time the methods side by side.
//
// Memory estimates (used by the AUTO tiling choice and by generate_request_check): the working
// memory of a decode is the largest set of activations alive at once, found by walking the
// decoder's blocks with the allocation pattern of the reference ops (each op returns a new tensor;
// the input is freed after it). For the SD1.5 VAE that peak is the first ResNet of the last up
// block at full resolution (input 256 ch + its GroupNorm output 256 ch + conv output 128 ch = 640
// floats per pixel, 2.7 GB at 1024x1024), plus 64 MiB for convolution column buffers and attention
// scores.
// A tiled decode needs the estimate of one tile plus the decoded tiles (3 channels each) and the
// output image.
#ifndef LCM_PIPELINE_DECODE_H
#define LCM_PIPELINE_DECODE_H

#include <stdint.h>

#include "core/tensor.h"
#include "models/taesd.h"
#include "models/vae.h"
#include "models/vae_tiled.h"
#include "pipeline/pipeline.h"

typedef enum decode_method {
    DECODE_VAE = 0,   // AutoencoderKL, whole image at once
    DECODE_VAE_TILED, // AutoencoderKL tiled_decode
    DECODE_TAESD,     // AutoencoderTiny
} decode_method;

typedef struct decode_plan {
    decode_method method;
    vae_tiling tiling;    // DECODE_VAE_TILED only
    double working_bytes; // estimated peak beyond the weights
} decode_plan;

// Estimated peak working memory in bytes (see the header comment).
double decode_vae_working_bytes(const vae_config *cfg, int batch, int64_t latent_h, int64_t latent_w);
double decode_vae_tiled_working_bytes(const vae_config *cfg, const vae_tiling *t, int batch,
                                      int64_t latent_h, int64_t latent_w);
double decode_taesd_working_bytes(const taesd_config *cfg, int batch, int64_t latent_h,
                                  int64_t latent_w);

// The default memory budget: three quarters of the physical memory (0 if unknown).
uint64_t decode_default_memory_budget(void);
// Resident memory of this process now, from /proc/self/statm (0 if unknown).
uint64_t decode_resident_bytes(void);

// The pipeline's decoder for [batch, L, latent_h, latent_w] latents:
//   TAESD when the pipeline has one; otherwise by options.vae_tiling:
//   OFF  the whole image at once;
//   ON   diffusers' tiled_decode with enable_tiling()'s defaults when a side exceeds the tile
//        (smaller latents are decoded whole, as diffusers does);
//   AUTO the whole image when resident memory now + its working memory fits memory_budget, else
//        tiled: enable_tiling()'s defaults, tiles halved (down to 16 latents) until they fit.
lcm_status decode_choose(const lcm_pipeline *p, int batch, int64_t latent_h, int64_t latent_w,
                         decode_plan *plan);

// The smallest working memory any decode this pipeline may choose needs (for request checks).
double decode_min_working_bytes(const lcm_pipeline *p, int batch, int64_t latent_h,
                                int64_t latent_w);

// denoised latents as the scheduler returns them -> *image [N, 3, H, W] in about [-1, 1] (NCHW,
// caller-owned): divides by the decoder's scaling_factor (diffusers' `denoised / vae.config.
// scaling_factor`; TAESD's is 1.0) and runs `plan`. DECODE_TAESD needs a pipeline with TAESD.
lcm_status decode_run(const lcm_pipeline *p, const decode_plan *plan, const tensor *denoised,
                      tensor **image);

// decode_choose + decode_run. With the environment variable LCM_VERBOSE set, prints the choice
// and its memory estimate to stderr.
lcm_status pipeline_decode(const lcm_pipeline *p, const tensor *denoised, tensor **image);

// An RGB preview of image `index` of the denoised latents: the TAESD decode when the pipeline has
// TAESD (8x the latent size, identical to what a TAESD final decode gives), else the latent->RGB
// projection at latent size. preview->rgb is malloc'd; the caller frees it.
lcm_status decode_preview(const lcm_pipeline *p, const tensor *denoised, int index,
                          lcm_image *preview);

// The latent->RGB linear projection alone (4-channel SD latents, unscaled as the scheduler gives
// them): rgb = clamp((W^T z + 1) / 2, 0, 1) per latent pixel. preview->rgb is malloc'd.
lcm_status latent_rgb_preview(const tensor *denoised, int index, lcm_image *preview);

#endif
