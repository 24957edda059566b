#include "ops/gather.h"

#include <string.h>

#include "core/error.h"

tensor *embedding_lookup(const float *table, int64_t rows, int64_t dim, const int32_t *ids,
                         int64_t batch, int64_t n) {
    for (int64_t i = 0; i < batch * n; i++) {
        if (ids[i] < 0 || ids[i] >= rows) {
            lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                     "embedding: id %d at [%lld, %lld] is outside the table's %lld rows",
                     (int)ids[i], (long long)(i / n), (long long)(i % n), (long long)rows);
            return NULL;
        }
    }
    tensor *out = tensor_new3(batch, n, dim);
    if (!out) return NULL;
    for (int64_t i = 0; i < batch * n; i++)
        memcpy(out->data + i * dim, table + (int64_t)ids[i] * dim, sizeof(float) * (size_t)dim);
    return out;
}

tensor *select_token_rows(const tensor *x, const int64_t *index) {
    if (!x) return NULL;
    if (x->ndim != 3) {
        lcm_fail(LCM_ERR_INTERNAL, "select_token_rows: expected [batch, n, dim], got %d dims",
                 x->ndim);
        return NULL;
    }
    int64_t batch = x->shape[0], n = x->shape[1], dim = x->shape[2];
    for (int64_t b = 0; b < batch; b++) {
        if (index[b] < 0 || index[b] >= n) {
            lcm_fail(LCM_ERR_INTERNAL,
                     "select_token_rows: index %lld of sequence %lld is outside 0..%lld",
                     (long long)index[b], (long long)b, (long long)n - 1);
            return NULL;
        }
    }
    tensor *out = tensor_new2(batch, dim);
    if (!out) return NULL;
    for (int64_t b = 0; b < batch; b++)
        memcpy(out->data + b * dim, x->data + (b * n + index[b]) * dim,
               sizeof(float) * (size_t)dim);
    return out;
}
