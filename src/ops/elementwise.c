#include <math.h>

#include "core/error.h"
#include "ops/elementwise_simd.h"
#include "ops/ops.h"

// Elements per task of the vectorised loops.
#define SPAN 4096

void silu_inplace(tensor *x, kernel_set kernels) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    if (kernels == KERNELS_REFERENCE) {
        #pragma omp parallel for
        for (int64_t i = 0; i < n; i++) d[i] = d[i] / (1.0f + expf(-d[i]));
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += SPAN) silu_span(d + i, n - i < SPAN ? n - i : SPAN);
}

static inline float gelu(float v) { return 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2)); }

void gelu_inplace(tensor *x) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) d[i] = gelu(d[i]);
}

void quick_gelu_inplace(tensor *x) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) d[i] = d[i] / (1.0f + expf(-1.702f * d[i]));
}

tensor *geglu(const tensor *x, kernel_set kernels) {
    if (!x) return NULL;
    if (x->ndim == 4 && x->layout == TENSOR_NHWC) {
        // over W of the logical [N, C, H, W]: only meaningful in plain order
        tensor *plain = tensor_to_nchw(x);
        tensor *y = plain ? geglu(plain, kernels) : NULL;
        tensor_free(plain);
        return y;
    }
    int64_t two_d = x->shape[x->ndim - 1], d = two_d / 2;
    int64_t shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) shape[i] = x->shape[i];
    shape[x->ndim - 1] = d;
    tensor *y = tensor_new(x->ndim, shape);
    if (!y) return NULL;
    int64_t rows = tensor_numel(x) / two_d;
    if (kernels == KERNELS_FAST) {
        #pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            gelu_mul_span(x->data + r * two_d, x->data + r * two_d + d, y->data + r * d, d);
        return y;
    }
    #pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) {
        const float *hidden = x->data + r * two_d, *gate = hidden + d;
        for (int64_t i = 0; i < d; i++) y->data[r * d + i] = hidden[i] * gelu(gate[i]);
    }
    return y;
}

tensor *add_inplace(tensor *a, const tensor *b) {
    if (!a || !b) return NULL;
    int64_t n = tensor_numel(a);
    if (n != tensor_numel(b)) {
        lcm_fail(LCM_ERR_INTERNAL, "add: %lld vs %lld elements", (long long)n,
                 (long long)tensor_numel(b));
        return NULL;
    }
    const tensor *same = b;
    tensor *converted = NULL;
    if (a->ndim == 4 && b->ndim == 4 && a->layout != b->layout) {
        same = converted = a->layout == TENSOR_NHWC ? tensor_to_nhwc(b) : tensor_to_nchw(b);
        if (!converted) return NULL;
    }
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) a->data[i] += same->data[i];
    tensor_free(converted);
    return a;
}

tensor *add_channel_bias_inplace(tensor *x, const tensor *v) {
    if (!x || !v) return NULL;
    int64_t batch = x->shape[0], ch = x->shape[1], hw = x->shape[2] * x->shape[3];
    if (tensor_numel(v) != batch * ch) {
        lcm_fail(LCM_ERR_INTERNAL, "add_channel_bias: %lld values for %lld x %lld channels",
                 (long long)tensor_numel(v), (long long)batch, (long long)ch);
        return NULL;
    }
    if (x->layout == TENSOR_NHWC) {
        #pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < batch; b++)
            for (int64_t i = 0; i < hw; i++) {
                float *pixel = x->data + (b * hw + i) * ch;
                const float *bias = v->data + b * ch;
                for (int64_t c = 0; c < ch; c++) pixel[c] += bias[c];
            }
        return x;
    }
    #pragma omp parallel for
    for (int64_t p = 0; p < batch * ch; p++)
        for (int64_t i = 0; i < hw; i++) x->data[p * hw + i] += v->data[p];
    return x;
}

void scale_inplace(tensor *x, float s) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) x->data[i] *= s;
}
