// Loading and releasing the weights of the basic layers, with shape checks against the config.
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"

static lcm_status load_tensor(const weight_set *ws, const char *prefix, const char *suffix,
                              int ndim, const int64_t *shape, float **out) {
    char name[512];
    if (snprintf(name, sizeof name, "%s.%s", prefix, suffix) >= (int)sizeof name)
        return lcm_fail(LCM_ERR_INTERNAL, "tensor name too long: %s", prefix);
    return weight_set_load_f32(ws, name, ndim, shape, out);
}

lcm_status linear_load(linear *l, const weight_set *ws, const char *prefix, int in, int out,
                       bool has_bias) {
    *l = (linear){.in = in, .out = out};
    LCM_TRY(load_tensor(ws, prefix, "weight", 2, (int64_t[]){out, in}, &l->weight));
    LCM_TRY(layer_quant_load(ws, prefix, &l->quant));
    if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &l->bias));
    return LCM_OK;
}

lcm_status linear_load_from_conv1x1(linear *l, const weight_set *ws, const char *prefix, int in,
                                    int out) {
    *l = (linear){.in = in, .out = out};
    LCM_TRY(load_tensor(ws, prefix, "weight", 4, (int64_t[]){out, in, 1, 1}, &l->weight));
    LCM_TRY(layer_quant_load(ws, prefix, &l->quant));
    LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &l->bias));
    return LCM_OK;
}

lcm_status conv2d_load(conv2d *c, const weight_set *ws, const char *prefix, int in, int out,
                       int kernel, int stride, int padding, bool has_bias) {
    *c = (conv2d){.in = in, .out = out, .kernel = kernel, .stride = stride, .padding = padding};
    LCM_TRY(load_tensor(ws, prefix, "weight", 4, (int64_t[]){out, in, kernel, kernel}, &c->weight));
    LCM_TRY(layer_quant_load(ws, prefix, &c->quant));
    if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &c->bias));
    return LCM_OK;
}

lcm_status norm_load(norm *n, const weight_set *ws, const char *prefix, int channels, int groups,
                     float eps) {
    *n = (norm){.channels = channels, .groups = groups, .eps = eps};
    if (groups < 1 || channels % groups)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: %d channels do not split into %d groups", prefix,
                        channels, groups);
    LCM_TRY(load_tensor(ws, prefix, "weight", 1, (int64_t[]){channels}, &n->weight));
    LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){channels}, &n->bias));
    return LCM_OK;
}

void linear_free(linear *l) {
    free(l->weight);
    free(l->bias);
    layer_quant_free(l->quant);
    l->weight = l->bias = NULL;
    l->quant = NULL;
}

void conv2d_free(conv2d *c) {
    free(c->weight);
    free(c->bias);
    layer_quant_free(c->quant);
    c->weight = c->bias = NULL;
    c->quant = NULL;
}

void norm_free(norm *n) {
    free(n->weight);
    free(n->bias);
    n->weight = n->bias = NULL;
}

int64_t linear_params(const linear *l) {
    return (int64_t)l->in * l->out + (l->bias ? l->out : 0);
}

int64_t conv2d_params(const conv2d *c) {
    return (int64_t)c->in * c->out * c->kernel * c->kernel + (c->bias ? c->out : 0);
}
