// The int8 fast path of a quantized conv2d/linear layer (ops/layer_quant.h): oneDNN primitives
// with a u8 source (per-tensor zero point), s8 weights (per output channel) and a float32
// destination, dst = weight_scale[o] * input_scale * sum((q_x - zero_point) * q_w) + bias[o].
// The input is quantized exactly as the reference path's fake quantization does, so both paths see
// the same integers and differ only by float rounding. oneDNN 2.6 implements these primitives on
// AVX2 too (matmul "gemm:jit", NHWC convolution "jit_uni_int8:avx2"), but without VNNI its u8 x s8
// products are summed pairwise in saturating 16-bit arithmetic (255 * 127 * 2 > 32767), so there
// the weights are halved to 7 bits at packing. Measured on Zen 3 (AVX2, 2 threads): 3x3 convs
// 320/640/1280 channels 1.7-2.3x faster than the float32 fast path; tiny-LCM images with 7-bit
// weights as close to float32 (PSNR 44.8-46 dB) as the reference int8 path (45.6-46.3 dB).
#ifndef LCM_OPS_INT8_LAYER_H
#define LCM_OPS_INT8_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "lcm.h"

typedef struct int8_layer int8_layer;


// From float32 weights ([out, in] for linear, kernel = 0; [out, in, k, k] for conv) that were
// stored as s8 per output channel (re-quantizing them recovers the stored integers), and the
// layer's input parameters. *out is owned by the caller (int8_layer_free).
lcm_status int8_layer_new(const float *weight, int in, int out, int kernel, int stride, int padding,
                          float input_scale, int32_t input_zero_point, int8_layer **out_layer);
void int8_layer_free(int8_layer *layer);

// linear: x [..., in] -> [..., out]; conv: x [n, in, h, w] (either layout) -> [n, out, oh, ow]
// NHWC. bias may be NULL. NULL (error set) on failure or when x is NULL.
tensor *int8_layer_forward(int8_layer *layer, const tensor *x, const float *bias);

// The oneDNN implementation of the layer's last primitive ("" before the first run).
const char *int8_layer_impl(const int8_layer *layer);

#endif
