// Elementwise activations and affine maps the tiny autoencoder (TAESD) needs beyond ops.h.
//
// Every function works in place on any layout (the order of the values does not matter) and does
// nothing for a NULL tensor, so forward passes can call them on the result of an op that failed.
#ifndef LCM_OPS_POINTWISE_H
#define LCM_OPS_POINTWISE_H

#include "core/tensor.h"
#include "ops/activation_extra.h" // relu_inplace, shared with NormalBae


// x = tanh(x / limit) * limit: a smooth clamp to (-limit, limit) (TAESD's decoder input).
void tanh_clamp_inplace(tensor *x, float limit);

// x = x * scale + shift, as two float32 roundings (torch's x.mul(scale).add(shift)).
void scale_shift_inplace(tensor *x, float scale, float shift);

// x = (x + shift) / divisor, as two float32 roundings (torch's x.add(shift).div(divisor)).
void shift_divide_inplace(tensor *x, float shift, float divisor);

#endif
