// Shared diffusers building blocks; see blocks.h for what each one computes.
#include "models/blocks.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "ops/attention.h"
#include "ops/backend.h"
#include "ops/layer_quant.h"
#include "ops/resample.h"

// "PREFIX.name" into buf, failing (not truncating) when it does not fit.
static lcm_status key(char *buf, size_t size, const char *prefix, const char *name) {
    int n = snprintf(buf, size, "%s.%s", prefix, name);
    if (n < 0 || (size_t)n >= size)
        return lcm_fail(LCM_ERR_INTERNAL, "weight name too long: %s.%s", prefix, name);
    return LCM_OK;
}

#define KEY_SIZE 512

tensor *add_consume(tensor *a, tensor *b) {
    tensor *sum = add_inplace(a, b);
    tensor_free(b);
    if (!sum) tensor_free(a);
    return sum;
}

// ---- ResnetBlock2D ---------------------------------------------------------------------------

lcm_status resnet_block_load(resnet_block *b, const ops_backend *backend, const weight_set *ws,
                             const char *prefix, const resnet_block_config *config) {
    *b = (resnet_block){.config = *config, .kernels = backend->kernels};
    int in = config->in_channels, out = config->out_channels;
    char name[KEY_SIZE];
    LCM_TRY(key(name, sizeof name, prefix, "norm1"));
    LCM_TRY(norm_load(&b->norm1, ws, name, in, config->groups, config->eps));
    LCM_TRY(key(name, sizeof name, prefix, "conv1"));
    LCM_TRY(conv2d_load(&b->conv1, backend, ws, name, in, out, 3, 1, 1, true));
    if (config->temb_channels > 0) {
        LCM_TRY(key(name, sizeof name, prefix, "time_emb_proj"));
        LCM_TRY(linear_load_rows(&b->time_emb_proj, backend, ws, name, config->temb_channels, out,
                                 true, 1));
    }
    LCM_TRY(key(name, sizeof name, prefix, "norm2"));
    LCM_TRY(norm_load(&b->norm2, ws, name, out, config->groups, config->eps));
    LCM_TRY(key(name, sizeof name, prefix, "conv2"));
    LCM_TRY(conv2d_load(&b->conv2, backend, ws, name, out, out, 3, 1, 1, true));
    if (in != out) {
        LCM_TRY(key(name, sizeof name, prefix, "conv_shortcut"));
        LCM_TRY(conv2d_load(&b->conv_shortcut, backend, ws, name, in, out, 1, 1, 0, true));
    }
    return LCM_OK;
}

void resnet_block_free(resnet_block *b) {
    norm_free(&b->norm1);
    norm_free(&b->norm2);
    conv2d_free(&b->conv1);
    conv2d_free(&b->conv2);
    linear_free(&b->time_emb_proj);
    conv2d_free(&b->conv_shortcut);
}

tensor *resnet_block_forward(const resnet_block *b, tensor *x, const tensor *temb) {
    if (!x || (linear_present(&b->time_emb_proj) && !temb)) {
        tensor_free(x);
        return NULL;
    }
    tensor *h, *skip;
    if (conv2d_present(&b->conv_shortcut)) {
        // The shortcut first: x is then no longer needed, and norm1 overwrites it in place. At the
        // VAE decoder's first 512x512 block (256 -> 128 channels) that saves a 256 MiB tensor at
        // the decode's peak.
        skip = conv2d_forward(&b->conv_shortcut, x);
        h = group_norm_silu_consume(&b->norm1, x);
        if (!skip) tensor_replace(&h, NULL);
    } else {
        skip = x; // added inside conv2
        h = group_norm_silu(&b->norm1, x);
    }
    tensor_replace(&h, conv2d_forward(&b->conv1, h));
    if (linear_present(&b->time_emb_proj) && h) {
        // [N, temb] -> [N, out], added to every pixel of its channel
        tensor *t = tensor_copy(temb);
        silu_inplace(t, b->kernels);
        tensor_replace(&t, linear_forward(&b->time_emb_proj, t));
        if (!add_channel_bias_inplace(h, t)) tensor_replace(&h, NULL);
        tensor_free(t);
    }
    h = group_norm_silu_consume(&b->norm2, h);
    // conv2(h) + skip, the addition inside the convolution
    if (h) tensor_replace(&h, conv2d_forward_fused(&b->conv2, h, &(conv2d_fusion){.residual = skip}));
    tensor_free(skip);
    // diffusers divides; 1.0 (every unet/vae resnet but a scaled mid block) is skipped as exact.
    if (b->config.output_scale_factor != 1.0f) scale_inplace(h, 1.0f / b->config.output_scale_factor);
    return h;
}

// ---- Attention -------------------------------------------------------------------------------

// Whether `lcm quantize` made any of the layer's projections an 8-bit linear (its input
// parameters are in the weights).
static bool attention_projections_are_8bit(const attention_layer *a) {
    const linear *projections[] = {&a->to_q, &a->to_k, &a->to_v, &a->to_out};
    for (int i = 0; i < 4; i++)
        if (projections[i]->quant && projections[i]->quant->quantize_input) return true;
    return false;
}

// The attention of an 8-bit model (issue 19: its Q·Kᵀ and P·V "stay bf16/fp32", the projections
// being int8 linears) computes in bf16 wherever the flash kernel's AVX512-BF16 path runs, and in
// fp32 elsewhere, whatever precision the pipeline was opened with. A rule on the CPU's
// instructions, not a measurement as for bf16 models (backend_attention_precision): an int8
// model's image may then differ between CPUs with and without AVX512-BF16, but never between two
// runs, thread counts or int8 kernels on one CPU. Reference kernels keep fp32 (they define it).
static lcm_precision attention_precision_8bit(const ops_backend *backend) {
    if (backend->kernels == KERNELS_REFERENCE || !attention_flash_available(LCM_PRECISION_BF16))
        return LCM_PRECISION_FP32;
    return LCM_PRECISION_BF16;
}

lcm_status attention_layer_load(attention_layer *a, const ops_backend *backend,
                                const weight_set *ws, const char *prefix,
                                int query_dim, int context_dim, int heads, int head_dim,
                                bool qkv_bias, int64_t context_rows) {
    *a = (attention_layer){.heads = heads};
    a->precision = backend_attention_precision(backend);
    int inner = heads * head_dim;
    char name[KEY_SIZE];
    LCM_TRY(key(name, sizeof name, prefix, "to_q"));
    LCM_TRY(linear_load(&a->to_q, backend, ws, name, query_dim, inner, qkv_bias));
    LCM_TRY(key(name, sizeof name, prefix, "to_k"));
    LCM_TRY(linear_load_rows(&a->to_k, backend, ws, name, context_dim, inner, qkv_bias,
                             context_rows));
    LCM_TRY(key(name, sizeof name, prefix, "to_v"));
    LCM_TRY(linear_load_rows(&a->to_v, backend, ws, name, context_dim, inner, qkv_bias,
                             context_rows));
    LCM_TRY(key(name, sizeof name, prefix, "to_out.0"));
    LCM_TRY(linear_load(&a->to_out, backend, ws, name, inner, query_dim, true));
    if (attention_projections_are_8bit(a)) a->precision = attention_precision_8bit(backend);
    return LCM_OK;
}

void attention_layer_free(attention_layer *a) {
    linear_free(&a->to_q);
    linear_free(&a->to_k);
    linear_free(&a->to_v);
    linear_free(&a->to_out);
}

tensor *attention_layer_forward(const attention_layer *a, const tensor *x, const tensor *context) {
    if (!x) return NULL;
    if (!context) context = x;
    tensor *q = linear_forward(&a->to_q, x);       // [B, N, inner]
    tensor *k = linear_forward(&a->to_k, context); // [B, M, inner]
    tensor *v = linear_forward(&a->to_v, context); // [B, M, inner]
    tensor *o = attention_ex(q, k, v, a->heads, false, a->precision);
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
    tensor_replace(&o, linear_forward(&a->to_out, o)); // [B, N, query_dim]
    return o;
}

// ---- BasicTransformerBlock -------------------------------------------------------------------

lcm_status basic_transformer_block_load(basic_transformer_block *b, const ops_backend *backend,
                                        const weight_set *ws,
                                        const char *prefix, int dim, int heads, int head_dim,
                                        int cross_attention_dim, float norm_eps,
                                        int64_t context_rows) {
    *b = (basic_transformer_block){.kernels = backend->kernels};
    int ff_inner = 4 * dim;
    char name[KEY_SIZE];
    LCM_TRY(key(name, sizeof name, prefix, "norm1"));
    LCM_TRY(norm_load(&b->norm1, ws, name, dim, 1, norm_eps));
    LCM_TRY(key(name, sizeof name, prefix, "attn1"));
    LCM_TRY(attention_layer_load(&b->attn1, backend, ws, name, dim, dim, heads, head_dim, false,
                                 0));
    LCM_TRY(key(name, sizeof name, prefix, "norm2"));
    LCM_TRY(norm_load(&b->norm2, ws, name, dim, 1, norm_eps));
    LCM_TRY(key(name, sizeof name, prefix, "attn2"));
    LCM_TRY(attention_layer_load(&b->attn2, backend, ws, name, dim, cross_attention_dim, heads,
                                 head_dim, false, context_rows));
    LCM_TRY(key(name, sizeof name, prefix, "norm3"));
    LCM_TRY(norm_load(&b->norm3, ws, name, dim, 1, norm_eps));
    LCM_TRY(key(name, sizeof name, prefix, "ff.net.0.proj"));
    LCM_TRY(linear_load(&b->ff_geglu, backend, ws, name, dim, 2 * ff_inner, true));
    LCM_TRY(key(name, sizeof name, prefix, "ff.net.2"));
    LCM_TRY(linear_load(&b->ff_out, backend, ws, name, ff_inner, dim, true));
    return LCM_OK;
}

void basic_transformer_block_free(basic_transformer_block *b) {
    norm_free(&b->norm1);
    norm_free(&b->norm2);
    norm_free(&b->norm3);
    attention_layer_free(&b->attn1);
    attention_layer_free(&b->attn2);
    linear_free(&b->ff_geglu);
    linear_free(&b->ff_out);
}

tensor *basic_transformer_block_forward(const basic_transformer_block *b, const tensor *x,
                                        const tensor *context) {
    if (!x || !context) return NULL;
    tensor *h = tensor_copy(x);

    tensor *n = layer_norm(&b->norm1, h);
    h = add_consume(h, attention_layer_forward(&b->attn1, n, NULL));
    tensor_free(n);

    n = layer_norm(&b->norm2, h);
    h = add_consume(h, attention_layer_forward(&b->attn2, n, context));
    tensor_free(n);

    n = layer_norm(&b->norm3, h);
    tensor_replace(&n, linear_forward(&b->ff_geglu, n)); // [B, N, 8*dim]
    tensor_replace(&n, geglu(n, b->kernels));             // [B, N, 4*dim]
    tensor_replace(&n, linear_forward(&b->ff_out, n));    // [B, N, dim]
    return add_consume(h, n);
}

// ---- Transformer2DModel ----------------------------------------------------------------------

lcm_status transformer_2d_load(transformer_2d *t, const ops_backend *backend, const weight_set *ws,
                               const char *prefix, const transformer_2d_config *config) {
    *t = (transformer_2d){.config = *config, .kernels = backend->kernels};
    int channels = config->channels, inner = config->heads * config->head_dim;
    char name[KEY_SIZE];
    LCM_TRY(key(name, sizeof name, prefix, "norm"));
    LCM_TRY(norm_load(&t->norm, ws, name, channels, config->groups, 1e-6f));
    LCM_TRY(key(name, sizeof name, prefix, "proj_in"));
    LCM_TRY(config->use_linear_projection
                ? linear_load(&t->proj_in, backend, ws, name, channels, inner, true)
                : linear_load_from_conv1x1(&t->proj_in, backend, ws, name, channels, inner, 0));
    t->blocks = calloc((size_t)config->depth, sizeof *t->blocks);
    if (!t->blocks) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", prefix);
    for (int i = 0; i < config->depth; i++) {
        char block[KEY_SIZE];
        if (snprintf(block, sizeof block, "%s.transformer_blocks.%d", prefix, i) >= (int)sizeof block)
            return lcm_fail(LCM_ERR_INTERNAL, "weight name too long: %s", prefix);
        // LayerNorm eps: diffusers' default 1e-5; the unet blocks never override it.
        LCM_TRY(basic_transformer_block_load(&t->blocks[i], backend, ws, block, inner,
                                             config->heads,
                                             config->head_dim, config->cross_attention_dim, 1e-5f,
                                             config->context_tokens));
    }
    LCM_TRY(key(name, sizeof name, prefix, "proj_out"));
    LCM_TRY(config->use_linear_projection
                ? linear_load(&t->proj_out, backend, ws, name, inner, channels, true)
                : linear_load_from_conv1x1(&t->proj_out, backend, ws, name, inner, channels, 0));
    return LCM_OK;
}

void transformer_2d_free(transformer_2d *t) {
    norm_free(&t->norm);
    linear_free(&t->proj_in);
    linear_free(&t->proj_out);
    if (t->blocks)
        for (int i = 0; i < t->config.depth; i++) basic_transformer_block_free(&t->blocks[i]);
    free(t->blocks);
    t->blocks = NULL;
}

tensor *transformer_2d_forward(const transformer_2d *t, const tensor *x, const tensor *context) {
    if (!x || !context) return NULL;
    int64_t height = x->shape[2], width = x->shape[3];
    // A 1x1 conv on NCHW and a linear layer on the [N, H*W, C] tokens are the same map, so both
    // projection styles run as linear layers on tokens.
    tensor *h = group_norm(&t->norm, x);
    tensor_replace(&h, nchw_to_tokens(h));                // [N, H*W, C]
    tensor_replace(&h, linear_forward(&t->proj_in, h));   // [N, H*W, inner]
    for (int i = 0; i < t->config.depth; i++)
        tensor_replace(&h, basic_transformer_block_forward(&t->blocks[i], h, context));
    tensor_replace(&h, linear_forward(&t->proj_out, h));  // [N, H*W, C]
    tensor_replace(&h, tokens_to_nchw(h, height, width, t->kernels)); // [N, C, H, W]
    // + x, added where h already is (no copy of x)
    if (h && !add_inplace(h, x)) tensor_replace(&h, NULL);
    return h;
}

// ---- Downsample2D / Upsample2D ---------------------------------------------------------------

lcm_status downsample_load(downsample *d, const ops_backend *backend, const weight_set *ws,
                           const char *prefix, int in_channels, int out_channels, int padding) {
    *d = (downsample){.pad_bottom_right = padding == 0};
    if (padding != 0 && padding != 1)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: downsample padding %d (supported: 0, 1)", prefix,
                        padding);
    char name[KEY_SIZE];
    LCM_TRY(key(name, sizeof name, prefix, "conv"));
    return conv2d_load(&d->conv, backend, ws, name, in_channels, out_channels, 3, 2, padding, true);
}

void downsample_free(downsample *d) { conv2d_free(&d->conv); }

tensor *downsample_forward(const downsample *d, const tensor *x) {
    if (!d->pad_bottom_right) return conv2d_forward(&d->conv, x);
    tensor *padded = pad2d(x, 0, 1, 0, 1);
    tensor *y = conv2d_forward(&d->conv, padded);
    tensor_free(padded);
    return y;
}

lcm_status upsample_load(upsample *u, const ops_backend *backend, const weight_set *ws,
                         const char *prefix, int in_channels, int out_channels) {
    *u = (upsample){0};
    char name[KEY_SIZE];
    LCM_TRY(key(name, sizeof name, prefix, "conv"));
    return conv2d_load(&u->conv, backend, ws, name, in_channels, out_channels, 3, 1, 1, true);
}

void upsample_free(upsample *u) { conv2d_free(&u->conv); }

tensor *upsample_forward(const upsample *u, const tensor *x, int64_t out_h, int64_t out_w) {
    if (x && out_h == 2 * x->shape[2] && out_w == 2 * x->shape[3])
        return conv2d_forward_fused(&u->conv, x, &(conv2d_fusion){.upsample_input = true});
    tensor *h = upsample_nearest(x, out_h, out_w);
    tensor_replace(&h, conv2d_forward(&u->conv, h));
    return h;
}

// ---- Timestep embedding ----------------------------------------------------------------------

tensor *timestep_features(float timestep, int64_t batch, int dim, bool flip_sin_to_cos,
                          float downscale_freq_shift) {
    int half = dim / 2;
    tensor *out = tensor_new2(batch, dim);
    if (!out) return NULL;
    float *row = out->data;
    // -math.log(10000) * arange(half) / (half - shift), each step rounded to float32 like torch.
    const float minus_log_period = (float)-log(10000.0);
    for (int i = 0; i < half; i++) {
        float exponent = minus_log_period * (float)i;
        exponent = exponent / ((float)half - downscale_freq_shift);
        float angle = timestep * expf(exponent);
        float sine = sinf(angle), cosine = cosf(angle);
        row[i] = flip_sin_to_cos ? cosine : sine;
        row[half + i] = flip_sin_to_cos ? sine : cosine;
    }
    if (dim % 2) row[dim - 1] = 0.0f;
    for (int64_t b = 1; b < batch; b++)
        for (int i = 0; i < dim; i++) out->data[b * dim + i] = row[i];
    return out;
}

lcm_status time_embedding_load(time_embedding *e, const ops_backend *backend, const weight_set *ws,
                               const char *prefix,
                               int in_channels, int time_embed_dim, int cond_proj_dim) {
    *e = (time_embedding){.kernels = backend->kernels};
    char name[KEY_SIZE];
    if (cond_proj_dim > 0) {
        LCM_TRY(key(name, sizeof name, prefix, "cond_proj"));
        LCM_TRY(linear_load_rows(&e->cond_proj, backend, ws, name, cond_proj_dim, in_channels,
                                 false, 1));
    }
    LCM_TRY(key(name, sizeof name, prefix, "linear_1"));
    LCM_TRY(linear_load_rows(&e->linear_1, backend, ws, name, in_channels, time_embed_dim, true,
                             1));
    LCM_TRY(key(name, sizeof name, prefix, "linear_2"));
    LCM_TRY(linear_load_rows(&e->linear_2, backend, ws, name, time_embed_dim, time_embed_dim, true,
                             1));
    return LCM_OK;
}

void time_embedding_free(time_embedding *e) {
    linear_free(&e->linear_1);
    linear_free(&e->linear_2);
    linear_free(&e->cond_proj);
}

tensor *time_embedding_forward(const time_embedding *e, const tensor *features,
                               const tensor *condition) {
    if (!features) return NULL;
    tensor *h = tensor_copy(features);
    if (condition) h = add_consume(h, linear_forward(&e->cond_proj, condition));
    tensor_replace(&h, linear_forward(&e->linear_1, h));
    silu_inplace(h, e->kernels);
    tensor_replace(&h, linear_forward(&e->linear_2, h));
    return h;
}
