// NormalBae (Bae et al. 2021, "Estimating and Exploiting the Aleatoric Uncertainty in Surface
// Normal Estimation"), the surface-normal estimator behind controlnet_aux's NormalBaeDetector.
//
//   image [N,3,H,W] (ImageNet-normalised, H and W multiples of 32)
//     -> EfficientNet encoder (geffnet tf_efficientnet_b5_ap: stem, 7 stages of MBConv blocks with
//        squeeze-excitation and swish, TensorFlow "same" padding, conv_head)
//     -> decoder: 1x1 conv2, four UpSampleBN stages (bilinear align_corners x2 + skip, two 3x3
//        conv + BN + LeakyReLU), out_conv_res8 at 1/8, then three per-pixel MLP refinements
//        (1/4, 1/2, 1/1) each fed the upsampled decoder feature and the previous prediction
//     -> [N,4,H,W]: unit normal (x, y, z) and a concentration kappa.
// Inference only ("test" mode: every pixel is refined, no uncertainty-guided sampling).
//
// The architecture is read from the weight shapes (channel counts, blocks per stage, kernel sizes,
// SE widths, decoder widths, MLP width), so the tiny fixture network and the real B5 checkpoint
// (`scannet.pt`) load through the same code; what is fixed by the reference code is hard-coded here:
// the block types and order, stage strides (1,2,2,2,1,2,1), swish, sigmoid SE gates, BatchNorm eps
// (1e-3 encoder, 1e-5 decoder), LeakyReLU 0.01, the skip wiring and norm_normalize. BatchNorms are
// folded into the preceding convolution at load time. Tensor names are the NNET state_dict's, with
// or without the DDP "module." prefix (controlnet_aux strips it when loading).
#ifndef LCM_MODELS_NORMALBAE_H
#define LCM_MODELS_NORMALBAE_H

#include <stdbool.h>

#include "core/tensor.h"
#include "io/weights.h"

typedef struct ops_backend ops_backend; // ops/backend.h: the kernels layers are loaded for

#define NORMALBAE_STAGES 7
#define NORMALBAE_MAX_BLOCKS 64

typedef struct normalbae_block_arch {
    bool depthwise_separable; // stage 0's DS block (no expansion conv) vs inverted residual
    int stage;
    int in, mid, out, kernel, stride, se_chs;
    bool residual; // stride 1 and in == out
} normalbae_block_arch;

typedef struct normalbae_arch {
    const char *prefix; // "module." or ""
    int stem_chs, head_chs;
    int block_count;
    int stage_end[NORMALBAE_STAGES]; // one past the last block of each stage
    normalbae_block_arch blocks[NORMALBAE_MAX_BLOCKS];
    int conv2_out;
    int up_out[4];
    int mlp_hidden;
} normalbae_arch;

// Looks up a tensor's shape by name: true and *ndim/shape[0..7] when present.
typedef bool (*normalbae_shape_fn)(void *ctx, const char *name, int *ndim, int64_t *shape);

// Derives the architecture from tensor shapes and checks that they fit together; errors name
// `source` and the tensor. Used by normalbae_load and by tests over a list of shapes only.
lcm_status normalbae_arch_from_shapes(normalbae_shape_fn shape_of, void *ctx, const char *source,
                                      normalbae_arch *out);

typedef struct normalbae normalbae;

// Loads every tensor (folding BatchNorms); the caller owns *out (normalbae_free). `ws` is only
// read during the call. Its layers compute on their plain weights whatever `backend` says (only
// read); the model keeps backend->kernels for its activations.
lcm_status normalbae_load(const ops_backend *backend, const weight_set *ws, normalbae **out);
void normalbae_free(normalbae *m);
const normalbae_arch *normalbae_get_arch(const normalbae *m);

// Called with intermediate tensors under the reference's names ("debug.encoder.features.04.blocks.0",
// "debug.decoder.up1", "debug.decoder.out_conv_res4.in", "out.norm_out_list.3_res1", ...). The
// tensor is borrowed for the duration of the call.
typedef void (*normalbae_trace_fn)(void *ctx, const char *name, const tensor *t);

// x [N, 3, H, W] (H, W multiples of 32) -> [N, 4, H, W], the full-resolution prediction
// out_res1 (x, y, z unit normal; kappa). NULL with the error set on failure. `trace` may be NULL.
tensor *normalbae_forward(const normalbae *m, const tensor *x, normalbae_trace_fn trace,
                          void *trace_ctx);

#endif
