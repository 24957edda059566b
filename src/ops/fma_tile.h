// The register tile shared by the direct convolution (conv_direct.c) and the direct linear layer
// (linear_direct.c): 6 rows (output pixels or tokens) x 16 output channels in 12 AVX2
// accumulators, fed by one broadcast input value and 2 weight vectors at a time (15 of the 16 ymm
// registers). The functions are always inlined into AVX2 + FMA code, where the tile stays in
// registers.
#ifndef LCM_OPS_FMA_TILE_H
#define LCM_OPS_FMA_TILE_H

#include <immintrin.h>
#include <stdint.h>

#define FMA_TILE_ROWS 6
#define FMA_TILE_COLUMNS 16

typedef struct fma_tile {
    __m256 lo[FMA_TILE_ROWS], hi[FMA_TILE_ROWS]; // columns 0..7 and 8..15 of each row
} fma_tile;

__attribute__((target("avx2,fma"), always_inline)) static inline void fma_tile_zero(fma_tile *t) {
    for (int r = 0; r < FMA_TILE_ROWS; r++) t->lo[r] = t->hi[r] = _mm256_setzero_ps();
}

// Rows of 16 floats `stride` floats apart (0: one row for all).
__attribute__((target("avx2,fma"), always_inline)) static inline void
fma_tile_load(fma_tile *t, const float *src, int64_t stride) {
    for (int r = 0; r < FMA_TILE_ROWS; r++) {
        t->lo[r] = _mm256_loadu_ps(src + r * stride);
        t->hi[r] = _mm256_loadu_ps(src + r * stride + 8);
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
fma_tile_store(const fma_tile *t, float *dst, int64_t stride) {
    for (int r = 0; r < FMA_TILE_ROWS; r++) {
        _mm256_storeu_ps(dst + r * stride, t->lo[r]);
        _mm256_storeu_ps(dst + r * stride + 8, t->hi[r]);
    }
}

// t[r][0..15] += sum over i in [0, count) of a[r][i] * w[i][0..15], the terms added one by one in
// order of i. w is 32-byte aligned, 16 floats per i.
__attribute__((target("avx2,fma"), always_inline)) static inline void
fma_tile_add(fma_tile *t, const float *const a[FMA_TILE_ROWS], const float *w, int64_t count) {
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    __m256 c0l = t->lo[0], c0h = t->hi[0], c1l = t->lo[1], c1h = t->hi[1];
    __m256 c2l = t->lo[2], c2h = t->hi[2], c3l = t->lo[3], c3h = t->hi[3];
    __m256 c4l = t->lo[4], c4h = t->hi[4], c5l = t->lo[5], c5h = t->hi[5];
    #pragma GCC unroll 4
    for (int64_t i = 0; i < count; i++, w += FMA_TILE_COLUMNS) {
        __m256 w_lo = _mm256_load_ps(w), w_hi = _mm256_load_ps(w + 8), x;
        x = _mm256_broadcast_ss(a0 + i);
        c0l = _mm256_fmadd_ps(x, w_lo, c0l);
        c0h = _mm256_fmadd_ps(x, w_hi, c0h);
        x = _mm256_broadcast_ss(a1 + i);
        c1l = _mm256_fmadd_ps(x, w_lo, c1l);
        c1h = _mm256_fmadd_ps(x, w_hi, c1h);
        x = _mm256_broadcast_ss(a2 + i);
        c2l = _mm256_fmadd_ps(x, w_lo, c2l);
        c2h = _mm256_fmadd_ps(x, w_hi, c2h);
        x = _mm256_broadcast_ss(a3 + i);
        c3l = _mm256_fmadd_ps(x, w_lo, c3l);
        c3h = _mm256_fmadd_ps(x, w_hi, c3h);
        x = _mm256_broadcast_ss(a4 + i);
        c4l = _mm256_fmadd_ps(x, w_lo, c4l);
        c4h = _mm256_fmadd_ps(x, w_hi, c4h);
        x = _mm256_broadcast_ss(a5 + i);
        c5l = _mm256_fmadd_ps(x, w_lo, c5l);
        c5h = _mm256_fmadd_ps(x, w_hi, c5h);
    }
    t->lo[0] = c0l, t->hi[0] = c0h, t->lo[1] = c1l, t->hi[1] = c1h;
    t->lo[2] = c2l, t->hi[2] = c2h, t->lo[3] = c3l, t->hi[3] = c3h;
    t->lo[4] = c4l, t->hi[4] = c4h, t->lo[5] = c5l, t->hi[5] = c5h;
}

#endif
