// The op layer against naive reference loops that accumulate in double.
//
// Each op is compared on deterministic pseudo-random inputs with a tolerance of 1e-5 relative to the
// largest reference value (plus 1e-5 of each value itself): float32 rounding of the op's own sums stays
// well inside it, a wrong index or a missing term does not. Shapes cover the paths inside the ops:
// pointwise and im2col convolution, several column bands, several attention query blocks.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/ops.h"
#include "testutil.h"

#define REL_TOL 1e-5

// ---- inputs ---------------------------------------------------------------------------------------

static double *new_doubles(int64_t n) {
    double *v = calloc((size_t)(n ? n : 1), sizeof *v);
    if (!v) exit(2);
    return v;
}

// Compares an op's output with a double reference of the expected shape; prints the max diff. The
// absolute part of the tolerance is REL_TOL * `scale`, or * max |reference| when scale is 0.
static void compare_scaled(const char *what, const tensor *got_any, int ndim,
                           const int64_t *shape, const double *want, double scale) {
    CHECK(got_any != NULL, "%s: op returned NULL: %s", what, lcm_last_error());
    if (!got_any) return;
    tensor *plain = tensor_to_nchw(got_any); // ops may return channels-last tensors
    if (!plain) exit(2);
    const tensor *got = plain;
    bool same_shape = got->ndim == ndim;
    for (int i = 0; same_shape && i < ndim; i++) same_shape = got->shape[i] == shape[i];
    CHECK(same_shape, "%s: wrong output shape", what);
    if (!same_shape) {
        tensor_free(plain);
        return;
    }
    int64_t n = tensor_numel(got);
    float *want_f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    double max_diff = 0;
    for (int64_t i = 0; i < n; i++) {
        want_f[i] = (float)want[i];
        double d = fabs((double)got->data[i] - want[i]);
        if (d > max_diff || isnan(d)) max_diff = d;
    }
    double max_ref = test_max_abs(want_f, (size_t)n);
    if (scale == 0) scale = max_ref > 0 ? max_ref : 1;
    fprintf(stderr, "%-46s max |diff| %.3g (max |ref| %.3g, %lld values)\n", what, max_diff, max_ref,
            (long long)n);
    test_close(what, got->data, want_f, (size_t)n, REL_TOL * scale, REL_TOL);
    free(want_f);
    tensor_free(plain);
}

static void compare(const char *what, const tensor *got, int ndim, const int64_t *shape,
                    const double *want) {
    compare_scaled(what, got, ndim, shape, want, 0);
}

// Exact comparison for ops that only move values.
// (in plain NCHW order: ops may return channels-last tensors)
static void compare_exact(const char *what, const tensor *got, int ndim, const int64_t *shape,
                          const float *want) {
    CHECK(got != NULL, "%s: op returned NULL: %s", what, lcm_last_error());
    if (!got) return;
    bool same_shape = got->ndim == ndim;
    for (int i = 0; same_shape && i < ndim; i++) same_shape = got->shape[i] == shape[i];
    CHECK(same_shape, "%s: wrong output shape", what);
    tensor *plain = tensor_to_nchw(got);
    if (same_shape && plain)
        CHECK(!memcmp(plain->data, want, sizeof(float) * (size_t)tensor_numel(got)),
              "%s: values differ", what);
    tensor_free(plain);
}

// ---- convolution --------------------------------------------------------------------------------

static void ref_conv2d(const conv2d *c, const tensor *x, int64_t oh, int64_t ow, double *y) {
    int64_t n = x->shape[0], h = x->shape[2], w = x->shape[3];
    int k = c->kernel;
    for (int64_t b = 0; b < n; b++)
        for (int oc = 0; oc < c->out; oc++)
            for (int64_t oy = 0; oy < oh; oy++)
                for (int64_t ox = 0; ox < ow; ox++) {
                    double sum = c->bias ? c->bias[oc] : 0.0;
                    for (int ic = 0; ic < c->in; ic++)
                        for (int ky = 0; ky < k; ky++) {
                            int64_t iy = oy * c->stride - c->padding + ky;
                            if (iy < 0 || iy >= h) continue;
                            for (int kx = 0; kx < k; kx++) {
                                int64_t ix = ox * c->stride - c->padding + kx;
                                if (ix < 0 || ix >= w) continue;
                                sum += (double)c->weight[((oc * c->in + ic) * k + ky) * k + kx] *
                                       x->data[((b * c->in + ic) * h + iy) * w + ix];
                            }
                        }
                    y[((b * c->out + oc) * oh + oy) * ow + ox] = sum;
                }
}

static void check_conv(int64_t n, int in, int out, int64_t h, int64_t w, int kernel, int stride,
                       int padding, bool bias) {
    conv2d c = {.in = in, .out = out, .kernel = kernel, .stride = stride, .padding = padding};
    // Weights scaled like a trained layer (~1/sqrt(fan in)) keep outputs O(1).
    float bound = 1.0f / sqrtf((float)(in * kernel * kernel));
    c.weight = test_random_floats((int64_t)out * in * kernel * kernel, -bound, bound);
    c.bias = bias ? test_random_floats(out, -1, 1) : NULL;
    tensor *x = test_random_tensor(4, (int64_t[]){n, in, h, w}, -1, 1);
    int64_t oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1;
    int64_t shape[4] = {n, out, oh, ow};
    double *want = new_doubles(n * out * oh * ow);
    ref_conv2d(&c, x, oh, ow, want);
    tensor *y = conv2d_forward(&c, x);
    char what[160];
    snprintf(what, sizeof what, "conv k%d s%d p%d %s [%lld,%d,%lld,%lld]->%d", kernel, stride, padding,
             bias ? "bias" : "nobias", (long long)n, in, (long long)h, (long long)w, out);
    compare(what, y, 4, shape, want);
    tensor_free(y);
    tensor_free(x);
    free(want);
    conv2d_free(&c);
}

static void test_conv(void) {
    // Every kernel/stride/padding/bias combination on odd sizes, batch 2.
    for (int kernel = 1; kernel <= 3; kernel += 2)
        for (int stride = 1; stride <= 2; stride++)
            for (int padding = 0; padding <= 1; padding++)
                for (int bias = 0; bias <= 1; bias++)
                    check_conv(2, 3, 5, 7, 9, kernel, stride, padding, bias);
    check_conv(1, 4, 6, 8, 8, 3, 2, 1, true); // even size, the downsampler's shape
    check_conv(2, 1, 1, 1, 1, 1, 1, 0, false);
    check_conv(1, 2, 3, 3, 3, 3, 1, 0, true); // output 1x1
    // The column buffer holds CONV_COLUMN_BUDGET (8 Mi) floats: 128 channels x 3x3 x 128 columns is
    // 147456 floats per output row, so 128 rows take three bands (56 + 56 + 16).
    check_conv(1, 128, 3, 128, 128, 3, 1, 1, true);
    // Strided: 256 x 3x3 x 80 columns = 184320 floats per row, 80 rows in two bands (45 + 35).
    check_conv(1, 256, 2, 160, 160, 3, 2, 1, false);

    conv2d c = {.in = 3, .out = 2, .kernel = 1, .stride = 1};
    c.weight = test_random_floats(6, -1, 1);
    tensor *x = test_random_tensor(4, (int64_t[]){1, 4, 2, 2}, -1, 1);
    tensor *y = conv2d_forward(&c, x);
    CHECK(y == NULL && strstr(lcm_last_error(), "channels"), "conv channel mismatch: %s",
          lcm_last_error());
    tensor_free(y);
    tensor_free(x);
    conv2d_free(&c);
}

static void test_pad2d(void) {
    tensor *x = test_random_tensor(4, (int64_t[]){2, 3, 5, 4}, -1, 1);
    int top = 1, bottom = 2, left = 0, right = 3;
    int64_t ph = 5 + top + bottom, pw = 4 + left + right;
    float *want = calloc((size_t)(2 * 3 * ph * pw), sizeof *want);
    for (int64_t p = 0; p < 6; p++)
        for (int64_t y = 0; y < 5; y++)
            for (int64_t xx = 0; xx < 4; xx++)
                want[(p * ph + y + top) * pw + xx + left] = x->data[(p * 5 + y) * 4 + xx];
    tensor *y = pad2d(x, top, bottom, left, right);
    compare_exact("pad2d (1,2,0,3)", y, 4, (int64_t[]){2, 3, ph, pw}, want);
    tensor_free(y);
    y = pad2d(x, 0, 0, 0, 0);
    compare_exact("pad2d nothing", y, 4, x->shape, x->data);
    tensor_free(y);
    tensor_free(x);
    free(want);
}

// ---- linear ---------------------------------------------------------------------------------------

static void check_linear(int ndim, const int64_t *shape, int out, bool bias) {
    int in = (int)shape[ndim - 1];
    linear l = {.in = in, .out = out};
    float bound = 1.0f / sqrtf((float)in);
    l.weight = test_random_floats((int64_t)out * in, -bound, bound);
    l.bias = bias ? test_random_floats(out, -1, 1) : NULL;
    tensor *x = test_random_tensor(ndim, shape, -2, 2);
    int64_t rows = tensor_numel(x) / in;
    double *want = new_doubles(rows * out);
    for (int64_t r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double sum = bias ? l.bias[o] : 0.0;
            for (int i = 0; i < in; i++) sum += (double)x->data[r * in + i] * l.weight[o * in + i];
            want[r * out + o] = sum;
        }
    int64_t out_shape[4];
    memcpy(out_shape, shape, sizeof(int64_t) * (size_t)ndim);
    out_shape[ndim - 1] = out;
    tensor *y = linear_forward(&l, x);
    char what[96];
    snprintf(what, sizeof what, "linear %dD %d->%d %s", ndim, in, out, bias ? "bias" : "nobias");
    compare(what, y, ndim, out_shape, want);
    tensor_free(y);
    tensor_free(x);
    free(want);
    linear_free(&l);
}

static void test_linear(void) {
    for (int bias = 0; bias <= 1; bias++) {
        check_linear(2, (int64_t[]){5, 7}, 4, bias);
        check_linear(3, (int64_t[]){2, 3, 7}, 9, bias);
        check_linear(2, (int64_t[]){77, 96}, 320, bias);
    }
    check_linear(4, (int64_t[]){2, 2, 3, 5}, 3, true);
    linear l = {.in = 4, .out = 2};
    l.weight = test_random_floats(8, -1, 1);
    tensor *x = test_random_tensor(2, (int64_t[]){3, 5}, -1, 1);
    tensor *y = linear_forward(&l, x);
    CHECK(y == NULL && strstr(lcm_last_error(), "features"), "linear feature mismatch: %s",
          lcm_last_error());
    tensor_free(x);
    linear_free(&l);
}

// ---- normalisation --------------------------------------------------------------------------------

static double silu_ref(double v) { return v / (1.0 + exp(-v)); }

static void check_group_norm(int64_t n, int channels, int groups, int64_t h, int64_t w, bool silu) {
    norm nm = {.channels = channels, .groups = groups, .eps = 1e-5f};
    nm.weight = test_random_floats(channels, 0.5f, 1.5f);
    nm.bias = test_random_floats(channels, -0.5f, 0.5f);
    // An offset of 3 checks that the variance is not computed as E[x^2] - E[x]^2 in float.
    tensor *x = test_random_tensor(4, (int64_t[]){n, channels, h, w}, 2, 4);
    int64_t hw = h * w, per_group = channels / groups;
    double *want = new_doubles(tensor_numel(x));
    for (int64_t b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            const float *xs = x->data + (b * channels + g * per_group) * hw;
            int64_t count = per_group * hw;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < count; i++) mean += xs[i];
            mean /= (double)count;
            for (int64_t i = 0; i < count; i++) var += (xs[i] - mean) * (xs[i] - mean);
            var /= (double)count;
            for (int64_t i = 0; i < count; i++) {
                int64_t ch = g * per_group + i / hw;
                double v = (xs[i] - mean) / sqrt(var + nm.eps) * nm.weight[ch] + nm.bias[ch];
                want[(b * channels + g * per_group) * hw + i] = silu ? silu_ref(v) : v;
            }
        }
    tensor *y = silu ? group_norm_silu(&nm, x) : group_norm(&nm, x);
    char what[96];
    snprintf(what, sizeof what, "group_norm%s %d ch / %d groups, %lldx%lld", silu ? "_silu" : "",
             channels, groups, (long long)h, (long long)w);
    compare(what, y, 4, x->shape, want);
    tensor_free(y);
    tensor_free(x);
    free(want);
    norm_free(&nm);
}

static void check_layer_norm(int ndim, const int64_t *shape) {
    int d = (int)shape[ndim - 1];
    norm nm = {.channels = d, .groups = 1, .eps = 1e-5f};
    nm.weight = test_random_floats(d, 0.5f, 1.5f);
    nm.bias = test_random_floats(d, -0.5f, 0.5f);
    tensor *x = test_random_tensor(ndim, shape, -3, 5);
    int64_t rows = tensor_numel(x) / d;
    double *want = new_doubles(tensor_numel(x));
    for (int64_t r = 0; r < rows; r++) {
        const float *xs = x->data + r * d;
        double mean = 0, var = 0;
        for (int i = 0; i < d; i++) mean += xs[i];
        mean /= d;
        for (int i = 0; i < d; i++) var += (xs[i] - mean) * (xs[i] - mean);
        var /= d;
        for (int i = 0; i < d; i++)
            want[r * d + i] = (xs[i] - mean) / sqrt(var + nm.eps) * nm.weight[i] + nm.bias[i];
    }
    tensor *y = layer_norm(&nm, x);
    char what[64];
    snprintf(what, sizeof what, "layer_norm %dD, %d features", ndim, d);
    compare(what, y, ndim, shape, want);
    tensor_free(y);
    tensor_free(x);
    free(want);
    norm_free(&nm);
}

static void test_norms(void) {
    for (int silu = 0; silu <= 1; silu++) {
        check_group_norm(2, 6, 3, 5, 3, silu);
        check_group_norm(1, 8, 1, 4, 4, silu);
        check_group_norm(2, 4, 4, 3, 7, silu);
        check_group_norm(1, 64, 32, 16, 16, silu);
    }
    check_layer_norm(2, (int64_t[]){4, 10});
    check_layer_norm(3, (int64_t[]){2, 7, 32});
    check_layer_norm(3, (int64_t[]){1, 77, 768});

    norm nm = {.channels = 4, .groups = 2, .eps = 1e-5f};
    tensor *x = test_random_tensor(4, (int64_t[]){1, 6, 2, 2}, -1, 1);
    CHECK(group_norm(&nm, x) == NULL, "group_norm channel mismatch");
    CHECK(layer_norm(&nm, x) == NULL, "layer_norm feature mismatch");
    tensor_free(x);
}

// ---- attention ------------------------------------------------------------------------------------

static void check_attention(int64_t batch, int64_t nq, int64_t nk, int heads, int64_t d, bool causal) {
    int64_t c = heads * d;
    tensor *q = test_random_tensor(3, (int64_t[]){batch, nq, c}, -2, 2);
    tensor *k = test_random_tensor(3, (int64_t[]){batch, nk, c}, -2, 2);
    tensor *v = test_random_tensor(3, (int64_t[]){batch, nk, c}, -1, 1);
    double *want = new_doubles(batch * nq * c), *p = new_doubles(nk);
    double scale = 1.0 / sqrt((double)d);
    for (int64_t b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int64_t i = 0; i < nq; i++) {
                int64_t visible = causal ? (i + 1 < nk ? i + 1 : nk) : nk;
                double max = -INFINITY, sum = 0;
                for (int64_t j = 0; j < visible; j++) {
                    double s = 0;
                    for (int64_t e = 0; e < d; e++)
                        s += (double)q->data[(b * nq + i) * c + h * d + e] *
                             k->data[(b * nk + j) * c + h * d + e];
                    p[j] = s * scale;
                    if (p[j] > max) max = p[j];
                }
                for (int64_t j = 0; j < visible; j++) sum += (p[j] = exp(p[j] - max));
                for (int64_t e = 0; e < d; e++) {
                    double o = 0;
                    for (int64_t j = 0; j < visible; j++)
                        o += p[j] / sum * v->data[(b * nk + j) * c + h * d + e];
                    want[(b * nq + i) * c + h * d + e] = o;
                }
            }
    tensor *y = attention(q, k, v, heads, causal);
    char what[96];
    snprintf(what, sizeof what, "attention B%lld Nq%lld Nk%lld h%d d%lld%s", (long long)batch,
             (long long)nq, (long long)nk, heads, (long long)d, causal ? " causal" : "");
    compare(what, y, 3, (int64_t[]){batch, nq, c}, want);
    tensor_free(y);
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
    free(want);
    free(p);
}

static void test_attention(void) {
    check_attention(2, 5, 7, 2, 4, false);
    check_attention(1, 9, 3, 3, 8, false);
    check_attention(2, 6, 6, 3, 4, true);
    check_attention(1, 77, 77, 4, 16, true); // CLIP text self-attention
    check_attention(1, 1, 1, 1, 1, false);
    // More than one block of 256 query rows, with and without the mask (the mask must follow the
    // block's first query position).
    check_attention(2, 300, 20, 2, 8, false);
    check_attention(1, 520, 520, 2, 8, true);
    check_attention(1, 600, 77, 1, 40, false);

    tensor *q = test_random_tensor(3, (int64_t[]){1, 4, 6}, -1, 1);
    tensor *k = test_random_tensor(3, (int64_t[]){1, 5, 6}, -1, 1);
    tensor *v = test_random_tensor(3, (int64_t[]){1, 4, 6}, -1, 1);
    CHECK(attention(q, k, v, 2, false) == NULL, "attention: k and v lengths differ");
    CHECK(attention(q, k, k, 4, false) == NULL, "attention: 6 channels do not split into 4 heads");
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
}

// ---- elementwise ----------------------------------------------------------------------------------

static double gelu_ref(double v) { return 0.5 * v * (1.0 + erf(v / sqrt(2.0))); }
static double quick_gelu_ref(double v) { return v / (1.0 + exp(-1.702 * v)); }

// Inputs over [-8, 8] plus the extremes where exp() overflows.
static tensor *activation_input(void) {
    tensor *x = test_random_tensor(3, (int64_t[]){2, 3, 50}, -8, 8);
    x->data[0] = -100.0f;
    x->data[1] = 100.0f;
    x->data[2] = 0.0f;
    x->data[3] = -1e-20f;
    return x;
}

static void check_activation(const char *what, void (*op)(tensor *), double (*ref)(double)) {
    tensor *x = activation_input();
    int64_t n = tensor_numel(x);
    double *want = new_doubles(n);
    for (int64_t i = 0; i < n; i++) want[i] = ref(x->data[i]);
    op(x);
    // Elementwise: each value on its own scale (1e-5 relative, 1e-5 absolute near zero).
    compare_scaled(what, x, x->ndim, x->shape, want, 1.0);
    tensor_free(x);
    free(want);
}

// The kernel set the environment asks for (LCM_REFERENCE_KERNELS), as before kernel sets were
// explicit.
static kernel_set env_kernels(void) { return test_backend_for(LCM_PRECISION_FP32)->kernels; }

static void silu_env(tensor *x) { silu_inplace(x, env_kernels()); }

static void test_elementwise(void) {
    check_activation("silu_inplace", silu_env, silu_ref);
    check_activation("gelu_inplace", gelu_inplace, gelu_ref);
    check_activation("quick_gelu_inplace", quick_gelu_inplace, quick_gelu_ref);

    // geglu: [..., 2D] -> [..., D], first half * gelu(second half).
    tensor *x = test_random_tensor(3, (int64_t[]){2, 3, 10}, -4, 4);
    double *want = new_doubles(2 * 3 * 5);
    for (int64_t r = 0; r < 6; r++)
        for (int64_t i = 0; i < 5; i++)
            want[r * 5 + i] = (double)x->data[r * 10 + i] * gelu_ref(x->data[r * 10 + 5 + i]);
    tensor *y = geglu(x, env_kernels());
    compare("geglu [2,3,10]", y, 3, (int64_t[]){2, 3, 5}, want);
    tensor_free(y);
    tensor_free(x);
    free(want);

    x = test_random_tensor(4, (int64_t[]){2, 3, 4, 5}, -1, 1);
    tensor *bias = test_random_tensor(2, (int64_t[]){2, 3}, -1, 1);
    float *expect = malloc(sizeof(float) * 120);
    for (int64_t i = 0; i < 120; i++) expect[i] = x->data[i] + bias->data[i / 20];
    CHECK(add_channel_bias_inplace(x, bias) == x, "add_channel_bias_inplace returns x");
    compare_exact("add_channel_bias_inplace", x, 4, (int64_t[]){2, 3, 4, 5}, expect);
    tensor *wrong = test_random_tensor(2, (int64_t[]){1, 3}, -1, 1);
    CHECK(add_channel_bias_inplace(x, wrong) == NULL, "add_channel_bias: wrong vector size");

    tensor *other = test_random_tensor(4, (int64_t[]){2, 3, 4, 5}, -1, 1);
    for (int64_t i = 0; i < 120; i++) expect[i] = (x->data[i] + other->data[i]) * 0.5f;
    CHECK(add_inplace(x, other) == x, "add_inplace returns a");
    scale_inplace(x, 0.5f);
    compare_exact("add_inplace + scale_inplace", x, 4, (int64_t[]){2, 3, 4, 5}, expect);
    CHECK(add_inplace(x, wrong) == NULL, "add_inplace: element count mismatch");
    tensor_free(other);
    tensor_free(wrong);
    tensor_free(bias);
    tensor_free(x);
    free(expect);
}

// ---- shape ----------------------------------------------------------------------------------------

static void test_shape_ops(void) {
    tensor *a = test_random_tensor(4, (int64_t[]){2, 3, 4, 5}, -1, 1);
    tensor *b = test_random_tensor(4, (int64_t[]){2, 2, 4, 5}, -1, 1);
    float *expect = malloc(sizeof(float) * 2 * 5 * 20);
    for (int64_t n = 0; n < 2; n++)
        for (int64_t ch = 0; ch < 5; ch++)
            for (int64_t i = 0; i < 20; i++)
                expect[(n * 5 + ch) * 20 + i] =
                    ch < 3 ? a->data[(n * 3 + ch) * 20 + i] : b->data[(n * 2 + ch - 3) * 20 + i];
    tensor *y = concat_channels(a, b);
    compare_exact("concat_channels", y, 4, (int64_t[]){2, 5, 4, 5}, expect);
    tensor_free(y);
    tensor *c = test_random_tensor(4, (int64_t[]){1, 2, 4, 5}, -1, 1);
    CHECK(concat_channels(a, c) == NULL, "concat_channels: batch mismatch");
    tensor_free(c);
    free(expect);

    // NCHW -> tokens: token i of image n holds the C values at pixel i.
    expect = malloc(sizeof(float) * 120);
    for (int64_t n = 0; n < 2; n++)
        for (int64_t i = 0; i < 20; i++)
            for (int64_t ch = 0; ch < 3; ch++) expect[(n * 20 + i) * 3 + ch] = a->data[(n * 3 + ch) * 20 + i];
    tensor *tokens = nchw_to_tokens(a);
    compare_exact("nchw_to_tokens", tokens, 3, (int64_t[]){2, 20, 3}, expect);
    tensor *back = tokens_to_nchw(tokens, 4, 5, env_kernels());
    compare_exact("tokens_to_nchw round trip", back, 4, a->shape, a->data);
    CHECK(tokens_to_nchw(tokens, 5, 5, env_kernels()) == NULL, "tokens_to_nchw: wrong pixel count");
    tensor_free(back);
    tensor_free(tokens);
    free(expect);

    expect = malloc(sizeof(float) * 2 * 3 * 8 * 10);
    for (int64_t p = 0; p < 6; p++)
        for (int64_t oy = 0; oy < 8; oy++)
            for (int64_t ox = 0; ox < 10; ox++)
                expect[(p * 8 + oy) * 10 + ox] = a->data[(p * 4 + oy / 2) * 5 + ox / 2];
    y = upsample_nearest2x(a);
    compare_exact("upsample_nearest2x", y, 4, (int64_t[]){2, 3, 8, 10}, expect);
    tensor_free(y);
    free(expect);
    tensor_free(a);
    tensor_free(b);
}

// ---- failure propagation --------------------------------------------------------------------------

static void test_null_inputs(void) {
    float w[4] = {1, 2, 3, 4};
    linear l = {.in = 2, .out = 2, .weight = w};
    conv2d c = {.in = 1, .out = 1, .kernel = 1, .stride = 1, .weight = w};
    norm nm = {.channels = 2, .groups = 1, .eps = 1e-5f, .weight = w, .bias = w};
    tensor *t3 = test_random_tensor(3, (int64_t[]){1, 2, 2}, -1, 1);
    tensor *t4 = test_random_tensor(4, (int64_t[]){1, 2, 1, 1}, -1, 1);
    CHECK(linear_forward(&l, NULL) == NULL, "linear_forward(NULL)");
    CHECK(conv2d_forward(&c, NULL) == NULL, "conv2d_forward(NULL)");
    CHECK(pad2d(NULL, 1, 1, 1, 1) == NULL, "pad2d(NULL)");
    CHECK(group_norm(&nm, NULL) == NULL, "group_norm(NULL)");
    CHECK(group_norm_silu(&nm, NULL) == NULL, "group_norm_silu(NULL)");
    CHECK(layer_norm(&nm, NULL) == NULL, "layer_norm(NULL)");
    CHECK(geglu(NULL, KERNELS_FAST) == NULL && geglu(NULL, KERNELS_REFERENCE) == NULL,
          "geglu(NULL)");
    CHECK(add_inplace(NULL, t3) == NULL && add_inplace(t3, NULL) == NULL, "add_inplace(NULL)");
    CHECK(add_channel_bias_inplace(NULL, t3) == NULL && add_channel_bias_inplace(t4, NULL) == NULL,
          "add_channel_bias_inplace(NULL)");
    CHECK(nchw_to_tokens(NULL) == NULL, "nchw_to_tokens(NULL)");
    CHECK(tokens_to_nchw(NULL, 1, 1, KERNELS_FAST) == NULL, "tokens_to_nchw(NULL)");
    CHECK(concat_channels(NULL, t4) == NULL && concat_channels(t4, NULL) == NULL,
          "concat_channels(NULL)");
    CHECK(upsample_nearest2x(NULL) == NULL, "upsample_nearest2x(NULL)");
    CHECK(attention(NULL, t3, t3, 1, false) == NULL && attention(t3, NULL, t3, 1, false) == NULL &&
              attention(t3, t3, NULL, 1, true) == NULL,
          "attention(NULL)");
    silu_inplace(NULL, KERNELS_FAST);
    silu_inplace(NULL, KERNELS_REFERENCE);
    gelu_inplace(NULL);
    quick_gelu_inplace(NULL);
    scale_inplace(NULL, 2.0f);
    CHECK(tensor_copy(NULL) == NULL, "tensor_copy(NULL)");
    tensor_free(NULL);
    // A failure in the middle of a chain reaches the end as NULL, with the first error kept.
    tensor *h = tensor_copy(t4);
    lcm_clear_error();
    tensor_replace(&h, linear_forward(&l, h)); // 1 feature for a 2-feature layer: fails
    char first[256];
    snprintf(first, sizeof first, "%s", lcm_last_error());
    tensor_replace(&h, upsample_nearest2x(h));
    tensor_replace(&h, group_norm_silu(&nm, h));
    CHECK(h == NULL && first[0] && !strcmp(first, lcm_last_error()),
          "a chain ends in NULL with the first error: %s", lcm_last_error());
    tensor_free(t3);
    tensor_free(t4);
}

int main(void) {
    test_conv();
    test_pad2d();
    test_linear();
    test_norms();
    test_attention();
    test_elementwise();
    test_shape_ops();
    test_null_inputs();
    return test_finish();
}
