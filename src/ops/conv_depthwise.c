#include "ops/conv_depthwise.h"

#include "core/error.h"

void same_padding(int64_t in, int kernel, int stride, int *before, int *after) {
    int64_t out = (in + stride - 1) / stride;
    int64_t total = (out - 1) * stride + kernel - in;
    if (total < 0) total = 0;
    *before = (int)(total / 2);
    *after = (int)(total - total / 2);
}

tensor *depthwise_conv2d(const tensor *x, const float *weight, const float *bias, int kernel,
                         int stride, int pad_top, int pad_bottom, int pad_left, int pad_right) {
    if (!x) return NULL;
    if (x->ndim != 4 || kernel < 1 || stride < 1 || pad_top < 0 || pad_bottom < 0 || pad_left < 0 ||
        pad_right < 0) {
        lcm_fail(LCM_ERR_INTERNAL, "depthwise_conv2d: needs an NCHW input and valid geometry");
        return NULL;
    }
    tensor *plain = x->layout == TENSOR_NCHW ? NULL : tensor_to_nchw(x);
    const tensor *in = plain ? plain : x;
    if (!in) return NULL;
    int64_t n = in->shape[0], c = in->shape[1], h = in->shape[2], w = in->shape[3];
    int64_t oh = (pad_top + h + pad_bottom - kernel) / stride + 1;
    int64_t ow = (pad_left + w + pad_right - kernel) / stride + 1;
    tensor *y = oh > 0 && ow > 0 ? tensor_new4(n, c, oh, ow) : NULL;
    if (!y) {
        if (oh <= 0 || ow <= 0) lcm_fail(LCM_ERR_INTERNAL, "depthwise_conv2d: input too small");
        tensor_free(plain);
        return NULL;
    }
    #pragma omp parallel for
    for (int64_t p = 0; p < n * c; p++) {
        int64_t ch = p % c;
        const float *src = in->data + p * h * w;
        const float *f = weight + ch * kernel * kernel;
        float *dst = y->data + p * oh * ow;
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++) {
                float sum = 0.0f;
                for (int ky = 0; ky < kernel; ky++) {
                    int64_t iy = oy * stride + ky - pad_top;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < kernel; kx++) {
                        int64_t ix = ox * stride + kx - pad_left;
                        if (ix < 0 || ix >= w) continue;
                        sum += src[iy * w + ix] * f[ky * kernel + kx];
                    }
                }
                dst[oy * ow + ox] = sum + (bias ? bias[ch] : 0.0f);
            }
    }
    tensor_free(plain);
    return y;
}
