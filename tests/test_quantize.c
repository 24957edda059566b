// The int8 quantization arithmetic (src/ops/int8_quantize.c): weight round trips, activation
// statistics with a growing histogram, and the ranges and u8 parameters derived from them.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/int8_quantize.h"
#include "testutil.h"

static float lcg_uniform(unsigned *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / 16777216.0f; // [0, 1)
}

static void test_weights(void) {
    enum { OUT = 5, PER = 37 };
    float w[OUT * PER], back[OUT * PER], scales[OUT];
    int8_t q[OUT * PER];
    unsigned seed = 3;
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < PER; i++)
            w[o * PER + i] = o == 2 ? 0.0f : (lcg_uniform(&seed) * 2 - 1) * (float)(o + 1) * 0.1f;
    w[4 * PER + 7] = -0.9f; // the channel's largest magnitude is negative
    quantize_weights_s8(w, OUT, PER, q, scales);
    dequantize_weights_s8(q, scales, OUT, PER, back);
    for (int o = 0; o < OUT; o++) {
        float max_abs = 0, worst = 0;
        for (int i = 0; i < PER; i++) {
            max_abs = fmaxf(max_abs, fabsf(w[o * PER + i]));
            worst = fmaxf(worst, fabsf(back[o * PER + i] - w[o * PER + i]));
            CHECK(q[o * PER + i] >= -127, "q = -128 used");
        }
        float want_scale = max_abs > 0 ? max_abs / 127 : 1.0f;
        CHECK(fabsf(scales[o] - want_scale) <= 1e-7f * want_scale, "channel %d scale %g, want %g", o,
              scales[o], want_scale);
        CHECK(worst <= scales[o] * 0.5f * 1.0001f, "channel %d round-trip error %g > scale/2 %g", o,
              worst, scales[o] / 2);
    }
    CHECK(q[4 * PER + 7] == -127, "the extreme value maps to -127, got %d", q[4 * PER + 7]);
    for (int i = 0; i < PER; i++) CHECK(q[2 * PER + i] == 0 && back[2 * PER + i] == 0.0f, "zero channel");
}

static void test_stats(void) {
    static activation_stats s;
    activation_stats_init(&s);
    float lo, hi;
    // Nothing seen yet: a tiny range around 0, never an empty one.
    activation_stats_range(&s, ACTIVATION_RANGE_MINMAX, 100, &lo, &hi);
    CHECK(lo == 0.0f && hi > 0.0f, "empty stats range [%g, %g]", lo, hi);

    // Zeros first (no range yet), then values in [-1, 3) arriving in chunks of growing magnitude,
    // so the histogram must widen several times.
    float zeros[100] = {0};
    activation_stats_add(&s, zeros, 100);
    unsigned seed = 11;
    float chunk[1000];
    for (int round = 0; round < 4; round++) {
        float span = 0.25f * (float)(1 << round); // 0.25, 0.5, 1, 2 -> values in [-span/2, span*1.5)
        for (int i = 0; i < 1000; i++) chunk[i] = (lcg_uniform(&seed) * 2 - 0.5f) * span;
        activation_stats_add(&s, chunk, 1000);
    }
    float nan_and_inf[3] = {NAN, INFINITY, -INFINITY};
    activation_stats_add(&s, nan_and_inf, 3); // ignored by min/max and the histogram
    uint64_t binned = 0;
    for (int i = 0; i < ACTIVATION_HISTOGRAM_BINS; i++) binned += s.bins[i];
    CHECK(binned == 4100, "histogram holds %llu values, want 4100 (every finite value, zeros too)",
          (unsigned long long)binned);
    CHECK(s.min >= -1.0 && s.min < -0.9 && s.max < 3.0 && s.max > 2.9, "min %g max %g", s.min, s.max);
    activation_stats_range(&s, ACTIVATION_RANGE_MINMAX, 100, &lo, &hi);
    CHECK(lo == (float)s.min && hi == (float)s.max, "minmax range [%g, %g]", lo, hi);
    activation_stats_range(&s, ACTIVATION_RANGE_PERCENTILE, 100, &lo, &hi);
    CHECK(lo == (float)s.min && hi == (float)s.max, "percentile 100 = minmax, got [%g, %g]", lo, hi);

    // Rare outliers: the 99.9th percentile ignores them, min/max does not.
    activation_stats_init(&s);
    for (int i = 0; i < 1000; i++) chunk[i] = lcg_uniform(&seed);
    for (int r = 0; r < 10; r++) activation_stats_add(&s, chunk, 1000);
    float outliers[3] = {500.0f, 800.0f, -300.0f};
    activation_stats_add(&s, outliers, 3);
    activation_stats_range(&s, ACTIVATION_RANGE_PERCENTILE, 99.9, &lo, &hi);
    double width = 2 * s.range / ACTIVATION_HISTOGRAM_BINS;
    CHECK(hi >= 0.99f && hi <= 1.0 + width && lo <= 0.0f && lo >= -width,
          "percentile range [%g, %g] should be about [0, 1] (bin width %g)", lo, hi, width);
    activation_stats_range(&s, ACTIVATION_RANGE_MINMAX, 100, &lo, &hi);
    CHECK(lo == -300.0f && hi == 800.0f, "minmax with outliers [%g, %g]", lo, hi);
}

static void test_u8_params(void) {
    float scale;
    int32_t zp;
    activation_quant_params_u8(-1.0f, 3.0f, &scale, &zp);
    CHECK(fabsf(scale - 4.0f / 255) < 1e-9f && zp == 64, "[-1,3]: scale %g zp %d", scale, zp);
    activation_quant_params_u8(0.0f, 6.0f, &scale, &zp); // after ReLU-like ops: zero point 0
    CHECK(zp == 0 && fabsf(scale - 6.0f / 255) < 1e-9f, "[0,6]: scale %g zp %d", scale, zp);
    activation_quant_params_u8(-2.0f, 0.0f, &scale, &zp);
    CHECK(zp == 255, "[-2,0]: zp %d", zp);
    // Ranges that exclude 0 are widened to include it.
    activation_quant_params_u8(1.0f, 2.0f, &scale, &zp);
    CHECK(zp == 0 && fabsf(scale - 2.0f / 255) < 1e-9f, "[1,2]: scale %g zp %d", scale, zp);
}

int main(void) {
    test_weights();
    test_stats();
    test_u8_params();
    return test_finish();
}
