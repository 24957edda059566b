// Hub downloads (the public lcm_hub_pull, lcm_model_resolve and lcm_single_model_resolve are these,
// in api/hub.c): which files of a repository to fetch, and the pull into the cache.
#ifndef LCM_IO_HUB_H
#define LCM_IO_HUB_H

#include "lcm.h"

// The tokenizer of every SD1.x text encoder (CLIP ViT-L/14); its files sit at the repo's root.
#define HUB_CLIP_TOKENIZER_REPO "openai/clip-vit-large-patch14"

typedef enum hub_selection {
    HUB_SELECT_PIPELINE,  // what lcm_hub_pull fetches: configs, tokenizer, weights of a pipeline
    HUB_SELECT_TOKENIZER, // vocab.json, merges.txt (+ special_tokens_map.json, tokenizer_config.json)
    HUB_SELECT_SINGLE_MODEL, // one diffusers model at the root: config.json + its .safetensors weights
} hub_selection;

// lcm_hub_pull for the chosen files: the cache answers when it has them (always, offline),
// otherwise just those files are downloaded. *snapshot_dir is malloc'd (the caller frees it).
lcm_status hub_pull_selection(const char *id, const lcm_hub_options *options, hub_selection selection,
                              char **snapshot_dir);

// What lcm_pipeline_open can load for `model`: an existing path as is (a copy), a hub id pulled
// with `selection`. *path is malloc'd (the caller frees it).
lcm_status hub_resolve(const char *model, const lcm_hub_options *options, hub_selection selection,
                       char **path);

#endif
