// int8_bench: the int8 kernels side by side on the UNet's layer shapes at 512x512 (64x64 latents):
// ours with VNNI, ours with AVX2 (VNNI hidden), oneDNN's u8 x s8 (where the CPU has VNNI),
// interleaved so that a noisy machine slows them alike.
//
//   int8_bench [--cpu-time] [--repeat 5] [--only NAME]
//
// For each shape and kernel, the median time of one whole layer forward (quantizing the float
// input, the int8 product, the float output with bias) on random weights and inputs, and its GOPS
// (2 operations per multiply-add). Use OMP_NUM_THREADS=1 with --cpu-time for single-thread figures
// on a busy machine.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "core/error.h"
#include "ops/cpu.h"
#include "ops/int8_layer.h"

typedef struct shape {
    const char *name;
    int in, out, kernel, stride, padding;
    int64_t size; // input height = width; linear: rows
} shape;

static const shape shapes[] = {
    {"conv 320->320 3x3 @64", 320, 320, 3, 1, 1, 64},
    {"conv 320->320 3x3/2 @64", 320, 320, 3, 2, 1, 64},
    {"conv 640->640 3x3 @32", 640, 640, 3, 1, 1, 32},
    {"conv 1280->1280 3x3 @16", 1280, 1280, 3, 1, 1, 16},
    {"conv 2560->1280 3x3 @16", 2560, 1280, 3, 1, 1, 16},
    {"conv 1280->1280 3x3 @8", 1280, 1280, 3, 1, 1, 8},
    {"conv 640->320 1x1 @64", 640, 320, 1, 1, 0, 64},
    {"linear 320->320 x4096", 320, 320, 0, 1, 0, 4096},
    {"linear 320->2560 x4096", 320, 2560, 0, 1, 0, 4096},
    {"linear 1280->1280 x256", 1280, 1280, 0, 1, 0, 256},
    {"linear 5120->1280 x256", 5120, 1280, 0, 1, 0, 256},
};

typedef struct kernel {
    const char *name;
    int8_kernel choice;
    bool hide_vnni;
} kernel;

int main(int argc, char **argv) {
    int repeat = 5;
    bool cpu_time = false;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu-time")) cpu_time = true;
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else {
            fprintf(stderr, "usage: int8_bench [--cpu-time] [--repeat N] [--only NAME]\n");
            return 2;
        }
    }
    if (repeat < 1 || repeat > 100) repeat = 5;
    clockid_t clock = cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
    kernel kernels[3];
    int nk = 0;
    if (cpu_has_vnni()) {
        kernels[nk++] = (kernel){"ours-vnni", INT8_KERNEL_OURS, false};
        kernels[nk++] = (kernel){"onednn", INT8_KERNEL_ONEDNN, false};
    }
    kernels[nk++] = (kernel){"ours-avx2", INT8_KERNEL_OURS, true};
    printf("CPU: %s (%s), %d thread(s), %s time, median of %d\n", cpu_features_get()->name,
           cpu_feature_list(), omp_get_max_threads(), cpu_time ? "CPU" : "wall", repeat);
    unsigned state = 7;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        if (only && !strstr(sh->name, only)) continue;
        int k = sh->kernel ? sh->kernel : 1;
        int64_t wn = (int64_t)sh->out * sh->in * k * k;
        int8_t *w = malloc((size_t)wn);
        float *scales = bench_random_floats(sh->out, 0.01f, &state), *bias = bench_random_floats(sh->out, 1, &state);
        for (int64_t i = 0; i < wn; i++) {
            state = state * 1664525u + 1013904223u;
            w[i] = (int8_t)((int)(state >> 8) % 255 - 127);
        }
        for (int o = 0; o < sh->out; o++) scales[o] = scales[o] < 0 ? -scales[o] + 1e-4f : scales[o] + 1e-4f;
        tensor *x = sh->kernel ? tensor_new4(1, sh->in, sh->size, sh->size) : tensor_new2(sh->size, sh->in);
        if (sh->kernel) x->layout = TENSOR_NHWC;
        float *xv = bench_random_floats(tensor_numel(x), 3, &state);
        memcpy(x->data, xv, sizeof(float) * (size_t)tensor_numel(x));
        free(xv);
        int64_t oh = sh->kernel ? (sh->size + 2 * sh->padding - k) / sh->stride + 1 : sh->size;
        int64_t ow = sh->kernel ? (sh->size + 2 * sh->padding - k) / sh->stride + 1 : 1;
        double ops = 2.0 * (double)oh * (double)ow * (double)wn;
        int8_layer *layers[3] = {0};
        double times[3][100];
        for (int i = 0; i < nk; i++)
            if (int8_layer_new_s8(w, scales, sh->in, sh->out, sh->kernel, sh->stride, sh->padding, 0.05f, 100,
                                  kernels[i].choice, &layers[i]) != LCM_OK)
                fprintf(stderr, "%s: %s\n", sh->name, lcm_last_error());
        for (int r = -1; r < repeat; r++) // r = -1: warm-up (oneDNN creates its primitive)
            for (int i = 0; i < nk; i++) {
                if (!layers[i]) continue;
                cpu_hide_vnni(kernels[i].hide_vnni);
                double t0 = bench_seconds(clock);
                tensor *y = int8_layer_forward(layers[i], x, bias);
                double t = bench_seconds(clock) - t0;
                cpu_hide_vnni(false);
                if (!y) fprintf(stderr, "%s: %s\n", sh->name, lcm_last_error());
                tensor_free(y);
                if (r >= 0) times[i][r] = t;
            }
        printf("%-26s", sh->name);
        for (int i = 0; i < nk; i++) {
            if (!layers[i]) continue;
            bench_sort(times[i], repeat);
            double t = times[i][repeat / 2];
            printf("  %s %7.2f ms %6.1f GOPS", kernels[i].name, t * 1e3, ops / t * 1e-9);
            int8_layer_free(layers[i]);
        }
        printf("\n");
        fflush(stdout);
        tensor_free(x);
        free(w);
        free(scales);
        free(bias);
    }
    return 0;
}
