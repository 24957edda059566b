#include "ops/gemm.h"
#include "ops/int8_layer.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"

#include <string.h>

#include "core/error.h"
#include "ops/kernel_family.h"

static tensor *linear_compute(const linear *l, const tensor *x);

// The layer's input as it computes on it (8-bit quantized where the model says so), then the product.
tensor *linear_forward(const linear *l, const tensor *x) {
    const kernel_family *family = l->impl.family;
    if (family && family->forward) return family->forward(l->impl.state, x, l->bias);
    tensor *quantized;
    tensor *y = linear_compute(l, layer_quant_input(l->quant, x, &quantized));
    tensor_free(quantized);
    return y;
}

static tensor *linear_compute(const linear *l, const tensor *x) {
    if (!x) return NULL;
    int64_t in = x->shape[x->ndim - 1];
    if (in != l->in) {
        lcm_fail(LCM_ERR_INTERNAL, "linear: input has %lld features, layer expects %d", (long long)in,
                 l->in);
        return NULL;
    }
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = l->out;
    tensor *y = tensor_new(x->ndim, shape);
    if (!y) return NULL;
    int64_t rows = tensor_numel(x) / in;
    if (rows == 0) return y;
    // One matrix product per batch item (per row for a small 2-D input), so that an image's
    // result does not depend on what else is in the batch: a product's rounding can depend on
    // its number of rows.
    int64_t items = x->ndim >= 3 ? x->shape[0] : rows <= 16 ? rows : 1;
    const tensor *plain = x;
    tensor *converted = NULL;
    if (x->ndim == 4 && x->layout != TENSOR_NCHW) {
        plain = converted = tensor_to_nchw(x);
        if (!converted) {
            tensor_free(y);
            return NULL;
        }
    }
    lcm_status st = LCM_OK;
    if (l->impl.family) st = l->impl.family->linear_run(l, plain->data, rows, items, y->data);
    else linear_plain_run(l, plain->data, rows, items, y->data);
    tensor_free(converted);
    if (st != LCM_OK) tensor_replace(&y, NULL);
    return y;
}

void linear_plain_run(const linear *l, const float *x, int64_t rows, int64_t items, float *y) {
    int64_t rows_per_item = rows / items;
    // y = bias (broadcast over rows), then y += x W^T.
    if (l->bias) {
        #pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) memcpy(y + r * l->out, l->bias, sizeof(float) * l->out);
    }
    for (int64_t i = 0; i < items; i++)
        gemm_f32(false, true, rows_per_item, l->out, l->in, 1.0f, x + i * rows_per_item * l->in,
                 l->in, l->weight, l->in, l->bias ? 1.0f : 0.0f, y + i * rows_per_item * l->out,
                 l->out);
}
