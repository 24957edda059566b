// conv_bench: the convolution kernels side by side on the layer shapes of the UNet, the VAE
// decoder and TAESD at 512x512, interleaved so that a noisy machine slows them alike.
//
//   conv_bench [--cpu-time] [--repeat 5] [--only NAME]
//
// For each shape and kernel (the direct kernel with and without Winograd, on a CPU with AVX-512 also
// with its AVX2 tiles; im2col + sgemm; oneDNN), the median time of one layer forward on random
// weights and inputs and its GFLOP/s. Kernels this CPU cannot run are skipped.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "core/error.h"
#include "ops/backend.h"
#include "ops/conv_direct.h"
#include "ops/cpu.h"
#include "ops/ops.h"

typedef struct shape {
    const char *name;
    int in, out, kernel, stride, padding;
    int64_t size; // input height = width
} shape;

static const shape shapes[] = {
    {"taesd 64->64 @512", 64, 64, 3, 1, 1, 512},
    {"taesd 64->64 @128", 64, 64, 3, 1, 1, 128},
    {"taesd conv_out 64->3 @512", 64, 3, 3, 1, 1, 512},
    {"vae conv_out 128->3 @512", 128, 3, 3, 1, 1, 512},
    {"vae 128->128 @512", 128, 128, 3, 1, 1, 512},
    // the same layer at the sizes the kernel tuner can afford to time it at (ops/backend.c)
    {"vae 128->128 @128", 128, 128, 3, 1, 1, 128},
    {"vae 128->128 @60", 128, 128, 3, 1, 1, 60},
    {"vae 256->256 @256", 256, 256, 3, 1, 1, 256},
    {"vae 512->512 @128", 512, 512, 3, 1, 1, 128},
    {"vae 512->512 @64", 512, 512, 3, 1, 1, 64},
    {"unet 320->320 @64", 320, 320, 3, 1, 1, 64},
    {"unet 640->640 @32", 640, 640, 3, 1, 1, 32},
    {"unet 1280->1280 @16", 1280, 1280, 3, 1, 1, 16},
    {"unet 2560->1280 @16", 2560, 1280, 3, 1, 1, 16},
    {"unet 1280->1280 @32", 1280, 1280, 3, 1, 1, 32},
    {"unet 1280->1280 @8", 1280, 1280, 3, 1, 1, 8},
    {"unet 640->320 1x1 @64", 640, 320, 1, 1, 0, 64},
    {"unet 320->320 s2 @64", 320, 320, 3, 2, 1, 64},
};

// "winograd" is the direct kernel with its Winograd path where the layer qualifies (the default);
// "direct" the same kernel without it; "-avx2" with AVX-512 hidden from its register tiles.
static const struct {
    const char *name;
    conv_kernel kernel;
    bool winograd, avx2;
} kernels[] = {{"winograd", CONV_KERNEL_DIRECT, true, false},
               {"winograd-avx2", CONV_KERNEL_DIRECT, true, true},
               {"direct", CONV_KERNEL_DIRECT, false, false},
               {"direct-avx2", CONV_KERNEL_DIRECT, false, true},
               {"sgemm", CONV_KERNEL_SGEMM, false, false},
               {"oneDNN", CONV_KERNEL_ONEDNN, false, false}};
#define KERNELS (sizeof kernels / sizeof kernels[0])
#define MAX_REPEAT 32

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
        fprintf(stderr, "usage: conv_bench [--cpu-time] [--repeat 1..%d] [--only NAME]\n", MAX_REPEAT);
        return 2;
    }
    unsigned state = 12345;
    printf("%-24s", "layer");
    for (size_t k = 0; k < KERNELS; k++) printf(" %12s", kernels[k].name);
    printf("   (median of %d; ms and GFLOP/s of the nominal 3x3 arithmetic)\n", repeat);
    if (use_cpu_time) printf("(CPU time)\n");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        if (only && !strstr(sh->name, only)) continue;
        int64_t weights = (int64_t)sh->out * sh->in * sh->kernel * sh->kernel;
        float bound = 1.0f / sqrtf((float)(sh->in * sh->kernel * sh->kernel));
        float *weight = bench_random_floats(weights, bound, &state);
        float *bias = bench_random_floats(sh->out, 1.0f, &state);
        conv2d layers[KERNELS];
        bool ok[KERNELS];
        for (size_t k = 0; k < KERNELS; k++) {
            layers[k] = (conv2d){.in = sh->in, .out = sh->out, .kernel = sh->kernel,
                                 .stride = sh->stride, .padding = sh->padding};
            layers[k].weight = malloc(sizeof(float) * (size_t)weights);
            layers[k].bias = malloc(sizeof(float) * (size_t)sh->out);
            memcpy(layers[k].weight, weight, sizeof(float) * (size_t)weights);
            memcpy(layers[k].bias, bias, sizeof(float) * (size_t)sh->out);
            conv_direct_set_winograd(kernels[k].winograd);
            ok[k] = (!kernels[k].avx2 || cpu_has_avx512()) &&
                    conv2d_pack_kernel(&layers[k], &fp32, kernels[k].kernel) == LCM_OK;
        }
        tensor *x = tensor_new4(1, sh->in, sh->size, sh->size);
        float *values = bench_random_floats(tensor_numel(x), 1.0f, &state);
        memcpy(x->data, values, sizeof(float) * (size_t)tensor_numel(x));
        free(values);
        x->layout = TENSOR_NHWC;
        int64_t out_size = (sh->size + 2 * sh->padding - sh->kernel) / sh->stride + 1;
        double gflop = 2.0 * (double)weights * (double)(out_size * out_size) * 1e-9;
        double times[KERNELS][MAX_REPEAT];
        for (size_t k = 0; k < KERNELS; k++) // warm-up (oneDNN creates its primitive here)
            if (ok[k]) {
                cpu_hide_avx512(kernels[k].avx2);
                tensor_free(conv2d_forward(&layers[k], x));
                cpu_hide_avx512(false);
            }
        for (int r = 0; r < repeat; r++)
            for (size_t k = 0; k < KERNELS; k++) {
                if (!ok[k]) continue;
                cpu_hide_avx512(kernels[k].avx2);
                double t0 = now();
                tensor *y = conv2d_forward(&layers[k], x);
                times[k][r] = now() - t0;
                cpu_hide_avx512(false);
                if (!y) {
                    fprintf(stderr, "conv_bench: %s: %s\n", kernels[k].name, lcm_last_error());
                    return 1;
                }
                tensor_free(y);
            }
        printf("%-24s", sh->name);
        for (size_t k = 0; k < KERNELS; k++) {
            if (!ok[k]) {
                printf(" %12s", "-");
                continue;
            }
            bench_sort(times[k], repeat);
            double median = times[k][repeat / 2];
            printf(" %6.1f %5.0f", median * 1e3, gflop / median);
        }
        printf("\n");
        fflush(stdout);
        for (size_t k = 0; k < KERNELS; k++) conv2d_free(&layers[k]);
        tensor_free(x);
        free(weight);
        free(bias);
    }
    tensor_release_cached();
    return 0;
}
