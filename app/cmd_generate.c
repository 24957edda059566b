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
#include "app/model_options.h"
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

// The options of `lcm generate` as given (-1: not given, where a default depends on others).
typedef struct generate_args {
    model_options model; // --model, --variant, --threads, --precision, --lora..., --controlnet, --taesd, ...
    const char *prompt, *negative_prompt, *output, *preview_dir, *vae_tiling, *memory_budget;
    long seed, steps, width, height, batch;
    double guidance;
    const char *init_image;
    double strength;
    const char *control_image;
    double control_scale;
    const char *control_preprocess, *control_weights, *control_output;
    double canny_low, canny_high;
    long detect_resolution, image_resolution;
    bool quiet;
} generate_args;

// Returns -1 to go on, else the exit code (after --help, or a usage error printed).
static int parse_args(int argc, char **argv, generate_args *a) {
    *a = (generate_args){.vae_tiling = "auto", .seed = -1, .steps = 4, .batch = 1, .guidance = 8.5,
                         .strength = -1, .control_scale = 1.0, .canny_low = -1, .canny_high = -1,
                         .detect_resolution = -1, .image_resolution = -1};
    model_options *m = &a->model;
    const arg_spec specs[] = {
        model_option_spec(m, MODEL_OPTION_MODEL, NULL),
        {"prompt", ARG_STRING, &a->prompt, "what to draw (or give it as the argument)", false},
        {"seed", ARG_INT, &a->seed, "random seed (default: random, printed and stored)", false},
        {"steps", ARG_INT, &a->steps, "denoising steps, 1..original_inference_steps (default 4)", false},
        {"guidance", ARG_FLOAT, &a->guidance, "guidance scale (default 8.5, diffusers' default)", false},
        {"width", ARG_INT, &a->width, "image width, a multiple of 8 (default: the model's size)", false},
        {"height", ARG_INT, &a->height, "image height, a multiple of 8 (default: the model's size)", false},
        {"batch", ARG_INT, &a->batch, "images per prompt (default 1; FILE-0.png, FILE-1.png, ...)", false},
        model_option_spec(m, MODEL_OPTION_VARIANT, NULL),
        model_option_spec(m, MODEL_OPTION_THREADS, NULL),
        model_option_spec(m, MODEL_OPTION_PRECISION, "fp32 (exact, default) or bf16 (half the memory)"),
        model_option_spec(m, MODEL_OPTION_LORA,
                          "LoRA adapter FILE[:SCALE] (.safetensors, kohya/diffusers/PEFT keys; scale 1 by "
                          "default; repeatable)"),
        model_option_spec(m, MODEL_OPTION_LORA_LENIENT, NULL),
        {"negative-prompt", ARG_STRING, &a->negative_prompt,
         "what to steer away from (UNets without LCM guidance embedding, guidance > 1)", false},
        {"init-image", ARG_STRING, &a->init_image, "img2img: start from this PNG/JPEG/WebP (its size is the output size)", false},
        {"strength", ARG_FLOAT, &a->strength, "img2img: how much to change the init image, 0 < s <= 1 (default 0.8)", false},
        model_option_spec(m, MODEL_OPTION_CONTROLNET, NULL),
        {"control-image", ARG_STRING, &a->control_image, "ControlNet conditioning image (PNG/JPEG/WebP)", false},
        {"control-scale", ARG_FLOAT, &a->control_scale, "ControlNet conditioning scale (default 1)", false},
        {"control-preprocess", ARG_STRING, &a->control_preprocess,
         "turn the control image (a photo) into a control map first: canny or normalbae "
         "(default: none, use it as is)",
         false},
        {"canny-low", ARG_FLOAT, &a->canny_low, "canny low threshold (default 100)", false},
        {"canny-high", ARG_FLOAT, &a->canny_high, "canny high threshold (default 200)", false},
        {"control-weights", ARG_STRING, &a->control_weights,
         "normalbae: NormalBae weights (scannet.pt or a .safetensors conversion)", false},
        {"detect-resolution", ARG_INT, &a->detect_resolution,
         "normalbae: short side the network sees, multiples of 64 (default 512)", false},
        {"image-resolution", ARG_INT, &a->image_resolution,
         "normalbae: short side of the normal map, multiples of 64 (default 512)", false},
        {"control-output", ARG_STRING, &a->control_output, "also write the control map to this PNG", false},
        model_option_spec(m, MODEL_OPTION_TOKENIZER, NULL),
        model_option_spec(m, MODEL_OPTION_TAESD, NULL),
        {"vae-tiling", ARG_STRING, &a->vae_tiling, "on, off or auto (default: tile only when the decode would not fit the memory budget)", false},
        {"memory-budget", ARG_STRING, &a->memory_budget, "memory for the whole process, e.g. 6G or 512M (default: 3/4 of RAM)", false},
        {"preview-dir", ARG_STRING, &a->preview_dir, "write a preview of each step there as step-K.png", false},
        {"output", ARG_STRING, &a->output, "PNG file to write", false},
        {"quiet", ARG_FLAG, &a->quiet, "no progress bar", false},
        model_option_spec(m, MODEL_OPTION_NO_CACHE, NULL),
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 1, &npositional,
                        "lcm generate --model DIR --prompt TEXT [options] --output FILE.png");
    if (rc) return rc == 1 ? 0 : 2;
    if (npositional == 1) {
        if (a->prompt) {
            fprintf(stderr, "lcm generate: give the prompt either with --prompt or as the argument\n");
            return 2;
        }
        a->prompt = positional[0];
    }
    return -1;
}

// The checks that need no file: ranges, and options that need others. Fills the parsed
// --vae-tiling and --memory-budget. Returns -1 to go on, else the exit code after printing why.
static int check_args(const generate_args *a, lcm_vae_tiling *tiling, uint64_t *budget) {
    if (!a->model.model || !a->prompt || !a->output) {
        fprintf(stderr, "lcm generate: --model, --prompt and --output are required (see --help)\n");
        return 2;
    }
    if (a->seed < -1 || a->steps < 1 || a->steps > 1000 || a->width < 0 || a->height < 0 || a->batch < 1 ||
        a->batch > 16 || a->model.threads < 0 || a->model.threads > 1024) {
        fprintf(stderr, "lcm generate: --seed must be >= 0, --steps 1..1000, --batch 1..16, "
                        "--width/--height positive\n");
        return 2;
    }
    if (!model_options_check(&a->model, "lcm generate")) return 2;
    if (!strcmp(a->vae_tiling, "auto")) *tiling = LCM_VAE_TILING_AUTO;
    else if (!strcmp(a->vae_tiling, "on")) *tiling = LCM_VAE_TILING_ON;
    else if (!strcmp(a->vae_tiling, "off")) *tiling = LCM_VAE_TILING_OFF;
    else {
        fprintf(stderr, "lcm generate: --vae-tiling %s: expected on, off or auto\n", a->vae_tiling);
        return 2;
    }
    *budget = 0;
    if (a->memory_budget && !parse_size(a->memory_budget, budget)) {
        fprintf(stderr, "lcm generate: --memory-budget %s: expected a size such as 6G, 512M or a "
                        "byte count\n", a->memory_budget);
        return 2;
    }
    const char *pre = a->control_preprocess;
    if (pre && strcmp(pre, "canny") && strcmp(pre, "normalbae") && strcmp(pre, "none")) {
        fprintf(stderr, "lcm generate: --control-preprocess %s: expected canny, normalbae or none\n", pre);
        return 2;
    }
    bool canny = pre && !strcmp(pre, "canny"), normalbae = pre && !strcmp(pre, "normalbae");
    const char *misuse = NULL;
    if (a->strength != -1 && !a->init_image) misuse = "--strength needs --init-image";
    else if (a->control_image && !a->model.controlnet) misuse = "--control-image needs --controlnet";
    else if (a->model.controlnet && !a->control_image) misuse = "--controlnet needs --control-image";
    else if (pre && !a->control_image) misuse = "--control-preprocess needs --control-image";
    else if ((a->canny_low != -1 || a->canny_high != -1) && !canny)
        misuse = "--canny-low/--canny-high need --control-preprocess canny";
    else if (normalbae && !a->control_weights)
        misuse = "--control-preprocess normalbae needs --control-weights FILE (NormalBae weights, e.g. scannet.pt)";
    else if (a->control_weights && !normalbae) misuse = "--control-weights needs --control-preprocess normalbae";
    else if ((a->detect_resolution != -1 || a->image_resolution != -1) && !normalbae)
        misuse = "--detect-resolution/--image-resolution need --control-preprocess normalbae";
    else if (a->detect_resolution != -1 && (a->detect_resolution < 1 || a->detect_resolution > 8192))
        misuse = "--detect-resolution must be in 1..8192";
    else if (a->image_resolution != -1 && (a->image_resolution < 1 || a->image_resolution > 8192))
        misuse = "--image-resolution must be in 1..8192";
    else if (a->control_output && !a->control_image) misuse = "--control-output needs --control-image";
    if (misuse) {
        fprintf(stderr, "lcm generate: %s\n", misuse);
        return 2;
    }
    return -1;
}

// Resolves the model, ControlNet and TAESD (hub ids downloaded) and loads the pipeline, saying on
// stderr what was fused and which 8-bit paths run. Returns -1 with *pipeline set, else the exit code.
static int load_pipeline(const generate_args *a, lcm_vae_tiling tiling, uint64_t budget, lcm_pipeline **pipeline) {
    model_setup setup;
    lcm_status st = model_setup_init(&setup, &a->model, a->quiet);
    setup.pipeline.vae_tiling = tiling;
    setup.pipeline.memory_budget = budget;
    char *model_path = NULL;
    if (st == LCM_OK) st = model_setup_resolve(&setup, a->model.model, &model_path);
    if (st == LCM_OK) st = model_setup_resolve_extras(&setup, &a->model);
    if (st == LCM_OK) st = lcm_pipeline_open(model_path, &setup.pipeline, pipeline);
    bool int8_model = st == LCM_OK && lcm_model_quantization(model_path) == LCM_QUANTIZED_INT8;
    lcm_quantization controlnet_kind = LCM_QUANTIZED_NONE;
    if (st == LCM_OK && a->model.controlnet) controlnet_kind = lcm_controlnet_quantization(setup.controlnet_path);
    free(model_path);
    model_setup_free(&setup);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm generate: %s\n", st == LCM_ERR_OUT_OF_MEMORY ? "out of memory" : lcm_last_error());
        return exit_code_for(st);
    }
    if (a->quiet) return -1;
    if (*lcm_pipeline_lora_report(*pipeline)) fprintf(stderr, "%s\n", lcm_pipeline_lora_report(*pipeline));
    if (int8_model) fprintf(stderr, "lcm: int8 UNet (8-bit weights and activations, %s)\n", lcm_int8_kernels());
    if (controlnet_kind == LCM_QUANTIZED_INT8)
        fprintf(stderr, "lcm: int8 ControlNet (8-bit weights and activations, %s)\n", lcm_int8_kernels());
    else if (controlnet_kind == LCM_QUANTIZED_WEIGHTS_ONLY)
        fprintf(stderr, "lcm: ControlNet with 8-bit weights (float32 compute)\n");
    return -1;
}

// The A1111 infotext of image `index`: prompt, "Negative prompt: ..." line, then the settings line,
// with the ControlNet unit when there is one. On success *parameters is malloc'd (free()).
static lcm_status image_parameters(lcm_pipeline *pipeline, const generate_args *a, const lcm_request *request,
                                   int index, const lcm_image *img, char **parameters) {
    lcm_infotext *info = NULL;
    lcm_status st = lcm_pipeline_infotext(pipeline, request, index, img->width, img->height,
                                          model_name(a->model.model), &info);
    if (st == LCM_OK && a->model.controlnet) {
        const char *pre = a->control_preprocess;
        const char *module = !pre ? "none" : !strcmp(pre, "canny") ? "canny" : !strcmp(pre, "normalbae") ? "normal_bae" : "none";
        char unit[1024];
        snprintf(unit, sizeof unit, "Module: %s, Model: %s, Weight: %g", module, model_name(a->model.controlnet),
                 a->control_scale);
        st = lcm_infotext_set(info, "ControlNet", unit);
    }
    if (st == LCM_OK) st = lcm_infotext_format(info, parameters);
    lcm_infotext_free(info);
    return st;
}

// Writes every image of `result` with its infotext (FILE.png, or FILE-0.png, FILE-1.png, ... for a
// batch). Returns the exit code.
static int write_images(lcm_pipeline *pipeline, const generate_args *a, const lcm_request *request,
                        const lcm_result *result) {
    for (int i = 0; i < result->count; i++) {
        const lcm_image *img = &result->images[i];
        char *parameters = NULL;
        lcm_status st = image_parameters(pipeline, a, request, i, img, &parameters);
        if (st != LCM_OK) {
            fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
            return 1;
        }
        char path[4096];
        batch_path(path, sizeof path, a->output, i, result->count);
        st = lcm_write_png(path, img, parameters);
        free(parameters);
        if (st != LCM_OK) {
            fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
            return 1;
        }
        if (!a->quiet)
            fprintf(stderr, "wrote %s (%dx%d, seed %llu)\n", path, img->width, img->height,
                    (unsigned long long)request->seed);
    }
    return 0;
}

// The request of the options, with the conditioning images read before and the callbacks' states.
static void make_request(const generate_args *a, const conditioning_images *images, progress_state *progress,
                         preview_state *previews, lcm_request *request) {
    lcm_request_init(request);
    request->prompt = a->prompt;
    request->seed = a->seed >= 0 ? (uint64_t)a->seed : random_seed();
    request->steps = (int)a->steps;
    request->guidance_scale = (float)a->guidance;
    request->width = (int)a->width;
    request->height = (int)a->height;
    request->batch = (int)a->batch;
    request->negative_prompt = a->negative_prompt;
    if (a->init_image) {
        request->init_image = &images->init;
        if (a->strength != -1) request->strength = (float)a->strength;
    }
    if (a->control_image) {
        request->control_image = &images->control;
        request->control_scale = (float)a->control_scale;
    }
    request->progress = show_progress;
    request->progress_user_data = progress;
    if (a->preview_dir) {
        request->preview = write_preview;
        request->preview_user_data = previews;
    }
}

// Loads the pipeline, generates and writes the images. Returns the exit code.
static int generate(const generate_args *a, lcm_vae_tiling tiling, uint64_t budget, const conditioning_images *images) {
    lcm_pipeline *pipeline = NULL;
    int rc = load_pipeline(a, tiling, budget, &pipeline);
    if (rc >= 0) return rc;
    progress_state progress = {.on_terminal = !a->quiet && isatty(STDERR_FILENO)};
    preview_state previews = {.dir = a->preview_dir, .batch = (int)a->batch};
    if (a->preview_dir && mkdir(a->preview_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "lcm generate: --preview-dir %s: %s\n", a->preview_dir, strerror(errno));
        lcm_pipeline_close(pipeline);
        return 2;
    }
    lcm_request request;
    make_request(a, images, &progress, &previews, &request);
    if (a->seed < 0) fprintf(stderr, "seed: %llu\n", (unsigned long long)request.seed);
    lcm_result *result = NULL;
    lcm_status st = lcm_generate(pipeline, &request, &result);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
        rc = exit_code_for(st);
    } else {
        rc = write_images(pipeline, a, &request, result);
    }
    lcm_result_free(result);
    lcm_pipeline_close(pipeline);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    generate_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    lcm_vae_tiling tiling;
    uint64_t budget;
    rc = check_args(&a, &tiling, &budget);
    if (rc >= 0) return rc;
    control_preprocessing pre = {
        .kind = a.control_preprocess,
        .canny_low = a.canny_low == -1 ? 100 : a.canny_low,
        .canny_high = a.canny_high == -1 ? 200 : a.canny_high,
        .weights = a.control_weights,
        .detect_resolution = a.detect_resolution == -1 ? LCM_NORMAL_DETECT_RESOLUTION : (int)a.detect_resolution,
        .image_resolution = a.image_resolution == -1 ? LCM_NORMAL_IMAGE_RESOLUTION : (int)a.image_resolution,
        .output = a.control_output,
    };
    conditioning_images images;
    rc = read_conditioning(a.init_image, a.control_image, &pre, &images);
    if (rc) return rc;
    rc = generate(&a, tiling, budget, &images);
    lcm_image_release(&images.init);
    lcm_image_release(&images.control);
    return rc;
}
