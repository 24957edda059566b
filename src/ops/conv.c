// 2-D convolution as im2col + matrix product, one output-row band at a time so the column buffer
// stays small (a 512x512 VAE layer would otherwise need a gigabyte of columns).
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/gemm.h"
#include "ops/int8_layer.h"
#include "ops/kernel_family.h"
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


static tensor *conv2d_reference(const conv2d *c, const tensor *x, int64_t oh, int64_t ow);

static tensor *conv2d_compute(const conv2d *c, const tensor *x);

// The layer's input as it computes on it (8-bit quantized where the model says so), then the convolution.
tensor *conv2d_forward(const conv2d *c, const tensor *x) {
    const kernel_family *family = c->impl.family;
    if (family && family->forward) return family->forward(c->impl.state, x, c->bias);
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
    // The families that fuse (direct, sgemm) do; observers and fake quantization see the layer's
    // real input, and the other kernels take the steps one at a time.
    const kernel_family *family = c->impl.family;
    if (family && family->conv_fuses && layer_quant_input_is_plain(c->quant))
        return family->conv_run(c, x, oh, ow, fusion);
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
    if (c->impl.family) return c->impl.family->conv_run(c, x, oh, ow, &(conv2d_fusion){0});
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
