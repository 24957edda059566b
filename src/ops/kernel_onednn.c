// The oneDNN family (kernel_family.h): convolutions and matrix products as oneDNN primitives on
// weights packed once at load (ops/dnnl_layer.h), fp32 or bf16.
#include "core/error.h"
#include "ops/dnnl_layer.h"
#include "ops/kernel_family.h"

static lcm_status onednn_conv_pack(const conv2d *c, lcm_precision precision, void **state) {
    dnnl_layer *layer = NULL; // the family's state is the dnnl_layer itself
    LCM_TRY(dnnl_layer_conv_new(c->weight, c->bias != NULL, c->in, c->out, c->kernel, c->stride,
                                c->padding, precision, &layer));
    *state = layer;
    return LCM_OK;
}

// The oneDNN primitive over NHWC: input converted once if it comes NCHW (the first layer only).
static tensor *onednn_conv_run(const conv2d *c, const tensor *x, int64_t oh, int64_t ow,
                               const conv2d_fusion *fusion) {
    (void)fusion; // {0}: this family does not fuse
    int64_t n = x->shape[0], h = x->shape[2], w = x->shape[3];
    tensor *converted = x->layout == TENSOR_NHWC ? NULL : tensor_to_nhwc(x);
    if (x->layout != TENSOR_NHWC && !converted) return NULL;
    const tensor *input = converted ? converted : x;
    tensor *y = tensor_new4(n, c->out, oh, ow);
    if (y) {
        y->layout = TENSOR_NHWC;
        if (dnnl_layer_conv_run(c->impl.state, input->data, n, h, w, c->bias, y->data) != LCM_OK)
            tensor_replace(&y, NULL);
    }
    tensor_free(converted);
    return y;
}

static void onednn_layer_free(void *state) { dnnl_layer_free(state); }

static void onednn_conv_export(const conv2d *c, packed_entry *entry) {
    dnnl_layer_export(c->impl.state, entry);
}

static lcm_status onednn_conv_import(const conv2d *c, const packed_entry *entry, void **state) {
    dnnl_layer *layer = NULL;
    LCM_TRY(dnnl_layer_import(entry, true, c->bias != NULL, &layer));
    *state = layer;
    return LCM_OK;
}

static lcm_status onednn_linear_pack(const linear *l, lcm_precision precision, void **state) {
    dnnl_layer *layer = NULL;
    LCM_TRY(dnnl_layer_linear_new(l->weight, l->bias != NULL, l->in, l->out, precision, &layer));
    *state = layer;
    return LCM_OK;
}

// One primitive run per item: a product's rounding can depend on its number of rows.
static lcm_status onednn_linear_run(const linear *l, const float *x, int64_t rows, int64_t items,
                                    float *y) {
    int64_t rows_per_item = rows / items;
    lcm_status st = LCM_OK;
    for (int64_t i = 0; i < items && st == LCM_OK; i++)
        st = dnnl_layer_linear_run(l->impl.state, x + i * rows_per_item * l->in, rows_per_item,
                                   l->bias, y + i * rows_per_item * l->out);
    return st;
}

static void onednn_linear_export(const linear *l, packed_entry *entry) {
    dnnl_layer_export(l->impl.state, entry);
}

static lcm_status onednn_linear_import(linear *l, const packed_entry *entry, void **state) {
    dnnl_layer *layer = NULL;
    LCM_TRY(dnnl_layer_import(entry, false, l->bias != NULL, &layer));
    *state = layer;
    return LCM_OK;
}

static bool onednn_falls_to_reference(const void *state) {
    return dnnl_impl_is_reference(dnnl_layer_impl(state));
}

const kernel_family kernel_family_onednn = {
    .name = "onednn",
    .conv_id = CONV_KERNEL_ONEDNN,
    .linear_id = LINEAR_KERNEL_ONEDNN,
    .conv_cache = PACKED_CONV_ONEDNN,
    .linear_cache = PACKED_LINEAR_ONEDNN,
    .conv_pack = onednn_conv_pack,
    .conv_run = onednn_conv_run,
    .conv_fuses = false,
    .conv_free = onednn_layer_free,
    .conv_export = onednn_conv_export,
    .conv_import = onednn_conv_import,
    .linear_pack = onednn_linear_pack,
    .linear_run = onednn_linear_run,
    .linear_free = onednn_layer_free,
    .linear_export = onednn_linear_export,
    .linear_import = onednn_linear_import,
    .falls_to_reference = onednn_falls_to_reference,
};
