// The fast kernels (oneDNN primitives on packed weights, channels-last activations, AVX-512 norms
// and activations) against the reference kernels on the same weights and inputs.
//
// fp32: within 1e-5 of the largest reference value (different summation order only). bf16 weights
// and activations (8-bit mantissa, fp32 accumulation): within 2% of the largest reference value,
// which a wrong index or a missing term exceeds by far. Every op also takes mixed layouts.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/cpu.h"
#include "ops/conv_direct.h"
#include "ops/dnnl_layer.h"
#include "ops/ops.h"
#include "ops/pointwise.h"
#include "ops/resample.h"
#include "testutil.h"

#define FP32_TOL 1e-5
#define BF16_TOL 2e-2

static float *copy_floats(const float *v, int64_t n) {
    float *c = test_random_floats(n, 0, 1);
    memcpy(c, v, sizeof(float) * (size_t)n);
    return c;
}

// got vs want (either layout) within rel * max|want|; prints the max diff. Consumes neither.
static void compare(const char *what, const tensor *got, const tensor *want, double rel) {
    CHECK(got && want, "%s: op returned NULL: %s", what, lcm_last_error());
    if (!got || !want) return;
    tensor *g = tensor_to_nchw(got), *w = tensor_to_nchw(want);
    size_t n = (size_t)tensor_numel(w);
    bool same = g->ndim == w->ndim && (size_t)tensor_numel(g) == n;
    for (int i = 0; same && i < g->ndim; i++) same = g->shape[i] == w->shape[i];
    CHECK(same, "%s: shape differs", what);
    if (same) {
        double scale = test_max_abs(w->data, n), max_diff = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)g->data[i] - w->data[i]);
            if (d > max_diff || isnan(d)) max_diff = d;
        }
        fprintf(stderr, "%-52s max|diff| %.3g (%.3g of max|ref| %.3g)\n", what, max_diff,
                scale > 0 ? max_diff / scale : 0.0, scale);
        test_close(what, g->data, w->data, n, rel * (scale > 0 ? scale : 1), 0);
    }
    tensor_free(g);
    tensor_free(w);
}

// ---- conv and linear ------------------------------------------------------------------------------

// The direct kernel's AVX2 register tiles give the same bits as its AVX-512 ones (ops/fma_tile.h):
// `want` is what c computed on x with `fusion` (NULL: none) while AVX-512 was in use.
static void avx2_same_bits(const conv2d *c, const tensor *x, const conv2d_fusion *fusion, const tensor *want) {
    cpu_hide_avx512(true);
    tensor *avx2 = fusion ? conv2d_forward_fused(c, x, fusion) : conv2d_forward(c, x);
    cpu_hide_avx512(false);
    compare("  AVX2 tiles: the same bits as AVX-512", avx2, want, 0);
    tensor_free(avx2);
}

static void check_conv_with(lcm_precision precision, conv_kernel kernel_choice, int64_t n, int in,
                            int out, int64_t h, int64_t w, int kernel, int stride, int padding,
                            bool bias) {
    conv2d ref = {.in = in, .out = out, .kernel = kernel, .stride = stride, .padding = padding};
    float bound = 1.0f / sqrtf((float)(in * kernel * kernel));
    ref.weight = test_random_floats((int64_t)out * in * kernel * kernel, -bound, bound);
    ref.bias = bias ? test_random_floats(out, -1, 1) : NULL;
    conv2d fast = ref;
    fast.weight = copy_floats(ref.weight, (int64_t)out * in * kernel * kernel);
    fast.bias = bias ? copy_floats(ref.bias, out) : NULL;
    CHECK_OK(conv2d_pack_kernel(&fast, test_backend_for(precision), kernel_choice));
    CHECK(fast.impl.family && fast.impl.state && !fast.weight && conv2d_present(&fast),
          "conv2d_pack frees the plain weight");
    if (!fast.impl.family) exit(1);
    dnnl_layer *onednn = test_packed_for(&fast.impl, &kernel_family_onednn);

    tensor *x = test_random_tensor(4, (int64_t[]){n, in, h, w}, -1, 1);
    tensor *x_nhwc = tensor_to_nhwc(x);
    tensor *want = conv2d_forward(&ref, x);
    tensor *from_nchw = conv2d_forward(&fast, x);
    tensor *from_nhwc = conv2d_forward(&fast, x_nhwc);
    tensor *ref_from_nhwc = conv2d_forward(&ref, x_nhwc);
    char what[160];
    double tol = precision == LCM_PRECISION_BF16 ? BF16_TOL : FP32_TOL;
    snprintf(what, sizeof what, "conv %s %s %dx%d s%d p%d %d->%d %lldx%lld%s",
             precision == LCM_PRECISION_BF16 ? "bf16" : "fp32",
             fast.impl.family->name, kernel, kernel, stride, padding, in, out, (long long)h,
             (long long)w, bias ? "" : " no bias");
    compare(what, from_nchw, want, tol);
    CHECK(from_nchw && from_nchw->layout == TENSOR_NHWC, "%s: fast output is NHWC", what);
    compare("  same from an NHWC input", from_nhwc, want, tol);
    compare("  reference from an NHWC input", ref_from_nhwc, want, 0);
    if (fast.impl.family == &kernel_family_direct && cpu_has_avx512())
        avx2_same_bits(&fast, x_nhwc, NULL, from_nhwc);
    if (onednn) {
        fprintf(stderr, "  implementation: %s (%s)\n", dnnl_layer_impl(onednn),
                dnnl_layer_precision(onednn) == LCM_PRECISION_BF16 ? "bf16" : "fp32");
        // The primitive is created once per shape, then reused.
        tensor *again = conv2d_forward(&fast, x_nhwc);
        compare("  second call", again, from_nhwc, 0);
        CHECK(dnnl_layer_primitive_count(onednn) == 1, "%s: one primitive for one shape (%d)",
              what, dnnl_layer_primitive_count(onednn));
        tensor_free(again);
    }
    tensor_free(x);
    tensor_free(x_nhwc);
    tensor_free(want);
    tensor_free(from_nchw);
    tensor_free(from_nhwc);
    tensor_free(ref_from_nhwc);
    conv2d_free(&ref);
    conv2d_free(&fast);
}

static void check_conv(lcm_precision precision, int64_t n, int in, int out, int64_t h, int64_t w,
                       int kernel, int stride, int padding, bool bias) {
    check_conv_with(precision, CONV_KERNEL_ONEDNN, n, in, out, h, w, kernel, stride, padding, bias);
    check_conv_with(precision, CONV_KERNEL_SGEMM, n, in, out, h, w, kernel, stride, padding, bias);
    if (conv_direct_available())
        check_conv_with(precision, CONV_KERNEL_DIRECT, n, in, out, h, w, kernel, stride, padding, bias);
}

static void check_linear(lcm_precision precision, int64_t batch, int64_t rows, int in, int out,
                         bool bias) {
    linear ref = {.in = in, .out = out};
    float bound = 1.0f / sqrtf((float)in);
    ref.weight = test_random_floats((int64_t)out * in, -bound, bound);
    ref.bias = bias ? test_random_floats(out, -1, 1) : NULL;
    linear fast = ref;
    fast.weight = copy_floats(ref.weight, (int64_t)out * in);
    fast.bias = bias ? copy_floats(ref.bias, out) : NULL;
    CHECK_OK(linear_pack_with(&fast, test_backend_for(precision), true));
    dnnl_layer *onednn = test_packed_for(&fast.impl, &kernel_family_onednn);
    if (!onednn) exit(1);
    tensor *x = test_random_tensor(3, (int64_t[]){batch, rows, in}, -1, 1);
    tensor *want = linear_forward(&ref, x);
    tensor *got = linear_forward(&fast, x);
    char what[160];
    snprintf(what, sizeof what, "linear %s [%lld,%lld,%d] -> %d%s",
             precision == LCM_PRECISION_BF16 ? "bf16" : "fp32", (long long)batch, (long long)rows,
             in, out, bias ? "" : " no bias");
    compare(what, got, want, precision == LCM_PRECISION_BF16 ? BF16_TOL : FP32_TOL);
    fprintf(stderr, "  implementation: %s\n", dnnl_layer_impl(onednn));
    tensor_free(x);
    tensor_free(want);
    tensor_free(got);
    linear_free(&ref);
    linear_free(&fast);
}

static void test_conv_linear(void) {
    lcm_precision precisions[] = {LCM_PRECISION_FP32, LCM_PRECISION_BF16};
    for (int p = 0; p < 2; p++) {
        lcm_precision pr = precisions[p];
        check_conv(pr, 2, 8, 16, 9, 7, 3, 1, 1, true);   // ResNet conv
        check_conv(pr, 1, 32, 32, 16, 16, 3, 1, 1, true);
        check_conv(pr, 1, 16, 8, 8, 8, 1, 1, 0, true);   // shortcut
        check_conv(pr, 1, 16, 16, 9, 9, 3, 2, 1, true);  // UNet downsample
        check_conv(pr, 1, 16, 16, 10, 10, 3, 2, 0, true); // VAE downsample (after pad2d)
        check_conv(pr, 1, 4, 3, 5, 6, 3, 1, 1, false);     // too few channels for bf16 kernels
        check_conv(pr, 1, 64, 64, 12, 12, 3, 1, 1, true);  // brgconv-sized
        check_conv(pr, 2, 16, 3, 13, 11, 3, 1, 1, true);   // conv_out to RGB (direct: dot products)
        check_conv(pr, 2, 16, 32, 13, 11, 3, 1, 1, true);  // Winograd F(4x4), odd sizes: partial tiles
        check_conv(pr, 1, 8, 16, 1, 3, 3, 1, 1, false);   // Winograd, one row
        check_conv(pr, 1, 264, 272, 7, 5, 3, 1, 1, true);  // Winograd F(2x2) (over 256 channels)
        check_conv(pr, 1, 640, 640, 6, 5, 3, 1, 1, true);  // Winograd F(2x2) at its 640-channel cap
        // Over the cap, at >= 256 output pixels: Winograd on weights transformed during the call, in
        // one chunk of tiles, then in several with partial tiles and two images.
        check_conv(pr, 1, 648, 656, 17, 16, 3, 1, 1, true);
        check_conv(pr, 2, 648, 32, 39, 37, 3, 1, 1, false);
        check_conv(pr, 1, 24, 2, 9, 10, 3, 2, 1, false);   // a few channels, strided
        check_conv(pr, 1, 8, 1, 5, 7, 1, 1, 0, true);      // one channel, 1x1
        check_linear(pr, 2, 37, 24, 40, true);
        check_linear(pr, 1, 1, 64, 96, true); // time embedding: one row
        check_linear(pr, 1, 77, 32, 16, false);
        check_linear(pr, 1, 300, 320, 640, true);
    }
}

// A backend reads the environment once, when it is made: fast kernels unless
// LCM_REFERENCE_KERNELS is set to something other than 0, and the precision it was asked for.
static void test_backend_object(void) {
    const char *set = getenv("LCM_REFERENCE_KERNELS");
    char *was = set ? strdup(set) : NULL;
    unsetenv("LCM_REFERENCE_KERNELS");
    ops_backend fast = ops_backend_from_environment(LCM_PRECISION_BF16);
    CHECK(fast.kernels == KERNELS_FAST && fast.precision == LCM_PRECISION_BF16 &&
              fast.cpu == cpu_features_get(),
          "fast kernels are the default, in the precision asked for, on this CPU");
    setenv("LCM_REFERENCE_KERNELS", "1", 1);
    ops_backend reference = ops_backend_from_environment(LCM_PRECISION_FP32);
    CHECK(reference.kernels == KERNELS_REFERENCE && reference.precision == LCM_PRECISION_FP32,
          "LCM_REFERENCE_KERNELS=1 gives reference kernels");
    CHECK(fast.kernels == KERNELS_FAST, "a backend made earlier keeps its kernels");
    setenv("LCM_REFERENCE_KERNELS", "0", 1);
    CHECK(ops_backend_from_environment(LCM_PRECISION_FP32).kernels == KERNELS_FAST,
          "LCM_REFERENCE_KERNELS=0 gives fast kernels");
    if (was) setenv("LCM_REFERENCE_KERNELS", was, 1);
    else unsetenv("LCM_REFERENCE_KERNELS");
    free(was);
}

// ---- norms and elementwise over NHWC ---------------------------------------------------------

static norm random_norm(int channels, int groups) {
    norm n = {.channels = channels, .groups = groups, .eps = 1e-5f};
    n.weight = test_random_floats(channels, 0.5f, 1.5f);
    n.bias = test_random_floats(channels, -0.5f, 0.5f);
    return n;
}

static void test_norms(void) {
    int64_t shapes[][4] = {{2, 32, 9, 7}, {1, 64, 16, 16}, {1, 12, 70, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        norm n = random_norm((int)shapes[s][1], (int)shapes[s][1] / 4);
        tensor *x = test_random_tensor(4, shapes[s], -2, 3);
        tensor *x_nhwc = tensor_to_nhwc(x);
        char what[128];
        snprintf(what, sizeof what, "group_norm NHWC [%lld,%lld,%lld,%lld]", (long long)shapes[s][0],
                 (long long)shapes[s][1], (long long)shapes[s][2], (long long)shapes[s][3]);
        tensor *want = group_norm(&n, x), *got = group_norm(&n, x_nhwc);
        compare(what, got, want, FP32_TOL);
        CHECK(got && got->layout == TENSOR_NHWC, "group_norm keeps NHWC");
        tensor_free(want);
        tensor_free(got);
        want = group_norm_silu(&n, x);
        got = group_norm_silu(&n, x_nhwc);
        compare("  group_norm_silu", got, want, FP32_TOL);
        // In place, in either layout: the same values in the input's own memory.
        for (int layout = 0; layout < 2; layout++) {
            const tensor *plain = layout ? got : want, *source = layout ? x_nhwc : x;
            tensor *copy = tensor_copy(source);
            const float *memory = copy ? copy->data : NULL;
            tensor *normed = group_norm_silu_consume(&n, copy);
            CHECK(normed && normed->data == memory && normed->layout == source->layout,
                  "group_norm_silu_consume works in its input's memory");
            compare(layout ? "  group_norm_silu_consume NHWC" : "  group_norm_silu_consume NCHW", normed, plain, 0);
            tensor_free(normed);
        }
        tensor_free(want);
        tensor_free(got);
        tensor_free(x);
        tensor_free(x_nhwc);
        norm_free(&n);
    }
}

// Runs op on a copy of x with reference kernels and with fast ones.
static void compare_modes(const char *what, tensor *(*op)(const tensor *, kernel_set),
                          const tensor *x) {
    tensor *want = op(x, KERNELS_REFERENCE);
    tensor *got = op(x, KERNELS_FAST);
    compare(what, got, want, FP32_TOL);
    tensor_free(want);
    tensor_free(got);
}

static tensor *silu_copy(const tensor *x, kernel_set kernels) {
    tensor *y = tensor_copy(x);
    silu_inplace(y, kernels);
    return y;
}

static void test_elementwise(void) {
    tensor *x = test_random_tensor(3, (int64_t[]){2, 3, 4133}, -12, 12);
    x->data[0] = -100.0f;
    x->data[1] = 100.0f;
    x->data[2] = 0.0f;
    compare_modes("silu_inplace fast vs reference", silu_copy, x);
    compare_modes("geglu fast vs reference", geglu, x);
    tensor_free(x);
    x = test_random_tensor(3, (int64_t[]){1, 5, 38}, -5, 5);
    compare_modes("geglu (odd width) fast vs reference", geglu, x);
    tensor_free(x);
}

// Shape ops and two-input ops on every mix of layouts give the NCHW result.
static void test_layouts(void) {
    tensor *a = test_random_tensor(4, (int64_t[]){2, 3, 5, 4}, -1, 1);
    tensor *b = test_random_tensor(4, (int64_t[]){2, 6, 5, 4}, -1, 1);
    tensor *a2 = test_random_tensor(4, (int64_t[]){2, 3, 5, 4}, -1, 1);
    tensor *an = tensor_to_nhwc(a), *bn = tensor_to_nhwc(b), *a2n = tensor_to_nhwc(a2);

    tensor *want = concat_channels(a, b);
    const tensor *lefts[] = {a, an}, *rights[] = {b, bn};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            tensor *got = concat_channels(lefts[i], rights[j]);
            char what[64];
            snprintf(what, sizeof what, "concat_channels %s + %s", i ? "NHWC" : "NCHW",
                     j ? "NHWC" : "NCHW");
            compare(what, got, want, 0);
            tensor_free(got);
        }
    tensor_free(want);

    want = tensor_copy(a);
    add_inplace(want, a2);
    const tensor *seconds[] = {a2, a2n};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            tensor *got = tensor_copy(i ? an : a);
            add_inplace(got, seconds[j]);
            compare(i ? (j ? "add NHWC + NHWC" : "add NHWC + NCHW") : (j ? "add NCHW + NHWC" : "add"),
                    got, want, 0);
            tensor_free(got);
        }
    tensor_free(want);

    tensor *bias = test_random_tensor(2, (int64_t[]){2, 3}, -1, 1);
    want = add_channel_bias_inplace(tensor_copy(a), bias);
    tensor *got = add_channel_bias_inplace(tensor_copy(an), bias);
    compare("add_channel_bias NHWC", got, want, 0);
    tensor_free(want);
    tensor_free(got);
    tensor_free(bias);

    want = upsample_nearest2x(a);
    got = upsample_nearest2x(an);
    compare("upsample_nearest2x NHWC", got, want, 0);
    CHECK(got && got->layout == TENSOR_NHWC, "upsample keeps NHWC");
    tensor_free(want);
    tensor_free(got);
    want = upsample_nearest(a, 7, 9);
    got = upsample_nearest(an, 7, 9);
    compare("upsample_nearest 7x9 NHWC", got, want, 0);
    tensor_free(want);
    tensor_free(got);

    want = pad2d(a, 0, 1, 0, 1);
    got = pad2d(an, 0, 1, 0, 1);
    compare("pad2d NHWC", got, want, 0);
    tensor_free(want);
    tensor_free(got);

    want = nchw_to_tokens(a);
    got = nchw_to_tokens(an);
    compare("nchw_to_tokens from NHWC", got, want, 0);
    for (int set = 0; set < 2; set++) {
        tensor *back = tokens_to_nchw(got, 5, 4, set ? KERNELS_REFERENCE : KERNELS_FAST);
        compare(set ? "tokens_to_nchw (reference)" : "tokens_to_nchw (fast)", back, a, 0);
        CHECK(back && back->layout == (set ? TENSOR_NCHW : TENSOR_NHWC),
              "tokens_to_nchw gives the kernel set's layout");
        tensor_free(back);
    }
    tensor_free(want);
    tensor_free(got);

    tensor *t3 = test_random_tensor(3, (int64_t[]){2, 7, 4}, -1, 1);
    norm ln = random_norm(4, 1);
    want = layer_norm(&ln, a);
    got = layer_norm(&ln, an);
    compare("layer_norm of a 4-D NHWC tensor (over W)", got, want, FP32_TOL);
    tensor_free(want);
    tensor_free(got);
    norm_free(&ln);
    tensor_free(t3);

    tensor_free(a);
    tensor_free(b);
    tensor_free(a2);
    tensor_free(an);
    tensor_free(bn);
    tensor_free(a2n);
}

// ---- fused convolutions -----------------------------------------------------------------------

// conv2d_forward_fused against the separate ops it replaces: the same values bit for bit on every
// kernel path (the sgemm path fuses, the others run the steps one after another).
static void check_conv_fusion(conv_kernel kernel_choice, bool pack, int in, int out,
                              int kernel, int padding, int64_t h, int64_t w) {
    conv2d c = {.in = in, .out = out, .kernel = kernel, .stride = 1, .padding = padding};
    float bound = 1.0f / sqrtf((float)(in * kernel * kernel));
    c.weight = test_random_floats((int64_t)out * in * kernel * kernel, -bound, bound);
    c.bias = test_random_floats(out, -1, 1);
    if (pack) CHECK_OK(conv2d_pack_kernel(&c, test_backend_for(LCM_PRECISION_FP32), kernel_choice));
    const char *path = c.impl.family ? c.impl.family->name : "reference";
    tensor *x = test_random_tensor(4, (int64_t[]){2, in, h, w}, -1, 1);
    tensor *x_nhwc = tensor_to_nhwc(x);
    int64_t oh = 2 * h + 2 * padding - kernel + 1, ow = 2 * w + 2 * padding - kernel + 1;
    tensor *residual = test_random_tensor(4, (int64_t[]){2, out, oh, ow}, -1, 1);
    tensor *residual_nhwc = tensor_to_nhwc(residual);
    for (int variant = 0; variant < 4; variant++) {
        const tensor *input = variant % 2 ? x_nhwc : x;
        const tensor *r = variant < 2 ? residual : residual_nhwc;
        // the separate steps
        tensor *want = upsample_nearest2x(input);
        tensor_replace(&want, conv2d_forward(&c, want));
        add_inplace(want, r);
        relu_inplace(want);
        tensor *got = conv2d_forward_fused(
            &c, input,
            &(conv2d_fusion){.upsample_input = true, .residual = r, .activation = CONV_ACTIVATION_RELU});
        char what[160];
        snprintf(what, sizeof what, "fused conv %s %dx%d %d->%d %lldx%lld up+res+relu (%s in, %s res)",
                 path, kernel, kernel, in, out, (long long)h, (long long)w,
                 variant % 2 ? "NHWC" : "NCHW", variant < 2 ? "NCHW" : "NHWC");
        compare(what, got, want, 0);
        tensor_free(want);
        tensor_free(got);
    }
    // no upsampling, ReLU only: the same as conv then relu
    tensor *want = conv2d_forward(&c, x_nhwc);
    relu_inplace(want);
    tensor *got = conv2d_forward_fused(&c, x_nhwc, &(conv2d_fusion){.activation = CONV_ACTIVATION_RELU});
    compare("  ReLU only", got, want, 0);
    if (c.impl.family == &kernel_family_direct && cpu_has_avx512())
        avx2_same_bits(&c, x_nhwc, &(conv2d_fusion){.activation = CONV_ACTIVATION_RELU}, got);
    tensor_free(got);
    // a residual of the wrong shape is refused
    got = conv2d_forward_fused(&c, x_nhwc, &(conv2d_fusion){.residual = x});
    CHECK(!got || in == out, "fused conv: a residual of another shape is refused");
    tensor_free(got);
    tensor_free(want);
    tensor_free(x);
    tensor_free(x_nhwc);
    tensor_free(residual);
    tensor_free(residual_nhwc);
    conv2d_free(&c);
}

// The direct kernel's upsampling weights (conv2d_prepare_upsampled): the same convolution of the
// doubled image up to float rounding, from 2 x 2 input pixels per output pixel.
static void check_upsampled_phases(int in, int out, int64_t h, int64_t w) {
    conv2d c = {.in = in, .out = out, .kernel = 3, .stride = 1, .padding = 1};
    c.weight = test_random_floats((int64_t)out * in * 9, -1.0f / sqrtf(9.0f * in), 1.0f / sqrtf(9.0f * in));
    c.bias = test_random_floats(out, -1, 1);
    conv2d reference = c; // im2col + sgemm on the same weights
    reference.weight = copy_floats(c.weight, (int64_t)out * in * 9);
    reference.bias = copy_floats(c.bias, out);
    CHECK_OK(conv2d_pack_kernel(&reference, test_backend_for(LCM_PRECISION_FP32),
                                CONV_KERNEL_SGEMM));
    CHECK_OK(conv2d_pack_kernel(&c, test_backend_for(LCM_PRECISION_FP32), CONV_KERNEL_DIRECT));
    tensor *x = test_random_tensor(4, (int64_t[]){2, in, h, w}, -1, 1);
    tensor *nine_taps = conv2d_forward_fused(&c, x, &(conv2d_fusion){.upsample_input = true});
    CHECK_OK(conv2d_prepare_upsampled(&c));
    tensor *residual = test_random_tensor(4, (int64_t[]){2, out, 2 * h, 2 * w}, -1, 1);
    tensor *want = upsample_nearest2x(x);
    tensor_replace(&want, conv2d_forward(&reference, want));
    add_inplace(want, residual);
    relu_inplace(want);
    tensor *got = conv2d_forward_fused(
        &c, x, &(conv2d_fusion){.upsample_input = true, .residual = residual, .activation = CONV_ACTIVATION_RELU});
    tensor *phases = conv2d_forward_fused(&c, x, &(conv2d_fusion){.upsample_input = true});
    char what[128];
    snprintf(what, sizeof what, "upsampling phases 3x3 %d->%d %lldx%lld +res+relu", in, out,
             (long long)h, (long long)w);
    compare(what, got, want, FP32_TOL);
    compare("  phases vs 9 taps, no epilogue", phases, nine_taps, FP32_TOL);
    if (cpu_has_avx512()) avx2_same_bits(&c, x, &(conv2d_fusion){.upsample_input = true}, phases);
    tensor_free(nine_taps);
    tensor_free(phases);
    tensor_free(want);
    tensor_free(got);
    tensor_free(residual);
    tensor_free(x);
    conv2d_free(&c);
    conv2d_free(&reference);
}

static void test_conv_fusion(void) {
    // 13x11 doubled is 572 pixels per image: the last pixel chunk is partial.
    static const int shapes[][4] = {{5, 7, 3, 1}, {4, 6, 1, 0}, {16, 8, 3, 1}, {16, 3, 3, 1}, {16, 16, 3, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *s = shapes[i];
        check_conv_fusion(CONV_KERNEL_SGEMM, true, s[0], s[1], s[2], s[3], 13, 11);
        check_conv_fusion(CONV_KERNEL_ONEDNN, true, s[0], s[1], s[2], s[3], 13, 11);
        check_conv_fusion(CONV_KERNEL_AUTO, false, s[0], s[1], s[2], s[3], 13, 11);
        if (conv_direct_available())
            check_conv_fusion(CONV_KERNEL_DIRECT, true, s[0], s[1], s[2], s[3], 13, 11);
    }
    if (conv_direct_available()) {
        check_upsampled_phases(5, 7, 13, 11);
        check_upsampled_phases(16, 20, 4, 9);
        check_upsampled_phases(3, 16, 1, 1);
        check_upsampled_phases(16, 32, 5, 7); // Winograd on the doubled image
        check_conv_fusion(CONV_KERNEL_DIRECT, true, 648, 16, 3, 1, 9, 8); // transformed per call
        check_upsampled_phases(648, 16, 9, 8); // no phases there: Winograd transformed per call
        // Outputs written with non-temporal stores (only large ones by default), with and
        // without the epilogue.
        conv_direct_set_stream_bytes(0);
        check_conv_with(LCM_PRECISION_FP32, CONV_KERNEL_DIRECT, 2, 16, 32, 13, 11, 3, 1, 1, true);
        check_conv_with(LCM_PRECISION_FP32, CONV_KERNEL_DIRECT, 1, 264, 272, 7, 5, 3, 1, 1, true);
        check_conv_with(LCM_PRECISION_FP32, CONV_KERNEL_DIRECT, 1, 648, 32, 17, 16, 3, 1, 1, true);
        check_conv_fusion(CONV_KERNEL_DIRECT, true, 16, 16, 3, 1, 13, 11);
        check_upsampled_phases(16, 32, 5, 7);
        conv_direct_set_stream_bytes(-1);
    }
}

static tensor *filled_tensor(int64_t mib, float value) {
    int64_t n = mib * (1 << 20) / 4;
    tensor *t = tensor_new(1, &n);
    for (int64_t i = 0; i < n; i++) t->data[i] = value;
    return t;
}

static bool holds_only(const tensor *t, float value) {
    for (int64_t i = 0; i < tensor_numel(t); i++)
        if (t->data[i] != value) return false;
    return true;
}

// Mapped buffers (>= 4 MiB): a tensor of a size never kept is made of the pages of kept buffers,
// and only the rest comes fresh from the system; live tensors keep their values.
static void test_page_moves(void) {
    const size_t mib = 1 << 20;
    tensor_release_cached();
    tensor_free(filled_tensor(8, 1.0f));
    size_t fresh = tensor_cache_stats().fresh;
    tensor *six = filled_tensor(6, 2.0f); // 6 of the 8 kept MiB
    CHECK(tensor_cache_stats().fresh == fresh, "6 MiB from 8 kept: %zu fresh bytes", tensor_cache_stats().fresh - fresh);
    tensor *twelve = filled_tensor(12, 3.0f); // the 2 MiB left, and 10 fresh
    CHECK(tensor_cache_stats().fresh - fresh == 10 * mib, "12 MiB with 2 kept: %zu fresh bytes, expected 10 MiB",
          tensor_cache_stats().fresh - fresh);
    CHECK(holds_only(six, 2.0f) && holds_only(twelve, 3.0f), "live tensors keep their values");
    tensor_free(six);
    tensor_free(twelve);
    fresh = tensor_cache_stats().fresh;
    tensor *eighteen = filled_tensor(18, 4.0f); // both kept buffers, moved together
    tensor_cache_counts counts = tensor_cache_stats();
    CHECK(counts.fresh == fresh && counts.kept == 0, "18 MiB from 6 + 12 kept: %zu fresh, %zu still kept",
          counts.fresh - fresh, counts.kept);
    CHECK(holds_only(eighteen, 4.0f), "the moved pages hold what was written");
    tensor_free(eighteen);
    tensor_release_cached();
}

// Freed large buffers go to the next tensor of their size, live ones are never handed out twice,
// and kept + live bytes never exceed the most that were alive at once.
static void test_buffer_reuse(void) {
    const char *setting = getenv("LCM_TENSOR_CACHE");
    if (setting && !strcmp(setting, "0")) {
        fprintf(stderr, "buffer reuse: skipped, LCM_TENSOR_CACHE=0 turns it off\n");
        return;
    }
    tensor_release_cached();
    int64_t big = (1 << 20) / 4 + 100; // just over the 1 MiB reuse threshold
    tensor *a = tensor_new(1, &big);
    float *first = a->data;
    tensor_free(a);
    tensor *b = tensor_new(1, &big);
    CHECK(b->data == first, "a freed large buffer is reused for the same size");
    for (int64_t i = 0; i < big; i++) b->data[i] = (float)i;
    tensor *c = tensor_new(1, &big);
    CHECK(c->data != b->data, "a live buffer is never handed out twice");
    tensor_free(c);
    int64_t other = 2 * big;
    tensor *d = tensor_new(1, &other);
    tensor *e = tensor_new(1, &big);
    CHECK(e->data != b->data && e->data != d->data, "distinct live buffers");
    CHECK(b->data[big - 1] == (float)(big - 1), "live values untouched");
    tensor_free(b);
    tensor_free(d);
    tensor_free(e);
    // A random walk of allocations and frees of a few sizes: the rule holds at every step.
    tensor *alive[12] = {0};
    uint64_t state = 99;
    bool rule_held = true;
    for (int step = 0; step < 400; step++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int slot = (int)(state >> 33) % 12;
        if (alive[slot]) {
            tensor_free(alive[slot]);
            alive[slot] = NULL;
        } else {
            int64_t n = big * (int64_t)(1 + (state >> 40) % 4);
            alive[slot] = tensor_new(1, &n);
            alive[slot]->data[n - 1] = (float)slot; // touch it
        }
        tensor_cache_counts counts = tensor_cache_stats();
        if (counts.kept + counts.live > counts.most_live) rule_held = false;
    }
    CHECK(rule_held, "kept + live bytes never exceed the most ever alive");
    for (int i = 0; i < 12; i++) tensor_free(alive[i]);
    tensor_release_cached();
    tensor_cache_counts counts = tensor_cache_stats();
    CHECK(counts.kept == 0 && counts.live == 0, "all released: kept %zu, live %zu", counts.kept, counts.live);
    test_page_moves();
}

int main(void) {
    test_backend_object();
    test_conv_linear();
    test_norms();
    test_elementwise();
    test_layouts();
    test_conv_fusion();
    test_buffer_reuse();
    return test_finish();
}
