#include "ops/gemm.h"
#include "ops/ops.h"

#include <string.h>

#include "core/error.h"
#include "ops/dnnl_layer.h"

tensor *linear_forward(const linear *l, const tensor *x) {
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
    if (l->fast) {
        const tensor *plain = x;
        tensor *converted = NULL;
        if (x->ndim == 4 && x->layout != TENSOR_NCHW) plain = converted = tensor_to_nchw(x);
        lcm_status st = plain ? dnnl_layer_linear_run(l->fast, plain->data, rows, l->bias, y->data)
                              : LCM_ERR_OUT_OF_MEMORY;
        tensor_free(converted);
        if (st != LCM_OK) tensor_replace(&y, NULL);
        return y;
    }
    const tensor *plain = x;
    tensor *converted = NULL;
    if (x->ndim == 4 && x->layout != TENSOR_NCHW) {
        plain = converted = tensor_to_nchw(x);
        if (!converted) {
            tensor_free(y);
            return NULL;
        }
    }
    // y = bias (broadcast over rows), then y += x W^T.
    if (l->bias) {
        #pragma omp parallel for
        for (int64_t r = 0; r < rows; r++) memcpy(y->data + r * l->out, l->bias, sizeof(float) * l->out);
    }
    gemm_f32(false, true, rows, l->out, in, 1.0f, plain->data, in, l->weight, in,
             l->bias ? 1.0f : 0.0f, y->data, l->out);
    tensor_free(converted);
    return y;
}
