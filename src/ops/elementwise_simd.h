// Vectorised activation kernels over contiguous spans (single-threaded: callers parallelise).
// AVX-512 where the CPU has it (ops/cpu.h), plain loops with libm otherwise. The AVX-512 exp is a
// degree-6 polynomial after range reduction (within 2 ulp of expf) and erf the Abramowitz-Stegun
// 7.1.26 form (within 1.5e-7 absolute), both far inside the golden tolerances.
#ifndef LCM_OPS_ELEMENTWISE_SIMD_H
#define LCM_OPS_ELEMENTWISE_SIMD_H

#include <stdint.h>

// x[i] = x[i] * sigmoid(x[i])
void silu_span(float *x, int64_t count);
// out[i] = hidden[i] * gelu(gate[i]) with the exact (erf) GELU.
void gelu_mul_span(const float *hidden, const float *gate, float *out, int64_t count);

#endif
