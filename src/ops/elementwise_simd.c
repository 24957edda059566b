// The loops are plain C written so that the compiler vectorises them (no branches, no libm calls;
// `omp simd` asks for it whatever the optimisation level), compiled once per instruction set by
// target_clones and picked at load time by the CPU's features: the AVX-512 and AVX2 versions come
// from the same source, so the AVX2 one tested on any machine checks the arithmetic of both.
#if defined(__GNUC__) && !defined(__clang__)
// Without FP-exception semantics GCC if-converts the clamps and selects, so AVX2 vectorises too
// (results are unchanged: nothing here reads the FP exception flags).
#pragma GCC optimize("no-trapping-math")
#endif
#include "ops/elementwise_simd.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/cpu.h"

#if defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

// e^x for x in [-87, 88] (clamped): x = n ln2 + r with |r| <= ln2/2 (n rounded with the 1.5 * 2^23
// trick), e^r by its degree-6 Taylor polynomial (relative error < 2e-7 there), 2^n by building the
// float's exponent bits.
static inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float round_magic = 12582912.0f; // 1.5 * 2^23
    float n = (x * 1.44269504088896341f + round_magic) - round_magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

// erf(x) = sign(x) (1 - (a1 t + ... + a5 t^5) e^(-x^2)), t = 1 / (1 + p |x|) (Abramowitz and
// Stegun 7.1.26, absolute error < 1.5e-7).
static inline float erf_poly(float x) {
    float ax = fabsf(x);
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    float y = 1.0f - p * t * exp_poly(-ax * ax);
    return copysignf(y, x);
}

CLONES static void silu_vectorised(float *x, int64_t count) {
    #pragma omp simd
    for (int64_t i = 0; i < count; i++) x[i] = x[i] / (1.0f + exp_poly(-x[i]));
}

CLONES static void gelu_mul_vectorised(const float *restrict hidden, const float *restrict gate,
                                       float *restrict out, int64_t count) {
    #pragma omp simd
    for (int64_t i = 0; i < count; i++) {
        float g = gate[i];
        out[i] = hidden[i] * (g * (0.5f + 0.5f * erf_poly(g * 0.70710678118654752f)));
    }
}

// GroupNorm's normalisation of one pixel's channels, with its SiLU in the same loop: the values
// never leave the registers in between (a separate SiLU pass over a span just written with
// narrower stores stalled on every load: store forwarding fails from two 32-byte stores to one
// 64-byte load, 9% of a VAE decode's samples on a Xeon). x and out may be the same array.
CLONES static void normalize_vectorised(const float *x, const float *mean, const float *rstd,
                                        const float *weight, const float *bias, float *out,
                                        int64_t count, int then_silu) {
    if (then_silu) {
        #pragma omp simd
        for (int64_t i = 0; i < count; i++) {
            float v = (x[i] - mean[i]) * rstd[i] * weight[i] + bias[i];
            out[i] = v / (1.0f + exp_poly(-v));
        }
    } else {
        #pragma omp simd
        for (int64_t i = 0; i < count; i++) out[i] = (x[i] - mean[i]) * rstd[i] * weight[i] + bias[i];
    }
}

void silu_span(float *x, int64_t count) { silu_vectorised(x, count); }

void normalize_span_simd(const float *x, const float *mean, const float *rstd, const float *weight,
                         const float *bias, float *out, int64_t count, bool then_silu) {
    normalize_vectorised(x, mean, rstd, weight, bias, out, count, then_silu);
}

void gelu_mul_span(const float *hidden, const float *gate, float *out, int64_t count) {
    gelu_mul_vectorised(hidden, gate, out, count);
}
