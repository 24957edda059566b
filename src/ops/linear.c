#include "ops/gemm.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"

#include <string.h>

#include "core/error.h"

static tensor *linear_compute(const linear *l, const tensor *x);

// The layer's input as it computes on it (8-bit quantized where the model says so), then the product.
tensor *linear_forward(const linear *l, const tensor *x) {
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
    // y = bias (broadcast over rows), then y += x W^T.
    if (l->bias) {
        #pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) memcpy(y->data + r * l->out, l->bias, sizeof(float) * l->out);
    }
    gemm_f32(false, true, rows, l->out, in, 1.0f, x->data, in, l->weight, in, l->bias ? 1.0f : 0.0f,
             y->data, l->out);
    return y;
}
