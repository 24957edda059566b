// Plain C that the compiler vectorises, compiled for AVX-512 and for the baseline (see
// elementwise_simd.c for why not intrinsics).
#if defined(__GNUC__) && !defined(__clang__)
// Without FP-exception semantics GCC if-converts the clamps and selects, so AVX2 vectorises too
// (results are unchanged: nothing here reads the FP exception flags).
#pragma GCC optimize("no-trapping-math")
#endif
#include "ops/bf16.h"

#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

// Round to nearest even on the upper 16 bits; NaN stays a (quiet) NaN.
static inline uint16_t round_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    uint32_t nan = (bits >> 16) | 0x40u;
    return (uint16_t)((bits & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

float bf16_to_f32(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

CLONES static void convert_span(const float *restrict src, uint16_t *restrict dst, int64_t count) {
    #pragma omp simd
    for (int64_t i = 0; i < count; i++) dst[i] = round_to_bf16(src[i]);
}

#define SPAN 16384

void bf16_from_f32(const float *src, uint16_t *dst, int64_t count) {
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i += SPAN) convert_span(src + i, dst + i, count - i < SPAN ? count - i : SPAN);
}
