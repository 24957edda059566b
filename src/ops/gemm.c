#include "ops/gemm.h"

#include <dnnl.h>
#include <omp.h>

#include "ops/cpu.h"

// Blocks of C that one thread computes with a single-threaded sgemm. oneDNN's own threading may
// split the sum over K between threads for some shapes (64x32 with K = 128 does, measured), so its
// result would depend on the thread count; a fixed grid of whole-K blocks does not, and the sum
// for each value of C is the same whatever the thread count.
#define BLOCK_ROWS 256
#define BLOCK_COLUMNS 256

void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc) {
    if (m == 0 || n == 0) return;
    cpu_features_get(); // applies LCM_NO_AVX512 to oneDNN before its first sgemm
    // Arguments are always valid here (callers size them from tensor shapes), so the status can
    // only report an internal bug; the product is still well defined when k == 0.
    char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    if (omp_in_parallel()) { // the caller splits the work: oneDNN runs on this thread alone
        dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    int64_t row_blocks = (m + BLOCK_ROWS - 1) / BLOCK_ROWS;
    int64_t column_blocks = (n + BLOCK_COLUMNS - 1) / BLOCK_COLUMNS;
    // Even a single block runs inside the parallel region, so that oneDNN sees it and does not
    // thread (and split) it itself.
    #pragma omp parallel for collapse(2) schedule(static)
    for (int64_t rb = 0; rb < row_blocks; rb++)
        for (int64_t cb = 0; cb < column_blocks; cb++) {
            int64_t r0 = rb * BLOCK_ROWS, c0 = cb * BLOCK_COLUMNS;
            int64_t rows = m - r0 < BLOCK_ROWS ? m - r0 : BLOCK_ROWS;
            int64_t columns = n - c0 < BLOCK_COLUMNS ? n - c0 : BLOCK_COLUMNS;
            // op(A) rows r0.. and op(B) columns c0.., in whichever storage order each has
            const float *a_block = trans_a ? a + r0 : a + r0 * lda;
            const float *b_block = trans_b ? b + c0 * ldb : b + c0;
            dnnl_sgemm(ta, tb, rows, columns, k, alpha, a_block, lda, b_block, ldb, beta,
                       c + r0 * ldc + c0, ldc);
        }
}
