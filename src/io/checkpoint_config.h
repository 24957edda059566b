// The configs diffusers' single-file loader builds for a Stable Diffusion 1.x checkpoint that
// carries none (io/checkpoint.h uses it for files without configs in their __metadata__).
#ifndef LCM_IO_CHECKPOINT_CONFIG_H
#define LCM_IO_CHECKPOINT_CONFIG_H

#include "io/json_config.h"
#include "io/safetensors.h"
#include "lcm.h"

// The config of COMPONENT/FILENAME ("unet/config.json", "vae/config.json",
// "text_encoder/config.json", "scheduler/scheduler_config.json", component NULL for
// model_index.json) derived from the checkpoint's tensors (borrowed; `path` names the file in
// messages): sizes from the tensor shapes, the rest SD1.5 constants. Fields the shapes cannot
// determine and that have no SD1.5 constant are left out. The caller owns *out (json_config_free).
lcm_status checkpoint_config_derive(const st_file *tensors, const char *path, const char *component,
                                    const char *filename, json_config *out);

#endif
