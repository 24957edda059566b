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
#include <dnnl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "app/args.h"
#include "app/commands.h"
#include "core/error.h"
#include "tools/flops.h"
#include "models/guidance_embedding.h"
#include "models/taesd.h"
#include "models/vae_tiled.h"
#include "ops/attention.h"
#include "ops/backend.h"
#include "ops/cpu.h"
#include "pipeline/control_image.h"
#include "pipeline/pipeline.h"

#define MAX_RUNS 100

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// This process's CPU seconds, all threads together: unlike wall time it does not count the time
// other processes held the cores (the machine may be shared).
static double cpu_seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median, min and max of n timings (n >= 1).
typedef struct spread {
    double median, min, max;
} spread;

static spread spread_of(const double *times, int n) {
    double sorted[MAX_RUNS];
    memcpy(sorted, times, sizeof(double) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(double), compare_doubles);
    spread s = {n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]), sorted[0], sorted[n - 1]};
    return s;
}

static void fill_pseudo_random(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) * 0x1p-23f - 1.0f; // uniform in [-1, 1)
    }
}

// ---- peak --------------------------------------------------------------------------------------

#define PEAK_TRIES 4

// Side of the square products that measure the peak (--peak-size; tests use a small one).
static int peak_size = 2048;

// Best GFLOP/s of dnnl_sgemm on peak_size^3 over PEAK_TRIES (after one warm-up); 0 on failure.
static double peak_fp32(void) {
    size_t n = (size_t)peak_size;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    double best = 0;
    if (a && b && c) {
        fill_pseudo_random(a, (int64_t)(n * n), 1);
        fill_pseudo_random(b, (int64_t)(n * n), 2);
        for (int i = 0; i <= PEAK_TRIES; i++) {
            double t0 = seconds_now();
            dnnl_sgemm('N', 'N', (dnnl_dim_t)n, (dnnl_dim_t)n, (dnnl_dim_t)n, 1.0f, a, (dnnl_dim_t)n, b,
                       (dnnl_dim_t)n, 0.0f, c, (dnnl_dim_t)n);
            double gflops = 2.0 * n * n * n / (seconds_now() - t0) * 1e-9;
            if (i > 0 && gflops > best) best = gflops;
        }
    }
    free(a);
    free(b);
    free(c);
    return best;
}

// The same with a oneDNN matmul primitive on `type` inputs (fp32 output). *impl receives the
// implementation oneDNN chose; a reference (non-JIT) one means the CPU has no kernels for that
// type, and then nothing is timed (it would take minutes) and 0 is returned.
static double peak_matmul(dnnl_data_type_t type, char *impl, size_t impl_size) {
    snprintf(impl, impl_size, "unavailable");
    dnnl_engine_t engine = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t matmul = NULL;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    double best = 0;
    dnnl_dims_t a_dims = {peak_size, peak_size}, b_dims = {peak_size, peak_size}, c_dims = {peak_size, peak_size};
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_matmul_desc_t desc;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&a_md, 2, a_dims, type, dnnl_ab) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&b_md, 2, b_dims, type, dnnl_ab) != dnnl_success ||
        dnnl_memory_desc_init_by_tag(&c_md, 2, c_dims, dnnl_f32, dnnl_ab) != dnnl_success ||
        dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md) != dnnl_success ||
        dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL) != dnnl_success ||
        dnnl_primitive_create(&matmul, pd) != dnnl_success)
        goto done;
    const char *name = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name)
        snprintf(impl, impl_size, "%s", name);
    if (!name || strstr(name, "ref")) goto done;
    const dnnl_memory_desc_t *mds[3] = {&a_md, &b_md, &c_md};
    for (int i = 0; i < 3; i++) {
        if (dnnl_memory_create(&mem[i], mds[i], engine, DNNL_MEMORY_ALLOCATE) != dnnl_success) goto done;
        void *data = NULL;
        dnnl_memory_get_data_handle(mem[i], &data);
        memset(data, 0x3f, dnnl_memory_desc_get_size(mds[i])); // small finite values
    }
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, mem[0]}, {DNNL_ARG_WEIGHTS, mem[1]}, {DNNL_ARG_DST, mem[2]}};
    for (int i = 0; i <= PEAK_TRIES; i++) {
        double t0 = seconds_now();
        if (dnnl_primitive_execute(matmul, stream, 3, args) != dnnl_success ||
            dnnl_stream_wait(stream) != dnnl_success) {
            best = 0;
            break;
        }
        double gflops = 2.0 * peak_size * peak_size * (double)peak_size / (seconds_now() - t0) * 1e-9;
        if (i > 0 && gflops > best) best = gflops;
    }
done:
    for (int i = 0; i < 3; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    if (matmul) dnnl_primitive_destroy(matmul);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (stream) dnnl_stream_destroy(stream);
    if (engine) dnnl_engine_destroy(engine);
    return best;
}

// The machine's peak in `precision`, measured now: fp32 as the better of oneDNN's two fp32
// products (on AVX2 CPUs dnnl_sgemm alone can read below what the model's layers reach); bf16 as a
// oneDNN bf16 matmul, or the fp32 peak where the CPU has no AVX512-BF16 (the kernels then keep
// bf16-requested layers in fp32, ops/dnnl_layer.h).
static void measure_peak(lcm_precision precision, double *gflops, char *method, size_t method_size) {
    char impl[96];
    if (precision == LCM_PRECISION_FP32 || !cpu_has_avx512_bf16()) {
        double sgemm = peak_fp32(), matmul = peak_matmul(dnnl_f32, impl, sizeof impl);
        *gflops = sgemm > matmul ? sgemm : matmul;
        snprintf(method, method_size, "%s %dx%dx%d, best of %d%s",
                 sgemm > matmul ? "dnnl_sgemm" : "oneDNN f32 matmul", peak_size, peak_size, peak_size,
                 PEAK_TRIES,
                 precision == LCM_PRECISION_FP32 ? "" : "; no AVX512-BF16 here: bf16 layers run in fp32");
    } else {
        *gflops = peak_matmul(dnnl_bf16, impl, sizeof impl);
        snprintf(method, method_size, "oneDNN bf16 matmul %dx%dx%d (%s), best of %d", peak_size,
                 peak_size, peak_size, impl, PEAK_TRIES);
    }
}

// ---- stages --------------------------------------------------------------------------------------

enum { STAGE_TEXT, STAGE_UNET, STAGE_VAE, STAGE_VAE_TILED, STAGE_TAESD, STAGE_END_TO_END, STAGE_COUNT };
static const char *const stage_names[STAGE_COUNT] = {"text_encoding", "unet_step", "vae_decode",
                                                     "vae_decode_tiled", "taesd_decode", "end_to_end"};

typedef struct bench_setup {
    lcm_pipeline *pipeline;
    const char *prompt;
    int width, height, steps;
    float guidance;
    bool cfg;                         // classifier-free guidance: the UNet step runs a batch of 2
    const lcm_image *control_image;   // --control-image (with a ControlNet), else NULL
    float control_scale;
    // --taesd: the decoders side by side. The end-to-end run keeps the pipeline's VAE.
    taesd_model *taesd;
    vae_tiling tiling;
} bench_setup;

// The inputs the stage timings share, made once: prompt embeddings, latents, guidance condition;
// for the UNet step, its batch (latents twice and [negative; prompt] embeddings under guidance)
// and the prepared control image.
typedef struct stage_inputs {
    tensor *embeds, *latents, *cond;
    tensor *step_latents, *step_context, *control;
} stage_inputs;

static lcm_status run_text(const bench_setup *b, tensor **embeds) {
    int32_t ids[CLIP_MAX_LENGTH];
    LCM_TRY(clip_tokenize(b->pipeline->tokenizer, b->prompt, ids, NULL));
    tensor_release_cached(); // as a generation does before its text encoder's pages come back
    lcm_status st = clip_text_forward(b->pipeline->text_encoder, ids, 1, CLIP_MAX_LENGTH, embeds, NULL);
    // As a generation does: the other stages run without the text encoder resident, and this
    // stage's time includes reading its weights back.
    clip_text_release_pages(b->pipeline->text_encoder);
    return st;
}

// One denoising step's networks as txt2img_run runs them: the ControlNet's residuals, then the UNet.
static lcm_status unet_step(const bench_setup *b, const stage_inputs *in, tensor **out) {
    lcm_pipeline *p = b->pipeline;
    if (!p->controlnet) return unet_forward(p->unet, in->step_latents, 999.0f, in->step_context, in->cond, NULL, out);
    int count = controlnet_get_config(p->controlnet)->unet.skip_count;
    tensor *down[UNET_MAX_SKIPS] = {0}, *mid = NULL;
    lcm_status st = controlnet_forward(p->controlnet, in->step_latents, 999.0f, in->step_context, in->control,
                                       b->control_scale, down, &mid);
    if (st == LCM_OK) {
        unet_residuals residuals = {(const tensor *const *)down, count, mid};
        st = unet_forward(p->unet, in->step_latents, 999.0f, in->step_context, in->cond, &residuals, out);
    }
    for (int j = 0; j < count; j++) tensor_free(down[j]);
    tensor_free(mid);
    return st;
}

// Runs stage `which` once and returns its wall seconds in *elapsed and its CPU seconds in *cpu.
static lcm_status run_stage(const bench_setup *b, const stage_inputs *in, int which, double *elapsed,
                            double *cpu) {
    double t0 = seconds_now(), c0 = cpu_seconds_now();
    tensor *out = NULL;
    lcm_status st = LCM_OK;
    if (which == STAGE_TEXT) {
        st = run_text(b, &out);
    } else if (which == STAGE_UNET) {
        st = unet_step(b, in, &out);
    } else if (which == STAGE_VAE) {
        st = vae_decode(b->pipeline->vae, in->latents, &out);
    } else if (which == STAGE_VAE_TILED) {
        st = vae_decode_tiled(b->pipeline->vae, in->latents, &b->tiling, NULL, NULL, &out);
    } else if (which == STAGE_TAESD) {
        st = taesd_decode(b->taesd, in->latents, &out);
    } else {
        lcm_request request;
        lcm_request_init(&request);
        request.prompt = b->prompt;
        request.steps = b->steps;
        request.width = b->width;
        request.height = b->height;
        request.guidance_scale = b->guidance;
        request.control_image = b->control_image;
        request.control_scale = b->control_scale;
        lcm_result *result = NULL;
        st = lcm_generate(b->pipeline, &request, &result);
        lcm_result_free(result);
    }
    *elapsed = seconds_now() - t0;
    *cpu = cpu_seconds_now() - c0;
    tensor_free(out);
    return st;
}

static lcm_status make_inputs(const bench_setup *b, stage_inputs *in) {
    const unet_config *uc = unet_get_config(b->pipeline->unet);
    int factor = vae_get_config(b->pipeline->vae)->downscale_factor;
    LCM_TRY(run_text(b, &in->embeds));
    in->latents = tensor_new4(1, uc->in_channels, b->height / factor, b->width / factor);
    if (!in->latents) return LCM_ERR_OUT_OF_MEMORY;
    fill_pseudo_random(in->latents->data, tensor_numel(in->latents), 7);
    if (uc->time_cond_proj_dim > 0) {
        in->cond = tensor_new2(1, uc->time_cond_proj_dim);
        if (!in->cond) return LCM_ERR_OUT_OF_MEMORY;
        lcm_guidance_embedding(b->guidance - 1.0f, uc->time_cond_proj_dim, in->cond->data);
    }
    if (!b->cfg) {
        in->step_latents = tensor_copy(in->latents);
        in->step_context = tensor_copy(in->embeds);
    } else {
        // [negative; positive] as a generation under guidance: the empty negative prompt and the prompt.
        tensor *negative = NULL;
        bench_setup empty = *b;
        empty.prompt = "";
        LCM_TRY(run_text(&empty, &negative));
        in->step_context = tensor_concat_batch(negative, in->embeds);
        in->step_latents = tensor_concat_batch(in->latents, in->latents);
        tensor_free(negative);
    }
    if (!in->step_latents || !in->step_context) return LCM_ERR_OUT_OF_MEMORY;
    if (b->control_image)
        LCM_TRY(control_image_prepare(b->control_image->rgb, b->control_image->width, b->control_image->height,
                                      b->width, b->height, b->cfg ? 2 : 1, &in->control));
    return LCM_OK;
}

static void free_inputs(stage_inputs *in) {
    tensor_free(in->embeds);
    tensor_free(in->latents);
    tensor_free(in->cond);
    tensor_free(in->step_latents);
    tensor_free(in->step_context);
    tensor_free(in->control);
}

// ---- report ----------------------------------------------------------------------------------------

typedef struct report {
    const char *model, *precision, *attention_kernel;
    int width, height, steps, runs, threads;
    double guidance;
    int lora_count;
    bool controlnet, cfg;
    double peak_gflops;
    char peak_method[160];
    bool timed[STAGE_COUNT]; // the decoder comparison rows only with --taesd
    char tiles[64];          // the tiled decode's tiles, in words
    double flops[STAGE_COUNT];
    flop_count parts[STAGE_COUNT];
    spread times[STAGE_COUNT];
    double cpu_median[STAGE_COUNT]; // CPU seconds of the process, all threads
    double peak_rss_bytes;
    double load_seconds, load_cpu_seconds; // lcm_pipeline_open: wall and this process's CPU time
    bool no_cache;
} report;

static void print_text(const report *r) {
    printf("lcm bench: %s, %dx%d, %d steps, %s, %d threads, attention kernel %s, %d runs after a "
           "warm-up\n",
           r->model, r->width, r->height, r->steps, r->precision, r->threads, r->attention_kernel, r->runs);
    printf("guidance %g%s, %d LoRA adapter(s) fused%s\n", r->guidance,
           r->cfg ? " (classifier-free: each UNet step runs a batch of 2)" : "", r->lora_count,
           r->controlnet ? ", ControlNet in every UNet step" : "");
    printf("peak %s: %.1f GFLOP/s (%s)\n", r->precision, r->peak_gflops, r->peak_method);
    printf("%-16s %10s %10s %10s %10s %10s %8s\n", "stage", "GFLOP", "median s", "min s", "max s",
           "GFLOP/s", "of peak");
    for (int i = 0; i < STAGE_COUNT; i++) {
        if (!r->timed[i]) continue;
        double rate = r->flops[i] / r->times[i].median * 1e-9;
        printf("%-16s %10.3f %10.3f %10.3f %10.3f %10.1f", stage_names[i], r->flops[i] * 1e-9,
               r->times[i].median, r->times[i].min, r->times[i].max, rate);
        if (r->peak_gflops > 0) printf(" %7.1f%%\n", 100.0 * rate / r->peak_gflops);
        else printf(" %8s\n", "n/a");
    }
    if (r->timed[STAGE_TAESD])
        printf("decoders: TAESD %.1fx faster than the VAE, tiled VAE (%s) %.2fx its time\n",
               r->times[STAGE_VAE].median / r->times[STAGE_TAESD].median, r->tiles,
               r->times[STAGE_VAE_TILED].median / r->times[STAGE_VAE].median);
    printf("load: %.2f s (%.2f s of CPU), packed-weight cache %s\n", r->load_seconds,
           r->load_cpu_seconds, r->no_cache ? "off" : "on");
    printf("peak RSS: %.2f GB\n", r->peak_rss_bytes * 1e-9);
    printf("GFLOP by kind (conv 3x3 / conv 1x1 / linear / attention):\n");
    for (int i = 0; i < STAGE_COUNT; i++)
        if (r->timed[i])
        printf("  %-16s %.1f / %.1f / %.1f / %.1f\n", stage_names[i], r->parts[i].conv3x3 * 1e-9,
               r->parts[i].conv1x1 * 1e-9, r->parts[i].linear * 1e-9, r->parts[i].attention * 1e-9);
}

// A JSON string: the model path may hold quotes or backslashes.
static void print_json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

static void print_json(const report *r) {
    printf("{\"model\": ");
    print_json_string(r->model);
    printf(", \"width\": %d, \"height\": %d, \"steps\": %d, \"precision\": \"%s\", \"threads\": %d, "
           "\"attention_kernel\": \"%s\", \"runs\": %d,\n \"guidance\": %.9g, \"classifier_free_guidance\": %s, "
           "\"loras\": %d, \"controlnet\": %s,\n \"peak_gflops\": %.9g, \"peak_method\": ",
           r->width, r->height, r->steps, r->precision, r->threads, r->attention_kernel, r->runs, r->guidance,
           r->cfg ? "true" : "false", r->lora_count, r->controlnet ? "true" : "false", r->peak_gflops);
    print_json_string(r->peak_method);
    printf(",\n \"stages\": {\n");
    int last = 0;
    for (int i = 0; i < STAGE_COUNT; i++)
        if (r->timed[i]) last = i;
    for (int i = 0; i < STAGE_COUNT; i++) {
        if (!r->timed[i]) continue;
        double rate = r->flops[i] / r->times[i].median * 1e-9;
        printf("  \"%s\": {\"gflop\": %.9g, \"median_s\": %.9g, \"min_s\": %.9g, \"max_s\": %.9g, "
               "\"median_cpu_s\": %.9g, \"gflops\": %.9g, \"ratio_to_peak\": %.9g,\n    \"gflop_conv3x3\": %.9g, "
               "\"gflop_conv1x1\": %.9g, \"gflop_linear\": %.9g, \"gflop_attention\": %.9g}%s\n",
               stage_names[i], r->flops[i] * 1e-9, r->times[i].median, r->times[i].min, r->times[i].max,
               r->cpu_median[i], rate, r->peak_gflops > 0 ? rate / r->peak_gflops : 0.0, r->parts[i].conv3x3 * 1e-9,
               r->parts[i].conv1x1 * 1e-9, r->parts[i].linear * 1e-9, r->parts[i].attention * 1e-9,
               i < last ? "," : "");
    }
    printf(" },\n \"load_s\": %.9g, \"load_cpu_s\": %.9g, \"packed_cache\": %s,\n \"peak_rss_bytes\": %.0f}\n",
           r->load_seconds, r->load_cpu_seconds, r->no_cache ? "false" : "true", r->peak_rss_bytes);
}

static double peak_rss_bytes(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (double)usage.ru_maxrss * 1024.0; // Linux reports kilobytes
}

// ---- attention kernels ------------------------------------------------------------------------------

typedef struct attention_shape {
    const char *what;
    int64_t nq, nk;
    int heads, head_dim;
} attention_shape;

// Best wall-clock and CPU seconds of `runs` calls (after a warm-up): on a shared machine the
// fastest run is the one least disturbed, and CPU time (all threads together) does not count the
// time other processes held the cores. False when the kernel cannot run here.
static bool time_attention(const tensor *q, const tensor *k, const tensor *v, int heads,
                           lcm_precision precision, attention_kernel kernel, int runs,
                           double *wall, double *cpu) {
    *wall = *cpu = INFINITY;
    for (int i = -1; i < runs; i++) {
        double t0 = seconds_now(), c0 = cpu_seconds_now();
        tensor *out = attention_with_kernel(q, k, v, heads, false, precision, kernel);
        double t = seconds_now() - t0, c = cpu_seconds_now() - c0;
        if (!out) return false;
        tensor_free(out);
        if (i >= 0 && t < *wall) *wall = t;
        if (i >= 0 && c < *cpu) *cpu = c;
    }
    return true;
}

static int bench_attention(int runs, bool json) {
    static const attention_shape shapes[] = {
        {"unet self 64x64", 4096, 4096, 8, 40},  {"unet self 32x32", 1024, 1024, 8, 80},
        {"unet self 16x16", 256, 256, 8, 160},   {"unet self 8x8", 64, 64, 8, 160},
        {"unet cross 64x64", 4096, 77, 8, 40},   {"unet cross 32x32", 1024, 77, 8, 80},
        {"unet cross 16x16", 256, 77, 8, 160},   {"unet cross 8x8", 64, 77, 8, 160},
        {"vae mid 64x64", 4096, 4096, 1, 512},
    };
    static const struct {
        const char *name;
        attention_kernel kernel;
        lcm_precision precision;
    } kernels[] = {
        {"gemm_tiles_fp32", ATTENTION_GEMM_TILES, LCM_PRECISION_FP32},
        {"flash_fp32", ATTENTION_FLASH, LCM_PRECISION_FP32},
        {"flash_bf16", ATTENTION_FLASH, LCM_PRECISION_BF16},
    };
    enum { KERNELS = sizeof kernels / sizeof kernels[0] };
    if (json) printf("{\"threads\": %d, \"runs\": %d, \"shapes\": [\n", omp_get_max_threads(), runs);
    else {
        printf("attention kernels, %d threads, best of %d runs: wall ms / CPU ms (all threads; "
               "GFLOP per CPU-second in brackets)\n",
               omp_get_max_threads(), runs);
        printf("%-18s %6s %5s %5s %4s %8s", "shape", "Nq", "Nk", "heads", "d", "GFLOP");
        for (int k = 0; k < KERNELS; k++) printf(" %24s", kernels[k].name);
        printf("\n");
    }
    size_t count = sizeof shapes / sizeof shapes[0];
    for (size_t s = 0; s < count; s++) {
        const attention_shape *sh = &shapes[s];
        int64_t c = (int64_t)sh->heads * sh->head_dim;
        tensor *q = tensor_new3(1, sh->nq, c), *k = tensor_new3(1, sh->nk, c), *v = tensor_new3(1, sh->nk, c);
        if (!q || !k || !v) {
            tensor_free(q);
            tensor_free(k);
            tensor_free(v);
            fprintf(stderr, "lcm bench: out of memory\n");
            return 1;
        }
        fill_pseudo_random(q->data, tensor_numel(q), 11);
        fill_pseudo_random(k->data, tensor_numel(k), 12);
        fill_pseudo_random(v->data, tensor_numel(v), 13);
        double flops = 4.0 * (double)sh->nq * (double)sh->nk * (double)c;
        double ms[KERNELS], cpu_ms[KERNELS];
        for (int kk = 0; kk < KERNELS; kk++) {
            double wall, cpu;
            bool ran = time_attention(q, k, v, sh->heads, kernels[kk].precision, kernels[kk].kernel, runs,
                                      &wall, &cpu);
            ms[kk] = ran ? 1e3 * wall : -1;
            cpu_ms[kk] = ran ? 1e3 * cpu : -1;
        }
        lcm_clear_error();
        if (json) {
            printf("  {\"shape\": \"%s\", \"nq\": %lld, \"nk\": %lld, \"heads\": %d, \"head_dim\": %d, "
                   "\"gflop\": %.4f",
                   sh->what, (long long)sh->nq, (long long)sh->nk, sh->heads, sh->head_dim, flops * 1e-9);
            for (int kk = 0; kk < KERNELS; kk++) {
                if (ms[kk] < 0) printf(", \"%s_ms\": null", kernels[kk].name);
                else
                    printf(", \"%s_ms\": %.4f, \"%s_cpu_ms\": %.4f", kernels[kk].name, ms[kk],
                           kernels[kk].name, cpu_ms[kk]);
            }
            printf("}%s\n", s + 1 < count ? "," : "");
        } else {
            printf("%-18s %6lld %5lld %5d %4d %8.3f", sh->what, (long long)sh->nq, (long long)sh->nk,
                   sh->heads, sh->head_dim, flops * 1e-9);
            for (int kk = 0; kk < KERNELS; kk++) {
                char cell[32];
                if (ms[kk] < 0) snprintf(cell, sizeof cell, "n/a");
                else snprintf(cell, sizeof cell, "%.1f/%.1f (%.0f)", ms[kk], cpu_ms[kk], flops / cpu_ms[kk] * 1e-6);
                printf(" %24s", cell);
            }
            printf("\n");
        }
        tensor_free(q);
        tensor_free(k);
        tensor_free(v);
    }
    if (json) printf("]}\n");
    return 0;
}

// ---- command ---------------------------------------------------------------------------------------

static int parse_size(const char *text, int *width, int *height) {
    char tail;
    if (sscanf(text, "%dx%d%c", width, height, &tail) != 2 || *width <= 0 || *height <= 0) return 0;
    return 1;
}

// --taesd: loads TAESD and fixes the tiling of the tiled VAE row: diffusers' enable_tiling() tiles
// where they split this size, else the largest halving of them that does (what --vae-tiling auto
// would reach for a tight budget), so that the row always measures a tiled decode.
static lcm_status add_decoders(bench_setup *b, report *r, const char *taesd, int lh, int lw) {
    // A hub id (madebyollin/taesd) becomes its snapshot folder, downloaded the first time.
    char *taesd_dir = NULL;
    LCM_TRY(lcm_single_model_resolve(taesd, NULL, &taesd_dir));
    // fp32 whatever the pipeline's precision, as this row has always measured it (lcm generate
    // --taesd loads TAESD with the pipeline's backend instead).
    ops_backend fp32 = ops_backend_from_environment(LCM_PRECISION_FP32);
    lcm_status st = taesd_load_dir(&fp32, taesd_dir, &b->taesd);
    free(taesd_dir);
    LCM_TRY(st);
    const vae_config *vc = vae_get_config(b->pipeline->vae);
    LCM_TRY(vae_tiling_defaults(vc, &b->tiling));
    while (!vae_tiling_applies(&b->tiling, lh, lw) && b->tiling.tile_latent_min_size >= 8)
        LCM_TRY(vae_tiling_init(&b->tiling, b->tiling.tile_sample_min_size / 2,
                                b->tiling.tile_latent_min_size / 2, b->tiling.tile_overlap_factor));
    if (!vae_tiling_applies(&b->tiling, lh, lw))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "--taesd: %dx%d latents are too small to tile", lw, lh);
    // The tiled decode's work: every tile decoded whole, overlaps included.
    flop_count tiled = {0};
    int rows = vae_tiling_tile_count(&b->tiling, lh), cols = vae_tiling_tile_count(&b->tiling, lw);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            int64_t y = (int64_t)i * b->tiling.stride_latent, x = (int64_t)j * b->tiling.stride_latent;
            int th = (int)(lh - y < b->tiling.tile_latent_min_size ? lh - y : b->tiling.tile_latent_min_size);
            int tw = (int)(lw - x < b->tiling.tile_latent_min_size ? lw - x : b->tiling.tile_latent_min_size);
            flop_count t = vae_decode_flops(vc, 1, th, tw);
            tiled.conv3x3 += t.conv3x3;
            tiled.conv1x1 += t.conv1x1;
            tiled.linear += t.linear;
            tiled.attention += t.attention;
        }
    snprintf(r->tiles, sizeof r->tiles, "%dx%d tiles of %d px", rows, cols, b->tiling.tile_sample_min_size);
    r->parts[STAGE_VAE_TILED] = tiled;
    r->parts[STAGE_TAESD] = taesd_decode_flops(taesd_get_config(b->taesd), 1, lh, lw);
    r->flops[STAGE_VAE_TILED] = flop_total(&tiled);
    r->flops[STAGE_TAESD] = flop_total(&r->parts[STAGE_TAESD]);
    r->timed[STAGE_VAE_TILED] = r->timed[STAGE_TAESD] = true;
    return LCM_OK;
}

// Why each layer runs where it does (ops/backend.h): the decisions this run used.
static void print_kernels(void) {
    const char *file = backend_tuning_file();
    printf("\nkernels (CPU: %s; %s)\n", cpu_features_get()->name, cpu_feature_list());
    if (!ops_backend_from_environment(LCM_PRECISION_FP32).tune)
        printf("built-in rules (LCM_TUNE=off)\n");
    else printf("chosen by measurement on this CPU, kept in %s; GFLOP/s as measured at tuning time\n",
                file[0] ? file : "(no cache folder)");
    backend_print_decisions(stdout);
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *size = "512x512", *precision_name = "fp32";
    const char *prompt = "a photograph of an astronaut riding a horse";
    const char *kernel_name = "auto", *taesd_dir = NULL, *controlnet = NULL, *control_image_path = NULL;
    long steps = 4, runs = 3, threads = 0, peak = 2048;
    double guidance = 8.5, control_scale = 1.0;
    bool json = false, attention_only = false, kernels = false, no_cache = false;
    args_list lora_specs = {0};
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "diffusers model folder (LatentConsistencyModelPipeline) or hub id ORG/NAME[@REVISION]", false},
        {"size", ARG_STRING, &size, "image WIDTHxHEIGHT (default 512x512)", false},
        {"steps", ARG_INT, &steps, "denoising steps of the end-to-end run (default 4)", false},
        {"precision", ARG_STRING, &precision_name, "fp32 (default) or bf16", false},
        {"runs", ARG_INT, &runs, "timed repetitions of each stage after the warm-up (default 3)", false},
        {"threads", ARG_INT, &threads, "worker threads (default: one per physical core)", false},
        {"prompt", ARG_STRING, &prompt, "prompt of the text-encoding and end-to-end runs", false},
        {"taesd", ARG_STRING, &taesd_dir, "TAESD folder or hub id: also time its decode and the tiled VAE decode beside the VAE's", false},
        {"guidance", ARG_FLOAT, &guidance, "guidance scale of the stages and the end-to-end run (default 8.5)", false},
        {"lora", ARG_STRING, &lora_specs, "LoRA adapter FILE[:SCALE] fused at load, as lcm generate (repeatable)", true},
        {"controlnet", ARG_STRING, &controlnet, "ControlNetModel folder or hub id: the UNet step includes it (needs --control-image)", false},
        {"control-image", ARG_STRING, &control_image_path, "ControlNet conditioning image (PNG/JPEG/WebP), resized to --size", false},
        {"control-scale", ARG_FLOAT, &control_scale, "ControlNet conditioning scale (default 1)", false},
        {"attention-kernel", ARG_STRING, &kernel_name, "auto (default), flash or gemm: the attention kernel the stages use", false},
        {"peak-size", ARG_INT, &peak, "side of the square matmul measuring the peak (default 2048)", false},
        {"json", ARG_FLAG, &json, "print machine-readable JSON instead of a table", false},
        {"attention", ARG_FLAG, &attention_only, "time the attention kernels on SD1.5 shapes instead (no model)", false},
        {"kernels", ARG_FLAG, &kernels, "also list each layer shape's kernel, its GFLOP/s and the runner-up", false},
        {"no-cache", ARG_FLAG, &no_cache, "neither read nor write the packed-weight cache (the load then packs every layer)", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 0, &npositional,
                        "lcm bench --model DIR [--size 512x512] [--steps 4] [--precision fp32|bf16] "
                        "[--runs N] [--threads N] [--taesd DIR|ID] [--guidance X] [--lora FILE[:SCALE]]... "
                        "[--controlnet DIR|ID --control-image FILE] [--kernels] [--json]\n       lcm bench --attention [--runs N] "
                        "[--threads N] [--json]");
    if (rc) return rc == 1 ? 0 : 2;
    if (runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "lcm bench: --runs %ld: expected 1..%d\n", runs, MAX_RUNS);
        return 2;
    }
    if (threads < 0 || threads > 1024) {
        fprintf(stderr, "lcm bench: --threads %ld: expected 0 (auto) or 1..1024\n", threads);
        return 2;
    }
    if (peak < 64 || peak > 16384) {
        fprintf(stderr, "lcm bench: --peak-size %ld: expected 64..16384\n", peak);
        return 2;
    }
    peak_size = (int)peak;
    if (!strcmp(kernel_name, "flash")) attention_set_default_kernel(ATTENTION_FLASH);
    else if (!strcmp(kernel_name, "gemm")) attention_set_default_kernel(ATTENTION_GEMM_TILES);
    else if (strcmp(kernel_name, "auto")) {
        fprintf(stderr, "lcm bench: --attention-kernel '%s': expected auto, flash or gemm\n", kernel_name);
        return 2;
    }
    if (attention_only) {
        if (threads > 0) omp_set_num_threads((int)threads);
        return bench_attention((int)runs, json);
    }
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    if (!strcmp(precision_name, "fp32")) options.precision = LCM_PRECISION_FP32;
    else if (!strcmp(precision_name, "bf16")) options.precision = LCM_PRECISION_BF16;
    else {
        fprintf(stderr, "lcm bench: --precision '%s': expected fp32 or bf16\n", precision_name);
        return 2;
    }
    options.threads = (int)threads;
    options.no_cache = no_cache;
    report r = {.model = model, .precision = precision_name, .attention_kernel = kernel_name, .runs = (int)runs, .steps = (int)steps};
    if (!model) {
        fprintf(stderr, "lcm bench: --model is required (or --attention)\n");
        return 2;
    }
    if (!parse_size(size, &r.width, &r.height)) {
        fprintf(stderr, "lcm bench: --size '%s': expected WIDTHxHEIGHT, e.g. 512x512\n", size);
        return 2;
    }
    if (!controlnet != !control_image_path) {
        fprintf(stderr, "lcm bench: %s\n", controlnet ? "--controlnet needs --control-image" : "--control-image needs --controlnet");
        return 2;
    }
    // --lora FILE[:SCALE]: the paths are copied out of the specs, which may carry a scale suffix.
    lcm_lora loras[sizeof lora_specs.items / sizeof lora_specs.items[0]];
    char *lora_paths[sizeof lora_specs.items / sizeof lora_specs.items[0]] = {0};
    lcm_image control_image = {0};
    char *controlnet_path = NULL;
    lcm_status st = args_loras(&lora_specs, loras, lora_paths);
    options.loras = loras;
    options.lora_count = lora_specs.count;
    // A hub id becomes its snapshot folder (downloaded the first time), as lcm generate --controlnet.
    if (st == LCM_OK && controlnet) st = lcm_single_model_resolve(controlnet, NULL, &controlnet_path);
    options.controlnet = controlnet_path;
    if (st == LCM_OK && control_image_path) st = lcm_image_read(control_image_path, &control_image);

    lcm_pipeline *pipeline = NULL;
    // A hub id becomes its snapshot folder in the Hugging Face cache (downloaded the first time).
    char *model_path = NULL;
    if (st == LCM_OK) st = lcm_model_resolve(model, NULL, &model_path);
    struct timespec cpu0, cpu1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu0);
    double load_start = seconds_now();
    if (st == LCM_OK) st = lcm_pipeline_open(model_path, &options, &pipeline);
    r.load_seconds = seconds_now() - load_start;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu1);
    r.load_cpu_seconds = (double)(cpu1.tv_sec - cpu0.tv_sec) + 1e-9 * (double)(cpu1.tv_nsec - cpu0.tv_nsec);
    r.no_cache = no_cache;
    free(model_path);
    free(controlnet_path);
    args_loras_free(lora_paths, lora_specs.count);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm bench: %s\n", lcm_last_error());
        lcm_image_release(&control_image);
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    bench_setup setup = {.pipeline = pipeline, .prompt = prompt, .width = r.width, .height = r.height,
                         .steps = (int)steps, .guidance = (float)guidance,
                         .control_image = control_image_path ? &control_image : NULL,
                         .control_scale = (float)control_scale};
    // The request checks (sizes, steps) before any timing, so a bad one fails fast and clearly.
    lcm_request request;
    lcm_request_init(&request);
    request.prompt = prompt;
    request.steps = (int)steps;
    request.width = r.width;
    request.height = r.height;
    request.guidance_scale = setup.guidance;
    request.control_image = setup.control_image;
    request.control_scale = setup.control_scale;
    lcm_request resolved;
    st = txt2img_validate(pipeline, &request, &resolved);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm bench: %s\n", lcm_last_error());
        lcm_pipeline_close(pipeline);
        lcm_image_release(&control_image);
        return 2;
    }
    // As txt2img_run: guidance above 1 on a UNet without LCM's guidance embedding runs both prompts.
    setup.cfg = unet_get_config(pipeline->unet)->time_cond_proj_dim == 0 && setup.guidance > 1.0f;
    r.guidance = guidance;
    r.cfg = setup.cfg;
    r.lora_count = lora_specs.count;
    r.controlnet = pipeline->controlnet != NULL;
    r.threads = omp_get_max_threads();

    measure_peak(options.precision, &r.peak_gflops, r.peak_method, sizeof r.peak_method);

    const unet_config *uc = unet_get_config(pipeline->unet);
    const vae_config *vc = vae_get_config(pipeline->vae);
    int lh = r.height / vc->downscale_factor, lw = r.width / vc->downscale_factor;
    flop_count text = clip_text_flops(clip_text_get_config(pipeline->text_encoder), 1, CLIP_MAX_LENGTH);
    int step_batch = setup.cfg ? 2 : 1;
    flop_count unet = unet_flops(uc, step_batch, lh, lw, CLIP_MAX_LENGTH);
    if (pipeline->controlnet) {
        flop_count control = controlnet_flops(controlnet_get_config(pipeline->controlnet), step_batch, lh, lw,
                                              CLIP_MAX_LENGTH);
        unet.conv3x3 += control.conv3x3;
        unet.conv1x1 += control.conv1x1;
        unet.linear += control.linear;
        unet.attention += control.attention;
    }
    flop_count vae = vae_decode_flops(vc, 1, lh, lw);
    r.parts[STAGE_TEXT] = text;
    r.parts[STAGE_UNET] = unet;
    r.parts[STAGE_VAE] = vae;
    // One step's networks per step (LCM's guidance is an embedding; classifier-free guidance doubles
    // the step's batch and encodes the negative prompt too).
    double steps_done = resolved.steps, texts = setup.cfg ? 2 : 1;
    r.parts[STAGE_END_TO_END] = (flop_count){
        texts * text.conv3x3 + steps_done * unet.conv3x3 + vae.conv3x3,
        texts * text.conv1x1 + steps_done * unet.conv1x1 + vae.conv1x1,
        texts * text.linear + steps_done * unet.linear + vae.linear,
        texts * text.attention + steps_done * unet.attention + vae.attention};
    r.flops[STAGE_TEXT] = flop_total(&text);
    r.flops[STAGE_UNET] = flop_total(&unet);
    r.flops[STAGE_VAE] = flop_total(&vae);
    r.flops[STAGE_END_TO_END] = flop_total(&r.parts[STAGE_END_TO_END]);
    r.timed[STAGE_TEXT] = r.timed[STAGE_UNET] = r.timed[STAGE_VAE] = r.timed[STAGE_END_TO_END] = true;
    if (taesd_dir) {
        st = add_decoders(&setup, &r, taesd_dir, lh, lw);
        if (st != LCM_OK) {
            fprintf(stderr, "lcm bench: %s\n", lcm_last_error());
            lcm_pipeline_close(pipeline);
            lcm_image_release(&control_image);
            return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
        }
    }

    stage_inputs inputs = {0};
    double times[STAGE_COUNT][MAX_RUNS], cpu_times[STAGE_COUNT][MAX_RUNS];
    st = make_inputs(&setup, &inputs);
    // Warm-up: every stage but the end-to-end run, which consists of them.
    for (int s = 0; s < STAGE_END_TO_END && st == LCM_OK; s++) {
        double ignored, ignored_cpu;
        if (r.timed[s]) st = run_stage(&setup, &inputs, s, &ignored, &ignored_cpu);
    }
    for (int run = 0; run < r.runs && st == LCM_OK; run++) {
        for (int s = 0; s < STAGE_COUNT && st == LCM_OK; s++)
            if (r.timed[s]) st = run_stage(&setup, &inputs, s, &times[s][run], &cpu_times[s][run]);
        if (json || st != LCM_OK) continue;
        fprintf(stderr, "run %d/%d:", run + 1, r.runs);
        for (int s = 0; s < STAGE_COUNT; s++)
            if (r.timed[s]) fprintf(stderr, " %s %.3f s", stage_names[s], times[s][run]);
        fprintf(stderr, "\n");
    }
    free_inputs(&inputs);
    taesd_free(setup.taesd);
    lcm_image_release(&control_image);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm bench: %s\n", lcm_last_error()[0] ? lcm_last_error() : lcm_status_name(st));
        lcm_pipeline_close(pipeline);
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    for (int s = 0; s < STAGE_COUNT; s++)
        if (r.timed[s]) {
            r.times[s] = spread_of(times[s], r.runs);
            r.cpu_median[s] = spread_of(cpu_times[s], r.runs).median;
        }
    r.peak_rss_bytes = peak_rss_bytes();
    // The peak again after the stages: a probe disturbed right after loading (the kernel flushing
    // or reclaiming gigabytes of pages) once read 60% of the quiet figure.
    double again;
    char method[sizeof r.peak_method];
    measure_peak(options.precision, &again, method, sizeof method);
    if (again > r.peak_gflops) {
        r.peak_gflops = again;
        snprintf(r.peak_method, sizeof r.peak_method, "%s", method);
    }
    lcm_pipeline_close(pipeline);
    if (json) print_json(&r);
    else print_text(&r);
    if (kernels && !json) print_kernels();
    return 0;
}
