// Depthwise convolution (groups == channels, one k x k filter per channel) with explicit, possibly
// asymmetric zero padding, as EfficientNet's MBConv blocks use it (TensorFlow "same" padding puts
// the odd extra row/column at the bottom/right). Reference kernel: a direct loop, OpenMP over planes.
#ifndef LCM_OPS_CONV_DEPTHWISE_H
#define LCM_OPS_CONV_DEPTHWISE_H

#include "core/tensor.h"

// x [N, C, H, W] -> [N, C, H', W'], H' = (pad_top + H + pad_bottom - k) / stride + 1.
// weight [C, 1, k, k] (torch's layout), bias [C] or NULL; both borrowed.
tensor *depthwise_conv2d(const tensor *x, const float *weight, const float *bias, int kernel,
                         int stride, int pad_top, int pad_bottom, int pad_left, int pad_right);

// TensorFlow/"Conv2dSame" padding of one axis of size `in` for kernel k and stride s:
// total = max((ceil(in / s) - 1) * s + k - in, 0); *before = total / 2, *after = the rest.
void same_padding(int64_t in, int kernel, int stride, int *before, int *after);

#endif
