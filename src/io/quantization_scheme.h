// The quantization.json that `lcm quantize` writes beside 8-bit weights (tools/quantize_model.h
// describes the format), checked when a model is opened: the weights describe themselves, but the
// file says how they were made, and a damaged one means the folder was damaged too.
#ifndef LCM_IO_QUANTIZATION_SCHEME_H
#define LCM_IO_QUANTIZATION_SCHEME_H

#include "lcm.h"

// Checks the quantization.json of one component folder (a UNet, VAE, text encoder or ControlNet
// folder) against this program's format and against dir/diffusion_pytorch_model.safetensors:
// LCM_ERR_FORMAT naming the file and the field when it is not JSON, of another format or version,
// lacks a field or holds one of the wrong type or value, or disagrees with the weights (8-bit
// activations described but no NAME.input_scale tensor, or the other way round; a layer listed in
// fp32_layers stored in I8); and when the file is missing although the weights hold
// NAME.input_scale tensors (the folder lost it). LCM_OK for a folder neither quantized nor
// described.
lcm_status quantization_scheme_check(const char *dir);

// quantization_scheme_check on every component folder of a model folder (its subfolders, in name
// order; the first failure is returned). LCM_OK when model_dir is not a folder (a single-file
// checkpoint).
lcm_status quantization_scheme_check_model(const char *model_dir);

#endif
