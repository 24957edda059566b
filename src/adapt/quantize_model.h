// `lcm quantize`: 8-bit post-training quantization of a model folder.
//
// Calibration runs the pipeline over prompts while an ops input observer (ops/layer_quant.h)
// gathers activation_stats for the input of every conv/linear. The output folder is a copy of the
// model whose unet/diffusion_pytorch_model.safetensors stores, for each quantized layer NAME:
//   NAME.weight              I8  [out, ...]   symmetric per output channel
//   NAME.weight_scale        F32 [out]        w = q * weight_scale[o]
//   NAME.input_scale         F32 [1]          u8 activations: x = input_scale * (q - zero_point)
//   NAME.input_zero_point    F32 [1]
// (the other tensors as float32) and unet/quantization.json describing the scheme. With
// compress_weights the text encoder's and VAE's weight matrices are stored the same way (I8 +
// NAME.weight_scale, weight-only: they are dequantized to float32 at load).
#ifndef LCM_ADAPT_QUANTIZE_MODEL_H
#define LCM_ADAPT_QUANTIZE_MODEL_H

#include <stdbool.h>

#include "adapt/quantize.h"
#include "lcm.h"

typedef struct quantize_model_options {
    const char *model_dir;        // a diffusers folder with unet/
    const char *calibration_path; // prompts, one per line (blank lines skipped)
    const char *output_dir;       // created; must not be the model folder
    int samples;                  // calibration generations (prompts reused cyclically); 0 = one per prompt
    int steps;                    // per generation
    uint64_t seed;                // sample i uses seed + i
    activation_range_method method;
    double percentile;            // for ACTIVATION_RANGE_PERCENTILE
    bool compress_weights;        // also text encoder + VAE weights to 8 bits
    // Layer names kept in float32 (NULL-terminated list; NULL = quantize_default_keep_fp32).
    const char *const *keep_fp32;
    bool quiet;                   // no progress bar
} quantize_model_options;

void quantize_model_options_init(quantize_model_options *options);

// The layers kept in float32 by default: conv_in and conv_out. Measured on tiny-lcm (BENCHMARKS.md):
// conv_in, whose input is the raw latent, is the one layer whose quantization costs visibly (about
// 2 dB PSNR); conv_out was neutral there but feeds the noise prediction directly; both are a tiny
// share of the UNet's work (4 channels on one side). The time embedding's linears were neutral and
// are quantized.
extern const char *const quantize_default_keep_fp32[];

lcm_status quantize_model(const quantize_model_options *options);

// True when `model_dir`/unet holds a quantization.json (a model written by quantize_model).
bool quantize_model_is_int8(const char *model_dir);

// Which int8 execution runs for models loaded from now on, for messages: oneDNN's int8 kernels
// (ops/int8_layer.h), or the reference path (float32 kernels on dequantized weights and
// fake-quantized inputs).
const char *quantize_model_int8_kernel(void);

#endif
