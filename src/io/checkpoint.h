// Single-file Stable Diffusion 1.x checkpoints (.safetensors), as A1111/ComfyUI users keep them:
// the whole pipeline's weights in one file under the original (CompVis LDM) names
//   model.diffusion_model.*            the UNet   (input_blocks / middle_block / output_blocks)
//   first_stage_model.*                the VAE    (encoder.down / decoder.up / mid.attn_1)
//   cond_stage_model.transformer.*     the CLIP text encoder (transformers names)
// A file written by `lcm convert` also carries the configs of its model in __metadata__
// ("lcm.config.<component>/<file>") and its tokenizer files ("lcm.tokenizer/<file>"). Other files
// (A1111/Civitai checkpoints) get configs derived from their tensor shapes plus the SD1.5 constants,
// as diffusers' single-file loader does (see checkpoint_config.c); their tokenizer is found by the
// pipeline (pipeline/tokenizer_source.h).
#ifndef LCM_IO_CHECKPOINT_H
#define LCM_IO_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>

#include "io/json_config.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "lcm.h"

typedef struct checkpoint checkpoint;

// Opens a single-file checkpoint. .ckpt/.pt/.pth/.bin pickles are LCM_ERR_UNSUPPORTED naming the
// file. The caller owns *out (checkpoint_close).
lcm_status checkpoint_open(const char *path, checkpoint **out);
void checkpoint_close(checkpoint *ck);

// The same checks over a tensor table opened some other way (the fuzz harness builds one in
// memory). Takes ownership of `file`, also on failure; `path` names the checkpoint in messages.
lcm_status checkpoint_open_tensors(const char *path, st_file *file, checkpoint **out);

// The checkpoint file. Borrowed from ck.
const char *checkpoint_path(const checkpoint *ck);

// The tensors of the file. Borrowed from ck.
const st_file *checkpoint_tensors(const checkpoint *ck);

// A __metadata__ string of the file, or NULL. Borrowed from ck.
const char *checkpoint_metadata(const checkpoint *ck, const char *key);

// The metadata key of tokenizer file `name` ("vocab.json", "merges.txt", ...).
#define CHECKPOINT_TOKENIZER_KEY "lcm.tokenizer/"

// Loads COMPONENT/FILENAME (component NULL for model_index.json): from the metadata when the file
// carries it, else derived (checkpoint_derive_config). A derived config that lacks a field the
// shapes cannot give (the text encoder's head count when its width is not a multiple of 64) is
// LCM_ERR_UNSUPPORTED naming the file.
lcm_status checkpoint_load_config(const checkpoint *ck, const char *component, const char *filename,
                                  json_config *out);

// The config diffusers' single-file loader would build for COMPONENT/FILENAME from the file's
// tensors (io/checkpoint_config.h); the metadata is not looked at. The caller owns *out
// (json_config_free).
lcm_status checkpoint_derive_config(const checkpoint *ck, const char *component,
                                    const char *filename, json_config *out);

// The component's weights ("text_encoder", "unet", "vae"), looked up under their original names.
lcm_status checkpoint_open_weights(const checkpoint *ck, const char *component, weight_set **out);

// The original-layout name of diffusers tensor `name` of `component`, whose config is `config`
// (unet/vae: block counts and types decide the numbering).
lcm_status checkpoint_original_name(const char *component, const json_config *config,
                                    const char *name, char *out, size_t size);

// What `lcm convert` stores in __metadata__ besides the tensors.
enum {
    CHECKPOINT_STORE_CONFIGS = 1,   // the folder's config files, exactly
    CHECKPOINT_STORE_TOKENIZER = 2, // the folder's tokenizer files
    CHECKPOINT_STORE_TEXT_CONFIG = 4, // text_encoder/config.json alone (the rest derived on load)
};

// lcm_convert_to_single_file with a choice of metadata (`store`: CHECKPOINT_STORE_* flags); files
// without some of it are what other tools write, which the tests need.
lcm_status checkpoint_write(const char *model_dir, const char *path, unsigned store);

#endif
