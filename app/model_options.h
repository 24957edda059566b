// The options that say which model a command loads and how, shared by `lcm generate`, `serve`,
// `bench` and `compare`: their specs (each command places them in its own --help order, with its
// own help line where the option means more there), the --precision check, the --lora FILE[:SCALE]
// parsing, and turning hub ids into folders before lcm_pipeline_open.
#ifndef LCM_APP_MODEL_OPTIONS_H
#define LCM_APP_MODEL_OPTIONS_H

#include <stdbool.h>

#include "app/args.h"
#include "app/download_progress.h"
#include "lcm.h"

// The options as given (NULL/0 when absent).
typedef struct model_options {
    const char *model;      // --model: folder, single-file checkpoint or hub id
    const char *variant;    // --variant fp16
    long threads;           // --threads (0 = one per physical core)
    const char *precision;  // --precision fp32|bf16 (NULL = fp32)
    args_list lora_specs;   // --lora FILE[:SCALE], repeatable
    bool lora_lenient;      // --lora-lenient
    const char *controlnet; // --controlnet: folder or hub id
    const char *taesd;      // --taesd: folder or hub id
    const char *tokenizer;  // --tokenizer: CLIP tokenizer folder
    bool no_cache;          // --no-cache
} model_options;

typedef enum model_option {
    MODEL_OPTION_MODEL,
    MODEL_OPTION_VARIANT,
    MODEL_OPTION_THREADS,
    MODEL_OPTION_PRECISION,
    MODEL_OPTION_LORA,
    MODEL_OPTION_LORA_LENIENT,
    MODEL_OPTION_CONTROLNET,
    MODEL_OPTION_TAESD,
    MODEL_OPTION_TOKENIZER,
    MODEL_OPTION_NO_CACHE,
} model_option;

// The spec of option `which`, storing into `o`; `help` replaces the shared help line (NULL: keep it).
arg_spec model_option_spec(model_options *o, model_option which, const char *help);

// Parses a --precision value (NULL = fp32). False when it is neither fp32 nor bf16.
bool model_precision_parse(const char *text, lcm_precision *precision);

// Checks --precision and --threads (0..1024); false after printing "COMMAND: why" to stderr.
bool model_options_check(const model_options *o, const char *command);

// What a command loads with: lcm_pipeline_options and the adapters, folders and hub settings they
// point into. Owned by the command (model_setup_free); must not move once set up (the hub
// options' callbacks point into it).
typedef struct model_setup {
    lcm_pipeline_options pipeline;
    lcm_hub_options hub; // variant as --variant, download progress on stderr
    download_progress download;
    lcm_lora loras[ARGS_LIST_MAX];
    char *lora_paths[ARGS_LIST_MAX];
    int lora_count;
    char *controlnet_path, *taesd_path; // resolved folders, or NULL
} model_setup;

// Fills s->pipeline from `o` (variant, threads, precision, adapters, lenience, tokenizer, no_cache)
// and s->hub (`quiet`: no download notice); `o` must have passed model_options_check. On failure (a
// --lora spec that does not parse) lcm_last_error says why; s is to be freed either way.
lcm_status model_setup_init(model_setup *s, const model_options *o, bool quiet);

// --controlnet and --taesd into folders (hub ids downloaded; the TAESD's plain weights only), set
// in s->pipeline.
lcm_status model_setup_resolve_extras(model_setup *s, const model_options *o);

// `model` (a folder, file or hub id) into what lcm_pipeline_open loads; *path is malloc'd (free()).
lcm_status model_setup_resolve(model_setup *s, const char *model, char **path);

void model_setup_free(model_setup *s);

#endif
