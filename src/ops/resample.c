#include "ops/resample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

// torch's nearest_idx (aten/src/ATen/native/UpSample.h) for one axis, with no scale factor given.
static int64_t nearest_source_index(int64_t dst, int64_t in, int64_t out) {
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    float scale = (float)in / (float)out;
    int64_t src = (int64_t)floorf((float)dst * scale);
    return src < in - 1 ? src : in - 1;
}

tensor *upsample_nearest(const tensor *x, int64_t out_h, int64_t out_w) {
    if (!x) return NULL;
    if (x->ndim != 4 || out_h < 1 || out_w < 1) {
        lcm_fail(LCM_ERR_INTERNAL, "upsample_nearest: needs an NCHW input and a positive size");
        return NULL;
    }
    int64_t planes = x->shape[0] * x->shape[1], h = x->shape[2], w = x->shape[3];
    tensor *y = tensor_new4(x->shape[0], x->shape[1], out_h, out_w);
    if (!y) return NULL;
    int64_t *source_x = malloc(sizeof(int64_t) * (size_t)out_w);
    if (!source_x) {
        tensor_free(y);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "upsample_nearest: out of memory");
        return NULL;
    }
    for (int64_t ox = 0; ox < out_w; ox++) source_x[ox] = nearest_source_index(ox, w, out_w);
    if (x->layout == TENSOR_NHWC) {
        int64_t n = x->shape[0], c = x->shape[1];
        y->layout = TENSOR_NHWC;
        #pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < n; b++)
            for (int64_t oy = 0; oy < out_h; oy++) {
                const float *src = x->data + (b * h + nearest_source_index(oy, h, out_h)) * w * c;
                float *dst = y->data + (b * out_h + oy) * out_w * c;
                for (int64_t ox = 0; ox < out_w; ox++)
                    memcpy(dst + ox * c, src + source_x[ox] * c, sizeof(float) * (size_t)c);
            }
        free(source_x);
        return y;
    }
    #pragma omp parallel for
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oy = 0; oy < out_h; oy++) {
            const float *src = x->data + (p * h + nearest_source_index(oy, h, out_h)) * w;
            float *dst = y->data + (p * out_h + oy) * out_w;
            for (int64_t ox = 0; ox < out_w; ox++) dst[ox] = src[source_x[ox]];
        }
    free(source_x);
    return y;
}
