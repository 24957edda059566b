#include "ops/layer_quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/backend.h"
#include "ops/int8_layer.h"
#include "ops/kernel_family.h"
#include "ops/ops.h"

static ops_input_observer_fn observer;
static void *observer_user;
static const char *observer_scope;

void ops_set_input_observer(ops_input_observer_fn fn, void *user) {
    observer = fn;
    observer_user = user;
}

const char *ops_set_observer_scope(const char *scope) {
    const char *previous = observer_scope;
    observer_scope = scope;
    return previous;
}

const char *ops_observer_scope(void) { return observer_scope; }

static lcm_status load_scalar(const weight_set *ws, const char *prefix, const char *suffix,
                              float *value) {
    char name[512];
    if (snprintf(name, sizeof name, "%s.%s", prefix, suffix) >= (int)sizeof name)
        return lcm_fail(LCM_ERR_INTERNAL, "tensor name too long: %s", prefix);
    float *v = NULL;
    LCM_TRY(weight_set_load_f32(ws, name, 1, (int64_t[]){1}, &v));
    *value = v[0];
    free(v);
    return LCM_OK;
}

lcm_status layer_quant_load(const weight_set *ws, const char *prefix, layer_quant **out) {
    *out = NULL;
    layer_quant *q = calloc(1, sizeof *q);
    if (!q || !(q->name = strdup(prefix))) {
        free(q);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", prefix);
    }
    char name[512];
    snprintf(name, sizeof name, "%s.input_scale", prefix);
    if (weight_set_find(ws, name, NULL)) {
        float zero_point = 0;
        lcm_status st = load_scalar(ws, prefix, "input_scale", &q->input_scale);
        if (st == LCM_OK) st = load_scalar(ws, prefix, "input_zero_point", &zero_point);
        if (st == LCM_OK && (!(q->input_scale > 0) || !isfinite(q->input_scale) ||
                             !(zero_point >= 0 && zero_point <= 255) || zero_point != floorf(zero_point)))
            st = lcm_fail(LCM_ERR_FORMAT,
                          "%s: '%s.input_scale' = %g / '%s.input_zero_point' = %g: expected a positive "
                          "scale and an integer zero point in [0, 255]",
                          weight_set_source(ws), prefix, q->input_scale, prefix, zero_point);
        if (st != LCM_OK) {
            layer_quant_free(q);
            return st;
        }
        q->quantize_input = true;
        q->input_zero_point = (int32_t)zero_point;
    }
    *out = q;
    return LCM_OK;
}

void layer_quant_free(layer_quant *q) {
    if (!q) return;
    free(q->name);
    free(q);
}

bool layer_quant_runs_int8(const layer_quant *q, const ops_backend *b) {
    return q && q->quantize_input && b->kernels == KERNELS_FAST && b->int8_kernels;
}

lcm_status layer_quant_pack_s8(layer_quant *q, const ops_backend *b, const int8_t *weight,
                               const float *weight_scale, int in, int out, int kernel, int stride,
                               int padding, layer_kernel *impl) {
    int8_layer *packed = NULL;
    LCM_TRY(int8_layer_new_s8(weight, weight_scale, in, out, kernel, stride, padding, q->input_scale,
                              q->input_zero_point, b->int8_kernel, &packed));
    *impl = (layer_kernel){&kernel_family_int8, packed};
    return LCM_OK;
}

lcm_status layer_quant_pack(layer_quant *q, const ops_backend *b, float **weight, int in, int out,
                            int kernel, int stride, int padding, layer_kernel *impl) {
    if (!layer_quant_runs_int8(q, b) || !*weight) return LCM_OK;
    int8_layer *packed = NULL;
    LCM_TRY(int8_layer_new(*weight, in, out, kernel, stride, padding, q->input_scale,
                           q->input_zero_point, b->int8_kernel, &packed));
    *impl = (layer_kernel){&kernel_family_int8, packed};
    free(*weight);
    *weight = NULL;
    return LCM_OK;
}

void fake_quantize_u8(float *x, int64_t n, float scale, int32_t zero_point) {
    float inverse = 1.0f / scale, zp = (float)zero_point;
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        // round half to even, as the int8 kernels' conversion to u8 does (int8_quantize_input)
        float v = nearbyintf(x[i] * inverse) + zp;
        v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
        x[i] = (v - zp) * scale;
    }
}

bool layer_quant_input_is_plain(const layer_quant *q) {
    return !observer && (!q || !q->quantize_input);
}

const tensor *layer_quant_input(const layer_quant *q, const tensor *x, tensor **owned) {
    *owned = NULL;
    if (!x) return NULL;
    if (observer && q) observer(observer_user, q->name, x);
    if (!q || !q->quantize_input) return x;
    tensor *copy = tensor_copy(x);
    if (!copy) return NULL;
    fake_quantize_u8(copy->data, tensor_numel(copy), q->input_scale, q->input_zero_point);
    *owned = copy;
    return copy;
}
