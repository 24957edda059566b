// Per-layer 8-bit activation quantization and the calibration hook, shared by linear and conv2d.
//
// Every linear/conv2d layer remembers the weight prefix it was loaded from (its name). A model
// quantized by `lcm quantize` stores, beside a layer's I8 weight, the u8 parameters of its input:
// `NAME.input_scale` and `NAME.input_zero_point` (F32 scalars). A layer that has them computes on
// its input quantized and dequantized again, x -> scale * (clamp(round(x / scale) + zp, 0, 255) - zp),
// which is exactly what an int8 kernel with a u8 source sees: this reference path defines the int8
// numerics.
//
// Calibration: an observer set with ops_set_input_observer is called with the name and input of
// every layer forward before the layer computes (inputs may be NCHW or NHWC; statistics over the
// values do not care about order).
#ifndef LCM_OPS_LAYER_QUANT_H
#define LCM_OPS_LAYER_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "io/weights.h"
#include "ops/ops.h"

typedef struct ops_backend ops_backend; // ops/backend.h

typedef struct layer_quant {
    char *name;          // the weight prefix, e.g. "down_blocks.0.resnets.0.conv1"
    bool quantize_input; // the model stores u8 parameters for this layer's input
    float input_scale;
    int32_t input_zero_point;
} layer_quant;

// Reads the layer's name and (when present) its input parameters. *out is owned by the caller
// (layer_quant_free). Fails on malformed parameters (non-positive or non-finite scale, zero point
// outside [0, 255]).
lcm_status layer_quant_load(const weight_set *ws, const char *prefix, layer_quant **out);
void layer_quant_free(layer_quant *q);

// Whether a layer with these parameters runs on the int8 kernels with backend `b`: it has input
// parameters, `b` has fast kernels with the int8 kernels on.
bool layer_quant_runs_int8(const layer_quant *q, const ops_backend *b);

// Moves a quantized layer onto the int8 kernels from its weights as stored: s8 [out, in(, k, k)]
// with per-output-channel scales (only read; the layer packs its own copy). Only for a layer that
// layer_quant_runs_int8.
lcm_status layer_quant_pack_s8(layer_quant *q, const ops_backend *b, const int8_t *weight,
                               const float *weight_scale, int in, int out, int kernel, int stride,
                               int padding, layer_kernel *impl);

// Moves a quantized layer onto the int8 kernels: packs *weight (float32, [out, in(, k, k)]; kernel
// 0 for linear) into *impl (the int8 family, ops/kernel_int8.c; owned by the layer) and frees it
// (*weight = NULL). Does nothing for a layer without input parameters, for a backend with
// reference kernels, or one with the int8 kernels off (b->int8_kernels): the reference path (fake
// quantization) then runs. `b` is only read.
lcm_status layer_quant_pack(layer_quant *q, const ops_backend *b, float **weight, int in, int out,
                            int kernel, int stride, int padding, layer_kernel *impl);

// The tensor the layer computes on: x itself, or (quantize_input) a fake-quantized copy that the
// caller frees through *owned. Calls the observer first. NULL (error set) when x is NULL or on
// out of memory. q may be NULL.
const tensor *layer_quant_input(const layer_quant *q, const tensor *x, tensor **owned);

// Whether the layer computes on its input exactly as given: no int8 kernel, no fake quantization
// and no observer to call. Kernels may then fuse work into the layer (q may be NULL).
bool layer_quant_input_is_plain(const layer_quant *q);

// Values quantized and dequantized in place with the given u8 parameters.
void fake_quantize_u8(float *x, int64_t n, float scale, int32_t zero_point);

// The calibration hook. Not thread-safe: set it from the thread that runs the model, with no
// forward pass in flight; NULL removes it. `user` is borrowed.
typedef void (*ops_input_observer_fn)(void *user, const char *layer_name, const tensor *input);
void ops_set_input_observer(ops_input_observer_fn fn, void *user);

// Which model the layers running now belong to, for observers: NULL for the pipeline's own models,
// "controlnet" while a ControlNet computes (its layer names repeat the UNet's encoder half, so the
// name alone cannot tell them apart). Set by the model around its forward pass; same threading
// rule as the observer. Returns the previous scope so that calls nest.
const char *ops_set_observer_scope(const char *scope);
const char *ops_observer_scope(void);

#endif
