// Tiled AutoencoderKL decode, exactly diffusers v0.26.3 `AutoencoderKL.tiled_decode` (what
// `vae.enable_tiling()` switches on; fixtures/README.md section 7.6): the latents are cut into
// overlapping tiles, each tile is decoded on its own (so peak memory follows the tile size, not the
// image size), the seams are blended linearly and the tiles cropped and joined.
//
// The result is NOT the untiled decode: GroupNorm statistics and the mid-block attention see one
// tile at a time. It is what diffusers produces with tiling on.
#ifndef LCM_MODELS_VAE_TILED_H
#define LCM_MODELS_VAE_TILED_H

#include <stdbool.h>
#include <stdint.h>

#include "models/vae.h"

typedef struct vae_tiling {
    // diffusers' instance attributes.
    int tile_sample_min_size; // T_s: tile side in pixels
    int tile_latent_min_size; // T_l: tile side in latents
    double tile_overlap_factor; // f
    // Derived with Python's int() truncation, as diffusers does.
    int stride_latent;   // int(T_l * (1 - f)): distance between tile starts, in latents
    int blend_extent_px; // E = int(T_s * f): rows/columns blended at a seam
    int row_limit_px;    // L = T_s - E: each tile is cropped to its top-left L x L pixels
} vae_tiling;

// Validates the three attributes and fills in the derived values. Errors are
// LCM_ERR_INVALID_ARGUMENT naming the value (e.g. an overlap that leaves a stride of 0).
lcm_status vae_tiling_init(vae_tiling *t, int tile_sample_min_size, int tile_latent_min_size,
                           double tile_overlap_factor);

// What enable_tiling() sets for this VAE: T_s = config.sample_size, T_l = sample_size /
// downscale_factor, f = 0.25 (LCM_Dreamshaper_v7: 768 px / 96 latents).
lcm_status vae_tiling_defaults(const vae_config *cfg, vae_tiling *t);

// Whether diffusers' decode() takes the tiled path for latents of this size (a side > T_l).
bool vae_tiling_applies(const vae_tiling *t, int64_t latent_height, int64_t latent_width);

// Number of tiles along a latent side of `latent_size`: one per start in range(0, size, stride).
int vae_tiling_tile_count(const vae_tiling *t, int64_t latent_size);

// latents [N, L, h, w] (already divided by scaling_factor) -> *image [N, 3, H, W] (caller-owned,
// NCHW) by tiled_decode, whatever the size (the caller decides whether tiling applies). `tap` (may
// be NULL) sees each raw decoded tile before blending as "tile_rR_cC".
lcm_status vae_decode_tiled(const vae_model *m, const tensor *latents, const vae_tiling *t,
                            vae_tap_fn tap, void *user, tensor **image);

// Steps 2-3 alone: blends the decoded tiles (rows x cols, row-major, NCHW; modified in place, still
// owned by the caller) and joins their crops into *image (caller-owned).
lcm_status vae_tiles_blend_join(tensor **tiles, int rows, int cols, const vae_tiling *t,
                                tensor **image);

#endif
