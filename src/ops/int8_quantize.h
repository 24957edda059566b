// The arithmetic of 8-bit post-training quantization: weights per output channel, symmetric, s8;
// activations per tensor, asymmetric, u8 — the forms oneDNN's VNNI int8 kernels take.
//
// Weights: scale[o] = max |w[o, :]| / 127 and q = round(w / scale) in [-127, 127] (-128 unused, so
// the range is symmetric and negation never overflows).
// Activations: statistics are gathered over calibration runs (activation_stats), then a range
// [lo, hi] is chosen (the observed min/max, or percentiles that clip rare outliers) and mapped onto
// u8: scale = (hi - lo) / 255, zero_point = round(-lo / scale), so that 0.0 is exactly
// representable (zero padding stays exact).
#ifndef LCM_OPS_INT8_QUANTIZE_H
#define LCM_OPS_INT8_QUANTIZE_H

#include <stdint.h>

#include "lcm.h"

// w [out_channels, per_channel] -> q (same size) and scales [out_channels]. An all-zero channel
// gets scale 1 (any scale represents it exactly). Never fails.
void quantize_weights_s8(const float *w, int64_t out_channels, int64_t per_channel, int8_t *q,
                         float *scales);
// The inverse: w = q * scale[o].
void dequantize_weights_s8(const int8_t *q, const float *scales, int64_t out_channels,
                           int64_t per_channel, float *w);

#define ACTIVATION_HISTOGRAM_BINS 4096

// Running statistics of one tensor's values over many calls: exact min/max, and a histogram over a
// symmetric range [-range, range] that doubles (merging bins pairwise) whenever a value falls
// outside it, so memory stays fixed however many values are seen.
typedef struct activation_stats {
    double min, max;
    uint64_t count;
    double range; // 0 until the first non-zero value
    uint64_t bins[ACTIVATION_HISTOGRAM_BINS];
} activation_stats;

void activation_stats_init(activation_stats *s);
void activation_stats_add(activation_stats *s, const float *x, int64_t n);

typedef enum activation_range_method {
    ACTIVATION_RANGE_MINMAX = 0,     // [min, max] as observed
    ACTIVATION_RANGE_PERCENTILE = 1, // [p-th lowest, p-th highest] from the histogram
} activation_range_method;

// The range to quantize to. `percentile` (e.g. 99.99) is used by ACTIVATION_RANGE_PERCENTILE;
// the range always contains 0 and is never empty.
void activation_stats_range(const activation_stats *s, activation_range_method method,
                            double percentile, float *lo, float *hi);

// u8 parameters for [lo, hi] (lo <= 0 <= hi): x ~ scale * (q - zero_point), q in [0, 255].
void activation_quant_params_u8(float lo, float hi, float *scale, int32_t *zero_point);

#endif
