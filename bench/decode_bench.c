// decode_bench: times the three decoders on the same random latents, interleaved so that a noisy
// machine slows them alike, and prints the medians. The order is lcm bench's: VAE, tiled VAE,
// TAESD, so TAESD starts from the tiled decode's kept buffers there as here.
//
//   decode_bench [--taesd-only] [--skip-tiled] --model PIPELINE_DIR --taesd TAESD_DIR [--size 512] [--repeat 3]
//                [--conv-kernel auto|direct|sgemm|onednn]
//
// Only the pipeline's VAE is loaded. The tiled decode uses diffusers' enable_tiling() tiles when
// they split this size, else the largest halving of them that does (as --vae-tiling auto would).
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "bench_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/model_folder.h"
#include "models/taesd.h"
#include "models/vae.h"
#include "models/vae_tiled.h"
#include "ops/backend.h"
#include "ops/ops.h"

// Page faults of the process so far: a decoder that starts on pages nobody touched pays for
// every one of them (see the buffer reuse in core/tensor.h).
static long page_faults_now(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_minflt + usage.ru_majflt;
}

static double median(double *v, int n) {
    bench_sort(v, n);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int fail(const char *what) {
    fprintf(stderr, "decode_bench: %s: %s\n", what, lcm_last_error());
    return 1;
}

#define MAX_REPEAT 32

int main(int argc, char **argv) {
    const char *model = NULL, *taesd_dir = NULL;
    int size = 512, repeat = 3;
    bool taesd_only = false, skip_tiled = false;
    // fp32 as the environment asks; --conv-kernel forces one kernel for every convolution.
    ops_backend backend = ops_backend_from_environment(LCM_PRECISION_FP32);
    int first = 1;
    for (; first < argc; first++) {
        if (!strcmp(argv[first], "--taesd-only")) taesd_only = true;
        else if (!strcmp(argv[first], "--skip-tiled")) skip_tiled = true;
        else break;
    }
    for (int i = first; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--taesd")) taesd_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--conv-kernel")) {
            const char *k = argv[i + 1];
            conv_kernel kernel = !strcmp(k, "direct")   ? CONV_KERNEL_DIRECT
                                 : !strcmp(k, "sgemm")  ? CONV_KERNEL_SGEMM
                                 : !strcmp(k, "onednn") ? CONV_KERNEL_ONEDNN
                                                        : CONV_KERNEL_AUTO;
            backend.forced_conv = kernel;
        }
    }
    if (!model || !taesd_dir || size < 64 || size % 8 || repeat < 1 || repeat > MAX_REPEAT) {
        fprintf(stderr, "usage: decode_bench --model PIPELINE_DIR --taesd TAESD_DIR [--size N] "
                        "[--repeat 1..%d]\n", MAX_REPEAT);
        return 2;
    }
    model_folder folder;
    vae_model *vae = NULL;
    taesd_model *taesd = NULL;
    if (model_folder_open(model, NULL, &folder) != LCM_OK) return fail(model);
    lcm_status st = vae_load(&backend, &folder, "vae", &vae);
    model_folder_close(&folder);
    if (st != LCM_OK) return fail("loading the VAE");
    if (taesd_load_dir(&backend, taesd_dir, &taesd) != LCM_OK) return fail("loading TAESD");
    const vae_config *cfg = vae_get_config(vae);
    int f = cfg->downscale_factor;
    int64_t side = size / f;
    vae_tiling tiling;
    if (vae_tiling_defaults(cfg, &tiling) != LCM_OK) return fail("tiling");
    while (!vae_tiling_applies(&tiling, side, side) && tiling.tile_latent_min_size >= 32)
        vae_tiling_init(&tiling, tiling.tile_sample_min_size / 2, tiling.tile_latent_min_size / 2,
                        tiling.tile_overlap_factor);
    printf("decode %dx%d: VAE %lld params, TAESD %lld params; tiles %d px (%d latents, %dx%d tiles)\n",
           size, size, (long long)vae_param_count(vae), (long long)taesd_param_count(taesd),
           tiling.tile_sample_min_size, tiling.tile_latent_min_size,
           vae_tiling_tile_count(&tiling, side), vae_tiling_tile_count(&tiling, side));

    // Random SD-like latents (already divided by the scaling factor, as decoders receive them).
    tensor *latents = tensor_new4(1, cfg->latent_channels, side, side);
    if (!latents) return fail("latents");
    lcm_rng rng;
    lcm_rng_seed(&rng, 42);
    lcm_rng_randn(&rng, latents->data, (size_t)tensor_numel(latents));
    for (int64_t i = 0; i < tensor_numel(latents); i++) latents->data[i] *= 0.8f / cfg->scaling_factor;

    double t_vae[MAX_REPEAT], t_tiled[MAX_REPEAT], t_taesd[MAX_REPEAT];
    double cpu_vae[MAX_REPEAT], cpu_taesd[MAX_REPEAT];
    for (int r = 0; r < repeat; r++) {
        tensor *image = NULL;
        double t0 = bench_seconds(CLOCK_MONOTONIC), c0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
        if (!taesd_only && vae_decode(vae, latents, &image) != LCM_OK) return fail("VAE decode");
        t_vae[r] = bench_seconds(CLOCK_MONOTONIC) - t0;
        cpu_vae[r] = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
        tensor_free(image);
        image = NULL;
        t0 = bench_seconds(CLOCK_MONOTONIC);
        if (!taesd_only && !skip_tiled && vae_decode_tiled(vae, latents, &tiling, NULL, NULL, &image) != LCM_OK)
            return fail("tiled VAE decode");
        t_tiled[r] = bench_seconds(CLOCK_MONOTONIC) - t0;
        tensor_free(image);
        image = NULL;
        t0 = bench_seconds(CLOCK_MONOTONIC);
        c0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
        long faults = page_faults_now();
        if (taesd_decode(taesd, latents, &image) != LCM_OK) return fail("TAESD decode");
        t_taesd[r] = bench_seconds(CLOCK_MONOTONIC) - t0;
        cpu_taesd[r] = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
        faults = page_faults_now() - faults;
        tensor_free(image);
        printf("run %d: VAE %.3f s, tiled VAE %.3f s, TAESD %.3f s (CPU time: VAE %.3f s, TAESD %.3f s; "
               "TAESD page faults %ld)\n",
               r + 1, t_vae[r], t_tiled[r], t_taesd[r], cpu_vae[r], cpu_taesd[r], faults);
        fflush(stdout);
    }
    double vae_s = median(t_vae, repeat), tiled_s = median(t_tiled, repeat);
    double taesd_s = median(t_taesd, repeat);
    printf("median of %d: VAE %.3f s, tiled VAE %.3f s, TAESD %.3f s; TAESD is %.1fx faster than "
           "the VAE\n", repeat, vae_s, tiled_s, taesd_s, vae_s / taesd_s);
    double vae_cpu = median(cpu_vae, repeat), taesd_cpu = median(cpu_taesd, repeat);
    printf("median CPU time: VAE %.3f s, TAESD %.3f s: %.1fx\n", vae_cpu, taesd_cpu,
           vae_cpu / taesd_cpu);
    tensor_free(latents);
    taesd_free(taesd);
    vae_free(vae);
    return 0;
}
