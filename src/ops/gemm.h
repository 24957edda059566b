// Row-major single-precision matrix product, the one place the reference path calls into a BLAS:
// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, op = transpose when trans_* is true.
// Called outside a parallel region it splits C into a fixed grid of blocks over the OpenMP threads
// (the result does not depend on their number); inside one it runs on the calling thread only.
#ifndef LCM_OPS_GEMM_H
#define LCM_OPS_GEMM_H

#include <stdbool.h>
#include <stdint.h>

void gemm_f32(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc);

#endif
