// Building blocks shared by the diffusers models (unet, controlnet, vae): ResNet block, attention,
// the spatial transformer, down/up samplers and the timestep embedding. Each mirrors one diffusers
// v0.26.3 module and loads its weights from the same key names under a prefix, e.g.
// "down_blocks.0.resnets.1" for a ResnetBlock2D.
//
// Every *_load fills a zero-initialised struct and, on failure, leaves it safe to pass to the
// matching *_free (which also accepts a zeroed struct). The backend passed to a *_load
// (ops/backend.h) chooses its layers' kernels and is only read; a block that needs its kernel set
// at run time keeps a copy of it. Forward functions follow the op convention:
// NULL input -> NULL output, new tensors returned, inputs untouched.
#ifndef LCM_MODELS_BLOCKS_H
#define LCM_MODELS_BLOCKS_H

#include <stdbool.h>

#include "core/tensor.h"
#include "io/weights.h"
#include "ops/ops.h"

// ---- helpers ---------------------------------------------------------------------------------

// a += b, and b is freed. On failure (either NULL, or mismatched sizes) both are freed and NULL
// is returned, so `h = add_consume(h, branch(h))` never leaks.
tensor *add_consume(tensor *a, tensor *b);

// ---- ResnetBlock2D (resnet.py, time_embedding_norm "default") ----------------------------------
//
//   h = conv1(silu(norm1(x)))  [+ time_emb_proj(silu(temb)) per channel]
//   h = conv2(silu(norm2(h)))
//   out = (shortcut(x) + h) / output_scale_factor,  shortcut = 1x1 conv when in != out

typedef struct resnet_block_config {
    int in_channels, out_channels;
    int temb_channels;  // 0: the block takes no time embedding (VAE)
    int groups;         // GroupNorm groups of norm1 and norm2
    float eps;          // GroupNorm eps
    float output_scale_factor;
} resnet_block_config;

typedef struct resnet_block {
    resnet_block_config config;
    norm norm1, norm2;
    conv2d conv1, conv2;
    linear time_emb_proj; // weight NULL when temb_channels == 0
    conv2d conv_shortcut; // weight NULL when in_channels == out_channels
    kernel_set kernels;   // the set its layers were loaded for (from the backend), for silu
} resnet_block;

lcm_status resnet_block_load(resnet_block *b, const ops_backend *backend, const weight_set *ws,
                             const char *prefix, const resnet_block_config *config);
void resnet_block_free(resnet_block *b);
// x [N, in, H, W], temb [N, temb_channels] (NULL when the block has none) -> [N, out, H, W].
// Consumes x (its memory is reused), also on failure.
tensor *resnet_block_forward(const resnet_block *b, tensor *x, const tensor *temb);

// ---- Attention (attention_processor.py: to_q/to_k/to_v, softmax(q k^T / sqrt(d)) v, to_out.0) --

typedef struct attention_layer {
    int heads;
    // Of the product of queries and keys and of the weighted sum: backend_attention_precision's
    // (bf16 models), or for 8-bit projections bf16 where the CPU has AVX512-BF16 (blocks.c).
    lcm_precision precision;
    linear to_q, to_k, to_v, to_out;
} attention_layer;

// query_dim: features of x; context_dim: features of the context (= query_dim for
// self-attention); inner = heads * head_dim. to_q/k/v have a bias only when qkv_bias; to_out.0
// always has one. context_rows: the context's typical length when it is fixed by the
// architecture (77 text tokens), else 0; it only informs the kernel choice (ops/backend.h).
lcm_status attention_layer_load(attention_layer *a, const ops_backend *backend,
                                const weight_set *ws, const char *prefix,
                                int query_dim, int context_dim, int heads, int head_dim,
                                bool qkv_bias, int64_t context_rows);
void attention_layer_free(attention_layer *a);
// x [B, N, query_dim], context [B, M, context_dim] or NULL (self-attention) -> [B, N, query_dim]
tensor *attention_layer_forward(const attention_layer *a, const tensor *x, const tensor *context);

// ---- BasicTransformerBlock (attention.py, norm_type "layer_norm") ------------------------------
//
//   x = x + attn1(norm1(x))              self-attention
//   x = x + attn2(norm2(x), context)     cross-attention on the text embeddings
//   x = x + ff(norm3(x))                 ff = net.2(GEGLU(net.0.proj(.))), inner = 4 * dim

typedef struct basic_transformer_block {
    norm norm1, norm2, norm3;
    attention_layer attn1, attn2;
    linear ff_geglu; // ff.net.0.proj: dim -> 2 * 4 * dim (value half, gate half)
    linear ff_out;   // ff.net.2: 4 * dim -> dim
    kernel_set kernels; // the set its layers were loaded for (from the backend), for geglu
} basic_transformer_block;

// context_rows: as attention_layer_load's, for the cross-attention.
lcm_status basic_transformer_block_load(basic_transformer_block *b, const ops_backend *backend,
                                        const weight_set *ws,
                                        const char *prefix, int dim, int heads, int head_dim,
                                        int cross_attention_dim, float norm_eps,
                                        int64_t context_rows);
void basic_transformer_block_free(basic_transformer_block *b);
// x [B, N, dim], context [B, M, cross_attention_dim] -> [B, N, dim]
tensor *basic_transformer_block_forward(const basic_transformer_block *b, const tensor *x,
                                        const tensor *context);

// ---- Transformer2DModel, continuous input (transformer_2d.py): the "spatial transformer" -------
//
//   tokens = proj_in(GroupNorm(x, eps 1e-6))   (1x1 conv or linear: the same map on tokens)
//   tokens = basic_transformer_block^depth(tokens, context)
//   out    = proj_out(tokens) + x

typedef struct transformer_2d_config {
    int channels;            // in = out channels of the block
    int heads, head_dim;     // inner dim = heads * head_dim
    int depth;               // number of BasicTransformerBlocks
    int groups;              // GroupNorm groups
    int cross_attention_dim;
    bool use_linear_projection; // proj_in/proj_out stored as Linear (true) or 1x1 Conv2d (false)
    int64_t context_tokens;     // the context's length when the architecture fixes it (77), else 0
} transformer_2d_config;

typedef struct transformer_2d {
    transformer_2d_config config;
    norm norm;
    linear proj_in, proj_out;
    basic_transformer_block *blocks; // [depth]
    kernel_set kernels; // the set its layers were loaded for: the layout tokens go back to
} transformer_2d;

lcm_status transformer_2d_load(transformer_2d *t, const ops_backend *backend, const weight_set *ws,
                               const char *prefix, const transformer_2d_config *config);
void transformer_2d_free(transformer_2d *t);
// x [N, C, H, W], context [N, M, cross_attention_dim] -> [N, C, H, W]
tensor *transformer_2d_forward(const transformer_2d *t, const tensor *x, const tensor *context);

// ---- Downsample2D / Upsample2D with convolution (resnet.py / upsampling.py) -----------------

typedef struct downsample {
    conv2d conv;            // 3x3, stride 2
    bool pad_bottom_right;  // padding 0 in the config: pad (0,1,0,1) before the conv (VAE encoder)
} downsample;

// padding: 1 (unet: symmetric conv padding) or 0 (VAE: asymmetric zero pad, then an unpadded conv).
lcm_status downsample_load(downsample *d, const ops_backend *backend, const weight_set *ws,
                           const char *prefix, int in_channels, int out_channels, int padding);
void downsample_free(downsample *d);
// [N, C, H, W] -> [N, C', ceil(H/2), ceil(W/2)] (padding 1) or [N, C', H/2, W/2] (padding 0)
tensor *downsample_forward(const downsample *d, const tensor *x);

typedef struct upsample {
    conv2d conv; // 3x3, padding 1
} upsample;

lcm_status upsample_load(upsample *u, const ops_backend *backend, const weight_set *ws,
                         const char *prefix, int in_channels, int out_channels);
void upsample_free(upsample *u);
// Nearest resize to [out_h, out_w] (2H x 2W normally; the skip's size when the latent is not a
// multiple of the model's total downscale), then the conv: [N, C, H, W] -> [N, C', out_h, out_w]
tensor *upsample_forward(const upsample *u, const tensor *x, int64_t out_h, int64_t out_w);

// ---- Timestep embedding (embeddings.py: get_timestep_embedding, TimestepEmbedding) ------------

// Sinusoidal features of one timestep, repeated for `batch` rows: [batch, dim]. With
// half = dim/2, f[i] = exp(-ln(10000) * i / (half - downscale_freq_shift)), e = t * f, the row is
// [sin e, cos e] ([cos e, sin e] when flip_sin_to_cos), zero-padded when dim is odd. float32 steps
// in torch's order.
tensor *timestep_features(float timestep, int64_t batch, int dim, bool flip_sin_to_cos,
                          float downscale_freq_shift);

// linear_2(silu(linear_1(features [+ cond_proj(condition)]))); cond_proj has no bias and exists
// only for models with a time_cond_proj_dim (LCM's guidance embedding).
typedef struct time_embedding {
    linear linear_1, linear_2;
    linear cond_proj; // weight NULL when absent
    kernel_set kernels; // the set its layers were loaded for (from the backend), for silu
} time_embedding;

lcm_status time_embedding_load(time_embedding *e, const ops_backend *backend, const weight_set *ws,
                               const char *prefix,
                               int in_channels, int time_embed_dim, int cond_proj_dim);
void time_embedding_free(time_embedding *e);
// features [N, in_channels], condition [N, cond_proj_dim] or NULL (skipped) -> [N, time_embed_dim]
tensor *time_embedding_forward(const time_embedding *e, const tensor *features,
                               const tensor *condition);

#endif
