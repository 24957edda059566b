// lcm generate: one prompt -> PNG image(s), through the public C API only.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "app/args.h"
#include "app/commands.h"
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

int cmd_generate(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *output = NULL, *variant = NULL, *precision = "fp32";
    long seed = -1, steps = 4, width = 0, height = 0, batch = 1, threads = 0;
    double guidance = 8.5;
    bool quiet = false;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "diffusers model folder (LatentConsistencyModelPipeline)", false},
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
        {"output", ARG_STRING, &output, "PNG file to write", false},
        {"quiet", ARG_FLAG, &quiet, "no progress bar", false},
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

    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    options.variant = variant;
    options.precision = strcmp(precision, "bf16") == 0 ? LCM_PRECISION_BF16 : LCM_PRECISION_FP32;
    options.threads = (int)threads;
    lcm_pipeline *pipeline;
    lcm_status st = lcm_pipeline_open(model, &options, &pipeline);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
        return exit_code_for(st);
    }

    lcm_request request;
    lcm_request_init(&request);
    request.prompt = prompt;
    request.seed = seed >= 0 ? (uint64_t)seed : random_seed();
    request.steps = (int)steps;
    request.guidance_scale = (float)guidance;
    request.width = (int)width;
    request.height = (int)height;
    request.batch = (int)batch;
    progress_state progress = {.on_terminal = !quiet && isatty(STDERR_FILENO)};
    request.progress = show_progress;
    request.progress_user_data = &progress;
    if (seed < 0) fprintf(stderr, "seed: %llu\n", (unsigned long long)request.seed);

    lcm_result *result = NULL;
    st = lcm_generate(pipeline, &request, &result);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm generate: %s\n", lcm_last_error());
        lcm_pipeline_close(pipeline);
        return exit_code_for(st);
    }
    rc = 0;
    for (int i = 0; i < result->count && rc == 0; i++) {
        const lcm_image *img = &result->images[i];
        char parameters[8192], path[4096];
        snprintf(parameters, sizeof parameters,
                 "%s\nSteps: %d, Sampler: LCM, CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s%s",
                 prompt, request.steps, (double)request.guidance_scale,
                 (unsigned long long)request.seed, img->width, img->height, model_name(model),
                 result->count > 1 ? ", Batch size: " : "");
        if (result->count > 1) {
            size_t len = strlen(parameters);
            snprintf(parameters + len, sizeof parameters - len, "%d, Batch pos: %d", result->count, i);
        }
        batch_path(path, sizeof path, output, i, result->count);
        st = lcm_write_png(path, img, parameters);
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
    return rc;
}
