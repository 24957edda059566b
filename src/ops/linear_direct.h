// Linear layers (y = x W^T + bias) for CPUs with AVX2 + FMA, with AVX-512 register tiles where the CPU
// has them.
//
// gemm_f32 (dnnl_sgemm) repacks the weight on every call, block by block. Here the weight is
// packed once at load into panels of 16 output columns ([in][16] each, like the 16-channel blocks
// of conv_direct), and a 12-row x 16-column register tile reads the input rows in place.
//
// Each output value is summed by one thread in one fixed order (bias, then the inputs 0, 1, ...,
// in - 1, one fused multiply-add each), so results do not depend on the number of threads, on the
// number of rows, on where a row falls in a tile, or on whether the AVX-512 or the AVX2 tile ran.
#ifndef LCM_OPS_LINEAR_DIRECT_H
#define LCM_OPS_LINEAR_DIRECT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "ops/packed_cache.h"

typedef struct linear_direct linear_direct;

// Whether this CPU runs the kernel (AVX2 and FMA).
bool linear_direct_available(void);

// Packs `weight` [out, in] and `bias` [out] (NULL: none); both are copied, the caller keeps its
// arrays. *result is owned by the caller (linear_direct_free).
lcm_status linear_direct_new(const float *weight, const float *bias, int in, int out,
                             linear_direct **result);
void linear_direct_free(linear_direct *d);

// The packed form, for the packed-weight cache: entry->blobs borrow d's arrays.
void linear_direct_export(const linear_direct *d, packed_entry *entry);
// A layer computing on entry's arrays in place (borrowed: they must outlive *out, and are not
// freed by linear_direct_free). LCM_ERR_FORMAT when the entry is not a valid packing of a layer of
// entry->shape.
lcm_status linear_direct_import(const packed_entry *entry, linear_direct **out);

// y [rows, out] = x [rows, in] W^T + bias. Splits the rows and columns over the OpenMP threads
// when called outside a parallel region; inside one it runs on the calling thread.
void linear_direct_run(const linear_direct *d, const float *x, int64_t rows, float *y);

#endif
