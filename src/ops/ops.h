// Neural-network operations on float32 tensors (src/core/tensor.h). Shapes are logical NCHW, as in
// the reference library; how a tensor is stored (tensor.layout) is the kernel set's business.
//
// Two kernel sets share these entry points. The fast path (the default) runs convolutions and
// linear layers on weights packed once at load by the kernel family the backend chose for each
// layer shape (our direct/Winograd kernels, oneDNN primitives, sgemm, int8: ops/backend.h), keeps 4-D
// activations channels-last (tensor.layout == TENSOR_NHWC) and runs the norms and elementwise ops
// over that layout with AVX-512 where the CPU has it. The reference path is straightforward loops
// over NCHW with the matrix products done by oneDNN's sgemm; it runs for a layer loaded with a
// backend of reference kernels (ops/backend.h: kernels = KERNELS_REFERENCE, what
// LCM_REFERENCE_KERNELS=1 in the environment gives) and serves as the check on the fast one. Every
// op accepts both layouts (and mixed inputs where it takes two); shape and layout of the result
// are documented logically ([N,C,H,W]).
//
// Every op takes NULL inputs (an earlier failure) and then returns NULL without work, so models can
// write a forward pass as a straight line. Ops never modify their inputs unless the name ends in
// _inplace.
//
// Which kernels a layer gets is decided by the ops_backend (ops/backend.h) passed to its loader,
// never by ambient state; the few ops without weights whose reference and fast forms differ
// (silu_inplace, geglu, tokens_to_nchw) take the kernel set of the model that runs them.
//
// Weights are plain structs owned by the model that loaded them; the *_load functions read
// `PREFIX.weight` / `PREFIX.bias` from a weight set and check their shapes. With the fast path the
// plain `weight` array is packed and freed at load (weight == NULL, kernel.family != NULL): test
// whether an optional layer is present with linear_present / conv2d_present, not with `weight`.
#ifndef LCM_OPS_OPS_H
#define LCM_OPS_OPS_H

#include <stdbool.h>

#include "core/tensor.h"
#include "io/weights.h"

// ---- weights -------------------------------------------------------------------------------

struct kernel_family;

// The one kernel a layer runs: a family (ops/kernel_family.h: how it packs, runs, frees, exports)
// and that family's packed weights. family NULL: nothing packed, the reference loops (or, for a
// linear layer, the product) on the plain weight.
typedef struct layer_kernel {
    const struct kernel_family *family;
    void *state; // owned by the layer, freed by the family
} layer_kernel;

// The resolved kernel choices passed to every loader (defined in ops/backend.h).
typedef struct ops_backend ops_backend;

// The two kernel sets above. A model keeps the one its layers were loaded with for the ops that
// have no weights of their own (silu_inplace, geglu, tokens_to_nchw).
typedef enum kernel_set {
    KERNELS_FAST,      // packed weights, NHWC activations, SIMD elementwise loops
    KERNELS_REFERENCE, // plain weights, NCHW, straightforward loops
} kernel_set;

typedef struct linear {
    int in, out;
    float *weight;           // [out, in]; NULL once packed
    float *bias;             // [out] or NULL
    layer_kernel impl;       // the kernel that computes it (the sgemm family keeps `weight`)
    struct layer_quant *quant; // name + 8-bit input parameters (ops/layer_quant.h)
    bool weight_mapped; // `weight` is borrowed from a weight set's mapping while it is packed,
                        // or from the packed-weight cache's
    // The packed-weight cache mapping the packed arrays are borrowed from (ops/packed_cache.h),
    // or NULL; one reference, released by linear_free.
    struct packed_mapping *packed_source;
} linear;

typedef struct conv2d {
    int in, out, kernel, stride, padding;
    float *weight;           // [out, in, kernel, kernel]; NULL once packed
    float *bias;             // [out] or NULL
    layer_kernel impl;       // the kernel that computes it once packed (`kernel` is its size)
    struct layer_quant *quant; // name + 8-bit input parameters (ops/layer_quant.h)
    bool weight_mapped; // `weight` is borrowed from a weight set's mapping while it is packed
    // The packed-weight cache mapping the packed arrays are borrowed from (ops/packed_cache.h),
    // or NULL; one reference, released by conv2d_free.
    struct packed_mapping *packed_source;
} conv2d;

typedef struct norm {
    int channels, groups; // groups = 1 for LayerNorm
    float eps;
    float *weight, *bias; // [channels]
} norm;

// Every loader reads `b` (not kept) for the kernel and precision of the layer.
lcm_status linear_load(linear *l, const ops_backend *b, const weight_set *ws, const char *prefix,
                       int in, int out, bool has_bias);
// As linear_load, for a layer whose row count the architecture fixes (1 for the time embedding,
// the 77 tokens of a prompt): the backend times the kernels at that size (ops/backend.h). 0 is
// unknown, what linear_load passes. Never pass a count derived from the image size or a config's
// sample_size: the kernel, and so the last bits of the result, would then depend on it.
lcm_status linear_load_rows(linear *l, const ops_backend *b, const weight_set *ws,
                            const char *prefix, int in, int out, bool has_bias, int64_t rows);
// As linear_load_rows, but never read from or written to the packed-weight cache: for layers
// loaded anew at every use (a text encoder stored in 8 bits, dequantized per prompt), which would
// otherwise add their packing to the cache at each use.
lcm_status linear_load_rows_uncached(linear *l, const ops_backend *b, const weight_set *ws,
                                     const char *prefix, int in, int out, bool has_bias, int64_t rows);
// A 1x1 conv's weight [out, in, 1, 1] loaded as a linear layer (diffusers' proj_in/proj_out when
// use_linear_projection is false).
lcm_status linear_load_from_conv1x1(linear *l, const ops_backend *b, const weight_set *ws,
                                    const char *prefix, int in, int out, int64_t rows);
lcm_status conv2d_load(conv2d *c, const ops_backend *b, const weight_set *ws, const char *prefix,
                       int in, int out, int kernel, int stride, int padding, bool has_bias);
lcm_status norm_load(norm *n, const weight_set *ws, const char *prefix, int channels, int groups,
                     float eps);
// Packs a layer built with plain weights for the fast kernels in b->precision and frees `weight`
// (what *_load does on the fast path; tests use it to compare both paths on the same weights),
// whatever b->kernels says. The kernel is b's choice for the shape (ops/backend.h); the direct and
// sgemm kernels compute in fp32 whatever the precision asked for. `force_primitive` (tests) packs
// for oneDNN primitives on any CPU. `b` is only read.
lcm_status linear_pack_with(linear *l, const ops_backend *b, bool force_primitive);
lcm_status conv2d_pack_with(conv2d *c, const ops_backend *b, bool force_primitive);
lcm_status linear_pack(linear *l, const ops_backend *b);
lcm_status conv2d_pack(conv2d *c, const ops_backend *b);

// The convolution kernels, for tests and benchmarks that compare them on one machine. AUTO is b's
// choice (ops/backend.h); b->precision is the packing's precision either way.
typedef enum conv_kernel {
    CONV_KERNEL_AUTO,
    CONV_KERNEL_ONEDNN, // oneDNN primitive (any CPU oneDNN supports)
    CONV_KERNEL_DIRECT, // ops/conv_direct.h (fails without AVX2 + FMA)
    CONV_KERNEL_SGEMM,  // NHWC im2col + sgemm
} conv_kernel;
lcm_status conv2d_pack_kernel(conv2d *c, const ops_backend *b, conv_kernel kernel);
// conv2d_pack_kernel with a named kernel (not AUTO: that is the backend's choice), in
// ops/layer_pack.c, which the backend uses to time each candidate.
lcm_status conv2d_pack_named(conv2d *c, const ops_backend *b, conv_kernel kernel);
// As conv2d_pack_named, but c->weight stays (still owned by whoever owned it, and not used by
// the packed form): for trying several kernels on one layer's weights (ops/backend.c).
lcm_status conv2d_pack_kernel_keep(conv2d *c, const ops_backend *b, conv_kernel kernel);

// The same choice for linear layers.
typedef enum linear_kernel {
    LINEAR_KERNEL_AUTO,
    LINEAR_KERNEL_ONEDNN, // oneDNN matmul primitive on prepacked weights
    LINEAR_KERNEL_DIRECT, // ops/linear_direct.h (fails without AVX2 + FMA)
    LINEAR_KERNEL_SGEMM,  // gemm_f32 on the plain weight (nothing packed)
} linear_kernel;
lcm_status linear_pack_kernel(linear *l, const ops_backend *b, linear_kernel kernel);
// linear_pack_kernel with a named kernel (not AUTO), in ops/layer_pack.c.
lcm_status linear_pack_named(linear *l, const ops_backend *b, linear_kernel kernel);

// For a convolution that always runs on a 2x nearest-upsampled input (conv2d_fusion.upsample_input):
// on the direct kernel, also packs weights that skip the repeated pixels (4/9 of the arithmetic,
// 16/9 of the weight memory; see conv_direct_prepare_upsampled). Does nothing on other kernels.
lcm_status conv2d_prepare_upsampled(conv2d *c);

// Whether an optional layer was loaded (either path).
bool linear_present(const linear *l);
bool conv2d_present(const conv2d *c);

void linear_free(linear *l);
void conv2d_free(conv2d *c);
void norm_free(norm *n);

// Parameter counts, for `lcm info`-style summaries.
int64_t linear_params(const linear *l);
int64_t conv2d_params(const conv2d *c);

// ---- layers --------------------------------------------------------------------------------

// x [..., in] -> [..., out]
tensor *linear_forward(const linear *l, const tensor *x);

// x [N, in, H, W] -> [N, out, H', W'] with H' = (H + 2p - k)/s + 1. Fast path: NHWC output.
tensor *conv2d_forward(const conv2d *c, const tensor *x);

// Work done inside a convolution on values still in cache, instead of separate passes over the
// whole activation: y = activation(conv(upsample?(x)) + bias + residual). The result equals the
// separate ops (upsample_nearest2x, conv2d_forward, add_inplace, relu_inplace) bit for bit.
typedef enum conv_activation {
    CONV_ACTIVATION_NONE,
    CONV_ACTIVATION_RELU,
} conv_activation;

typedef struct conv2d_fusion {
    bool upsample_input;        // x is nearest-upsampled 2x first: [N,in,H,W] -> [N,in,2H,2W]
    const tensor *residual;     // or NULL: added after the bias; the output's shape, any layout
    conv_activation activation; // applied last
} conv2d_fusion;

// conv2d_forward with `fusion` (NULL: none). The direct and sgemm kernels fuse; the other paths
// (oneDNN, reference, int8, calibration) run the same steps one after another.
tensor *conv2d_forward_fused(const conv2d *c, const tensor *x, const conv2d_fusion *fusion);

// Zero padding of the spatial axes: [N,C,H,W] -> [N,C,top+H+bottom,left+W+right].
tensor *pad2d(const tensor *x, int top, int bottom, int left, int right);

// GroupNorm over NCHW: statistics per (n, group) over channels/groups * H * W values.
tensor *group_norm(const norm *n, const tensor *x);
// GroupNorm followed by SiLU, the pair every ResNet block starts with.
tensor *group_norm_silu(const norm *n, const tensor *x);
// group_norm_silu in x's own memory: takes ownership of x and returns it normalised, or NULL (x
// freed) on failure. Saves a tensor of x's size where the caller no longer needs x.
tensor *group_norm_silu_consume(const norm *n, tensor *x);

// LayerNorm over the last axis.
tensor *layer_norm(const norm *n, const tensor *x);

// ---- elementwise ---------------------------------------------------------------------------

// `kernels`: the set of the model that runs it (the fast one is SIMD, rounding differently).
void silu_inplace(tensor *x, kernel_set kernels);
void gelu_inplace(tensor *x);       // exact erf GELU (torch's default)
void quick_gelu_inplace(tensor *x); // x * sigmoid(1.702 x), CLIP's activation
// x [..., 2D] -> [..., D]: first half * gelu(second half) (diffusers GEGLU).
tensor *geglu(const tensor *x, kernel_set kernels);
// a += b (same shape). Returns a (NULL if either is NULL).
tensor *add_inplace(tensor *a, const tensor *b);
// x [N, C, H, W] += v [N, C] broadcast over H, W (time embedding into a ResNet block).
tensor *add_channel_bias_inplace(tensor *x, const tensor *v);
void scale_inplace(tensor *x, float s);

// ---- shape -----------------------------------------------------------------------------------

// [N, C, H, W] -> [N, H*W, C] and back. Back gives NHWC storage (the tokens as they are) for
// KERNELS_FAST, NCHW for KERNELS_REFERENCE.
tensor *nchw_to_tokens(const tensor *x);
tensor *tokens_to_nchw(const tensor *x, int64_t h, int64_t w, kernel_set kernels);
// Channel concatenation [N, Ca, H, W] + [N, Cb, H, W] -> [N, Ca+Cb, H, W].
tensor *concat_channels(const tensor *a, const tensor *b);
// Nearest-neighbour x2: [N, C, H, W] -> [N, C, 2H, 2W].
tensor *upsample_nearest2x(const tensor *x);

// ---- attention -------------------------------------------------------------------------------

// Multi-head scaled dot-product attention. q [B, Nq, C], k and v [B, Nk, C] with C = heads * d;
// softmax(q k^T / sqrt(d)) v per head -> [B, Nq, C]. `causal` masks keys after the query position.
tensor *attention(const tensor *q, const tensor *k, const tensor *v, int heads, bool causal);

#endif
