// diffusers v0.26.3 AutoencoderKL.tiled_decode, step for step (fixtures/README.md section 7.6):
//
//   for i in range(0, h, stride), j in range(0, w, stride):
//       D[r][c] = decoder(post_quant_conv(z[:, :, i:i+T_l, j:j+T_l]))
//   for r, c in raster order:  blend_v(D[r-1][c], D[r][c]); blend_h(D[r][c-1], D[r][c])  (in place)
//   image = rows of tiles cropped to [:L, :L], joined along W, then H
//
// The blends read the neighbour AFTER its own blending, and weights are computed in double and
// rounded to float, so the arithmetic below reproduces diffusers bit for bit given the same tiles.
#include "models/vae_tiled.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

lcm_status vae_tiling_init(vae_tiling *t, int tile_sample_min_size, int tile_latent_min_size,
                           double tile_overlap_factor) {
    memset(t, 0, sizeof *t);
    if (tile_sample_min_size < 1 || tile_latent_min_size < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "VAE tiling: tile_sample_min_size = %d, tile_latent_min_size = %d: both "
                        "must be at least 1",
                        tile_sample_min_size, tile_latent_min_size);
    if (!(tile_overlap_factor >= 0.0 && tile_overlap_factor < 1.0))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "VAE tiling: tile_overlap_factor = %g, expected 0 <= f < 1",
                        tile_overlap_factor);
    t->tile_sample_min_size = tile_sample_min_size;
    t->tile_latent_min_size = tile_latent_min_size;
    t->tile_overlap_factor = tile_overlap_factor;
    // Python int() of a positive double truncates, as the C conversion does.
    t->stride_latent = (int)(tile_latent_min_size * (1.0 - tile_overlap_factor));
    t->blend_extent_px = (int)(tile_sample_min_size * tile_overlap_factor);
    t->row_limit_px = tile_sample_min_size - t->blend_extent_px;
    if (t->stride_latent < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "VAE tiling: tile_latent_min_size %d with overlap %g leaves a tile stride "
                        "of 0 latents",
                        tile_latent_min_size, tile_overlap_factor);
    return LCM_OK;
}

lcm_status vae_tiling_defaults(const vae_config *cfg, vae_tiling *t) {
    return vae_tiling_init(t, cfg->sample_size, cfg->sample_size / cfg->downscale_factor, 0.25);
}

bool vae_tiling_applies(const vae_tiling *t, int64_t latent_height, int64_t latent_width) {
    return latent_height > t->tile_latent_min_size || latent_width > t->tile_latent_min_size;
}

int vae_tiling_tile_count(const vae_tiling *t, int64_t latent_size) {
    return (int)((latent_size + t->stride_latent - 1) / t->stride_latent);
}

// z[:, :, y0:y0+h, x0:x0+w] of an NCHW tensor.
static tensor *crop(const tensor *z, int64_t y0, int64_t x0, int64_t h, int64_t w) {
    int64_t n = z->shape[0], c = z->shape[1], zh = z->shape[2], zw = z->shape[3];
    tensor *out = tensor_new4(n, c, h, w);
    if (!out) return NULL;
    for (int64_t p = 0; p < n * c; p++)
        for (int64_t y = 0; y < h; y++)
            memcpy(out->data + (p * h + y) * w, z->data + (p * zh + y0 + y) * zw + x0,
                   sizeof(float) * (size_t)w);
    return out;
}

// B's first e rows := A's last e rows * (1 - y/e) + B's rows * (y/e). Same N, C and width.
static void blend_vertical(const tensor *a, tensor *b, int extent) {
    int64_t planes = b->shape[0] * b->shape[1], ah = a->shape[2], bh = b->shape[2], w = b->shape[3];
    int64_t e = extent;
    if (ah < e) e = ah;
    if (bh < e) e = bh;
    for (int64_t y = 0; y < e; y++) {
        float w1 = (float)(1.0 - (double)y / (double)e), w2 = (float)((double)y / (double)e);
        for (int64_t p = 0; p < planes; p++) {
            const float *src = a->data + (p * ah + ah - e + y) * w;
            float *dst = b->data + (p * bh + y) * w;
            for (int64_t x = 0; x < w; x++) {
                float from_a = src[x] * w1, from_b = dst[x] * w2;
                dst[x] = from_a + from_b;
            }
        }
    }
}

// B's first e columns := A's last e columns * (1 - x/e) + B's columns * (x/e). Same N, C, height.
static void blend_horizontal(const tensor *a, tensor *b, int extent) {
    int64_t rows = b->shape[0] * b->shape[1] * b->shape[2], aw = a->shape[3], bw = b->shape[3];
    int64_t e = extent;
    if (aw < e) e = aw;
    if (bw < e) e = bw;
    for (int64_t x = 0; x < e; x++) {
        float w1 = (float)(1.0 - (double)x / (double)e), w2 = (float)((double)x / (double)e);
        for (int64_t r = 0; r < rows; r++) {
            float from_a = a->data[r * aw + aw - e + x] * w1, from_b = b->data[r * bw + x] * w2;
            b->data[r * bw + x] = from_a + from_b;
        }
    }
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

lcm_status vae_tiles_blend_join(tensor **tiles, int rows, int cols, const vae_tiling *t,
                                tensor **image) {
    *image = NULL;
    // 2. Blend the seams in place, raster order: vertical first, then horizontal.
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            tensor *tile = tiles[r * cols + c];
            if (r > 0) blend_vertical(tiles[(r - 1) * cols + c], tile, t->blend_extent_px);
            if (c > 0) blend_horizontal(tiles[r * cols + c - 1], tile, t->blend_extent_px);
        }
    }

    // 3. Crop each tile to its top-left L x L and join: rows of tiles along W, then along H.
    int64_t L = t->row_limit_px, height = 0, width = 0;
    for (int r = 0; r < rows; r++) height += min64(L, tiles[r * cols]->shape[2]);
    for (int c = 0; c < cols; c++) width += min64(L, tiles[c]->shape[3]);
    int64_t planes = tiles[0]->shape[0] * tiles[0]->shape[1];
    tensor *out = tensor_new4(tiles[0]->shape[0], tiles[0]->shape[1], height, width);
    if (!out) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory joining the VAE tiles");
    for (int64_t p = 0; p < planes; p++) {
        float *dst = out->data + p * height * width;
        for (int r = 0; r < rows; r++) {
            int64_t tile_height = min64(L, tiles[r * cols]->shape[2]);
            for (int64_t y = 0; y < tile_height; y++) {
                for (int c = 0; c < cols; c++) {
                    const tensor *tile = tiles[r * cols + c];
                    int64_t tile_width = min64(L, tile->shape[3]);
                    memcpy(dst, tile->data + (p * tile->shape[2] + y) * tile->shape[3],
                           sizeof(float) * (size_t)tile_width);
                    dst += tile_width;
                }
            }
        }
    }
    *image = out;
    return LCM_OK;
}

lcm_status vae_decode_tiled(const vae_model *m, const tensor *latents, const vae_tiling *t,
                            vae_tap_fn tap, void *user, tensor **image) {
    *image = NULL;
    const vae_config *cfg = vae_get_config(m);
    if (!latents || latents->ndim != 4 || latents->shape[1] != cfg->latent_channels)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "tiled VAE decode: expected [N, %d, h, w] latents",
                        cfg->latent_channels);
    tensor *z = tensor_to_nchw(latents);
    if (!z) return LCM_ERR_OUT_OF_MEMORY;
    int64_t lh = z->shape[2], lw = z->shape[3], T_l = t->tile_latent_min_size;
    int rows = vae_tiling_tile_count(t, lh), cols = vae_tiling_tile_count(t, lw);
    tensor **tiles = calloc((size_t)rows * cols, sizeof *tiles);
    lcm_status st = tiles ? LCM_OK : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for VAE tiles");

    // 1. Decode every tile on its own.
    for (int r = 0; st == LCM_OK && r < rows; r++) {
        for (int c = 0; st == LCM_OK && c < cols; c++) {
            int64_t i = (int64_t)r * t->stride_latent, j = (int64_t)c * t->stride_latent;
            tensor *tile = crop(z, i, j, min64(T_l, lh - i), min64(T_l, lw - j));
            tensor *decoded = NULL;
            st = tile ? vae_decode(m, tile, &decoded) : LCM_ERR_OUT_OF_MEMORY;
            tensor_free(tile);
            if (st == LCM_OK) {
                tiles[r * cols + c] = tensor_to_nchw(decoded);
                tensor_free(decoded);
                if (!tiles[r * cols + c]) st = LCM_ERR_OUT_OF_MEMORY;
            }
            if (st == LCM_OK && tap) {
                char name[64];
                snprintf(name, sizeof name, "tile_r%d_c%d", r, c);
                tap(user, name, tiles[r * cols + c]);
            }
        }
    }
    tensor_free(z);
    tensor *out = NULL;
    if (st == LCM_OK) st = vae_tiles_blend_join(tiles, rows, cols, t, &out);
    for (int k = 0; tiles && k < rows * cols; k++) tensor_free(tiles[k]);
    free(tiles);
    if (st != LCM_OK) {
        tensor_free(out);
        return lcm_fail_context(st, "tiled VAE decode: ");
    }
    *image = out;
    return LCM_OK;
}
