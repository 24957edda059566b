// Packing a layer's weights with one named kernel family, and releasing a layer. Below the
// backend (ops/backend.c), which packs a layer with each candidate family to time them, and below
// the loaders (ops/weights_load.c), which ask the backend for the family when none is named.
#include <stdlib.h>

#include "core/error.h"
#include "ops/backend.h"
#include "ops/kernel_family.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"
#include "ops/packed_cache.h"

lcm_status linear_pack_named(linear *l, const ops_backend *b, linear_kernel kernel) {
    if (l->impl.family || !l->weight)
        return lcm_fail(LCM_ERR_INTERNAL, "linear_pack: nothing to pack");
    const kernel_family *family = backend_linear_family(kernel);
    if (!family) return lcm_fail(LCM_ERR_INTERNAL, "linear_pack: no kernel family %d", (int)kernel);
    void *state = NULL;
    LCM_TRY(family->linear_pack(l, b->precision, &state));
    l->impl = (layer_kernel){family, state};
    if (family->linear_keeps_weight) return LCM_OK; // computes on the plain weight
    if (!l->weight_mapped) free(l->weight);
    l->weight = NULL;
    l->weight_mapped = false;
    return LCM_OK;
}

lcm_status conv2d_pack_kernel_keep(conv2d *c, const ops_backend *b, conv_kernel kernel) {
    if (c->impl.family || !c->weight)
        return lcm_fail(LCM_ERR_INTERNAL, "conv2d_pack: nothing to pack");
    const kernel_family *family = backend_conv_family(kernel);
    if (!family) return lcm_fail(LCM_ERR_INTERNAL, "conv2d_pack: no kernel family %d", (int)kernel);
    void *state = NULL;
    LCM_TRY(family->conv_pack(c, b->precision, &state));
    c->impl = (layer_kernel){family, state};
    return LCM_OK;
}

lcm_status conv2d_pack_named(conv2d *c, const ops_backend *b, conv_kernel kernel) {
    LCM_TRY(conv2d_pack_kernel_keep(c, b, kernel));
    if (!c->weight_mapped) free(c->weight);
    c->weight = NULL;
    c->weight_mapped = false;
    return LCM_OK;
}

void linear_free(linear *l) {
    if (!l->weight_mapped) free(l->weight);
    l->weight_mapped = false;
    free(l->bias);
    if (l->impl.family) l->impl.family->linear_free(l->impl.state);
    packed_mapping_release(l->packed_source); // after the kernel that borrows from it
    l->packed_source = NULL;
    l->weight = l->bias = NULL;
    l->impl = (layer_kernel){0};
    layer_quant_free(l->quant);
    l->quant = NULL;
}

void conv2d_free(conv2d *c) {
    if (!c->weight_mapped) free(c->weight);
    c->weight_mapped = false;
    free(c->bias);
    if (c->impl.family) c->impl.family->conv_free(c->impl.state);
    packed_mapping_release(c->packed_source); // after the kernel that borrows from it
    c->packed_source = NULL;
    c->weight = c->bias = NULL;
    c->impl = (layer_kernel){0};
    layer_quant_free(c->quant);
    c->quant = NULL;
}
