// bfloat16 conversion for the bf16 kernels (AVX512-BF16 where the CPU has it).
#ifndef LCM_OPS_BF16_H
#define LCM_OPS_BF16_H

#include <stdint.h>

// dst[i] = src[i] rounded to the nearest bf16 (ties to even; NaN stays NaN). Parallel.
void bf16_from_f32(const float *src, uint16_t *dst, int64_t count);
float bf16_to_f32(uint16_t v);

#endif
