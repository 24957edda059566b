// The machine's peak for `lcm bench`, measured with large oneDNN products (tools/bench.h). The
// machine may be shared, so ratios to a peak read in the same run hold better than seconds.
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/cpu.h"
#include "tools/bench.h"

#define PEAK_TRIES 4

// Best GFLOP/s of dnnl_sgemm on size^3 over PEAK_TRIES (after one warm-up); 0 on failure.
static double peak_fp32(int size) {
    size_t n = (size_t)size;
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n),
          *c = malloc(sizeof(float) * n * n);
    double best = 0;
    if (a && b && c) {
        bench_fill_pseudo_random(a, (int64_t)(n * n), 1);
        bench_fill_pseudo_random(b, (int64_t)(n * n), 2);
        for (int i = 0; i <= PEAK_TRIES; i++) {
            double t0 = bench_seconds_now();
            dnnl_sgemm('N', 'N', (dnnl_dim_t)n, (dnnl_dim_t)n, (dnnl_dim_t)n, 1.0f, a, (dnnl_dim_t)n, b,
                       (dnnl_dim_t)n, 0.0f, c, (dnnl_dim_t)n);
            double gflops = 2.0 * n * n * n / (bench_seconds_now() - t0) * 1e-9;
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
static double peak_matmul(int size, dnnl_data_type_t type, char *impl, size_t impl_size) {
    snprintf(impl, impl_size, "unavailable");
    dnnl_engine_t engine = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t matmul = NULL;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    double best = 0;
    dnnl_dims_t a_dims = {size, size}, b_dims = {size, size}, c_dims = {size, size};
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
        double t0 = bench_seconds_now();
        if (dnnl_primitive_execute(matmul, stream, 3, args) != dnnl_success ||
            dnnl_stream_wait(stream) != dnnl_success) {
            best = 0;
            break;
        }
        double gflops = 2.0 * size * size * (double)size / (bench_seconds_now() - t0) * 1e-9;
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

// fp32 as the better of oneDNN's two fp32 products (on AVX2 CPUs dnnl_sgemm alone can read below
// what the model's layers reach); bf16 as a oneDNN bf16 matmul, or the fp32 peak where the CPU has
// no AVX512-BF16 (the kernels then keep bf16-requested layers in fp32, ops/dnnl_layer.h).
double bench_peak(lcm_precision precision, int size, char *method, size_t method_size) {
    char impl[96];
    if (precision == LCM_PRECISION_FP32 || !cpu_has_avx512_bf16()) {
        double sgemm = peak_fp32(size), matmul = peak_matmul(size, dnnl_f32, impl, sizeof impl);
        snprintf(method, method_size, "%s %dx%dx%d, best of %d%s",
                 sgemm > matmul ? "dnnl_sgemm" : "oneDNN f32 matmul", size, size, size, PEAK_TRIES,
                 precision == LCM_PRECISION_FP32 ? "" : "; no AVX512-BF16 here: bf16 layers run in fp32");
        return sgemm > matmul ? sgemm : matmul;
    }
    double gflops = peak_matmul(size, dnnl_bf16, impl, sizeof impl);
    snprintf(method, method_size, "oneDNN bf16 matmul %dx%dx%d (%s), best of %d", size, size, size, impl,
             PEAK_TRIES);
    return gflops;
}
