// The direct linear kernel (ops/linear_direct.h) against the reference kernel (sgemm on the plain
// weight) on shapes that cut its tiles everywhere: rows not a multiple of the 12-row tile, outputs
// not a multiple of the 16-column block, inputs not a multiple of the 512-input slice. Its results
// must also be the same to the bit with 1 and 2 threads, for a row whatever the other rows of the
// input, and (on a CPU with AVX-512) from its AVX-512 and AVX2 tiles. Skips (passing) on CPUs
// without AVX2 + FMA.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/cpu.h"
#include "ops/linear_direct.h"
#include "ops/ops.h"
#include "testutil.h"

// Different summation order only: within 1e-5 of the largest reference value.
#define FP32_TOL 1e-5

static float *copy_floats(const float *v, int64_t n) {
    float *c = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!c) exit(2);
    memcpy(c, v, sizeof(float) * (size_t)n);
    return c;
}

static bool same_bits(const tensor *a, const tensor *b) {
    return a && b && tensor_numel(a) == tensor_numel(b) &&
           !memcmp(a->data, b->data, sizeof(float) * (size_t)tensor_numel(a));
}

// One layer [in] -> [out] on x [batch, rows, in], direct vs reference, then the bit-identity checks.
static void check_shape(int64_t batch, int64_t rows, int in, int out, bool bias) {
    linear ref = {.in = in, .out = out};
    float bound = 1.0f / sqrtf((float)in);
    ref.weight = test_random_floats((int64_t)out * in, -bound, bound);
    ref.bias = bias ? test_random_floats(out, -1, 1) : NULL;
    linear direct = ref;
    direct.weight = copy_floats(ref.weight, (int64_t)out * in);
    direct.bias = bias ? copy_floats(ref.bias, out) : NULL;
    CHECK_OK(linear_pack_kernel(&direct, test_backend_for(LCM_PRECISION_FP32),
                                LINEAR_KERNEL_DIRECT));
    CHECK(direct.impl.family == &kernel_family_direct && direct.impl.state && !direct.weight &&
              linear_present(&direct),
          "linear_pack_kernel(DIRECT) packs and frees the plain weight");
    if (!direct.impl.state) exit(1);

    tensor *x = tensor_new(3, (int64_t[]){batch, rows, in});
    if (!x) exit(2);
    for (int64_t i = 0; i < tensor_numel(x); i++) x->data[i] = test_uniform(-1, 1);
    char what[128];
    snprintf(what, sizeof what, "linear direct [%lld,%lld,%d] -> %d%s", (long long)batch,
             (long long)rows, in, out, bias ? "" : " no bias");

    tensor *want = linear_forward(&ref, x);
    omp_set_num_threads(1);
    tensor *one_thread = linear_forward(&direct, x);
    omp_set_num_threads(2);
    tensor *two_threads = linear_forward(&direct, x);
    CHECK(want && one_thread && two_threads, "%s: forward: %s", what, lcm_last_error());
    if (want && one_thread && two_threads) {
        size_t n = (size_t)tensor_numel(want);
        double scale = test_max_abs(want->data, n), max_diff = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)one_thread->data[i] - want->data[i]);
            if (d > max_diff || isnan(d)) max_diff = d;
        }
        fprintf(stderr, "%-44s max|diff| %.3g (%.3g of max|ref| %.3g)\n", what, max_diff,
                scale > 0 ? max_diff / scale : 0.0, scale);
        CHECK(one_thread->shape[2] == out && one_thread->ndim == 3, "%s: output shape", what);
        test_close(what, one_thread->data, want->data, n, FP32_TOL * (scale > 0 ? scale : 1), 0);
        CHECK(same_bits(one_thread, two_threads), "%s: 1 and 2 threads give the same bits", what);
        if (cpu_has_avx512()) {
            cpu_hide_avx512(true);
            tensor *avx2 = linear_forward(&direct, x);
            cpu_hide_avx512(false);
            CHECK(same_bits(one_thread, avx2), "%s: the AVX-512 and AVX2 tiles give the same bits", what);
            tensor_free(avx2);
        }

        // The last item alone, from its second row on: the same bits as inside the whole batch.
        int64_t tail_rows = rows > 1 ? rows - 1 : 1;
        tensor *tail = tensor_new(2, (int64_t[]){tail_rows, in});
        if (!tail) exit(2);
        const float *tail_x = x->data + ((batch - 1) * rows + rows - tail_rows) * in;
        memcpy(tail->data, tail_x, sizeof(float) * (size_t)(tail_rows * in));
        tensor *tail_y = linear_forward(&direct, tail);
        const float *expected = one_thread->data + ((batch - 1) * rows + rows - tail_rows) * out;
        CHECK(tail_y && !memcmp(tail_y->data, expected, sizeof(float) * (size_t)(tail_rows * out)),
              "%s: a row's values do not depend on the other rows", what);
        tensor_free(tail);
        tensor_free(tail_y);
    }
    tensor_free(x);
    tensor_free(want);
    tensor_free(one_thread);
    tensor_free(two_threads);
    linear_free(&ref);
    linear_free(&direct);
}

// A channels-last 4-D input is read as its logical NCHW layout, like the reference does.
static void check_nhwc_input(void) {
    linear ref = {.in = 8, .out = 20};
    ref.weight = test_random_floats(20 * 8, -0.5f, 0.5f);
    ref.bias = test_random_floats(20, -1, 1);
    linear direct = ref;
    direct.weight = copy_floats(ref.weight, 20 * 8);
    direct.bias = copy_floats(ref.bias, 20);
    CHECK_OK(linear_pack_kernel(&direct, test_backend_for(LCM_PRECISION_FP32),
                                LINEAR_KERNEL_DIRECT));
    tensor *x = tensor_new(4, (int64_t[]){1, 3, 5, 8});
    if (!x) exit(2);
    for (int64_t i = 0; i < tensor_numel(x); i++) x->data[i] = test_uniform(-1, 1);
    tensor *x_nhwc = tensor_to_nhwc(x);
    tensor *want = linear_forward(&ref, x);
    tensor *got = linear_forward(&direct, x_nhwc);
    CHECK(want && got, "4-D forward: %s", lcm_last_error());
    if (want && got) {
        size_t n = (size_t)tensor_numel(want);
        test_close("linear direct from an NHWC input", got->data, want->data, n,
                   FP32_TOL * test_max_abs(want->data, n), 0);
    }
    tensor_free(x);
    tensor_free(x_nhwc);
    tensor_free(want);
    tensor_free(got);
    linear_free(&ref);
    linear_free(&direct);
}

// The kernel choice: SGEMM keeps the plain weight, AUTO packs for the direct kernel without AVX-512.
static void check_kernel_choice(void) {
    linear l = {.in = 4, .out = 4};
    l.weight = test_random_floats(16, -1, 1);
    CHECK_OK(linear_pack_kernel(&l, test_backend_for(LCM_PRECISION_FP32), LINEAR_KERNEL_SGEMM));
    CHECK(l.weight && l.impl.family == &kernel_family_sgemm, "SGEMM keeps the plain weight");
    linear_free(&l);
    l = (linear){.in = 4, .out = 4};
    l.weight = test_random_floats(16, -1, 1);
    CHECK_OK(linear_pack_kernel(&l, test_backend_for(LCM_PRECISION_FP32), LINEAR_KERNEL_DIRECT));
    lcm_status st = linear_pack_kernel(&l, test_backend_for(LCM_PRECISION_FP32),
                                       LINEAR_KERNEL_DIRECT);
    CHECK(st == LCM_ERR_INTERNAL && strstr(lcm_last_error(), "linear_pack"),
          "packing twice fails naming linear_pack (%s)", lcm_last_error());
    linear_free(&l);
    CHECK(!l.impl.family && !l.impl.state && !l.weight, "linear_free releases the packed weight");
}

int main(void) {
    if (!linear_direct_available()) {
        fprintf(stderr, "skipped: this CPU has no AVX2 + FMA\n");
        CHECK(true, "skipped");
        return test_finish();
    }
    check_shape(1, 1, 1, 1, true);     // everything smaller than a tile
    check_shape(1, 1, 1280, 1280, true); // the time embedding: one row
    check_shape(2, 7, 17, 15, true);   // two items of 7 rows
    check_shape(1, 13, 3, 40, false);  // 2 tiles + 1 row, 2.5 column blocks, no bias
    check_shape(1, 77, 300, 33, true); // cross-attention rows; 2 slices of the inputs
    check_shape(3, 31, 257, 17, true);  // a slice of 1 input
    check_shape(1, 101, 513, 136, true); // 2 tasks of rows, 9 column blocks (2 column groups)
    check_shape(1, 200, 64, 160, true);
    check_shape(1, 200, 520, 1000, true); // tasks of 2 groups, the last one cut at 8 columns
    check_shape(1, 7, 300, 130, true); // one cut tile of 7 rows; its last 6 alone in another
    check_shape(2, 2, 40, 64, true);   // two one-row kernels per item
    check_nhwc_input();
    check_kernel_choice();
    return test_finish();
}
