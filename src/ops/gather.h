// Gathering rows by index: embedding-table lookups and picking one token per sequence.
//
// Indices come from user input (token ids) or from a model's own rule (the pooled token), so every
// index is checked: an index outside the table is an error naming it, never an out-of-bounds read.
#ifndef LCM_OPS_GATHER_H
#define LCM_OPS_GATHER_H

#include <stdint.h>

#include "core/tensor.h"

// out[b, t, :] = table[ids[b * n + t], :] for a table [rows, dim]:
// ids [batch, n] -> [batch, n, dim]. An id outside [0, rows) fails (LCM_ERR_INVALID_ARGUMENT).
tensor *embedding_lookup(const float *table, int64_t rows, int64_t dim, const int32_t *ids,
                         int64_t batch, int64_t n);

// out[b, :] = x[b, index[b], :]: x [batch, n, dim] -> [batch, dim]. An index outside [0, n) fails.
tensor *select_token_rows(const tensor *x, const int64_t *index);

#endif
