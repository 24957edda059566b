// Multi-head scaled dot-product attention in two precisions and two kernels.
//
// `attention()` (src/ops/ops.h) is attention_ex(..., LCM_PRECISION_FP32). The kernels:
//  - FLASH: fused and tiled (flash-attention style). Each task takes one (batch, head, block of 64
//    query rows) and walks the keys 64 at a time, keeping a running row maximum and row sum (online
//    softmax), so only a 64x64 score tile exists at once per thread. fp32 micro-kernels exist for
//    AVX-512 and for AVX2+FMA (chosen at run time); the bf16 variant (AVX-512 with AVX512-BF16 only)
//    computes Q·Kᵀ and P·V with bf16 dot products (_mm512_dpbf16_ps) on inputs rounded to bfloat16,
//    with fp32 softmax and fp32 accumulation.
//  - GEMM_TILES: per (batch, head, 256 query rows), scores = Q Kᵀ and out = P V by oneDNN sgemm with
//    a separate softmax pass; also the portable path for CPUs without AVX2/FMA.
// ATTENTION_AUTO picks, by measurement on the 2-core development VM (AVX2 only; `lcm bench
// --attention`, see BENCHMARKS.md): in fp32, FLASH for head sizes up to 96 (the UNet's 40 and 80,
// where the big 4096- and 1024-token self-attentions are) and GEMM_TILES above (d = 160, the VAE's
// 512); in bf16, FLASH where the CPU has AVX512-BF16, else GEMM_TILES (then fp32 arithmetic).
// The AVX-512 fp32 and bf16 paths compile everywhere but have not yet run on AVX-512 hardware.
#ifndef LCM_OPS_ATTENTION_H
#define LCM_OPS_ATTENTION_H

#include <stdbool.h>

#include "core/tensor.h"
#include "lcm.h"

typedef enum attention_kernel {
    ATTENTION_AUTO = 0,
    ATTENTION_FLASH = 1,
    ATTENTION_GEMM_TILES = 2,
} attention_kernel;

// q [B, Nq, C], k and v [B, Nk, C] with C = heads * d; softmax(q kᵀ / sqrt(d)) v per head ->
// [B, Nq, C]. `causal` masks keys after the query position. A NULL input returns NULL.
tensor *attention_ex(const tensor *q, const tensor *k, const tensor *v, int heads, bool causal,
                     lcm_precision precision);

// The same with an explicit kernel (tests and `lcm bench --attention`). FLASH on a CPU without the
// needed instructions (AVX2+FMA for fp32, AVX512-BF16 for bf16) fails with LCM_ERR_UNSUPPORTED;
// GEMM_TILES always computes in fp32.
tensor *attention_with_kernel(const tensor *q, const tensor *k, const tensor *v, int heads,
                              bool causal, lcm_precision precision, attention_kernel kernel);

// The kernel ATTENTION_AUTO stands for from now on, process-wide (ATTENTION_AUTO restores the
// choice by CPU). For benchmarks comparing kernels inside one process (`lcm bench
// --attention-kernel`); not thread-safe against concurrent attention calls.
void attention_set_default_kernel(attention_kernel kernel);

// Whether the FLASH kernel can run in `precision` on this CPU.
bool attention_flash_available(lcm_precision precision);

#endif
