// The int8 kernels (ops/int8_gemm.h, ops/int8_layer.h) against the plain-C integer reference, BIT
// FOR BIT: random shapes (odd channel counts, output-channel tails, stride 2, 1x1, padding, linear
// layers with many rows), extreme values (all 255 inputs with zero point 0 against +-127 weights,
// where 16-bit pair sums would saturate), every int8 kernel this CPU runs (ours with VNNI, ours with
// AVX2, oneDNN where VNNI is present), NCHW and NHWC inputs, 1 and 2 threads. Also: an 8-bit
// convolution loaded from a file is packed from its stored I8 values (no float copy kept) and
// computes the same bits, and mismatched scale tensors are refused with a message naming them.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors_write.h"
#include "io/weights.h"
#include "ops/cpu.h"
#include "ops/int8_gemm.h"
#include "ops/int8_layer.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"
#include "testutil.h"

static uint32_t rng = 12345;
static uint32_t next_random(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

typedef struct layer_case {
    int in, out, kernel, stride, padding;
    int n, h, w; // linear: n rows (h = w = 1)
    int extreme; // inputs all 255 with zero point 0 and weights +-127
} layer_case;

static const layer_case cases[] = {
    {5, 19, 3, 1, 1, 1, 7, 9, 0},     // odd channels, a tail of 3 output channels
    {24, 40, 3, 2, 1, 2, 9, 7, 0},    // stride 2, odd sizes, two images
    {33, 70, 1, 1, 0, 1, 5, 11, 0},   // 1x1
    {17, 64, 3, 2, 0, 1, 8, 8, 0},    // stride 2 without padding
    {64, 96, 3, 1, 1, 1, 11, 10, 0},  // several column tiles, row tails
    {37, 70, 0, 1, 0, 203, 1, 1, 0},  // linear, many rows
    {320, 48, 0, 1, 0, 13, 1, 1, 0},  // linear, wide input
    {128, 32, 3, 1, 1, 1, 6, 6, 1},   // extreme values: pair sums 2 * 255 * 127 > 32767
    {128, 32, 0, 1, 0, 7, 1, 1, 1},
    {64, 40, 3, 1, 1, 2, 5, 7, 0},    // AMX: two images, a partial last block
    {128, 24, 1, 1, 0, 2, 4, 9, 0},   // AMX: 1x1 over two images
};

// The kernels this CPU can run, each as (name, choice, hide VNNI).
typedef struct kernel_run {
    const char *name;
    int8_kernel choice;
    bool hide_vnni, hide_amx;
} kernel_run;

static int kernel_runs(kernel_run runs[4]) {
    int n = 0;
    if (int8_amx_usable()) runs[n++] = (kernel_run){"ours AMX", INT8_KERNEL_OURS, false, false};
    if (cpu_has_vnni()) {
        runs[n++] = (kernel_run){"ours VNNI", INT8_KERNEL_OURS, false, true};
        runs[n++] = (kernel_run){"oneDNN VNNI", INT8_KERNEL_ONEDNN, false, true};
    }
    runs[n++] = (kernel_run){"ours AVX2", INT8_KERNEL_OURS, true, true};
    return n;
}

static void show_kernel(const kernel_run *run) {
    cpu_hide_vnni(run->hide_vnni);
    if (!run->hide_vnni) cpu_hide_amx(run->hide_amx);
}

static void test_case(const layer_case *lc) {
    int k = lc->kernel ? lc->kernel : 1, taps = k * k;
    int64_t wn = (int64_t)lc->out * lc->in * taps;
    int64_t h = lc->kernel ? lc->h : 1, w = lc->kernel ? lc->w : 1, xn = lc->n * h * w * lc->in;
    int8_t *weight = malloc((size_t)wn);
    uint8_t *q = malloc((size_t)xn);
    float *scales = malloc(sizeof(float) * lc->out), *bias = malloc(sizeof(float) * lc->out);
    float *out_scale = malloc(sizeof(float) * lc->out);
    int32_t zp = lc->extreme ? 0 : (int32_t)(next_random() % 256);
    float input_scale = 0.25f; // a power of two: (q - zp) * scale quantizes back to q exactly
    for (int64_t i = 0; i < wn; i++)
        weight[i] = lc->extreme ? (i % 3 ? 127 : -127) : (int8_t)((int)(next_random() % 255) - 127);
    for (int64_t i = 0; i < xn; i++) q[i] = lc->extreme ? 255 : (uint8_t)(next_random() % 256);
    for (int o = 0; o < lc->out; o++) {
        scales[o] = (float)(next_random() % 1000 + 1) * 1e-5f;
        bias[o] = ((float)(next_random() % 2001) - 1000.0f) * 1e-3f;
        out_scale[o] = scales[o] * input_scale; // as the packing computes it
    }
    int8_shape shape = {lc->in, lc->out, lc->kernel, lc->stride, lc->padding};
    int64_t oh = lc->kernel ? (h + 2 * lc->padding - k) / lc->stride + 1 : 1;
    int64_t ow = lc->kernel ? (w + 2 * lc->padding - k) / lc->stride + 1 : 1;
    int64_t yn = lc->n * oh * ow * lc->out;
    float *want = malloc(sizeof(float) * (size_t)yn), *want_plain = malloc(sizeof(float) * (size_t)yn);
    int8_reference_run(&shape, lc->n, h, w, q, zp, weight, out_scale, bias, want);
    int8_reference_run(&shape, lc->n, h, w, q, zp, weight, out_scale, NULL, want_plain);

    // the input as float, NHWC (conv) or rows (linear), and its NCHW copy
    tensor *x = lc->kernel ? tensor_new4(lc->n, lc->in, h, w) : tensor_new2(lc->n, lc->in);
    if (lc->kernel) x->layout = TENSOR_NHWC;
    for (int64_t i = 0; i < xn; i++) x->data[i] = (float)(q[i] - zp) * input_scale;
    tensor *x_nchw = lc->kernel ? tensor_to_nchw(x) : NULL;
    char what[160];
    snprintf(what, sizeof what, "%s %d->%d k%d s%d p%d on %dx%lldx%lld%s", lc->kernel ? "conv" : "linear",
             lc->in, lc->out, lc->kernel, lc->stride, lc->padding, lc->n, (long long)h, (long long)w,
             lc->extreme ? " (extreme values)" : "");
    kernel_run runs[4];
    int nruns = kernel_runs(runs);
    for (int r = 0; r < nruns; r++) {
        int8_layer *layer = NULL;
        CHECK_OK(int8_layer_new_s8(weight, scales, lc->in, lc->out, lc->kernel, lc->stride, lc->padding,
                                   input_scale, zp, runs[r].choice, &layer));
        if (!layer) continue;
        show_kernel(&runs[r]);
        // which of our kernels runs this shape now (the AMX run must really run AMX where it fits)
        const char *isa_name = "";
        int8_packed probe;
        if (int8_packed_init(&probe, &shape, weight, scales, input_scale, zp) == LCM_OK) {
            int8_isa isa = int8_gemm_isa(&probe, INT8_ISA_AUTO);
            isa_name = isa == INT8_ISA_AMX ? "AMX" : isa == INT8_ISA_VNNI ? "VNNI" : "AVX2";
            if (!runs[r].hide_amx)
                CHECK(isa == INT8_ISA_AMX || !int8_amx_fits(&probe), "%s: AMX fits but %s runs", what, isa_name);
            int8_packed_free(&probe);
        }
        for (int threads = 1; threads <= 2; threads++) {
            omp_set_num_threads(threads);
            for (int form = 0; form < (lc->kernel ? 2 : 1); form++) {
                for (int with_bias = 0; with_bias < 2; with_bias++) {
                    tensor *y = int8_layer_forward(layer, form ? x_nchw : x, with_bias ? bias : NULL);
                    CHECK(y && tensor_numel(y) == yn, "%s: %s: %s", what, runs[r].name, lcm_last_error());
                    if (!y || tensor_numel(y) != yn) continue;
                    const float *expect = with_bias ? want : want_plain;
                    int64_t first = -1;
                    for (int64_t i = 0; i < yn && first < 0; i++)
                        if (memcmp(&y->data[i], &expect[i], sizeof(float))) first = i;
                    CHECK(first < 0, "%s: %s, %d thread(s), %s input, %s bias: element %lld = %.9g, "
                          "reference %.9g", what, runs[r].name, threads, form ? "NCHW" : "NHWC",
                          with_bias ? "with" : "no", (long long)first, first < 0 ? 0 : y->data[first],
                          first < 0 ? 0 : expect[first]);
                    tensor_free(y);
                }
            }
        }
        // which kernel ran: oneDNN names its implementation, ours leaves it empty
        bool ran_onednn = int8_layer_impl(layer)[0] != 0;
        CHECK(ran_onednn == (runs[r].choice == INT8_KERNEL_ONEDNN), "%s: %s ran %s", what, runs[r].name,
              ran_onednn ? int8_layer_impl(layer) : "ours");
        fprintf(stderr, "int8 %s: %s (%s%s) equals the reference bit for bit with 1 and 2 threads\n", what,
                runs[r].name, ran_onednn ? int8_layer_impl(layer) : "int8_gemm ", ran_onednn ? "" : isa_name);
        cpu_hide_vnni(false);
        int8_layer_free(layer);
    }
    omp_set_num_threads(2);
    tensor_free(x);
    tensor_free(x_nchw);
    free(weight);
    free(q);
    free(scales);
    free(bias);
    free(out_scale);
    free(want);
    free(want_plain);
}

// ---- loading an 8-bit layer as stored --------------------------------------------------------

typedef struct file_values {
    const float *arrays[5];
} file_values;

static lcm_status fill(void *user, size_t index, float *out, int64_t numel) {
    const file_values *v = user;
    memcpy(out, v->arrays[index], sizeof(float) * (size_t)numel);
    return LCM_OK;
}

static void test_load_as_stored(const char *dir) {
    enum { IN = 12, OUT = 20, K = 3, H = 6, W = 5 };
    float wq[OUT * IN * K * K], scales[OUT], input_scale = 0.5f, zero_point = 17, bias[OUT];
    int8_t w8[OUT * IN * K * K];
    for (int i = 0; i < OUT * IN * K * K; i++) wq[i] = (float)(w8[i] = (int8_t)((int)(next_random() % 255) - 127));
    for (int o = 0; o < OUT; o++) {
        scales[o] = (float)(next_random() % 100 + 1) * 1e-3f;
        bias[o] = (float)o * 0.1f;
    }
    char path[512];
    test_path(path, sizeof path, "%s/layer.safetensors", dir);
    file_values values = {{wq, scales, &input_scale, &zero_point, bias}};
    st_write_entry entries[] = {{"conv.weight", ST_I8, 4, {OUT, IN, K, K}},
                                {"conv.weight_scale", ST_F32, 1, {OUT}},
                                {"conv.input_scale", ST_F32, 1, {1}},
                                {"conv.input_zero_point", ST_F32, 1, {1}},
                                {"conv.bias", ST_F32, 1, {OUT}}};
    CHECK_OK(st_write(path, entries, 5, fill, &values, "pt"));
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open_file(path, &ws));
    if (!ws) return;
    ops_backend b = ops_backend_from_environment(LCM_PRECISION_FP32);
    b.kernels = KERNELS_FAST;
    b.int8_kernels = true;
    conv2d c;
    CHECK_OK(conv2d_load(&c, &b, ws, "conv", IN, OUT, K, 1, 1, true));
    CHECK(c.weight == NULL && c.impl.family == &kernel_family_int8,
          "an 8-bit conv loaded as stored keeps a float weight (%p) or runs %s", (void *)c.weight,
          c.impl.family ? c.impl.family->name : "no kernel");
    int8_layer *direct = NULL;
    CHECK_OK(int8_layer_new_s8(w8, scales, IN, OUT, K, 1, 1, input_scale, (int32_t)zero_point,
                               INT8_KERNEL_AUTO, &direct));
    tensor *x = tensor_new4(1, IN, H, W);
    for (int64_t i = 0; i < tensor_numel(x); i++) x->data[i] = ((float)(next_random() % 1000) - 300.0f) * 0.07f;
    tensor *got = c.impl.family ? conv2d_forward(&c, x) : NULL;
    tensor *want = direct ? int8_layer_forward(direct, x, bias) : NULL;
    CHECK(got && want && tensor_numel(got) == tensor_numel(want) &&
              !memcmp(got->data, want->data, sizeof(float) * (size_t)tensor_numel(want)),
          "an 8-bit conv loaded from its file differs from one packed from the same s8 values");
    tensor_free(x);
    tensor_free(got);
    tensor_free(want);
    int8_layer_free(direct);
    conv2d_free(&c);
    weight_set_close(ws);

    // bad scales: the wrong count, then missing; the message names the tensor and what was expected
    for (int bad = 0; bad < 2; bad++) {
        st_write_entry broken[5];
        memcpy(broken, entries, sizeof broken);
        broken[1].shape[0] = OUT - 1;
        if (bad == 1) broken[1].name = "conv.other_scale";
        CHECK_OK(st_write(path, broken, 5, fill, &values, "pt"));
        ws = NULL;
        CHECK_OK(weight_set_open_file(path, &ws));
        if (!ws) continue;
        lcm_status st = conv2d_load(&c, &b, ws, "conv", IN, OUT, K, 1, 1, true);
        fprintf(stderr, "int8 load with %s scales: %s\n", bad ? "missing" : "mismatched", lcm_last_error());
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), "conv.weight_scale") &&
                  strstr(lcm_last_error(), bad ? "missing" : "wrong type or size"),
              "8-bit conv with %s scales: %s (%s)", bad ? "missing" : "mismatched", lcm_status_name(st),
              lcm_last_error());
        conv2d_free(&c);
        weight_set_close(ws);
    }
    unlink(path);
}

int main(void) {
    fprintf(stderr, "CPU: %s (%s)\n", cpu_features_get()->name, cpu_feature_list());
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) test_case(&cases[i]);
    // with AVX-512 hidden altogether (an AVX2-only CPU): ours on AVX2, oneDNN never asked
    cpu_hide_avx512(true);
    CHECK(int8_kernel_for_cpu(INT8_KERNEL_ONEDNN) == INT8_KERNEL_OURS,
          "oneDNN int8 chosen on a CPU without VNNI");
    test_case(&cases[1]);
    test_case(&cases[7]);
    cpu_hide_avx512(false);

    char dir[] = "/tmp/lcm-int8k-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    test_load_as_stored(dir);
    rmdir(dir);
    return test_finish();
}
