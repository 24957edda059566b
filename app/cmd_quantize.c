// `lcm quantize`: 8-bit post-training quantization of a model folder's UNet, or of a ControlNet
// folder (lcm_quantize; src/tools/quantize_model.h says how).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/args.h"
#include "app/commands.h"
#include "lcm.h"

// SIGINT/SIGTERM ask the quantizer to stop (it removes its partial output, then returns); the
// handler resets itself, so a second signal kills the process at once.
static volatile sig_atomic_t stop_requested;

static void request_stop(int signal_number) {
    (void)signal_number;
    stop_requested = 1;
}

int cmd_quantize(int argc, char **argv) {
    const char *model = NULL, *calibration = NULL, *output = NULL, *method = "percentile";
    const char *keep = NULL, *controlnet = NULL, *activations = "asymmetric";
    args_list control_images = {0}, lora_specs = {0};
    long samples = -1, steps = 4, seed = 0;
    double percentile = 99.99, guidance = -1;
    bool compress = false, quiet = false, weights_only = false, vae = false;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "the diffusers model folder to quantize (with --controlnet: the base model it runs with)", false},
        {"controlnet", ARG_STRING, &controlnet, "quantize this ControlNet folder instead of the model's UNet; --output is then a ControlNet folder", false},
        {"control-image", ARG_STRING, &control_images, "with --controlnet: a control image for calibration (PNG/JPEG/WebP, already preprocessed as for lcm generate --control-image; repeatable, cycled over the samples; at least one; the generation size follows it)", true},
        {"lora", ARG_STRING, &lora_specs, "with --controlnet: FILE[:SCALE] fused into the base model for calibration, as lcm generate --lora (repeatable)", true},
        {"weights-only", ARG_FLAG, &weights_only, "with --controlnet: 8-bit weights only, no calibration (float32 compute; --model/--calibration not needed)", false},
        {"calibration", ARG_STRING, &calibration, "calibration prompts, one per line (e.g. data/calibration-prompts.txt)", false},
        {"output", ARG_STRING, &output, "folder to write the quantized model to (must not exist)", false},
        {"samples", ARG_INT, &samples, "calibration generations (default: one per prompt)", false},
        {"steps", ARG_INT, &steps, "denoising steps per generation (default 4)", false},
        {"guidance", ARG_FLOAT, &guidance, "guidance scale of the calibration generations (default 8.5, as lcm generate)", false},
        {"seed", ARG_INT, &seed, "seed of the first generation; sample i uses seed + i (default 0)", false},
        {"method", ARG_STRING, &method, "activation range: percentile (default; measured better) or minmax", false},
        {"percentile", ARG_FLOAT, &percentile, "for --method percentile (default 99.99)", false},
        {"activations", ARG_STRING, &activations, "u8 activation ranges: asymmetric (default: the zero point where the range puts it; measured better) or symmetric (about zero, zero point 128)", false},
        {"keep-fp32", ARG_STRING, &keep, "comma-separated layers kept in float32; a name covers the layers below it (default UNet: conv_in,conv_out; ControlNet: conv_in,controlnet_cond_embedding.conv_in,controlnet_down_blocks,controlnet_mid_block; 'none' quantizes all)", false},
        {"vae", ARG_FLAG, &vae, "also quantize the VAE decoder to int8 (activations calibrated on the calibration generations' own latents; default float32 layers: post_quant_conv,decoder.conv_in,decoder.conv_out, which --keep-fp32 replaces)", false},
        {"compress-weights", ARG_FLAG, &compress, "also store the text encoder's and VAE's weights in 8 bits (with --vae: the VAE encoder's)", false},
        {"quiet", ARG_FLAG, &quiet, "no progress bar", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 0, &npositional,
                        "lcm quantize --model DIR --calibration PROMPTS.txt --output DIR8 [--samples N] "
                        "[--steps 4] [--seed S] [--method percentile|minmax] [--percentile 99.99] "
                        "[--activations asymmetric|symmetric] [--keep-fp32 A,B] [--vae] [--compress-weights]\n"
                        "   or: lcm quantize --controlnet CN_DIR --model BASE_DIR --calibration PROMPTS.txt "
                        "--control-image IMG [--control-image IMG2 ...] [--lora FILE[:SCALE]] --output CN_DIR8 "
                        "[same options]\n"
                        "   or: lcm quantize --controlnet CN_DIR --weights-only --output CN_DIR8");
    if (rc) return rc == 1 ? 0 : 2;
    const char *misuse = NULL;
    if (!controlnet && (control_images.count || lora_specs.count || weights_only))
        misuse = "--control-image, --lora and --weights-only need --controlnet";
    else if (controlnet && vae)
        misuse = "--vae quantizes a model's VAE decoder, not a ControlNet";
    else if (controlnet && compress)
        misuse = "--compress-weights is for a model's text encoder and VAE, not a ControlNet (see --weights-only)";
    else if (controlnet && weights_only && (model || calibration || control_images.count || lora_specs.count))
        misuse = "--weights-only runs no calibration: drop --model, --calibration, --control-image and --lora";
    else if (controlnet && !weights_only && !control_images.count)
        misuse = "--controlnet needs at least one --control-image for calibration (an edge map, normal "
                 "map... like those the ControlNet will be used with)";
    else if (!output || (!weights_only && (!model || !calibration)))
        misuse = controlnet ? "--controlnet needs --model, --calibration and --output (or --weights-only and --output)"
                            : "--model, --calibration and --output are required";
    if (misuse) {
        fprintf(stderr, "lcm quantize: %s\n", misuse);
        return 2;
    }
    if (samples == 0) {
        fprintf(stderr, "lcm quantize: --samples 0: expected at least 1\n");
        return 2;
    }
    if (samples < 0) samples = 0; // not given: one generation per prompt
    lcm_quantize_options o;
    lcm_quantize_options_init(&o);
    o.model_dir = model;
    o.calibration_path = calibration;
    o.output_dir = output;
    o.samples = (int)samples;
    o.steps = (int)steps;
    o.seed = (uint64_t)seed;
    o.percentile = percentile;
    if (guidance != -1) o.guidance = (float)guidance;
    o.compress_weights = compress;
    o.vae = vae;
    o.interrupted = &stop_requested;
    o.quiet = quiet;
    o.controlnet_dir = controlnet;
    o.control_images = control_images.items;
    o.control_image_count = control_images.count;
    o.weights_only = weights_only;
    if (!strcmp(activations, "symmetric")) o.symmetric_activations = 1;
    else if (strcmp(activations, "asymmetric")) {
        fprintf(stderr, "lcm quantize: --activations '%s': expected asymmetric or symmetric\n", activations);
        return 2;
    }
    if (!strcmp(method, "minmax")) o.method = LCM_ACTIVATION_RANGE_MINMAX;
    else if (!strcmp(method, "percentile")) o.method = LCM_ACTIVATION_RANGE_PERCENTILE;
    else {
        fprintf(stderr, "lcm quantize: --method '%s': expected minmax or percentile\n", method);
        return 2;
    }
    if (guidance != -1 && !(guidance >= 0 && guidance <= 100)) {
        fprintf(stderr, "lcm quantize: --guidance %g: expected a value in [0, 100]\n", guidance);
        return 2;
    }
    if (samples > 100000 || steps < 1 || steps > 1000 || seed < 0) {
        fprintf(stderr, "lcm quantize: --samples %ld / --steps %ld / --seed %ld out of range\n", samples,
                steps, seed);
        return 2;
    }
    // --lora FILE[:SCALE]: the paths are copied out of the specs, which may carry a scale suffix.
    lcm_lora loras[sizeof lora_specs.items / sizeof lora_specs.items[0]];
    char *lora_paths[sizeof lora_specs.items / sizeof lora_specs.items[0]] = {0};
    if (args_loras(&lora_specs, loras, lora_paths) != LCM_OK) {
        fprintf(stderr, "lcm quantize: --lora: %s\n", lcm_last_error());
        args_loras_free(lora_paths, lora_specs.count);
        return 2;
    }
    o.loras = loras;
    o.lora_count = lora_specs.count;
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
    struct sigaction stop = {.sa_handler = request_stop, .sa_flags = SA_RESETHAND}, old_int, old_term;
    sigemptyset(&stop.sa_mask);
    sigaction(SIGINT, &stop, &old_int);
    sigaction(SIGTERM, &stop, &old_term);
    lcm_status st = lcm_quantize(&o);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(keep_copy);
    args_loras_free(lora_paths, lora_specs.count);
    if (st == LCM_ERR_CANCELLED && stop_requested) {
        fprintf(stderr, "lcm quantize: interrupted; %s not written\n", output);
        return 130;
    }
    if (st != LCM_OK) {
        fprintf(stderr, "lcm quantize: %s\n", lcm_last_error());
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    if (!quiet) printf("wrote %s\n", output);
    return 0;
}
