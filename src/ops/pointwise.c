#include "ops/pointwise.h"

#include <math.h>

void tanh_clamp_inplace(tensor *x, float limit) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) d[i] = tanhf(d[i] / limit) * limit;
}

void scale_shift_inplace(tensor *x, float scale, float shift) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        float scaled = d[i] * scale; // a separate statement: no fused multiply-add
        d[i] = scaled + shift;
    }
}

void shift_divide_inplace(tensor *x, float shift, float divisor) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) d[i] = (d[i] + shift) / divisor;
}
