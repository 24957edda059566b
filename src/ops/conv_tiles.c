// The register tiles the direct convolution and its Winograd path run on: a 12-pixel x 16-to-64-
// channel block of sums (ops/fma_tile.h), one implementation per instruction set, the same bits
// from each.
#include "ops/conv_direct_internal.h"

#include "ops/cpu.h"

__attribute__((target("avx2,fma"), noinline)) static void
tile_avx2(const float *const *rows, int taps, int in, int64_t k0, int64_t k1, const float *weight,
          int64_t block_stride, int nb, float *tile, int64_t row_stride, int64_t block_offset,
          bool from_zero) {
    for (int b = 0; b < nb; b++)
        for (int half = 0; half < TILE_PIXELS / FMA_HALF_ROWS; half++) {
            const float *const *half_rows = rows + half * FMA_HALF_ROWS * taps;
            float *half_tile = tile + half * FMA_HALF_ROWS * row_stride + b * block_offset;
            fma_half_tile sums;
            if (from_zero) fma_half_zero(&sums);
            else fma_half_load(&sums, half_tile, row_stride);
            for (int64_t t = k0 / in; t * in < k1; t++) {
                int64_t first = k0 > t * in ? k0 - t * in : 0, end = k1 - t * in < in ? k1 - t * in : in;
                const float *a[FMA_HALF_ROWS];
                for (int p = 0; p < FMA_HALF_ROWS; p++) a[p] = half_rows[p * taps + t] + first;
                fma_half_add(&sums, a, weight + b * block_stride + (t * in + first) * TILE_CHANNELS, end - first);
            }
            fma_half_store(&sums, half_tile, row_stride);
        }
}

// tile_avx512 for a constant number of blocks.
__attribute__((target(FMA_AVX512), always_inline)) static inline void
tile_avx512_blocks(const int nb, const float *const *rows, int taps, int in, int64_t k0, int64_t k1,
                   const float *weight, int64_t block_stride, float *tile, int64_t row_stride,
                   int64_t block_offset, bool from_zero) {
    const int pass_rows = fma_wide_rows(nb);
    for (int r0 = 0; r0 < TILE_PIXELS; r0 += pass_rows) {
        float *pass_tile = tile + r0 * row_stride;
        fma_wide_tile sums;
        fma_wide_load(&sums, pass_rows, nb, from_zero ? NULL : pass_tile, row_stride, block_offset);
        for (int64_t t = k0 / in; t * in < k1; t++) {
            int64_t first = k0 > t * in ? k0 - t * in : 0, end = k1 - t * in < in ? k1 - t * in : in;
            const float *a[TILE_PIXELS];
            for (int p = 0; p < pass_rows; p++) a[p] = rows[(r0 + p) * taps + t] + first;
            fma_wide_add(&sums, pass_rows, nb, a, weight + (t * in + first) * TILE_CHANNELS, block_stride, end - first);
        }
        fma_wide_store(&sums, pass_rows, nb, pass_tile, row_stride, block_offset);
    }
}

__attribute__((target(FMA_AVX512), noinline)) static void
tile_avx512(const float *const *rows, int taps, int in, int64_t k0, int64_t k1, const float *weight,
            int64_t block_stride, int nb, float *tile, int64_t row_stride, int64_t block_offset,
            bool from_zero) {
    switch (nb) {
    case 1: tile_avx512_blocks(1, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    case 2: tile_avx512_blocks(2, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    case 3: tile_avx512_blocks(3, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    default: tile_avx512_blocks(4, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    }
}

conv_tile_fn *conv_direct_tile_kernel(void) { return cpu_has_avx512() ? tile_avx512 : tile_avx2; }

bool conv_direct_scratch_ready(bool allocated, int *failed) {
    if (!allocated) {
        #pragma omp atomic write
        *failed = 1;
    }
    return allocated;
}
