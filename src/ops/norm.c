// GroupNorm and LayerNorm. Statistics are accumulated in double (two passes: mean, then variance)
// so the result is as close to exact as float32 output allows, whatever the reduction order of the
// reference library.
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "ops/elementwise_simd.h"
#include "ops/ops.h"

// Pixels per partial sum of the NHWC GroupNorm. The partials are added in a fixed order, so the
// result does not depend on the number of threads.
#define GROUP_NORM_PIXEL_BLOCK 64

// Normalises `count` values at x with their own mean/variance into y, then applies the per-channel
// affine: values [i*per_channel, (i+1)*per_channel) belong to channel first_channel + i.
// The sums run in 4 interleaved double accumulators (added in a fixed order at the end), so that
// they do not wait on one add's latency per value.
static void normalize_span(const float *x, float *y, int64_t count, int64_t per_channel,
                           const norm *n, int first_channel, bool then_silu) {
    double sum[4] = {0, 0, 0, 0};
    int64_t whole = count / 4 * 4;
    for (int64_t i = 0; i < whole; i += 4)
        for (int k = 0; k < 4; k++) sum[k] += x[i + k];
    for (int64_t i = whole; i < count; i++) sum[0] += x[i];
    double mean = ((sum[0] + sum[1]) + (sum[2] + sum[3])) / (double)count;
    double sq[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < whole; i += 4)
        for (int k = 0; k < 4; k++) {
            double d = x[i + k] - mean;
            sq[k] += d * d;
        }
    for (int64_t i = whole; i < count; i++) {
        double d = x[i] - mean;
        sq[0] += d * d;
    }
    double variance = ((sq[0] + sq[1]) + (sq[2] + sq[3])) / (double)count;
    float rstd = (float)(1.0 / sqrt(variance + n->eps));
    float fmean = (float)mean;
    if (per_channel == 1 && !then_silu) { // LayerNorm: one channel per value, vectorised
        const float *scale = n->weight + first_channel, *shift = n->bias + first_channel;
        #pragma omp simd
        for (int64_t i = 0; i < count; i++) y[i] = (x[i] - fmean) * rstd * scale[i] + shift[i];
        return;
    }
    // Channel by channel: no division per value to find its channel.
    for (int64_t c = 0; c * per_channel < count; c++) {
        float scale = n->weight[first_channel + c], shift = n->bias[first_channel + c];
        const float *xc = x + c * per_channel;
        float *yc = y + c * per_channel;
        for (int64_t i = 0; i < per_channel; i++) {
            float v = (xc[i] - fmean) * rstd * scale + shift;
            if (then_silu) v = v / (1.0f + expf(-v));
            yc[i] = v;
        }
    }
}

// Per-channel sums over blocks of pixels of one image x [hw, c], in double, of d = x - shift[ch]
// and of d * d: partial[(block * c + ch) * 2 + 0 / 1]. One pass over x for both: shift is a value
// of the channel (its first pixel's), so the sums of squares stay far from cancelling.
static void channel_partial_sums(const float *x, int64_t hw, int64_t c, const double *shift,
                                 double *partial) {
    int64_t blocks = (hw + GROUP_NORM_PIXEL_BLOCK - 1) / GROUP_NORM_PIXEL_BLOCK;
    #pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        double *acc = partial + blk * c * 2;
        for (int64_t i = 0; i < 2 * c; i++) acc[i] = 0;
        int64_t end = (blk + 1) * GROUP_NORM_PIXEL_BLOCK < hw ? (blk + 1) * GROUP_NORM_PIXEL_BLOCK : hw;
        for (int64_t p = blk * GROUP_NORM_PIXEL_BLOCK; p < end; p++) {
            const float *pixel = x + p * c;
            for (int64_t ch = 0; ch < c; ch++) {
                double d = (double)pixel[ch] - shift[ch];
                acc[2 * ch] += d;
                acc[2 * ch + 1] += d * d;
            }
        }
    }
}

// Mean and 1/sqrt(variance + eps) of each group from the partial sums (reduced in block, then
// channel order, whatever the thread count): with S1, S2 the sums of d = x - shift over a
// channel's hw pixels, sum(x) = S1 + hw * shift and, for the group mean m,
// sum((x - m)^2) = S2 + 2 (shift - m) S1 + hw (shift - m)^2.
static void group_moments(const double *partial, int64_t blocks, int64_t hw, int64_t c, int groups,
                          const double *shift, double eps, float *mean, float *rstd) {
    int64_t per_group = c / groups;
    double count = (double)(per_group * hw);
    for (int g = 0; g < groups; g++) {
        double s1[per_group], s2[per_group]; // per channel of the group
        for (int64_t k = 0; k < per_group; k++) s1[k] = s2[k] = 0;
        for (int64_t blk = 0; blk < blocks; blk++)
            for (int64_t k = 0; k < per_group; k++) {
                const double *at = partial + (blk * c + g * per_group + k) * 2;
                s1[k] += at[0];
                s2[k] += at[1];
            }
        double total = 0;
        for (int64_t k = 0; k < per_group; k++) total += s1[k] + (double)hw * shift[g * per_group + k];
        double m = total / count, squares = 0;
        for (int64_t k = 0; k < per_group; k++) {
            double offset = shift[g * per_group + k] - m;
            squares += s2[k] + 2.0 * offset * s1[k] + (double)hw * offset * offset;
        }
        float group_rstd = (float)(1.0 / sqrt(fmax(squares, 0.0) / count + eps));
        for (int64_t k = 0; k < per_group; k++) {
            mean[g * per_group + k] = (float)m;
            rstd[g * per_group + k] = group_rstd;
        }
    }
}

// GroupNorm over channels-last data into y (x itself, or a new tensor of its shape): one pass for
// the statistics, one to normalise. Returns false (y is left unspecified) when out of memory.
static bool group_norm_nhwc(const norm *n, const tensor *x, tensor *y, bool then_silu) {
    int64_t batch = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
    int groups = n->groups;
    int64_t blocks = (hw + GROUP_NORM_PIXEL_BLOCK - 1) / GROUP_NORM_PIXEL_BLOCK;
    bool ok = false;
    double *partial = malloc(sizeof(double) * (size_t)(blocks * c * 2));
    double *shift = malloc(sizeof(double) * (size_t)c);
    float *mean = malloc(sizeof(float) * (size_t)c), *rstd = malloc(sizeof(float) * (size_t)c);
    if (!partial || !shift || !mean || !rstd) {
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "group_norm: out of memory");
        goto done;
    }
    for (int64_t b = 0; b < batch; b++) {
        const float *xb = x->data + b * hw * c;
        float *yb = y->data + b * hw * c;
        for (int64_t ch = 0; ch < c; ch++) shift[ch] = hw > 0 ? xb[ch] : 0.0;
        channel_partial_sums(xb, hw, c, shift, partial);
        group_moments(partial, blocks, hw, c, groups, shift, n->eps, mean, rstd);
        #pragma omp parallel for schedule(static)
        for (int64_t p = 0; p < hw; p++)
            normalize_span_simd(xb + p * c, mean, rstd, n->weight, n->bias, yb + p * c, c, then_silu);
    }
    ok = true;
done:
    free(partial);
    free(shift);
    free(mean);
    free(rstd);
    return ok;
}

// GroupNorm of x into y: x itself (in place) or a tensor of its shape and layout. Every value is
// read before its own output is written, so the two may be one.
static bool group_norm_into(const norm *n, const tensor *x, tensor *y, bool then_silu) {
    if (x->ndim != 4 || x->shape[1] != n->channels) {
        lcm_fail(LCM_ERR_INTERNAL, "group_norm: input has %lld channels, layer expects %d",
                 (long long)(x->ndim == 4 ? x->shape[1] : -1), n->channels);
        return false;
    }
    if (x->layout == TENSOR_NHWC) return group_norm_nhwc(n, x, y, then_silu);
    int64_t batch = x->shape[0], hw = x->shape[2] * x->shape[3];
    int per_group = n->channels / n->groups;
    int64_t span = per_group * hw;
    #pragma omp parallel for collapse(2)
    for (int64_t b = 0; b < batch; b++)
        for (int g = 0; g < n->groups; g++) {
            int64_t offset = (b * n->channels + (int64_t)g * per_group) * hw;
            normalize_span(x->data + offset, y->data + offset, span, hw, n, g * per_group, then_silu);
        }
    return true;
}

static tensor *group_norm_impl(const norm *n, const tensor *x, bool then_silu) {
    if (!x) return NULL;
    tensor *y = tensor_new(x->ndim, x->shape);
    if (!y) return NULL;
    y->layout = x->layout;
    if (!group_norm_into(n, x, y, then_silu)) tensor_replace(&y, NULL);
    return y;
}

tensor *group_norm(const norm *n, const tensor *x) { return group_norm_impl(n, x, false); }
tensor *group_norm_silu(const norm *n, const tensor *x) { return group_norm_impl(n, x, true); }

tensor *group_norm_silu_consume(const norm *n, tensor *x) {
    if (x && !group_norm_into(n, x, x, true)) tensor_replace(&x, NULL);
    return x;
}

tensor *layer_norm(const norm *n, const tensor *x) {
    if (!x) return NULL;
    int64_t d = x->shape[x->ndim - 1];
    if (d != n->channels) {
        lcm_fail(LCM_ERR_INTERNAL, "layer_norm: input has %lld features, layer expects %d",
                 (long long)d, n->channels);
        return NULL;
    }
    if (x->ndim == 4 && x->layout == TENSOR_NHWC) {
        // over W of the logical [N, C, H, W]: only meaningful in plain order
        tensor *plain = tensor_to_nchw(x);
        tensor *y = plain ? layer_norm(n, plain) : NULL;
        tensor_free(plain);
        return y;
    }
    tensor *y = tensor_new(x->ndim, x->shape);
    if (!y) return NULL;
    int64_t rows = tensor_numel(x) / d;
    #pragma omp parallel for
    for (int64_t r = 0; r < rows; r++) normalize_span(x->data + r * d, y->data + r * d, d, 1, n, 0, false);
    return y;
}
