// `lcm quantize`: 8-bit post-training quantization of a model folder (src/adapt/quantize_model.h).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapt/quantize_model.h"
#include "app/args.h"
#include "app/commands.h"

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *calibration = NULL, *output = NULL, *method = "percentile";
    const char *keep = NULL;
    long samples = -1, steps = 4, seed = 0;
    double percentile = 99.99;
    bool compress = false, quiet = false;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "the diffusers model folder to quantize", false},
        {"calibration", ARG_STRING, &calibration, "calibration prompts, one per line (e.g. data/calibration-prompts.txt)", false},
        {"output", ARG_STRING, &output, "folder to write the quantized model to (must not exist)", false},
        {"samples", ARG_INT, &samples, "calibration generations (default: one per prompt)", false},
        {"steps", ARG_INT, &steps, "denoising steps per generation (default 4)", false},
        {"seed", ARG_INT, &seed, "seed of the first generation; sample i uses seed + i (default 0)", false},
        {"method", ARG_STRING, &method, "activation range: percentile (default; measured better) or minmax", false},
        {"percentile", ARG_FLOAT, &percentile, "for --method percentile (default 99.99)", false},
        {"keep-fp32", ARG_STRING, &keep, "comma-separated UNet layers kept in float32 (default conv_in,conv_out; 'none' quantizes all)", false},
        {"compress-weights", ARG_FLAG, &compress, "also store the text encoder's and VAE's weights in 8 bits", false},
        {"quiet", ARG_FLAG, &quiet, "no progress bar", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 0, &npositional,
                        "lcm quantize --model DIR --calibration PROMPTS.txt --output DIR8 [--samples N] "
                        "[--steps 4] [--seed S] [--method percentile|minmax] [--percentile 99.99] "
                        "[--compress-weights]");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model || !calibration || !output) {
        fprintf(stderr, "lcm quantize: --model, --calibration and --output are required\n");
        return 2;
    }
    if (samples == 0) {
        fprintf(stderr, "lcm quantize: --samples 0: expected at least 1\n");
        return 2;
    }
    if (samples < 0) samples = 0; // not given: one generation per prompt
    quantize_model_options o;
    quantize_model_options_init(&o);
    o.model_dir = model;
    o.calibration_path = calibration;
    o.output_dir = output;
    o.samples = (int)samples;
    o.steps = (int)steps;
    o.seed = (uint64_t)seed;
    o.percentile = percentile;
    o.compress_weights = compress;
    o.quiet = quiet;
    if (!strcmp(method, "minmax")) o.method = ACTIVATION_RANGE_MINMAX;
    else if (!strcmp(method, "percentile")) o.method = ACTIVATION_RANGE_PERCENTILE;
    else {
        fprintf(stderr, "lcm quantize: --method '%s': expected minmax or percentile\n", method);
        return 2;
    }
    if (samples > 100000 || steps < 1 || steps > 1000 || seed < 0) {
        fprintf(stderr, "lcm quantize: --samples %ld / --steps %ld / --seed %ld out of range\n", samples,
                steps, seed);
        return 2;
    }
    // --keep-fp32 a,b,c -> NULL-terminated list (split in a copy)
    char *keep_copy = NULL;
    const char *keep_list[256];
    if (keep) {
        keep_copy = strdup(keep);
        int n = 0;
        if (keep_copy && strcmp(keep_copy, "none"))
            for (char *tok = strtok(keep_copy, ","); tok && n < 255; tok = strtok(NULL, ",")) keep_list[n++] = tok;
        keep_list[n] = NULL;
        o.keep_fp32 = keep_list;
    }
    lcm_status st = quantize_model(&o);
    free(keep_copy);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm quantize: %s\n", lcm_last_error());
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    if (!quiet) printf("wrote %s\n", output);
    return 0;
}
