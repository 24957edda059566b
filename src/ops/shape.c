#include <string.h>

#include "core/error.h"
#include "ops/ops.h"

tensor *nchw_to_tokens(const tensor *x) {
    if (!x) return NULL;
    int64_t n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
    tensor *y = tensor_new3(n, hw, c);
    if (!y) return NULL;
    if (x->layout == TENSOR_NHWC) { // already [N, H*W, C] in memory
        memcpy(y->data, x->data, sizeof(float) * (size_t)(n * hw * c));
        return y;
    }
    #pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t i = 0; i < hw; i++)
            for (int64_t ch = 0; ch < c; ch++) y->data[(b * hw + i) * c + ch] = x->data[(b * c + ch) * hw + i];
    return y;
}

tensor *tokens_to_nchw(const tensor *x, int64_t h, int64_t w, kernel_set kernels) {
    if (!x) return NULL;
    int64_t n = x->shape[0], hw = x->shape[1], c = x->shape[2];
    if (hw != h * w) {
        lcm_fail(LCM_ERR_INTERNAL, "tokens_to_nchw: %lld tokens for %lldx%lld", (long long)hw,
                 (long long)h, (long long)w);
        return NULL;
    }
    tensor *y = tensor_new4(n, c, h, w);
    if (!y) return NULL;
    if (kernels == KERNELS_FAST) { // tokens are the NHWC storage of the image
        y->layout = TENSOR_NHWC;
        memcpy(y->data, x->data, sizeof(float) * (size_t)(n * hw * c));
        return y;
    }
    #pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t i = 0; i < hw; i++) y->data[(b * c + ch) * hw + i] = x->data[(b * hw + i) * c + ch];
    return y;
}

tensor *concat_channels(const tensor *a, const tensor *b) {
    if (!a || !b) return NULL;
    int64_t n = a->shape[0], ca = a->shape[1], cb = b->shape[1], hw = a->shape[2] * a->shape[3];
    if (b->shape[0] != n || b->shape[2] * b->shape[3] != hw) {
        lcm_fail(LCM_ERR_INTERNAL, "concat_channels: mismatched shapes");
        return NULL;
    }
    tensor *y = tensor_new4(n, ca + cb, a->shape[2], a->shape[3]);
    if (!y) return NULL;
    if (a->layout == TENSOR_NHWC || b->layout == TENSOR_NHWC) {
        // each output pixel is a's channels then b's
        tensor *a_nhwc = a->layout == TENSOR_NHWC ? NULL : tensor_to_nhwc(a);
        tensor *b_nhwc = b->layout == TENSOR_NHWC ? NULL : tensor_to_nhwc(b);
        const float *pa = a_nhwc ? a_nhwc->data : a->data, *pb = b_nhwc ? b_nhwc->data : b->data;
        if ((a->layout != TENSOR_NHWC && !a_nhwc) || (b->layout != TENSOR_NHWC && !b_nhwc)) {
            tensor_replace(&y, NULL);
        } else {
            y->layout = TENSOR_NHWC;
            #pragma omp parallel for schedule(static)
            for (int64_t p = 0; p < n * hw; p++) {
                memcpy(y->data + p * (ca + cb), pa + p * ca, sizeof(float) * (size_t)ca);
                memcpy(y->data + p * (ca + cb) + ca, pb + p * cb, sizeof(float) * (size_t)cb);
            }
        }
        tensor_free(a_nhwc);
        tensor_free(b_nhwc);
        return y;
    }
    for (int64_t i = 0; i < n; i++) {
        memcpy(y->data + i * (ca + cb) * hw, a->data + i * ca * hw, sizeof(float) * ca * hw);
        memcpy(y->data + (i * (ca + cb) + ca) * hw, b->data + i * cb * hw, sizeof(float) * cb * hw);
    }
    return y;
}

tensor *upsample_nearest2x(const tensor *x) {
    if (!x) return NULL;
    int64_t planes = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
    tensor *y = tensor_new4(x->shape[0], x->shape[1], 2 * h, 2 * w);
    if (!y) return NULL;
    if (x->layout == TENSOR_NHWC) {
        int64_t n = x->shape[0], c = x->shape[1];
        y->layout = TENSOR_NHWC;
        #pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < n; b++)
            for (int64_t oy = 0; oy < 2 * h; oy++)
                for (int64_t ox = 0; ox < 2 * w; ox++)
                    memcpy(y->data + ((b * 2 * h + oy) * 2 * w + ox) * c,
                           x->data + ((b * h + oy / 2) * w + ox / 2) * c, sizeof(float) * (size_t)c);
        return y;
    }
    #pragma omp parallel for
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oy = 0; oy < 2 * h; oy++)
            for (int64_t ox = 0; ox < 2 * w; ox++)
                y->data[(p * 2 * h + oy) * 2 * w + ox] = x->data[(p * h + oy / 2) * w + ox / 2];
    return y;
}
