// Vectorised activation kernels over contiguous spans (single-threaded: callers parallelise), in
// AVX-512 or AVX2 as the CPU allows. exp is a degree-6 polynomial after range reduction (relative
// error about 2e-7) and erf the Abramowitz-Stegun 7.1.26 form (absolute error < 1.5e-7), both far
// inside the golden tolerances; the reference kernels keep libm's expf/erff.
#ifndef LCM_OPS_ELEMENTWISE_SIMD_H
#define LCM_OPS_ELEMENTWISE_SIMD_H

#include <stdbool.h>
#include <stdint.h>

// x[i] = x[i] * sigmoid(x[i])
void silu_span(float *x, int64_t count);
// out[i] = (x[i] - mean[i]) * rstd[i] * weight[i] + bias[i], then SiLU when then_silu: one pixel
// of a channels-last GroupNorm. out may be x.
void normalize_span_simd(const float *x, const float *mean, const float *rstd, const float *weight,
                         const float *bias, float *out, int64_t count, bool then_silu);
// out[i] = hidden[i] * gelu(gate[i]) with the exact (erf) GELU.
void gelu_mul_span(const float *hidden, const float *gate, float *out, int64_t count);

#endif
