// `lcm synth` (lcm_synth_model in lcm.h): a full-size model folder with random weights, from
// config files alone, for benchmarks (real weights cannot be downloaded everywhere). The model
// loaders themselves say which tensors exist and their shapes: each component is loaded from
// synthetic weights that record every request (io/weights.h), and the recorded tensors are then
// written in the real diffusers layout.
#ifndef LCM_TOOLS_SYNTH_H
#define LCM_TOOLS_SYNTH_H

#include "io/safetensors.h"
#include "lcm.h"

// lcm_synth_model with the weights' dtype as a safetensors dtype (ST_F32, ST_F16 or ST_BF16).
lcm_status synth_model(const char *config_dir, const char *out_dir, const char *tokenizer_dir, st_dtype dtype,
                       lcm_synth_progress_fn progress, void *user_data);

#endif
