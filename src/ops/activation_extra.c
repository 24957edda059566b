#include "ops/activation_extra.h"

#include <math.h>

#include "core/error.h"

void sigmoid_inplace(tensor *x) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) d[i] = 1.0f / (1.0f + expf(-d[i]));
}

void relu_inplace(tensor *x) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) d[i] = d[i] < 0.0f ? 0.0f : d[i]; // NaN stays NaN, as torch.relu
}

void leaky_relu_inplace(tensor *x, float slope) {
    if (!x) return;
    int64_t n = tensor_numel(x);
    float *d = x->data;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) d[i] = d[i] > 0.0f ? d[i] : d[i] * slope;
}

tensor *channel_mean(const tensor *x) {
    if (!x) return NULL;
    if (x->ndim != 4) {
        lcm_fail(LCM_ERR_INTERNAL, "channel_mean: needs an NCHW input");
        return NULL;
    }
    tensor *plain = x->layout == TENSOR_NCHW ? NULL : tensor_to_nchw(x);
    const tensor *in = plain ? plain : x;
    if (!in) return NULL;
    int64_t planes = in->shape[0] * in->shape[1], hw = in->shape[2] * in->shape[3];
    tensor *y = tensor_new2(in->shape[0], in->shape[1]);
    if (y) {
        #pragma omp parallel for
        for (int64_t p = 0; p < planes; p++) {
            // Double accumulation: large planes (256x256 in the real encoder) would otherwise lose
            // digits that torch's pairwise reduction keeps.
            double sum = 0.0;
            for (int64_t i = 0; i < hw; i++) sum += in->data[p * hw + i];
            y->data[p] = (float)(sum / (double)hw);
        }
    }
    tensor_free(plain);
    return y;
}

tensor *scale_channels(tensor *x, const tensor *s) {
    if (!x || !s) {
        tensor_free(x);
        return NULL;
    }
    if (x->layout != TENSOR_NCHW) tensor_replace(&x, tensor_to_nchw(x));
    if (!x) return NULL;
    int64_t planes = x->shape[0] * x->shape[1], hw = x->shape[2] * x->shape[3];
    if (x->ndim != 4 || tensor_numel(s) != planes) {
        lcm_fail(LCM_ERR_INTERNAL, "scale_channels: %lld scales for %lld channels",
                 (long long)tensor_numel(s), (long long)planes);
        tensor_free(x);
        return NULL;
    }
    #pragma omp parallel for
    for (int64_t p = 0; p < planes; p++)
        for (int64_t i = 0; i < hw; i++) x->data[p * hw + i] *= s->data[p];
    return x;
}
