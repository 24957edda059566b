#include "models/normalbae.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/backend.h"
#include "ops/activation_extra.h"
#include "ops/conv_depthwise.h"
#include "ops/interpolate.h"
#include "ops/ops.h"

// Fixed by the reference code (geffnet tf_efficientnet_b5_ap arch_def and controlnet_aux's
// Decoder), not by the checkpoint.
static const int stage_stride[NORMALBAE_STAGES] = {1, 2, 2, 2, 1, 2, 1};
#define ENCODER_BN_EPS 1e-3
#define DECODER_BN_EPS 1e-5
#define LEAKY_SLOPE 0.01f
#define MIN_KAPPA 0.01f
#define NORM_EPS 1e-10f
// Decoder skips: features[4] = stage 0, [5] = stage 1, [6] = stage 2, [8] = stage 4.
static const int skip_stage[4] = {4, 2, 1, 0}; // for up1..up4

#define ENC "encoder.original_model."

// ---- architecture from shapes ------------------------------------------------------------------

typedef struct shape_reader {
    normalbae_shape_fn shape_of;
    void *ctx;
    const char *source, *prefix;
} shape_reader;

static bool find_shape(const shape_reader *r, int *ndim, int64_t *shape, const char *fmt, ...)
    LCM_PRINTF(4, 5);
static bool find_shape(const shape_reader *r, int *ndim, int64_t *shape, const char *fmt, ...) {
    char name[256];
    int len = snprintf(name, sizeof name, "%s", r->prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name + len, sizeof name - (size_t)len, fmt, ap);
    va_end(ap);
    return r->shape_of(r->ctx, name, ndim, shape);
}

// Reads a 4-D conv weight [out, in, k, k]; false (error set) when absent or of another rank.
static lcm_status conv_shape(const shape_reader *r, const char *name, int64_t shape[8]) {
    int ndim = 0;
    if (!find_shape(r, &ndim, shape, "%s", name))
        return lcm_fail(LCM_ERR_FORMAT, "%s: NormalBae tensor '%s%s' is missing", r->source,
                        r->prefix, name);
    if (ndim != 4 || shape[2] != shape[3] || shape[0] < 1 || shape[1] < 1 || shape[0] > 65536 ||
        shape[1] > 65536 || shape[2] > 15)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: NormalBae tensor '%s%s' has an unexpected shape",
                        r->source, r->prefix, name);
    return LCM_OK;
}

static lcm_status expect(bool ok, const shape_reader *r, const char *what) {
    return ok ? LCM_OK
              : lcm_fail(LCM_ERR_UNSUPPORTED, "%s: NormalBae weights do not fit together: %s",
                         r->source, what);
}

static lcm_status read_block(const shape_reader *r, int stage, int index, int in,
                             normalbae_block_arch *b) {
    char name[128];
    int64_t dw[8], s[8];
    snprintf(name, sizeof name, ENC "blocks.%d.%d.conv_dw.weight", stage, index);
    LCM_TRY(conv_shape(r, name, dw));
    b->stage = stage;
    b->in = in;
    b->kernel = (int)dw[2];
    b->stride = index == 0 ? stage_stride[stage] : 1;
    b->mid = (int)dw[0];
    int ndim;
    b->depthwise_separable =
        !find_shape(r, &ndim, s, ENC "blocks.%d.%d.conv_pwl.weight", stage, index);
    LCM_TRY(expect(dw[1] == 1 && b->kernel % 2 == 1, r, "conv_dw is not an odd depthwise kernel"));
    if (b->depthwise_separable) {
        snprintf(name, sizeof name, ENC "blocks.%d.%d.conv_pw.weight", stage, index);
        LCM_TRY(conv_shape(r, name, s));
        LCM_TRY(expect(b->mid == in && s[1] == in && s[2] == 1, r, "DS block channels"));
        b->out = (int)s[0];
    } else {
        snprintf(name, sizeof name, ENC "blocks.%d.%d.conv_pw.weight", stage, index);
        LCM_TRY(conv_shape(r, name, s));
        LCM_TRY(expect(s[0] == b->mid && s[1] == in && s[2] == 1, r, "IR block expansion channels"));
        snprintf(name, sizeof name, ENC "blocks.%d.%d.conv_pwl.weight", stage, index);
        LCM_TRY(conv_shape(r, name, s));
        LCM_TRY(expect(s[1] == b->mid && s[2] == 1, r, "IR block projection channels"));
        b->out = (int)s[0];
    }
    snprintf(name, sizeof name, ENC "blocks.%d.%d.se.conv_reduce.weight", stage, index);
    LCM_TRY(conv_shape(r, name, s));
    LCM_TRY(expect(s[1] == b->mid && s[2] == 1, r, "SE reduce channels"));
    b->se_chs = (int)s[0];
    b->residual = b->stride == 1 && b->in == b->out;
    return LCM_OK;
}

lcm_status normalbae_arch_from_shapes(normalbae_shape_fn shape_of, void *ctx, const char *source,
                                      normalbae_arch *a) {
    memset(a, 0, sizeof *a);
    shape_reader r = {shape_of, ctx, source, "module."};
    int ndim;
    int64_t s[8];
    if (!find_shape(&r, &ndim, s, ENC "conv_stem.weight")) r.prefix = "";
    a->prefix = r.prefix;
    LCM_TRY(conv_shape(&r, ENC "conv_stem.weight", s));
    LCM_TRY(expect(s[1] == 3 && s[2] == 3, &r, "conv_stem must be 3x3 over RGB"));
    a->stem_chs = (int)s[0];
    int chs = a->stem_chs;
    for (int stage = 0; stage < NORMALBAE_STAGES; stage++) {
        for (int index = 0;; index++) {
            if (!find_shape(&r, &ndim, s, ENC "blocks.%d.%d.conv_dw.weight", stage, index)) {
                if (index == 0)
                    return lcm_fail(LCM_ERR_FORMAT, "%s: NormalBae encoder stage %d has no blocks "
                                    "(tensor '%s" ENC "blocks.%d.0.conv_dw.weight' is missing)",
                                    source, stage, r.prefix, stage);
                break;
            }
            if (a->block_count == NORMALBAE_MAX_BLOCKS)
                return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: more than %d encoder blocks", source,
                                NORMALBAE_MAX_BLOCKS);
            normalbae_block_arch *b = &a->blocks[a->block_count++];
            LCM_TRY(read_block(&r, stage, index, chs, b));
            LCM_TRY(expect(b->depthwise_separable == (stage == 0), &r,
                           "stage 0 must hold DS blocks and later stages IR blocks"));
            chs = b->out;
        }
        a->stage_end[stage] = a->block_count;
    }
    LCM_TRY(conv_shape(&r, ENC "conv_head.weight", s));
    LCM_TRY(expect(s[1] == chs && s[2] == 1, &r, "conv_head input channels"));
    a->head_chs = (int)s[0];
    LCM_TRY(conv_shape(&r, "decoder.conv2.weight", s));
    LCM_TRY(expect(s[1] == a->head_chs && s[2] == 1, &r, "decoder.conv2 input channels"));
    a->conv2_out = (int)s[0];
    int prev = a->conv2_out;
    for (int k = 0; k < 4; k++) {
        char name[64];
        snprintf(name, sizeof name, "decoder.up%d._net.0.weight", k + 1);
        LCM_TRY(conv_shape(&r, name, s));
        int skip = a->blocks[a->stage_end[skip_stage[k]] - 1].out;
        LCM_TRY(expect(s[1] == prev + skip && s[2] == 3, &r, "decoder up-block input channels"));
        a->up_out[k] = prev = (int)s[0];
    }
    // The per-pixel MLPs are Conv1d: weight [hidden, in, 1].
    if (!find_shape(&r, &ndim, s, "decoder.out_conv_res4.0.weight") || ndim != 3 ||
        s[1] != a->up_out[1] + 4 || s[2] != 1 || s[0] < 1 || s[0] > 65536)
        return lcm_fail(LCM_ERR_FORMAT, "%s: NormalBae tensor '%sdecoder.out_conv_res4.0.weight' "
                        "is missing or not [hidden, %d, 1]", source, r.prefix, a->up_out[1] + 4);
    a->mlp_hidden = (int)s[0];
    return LCM_OK;
}

// ---- weights ------------------------------------------------------------------------------------

typedef struct depthwise {
    int channels, kernel, stride;
    float *weight, *bias; // [C, 1, k, k], [C] (BatchNorm folded)
} depthwise;

typedef struct mbconv {
    normalbae_block_arch arch;
    conv2d expand; // IR only: 1x1 in -> mid, BN folded
    depthwise dw;
    linear se_reduce, se_expand;
    conv2d project; // 1x1 mid -> out, BN folded
    kernel_set kernels; // of the model that loaded it (from the backend), for silu
} mbconv;

typedef struct up_block {
    conv2d conv1, conv2; // 3x3, BN folded
} up_block;

typedef struct mlp {
    conv2d layers[4]; // per-pixel 1x1 convs
} mlp;

struct normalbae {
    normalbae_arch arch;
    conv2d stem; // 3x3 stride 2, padding applied separately (TF "same")
    mbconv blocks[NORMALBAE_MAX_BLOCKS];
    conv2d head; // no BN: the decoder reads conv_head's output before bn2
    conv2d conv2;
    up_block up[4];
    conv2d out_res8;
    mlp refine[3]; // res4, res2, res1
    kernel_set kernels; // the set it was loaded for (from the backend), for silu
};

typedef struct loader {
    const weight_set *ws;
    const char *prefix;
    kernel_set kernels; // the backend's, kept by the blocks for silu
} loader;

static lcm_status load(const loader *l, const char *name, int ndim, const int64_t *shape,
                       float **out) {
    char full[256];
    snprintf(full, sizeof full, "%s%s", l->prefix, name);
    LCM_TRY(weight_set_load_f32(l->ws, full, ndim, shape, out));
    // The float copy is ours now: let the file's mapped pages go, so a large checkpoint is not
    // resident twice while loading.
    const st_file *file = NULL;
    const st_tensor *t = weight_set_find(l->ws, full, &file);
    if (t && file) st_release_pages(file, t);
    return LCM_OK;
}

// Multiplies each output channel's weights by gamma / sqrt(var + eps) and sets the bias to
// (bias - mean) * that + beta: conv followed by inference BatchNorm as one conv.
static lcm_status fold_batchnorm(const loader *l, const char *bn, int out, int per_out, double eps,
                                 float *weight, float **bias) {
    float *gamma = NULL, *beta = NULL, *mean = NULL, *var = NULL;
    char name[200];
    const int64_t shape[1] = {out};
    lcm_status st;
    snprintf(name, sizeof name, "%s.weight", bn);
    if ((st = load(l, name, 1, shape, &gamma)) != LCM_OK) goto done;
    snprintf(name, sizeof name, "%s.bias", bn);
    if ((st = load(l, name, 1, shape, &beta)) != LCM_OK) goto done;
    snprintf(name, sizeof name, "%s.running_mean", bn);
    if ((st = load(l, name, 1, shape, &mean)) != LCM_OK) goto done;
    snprintf(name, sizeof name, "%s.running_var", bn);
    if ((st = load(l, name, 1, shape, &var)) != LCM_OK) goto done;
    if (!*bias && !(*bias = calloc((size_t)out, sizeof **bias))) {
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory folding %s", bn);
        goto done;
    }
    for (int o = 0; o < out; o++) {
        double scale = gamma[o] / sqrt((double)var[o] + eps);
        for (int i = 0; i < per_out; i++)
            weight[(size_t)o * per_out + i] = (float)(weight[(size_t)o * per_out + i] * scale);
        (*bias)[o] = (float)(((double)(*bias)[o] - mean[o]) * scale + beta[o]);
    }
done:
    free(gamma);
    free(beta);
    free(mean);
    free(var);
    return st;
}

// A conv [out, in, k, k] (`conv_name`.weight, optional .bias) with the BatchNorm `bn_name` (NULL:
// none) folded in.
static lcm_status load_conv(const loader *l, conv2d *c, const char *conv_name, const char *bn_name,
                            int in, int out, int kernel, int stride, int padding, bool has_bias,
                            double eps) {
    *c = (conv2d){.in = in, .out = out, .kernel = kernel, .stride = stride, .padding = padding};
    char name[200];
    const int64_t shape[4] = {out, in, kernel, kernel}, bias_shape[1] = {out};
    snprintf(name, sizeof name, "%s.weight", conv_name);
    LCM_TRY(load(l, name, 4, shape, &c->weight));
    if (has_bias) {
        snprintf(name, sizeof name, "%s.bias", conv_name);
        LCM_TRY(load(l, name, 1, bias_shape, &c->bias));
    }
    if (bn_name) LCM_TRY(fold_batchnorm(l, bn_name, out, in * kernel * kernel, eps, c->weight, &c->bias));
    return LCM_OK;
}

// Conv1d [out, in, 1] as a 1x1 conv2d (same memory layout).
static lcm_status load_conv1d(const loader *l, conv2d *c, const char *conv_name, int in, int out) {
    *c = (conv2d){.in = in, .out = out, .kernel = 1, .stride = 1, .padding = 0};
    char name[200];
    const int64_t shape[3] = {out, in, 1}, bias_shape[1] = {out};
    snprintf(name, sizeof name, "%s.weight", conv_name);
    LCM_TRY(load(l, name, 3, shape, &c->weight));
    snprintf(name, sizeof name, "%s.bias", conv_name);
    return load(l, name, 1, bias_shape, &c->bias);
}

// A 1x1 conv with bias on a pooled [N, C] vector: a linear layer.
static lcm_status load_pointwise_linear(const loader *l, linear *lin, const char *conv_name, int in,
                                        int out) {
    *lin = (linear){.in = in, .out = out};
    char name[200];
    const int64_t shape[4] = {out, in, 1, 1}, bias_shape[1] = {out};
    snprintf(name, sizeof name, "%s.weight", conv_name);
    LCM_TRY(load(l, name, 4, shape, &lin->weight));
    snprintf(name, sizeof name, "%s.bias", conv_name);
    return load(l, name, 1, bias_shape, &lin->bias);
}

static lcm_status load_block(const loader *l, mbconv *m, const normalbae_block_arch *a, int index) {
    m->arch = *a;
    m->kernels = l->kernels;
    char base[96], conv[128], bn[128];
    snprintf(base, sizeof base, ENC "blocks.%d.%d", a->stage, index);
    // DS: conv_dw, bn1, se, conv_pw, bn2. IR: conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3.
    if (!a->depthwise_separable) {
        snprintf(conv, sizeof conv, "%s.conv_pw", base);
        snprintf(bn, sizeof bn, "%s.bn1", base);
        LCM_TRY(load_conv(l, &m->expand, conv, bn, a->in, a->mid, 1, 1, 0, false, ENCODER_BN_EPS));
    }
    m->dw = (depthwise){.channels = a->mid, .kernel = a->kernel, .stride = a->stride};
    const int64_t dw_shape[4] = {a->mid, 1, a->kernel, a->kernel};
    snprintf(conv, sizeof conv, "%s.conv_dw.weight", base);
    LCM_TRY(load(l, conv, 4, dw_shape, &m->dw.weight));
    snprintf(bn, sizeof bn, "%s.%s", base, a->depthwise_separable ? "bn1" : "bn2");
    LCM_TRY(fold_batchnorm(l, bn, a->mid, a->kernel * a->kernel, ENCODER_BN_EPS, m->dw.weight,
                           &m->dw.bias));
    snprintf(conv, sizeof conv, "%s.se.conv_reduce", base);
    LCM_TRY(load_pointwise_linear(l, &m->se_reduce, conv, a->mid, a->se_chs));
    snprintf(conv, sizeof conv, "%s.se.conv_expand", base);
    LCM_TRY(load_pointwise_linear(l, &m->se_expand, conv, a->se_chs, a->mid));
    snprintf(conv, sizeof conv, "%s.%s", base, a->depthwise_separable ? "conv_pw" : "conv_pwl");
    snprintf(bn, sizeof bn, "%s.%s", base, a->depthwise_separable ? "bn2" : "bn3");
    return load_conv(l, &m->project, conv, bn, a->mid, a->out, 1, 1, 0, false, ENCODER_BN_EPS);
}

static bool weight_set_shape(void *ctx, const char *name, int *ndim, int64_t *shape) {
    const st_tensor *t = weight_set_find(ctx, name, NULL);
    if (!t) return false;
    *ndim = t->ndim;
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)(t->ndim < 8 ? t->ndim : 8));
    return true;
}

static lcm_status load_all(normalbae *m, const ops_backend *backend, const weight_set *ws) {
    const normalbae_arch *a = &m->arch;
    loader l = {ws, a->prefix, backend->kernels};
    m->kernels = backend->kernels;
    LCM_TRY(load_conv(&l, &m->stem, ENC "conv_stem", ENC "bn1", 3, a->stem_chs, 3, 2, 0, false,
                      ENCODER_BN_EPS));
    for (int i = 0; i < a->block_count; i++) {
        int first = a->blocks[i].stage ? a->stage_end[a->blocks[i].stage - 1] : 0;
        LCM_TRY(load_block(&l, &m->blocks[i], &a->blocks[i], i - first));
    }
    int last = a->blocks[a->block_count - 1].out;
    LCM_TRY(load_conv(&l, &m->head, ENC "conv_head", NULL, last, a->head_chs, 1, 1, 0, false, 0));
    LCM_TRY(load_conv(&l, &m->conv2, "decoder.conv2", NULL, a->head_chs, a->conv2_out, 1, 1, 0,
                      true, 0));
    int prev = a->conv2_out;
    for (int k = 0; k < 4; k++) {
        int skip = a->blocks[a->stage_end[skip_stage[k]] - 1].out;
        char conv[64], bn[64];
        snprintf(conv, sizeof conv, "decoder.up%d._net.0", k + 1);
        snprintf(bn, sizeof bn, "decoder.up%d._net.1", k + 1);
        LCM_TRY(load_conv(&l, &m->up[k].conv1, conv, bn, prev + skip, a->up_out[k], 3, 1, 1, true,
                          DECODER_BN_EPS));
        snprintf(conv, sizeof conv, "decoder.up%d._net.3", k + 1);
        snprintf(bn, sizeof bn, "decoder.up%d._net.4", k + 1);
        LCM_TRY(load_conv(&l, &m->up[k].conv2, conv, bn, a->up_out[k], a->up_out[k], 3, 1, 1, true,
                          DECODER_BN_EPS));
        prev = a->up_out[k];
    }
    LCM_TRY(load_conv(&l, &m->out_res8, "decoder.out_conv_res8", NULL, a->up_out[1], 4, 3, 1, 1,
                      true, 0));
    static const char *const names[3] = {"res4", "res2", "res1"};
    for (int r = 0; r < 3; r++) {
        int in = a->up_out[r + 1] + 4, h = a->mlp_hidden;
        const int widths[5] = {in, h, h, h, 4};
        for (int k = 0; k < 4; k++) {
            char conv[64];
            snprintf(conv, sizeof conv, "decoder.out_conv_%s.%d", names[r], 2 * k);
            LCM_TRY(load_conv1d(&l, &m->refine[r].layers[k], conv, widths[k], widths[k + 1]));
        }
    }
    return LCM_OK;
}

lcm_status normalbae_load(const ops_backend *backend, const weight_set *ws, normalbae **out) {
    *out = NULL;
    normalbae *m = calloc(1, sizeof *m);
    if (!m) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for NormalBae");
    lcm_status st = normalbae_arch_from_shapes(weight_set_shape, (void *)ws,
                                               weight_set_source(ws), &m->arch);
    if (st == LCM_OK) st = load_all(m, backend, ws);
    if (st != LCM_OK) {
        normalbae_free(m);
        return lcm_fail_context(st, "loading NormalBae: ");
    }
    *out = m;
    return LCM_OK;
}

void normalbae_free(normalbae *m) {
    if (!m) return;
    conv2d_free(&m->stem);
    for (int i = 0; i < NORMALBAE_MAX_BLOCKS; i++) {
        conv2d_free(&m->blocks[i].expand);
        free(m->blocks[i].dw.weight);
        free(m->blocks[i].dw.bias);
        linear_free(&m->blocks[i].se_reduce);
        linear_free(&m->blocks[i].se_expand);
        conv2d_free(&m->blocks[i].project);
    }
    conv2d_free(&m->head);
    conv2d_free(&m->conv2);
    for (int k = 0; k < 4; k++) {
        conv2d_free(&m->up[k].conv1);
        conv2d_free(&m->up[k].conv2);
    }
    conv2d_free(&m->out_res8);
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < 4; k++) conv2d_free(&m->refine[r].layers[k]);
    free(m);
}

const normalbae_arch *normalbae_get_arch(const normalbae *m) { return &m->arch; }

// ---- forward ------------------------------------------------------------------------------------

typedef struct tracer {
    normalbae_trace_fn fn;
    void *ctx;
} tracer;

static void trace(const tracer *t, const tensor *x, const char *fmt, ...) LCM_PRINTF(3, 4);
static void trace(const tracer *t, const tensor *x, const char *fmt, ...) {
    if (!t->fn || !x) return;
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    tensor *plain = x->layout == TENSOR_NCHW ? NULL : tensor_to_nchw(x);
    t->fn(t->ctx, name, plain ? plain : x);
    tensor_free(plain);
}

// TensorFlow "same" padding then a stride-s conv without padding.
static tensor *conv_same(const conv2d *c, const tensor *x) {
    if (!x) return NULL;
    int top, bottom, left, right;
    same_padding(x->shape[2], c->kernel, c->stride, &top, &bottom);
    same_padding(x->shape[3], c->kernel, c->stride, &left, &right);
    tensor *padded = pad2d(x, top, bottom, left, right);
    tensor *y = conv2d_forward(c, padded);
    tensor_free(padded);
    return y;
}

static tensor *depthwise_same(const depthwise *d, const tensor *x) {
    if (!x) return NULL;
    int top, bottom, left, right;
    same_padding(x->shape[2], d->kernel, d->stride, &top, &bottom);
    same_padding(x->shape[3], d->kernel, d->stride, &left, &right);
    return depthwise_conv2d(x, d->weight, d->bias, d->kernel, d->stride, top, bottom, left, right);
}

// Squeeze-excitation: x * sigmoid(expand(swish(reduce(mean_hw(x))))).
static tensor *squeeze_excite(const mbconv *b, tensor *x) {
    tensor *s = channel_mean(x); // [N, mid]
    tensor_replace(&s, linear_forward(&b->se_reduce, s));
    silu_inplace(s, b->kernels);
    tensor_replace(&s, linear_forward(&b->se_expand, s));
    sigmoid_inplace(s);
    tensor *y = scale_channels(x, s);
    tensor_free(s);
    return y;
}

// DS:  x -> dw -> BN -> swish -> SE -> pw -> BN (+ x)
// IR:  x -> pw expand -> BN -> swish -> dw -> BN -> swish -> SE -> pw project -> BN (+ x)
static tensor *mbconv_forward(const mbconv *b, const tensor *x) {
    tensor *h;
    if (b->arch.depthwise_separable) {
        h = depthwise_same(&b->dw, x); // [N, C, H, W] -> [N, C, H/s, W/s]
    } else {
        h = conv2d_forward(&b->expand, x); // [N, in, H, W] -> [N, mid, H, W]
        silu_inplace(h, b->kernels);
        tensor_replace(&h, depthwise_same(&b->dw, h));
    }
    silu_inplace(h, b->kernels);
    h = squeeze_excite(b, h);
    tensor_replace(&h, conv2d_forward(&b->project, h)); // -> [N, out, H/s, W/s]
    if (b->arch.residual) h = add_inplace(h, x);
    return h;
}

// Upsample to the skip's size (bilinear, align_corners), concatenate, two conv-BN-LeakyReLU.
static tensor *up_block_forward(const up_block *u, const tensor *x, const tensor *skip) {
    if (!x || !skip) return NULL;
    tensor *up = resize_bilinear_align_corners(x, skip->shape[2], skip->shape[3]);
    tensor *h = concat_channels(up, skip); // [N, C + Cskip, H', W']
    tensor_free(up);
    tensor_replace(&h, conv2d_forward(&u->conv1, h));
    leaky_relu_inplace(h, LEAKY_SLOPE);
    tensor_replace(&h, conv2d_forward(&u->conv2, h));
    leaky_relu_inplace(h, LEAKY_SLOPE);
    return h;
}

// (x, y, z, k) -> (x, y, z) / (|(x, y, z)| + 1e-10), elu(k) + 1 + 0.01, per pixel.
static tensor *norm_normalize(tensor *o) {
    if (!o) return NULL;
    if (o->layout != TENSOR_NCHW) tensor_replace(&o, tensor_to_nchw(o));
    if (!o) return NULL;
    int64_t n = o->shape[0], hw = o->shape[2] * o->shape[3];
    for (int64_t b = 0; b < n; b++) {
        float *p = o->data + b * 4 * hw;
        #pragma omp parallel for
        for (int64_t i = 0; i < hw; i++) {
            float x = p[i], y = p[hw + i], z = p[2 * hw + i], k = p[3 * hw + i];
            float norm = sqrtf(x * x + y * y + z * z) + NORM_EPS;
            p[i] = x / norm;
            p[hw + i] = y / norm;
            p[2 * hw + i] = z / norm;
            float elu = k > 0.0f ? k : expf(k) - 1.0f; // torch: exp(x) - 1, not expm1
            p[3 * hw + i] = elu + 1.0f + MIN_KAPPA;
        }
    }
    return o;
}

// One refinement level at twice the resolution of `feat`: per pixel, the upsampled features
// (bilinear, align_corners) and the upsampled previous prediction, concatenated, go through the
// MLP (1x1 conv, ReLU) x3 -> 1x1 conv to 4; then norm_normalize. The MLP runs in bands of rows,
// upsampling only each band's rows, so neither the concatenated input nor the hidden activations
// (132 and 128 channels at full resolution in the real model) exist for the whole image at once.
static tensor *refine(const mlp *net, const tensor *feat, const tensor *prev, const tracer *t,
                      const char *name) {
    if (!feat || !prev) return NULL;
    int64_t n = feat->shape[0], h = 2 * feat->shape[2], w = 2 * feat->shape[3];
    if (t->fn) { // the reference's debug output holds the whole MLP input
        tensor *f = resize_bilinear_align_corners(feat, h, w);
        tensor *p = resize_bilinear_align_corners(prev, h, w);
        tensor *in = concat_channels(f, p);
        trace(t, in, "debug.decoder.out_conv_%s.in", name);
        tensor_free(f);
        tensor_free(p);
        tensor_free(in);
    }
    // ~4k pixels per band: big enough for an efficient GEMM, small next to a full-resolution image
    // (the tiny golden's 64x128 runs in two bands, so the banding is tested).
    int64_t rows = 4096 / w > 0 ? 4096 / w : 1;
    tensor *out = tensor_new4(n, 4, h, w);
    for (int64_t y0 = 0; out && y0 < h; y0 += rows) {
        int64_t y1 = y0 + rows < h ? y0 + rows : h;
        tensor *f = resize_bilinear_align_corners_rows(feat, h, w, y0, y1);
        tensor *p = resize_bilinear_align_corners_rows(prev, h, w, y0, y1);
        tensor *b = concat_channels(f, p); // [N, C + 4, band, W]
        tensor_free(f);
        tensor_free(p);
        for (int k = 0; k < 4; k++) {
            tensor_replace(&b, conv2d_forward(&net->layers[k], b));
            if (k < 3) relu_inplace(b);
        }
        if (b && b->layout != TENSOR_NCHW) tensor_replace(&b, tensor_to_nchw(b));
        if (!b) {
            tensor_free(out);
            return NULL;
        }
        for (int64_t q = 0; q < n * 4; q++)
            memcpy(out->data + (q * h + y0) * w, b->data + q * (y1 - y0) * w,
                   sizeof(float) * (size_t)((y1 - y0) * w));
        tensor_free(b);
    }
    trace(t, out, "debug.decoder.out_conv_%s", name);
    return norm_normalize(out);
}

tensor *normalbae_forward(const normalbae *m, const tensor *x, normalbae_trace_fn trace_fn,
                          void *trace_ctx) {
    if (!x) return NULL;
    if (x->ndim != 4 || x->shape[1] != 3 || x->shape[2] % 32 || x->shape[3] % 32 ||
        x->shape[2] < 32 || x->shape[3] < 32) {
        lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                 "NormalBae: input must be [N, 3, H, W] with H, W positive multiples of 32");
        return NULL;
    }
    const normalbae_arch *a = &m->arch;
    tracer t = {trace_fn, trace_ctx};
    // Encoder. features[4], [5], [6], [8] are the ends of stages 0, 1, 2, 4.
    tensor *h = conv_same(&m->stem, x); // [N, 3, H, W] -> [N, stem, H/2, W/2]
    silu_inplace(h, m->kernels);
    // The reference's act1 is an in-place swish, so its recorded bn1 output holds act1's values.
    trace(&t, h, "debug.encoder.features.02.bn1");
    trace(&t, h, "debug.encoder.features.03.act1");
    tensor *stage_out[NORMALBAE_STAGES] = {0};
    int block = 0;
    for (int stage = 0; stage < NORMALBAE_STAGES; stage++) {
        for (; block < a->stage_end[stage]; block++) tensor_replace(&h, mbconv_forward(&m->blocks[block], h));
        trace(&t, h, "debug.encoder.features.%02d.blocks.%d", 4 + stage, stage);
        bool kept = stage == 0 || stage == 1 || stage == 2 || stage == 4;
        if (kept) stage_out[stage] = h ? tensor_copy(h) : NULL;
    }
    tensor *head = conv2d_forward(&m->head, h); // [N, head, H/32, W/32], before bn2
    tensor_free(h);
    trace(&t, head, "debug.encoder.features.11.conv_head");

    // Decoder.
    tensor *d = conv2d_forward(&m->conv2, head);
    tensor_free(head);
    trace(&t, d, "debug.decoder.conv2");
    tensor *levels[4] = {0}; // x_d1 .. x_d4 at 1/16, 1/8, 1/4, 1/2
    const tensor *prev = d;
    for (int k = 0; k < 4; k++) {
        levels[k] = up_block_forward(&m->up[k], prev, stage_out[skip_stage[k]]);
        trace(&t, levels[k], "debug.decoder.up%d", k + 1);
        prev = levels[k];
    }
    tensor *out = conv2d_forward(&m->out_res8, levels[1]); // [N, 4, H/8, W/8]
    trace(&t, out, "debug.decoder.out_conv_res8");
    out = norm_normalize(out);
    trace(&t, out, "out.norm_out_list.0_res8");
    static const char *const names[3] = {"res4", "res2", "res1"};
    static const char *const out_names[3] = {"out.norm_out_list.1_res4", "out.norm_out_list.2_res2",
                                              "out.norm_out_list.3_res1"};
    for (int r = 0; r < 3; r++) {
        // res4 refines with x_d2 (1/8), res2 with x_d3 (1/4), res1 with x_d4 (1/2).
        tensor *next = refine(&m->refine[r], levels[r + 1], out, &t, names[r]);
        tensor_free(out);
        out = next;
        trace(&t, out, "%s", out_names[r]);
    }
    tensor_free(d);
    for (int k = 0; k < 4; k++) tensor_free(levels[k]);
    for (int s = 0; s < NORMALBAE_STAGES; s++) tensor_free(stage_out[s]);
    return out;
}
