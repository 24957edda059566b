// linear_bench: the linear layer kernels side by side on the layer shapes of the UNet at 512x512
// (64x64 latents) and the cross-attention K/V projections, interleaved so that a noisy machine
// slows them alike.
//
//   linear_bench [--cpu-time] [--repeat 5] [--only NAME]
//
// For each shape and kernel (direct AVX2, gemm_f32 = sgemm on the plain weight, oneDNN matmul on
// prepacked weights), the median time of one linear_forward on random weights and inputs and its
// GFLOP/s, then the sum weighted by how often one UNet evaluation runs each shape. Kernels this
// CPU cannot run are skipped. Use OMP_NUM_THREADS=1 with --cpu-time on a
// shared machine.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "core/error.h"
#include "ops/backend.h"
#include "ops/ops.h"

typedef struct shape {
    const char *name;
    int64_t rows;
    int in, out;
    int per_unet; // how many layers of this shape one UNet evaluation (SD 1.5, 512x512) runs
} shape;

// Per transformer at N tokens x C channels: proj_in, proj_out, self-attention q/k/v/out and
// cross-attention q/out are N x C -> C (8), the GEGLU N x C -> 8C, ff out N x 4C -> C, and the
// cross-attention k/v 77 x 768 -> C (2). 5 transformers at each of 64x64, 32x32 and 16x16, 1 at
// 8x8. The time embedding (linear_1, linear_2, 22 time_emb_proj) is about 17 one-row 1280 x 1280.
static const shape shapes[] = {
    {"4096x320->320", 4096, 320, 320, 40},
    {"4096x320->2560", 4096, 320, 2560, 5},
    {"4096x1280->320", 4096, 1280, 320, 5},
    {"1024x640->640", 1024, 640, 640, 40},
    {"1024x640->5120", 1024, 640, 5120, 5},
    {"1024x2560->640", 1024, 2560, 640, 5},
    {"256x1280->1280", 256, 1280, 1280, 40},
    {"256x1280->10240", 256, 1280, 10240, 5},
    {"256x5120->1280", 256, 5120, 1280, 5},
    {"64x1280->1280", 64, 1280, 1280, 8},
    {"64x1280->10240", 64, 1280, 10240, 1},
    {"64x5120->1280", 64, 5120, 1280, 1},
    {"77x768->320", 77, 768, 320, 10},
    {"77x768->640", 77, 768, 640, 10},
    {"77x768->1280", 77, 768, 1280, 12},
    {"1x1280->1280", 1, 1280, 1280, 17},
};

static const struct {
    const char *name;
    linear_kernel kernel;
} kernels[] = {{"direct", LINEAR_KERNEL_DIRECT}, {"sgemm", LINEAR_KERNEL_SGEMM}, {"oneDNN", LINEAR_KERNEL_ONEDNN}};
#define KERNELS (sizeof kernels / sizeof kernels[0])
#define MAX_REPEAT 64

// CPU seconds of the process (--cpu-time): with OMP_NUM_THREADS=1, the compute time even while
// other processes share the core; else wall-clock seconds.
static bool use_cpu_time;

static double now(void) { return bench_seconds(use_cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC); }

int main(int argc, char **argv) {
    // The kernels are named per layer below; the backend only gives the precision.
    ops_backend fp32 = ops_backend_from_environment(LCM_PRECISION_FP32);
    int repeat = 5;
    const char *only = NULL;
    int first = 1;
    if (argc > 1 && !strcmp(argv[1], "--cpu-time")) {
        use_cpu_time = true;
        first = 2;
    }
    for (int i = first; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--only")) only = argv[i + 1];
    }
    if (repeat < 1 || repeat > MAX_REPEAT) {
        fprintf(stderr, "usage: linear_bench [--cpu-time] [--repeat 1..%d] [--only NAME]\n", MAX_REPEAT);
        return 2;
    }
    unsigned state = 12345;
    // The median times weighted by per_unet: the linear layers of one UNet evaluation.
    double unet_seconds[KERNELS] = {0}, unet_gflop = 0;
    bool unet_complete = !only;
    printf("%-18s %12s %12s %12s   (median of %d; ms and GFLOP/s)\n", "layer", "direct", "sgemm",
           "oneDNN", repeat);
    if (use_cpu_time) printf("(CPU time)\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        if (only && !strstr(sh->name, only)) continue;
        int64_t weights = (int64_t)sh->out * sh->in;
        float *weight = bench_random_floats(weights, 1.0f / sqrtf((float)sh->in), &state);
        float *bias = bench_random_floats(sh->out, 1.0f, &state);
        linear layers[KERNELS];
        bool ok[KERNELS];
        for (size_t k = 0; k < KERNELS; k++) {
            layers[k] = (linear){.in = sh->in, .out = sh->out};
            layers[k].weight = malloc(sizeof(float) * (size_t)weights);
            layers[k].bias = malloc(sizeof(float) * (size_t)sh->out);
            memcpy(layers[k].weight, weight, sizeof(float) * (size_t)weights);
            memcpy(layers[k].bias, bias, sizeof(float) * (size_t)sh->out);
            ok[k] = linear_pack_kernel(&layers[k], &fp32, kernels[k].kernel) == LCM_OK;
        }
        tensor *x = tensor_new(3, (int64_t[]){1, sh->rows, sh->in});
        float *values = bench_random_floats(tensor_numel(x), 1.0f, &state);
        memcpy(x->data, values, sizeof(float) * (size_t)tensor_numel(x));
        free(values);
        double gflop = 2.0 * (double)weights * (double)sh->rows * 1e-9;
        // Small layers run several times per sample, so that a sample lasts a few milliseconds.
        int calls = gflop < 0.2 ? (int)(0.2 / gflop) + 1 : 1;
        double times[KERNELS][MAX_REPEAT];
        for (size_t k = 0; k < KERNELS; k++) // warm-up (oneDNN creates its primitive here)
            if (ok[k]) tensor_free(linear_forward(&layers[k], x));
        for (int r = 0; r < repeat; r++)
            for (size_t k = 0; k < KERNELS; k++) {
                if (!ok[k]) continue;
                double t0 = now();
                for (int c = 0; c < calls; c++) {
                    tensor *y = linear_forward(&layers[k], x);
                    if (!y) {
                        fprintf(stderr, "linear_bench: %s: %s\n", kernels[k].name, lcm_last_error());
                        return 1;
                    }
                    tensor_free(y);
                }
                times[k][r] = (now() - t0) / calls;
            }
        printf("%-18s", sh->name);
        for (size_t k = 0; k < KERNELS; k++) {
            if (!ok[k]) {
                printf(" %12s", "-");
                continue;
            }
            bench_sort(times[k], repeat);
            double median = times[k][repeat / 2];
            printf(" %6.2f %5.0f", median * 1e3, gflop / median);
            unet_seconds[k] += sh->per_unet * median;
        }
        unet_gflop += sh->per_unet * gflop;
        printf("\n");
        fflush(stdout);
        for (size_t k = 0; k < KERNELS; k++) linear_free(&layers[k]);
        tensor_free(x);
        free(weight);
        free(bias);
    }
    if (unet_complete) {
        printf("%-18s", "UNet evaluation");
        for (size_t k = 0; k < KERNELS; k++)
            if (unet_seconds[k] > 0) printf(" %6.0f %5.0f", unet_seconds[k] * 1e3, unet_gflop / unet_seconds[k]);
            else printf(" %12s", "-");
        printf("   (%.0f GFLOP of linear layers)\n", unet_gflop);
    }
    tensor_release_cached();
    return 0;
}
