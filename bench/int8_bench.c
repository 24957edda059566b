// int8_bench: the int8 kernels side by side on the UNet's layer shapes at 512x512 (64x64 latents):
// ours with VNNI, ours with AVX2 (VNNI hidden), oneDNN's u8 x s8 (where the CPU has VNNI),
// interleaved so that a noisy machine slows them alike.
//
// (ours with AMX too where the CPU has it: the AMX tiles where the layer fits them, else VNNI)
//
//   int8_bench [--cpu-time] [--repeat 5] [--only NAME] [--avx2-schemes]
//
// For each shape and kernel, the median time of one whole layer forward (quantizing the float
// input, the int8 product, the float output with bias) on random weights and inputs, and its GOPS
// (2 operations per multiply-add). Use OMP_NUM_THREADS=1 with --cpu-time for single-thread figures
// on a busy machine.
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "core/error.h"
#include "ops/cpu.h"
#include "ops/int8_gemm.h"
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
    bool hide_vnni, hide_amx;
} kernel;

// ---- AVX2 schemes side by side (--avx2-schemes) ------------------------------------------------
// (a) the kernel in ops/int8_gemm.c: 8-bit operands, vpmaddubsw(|q - 128|, sign(w, q - 128)) and
//     vpmaddwd by ones (4 instructions per 32 multiply-adds per row);
// (b) 16-bit operands: (q - zp) and w widened to s16, vpmaddwd straight into int32 pairs
//     (2 instructions per 16 multiply-adds per row; weights twice the memory).
// Both as the same 4-row x 16-channel tile over a linear layer's rows, product only (the inputs
// prepared beforehand), one thread.

// One 4-row x 16-channel tile (the AVX2 code kept out of the OpenMP loop body, which clang does not
// compile with the function's target attribute).
__attribute__((target("avx2,fma"), noinline)) static void s16_tile(const int16_t *x, int64_t rows, int64_t r0,
                                                                   int64_t k_pairs, const int16_t *w, int blocks,
                                                                   int b, int32_t *y) {
    __m256i acc[4][2];
    for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    const int16_t *wb = w + (int64_t)b * k_pairs * 32;
    const int16_t *a[4];
    for (int r = 0; r < 4; r++) a[r] = x + (r0 + r < rows ? r0 + r : rows - 1) * k_pairs * 2;
    for (int64_t k = 0; k < k_pairs; k++) {
        __m256i w0 = _mm256_load_si256((const __m256i *)(wb + k * 32));
        __m256i w1 = _mm256_load_si256((const __m256i *)(wb + k * 32 + 16));
        for (int r = 0; r < 4; r++) {
            int32_t pair;
            memcpy(&pair, a[r] + 2 * k, sizeof pair);
            __m256i v = _mm256_set1_epi32(pair);
            acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(v, w0));
            acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(v, w1));
        }
    }
    for (int r = 0; r < 4 && r0 + r < rows; r++) {
        _mm256_storeu_si256((__m256i *)(y + ((r0 + r) * blocks + b) * 16), acc[r][0]);
        _mm256_storeu_si256((__m256i *)(y + ((r0 + r) * blocks + b) * 16 + 8), acc[r][1]);
    }
}

static void s16_tile_rows(const int16_t *x, int64_t rows, int64_t k_pairs, const int16_t *w, int blocks,
                          int32_t *y) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < blocks; b++)
        for (int64_t r0 = 0; r0 < rows; r0 += 4) s16_tile(x, rows, r0, k_pairs, w, blocks, b, y);
}

static void compare_avx2_schemes(int repeat, clockid_t clock) {
    static const struct { const char *name; int in, out; int64_t rows; } lin[] = {
        {"linear 320->320 x4096", 320, 320, 4096},
        {"linear 1280->1280 x256", 1280, 1280, 256},
        {"linear 5120->1280 x256", 5120, 1280, 256},
        {"im2col 3x3 640->640 x1024", 5760, 640, 1024},
    };
    printf("AVX2 schemes, product only: (a) 8-bit pmaddubsw on |q-128| and sign-moved w (ours), "
           "(b) 16-bit pmaddwd\n");
    unsigned state = 11;
    for (size_t s = 0; s < sizeof lin / sizeof lin[0]; s++) {
        int in = lin[s].in, out = lin[s].out, blocks = (out + 15) / 16;
        int64_t rows = lin[s].rows, k_pairs = (in + 1) / 2;
        int8_t *w8 = malloc((size_t)in * out);
        uint8_t *q = malloc((size_t)(rows * in));
        for (int64_t i = 0; i < (int64_t)in * out; i++) w8[i] = (int8_t)((state = state * 1664525u + 1013904223u) >> 8) % 127;
        for (int64_t i = 0; i < rows * in; i++) q[i] = (uint8_t)((state = state * 1664525u + 1013904223u) >> 8);
        float *scales = malloc(sizeof(float) * out), *y = malloc(sizeof(float) * (size_t)(rows * out));
        for (int o = 0; o < out; o++) scales[o] = 0.01f;
        int8_packed p;
        int8_shape sh = {in, out, 0, 1, 0};
        if (int8_packed_init(&p, &sh, w8, scales, 1.0f, 100) != LCM_OK) return;
        int8_input g;
        int8_input_geometry(&p, rows, 1, 1, &g);
        uint8_t *buffer = malloc((size_t)int8_input_bytes(&p, &g));
        for (int64_t r = 0; r < rows; r++) memcpy(buffer + r * p.in_padded, q + r * in, (size_t)in);
        int16_t *x16 = calloc((size_t)(rows * k_pairs * 2), sizeof(int16_t));
        int16_t *w16 = aligned_alloc(32, sizeof(int16_t) * (size_t)blocks * (size_t)k_pairs * 32);
        memset(w16, 0, sizeof(int16_t) * (size_t)blocks * (size_t)k_pairs * 32);
        int32_t *y32 = malloc(sizeof(int32_t) * (size_t)(rows * blocks * 16));
        for (int64_t r = 0; r < rows; r++)
            for (int c = 0; c < in; c++) x16[r * k_pairs * 2 + c] = (int16_t)(q[r * in + c] - 100);
        for (int o = 0; o < out; o++)
            for (int c = 0; c < in; c++)
                w16[((int64_t)(o / 16) * k_pairs + c / 2) * 32 + (o % 16) * 2 + c % 2] = w8[(int64_t)o * in + c];
        double ta[100], tb[100];
        for (int r = -1; r < repeat; r++) {
            double t0 = bench_seconds(clock);
            int8_gemm_run(&p, &g, buffer, NULL, INT8_ISA_AVX2, y);
            double t1 = bench_seconds(clock);
            s16_tile_rows(x16, rows, k_pairs, w16, blocks, y32);
            double t2 = bench_seconds(clock);
            if (r >= 0) ta[r] = t1 - t0, tb[r] = t2 - t1;
        }
        bench_sort(ta, repeat);
        bench_sort(tb, repeat);
        double ops = 2.0 * (double)rows * in * out;
        printf("%-28s (a) %7.2f ms %6.1f GOPS   (b) %7.2f ms %6.1f GOPS\n", lin[s].name, ta[repeat / 2] * 1e3,
               ops / ta[repeat / 2] * 1e-9, tb[repeat / 2] * 1e3, ops / tb[repeat / 2] * 1e-9);
        int8_packed_free(&p);
        free(w8), free(q), free(scales), free(y), free(buffer), free(x16), free(w16), free(y32);
    }
}

int main(int argc, char **argv) {
    int repeat = 5;
    bool cpu_time = false;
    const char *only = NULL;
    bool avx2_schemes = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu-time")) cpu_time = true;
        else if (!strcmp(argv[i], "--repeat") && i + 1 < argc) repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--avx2-schemes")) avx2_schemes = true;
        else {
            fprintf(stderr, "usage: int8_bench [--cpu-time] [--repeat N] [--only NAME] [--avx2-schemes]\n");
            return 2;
        }
    }
    if (repeat < 1 || repeat > 100) repeat = 5;
    clockid_t clock = cpu_time ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC;
    if (avx2_schemes) {
        compare_avx2_schemes(repeat, clock);
        return 0;
    }
    kernel kernels[4];
    int nk = 0;
    if (int8_amx_usable()) kernels[nk++] = (kernel){"ours-amx", INT8_KERNEL_OURS, false, false};
    if (cpu_has_vnni()) {
        kernels[nk++] = (kernel){"ours-vnni", INT8_KERNEL_OURS, false, true};
        kernels[nk++] = (kernel){"onednn", INT8_KERNEL_ONEDNN, false, true};
    }
    kernels[nk++] = (kernel){"ours-avx2", INT8_KERNEL_OURS, true, true};
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
        int8_layer *layers[4] = {0};
        double times[4][100];
        for (int i = 0; i < nk; i++)
            if (int8_layer_new_s8(w, scales, sh->in, sh->out, sh->kernel, sh->stride, sh->padding, 0.05f, 100,
                                  kernels[i].choice, &layers[i]) != LCM_OK)
                fprintf(stderr, "%s: %s\n", sh->name, lcm_last_error());
        for (int r = -1; r < repeat; r++) // r = -1: warm-up (oneDNN creates its primitive)
            for (int i = 0; i < nk; i++) {
                if (!layers[i]) continue;
                cpu_hide_vnni(kernels[i].hide_vnni);
                if (!kernels[i].hide_vnni) cpu_hide_amx(kernels[i].hide_amx);
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
