// GroupNorm and LayerNorm. Statistics are accumulated in double (two passes: mean, then variance)
// so the result is as close to exact as float32 output allows, whatever the reduction order of the
// reference library.
#include <math.h>

#include "core/error.h"
#include "ops/ops.h"

// Normalises `count` values at x with their own mean/variance into y, then applies the per-channel
// affine: values [i*per_channel, (i+1)*per_channel) belong to channel first_channel + i.
static void normalize_span(const float *x, float *y, int64_t count, int64_t per_channel,
                           const norm *n, int first_channel, bool then_silu) {
    double sum = 0;
    for (int64_t i = 0; i < count; i++) sum += x[i];
    double mean = sum / (double)count, sq = 0;
    for (int64_t i = 0; i < count; i++) {
        double d = x[i] - mean;
        sq += d * d;
    }
    float rstd = (float)(1.0 / sqrt(sq / (double)count + n->eps));
    float fmean = (float)mean;
    for (int64_t i = 0; i < count; i++) {
        int ch = first_channel + (int)(i / per_channel);
        float v = (x[i] - fmean) * rstd * n->weight[ch] + n->bias[ch];
        if (then_silu) v = v / (1.0f + expf(-v));
        y[i] = v;
    }
}

static tensor *group_norm_impl(const norm *n, const tensor *x, bool then_silu) {
    if (!x) return NULL;
    if (x->ndim != 4 || x->shape[1] != n->channels) {
        lcm_fail(LCM_ERR_INTERNAL, "group_norm: input has %lld channels, layer expects %d",
                 (long long)(x->ndim == 4 ? x->shape[1] : -1), n->channels);
        return NULL;
    }
    tensor *y = tensor_new(x->ndim, x->shape);
    if (!y) return NULL;
    int64_t batch = x->shape[0], hw = x->shape[2] * x->shape[3];
    int per_group = n->channels / n->groups;
    int64_t span = per_group * hw;
    #pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < batch; b++)
        for (int g = 0; g < n->groups; g++) {
            int64_t offset = (b * n->channels + (int64_t)g * per_group) * hw;
            normalize_span(x->data + offset, y->data + offset, span, hw, n, g * per_group, then_silu);
        }
    return y;
}

tensor *group_norm(const norm *n, const tensor *x) { return group_norm_impl(n, x, false); }
tensor *group_norm_silu(const norm *n, const tensor *x) { return group_norm_impl(n, x, true); }

tensor *layer_norm(const norm *n, const tensor *x) {
    if (!x) return NULL;
    int64_t d = x->shape[x->ndim - 1];
    if (d != n->channels) {
        lcm_fail(LCM_ERR_INTERNAL, "layer_norm: input has %lld features, layer expects %d",
                 (long long)d, n->channels);
        return NULL;
    }
    tensor *y = tensor_new(x->ndim, x->shape);
    if (!y) return NULL;
    int64_t rows = tensor_numel(x) / d;
    #pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) normalize_span(x->data + r * d, y->data + r * d, d, 1, n, 0, false);
    return y;
}
