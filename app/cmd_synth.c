// lcm synth: a full-size model folder with random weights, from config files alone, for
// benchmarks (lcm_synth_model; src/tools/synth.h says how).
#include <stdio.h>
#include <string.h>

#include "app/args.h"
#include "app/commands.h"
#include "lcm.h"

static void show_progress(void *user_data, const char *component, const char *class_name,
                          const char *weights_file, size_t tensor_count) {
    (void)user_data;
    if (weights_file) fprintf(stderr, "wrote %s (%zu tensors)\n", weights_file, tensor_count);
    else if (component) fprintf(stderr, "synthesizing %s (%s)...\n", component, class_name);
    else fprintf(stderr, "synthesizing %s...\n", class_name);
}

int cmd_synth(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *dtype_name = "fp32", *tokenizer = NULL;
    const arg_spec specs[] = {
        {"config", ARG_STRING, &config, "folder of config files in the diffusers layout (model_index.json, */config.json), or a single-model folder (config.json, e.g. a TAESD)", false},
        {"out", ARG_STRING, &out, "folder to write the model to", false},
        {"dtype", ARG_STRING, &dtype_name, "weight dtype: fp32 (default), fp16 or bf16", false},
        {"tokenizer", ARG_STRING, &tokenizer, "folder with vocab.json + merges.txt when the config folder lacks them", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 0, &npositional,
                        "lcm synth --config DIR --out DIR [--dtype fp16] [--tokenizer DIR]");
    if (rc) return rc == 1 ? 0 : 2;
    if (!config || !out) {
        fprintf(stderr, "lcm synth: --config and --out are required\n");
        return 2;
    }
    lcm_weight_dtype dtype;
    if (!strcmp(dtype_name, "fp32")) dtype = LCM_WEIGHT_FP32;
    else if (!strcmp(dtype_name, "fp16")) dtype = LCM_WEIGHT_FP16;
    else if (!strcmp(dtype_name, "bf16")) dtype = LCM_WEIGHT_BF16;
    else {
        fprintf(stderr, "lcm synth: --dtype '%s': expected fp32, fp16 or bf16\n", dtype_name);
        return 2;
    }
    lcm_status st = lcm_synth_model(config, out, tokenizer, dtype, show_progress, NULL);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm synth: %s\n", lcm_last_error());
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    return 0;
}
