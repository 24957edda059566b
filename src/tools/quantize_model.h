// `lcm quantize`: 8-bit post-training quantization of a model folder, or of a ControlNet folder.
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
// NAME.weight_scale, weight-only: they are dequantized to float32 at load). With vae the VAE
// decoder is quantized like the UNet (its inputs observed while the calibration generations decode
// their own latents; the VAE's layer names, "decoder.*" and "post_quant_conv", are not the UNet's)
// into vae/diffusion_pytorch_model.safetensors with a vae/quantization.json; its encoder, which
// calibration never runs, stays float32 (8-bit weights only with compress_weights).
//
// The output appears whole or not at all: everything is written into a temporary sibling folder
// (OUTPUT.partial-XXXXXX) that is renamed to the output at the end and removed on any failure or
// interruption.
//
// ControlNet mode (controlnet_dir set): the pipeline runs the base model with the ControlNet (and
// the LoRAs given, as `lcm generate --controlnet` does) on the calibration prompts and control
// images; only the ControlNet's layers are observed (the observer scope "controlnet": its layer
// names repeat the UNet's) and rewritten. The output is a ControlNet folder: config.json,
// diffusion_pytorch_model.safetensors in the format above and quantization.json at its root. It
// loads wherever a ControlNet folder does. With weights_only no calibration runs: every conv/linear
// weight is stored as I8 + NAME.weight_scale and dequantized to float32 at load (a quarter of the
// file size, float32 compute).
#ifndef LCM_TOOLS_QUANTIZE_MODEL_H
#define LCM_TOOLS_QUANTIZE_MODEL_H

#include <signal.h>
#include <stdbool.h>

#include "ops/int8_quantize.h"
#include "lcm.h"
#include "ops/ops.h"

typedef struct quantize_model_options {
    const char *model_dir;        // a diffusers folder with unet/
    const char *calibration_path; // prompts, one per line (blank lines skipped)
    const char *output_dir;       // created; must not be the model folder
    int samples;                  // calibration generations (prompts reused cyclically); 0 = one per prompt
    int steps;                    // per generation
    uint64_t seed;                // sample i uses seed + i
    float guidance;               // guidance scale of the generations; negative = lcm_request_init's
    activation_range_method method;
    // u8 activations with the zero point where the range puts it (false), or a range symmetric
    // about zero, [-m, m] with m the larger side, so the zero point is 128 (true).
    bool symmetric_activations;
    double percentile;            // for ACTIVATION_RANGE_PERCENTILE
    bool compress_weights;        // also text encoder + VAE weights to 8 bits
    bool vae;                     // also the VAE decoder in int8 (weights and activations)
    // Layer names kept in float32 (NULL-terminated list; NULL = quantize_default_keep_fp32).
    const char *const *keep_fp32;
    bool quiet;                   // no progress bar
    // ControlNet mode (see the top of this file). model_dir is then the base model it runs with.
    const char *controlnet_dir;
    const char *const *control_images; // image files (PNG/JPEG), cycled over the samples; at least one
    int control_image_count;
    const lcm_lora *loras; // adapters fused into the base model for calibration (lcm generate --lora)
    int lora_count;
    bool weights_only;     // ControlNet mode: 8-bit weights only, no calibration (model_dir unused)
    // Optional, borrowed: once *interrupted is non-zero (set by a signal handler) the work stops at
    // the next step or tensor, the partial output is removed and LCM_ERR_CANCELLED returned.
    const volatile sig_atomic_t *interrupted;
} quantize_model_options;

void quantize_model_options_init(quantize_model_options *options);

// The layers kept in float32 by default: conv_in and conv_out. Measured on tiny-lcm (BENCHMARKS.md):
// conv_in, whose input is the raw latent, is the one layer whose quantization costs visibly (about
// 2 dB PSNR); conv_out was neutral there but feeds the noise prediction directly; both are a tiny
// share of the UNet's work (4 channels on one side). The time embedding's linears were neutral and
// are quantized.
extern const char *const quantize_default_keep_fp32[];

// The VAE layers kept in float32 by default (quantize_model.c says what was measured).
extern const char *const quantize_vae_default_keep_fp32[];

// The layers of a ControlNet kept in float32 by default (a name also covers the layers below it:
// "controlnet_cond_embedding" is every conv of the conditioning embedding). Measured on
// tiny-controlnet with tiny-sd15 + LCM-LoRA: see quantize_model.c.
extern const char *const quantize_controlnet_default_keep_fp32[];

// Quantizes options->model_dir's UNet, or (controlnet_dir set) the ControlNet.
lcm_status quantize_model(const quantize_model_options *options);

typedef enum quantized_kind {
    QUANTIZED_NONE = 0,     // no quantization.json
    QUANTIZED_INT8,         // 8-bit weights and activations
    QUANTIZED_WEIGHTS_ONLY, // 8-bit weights, float32 compute
} quantized_kind;

// What a ControlNet folder written by quantize_model holds (its quantization.json).
quantized_kind quantize_controlnet_kind(const char *controlnet_dir);

// True when `model_dir`/unet holds a quantization.json (a model written by quantize_model).
bool quantize_model_is_int8(const char *model_dir);

// The quantization.json files it writes are checked by io/quantization_scheme.h.

// Which int8 execution runs for models loaded with `b` (only read), for messages: oneDNN's int8
// kernels (ops/int8_layer.h), or the reference path (float32 kernels on dequantized weights and
// fake-quantized inputs). Static storage.
const char *quantize_model_int8_kernel(const ops_backend *b);

#endif
