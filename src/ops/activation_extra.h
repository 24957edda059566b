// Activations and per-channel helpers that the UNet family does not need but NormalBae's
// EfficientNet encoder (sigmoid gates, squeeze-excitation pooling) and decoder (ReLU, LeakyReLU,
// ELU) do. Elementwise ops work on any layout; the channel helpers read NCHW (converting if needed).
#ifndef LCM_OPS_ACTIVATION_EXTRA_H
#define LCM_OPS_ACTIVATION_EXTRA_H

#include "core/tensor.h"

void sigmoid_inplace(tensor *x);
void relu_inplace(tensor *x);
void leaky_relu_inplace(tensor *x, float slope);

// Mean over H, W: [N, C, H, W] -> [N, C].
tensor *channel_mean(const tensor *x);

// x [N, C, H, W] *= s [N, C] broadcast over H, W; returns a plain NCHW tensor (x itself when it is
// already plain, else a converted copy with x freed) so callers write h = scale_channels(h, s).
tensor *scale_channels(tensor *x, const tensor *s);

#endif
