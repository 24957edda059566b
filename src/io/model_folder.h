// Model folders as users have them: the diffusers pipeline layout
//
//   DIR/model_index.json            {"unet": ["diffusers", "UNet2DConditionModel"], ...}
//   DIR/unet/config.json            + diffusion_pytorch_model[.VARIANT].safetensors
//   DIR/vae/config.json             + diffusion_pytorch_model[.VARIANT].safetensors
//   DIR/text_encoder/config.json    + model[.VARIANT].safetensors
//   DIR/tokenizer/vocab.json, merges.txt
//   DIR/scheduler/scheduler_config.json
//
// and single-model folders (config.json + weights at the root, like madebyollin/taesd).
#ifndef LCM_IO_MODEL_FOLDER_H
#define LCM_IO_MODEL_FOLDER_H

#include <stdbool.h>

#include "io/checkpoint.h"
#include "io/json_config.h"
#include "io/weights.h"
#include "lcm.h"

typedef struct model_folder {
    char *root;
    char *variant;    // NULL when none was asked for
    json_config index; // model_index.json; root == NULL for a single-model folder
    // When set, called with every component's weights right after model_folder_open_weights has
    // opened them, before any tensor is read (the pipeline attaches LoRA patches here). A failure
    // fails the open. `weights_hook_user` is passed through; both borrowed.
    lcm_status (*weights_hook)(void *user, const char *component, weight_set *weights);
    void *weights_hook_user;
    // When set (lcm synth), components are loaded from synthetic weights recorded here instead of
    // files; borrowed, not freed by model_folder_close.
    weight_recorder *synthetic;
    // Whether the layers loaded from this folder's weights may use the packed-weight cache
    // (weight_set_allow_cache; ops/packed_cache.h). False after model_folder_open: the pipeline
    // turns it on for its own loads.
    bool packed_cache;
    // A single-file checkpoint opened in place of a folder (owned): weights come from it, configs
    // from its metadata or derived from its tensors; `root` then names the file.
    checkpoint *checkpoint;
} model_folder;

// Opens DIR (which must exist and hold either model_index.json or config.json), or a single-file
// .safetensors checkpoint (see io/checkpoint.h). `variant` may be NULL. The caller owns *out and releases it with model_folder_close.
lcm_status model_folder_open(const char *dir, const char *variant, model_folder *out);
void model_folder_close(model_folder *folder);

// The pipeline class from model_index.json ("LatentConsistencyModelPipeline"), or NULL.
const char *model_folder_pipeline_class(const model_folder *folder);

// Whether model_index.json lists `component` with a non-null class. *class_name (optional) is
// borrowed from the folder.
bool model_folder_has_component(const model_folder *folder, const char *component,
                                const char **class_name);

// DIR/component into buf; fails (naming the folder and component) when the folder is missing, and
// for a single-file checkpoint, which has no folders.
lcm_status model_folder_component_dir(const model_folder *folder, const char *component, char *buf,
                                      size_t size);

// Loads DIR/component/filename; errors label it "component/filename".
lcm_status model_folder_load_config(const model_folder *folder, const char *component,
                                    const char *filename, json_config *out);

// What a model's loader does first: loads COMPONENT/config.json and has `parse` fill *config from
// it (the JSON is freed before returning; a parse failure gets the folder's root as context, so
// the message names the folder, the file and the field).
typedef lcm_status (*model_config_parser)(const json_config *json, void *config);
lcm_status model_folder_parse_config(const model_folder *folder, const char *component,
                                     model_config_parser parse, void *config);

// Opens the component's weights (basename "diffusion_pytorch_model" or "model") with the folder's
// variant rule.
lcm_status model_folder_open_weights(const model_folder *folder, const char *component,
                                     const char *basename, weight_set **out);

#endif
