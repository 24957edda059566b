#include "ops/int8_quantize.h"

#include <math.h>
#include <string.h>

void quantize_weights_s8(const float *w, int64_t out_channels, int64_t per_channel, int8_t *q,
                         float *scales) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out_channels; o++) {
        const float *row = w + o * per_channel;
        float max_abs = 0.0f;
        // comparisons rather than fmaxf/fminf, which GCC compiles to a libm call per value (their
        // NaN rules): 11% of an int8 model's load time when it went through here
        for (int64_t i = 0; i < per_channel; i++) {
            float a = fabsf(row[i]);
            max_abs = a > max_abs ? a : max_abs;
        }
        float scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
        scales[o] = scale;
        for (int64_t i = 0; i < per_channel; i++) {
            float v = nearbyintf(row[i] / scale);
            v = v >= -127.0f ? (v <= 127.0f ? v : 127.0f) : -127.0f; // NaN: -127, as before
            q[o * per_channel + i] = (int8_t)v;
        }
    }
}

void dequantize_weights_s8(const int8_t *q, const float *scales, int64_t out_channels,
                           int64_t per_channel, float *w) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < out_channels; o++)
        for (int64_t i = 0; i < per_channel; i++)
            w[o * per_channel + i] = (float)q[o * per_channel + i] * scales[o];
}

void activation_stats_init(activation_stats *s) {
    memset(s, 0, sizeof *s);
    s->min = INFINITY;
    s->max = -INFINITY;
}

static int64_t bin_of(const activation_stats *s, double v) {
    int64_t bin = (int64_t)((v + s->range) / (2.0 * s->range) * ACTIVATION_HISTOGRAM_BINS);
    return bin < 0 ? 0 : bin >= ACTIVATION_HISTOGRAM_BINS ? ACTIVATION_HISTOGRAM_BINS - 1 : bin;
}

// Doubles the histogram's range: bins 2k and 2k+1 of the old range become one bin of the new,
// placed in the middle half of the new histogram.
static void widen(activation_stats *s) {
    uint64_t merged[ACTIVATION_HISTOGRAM_BINS] = {0};
    for (int i = 0; i < ACTIVATION_HISTOGRAM_BINS; i++)
        merged[ACTIVATION_HISTOGRAM_BINS / 4 + i / 2] += s->bins[i];
    memcpy(s->bins, merged, sizeof merged);
    s->range *= 2.0;
}

void activation_stats_add(activation_stats *s, const float *x, int64_t n) {
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (lo > hi) return; // nothing finite
    s->min = lo < s->min ? lo : s->min;
    s->max = hi > s->max ? hi : s->max;
    double extent = fmax(fabs(lo), fabs(hi));
    if (s->range == 0.0) {
        if (extent == 0.0) {
            s->count += (uint64_t)n; // all zeros: counted, binned once a range exists
            return;
        }
        s->range = extent;
        // The zeros seen before any range existed belong in the middle bin.
        s->bins[ACTIVATION_HISTOGRAM_BINS / 2] += s->count;
    }
    while (extent > s->range) widen(s);
    for (int64_t i = 0; i < n; i++)
        if (isfinite(x[i])) s->bins[bin_of(s, x[i])]++;
    s->count += (uint64_t)n;
}

void activation_stats_range(const activation_stats *s, activation_range_method method,
                            double percentile, float *lo, float *hi) {
    double low = s->count ? s->min : 0.0, high = s->count ? s->max : 0.0;
    if (method == ACTIVATION_RANGE_PERCENTILE && s->range > 0.0 && percentile < 100.0) {
        uint64_t total = 0;
        for (int i = 0; i < ACTIVATION_HISTOGRAM_BINS; i++) total += s->bins[i];
        uint64_t tail = (uint64_t)((100.0 - percentile) / 100.0 * (double)total);
        double width = 2.0 * s->range / ACTIVATION_HISTOGRAM_BINS;
        uint64_t seen = 0;
        int first = 0, last = ACTIVATION_HISTOGRAM_BINS - 1;
        while (first < last && seen + s->bins[first] <= tail) seen += s->bins[first++];
        seen = 0;
        while (last > first && seen + s->bins[last] <= tail) seen += s->bins[last--];
        // Bin edges, never beyond what was actually observed.
        low = fmax(low, -s->range + first * width);
        high = fmin(high, -s->range + (last + 1) * width);
    }
    if (low > 0.0) low = 0.0;
    if (high < 0.0) high = 0.0;
    if (high - low < 1e-8) high = low + 1e-8;
    *lo = (float)low;
    *hi = (float)high;
}

void activation_quant_params_u8(float lo, float hi, float *scale, int32_t *zero_point) {
    if (lo > 0.0f) lo = 0.0f;
    if (hi < 0.0f) hi = 0.0f;
    float s = (hi - lo) / 255.0f;
    if (!(s > 0.0f)) s = 1.0f;
    float zp = nearbyintf(-lo / s);
    *scale = s;
    *zero_point = (int32_t)fminf(255.0f, fmaxf(0.0f, zp));
}
