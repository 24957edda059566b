#include "ops/bf16.h"

#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "ops/cpu.h"

static inline uint16_t round_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); // quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

float bf16_to_f32(uint16_t v) {
    uint32_t bits = (uint32_t)v << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

// vcvtneps2bf16 rounds to nearest even like round_to_bf16.
__attribute__((target("avx512f,avx512bf16"))) static void convert_avx512(const float *src,
                                                                            uint16_t *dst,
                                                                            int64_t count) {
    int64_t vectors = count / 16;
    #pragma omp parallel for schedule(static)
    for (int64_t v = 0; v < vectors; v++) {
        __m256bh packed = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + v * 16));
        _mm256_storeu_si256((__m256i *)(dst + v * 16), (__m256i)packed);
    }
    for (int64_t i = vectors * 16; i < count; i++) dst[i] = round_to_bf16(src[i]);
}

void bf16_from_f32(const float *src, uint16_t *dst, int64_t count) {
    if (cpu_has_avx512_bf16()) {
        convert_avx512(src, dst, count);
        return;
    }
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) dst[i] = round_to_bf16(src[i]);
}
