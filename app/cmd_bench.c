// lcm bench: how fast each stage of a generation runs, as a share of what this machine can do.
//
// One run of the command measures, on the loaded model:
//   - the machine's peak in the chosen precision, with a large oneDNN product (fp32: dnnl_sgemm,
//     bf16: a matmul primitive on bf16 inputs), best of a few, right before the stages — the
//     machine may be shared, so ratios to a peak read in the same run hold better than seconds;
//   - after one warm-up of each stage, --runs repetitions of: text encoding, one UNet step, VAE
//     decode, and a whole lcm_generate (end to end), reporting median, min and max seconds; with
//     --taesd also the tiled VAE decode and the TAESD decode of the same latents, side by side;
//   - with --lora/--controlnet/--control-image (SD1.5 + LCM-LoRA + ControlNet) the same stages of
//     that pipeline: one UNet step is then the ControlNet and the UNet on the step's batch (two
//     rows under classifier-free guidance, --guidance above 1), as a generation runs it;
//   - each stage's FLOPs counted from the model configs at the requested size (src/tools/flops.h),
//     hence its GFLOP/s and ratio to the peak; and the process's peak RSS.
// `lcm bench --attention` instead times the attention kernels (src/ops/attention.h) on the
// Stable Diffusion 1.5 shapes at 512x512, needing no model.
//
// The measuring is the library's (lcm_bench_* in lcm.h, src/tools/bench*.c); this file runs the
// stages in order and app/bench_report.c prints the figures.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "app/args.h"
#include "app/bench_report.h"
#include "app/commands.h"
#include "app/model_options.h"
#include "lcm.h"

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// This process's CPU seconds, all threads together.
static double cpu_seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_bytes(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_maxrss * 1024.0; // Linux reports kilobytes
}

static int parse_size(const char *text, int *width, int *height) {
    char tail;
    if (sscanf(text, "%dx%d%c", width, height, &tail) != 2 || *width <= 0 || *height <= 0) return 0;
    return 1;
}

// Bad input (files, options) exits 2; running out of memory or an internal error exits 1.
static int exit_code_for(lcm_status st) { return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2; }

// The command's options, as given.
typedef struct bench_args {
    model_options model; // --model, --threads, --precision, --lora, --controlnet, --no-cache
    const char *size, *prompt, *attention_kernel, *taesd, *control_image;
    long steps, runs, peak_size;
    double guidance, control_scale;
    bool json, attention_only, kernels;
} bench_args;

// Returns -1 to go on, else the exit code.
static int parse_args(int argc, char **argv, bench_args *a) {
    *a = (bench_args){.model = {.precision = "fp32"}, .size = "512x512",
                      .prompt = "a photograph of an astronaut riding a horse", .attention_kernel = "auto",
                      .steps = 4, .runs = 3, .peak_size = 2048, .guidance = 8.5, .control_scale = 1.0};
    model_options *m = &a->model;
    const arg_spec specs[] = {
        model_option_spec(m, MODEL_OPTION_MODEL,
                          "diffusers model folder (LatentConsistencyModelPipeline) or hub id ORG/NAME[@REVISION]"),
        {"size", ARG_STRING, &a->size, "image WIDTHxHEIGHT (default 512x512)", false},
        {"steps", ARG_INT, &a->steps, "denoising steps of the end-to-end run (default 4)", false},
        model_option_spec(m, MODEL_OPTION_PRECISION, NULL),
        {"runs", ARG_INT, &a->runs, "timed repetitions of each stage after the warm-up (default 3)", false},
        model_option_spec(m, MODEL_OPTION_THREADS, "worker threads (default: one per physical core)"),
        {"prompt", ARG_STRING, &a->prompt, "prompt of the text-encoding and end-to-end runs", false},
        {"taesd", ARG_STRING, &a->taesd, "TAESD folder or hub id: also time its decode and the tiled VAE decode beside the VAE's", false},
        {"guidance", ARG_FLOAT, &a->guidance, "guidance scale of the stages and the end-to-end run (default 8.5)", false},
        model_option_spec(m, MODEL_OPTION_LORA, "LoRA adapter FILE[:SCALE] fused at load, as lcm generate (repeatable)"),
        model_option_spec(m, MODEL_OPTION_CONTROLNET,
                          "ControlNetModel folder or hub id: the UNet step includes it (needs --control-image)"),
        {"control-image", ARG_STRING, &a->control_image, "ControlNet conditioning image (PNG/JPEG/WebP), resized to --size", false},
        {"control-scale", ARG_FLOAT, &a->control_scale, "ControlNet conditioning scale (default 1)", false},
        {"attention-kernel", ARG_STRING, &a->attention_kernel, "auto (default), flash or gemm: the attention kernel the stages use", false},
        {"peak-size", ARG_INT, &a->peak_size, "side of the square matmul measuring the peak (default 2048)", false},
        {"json", ARG_FLAG, &a->json, "print machine-readable JSON instead of a table", false},
        {"attention", ARG_FLAG, &a->attention_only, "time the attention kernels on SD1.5 shapes instead (no model)", false},
        {"kernels", ARG_FLAG, &a->kernels, "also list each layer shape's kernel, its GFLOP/s and the runner-up", false},
        model_option_spec(m, MODEL_OPTION_NO_CACHE,
                          "neither read nor write the packed-weight cache (the load then packs every layer)"),
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 0, &npositional,
                        "lcm bench --model DIR [--size 512x512] [--steps 4] [--precision fp32|bf16] "
                        "[--runs N] [--threads N] [--taesd DIR|ID] [--guidance X] [--lora FILE[:SCALE]]... "
                        "[--controlnet DIR|ID --control-image FILE] [--kernels] [--json]\n       lcm bench --attention [--runs N] "
                        "[--threads N] [--json]");
    if (rc) return rc == 1 ? 0 : 2;
    if (a->runs < 1 || a->runs > BENCH_MAX_RUNS) {
        fprintf(stderr, "lcm bench: --runs %ld: expected 1..%d\n", a->runs, BENCH_MAX_RUNS);
        return 2;
    }
    if (m->threads < 0 || m->threads > 1024) {
        fprintf(stderr, "lcm bench: --threads %ld: expected 0 (auto) or 1..1024\n", m->threads);
        return 2;
    }
    if (a->peak_size < 64 || a->peak_size > 16384) {
        fprintf(stderr, "lcm bench: --peak-size %ld: expected 64..16384\n", a->peak_size);
        return 2;
    }
    if (!strcmp(a->attention_kernel, "flash")) lcm_set_attention_kernel(LCM_ATTENTION_FLASH);
    else if (!strcmp(a->attention_kernel, "gemm")) lcm_set_attention_kernel(LCM_ATTENTION_GEMM);
    else if (strcmp(a->attention_kernel, "auto")) {
        fprintf(stderr, "lcm bench: --attention-kernel '%s': expected auto, flash or gemm\n", a->attention_kernel);
        return 2;
    }
    return -1;
}

// Checks the model options, then loads the pipeline (timed into r) and the control image. Returns
// -1 to go on, else the exit code after printing why.
static int load(const bench_args *a, bench_report *r, lcm_precision *precision, lcm_pipeline **pipeline,
                lcm_image *control_image) {
    const model_options *m = &a->model;
    if (!model_options_check(m, "lcm bench")) return 2;
    if (!m->model) {
        fprintf(stderr, "lcm bench: --model is required (or --attention)\n");
        return 2;
    }
    if (!parse_size(a->size, &r->width, &r->height)) {
        fprintf(stderr, "lcm bench: --size '%s': expected WIDTHxHEIGHT, e.g. 512x512\n", a->size);
        return 2;
    }
    if (!m->controlnet != !a->control_image) {
        fprintf(stderr, "lcm bench: %s\n",
                m->controlnet ? "--controlnet needs --control-image" : "--control-image needs --controlnet");
        return 2;
    }
    model_setup setup;
    lcm_status st = model_setup_init(&setup, m, false);
    *precision = setup.pipeline.precision;
    if (st == LCM_OK) st = model_setup_resolve_extras(&setup, m);
    if (st == LCM_OK && a->control_image) st = lcm_image_read(a->control_image, control_image);
    char *model_path = NULL;
    if (st == LCM_OK) st = model_setup_resolve(&setup, m->model, &model_path);
    double load_start = seconds_now(), load_cpu_start = cpu_seconds_now();
    if (st == LCM_OK) st = lcm_pipeline_open(model_path, &setup.pipeline, pipeline);
    r->load_seconds = seconds_now() - load_start;
    r->load_cpu_seconds = cpu_seconds_now() - load_cpu_start;
    free(model_path);
    model_setup_free(&setup);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm bench: %s\n", lcm_last_error());
        lcm_image_release(control_image);
        return exit_code_for(st);
    }
    return -1;
}

// One warm-up of every stage but the end-to-end run (which consists of them), then r->runs timed
// repetitions of every stage, each run's times on stderr unless the output is JSON.
static lcm_status time_stages(lcm_bench *bench, bench_report *r, bool json) {
    const lcm_bench_plan *plan = &r->plan;
    double times[LCM_BENCH_STAGE_COUNT][BENCH_MAX_RUNS], cpu_times[LCM_BENCH_STAGE_COUNT][BENCH_MAX_RUNS];
    lcm_status st = LCM_OK;
    for (int s = 0; s < LCM_BENCH_END_TO_END && st == LCM_OK; s++) {
        double ignored, ignored_cpu;
        if (plan->timed[s]) st = lcm_bench_run(bench, s, &ignored, &ignored_cpu);
    }
    for (int run = 0; run < r->runs && st == LCM_OK; run++) {
        for (int s = 0; s < LCM_BENCH_STAGE_COUNT && st == LCM_OK; s++)
            if (plan->timed[s]) st = lcm_bench_run(bench, s, &times[s][run], &cpu_times[s][run]);
        if (json || st != LCM_OK) continue;
        fprintf(stderr, "run %d/%d:", run + 1, r->runs);
        for (int s = 0; s < LCM_BENCH_STAGE_COUNT; s++)
            if (plan->timed[s]) fprintf(stderr, " %s %.3f s", lcm_bench_stage_name(s), times[s][run]);
        fprintf(stderr, "\n");
    }
    if (st != LCM_OK) return st;
    for (int s = 0; s < LCM_BENCH_STAGE_COUNT; s++)
        if (plan->timed[s]) {
            r->times[s] = bench_spread_of(times[s], r->runs);
            r->cpu_median[s] = bench_spread_of(cpu_times[s], r->runs).median;
        }
    return LCM_OK;
}

int cmd_bench(int argc, char **argv) {
    bench_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) return rc;
    if (a.attention_only) {
        lcm_compute_threads((int)a.model.threads);
        return bench_attention_report((int)a.runs, a.json);
    }
    bench_report r = {.model = a.model.model, .precision = a.model.precision, .attention_kernel = a.attention_kernel,
                      .runs = (int)a.runs, .steps = (int)a.steps, .guidance = a.guidance,
                      .lora_count = a.model.lora_specs.count, .controlnet = a.model.controlnet != NULL,
                      .no_cache = a.model.no_cache};
    lcm_precision precision;
    lcm_pipeline *pipeline = NULL;
    lcm_image control_image = {0};
    rc = load(&a, &r, &precision, &pipeline, &control_image);
    if (rc >= 0) return rc;
    r.threads = lcm_compute_threads(0);

    // A TAESD hub id (madebyollin/taesd) becomes its snapshot folder, downloaded the first time.
    char *taesd_dir = NULL;
    lcm_status st = a.taesd ? lcm_single_model_resolve(a.taesd, NULL, &taesd_dir) : LCM_OK;
    lcm_bench_options options = {.prompt = a.prompt, .width = r.width, .height = r.height, .steps = (int)a.steps,
                                 .guidance = (float)a.guidance, .control_image = a.control_image ? &control_image : NULL,
                                 .control_scale = (float)a.control_scale, .taesd = taesd_dir};
    lcm_bench *bench = NULL;
    if (st == LCM_OK) st = lcm_bench_open(pipeline, &options, &bench, &r.plan);
    free(taesd_dir);
    if (st == LCM_OK) {
        r.peak_gflops = lcm_bench_peak(precision, (int)a.peak_size, r.peak_method, sizeof r.peak_method);
        st = time_stages(bench, &r, a.json);
    }
    lcm_bench_close(bench);
    lcm_image_release(&control_image);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm bench: %s\n", lcm_last_error()[0] ? lcm_last_error() : lcm_status_name(st));
        lcm_pipeline_close(pipeline);
        return exit_code_for(st);
    }
    r.peak_rss_bytes = peak_rss_bytes();
    // The peak again after the stages: a probe disturbed right after loading (the kernel flushing
    // or reclaiming gigabytes of pages) once read 60% of the quiet figure.
    char method[sizeof r.peak_method];
    double again = lcm_bench_peak(precision, (int)a.peak_size, method, sizeof method);
    if (again > r.peak_gflops) {
        r.peak_gflops = again;
        snprintf(r.peak_method, sizeof r.peak_method, "%s", method);
    }
    lcm_pipeline_close(pipeline);
    if (a.json) bench_print_json(&r);
    else bench_print_text(&r);
    if (a.kernels && !a.json) bench_print_kernels();
    return 0;
}
