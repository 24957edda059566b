// The int8 fast path of a quantized conv2d/linear layer (ops/layer_quant.h): u8 source (per-tensor
// zero point), s8 weights (per output channel), float32 destination,
//     dst = (float)sum((q_x - zero_point) * q_w) * (weight_scale[o] * input_scale), then + bias[o].
// The input is quantized exactly as the reference path's fake quantization does, so both paths see
// the same integers and differ only by float rounding.
//
// Two implementations compute the same bits (tests/test_int8.c checks it):
//  - ours (ops/int8_gemm.h): exact int32 sums on AVX-512 VNNI and on AVX2 (no 16-bit saturation),
//    the default on every CPU;
//  - oneDNN's u8 x s8 primitives, a candidate only where the CPU has VNNI: without it oneDNN 2.6
//    sums pairs of u8 x s8 products in saturating 16-bit arithmetic (255 * 127 * 2 > 32767), which
//    gave other images than a VNNI CPU (the 7-bit weights that dodged it are gone).
#ifndef LCM_OPS_INT8_LAYER_H
#define LCM_OPS_INT8_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "lcm.h"

typedef struct int8_layer int8_layer;


typedef enum int8_kernel {
    INT8_KERNEL_AUTO = 0, // the default: ours (see the measurements in ops/int8_layer.c)
    INT8_KERNEL_OURS,     // ops/int8_gemm.h: VNNI or AVX2, whichever cpu.h shows at each call
    INT8_KERNEL_ONEDNN,   // oneDNN's u8 x s8 primitives; ours where the CPU has no VNNI
} int8_kernel;

// The kernel a layer asked to run `asked` gets on this CPU (as cpu.h shows it now).
int8_kernel int8_kernel_for_cpu(int8_kernel asked);

// From the weights as stored: s8 [out, in] (linear, kernel = 0) or [out, in, k, k] (conv) with
// per-output-channel scales [out] (both only read: the layer keeps its packed copy), and the
// layer's input parameters. *out is owned by the caller (int8_layer_free).
lcm_status int8_layer_new_s8(const int8_t *weight, const float *weight_scale, int in, int out,
                             int kernel, int stride, int padding, float input_scale,
                             int32_t input_zero_point, int8_kernel choice, int8_layer **out_layer);
// From float32 weights, quantized per output channel first (quantize_weights_s8).
lcm_status int8_layer_new(const float *weight, int in, int out, int kernel, int stride, int padding,
                          float input_scale, int32_t input_zero_point, int8_kernel choice,
                          int8_layer **out_layer);
void int8_layer_free(int8_layer *layer);

// linear: x [..., in] -> [..., out]; conv: x [n, in, h, w] (either layout) -> [n, out, oh, ow]
// NHWC. bias may be NULL. NULL (error set) on failure or when x is NULL.
tensor *int8_layer_forward(int8_layer *layer, const tensor *x, const float *bias);

// The oneDNN implementation of the layer's last primitive ("" before the first oneDNN run).
const char *int8_layer_impl(const int8_layer *layer);
// The kernel the layer was made for (OURS or ONEDNN; never AUTO).
int8_kernel int8_layer_kernel(const int8_layer *layer);

#endif
