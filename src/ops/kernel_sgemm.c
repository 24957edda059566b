// The sgemm family (kernel_family.h): convolutions as NHWC im2col + oneDNN's sgemm on the weight
// reordered to [out, kernel, kernel, in] (fusing upsample, residual and ReLU), linear layers as
// sgemm on their plain weight. What runs where neither AVX2 nor AVX-512 is there, and where it
// measures fastest (1x1 convolutions).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/gemm.h"
#include "ops/kernel_family.h"

typedef struct sgemm_conv {
    float *weight_ohwi; // [out, kernel, kernel, in]
    bool borrowed;      // from the packed-weight cache's mapping (not freed here)
} sgemm_conv;

static int64_t sgemm_conv_weight_count(const conv2d *c) {
    return (int64_t)c->out * c->in * c->kernel * c->kernel;
}

static lcm_status sgemm_conv_pack(const conv2d *c, lcm_precision precision, void **state) {
    (void)precision; // fp32 whatever was asked
    sgemm_conv *s = calloc(1, sizeof *s);
    int64_t taps = (int64_t)c->kernel * c->kernel;
    if (s) s->weight_ohwi = malloc(sizeof(float) * (size_t)sgemm_conv_weight_count(c));
    if (!s || !s->weight_ohwi) {
        free(s);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing weights");
    }
    // [out, in, k, k] -> [out, k, k, in]
    for (int64_t o = 0; o < c->out; o++)
        for (int64_t i = 0; i < c->in; i++)
            for (int64_t t = 0; t < taps; t++)
                s->weight_ohwi[(o * taps + t) * c->in + i] = c->weight[(o * c->in + i) * taps + t];
    *state = s;
    return LCM_OK;
}

// Output pixels per task of the NHWC im2col + sgemm kernel. Fixed, so that the arithmetic (and
// so the result) does not depend on the number of threads.
#define CONV_PIXEL_CHUNK 128

// Unfolds the NHWC input under output pixels [p0, p0 + count) into col[pixel, (ky, kx, ic)]: each
// tap is one contiguous run of `in` values. With `up` = 1 the convolution sees the input
// nearest-upsampled 2x (an h x w input read as 2h x 2w), without that image being written out.
static void im2col_nhwc_chunk(const conv2d *c, const float *x, int64_t h, int64_t w, int up,
                              int64_t ow, int64_t p0, int64_t count, float *col) {
    int k = c->kernel, s = c->stride, p = c->padding;
    int64_t in = c->in, seen_h = h << up, seen_w = w << up;
    float *dst = col;
    for (int64_t px = p0; px < p0 + count; px++) {
        int64_t oy = px / ow, ox = px % ow;
        for (int ky = 0; ky < k; ky++) {
            int64_t iy = oy * s - p + ky;
            for (int kx = 0; kx < k; kx++, dst += in) {
                int64_t ix = ox * s - p + kx;
                if (iy < 0 || iy >= seen_h || ix < 0 || ix >= seen_w)
                    memset(dst, 0, sizeof(float) * (size_t)in);
                else
                    memcpy(dst, x + ((iy >> up) * w + (ix >> up)) * in, sizeof(float) * (size_t)in);
            }
        }
    }
}

// The residual add and activation of `fusion` on `count` finished values, as add_inplace and
// relu_inplace compute them.
static void apply_epilogue(const conv2d_fusion *fusion, const float *restrict residual,
                           float *restrict out, int64_t count) {
    if (residual) {
        #pragma omp simd
        for (int64_t i = 0; i < count; i++) out[i] += residual[i];
    }
    if (fusion->activation == CONV_ACTIVATION_RELU) {
        #pragma omp simd
        for (int64_t i = 0; i < count; i++) out[i] = out[i] < 0.0f ? 0.0f : out[i];
    }
}

// NHWC convolution as im2col + sgemm, the fast path where oneDNN has no fast direct kernel:
// out[pixels, out] = col[pixels, k*k*in] W_ohwi^T, one chunk of output pixels per task, each
// thread with its own small column buffer (oneDNN's sgemm runs single-threaded inside our
// parallel loop). `fusion`'s epilogue runs on each chunk right after its product.
static tensor *sgemm_conv_run(const conv2d *c, const tensor *x, int64_t oh, int64_t ow,
                              const conv2d_fusion *fusion) {
    const float *weight_ohwi = ((const sgemm_conv *)c->impl.state)->weight_ohwi;
    int64_t n = x->shape[0], h = x->shape[2], w = x->shape[3];
    int up = fusion->upsample_input ? 1 : 0;
    tensor *converted = x->layout == TENSOR_NHWC ? NULL : tensor_to_nhwc(x);
    if (x->layout != TENSOR_NHWC && !converted) return NULL;
    const float *input = converted ? converted->data : x->data;
    const tensor *residual = fusion->residual;
    tensor *residual_converted = NULL;
    if (residual && residual->layout != TENSOR_NHWC) {
        residual = residual_converted = tensor_to_nhwc(residual);
        if (!residual) {
            tensor_free(converted);
            return NULL;
        }
    }
    tensor *y = tensor_new4(n, c->out, oh, ow);
    if (!y) {
        tensor_free(converted);
        tensor_free(residual_converted);
        return NULL;
    }
    y->layout = TENSOR_NHWC;
    int64_t patch = (int64_t)c->in * c->kernel * c->kernel;
    bool pointwise = c->kernel == 1 && c->stride == 1 && c->padding == 0 && !up;
    int64_t chunks_per_image = (oh * ow + CONV_PIXEL_CHUNK - 1) / CONV_PIXEL_CHUNK;
    int failed = 0;
    #pragma omp parallel
    {
        float *col = pointwise ? NULL : malloc(sizeof(float) * (size_t)(CONV_PIXEL_CHUNK * patch));
        if (!pointwise && !col) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < n * chunks_per_image; task++) {
            if (!pointwise && !col) continue;
            int64_t b = task / chunks_per_image, p0 = task % chunks_per_image * CONV_PIXEL_CHUNK;
            int64_t count = oh * ow - p0 < CONV_PIXEL_CHUNK ? oh * ow - p0 : CONV_PIXEL_CHUNK;
            const float *xb = input + b * h * w * c->in;
            int64_t first = (b * oh * ow + p0) * c->out;
            float *out = y->data + first;
            if (c->bias)
                for (int64_t px = 0; px < count; px++)
                    memcpy(out + px * c->out, c->bias, sizeof(float) * (size_t)c->out);
            const float *cols = xb + p0 * c->in;
            if (!pointwise) {
                im2col_nhwc_chunk(c, xb, h, w, up, ow, p0, count, col);
                cols = col;
            }
            gemm_f32(false, true, count, c->out, patch, 1.0f, cols, patch, weight_ohwi, patch,
                     c->bias ? 1.0f : 0.0f, out, c->out);
            apply_epilogue(fusion, residual ? residual->data + first : NULL, out, count * c->out);
        }
        free(col);
    }
    tensor_free(converted);
    tensor_free(residual_converted);
    if (failed) {
        tensor_free(y);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv2d: out of memory for the column buffer");
        return NULL;
    }
    return y;
}

static void sgemm_conv_free(void *state) {
    sgemm_conv *s = state;
    if (s && !s->borrowed) free(s->weight_ohwi);
    free(s);
}

static void sgemm_conv_export(const conv2d *c, packed_entry *entry) {
    const sgemm_conv *s = c->impl.state;
    *entry = (packed_entry){.family = PACKED_CONV_SGEMM,
                            .shape = {c->in, c->out, c->kernel, c->stride, c->padding},
                            .blob_count = 1};
    entry->meta = entry->meta_storage;
    uint64_t bytes = sizeof(float) * (uint64_t)sgemm_conv_weight_count(c);
    entry->blobs[0] = (packed_blob){s->weight_ohwi, bytes};
}

// One blob of exactly the reordered weight, aligned as the cache writes it.
static bool sgemm_blob_fits(const packed_entry *entry, uint64_t floats) {
    return entry->blob_count == 1 && (uintptr_t)entry->blobs[0].data % 64 == 0 &&
           entry->blobs[0].bytes == sizeof(float) * floats;
}

static lcm_status sgemm_conv_import(const conv2d *c, const packed_entry *entry, void **state) {
    if (!sgemm_blob_fits(entry, (uint64_t)sgemm_conv_weight_count(c)))
        return lcm_fail(LCM_ERR_FORMAT,
                        "cached sgemm convolution: not one aligned [%d, %d, %d, %d] weight",
                        c->out, c->kernel, c->kernel, c->in);
    sgemm_conv *s = calloc(1, sizeof *s);
    if (!s) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    *s = (sgemm_conv){.weight_ohwi = (float *)entry->blobs[0].data, .borrowed = true};
    *state = s;
    return LCM_OK;
}

// Nothing to pack: the product runs on l->weight (linear_keeps_weight).
static lcm_status sgemm_linear_pack(const linear *l, lcm_precision precision, void **state) {
    (void)l;
    (void)precision;
    *state = NULL;
    return LCM_OK;
}

static lcm_status sgemm_linear_run(const linear *l, const float *x, int64_t rows, int64_t items,
                                   float *y) {
    linear_plain_run(l, x, rows, items, y);
    return LCM_OK;
}

static void sgemm_linear_free(void *state) { (void)state; }

static void sgemm_linear_export(const linear *l, packed_entry *entry) {
    *entry = (packed_entry){.family = PACKED_LINEAR_SGEMM, .shape = {l->in, l->out},
                            .blob_count = 1};
    entry->meta = entry->meta_storage;
    entry->blobs[0] = (packed_blob){l->weight, sizeof(float) * (uint64_t)l->out * l->in};
}

static lcm_status sgemm_linear_import(linear *l, const packed_entry *entry, void **state) {
    if (!sgemm_blob_fits(entry, (uint64_t)l->out * l->in))
        return lcm_fail(LCM_ERR_FORMAT,
                        "cached sgemm linear layer: not one aligned [%d, %d] weight",
                        l->out, l->in);
    l->weight = (float *)entry->blobs[0].data; // borrowed from the mapping, never written
    l->weight_mapped = true;
    *state = NULL;
    return LCM_OK;
}

const kernel_family kernel_family_sgemm = {
    .name = "sgemm",
    .conv_id = CONV_KERNEL_SGEMM,
    .linear_id = LINEAR_KERNEL_SGEMM,
    .conv_cache = PACKED_CONV_SGEMM,
    .linear_cache = PACKED_LINEAR_SGEMM,
    .conv_pack = sgemm_conv_pack,
    .conv_run = sgemm_conv_run,
    .conv_fuses = true,
    .conv_free = sgemm_conv_free,
    .conv_export = sgemm_conv_export,
    .conv_import = sgemm_conv_import,
    .linear_pack = sgemm_linear_pack,
    .linear_keeps_weight = true,
    .linear_run = sgemm_linear_run,
    .linear_free = sgemm_linear_free,
    .linear_export = sgemm_linear_export,
    .linear_import = sgemm_linear_import,
};
