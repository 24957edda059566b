// The fast path of conv2d and linear layers: oneDNN primitives over NHWC activations.
//
// At load a layer's weights are reordered once into the blocked layout oneDNN prefers for it (and
// converted to bf16 for LCM_PRECISION_BF16), and the plain copy is dropped. A primitive is created
// the first time the layer sees an input shape (and thread count) and then kept in the layer's
// cache, so the step loop never creates one. All operands are dense (NHWC activations, [rows, in]
// matrices): strided views make oneDNN fall back to its slow reference kernels.
#ifndef LCM_OPS_DNNL_LAYER_H
#define LCM_OPS_DNNL_LAYER_H

#include <stdbool.h>
#include <stdint.h>

#include "lcm.h"
#include "ops/packed_cache.h"

typedef struct dnnl_layer dnnl_layer;

// Packs a conv weight [out, in, k, k] (float32, row-major; not kept). *out is owned by the caller
// (dnnl_layer_free).
lcm_status dnnl_layer_conv_new(const float *weight, bool has_bias, int in, int out, int kernel,
                               int stride, int padding, lcm_precision precision,
                               dnnl_layer **out_layer);
// Packs a linear weight [out, in] (float32, row-major; not kept).
lcm_status dnnl_layer_linear_new(const float *weight, bool has_bias, int in, int out,
                                 lcm_precision precision, dnnl_layer **out_layer);
void dnnl_layer_free(dnnl_layer *layer);

// The packed form, for the packed-weight cache: the copy of the weights a primitive runs on (the
// first), with its memory descriptor. entry->blobs borrow the layer's array.
void dnnl_layer_export(dnnl_layer *layer, packed_entry *entry);
// A layer whose first copy of the weights is entry's array in place (borrowed: it must outlive
// *out and is not freed). LCM_ERR_FORMAT when the entry does not describe a packing of a layer of
// entry->shape (conv when `is_conv`) with or without bias as `has_bias` says.
lcm_status dnnl_layer_import(const packed_entry *entry, bool is_conv, bool has_bias,
                             dnnl_layer **out_layer);

// y [n, out, oh, ow] (NHWC storage) = conv(x [n, in, h, w] NHWC storage) + bias (non-NULL exactly when the layer was made with has_bias).
lcm_status dnnl_layer_conv_run(dnnl_layer *layer, const float *x, int64_t n, int64_t h, int64_t w,
                               const float *bias, float *y);
// y [rows, out] = x [rows, in] W^T + bias (non-NULL exactly when the layer was made with has_bias).
lcm_status dnnl_layer_linear_run(dnnl_layer *layer, const float *x, int64_t rows,
                                 const float *bias, float *y);

// The oneDNN implementation the layer's most recent primitive uses ("brgconv:avx512_core", ...),
// for tests and benchmarks; "" before the first run.
const char *dnnl_layer_impl(const dnnl_layer *layer);
lcm_precision dnnl_layer_precision(const dnnl_layer *layer);
// Number of primitives created so far (one per input shape and thread count).
int dnnl_layer_primitive_count(dnnl_layer *layer);
// Number of copies of the weights the layer holds: one, unless primitives for different input
// sizes wanted different layouts that no single copy serves with a real (non-reference) kernel.
int dnnl_layer_weight_copies(dnnl_layer *layer);

// Whether a oneDNN implementation name is one of its reference kernels ("ref:any", "gemm:ref",
// "ref_int8:any", ...), which are far too slow to run a model on.
bool dnnl_impl_is_reference(const char *impl);

#endif
