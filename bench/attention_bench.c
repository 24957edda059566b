// attention_bench: the fp32 flash attention kernel alone at the UNet's shapes, timed in CPU seconds
// of the calling thread, for tuning the kernel (`lcm bench --attention` compares all kernels).
//
//   OMP_NUM_THREADS=1 attention_bench [--repeat 5]
//
// Prints per shape the best and the median of `repeat` runs (after one warm-up run) in ms of CPU
// time and GFLOP per CPU-second, counting 4 Nq Nk C FLOP per call. Inputs are uniform in [-1, 1).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "core/error.h"
#include "ops/attention.h"

static void fill_uniform(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) * 0x1p-23f - 1.0f;
    }
}

int main(int argc, char **argv) {
    int repeat = 5;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--repeat")) repeat = atoi(argv[i + 1]);
    if (repeat < 1 || repeat > 100) {
        fprintf(stderr, "usage: attention_bench [--repeat N (1..100)]\n");
        return 2;
    }
    static const struct {
        const char *what;
        int64_t nq, nk;
        int heads, head_dim;
    } shapes[] = {
        {"unet self 64x64", 4096, 4096, 8, 40}, {"unet self 32x32", 1024, 1024, 8, 80},
        {"unet cross 64x64", 4096, 77, 8, 40},  {"unet cross 32x32", 1024, 77, 8, 80},
    };
    printf("%-18s %6s %5s %4s %10s %10s %8s\n", "shape", "Nq", "Nk", "d", "best ms", "median ms", "GFLOP/s");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t c = (int64_t)shapes[s].heads * shapes[s].head_dim;
        tensor *q = tensor_new3(1, shapes[s].nq, c), *k = tensor_new3(1, shapes[s].nk, c),
               *v = tensor_new3(1, shapes[s].nk, c);
        if (!q || !k || !v) {
            fprintf(stderr, "attention_bench: out of memory\n");
            return 1;
        }
        fill_uniform(q->data, tensor_numel(q), 11);
        fill_uniform(k->data, tensor_numel(k), 12);
        fill_uniform(v->data, tensor_numel(v), 13);
        double times[100];
        for (int i = -1; i < repeat; i++) {
            double t0 = bench_seconds(CLOCK_PROCESS_CPUTIME_ID);
            tensor *out = attention_with_kernel(q, k, v, shapes[s].heads, false, LCM_PRECISION_FP32,
                                                ATTENTION_FLASH);
            double t = bench_seconds(CLOCK_PROCESS_CPUTIME_ID) - t0;
            if (!out) {
                fprintf(stderr, "attention_bench: %s\n", lcm_last_error());
                return 1;
            }
            tensor_free(out);
            if (i >= 0) times[i] = t;
        }
        bench_sort(times, repeat);
        double flops = 4.0 * (double)shapes[s].nq * (double)shapes[s].nk * (double)c;
        printf("%-18s %6lld %5lld %4d %10.1f %10.1f %8.1f\n", shapes[s].what, (long long)shapes[s].nq,
               (long long)shapes[s].nk, shapes[s].head_dim, times[0] * 1e3, times[repeat / 2] * 1e3,
               flops / times[0] * 1e-9);
        tensor_free(q);
        tensor_free(k);
        tensor_free(v);
    }
    return 0;
}
