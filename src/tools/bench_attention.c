// `lcm bench --attention`: the attention kernels (ops/attention.h) on the Stable Diffusion 1.5
// shapes at 512x512, needing no model (tools/bench.h).
#include <math.h>
#include <stdbool.h>

#include "core/error.h"
#include "ops/attention.h"
#include "tools/bench.h"

typedef struct attention_shape {
    const char *what;
    int64_t nq, nk;
    int heads, head_dim;
} attention_shape;

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
} kernels[LCM_BENCH_ATTENTION_KERNELS] = {
    {"gemm_tiles_fp32", ATTENTION_GEMM_TILES, LCM_PRECISION_FP32},
    {"flash_fp32", ATTENTION_FLASH, LCM_PRECISION_FP32},
    {"flash_bf16", ATTENTION_FLASH, LCM_PRECISION_BF16},
};

int bench_attention_shape_count(void) { return (int)(sizeof shapes / sizeof shapes[0]); }

const char *bench_attention_kernel_name(int index) {
    return index >= 0 && index < LCM_BENCH_ATTENTION_KERNELS ? kernels[index].name : "unknown";
}

// Best wall-clock and CPU seconds of `runs` calls (after a warm-up): on a shared machine the
// fastest run is the one least disturbed, and CPU time (all threads together) does not count the
// time other processes held the cores. False when the kernel cannot run here.
static bool time_attention(const tensor *q, const tensor *k, const tensor *v, int heads,
                           lcm_precision precision, attention_kernel kernel, int runs,
                           double *wall, double *cpu) {
    *wall = *cpu = INFINITY;
    for (int i = -1; i < runs; i++) {
        double t0 = bench_seconds_now(), c0 = bench_cpu_seconds_now();
        tensor *out = attention_with_kernel(q, k, v, heads, false, precision, kernel);
        double t = bench_seconds_now() - t0, c = bench_cpu_seconds_now() - c0;
        if (!out) return false;
        tensor_free(out);
        if (i >= 0 && t < *wall) *wall = t;
        if (i >= 0 && c < *cpu) *cpu = c;
    }
    return true;
}

lcm_status bench_attention(int index, int runs, lcm_attention_timing *out) {
    if (index < 0 || index >= bench_attention_shape_count())
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "attention shape %d: expected 0..%d", index,
                        bench_attention_shape_count() - 1);
    const attention_shape *sh = &shapes[index];
    int64_t c = (int64_t)sh->heads * sh->head_dim;
    tensor *q = tensor_new3(1, sh->nq, c), *k = tensor_new3(1, sh->nk, c), *v = tensor_new3(1, sh->nk, c);
    if (!q || !k || !v) {
        tensor_free(q);
        tensor_free(k);
        tensor_free(v);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    bench_fill_pseudo_random(q->data, tensor_numel(q), 11);
    bench_fill_pseudo_random(k->data, tensor_numel(k), 12);
    bench_fill_pseudo_random(v->data, tensor_numel(v), 13);
    *out = (lcm_attention_timing){.shape = sh->what, .nq = sh->nq, .nk = sh->nk, .heads = sh->heads,
                                  .head_dim = sh->head_dim, .gflop = 4.0 * (double)sh->nq * (double)sh->nk * (double)c * 1e-9};
    for (int kk = 0; kk < LCM_BENCH_ATTENTION_KERNELS; kk++) {
        double wall, cpu;
        bool ran = time_attention(q, k, v, sh->heads, kernels[kk].precision, kernels[kk].kernel, runs, &wall, &cpu);
        out->wall_ms[kk] = ran ? 1e3 * wall : -1;
        out->cpu_ms[kk] = ran ? 1e3 * cpu : -1;
    }
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
    return LCM_OK;
}
