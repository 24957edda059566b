// unet_bench: one UNet evaluation of a model folder, timed (wall and CPU seconds), for profiling.
//
//   unet_bench [--release] --model PIPELINE_DIR [--size 512] [--repeat 3]
//
// Random latents and text embeddings; the guidance condition when the UNet takes one. With
// OMP_NUM_THREADS=1 the CPU time is the compute time even on a busy machine.
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/model_folder.h"
#include "tools/flops.h"
#include "models/guidance_embedding.h"
#include "models/unet.h"
#include "ops/backend.h"

static int fail(const char *what) {
    fprintf(stderr, "unet_bench: %s: %s\n", what, lcm_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int size = 512, repeat = 3;
    bool release = false; // --release: each evaluation starts without kept buffers (fresh pages)
    int first = 1;
    if (argc > 1 && !strcmp(argv[1], "--release")) {
        release = true;
        first = 2;
    }
    for (int i = first; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
    }
    if (!model || size < 64 || size % 64 || repeat < 1 || repeat > 100) {
        fprintf(stderr, "usage: unet_bench [--release] --model PIPELINE_DIR [--size N (multiple of 64)] [--repeat N]\n");
        return 2;
    }
    model_folder folder;
    unet_model *unet = NULL;
    if (model_folder_open(model, NULL, &folder) != LCM_OK) return fail(model);
    ops_backend backend = ops_backend_from_environment(LCM_PRECISION_FP32);
    lcm_status st = unet_load(&backend, &folder, "unet", &unet);
    model_folder_close(&folder);
    if (st != LCM_OK) return fail("loading the UNet");
    const unet_config *cfg = unet_get_config(unet);
    int64_t side = size / 8;
    tensor *latents = tensor_new4(1, cfg->in_channels, side, side);
    tensor *embeds = tensor_new3(1, 77, cfg->cross_attention_dim);
    tensor *cond = cfg->time_cond_proj_dim > 0 ? tensor_new2(1, cfg->time_cond_proj_dim) : NULL;
    if (!latents || !embeds || (cfg->time_cond_proj_dim > 0 && !cond)) return fail("inputs");
    lcm_rng rng;
    lcm_rng_seed(&rng, 7);
    lcm_rng_randn(&rng, latents->data, (size_t)tensor_numel(latents));
    lcm_rng_randn(&rng, embeds->data, (size_t)tensor_numel(embeds));
    if (cond) lcm_guidance_embedding(7.5f, cfg->time_cond_proj_dim, cond->data);
    flop_count f = unet_flops(cfg, 1, (int)side, (int)side, 77);
    double gflop = flop_total(&f) * 1e-9;
    for (int r = 0; r <= repeat; r++) {
        tensor *out = NULL;
        if (release) tensor_release_cached();
        double w0 = bench_seconds(CLOCK_MONOTONIC), c0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
        if (unet_forward(unet, latents, 999.0f, embeds, cond, NULL, &out) != LCM_OK) return fail("forward");
        double wall = bench_seconds(CLOCK_MONOTONIC) - w0, cpu = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
        tensor_free(out);
        printf("%s: %.3f s wall, %.3f s CPU, %.1f GFLOP: %.1f GFLOP/s of CPU time\n",
               r == 0 ? "warm-up" : "step", wall, cpu, gflop, gflop / cpu);
        fflush(stdout);
    }
    tensor_free(latents);
    tensor_free(embeds);
    tensor_free(cond);
    unet_free(unet);
    tensor_release_cached();
    return 0;
}
