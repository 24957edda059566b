#include "ops/interpolate.h"

#include <stdlib.h>

#include "core/error.h"

typedef struct tap {
    int64_t i0, i1;  // the two source indices
    float w0, w1;    // their weights
} tap;

// torch computes the scale and the source position in float (opmath of float), truncates to the
// lower index and takes the fraction as the weight of the upper one.
static void make_taps(int64_t in, int64_t out, tap *taps) {
    float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    for (int64_t d = 0; d < out; d++) {
        float src = scale * (float)d;
        int64_t i0 = (int64_t)src;
        if (i0 > in - 1) i0 = in - 1;
        float frac = src - (float)i0;
        taps[d] = (tap){i0, i0 < in - 1 ? i0 + 1 : i0, 1.0f - frac, frac};
    }
}

tensor *resize_bilinear_align_corners(const tensor *x, int64_t out_h, int64_t out_w) {
    return resize_bilinear_align_corners_rows(x, out_h, out_w, 0, out_h);
}

tensor *resize_bilinear_align_corners_rows(const tensor *x, int64_t out_h, int64_t out_w,
                                           int64_t y0, int64_t y1) {
    if (!x) return NULL;
    if (x->ndim != 4 || out_h < 1 || out_w < 1 || y0 < 0 || y1 > out_h || y0 >= y1) {
        lcm_fail(LCM_ERR_INTERNAL, "resize_bilinear_align_corners: needs NCHW and a positive size");
        return NULL;
    }
    tensor *plain = x->layout == TENSOR_NCHW ? NULL : tensor_to_nchw(x);
    const tensor *in = plain ? plain : x;
    if (!in) return NULL;
    int64_t planes = in->shape[0] * in->shape[1], h = in->shape[2], w = in->shape[3];
    int64_t band = y1 - y0;
    tensor *y = tensor_new4(in->shape[0], in->shape[1], band, out_w);
    tap *rows = malloc(sizeof(tap) * (size_t)out_h), *cols = malloc(sizeof(tap) * (size_t)out_w);
    if (!y || !rows || !cols) {
        if (y) lcm_fail(LCM_ERR_OUT_OF_MEMORY, "resize_bilinear_align_corners: out of memory");
        tensor_free(y);
        tensor_free(plain);
        free(rows);
        free(cols);
        return NULL;
    }
    make_taps(h, out_h, rows);
    make_taps(w, out_w, cols);
    #pragma omp parallel for
    for (int64_t p = 0; p < planes; p++) {
        const float *src = in->data + p * h * w;
        float *dst = y->data + p * band * out_w;
        for (int64_t oy = 0; oy < band; oy++) {
            const tap r = rows[y0 + oy];
            const float *a = src + r.i0 * w, *b = src + r.i1 * w;
            for (int64_t ox = 0; ox < out_w; ox++) {
                const tap c = cols[ox];
                dst[oy * out_w + ox] = r.w0 * (c.w0 * a[c.i0] + c.w1 * a[c.i1]) +
                                       r.w1 * (c.w0 * b[c.i0] + c.w1 * b[c.i1]);
            }
        }
    }
    free(rows);
    free(cols);
    tensor_free(plain);
    return y;
}
