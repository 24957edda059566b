// lcm generate: one prompt -> PNG image(s), through the public C API only.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "app/args.h"
#include "app/commands.h"
#include "app/download_progress.h"
#include "lcm.h"

// Exit codes: 2 for anything the user can fix in the request or the model files, 1 otherwise.
static int exit_code_for(lcm_status st) {
    switch (st) {
    case LCM_ERR_INVALID_ARGUMENT:
    case LCM_ERR_FORMAT:
    case LCM_ERR_UNSUPPORTED:
    case LCM_ERR_IO: return 2;
    default: return 1;
    }
}

typedef struct progress_state {
    bool on_terminal;
} progress_state;

static int show_progress(void *user, int done, int total, double elapsed) {
    progress_state *state = user;
    if (!state->on_terminal) return 0;
    double per_step = elapsed / done;
    int width = 30, filled = width * done / total;
    fprintf(stderr, "\r[%.*s%*s] step %d/%d  %.2f s/step  ETA %.0f s ", filled,
            "##############################", width - filled, "", done, total, per_step,
            per_step * (total - done));
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
    return 0;
}

// --preview-dir: each preview as DIR/step-K.png (DIR/step-K-I.png for image I of a batch > 1).
typedef struct preview_state {
    const char *dir;
    int batch;
    int failures;
} preview_state;

static void write_preview(void *user, int steps_done, int total_steps, int index,
                          const lcm_image *preview) {
    (void)total_steps;
    preview_state *state = user;
    char path[4096];
    if (state->batch > 1)
        snprintf(path, sizeof path, "%s/step-%d-%d.png", state->dir, steps_done, index);
    else
        snprintf(path, sizeof path, "%s/step-%d.png", state->dir, steps_done);
    if (lcm_write_png(path, preview, NULL) != LCM_OK && state->failures++ == 0)
        fprintf(stderr, "lcm generate: preview: %s\n", lcm_last_error());
}

// "2G", "512M", "1.5G", "300K" or plain bytes -> bytes; false when malformed.
static bool parse_size(const char *text, uint64_t *out) {
    char *end = NULL;
    double value = strtod(text, &end);
    if (end == text || !(value > 0)) return false;
    double unit = 1;
    if (*end == 'K' || *end == 'k') unit = 1024.0;
    else if (*end == 'M' || *end == 'm') unit = 1024.0 * 1024;
    else if (*end == 'G' || *end == 'g') unit = 1024.0 * 1024 * 1024;
    else if (*end == 'T' || *end == 't') unit = 1024.0 * 1024 * 1024 * 1024;
    if (unit > 1) end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end != '\0' || value * unit > 1e18) return false;
    *out = (uint64_t)(value * unit);
    return true;
}

static uint64_t random_seed(void) {
    uint32_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    return seed;
}

// The last path component of the model folder, for the A1111 "Model:" field.
static const char *model_name(const char *dir) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    static char name[256];
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(name, sizeof name, "%.*s", (int)(len - start), dir + start);
    return name;
}

// "out.png" with index 2 of a batch -> "out-2.png".
static void batch_path(char *buf, size_t size, const char *path, int index, int batch) {
    if (batch == 1) {
        snprintf(buf, size, "%s", path);
        return;
    }
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) dot = path + strlen(path);
    snprintf(buf, size, "%.*s-%d%s", (int)(dot - path), path, index, dot);
}

// How --control-preprocess turns the control image into a control map.
typedef struct control_preprocessing {
    const char *kind;    // NULL/"none", "canny" or "normalbae"
    double canny_low, canny_high;
    const char *weights; // normalbae: NormalBae weights
    int detect_resolution, image_resolution;
    const char *output;  // write the control map here too (PNG), or NULL
} control_preprocessing;

// The img2img and ControlNet inputs, read (and preprocessed) before the slow model load so that a
// bad file fails fast. Returns 0, or the exit code after printing why.
typedef struct conditioning_images {
    lcm_image init, control;
} conditioning_images;

static int read_conditioning(const char *init_path, const char *control_path,
                             const control_preprocessing *pre, conditioning_images *c) {
    memset(c, 0, sizeof *c);
    lcm_status st = LCM_OK;
    bool canny = pre->kind && !strcmp(pre->kind, "canny");
    bool normalbae = pre->kind && !strcmp(pre->kind, "normalbae");
    if (init_path) st = lcm_image_read(init_path, &c->init);
    // The annotator sees a transparent photo over white, as `lcm preprocess normal` does.
    if (st == LCM_OK && control_path)
        st = normalbae ? lcm_image_read_composited(control_path, &c->control)
                       : lcm_image_read(control_path, &c->control);
    lcm_image map = {0};
    if (st == LCM_OK && canny) st = lcm_canny(&c->control, pre->canny_low, pre->canny_high, &map);
    if (st == LCM_OK && normalbae)
        st = lcm_preprocess_normal(pre->weights, &c->control, pre->detect_resolution,
                                   pre->image_resolution, &map);
    if (st == LCM_OK && (canny || normalbae)) {
        lcm_image_release(&c->control);
        c->control = map;
    }
    if (st == LCM_OK && pre->output) st = lcm_write_png(pre->output, &c->control, NULL);
    if (st == LCM_OK) return 0;
    fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
    lcm_image_release(&c->init);
    lcm_image_release(&c->control);
    return exit_code_for(st);
}

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *output = NULL, *variant = NULL, *tokenizer = NULL;
    const char *taesd = NULL, *vae_tiling = "auto", *memory_budget = NULL, *preview_dir = NULL;
    const char *precision = "fp32";
    long seed = -1, steps = 4, width = 0, height = 0, batch = 1, threads = 0;
    double guidance = 8.5;
    bool quiet = false, lora_lenient = false, no_cache = false;
    args_list lora_specs = {0};
    const char *negative_prompt = NULL, *init_image = NULL, *controlnet = NULL, *control_image = NULL;
    const char *control_preprocess = NULL, *control_weights = NULL, *control_output = NULL;
    long detect_resolution = -1, image_resolution = -1; // -1: not given
    double strength = -1, control_scale = 1.0, canny_low = -1, canny_high = -1; // -1: not given
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model,
         "diffusers model folder, single .safetensors checkpoint, or hub id ORG/NAME[@REVISION] "
         "(downloaded on first use)",
         false},
        {"prompt", ARG_STRING, &prompt, "what to draw (or give it as the argument)", false},
        {"seed", ARG_INT, &seed, "random seed (default: random, printed and stored)", false},
        {"steps", ARG_INT, &steps, "denoising steps, 1..original_inference_steps (default 4)", false},
        {"guidance", ARG_FLOAT, &guidance, "guidance scale (default 8.5, diffusers' default)", false},
        {"width", ARG_INT, &width, "image width, a multiple of 8 (default: the model's size)", false},
        {"height", ARG_INT, &height, "image height, a multiple of 8 (default: the model's size)", false},
        {"batch", ARG_INT, &batch, "images per prompt (default 1; FILE-0.png, FILE-1.png, ...)", false},
        {"variant", ARG_STRING, &variant, "weight variant, e.g. fp16 (falls back to the plain files)", false},
        {"threads", ARG_INT, &threads, "compute threads (default: one per physical core)", false},
        {"precision", ARG_STRING, &precision, "fp32 (exact, default) or bf16 (half the memory)", false},
        {"lora", ARG_STRING, &lora_specs,
         "LoRA adapter FILE[:SCALE] (.safetensors, kohya/diffusers/PEFT keys; scale 1 by default; "
         "repeatable)",
         true},
        {"lora-lenient", ARG_FLAG, &lora_lenient, "warn instead of failing on LoRA keys that match nothing", false},
        {"negative-prompt", ARG_STRING, &negative_prompt,
         "what to steer away from (UNets without LCM guidance embedding, guidance > 1)", false},
        {"init-image", ARG_STRING, &init_image, "img2img: start from this PNG/JPEG/WebP (its size is the output size)", false},
        {"strength", ARG_FLOAT, &strength, "img2img: how much to change the init image, 0 < s <= 1 (default 0.8)", false},
        {"controlnet", ARG_STRING, &controlnet,
         "ControlNetModel steering the UNet: folder or hub id ORG/NAME[@REVISION]", false},
        {"control-image", ARG_STRING, &control_image, "ControlNet conditioning image (PNG/JPEG/WebP)", false},
        {"control-scale", ARG_FLOAT, &control_scale, "ControlNet conditioning scale (default 1)", false},
        {"control-preprocess", ARG_STRING, &control_preprocess,
         "turn the control image (a photo) into a control map first: canny or normalbae "
         "(default: none, use it as is)",
         false},
        {"canny-low", ARG_FLOAT, &canny_low, "canny low threshold (default 100)", false},
        {"canny-high", ARG_FLOAT, &canny_high, "canny high threshold (default 200)", false},
        {"control-weights", ARG_STRING, &control_weights,
         "normalbae: NormalBae weights (scannet.pt or a .safetensors conversion)", false},
        {"detect-resolution", ARG_INT, &detect_resolution,
         "normalbae: short side the network sees, multiples of 64 (default 512)", false},
        {"image-resolution", ARG_INT, &image_resolution,
         "normalbae: short side of the normal map, multiples of 64 (default 512)", false},
        {"control-output", ARG_STRING, &control_output, "also write the control map to this PNG", false},
        {"tokenizer", ARG_STRING, &tokenizer,
         "CLIP tokenizer folder (vocab.json, merges.txt) for a single-file checkpoint that has none "
         "(default: $LCM_TOKENIZER, else the Hugging Face cache of openai/clip-vit-large-patch14)",
         false},
        {"taesd", ARG_STRING, &taesd,
         "decode with this TAESD (AutoencoderTiny) instead of the VAE: folder or hub id "
         "ORG/NAME[@REVISION], e.g. madebyollin/taesd",
         false},
        {"vae-tiling", ARG_STRING, &vae_tiling, "on, off or auto (default: tile only when the decode would not fit the memory budget)", false},
        {"memory-budget", ARG_STRING, &memory_budget, "memory for the whole process, e.g. 6G or 512M (default: 3/4 of RAM)", false},
        {"preview-dir", ARG_STRING, &preview_dir, "write a preview of each step there as step-K.png", false},
        {"output", ARG_STRING, &output, "PNG file to write", false},
        {"quiet", ARG_FLAG, &quiet, "no progress bar", false},
        {"no-cache", ARG_FLAG, &no_cache, "neither read nor write the packed-weight cache (see 'lcm cache')", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 1, &npositional,
                        "lcm generate --model DIR --prompt TEXT [options] --output FILE.png");
    if (rc) return rc == 1 ? 0 : 2;
    if (npositional == 1) {
        if (prompt) {
            fprintf(stderr, "lcm generate: give the prompt either with --prompt or as the argument\n");
            return 2;
        }
        prompt = positional[0];
    }
    if (!model || !prompt || !output) {
        fprintf(stderr, "lcm generate: --model, --prompt and --output are required (see --help)\n");
        return 2;
    }
    if (seed < -1 || steps < 1 || steps > 1000 || width < 0 || height < 0 || batch < 1 || batch > 16 ||
        threads < 0 || threads > 1024) {
        fprintf(stderr, "lcm generate: --seed must be >= 0, --steps 1..1000, --batch 1..16, "
                        "--width/--height positive\n");
        return 2;
    }

    if (strcmp(precision, "fp32") != 0 && strcmp(precision, "bf16") != 0) {
        fprintf(stderr, "lcm generate: --precision %s: expected fp32 or bf16\n", precision);
        return 2;
    }
    lcm_vae_tiling tiling_mode;
    if (!strcmp(vae_tiling, "auto")) tiling_mode = LCM_VAE_TILING_AUTO;
    else if (!strcmp(vae_tiling, "on")) tiling_mode = LCM_VAE_TILING_ON;
    else if (!strcmp(vae_tiling, "off")) tiling_mode = LCM_VAE_TILING_OFF;
    else {
        fprintf(stderr, "lcm generate: --vae-tiling %s: expected on, off or auto\n", vae_tiling);
        return 2;
    }
    uint64_t budget = 0;
    if (memory_budget && !parse_size(memory_budget, &budget)) {
        fprintf(stderr, "lcm generate: --memory-budget %s: expected a size such as 6G, 512M or a "
                        "byte count\n", memory_budget);
        return 2;
    }
    if (control_preprocess && strcmp(control_preprocess, "canny") && strcmp(control_preprocess, "normalbae") &&
        strcmp(control_preprocess, "none")) {
        fprintf(stderr, "lcm generate: --control-preprocess %s: expected canny, normalbae or none\n",
                control_preprocess);
        return 2;
    }
    bool canny = control_preprocess && !strcmp(control_preprocess, "canny");
    bool normalbae = control_preprocess && !strcmp(control_preprocess, "normalbae");
    const char *misuse = NULL;
    if (strength != -1 && !init_image) misuse = "--strength needs --init-image";
    else if (control_image && !controlnet) misuse = "--control-image needs --controlnet";
    else if (controlnet && !control_image) misuse = "--controlnet needs --control-image";
    else if (control_preprocess && !control_image) misuse = "--control-preprocess needs --control-image";
    else if ((canny_low != -1 || canny_high != -1) && !canny)
        misuse = "--canny-low/--canny-high need --control-preprocess canny";
    else if (normalbae && !control_weights)
        misuse = "--control-preprocess normalbae needs --control-weights FILE (NormalBae weights, e.g. scannet.pt)";
    else if (control_weights && !normalbae) misuse = "--control-weights needs --control-preprocess normalbae";
    else if ((detect_resolution != -1 || image_resolution != -1) && !normalbae)
        misuse = "--detect-resolution/--image-resolution need --control-preprocess normalbae";
    else if (detect_resolution != -1 && (detect_resolution < 1 || detect_resolution > 8192))
        misuse = "--detect-resolution must be in 1..8192";
    else if (image_resolution != -1 && (image_resolution < 1 || image_resolution > 8192))
        misuse = "--image-resolution must be in 1..8192";
    else if (control_output && !control_image) misuse = "--control-output needs --control-image";
    if (misuse) {
        fprintf(stderr, "lcm generate: %s\n", misuse);
        return 2;
    }
    conditioning_images images;
    control_preprocessing pre = {
        .kind = control_preprocess,
        .canny_low = canny_low == -1 ? 100 : canny_low,
        .canny_high = canny_high == -1 ? 200 : canny_high,
        .weights = control_weights,
        .detect_resolution = detect_resolution == -1 ? LCM_NORMAL_DETECT_RESOLUTION : (int)detect_resolution,
        .image_resolution = image_resolution == -1 ? LCM_NORMAL_IMAGE_RESOLUTION : (int)image_resolution,
        .output = control_output,
    };
    rc = read_conditioning(init_image, control_image, &pre, &images);
    if (rc) return rc;

    // --lora FILE[:SCALE]: the paths are copied out of the specs, which may carry a scale suffix.
    lcm_lora loras[sizeof lora_specs.items / sizeof lora_specs.items[0]];
    char *lora_paths[sizeof lora_specs.items / sizeof lora_specs.items[0]] = {0};
    lcm_status st = args_loras(&lora_specs, loras, lora_paths);
    lcm_pipeline *pipeline = NULL;
    bool int8_model = false;
    lcm_quantization controlnet_kind = LCM_QUANTIZED_NONE;
    if (st == LCM_OK) {
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        options.variant = variant;
        options.threads = (int)threads;
        options.precision = strcmp(precision, "bf16") == 0 ? LCM_PRECISION_BF16 : LCM_PRECISION_FP32;
        options.loras = loras;
        options.lora_count = lora_specs.count;
        options.lora_lenient = lora_lenient;
        options.tokenizer = tokenizer;
        options.vae_tiling = tiling_mode;
        options.memory_budget = budget;
        options.no_cache = no_cache;
        // A hub id becomes its snapshot folder in the Hugging Face cache (downloading it the first
        // time); --controlnet and --taesd ids are repositories of one model at their root.
        lcm_hub_options hub;
        lcm_hub_options_init(&hub);
        hub.variant = variant;
        download_progress download;
        download_progress_attach(&download, quiet, &hub);
        char *model_path = NULL, *controlnet_path = NULL, *taesd_path = NULL;
        st = lcm_model_resolve(model, &hub, &model_path);
        if (st == LCM_OK && controlnet) st = lcm_single_model_resolve(controlnet, &hub, &controlnet_path);
        hub.variant = NULL; // the TAESD loads only its plain weights
        if (st == LCM_OK && taesd) st = lcm_single_model_resolve(taesd, &hub, &taesd_path);
        options.controlnet = controlnet_path;
        options.taesd = taesd_path;
        if (st == LCM_OK) st = lcm_pipeline_open(model_path, &options, &pipeline);
        int8_model = st == LCM_OK && lcm_model_quantization(model_path) == LCM_QUANTIZED_INT8;
        if (st == LCM_OK && controlnet) controlnet_kind = lcm_controlnet_quantization(controlnet_path);
        free(model_path);
        free(controlnet_path);
        free(taesd_path);
    }
    args_loras_free(lora_paths, lora_specs.count);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm generate: %s\n", st == LCM_ERR_OUT_OF_MEMORY ? "out of memory" : lcm_last_error());
        lcm_image_release(&images.init);
        lcm_image_release(&images.control);
        return exit_code_for(st);
    }
    if (!quiet && *lcm_pipeline_lora_report(pipeline))
        fprintf(stderr, "%s\n", lcm_pipeline_lora_report(pipeline));
    if (!quiet && int8_model)
        fprintf(stderr, "lcm: int8 UNet (8-bit weights and activations, %s)\n", lcm_int8_kernels());
    if (!quiet && controlnet_kind == LCM_QUANTIZED_INT8)
        fprintf(stderr, "lcm: int8 ControlNet (8-bit weights and activations, %s)\n", lcm_int8_kernels());
    else if (!quiet && controlnet_kind == LCM_QUANTIZED_WEIGHTS_ONLY)
        fprintf(stderr, "lcm: ControlNet with 8-bit weights (float32 compute)\n");

    lcm_request request;
    lcm_request_init(&request);
    request.prompt = prompt;
    request.seed = seed >= 0 ? (uint64_t)seed : random_seed();
    request.steps = (int)steps;
    request.guidance_scale = (float)guidance;
    request.width = (int)width;
    request.height = (int)height;
    request.batch = (int)batch;
    request.negative_prompt = negative_prompt;
    if (init_image) {
        request.init_image = &images.init;
        if (strength != -1) request.strength = (float)strength;
    }
    if (control_image) {
        request.control_image = &images.control;
        request.control_scale = (float)control_scale;
    }
    progress_state progress = {.on_terminal = !quiet && isatty(STDERR_FILENO)};
    request.progress = show_progress;
    request.progress_user_data = &progress;
    preview_state previews = {.dir = preview_dir, .batch = (int)batch};
    if (preview_dir && mkdir(preview_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "lcm generate: --preview-dir %s: %s\n", preview_dir, strerror(errno));
        lcm_pipeline_close(pipeline);
        lcm_image_release(&images.init);
        lcm_image_release(&images.control);
        return 2;
    }
    if (preview_dir) {
        request.preview = write_preview;
        request.preview_user_data = &previews;
    }
    if (seed < 0) fprintf(stderr, "seed: %llu\n", (unsigned long long)request.seed);

    lcm_result *result = NULL;
    st = lcm_generate(pipeline, &request, &result);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
        lcm_pipeline_close(pipeline);
        lcm_image_release(&images.init);
        lcm_image_release(&images.control);
        return exit_code_for(st);
    }
    rc = 0;
    for (int i = 0; i < result->count && rc == 0; i++) {
        const lcm_image *img = &result->images[i];
        char path[4096];
        // A1111's infotext: prompt, "Negative prompt: ..." line, then the settings line.
        lcm_infotext *info = NULL;
        char *parameters = NULL;
        st = lcm_pipeline_infotext(pipeline, &request, i, img->width, img->height, model_name(model), &info);
        if (st == LCM_OK && controlnet) {
            char unit[1024];
            snprintf(unit, sizeof unit, "Module: %s, Model: %s, Weight: %g",
                     canny ? "canny" : normalbae ? "normal_bae" : "none", model_name(controlnet), control_scale);
            st = lcm_infotext_set(info, "ControlNet", unit);
        }
        if (st == LCM_OK) st = lcm_infotext_format(info, &parameters);
        lcm_infotext_free(info);
        if (st != LCM_OK) {
            fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
            rc = 1;
            break;
        }
        batch_path(path, sizeof path, output, i, result->count);
        st = lcm_write_png(path, img, parameters);
        free(parameters);
        if (st != LCM_OK) {
            fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
            rc = 1;
        } else if (!quiet) {
            fprintf(stderr, "wrote %s (%dx%d, seed %llu)\n", path, img->width, img->height,
                    (unsigned long long)request.seed);
        }
    }
    lcm_result_free(result);
    lcm_pipeline_close(pipeline);
    lcm_image_release(&images.init);
    lcm_image_release(&images.control);
    return rc;
}
