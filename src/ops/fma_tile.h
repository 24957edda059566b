// The register tile shared by the direct convolution (conv_direct.c) and the direct linear layer
// (linear_direct.c): FMA_TILE_ROWS = 12 rows (output pixels or tokens) x 16 output channels,
// summed over a run of inputs with one broadcast input value per row and one row of 16 weights
// per input. Two implementations compute the very same bits, since every sum adds its terms one
// by one in the same order with fused multiply-adds; only their speed differs:
//  - AVX-512: 12 zmm accumulators, 16 columns each. Twelve independent sums hide the 4-cycle
//    latency of two FMA units (8 would do), and each weight vector loaded serves 12 FMAs.
//  - AVX2: two halves of 6 rows, each in 12 ymm accumulators (2 per row) fed by 2 weight vectors
//    and one broadcast value: 15 of the 16 ymm registers.
// The functions are always inlined into code compiled for their instruction set, where the tile
// stays in registers; callers pick one implementation per run (cpu_has_avx512()).
#ifndef LCM_OPS_FMA_TILE_H
#define LCM_OPS_FMA_TILE_H

#include <immintrin.h>
#include <stdint.h>

#define FMA_TILE_ROWS 12
#define FMA_TILE_COLUMNS 16
#define FMA_HALF_ROWS 6 // rows of one AVX2 half tile

// ---- AVX2: a half tile of 6 rows ---------------------------------------------------------------

typedef struct fma_half_tile {
    __m256 lo[FMA_HALF_ROWS], hi[FMA_HALF_ROWS]; // columns 0..7 and 8..15 of each row
} fma_half_tile;

__attribute__((target("avx2,fma"), always_inline)) static inline void fma_half_zero(fma_half_tile *t) {
    for (int r = 0; r < FMA_HALF_ROWS; r++) t->lo[r] = t->hi[r] = _mm256_setzero_ps();
}

// Rows of 16 floats `stride` floats apart (0: one row for all).
__attribute__((target("avx2,fma"), always_inline)) static inline void
fma_half_load(fma_half_tile *t, const float *src, int64_t stride) {
    for (int r = 0; r < FMA_HALF_ROWS; r++) {
        t->lo[r] = _mm256_loadu_ps(src + r * stride);
        t->hi[r] = _mm256_loadu_ps(src + r * stride + 8);
    }
}

__attribute__((target("avx2,fma"), always_inline)) static inline void
fma_half_store(const fma_half_tile *t, float *dst, int64_t stride) {
    for (int r = 0; r < FMA_HALF_ROWS; r++) {
        _mm256_storeu_ps(dst + r * stride, t->lo[r]);
        _mm256_storeu_ps(dst + r * stride + 8, t->hi[r]);
    }
}

// t[r][0..15] += sum over i in [0, count) of a[r][i] * w[i][0..15], the terms added one by one in
// order of i. w is 32-byte aligned, 16 floats per i.
__attribute__((target("avx2,fma"), always_inline)) static inline void
fma_half_add(fma_half_tile *t, const float *const a[FMA_HALF_ROWS], const float *w, int64_t count) {
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

// ---- AVX-512: 12 or 6 rows x 1 to 4 blocks of 16 columns --------------------------------------
//
// A call computes rows x nb blocks, the blocks' weights `block_stride` floats apart. With 3 or 4
// blocks, 6 rows x nb blocks take 24 accumulators fed by nb weight vectors and 6 broadcasts (10
// loads per 24 FMAs: the FMA units, not the loads, set the pace); with 1 or 2 blocks, 12 rows keep
// 12 or 24 sums in flight.

#define FMA_AVX512 "avx512f,avx512vl,avx2,fma"
#define FMA_MAX_BLOCKS 4

// The rows of one AVX-512 pass over nb blocks.
static inline int fma_wide_rows(int nb) { return nb <= 2 ? 12 : 6; }

typedef struct fma_wide_tile {
    __m512 c[FMA_TILE_ROWS][2]; // [row][block] with 12 rows, or [row][block] and [row + 6][block - 2]
} fma_wide_tile;

// Sum (row r, block b) lives at acc[r][b] for 12-row passes, acc[r][b % 2] / acc[r + 6][b / 2]
// otherwise; these helpers hide the difference. `rows` and `nb` are constants where inlined.
__attribute__((target(FMA_AVX512), always_inline)) static inline __m512 *
fma_wide_at(fma_wide_tile *t, const int rows, int r, int b) {
    return rows == 12 ? &t->c[r][b] : &t->c[r + 6 * (b / 2)][b % 2];
}

// Sums start from `start` (rows start_stride apart, blocks block_offset apart; start_stride 0:
// one row for all) or, with start NULL, from 0.
__attribute__((target(FMA_AVX512), always_inline)) static inline void
fma_wide_load(fma_wide_tile *t, const int rows, const int nb, const float *start, int64_t start_stride,
              int64_t block_offset) {
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nb; b++)
            *fma_wide_at(t, rows, r, b) = start ? _mm512_loadu_ps(start + r * start_stride + b * block_offset)
                                                : _mm512_setzero_ps();
}

__attribute__((target(FMA_AVX512), always_inline)) static inline void
fma_wide_store(fma_wide_tile *t, const int rows, const int nb, float *dst, int64_t stride, int64_t block_offset) {
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < nb; b++) _mm512_storeu_ps(dst + r * stride + b * block_offset, *fma_wide_at(t, rows, r, b));
}

// t[r][b][0..15] += sum over i in [0, count) of a[r][i] * w[b * block_stride + i * 16 + 0..15],
// the terms added one by one in order of i. w is 64-byte aligned.
__attribute__((target(FMA_AVX512), always_inline)) static inline void
fma_wide_add(fma_wide_tile *t, const int rows, const int nb, const float *const *a, const float *w,
             int64_t block_stride, int64_t count) {
    fma_wide_tile s = *t;
    #pragma GCC unroll 2
    for (int64_t i = 0; i < count; i++, w += FMA_TILE_COLUMNS) {
        __m512 wv[FMA_MAX_BLOCKS];
        #pragma GCC unroll 4
        for (int b = 0; b < nb; b++) wv[b] = _mm512_load_ps(w + b * block_stride);
        #pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            __m512 x = _mm512_set1_ps(a[r][i]);
            #pragma GCC unroll 4
            for (int b = 0; b < nb; b++) *fma_wide_at(&s, rows, r, b) = _mm512_fmadd_ps(x, wv[b], *fma_wide_at(&s, rows, r, b));
        }
    }
    *t = s;
}

#endif
