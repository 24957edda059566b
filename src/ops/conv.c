// 2-D convolution as im2col + matrix product, one output-row band at a time so the column buffer
// stays small (a 512x512 VAE layer would otherwise need a gigabyte of columns).
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/conv_direct.h"
#include "ops/dnnl_layer.h"
#include "ops/gemm.h"
#include "ops/int8_layer.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"
#include "ops/pointwise.h"

// About 32 MiB of columns per band.
#define CONV_COLUMN_BUDGET (8u * 1024u * 1024u)

// Unfolds the input rows needed for output rows [oy0, oy1) into col[in*k*k, (oy1-oy0)*ow].
static void im2col_band(const conv2d *c, const float *x, int64_t h, int64_t w, int64_t ow,
                        int64_t oy0, int64_t oy1, float *col) {
    int k = c->kernel, s = c->stride, p = c->padding;
    int64_t band = (oy1 - oy0) * ow;
    #pragma omp parallel for collapse(2)
    for (int64_t ic = 0; ic < c->in; ic++) {
        for (int ky = 0; ky < k; ky++) {
            const float *plane = x + ic * h * w;
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + ((ic * k + ky) * k + kx) * band;
                for (int64_t oy = oy0; oy < oy1; oy++) {
                    int64_t iy = oy * s - p + ky;
                    float *row = dst + (oy - oy0) * ow;
                    if (iy < 0 || iy >= h) {
                        memset(row, 0, sizeof(float) * ow);
                        continue;
                    }
                    for (int64_t ox = 0; ox < ow; ox++) {
                        int64_t ix = ox * s - p + kx;
                        row[ox] = ix >= 0 && ix < w ? plane[iy * w + ix] : 0.0f;
                    }
                }
            }
        }
    }
}

// The oneDNN primitive over NHWC: input converted once if it comes NCHW (the first layer only).
static tensor *conv2d_fast(const conv2d *c, const tensor *x, int64_t oh, int64_t ow) {
    int64_t n = x->shape[0], h = x->shape[2], w = x->shape[3];
    tensor *converted = x->layout == TENSOR_NHWC ? NULL : tensor_to_nhwc(x);
    if (x->layout != TENSOR_NHWC && !converted) return NULL;
    const tensor *input = converted ? converted : x;
    tensor *y = tensor_new4(n, c->out, oh, ow);
    if (y) {
        y->layout = TENSOR_NHWC;
        if (dnnl_layer_conv_run(c->fast, input->data, n, h, w, c->bias, y->data) != LCM_OK)
            tensor_replace(&y, NULL);
    }
    tensor_free(converted);
    return y;
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
static tensor *conv2d_nhwc_gemm(const conv2d *c, const tensor *x, int64_t oh, int64_t ow,
                                const conv2d_fusion *fusion) {
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
            gemm_f32(false, true, count, c->out, patch, 1.0f, cols, patch, c->weight_ohwi, patch,
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

// The direct AVX2 kernel (ops/conv_direct.h) with `fusion` done inside it.
static tensor *conv2d_direct(const conv2d *c, const tensor *x, int64_t oh, int64_t ow,
                             const conv2d_fusion *fusion) {
    tensor *converted = x->layout == TENSOR_NHWC ? NULL : tensor_to_nhwc(x);
    if (x->layout != TENSOR_NHWC && !converted) return NULL;
    const tensor *residual = fusion->residual;
    tensor *residual_converted = NULL;
    if (residual && residual->layout != TENSOR_NHWC) residual = residual_converted = tensor_to_nhwc(residual);
    tensor *y = fusion->residual && !residual ? NULL : tensor_new4(x->shape[0], c->out, oh, ow);
    if (y) {
        y->layout = TENSOR_NHWC;
        const conv_direct_epilogue epilogue = {
            .residual = residual ? residual->data : NULL,
            .relu = fusion->activation == CONV_ACTIVATION_RELU,
        };
        if (conv_direct_run(c->direct, converted ? converted->data : x->data, x->shape[0],
                            x->shape[2], x->shape[3], fusion->upsample_input, &epilogue,
                            y->data) != LCM_OK)
            tensor_replace(&y, NULL);
    }
    tensor_free(converted);
    tensor_free(residual_converted);
    return y;
}

static tensor *conv2d_reference(const conv2d *c, const tensor *x, int64_t oh, int64_t ow);

static tensor *conv2d_compute(const conv2d *c, const tensor *x);

// The layer's input as it computes on it (8-bit quantized where the model says so), then the convolution.
tensor *conv2d_forward(const conv2d *c, const tensor *x) {
    if (c->quant && c->quant->int8) return int8_layer_forward(c->quant->int8, x, c->bias);
    tensor *quantized;
    tensor *y = conv2d_compute(c, layer_quant_input(c->quant, x, &quantized));
    tensor_free(quantized);
    return y;
}

static int64_t conv_output_size(const conv2d *c, int64_t size) {
    return (size + 2 * c->padding - c->kernel) / c->stride + 1;
}

static bool check_conv_input(const conv2d *c, const tensor *x) {
    if (x->ndim == 4 && x->shape[1] == c->in) return true;
    lcm_fail(LCM_ERR_INTERNAL, "conv2d: input has %lld channels, layer expects %d",
             (long long)(x->ndim == 4 ? x->shape[1] : -1), c->in);
    return false;
}

tensor *conv2d_forward_fused(const conv2d *c, const tensor *x, const conv2d_fusion *fusion) {
    static const conv2d_fusion none = {0};
    if (!fusion) fusion = &none;
    if (!x) return NULL;
    if (!check_conv_input(c, x)) return NULL;
    int64_t h = x->shape[2] << (fusion->upsample_input ? 1 : 0);
    int64_t w = x->shape[3] << (fusion->upsample_input ? 1 : 0);
    int64_t oh = conv_output_size(c, h), ow = conv_output_size(c, w);
    const tensor *r = fusion->residual;
    if (r && (r->ndim != 4 || r->shape[0] != x->shape[0] || r->shape[1] != c->out ||
              r->shape[2] != oh || r->shape[3] != ow)) {
        lcm_fail(LCM_ERR_INTERNAL, "conv2d: residual does not have the output's shape");
        return NULL;
    }
    // The direct and sgemm kernels fuse; observers and fake quantization see the layer's real
    // input, and the other kernels take the steps one at a time.
    if (layer_quant_input_is_plain(c->quant)) {
        if (c->direct) return conv2d_direct(c, x, oh, ow, fusion);
        if (c->weight_ohwi) return conv2d_nhwc_gemm(c, x, oh, ow, fusion);
    }
    tensor *upsampled = fusion->upsample_input ? upsample_nearest2x(x) : NULL;
    if (fusion->upsample_input && !upsampled) return NULL;
    tensor *y = conv2d_forward(c, upsampled ? upsampled : x);
    tensor_free(upsampled);
    if (y && r && !add_inplace(y, r)) tensor_replace(&y, NULL);
    if (y && fusion->activation == CONV_ACTIVATION_RELU) relu_inplace(y);
    return y;
}

static tensor *conv2d_compute(const conv2d *c, const tensor *x) {
    if (!x) return NULL;
    if (!check_conv_input(c, x)) return NULL;
    int64_t h = x->shape[2], w = x->shape[3];
    int64_t oh = conv_output_size(c, h), ow = conv_output_size(c, w);
    if (c->fast) return conv2d_fast(c, x, oh, ow);
    if (c->direct) return conv2d_direct(c, x, oh, ow, &(conv2d_fusion){0});
    if (c->weight_ohwi) return conv2d_nhwc_gemm(c, x, oh, ow, &(conv2d_fusion){0});
    if (x->layout == TENSOR_NCHW) return conv2d_reference(c, x, oh, ow);
    tensor *plain = tensor_to_nchw(x);
    tensor *y = plain ? conv2d_reference(c, plain, oh, ow) : NULL;
    tensor_free(plain);
    return y;
}

// im2col + sgemm over NCHW.
static tensor *conv2d_reference(const conv2d *c, const tensor *x, int64_t oh, int64_t ow) {
    int64_t n = x->shape[0], h = x->shape[2], w = x->shape[3];
    tensor *y = tensor_new4(n, c->out, oh, ow);
    if (!y) return NULL;
    int64_t patch = (int64_t)c->in * c->kernel * c->kernel;
    bool pointwise = c->kernel == 1 && c->stride == 1 && c->padding == 0;
    int64_t rows_per_band = pointwise ? oh : (int64_t)(CONV_COLUMN_BUDGET / (size_t)(patch * ow));
    if (rows_per_band < 1) rows_per_band = 1;
    if (rows_per_band > oh) rows_per_band = oh;
    float *col = pointwise ? NULL : malloc(sizeof(float) * (size_t)(patch * rows_per_band * ow));
    if (!pointwise && !col) {
        tensor_free(y);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv2d: out of memory for the column buffer");
        return NULL;
    }
    for (int64_t b = 0; b < n; b++) {
        const float *xb = x->data + b * c->in * h * w;
        float *yb = y->data + b * c->out * oh * ow;
        for (int64_t oy0 = 0; oy0 < oh; oy0 += rows_per_band) {
            int64_t oy1 = oy0 + rows_per_band < oh ? oy0 + rows_per_band : oh;
            int64_t band = (oy1 - oy0) * ow;
            float *out = yb + oy0 * ow;
            if (c->bias) {
                #pragma omp parallel for
                for (int64_t oc = 0; oc < c->out; oc++)
                    for (int64_t i = 0; i < band; i++) out[oc * oh * ow + i] = c->bias[oc];
            }
            const float *cols = xb;
            if (!pointwise) {
                im2col_band(c, xb, h, w, ow, oy0, oy1, col);
                cols = col;
            }
            // out[oc, band] (+)= W[oc, patch] * cols[patch, band]
            gemm_f32(false, false, c->out, band, patch, 1.0f, c->weight, patch, cols, band,
                     c->bias ? 1.0f : 0.0f, out, oh * ow);
        }
    }
    free(col);
    return y;
}

tensor *pad2d(const tensor *x, int top, int bottom, int left, int right) {
    if (!x) return NULL;
    int64_t n = x->shape[0], ch = x->shape[1], h = x->shape[2], w = x->shape[3];
    int64_t ph = h + top + bottom, pw = w + left + right;
    tensor *y = tensor_zeros(4, (int64_t[]){n, ch, ph, pw});
    if (!y) return NULL;
    y->layout = x->layout;
    if (x->layout == TENSOR_NHWC) {
        // each input row of pixels is one contiguous run of w * ch values
        #pragma omp parallel for collapse(2)
        for (int64_t b = 0; b < n; b++)
            for (int64_t iy = 0; iy < h; iy++)
                memcpy(y->data + ((b * ph + iy + top) * pw + left) * ch,
                       x->data + (b * h + iy) * w * ch, sizeof(float) * (size_t)(w * ch));
        return y;
    }
    #pragma omp parallel for
    for (int64_t plane = 0; plane < n * ch; plane++)
        for (int64_t iy = 0; iy < h; iy++)
            memcpy(y->data + plane * ph * pw + (iy + top) * pw + left, x->data + plane * h * w + iy * w,
                   sizeof(float) * w);
    return y;
}
