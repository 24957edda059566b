// The decode step of the pipelines and the per-step previews (see decode.h).
#include "pipeline/decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"

// Convolution column buffers (32 MiB, src/ops/conv.c), attention score blocks and small tensors.
#define DECODE_FIXED_OVERHEAD (64.0 * 1024 * 1024)
// AUTO never halves tiles below this many latents (128 px): smaller tiles only add seams.
#define MIN_TILE_LATENTS 16

// ---- memory estimates ------------------------------------------------------------------------

static double max_d(double a, double b) { return a > b ? a : b; }

// A ResNet block in -> out at `area` output pixels per image pixel, in floats per image pixel
// (resnet_block_forward): without a shortcut, input + GroupNorm output + conv output while the
// first conv runs; with one (in != out), the GroupNorm overwrites the input, so input + shortcut
// + conv output, or shortcut + residual branch + conv output at the end, whichever is more.
static double resnet_peak(int in, int out, double area) {
    return (in == out ? 3.0 * in : max_d(in + 2.0 * out, 3.0 * out)) * area;
}

double decode_vae_working_bytes(const vae_config *cfg, int batch, int64_t latent_h,
                                int64_t latent_w) {
    int f = cfg->downscale_factor;
    double area = 1.0 / ((double)f * f); // activation pixels per output pixel at latent resolution
    int last = cfg->block_out_channels[cfg->block_count - 1];
    double peak = resnet_peak(last, last, area); // mid block (its attention is [HW, C] tokens)
    int channels = last;
    for (int i = 0; i < cfg->block_count; i++) {
        int out = cfg->block_out_channels[cfg->block_count - 1 - i];
        peak = max_d(peak, max_d(resnet_peak(channels, out, area), resnet_peak(out, out, area)));
        channels = out;
        if (i < cfg->block_count - 1) { // nearest x2 then conv: input, upsampled, conv output
            peak = max_d(peak, channels * area + 2.0 * channels * 4.0 * area);
            area *= 4.0;
        }
    }
    peak = max_d(peak, (2.0 * channels + cfg->out_channels) * area); // norm_out + conv_out
    double pixels = (double)batch * latent_h * f * latent_w * f;
    return peak * sizeof(float) * pixels + DECODE_FIXED_OVERHEAD;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

double decode_vae_tiled_working_bytes(const vae_config *cfg, const vae_tiling *t, int batch,
                                      int64_t latent_h, int64_t latent_w) {
    int64_t tile_h = min64(t->tile_latent_min_size, latent_h);
    int64_t tile_w = min64(t->tile_latent_min_size, latent_w);
    double one_tile = decode_vae_working_bytes(cfg, batch, tile_h, tile_w);
    // The decoded tiles are all kept until the blend; then the output image is assembled.
    double f2 = (double)cfg->downscale_factor * cfg->downscale_factor;
    double tiles = (double)vae_tiling_tile_count(t, latent_h) * vae_tiling_tile_count(t, latent_w) *
                   tile_h * tile_w * f2;
    double image = (double)latent_h * latent_w * f2;
    return one_tile + (tiles + image) * cfg->out_channels * sizeof(float) * batch;
}

double decode_taesd_working_bytes(const taesd_config *cfg, int batch, int64_t latent_h,
                                  int64_t latent_w) {
    // At full resolution a Block holds its input, one conv output and the next: 3 C floats/pixel;
    // the upsample before holds C/4 + C.
    int f = cfg->downscale_factor;
    double pixels = (double)batch * latent_h * f * latent_w * f;
    return 3.0 * cfg->channels * sizeof(float) * pixels + DECODE_FIXED_OVERHEAD;
}

uint64_t decode_default_memory_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0) return 0;
    return (uint64_t)pages * (uint64_t)page_size / 4 * 3;
}

uint64_t decode_resident_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page_size = sysconf(_SC_PAGESIZE);
    return n == 2 && page_size > 0 ? resident * (uint64_t)page_size : 0;
}

// ---- choosing ----------------------------------------------------------------------------------

// Halves the tile (pixels and latents) if it stays >= MIN_TILE_LATENTS latents with a stride that
// tiles the image exactly (8 * stride == row limit needs the latent size to be a multiple of 4).
static bool halve_tiles(vae_tiling *t) {
    int latents = t->tile_latent_min_size / 2, pixels = t->tile_sample_min_size / 2;
    if (latents < MIN_TILE_LATENTS || latents % 4 || t->tile_latent_min_size % 2 ||
        t->tile_sample_min_size % 2)
        return false;
    return vae_tiling_init(t, pixels, latents, t->tile_overlap_factor) == LCM_OK;
}

static lcm_status plan_tiled(const vae_config *cfg, const vae_tiling *t, int batch,
                             int64_t latent_h, int64_t latent_w, decode_plan *plan) {
    if (!vae_tiling_applies(t, latent_h, latent_w)) {
        plan->method = DECODE_VAE; // diffusers decodes latents that fit one tile whole
        plan->working_bytes = decode_vae_working_bytes(cfg, batch, latent_h, latent_w);
        return LCM_OK;
    }
    plan->method = DECODE_VAE_TILED;
    plan->tiling = *t;
    plan->working_bytes = decode_vae_tiled_working_bytes(cfg, t, batch, latent_h, latent_w);
    return LCM_OK;
}

lcm_status decode_choose(const lcm_pipeline *p, int batch, int64_t latent_h, int64_t latent_w,
                         decode_plan *plan) {
    memset(plan, 0, sizeof *plan);
    if (p->taesd) {
        plan->method = DECODE_TAESD;
        plan->working_bytes =
            decode_taesd_working_bytes(taesd_get_config(p->taesd), batch, latent_h, latent_w);
        return LCM_OK;
    }
    const vae_config *cfg = vae_get_config(p->vae);
    vae_tiling t;
    LCM_TRY(vae_tiling_defaults(cfg, &t));
    switch (p->vae_tiling) {
    case LCM_VAE_TILING_OFF:
        plan->method = DECODE_VAE;
        plan->working_bytes = decode_vae_working_bytes(cfg, batch, latent_h, latent_w);
        return LCM_OK;
    case LCM_VAE_TILING_ON: return plan_tiled(cfg, &t, batch, latent_h, latent_w, plan);
    case LCM_VAE_TILING_AUTO: break;
    }
    double budget = (double)(p->memory_budget ? p->memory_budget : decode_default_memory_budget());
    double resident = (double)decode_resident_bytes();
    double whole = decode_vae_working_bytes(cfg, batch, latent_h, latent_w);
    if (budget <= 0 || resident + whole <= budget) {
        plan->method = DECODE_VAE;
        plan->working_bytes = whole;
        return LCM_OK;
    }
    while (resident + decode_vae_tiled_working_bytes(cfg, &t, batch, latent_h, latent_w) > budget &&
           halve_tiles(&t)) {
    }
    return plan_tiled(cfg, &t, batch, latent_h, latent_w, plan);
}

double decode_min_working_bytes(const lcm_pipeline *p, int batch, int64_t latent_h,
                                int64_t latent_w) {
    if (p->taesd) return decode_taesd_working_bytes(taesd_get_config(p->taesd), batch, latent_h, latent_w);
    const vae_config *cfg = vae_get_config(p->vae);
    double whole = decode_vae_working_bytes(cfg, batch, latent_h, latent_w);
    vae_tiling t;
    if (p->vae_tiling == LCM_VAE_TILING_OFF || vae_tiling_defaults(cfg, &t) != LCM_OK) return whole;
    if (p->vae_tiling == LCM_VAE_TILING_AUTO)
        while (halve_tiles(&t)) {
        }
    if (!vae_tiling_applies(&t, latent_h, latent_w)) return whole;
    double tiled = decode_vae_tiled_working_bytes(cfg, &t, batch, latent_h, latent_w);
    return tiled < whole ? tiled : whole;
}

// ---- running -----------------------------------------------------------------------------------

lcm_status decode_run(const lcm_pipeline *p, const decode_plan *plan, const tensor *denoised,
                      tensor **image) {
    *image = NULL;
    if (plan->method == DECODE_TAESD && !p->taesd)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "TAESD decode: the pipeline has no TAESD loaded");
    float scaling_factor = plan->method == DECODE_TAESD ? taesd_get_config(p->taesd)->scaling_factor
                                                        : vae_get_config(p->vae)->scaling_factor;
    tensor *latents = tensor_to_nchw(denoised);
    if (!latents) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for the decoder input");
    // A division, not a multiplication by the reciprocal: that is what diffusers computes.
    int64_t n = tensor_numel(latents);
    for (int64_t k = 0; k < n; k++) latents->data[k] /= scaling_factor;
    lcm_status st;
    switch (plan->method) {
    case DECODE_TAESD: st = taesd_decode(p->taesd, latents, image); break;
    case DECODE_VAE_TILED: st = vae_decode_tiled(p->vae, latents, &plan->tiling, NULL, NULL, image); break;
    default: st = vae_decode(p->vae, latents, image); break;
    }
    tensor_free(latents);
    if (st == LCM_OK && (*image)->layout != TENSOR_NCHW) tensor_replace(image, tensor_to_nchw(*image));
    if (st == LCM_OK && !*image) st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for the image");
    return st;
}

lcm_status pipeline_decode(const lcm_pipeline *p, const tensor *denoised, tensor **image) {
    *image = NULL;
    decode_plan plan;
    LCM_TRY(decode_choose(p, (int)denoised->shape[0], denoised->shape[2], denoised->shape[3], &plan));
    if (getenv("LCM_VERBOSE")) {
        static const char *const names[] = {"VAE", "tiled VAE", "TAESD"};
        fprintf(stderr, "decode: %s", names[plan.method]);
        if (plan.method == DECODE_VAE_TILED)
            fprintf(stderr, " (%d px tiles)", plan.tiling.tile_sample_min_size);
        fprintf(stderr, ", estimated working memory %.2f GB (untiled VAE %.2f GB), resident %.2f GB, "
                "budget %.2f GB\n", plan.working_bytes / 1e9,
                decode_vae_working_bytes(vae_get_config(p->vae), (int)denoised->shape[0],
                                         denoised->shape[2], denoised->shape[3]) / 1e9,
                decode_resident_bytes() / 1e9,
                (p->memory_budget ? p->memory_budget : decode_default_memory_budget()) / 1e9);
    }
    return decode_run(p, &plan, denoised, image);
}

// ---- previews ----------------------------------------------------------------------------------

// Stable Diffusion 1.x latent channel -> RGB weights (rows: latent channels 1-4; columns: R, G, B),
// fitted by least squares between SD 1.4 latents and their decoded images by Kevin Turner
// ("keturn") and published at discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/
// 23204 (post 2); the same numbers are in several UIs' latent previews. Applied to the latents as
// the UNet sees them (scaled by 0.18215), the result is roughly in [-1, 1].
static const float LATENT_TO_RGB[4][3] = {
    {0.298f, 0.207f, 0.208f},
    {0.187f, 0.286f, 0.173f},
    {-0.158f, 0.189f, 0.264f},
    {-0.184f, -0.271f, -0.473f},
};

static uint8_t to_byte(float v) { // [-1, 1] -> 0..255
    float x = (v + 1.0f) * 0.5f;
    x = x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
    return (uint8_t)(x * 255.0f + 0.5f);
}

lcm_status latent_rgb_preview(const tensor *denoised, int index, lcm_image *preview) {
    memset(preview, 0, sizeof *preview);
    if (!denoised || denoised->ndim != 4 || denoised->shape[1] != 4 || index < 0 ||
        index >= denoised->shape[0])
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "latent preview: expected [N, 4, h, w] latents and an index below N");
    tensor *z = tensor_to_nchw(denoised);
    int64_t h = denoised->shape[2], w = denoised->shape[3], plane = h * w;
    uint8_t *rgb = z ? malloc((size_t)(plane * 3)) : NULL;
    if (!rgb) {
        tensor_free(z);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for a preview");
    }
    const float *latents = z->data + (int64_t)index * 4 * plane;
    for (int64_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) {
            float v = 0.0f;
            for (int l = 0; l < 4; l++) v += LATENT_TO_RGB[l][c] * latents[l * plane + i];
            rgb[i * 3 + c] = to_byte(v);
        }
    tensor_free(z);
    preview->width = (int)w;
    preview->height = (int)h;
    preview->rgb = rgb;
    return LCM_OK;
}

lcm_status decode_preview(const lcm_pipeline *p, const tensor *denoised, int index,
                          lcm_image *preview) {
    memset(preview, 0, sizeof *preview);
    if (!p->taesd) return latent_rgb_preview(denoised, index, preview);
    if (!denoised || denoised->ndim != 4 || index < 0 || index >= denoised->shape[0])
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "preview: image index %d out of range", index);
    // Image `index` alone: [1, L, h, w].
    tensor *all = tensor_to_nchw(denoised);
    tensor *one = all ? tensor_new4(1, all->shape[1], all->shape[2], all->shape[3]) : NULL;
    if (one) {
        int64_t per_image = tensor_numel(one);
        memcpy(one->data, all->data + index * per_image, sizeof(float) * (size_t)per_image);
    }
    tensor_free(all);
    if (!one) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for a preview");
    decode_plan plan = {.method = DECODE_TAESD};
    tensor *image = NULL;
    lcm_status st = decode_run(p, &plan, one, &image);
    tensor_free(one);
    if (st != LCM_OK) return st;
    int height = (int)image->shape[2], width = (int)image->shape[3];
    preview->rgb = malloc((size_t)width * height * 3);
    if (!preview->rgb) st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for a preview");
    if (st == LCM_OK) st = vae_image_to_rgb8(image, 0, preview->rgb);
    tensor_free(image);
    if (st != LCM_OK) {
        free(preview->rgb);
        preview->rgb = NULL;
        return st;
    }
    preview->width = width;
    preview->height = height;
    return LCM_OK;
}
