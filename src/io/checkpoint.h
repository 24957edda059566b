// Single-file Stable Diffusion 1.x checkpoints (.safetensors), as A1111/ComfyUI users keep them:
// the whole pipeline's weights in one file under the original (CompVis LDM) names
//   model.diffusion_model.*            the UNet   (input_blocks / middle_block / output_blocks)
//   first_stage_model.*                the VAE    (encoder.down / decoder.up / mid.attn_1)
//   cond_stage_model.transformer.*     the CLIP text encoder (transformers names)
// A file written by `lcm convert` also carries the configs of its model in __metadata__
// ("lcm.config.<component>/<file>"); other files get the configs shipped with lcm.c (data/models/):
// LCM_Dreamshaper_v7's when the UNet has the LCM guidance embedding (time_embed.cond_proj),
// stable-diffusion-v1-5's otherwise. The tokenizer is always the shipped CLIP ViT-L/14 one.
#ifndef LCM_IO_CHECKPOINT_H
#define LCM_IO_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>

#include "io/json_config.h"
#include "io/weights.h"
#include "lcm.h"

typedef struct checkpoint checkpoint;

// Opens a single-file checkpoint. .ckpt/.pt/.pth/.bin pickles are LCM_ERR_UNSUPPORTED naming the
// file. The caller owns *out (checkpoint_close).
lcm_status checkpoint_open(const char *path, checkpoint **out);
void checkpoint_close(checkpoint *ck);

// The checkpoint file. Borrowed from ck.
const char *checkpoint_path(const checkpoint *ck);

// The folder of shipped configs this checkpoint uses for whatever its metadata lacks (tokenizer
// included). Borrowed from ck.
const char *checkpoint_config_dir(const checkpoint *ck);

// Loads COMPONENT/FILENAME (component NULL for model_index.json): from the metadata when the file
// carries it, else from the config folder.
lcm_status checkpoint_load_config(const checkpoint *ck, const char *component, const char *filename,
                                  json_config *out);

// The component's weights ("text_encoder", "unet", "vae"), looked up under their original names.
lcm_status checkpoint_open_weights(const checkpoint *ck, const char *component, weight_set **out);

// The original-layout name of diffusers tensor `name` of `component`, whose config is `config`
// (unet/vae: block counts and types decide the numbering).
lcm_status checkpoint_original_name(const char *component, const json_config *config,
                                    const char *name, char *out, size_t size);

// The folder holding lcm.c's shipped data: $LCM_DATA_DIR, else the repository's data/ folder.
const char *checkpoint_data_dir(void);

#endif
