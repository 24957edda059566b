// AutoencoderKL, the Stable Diffusion VAE, following diffusers v0.26.3 (autoencoder_kl.py, vae.py,
// unet_2d_blocks.py, resnet.py, attention_processor.py).
//
//   Encoder: conv_in -> down blocks (resnets, then a stride-2 conv except in the last block)
//            -> mid block (resnet, attention, resnet) -> GroupNorm+SiLU -> conv_out (2*L channels)
//   Decoder: conv_in -> mid block -> up blocks (resnets, then nearest x2 + conv except in the last)
//            -> GroupNorm+SiLU -> conv_out
//
// Every GroupNorm in the VAE uses eps 1e-6 and config.norm_num_groups groups. There is no time
// embedding, and every output_scale_factor / rescale_output_factor is 1, so the residual additions
// are plain sums. The config is read in vae_config.c, images converted in vae_image.c.
#include "models/vae.h"
#include "models/blocks.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/json_config.h"
#include "ops/backend.h"
#include "ops/ops.h"

#define VAE_NORM_EPS 1e-6f
#define NAME_SIZE 256

// Tensor and module names are built from short constant parts, so NAME_SIZE always suffices.
LCM_PRINTF(2, 3) static void format_name(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, NAME_SIZE, fmt, ap);
    va_end(ap);
}

// ---- weights ---------------------------------------------------------------------------------

// diffusers' Attention as the VAE builds it: GroupNorm, then single-head self-attention over the
// H*W tokens with head_dim = channels, then a residual connection.
typedef struct attention_block {
    norm group_norm;
    linear to_q, to_k, to_v, to_out;
    kernel_set kernels; // the set its layers were loaded for: the layout tokens go back to
} attention_block;

// UNetMidBlock2D with one layer: resnet, (attention), resnet.
typedef struct mid_block {
    resnet_block resnet_in, resnet_out;
    bool has_attention;
    attention_block attn;
} mid_block;

// DownEncoderBlock2D / UpDecoderBlock2D: `count` resnets and an optional resampling conv.
typedef struct sampling_block {
    int count;
    resnet_block *resnets;
    bool has_resample;
    conv2d resample_conv; // downsamplers.0.conv (stride 2) or upsamplers.0.conv
} sampling_block;

typedef struct vae_encoder {
    bool loaded; // false while dropped by vae_load_encoder_on_demand
    conv2d conv_in;
    sampling_block down[VAE_MAX_BLOCKS];
    mid_block mid;
    norm norm_out;
    conv2d conv_out;
} vae_encoder;

typedef struct vae_decoder {
    conv2d conv_in;
    mid_block mid;
    sampling_block up[VAE_MAX_BLOCKS];
    norm norm_out;
    conv2d conv_out;
} vae_decoder;

struct vae_model {
    vae_config config;
    // Owned; a pointer so that the first vae_encode can load it into a model it only reads
    // (vae_load_encoder_on_demand).
    vae_encoder *encoder;
    int64_t encoder_params;
    // vae_load_encoder_on_demand: the open weights, and a copy of the backend the rest of the model
    // was loaded with, to load the encoder with the same kernels and precision whoever calls
    // vae_encode (a copy: the loader's backend may be gone by then).
    weight_set *weights;
    ops_backend backend;
    conv2d quant_conv; // 1x1, 2L -> 2L
    vae_decoder decoder;
    conv2d post_quant_conv; // 1x1, L -> L
};

// ---- loading ---------------------------------------------------------------------------------

static lcm_status load_conv(const ops_backend *backend, conv2d *c, const weight_set *ws,
                            const char *prefix, const char *name,
                            int in, int out, int kernel, int stride, int padding) {
    char full[NAME_SIZE];
    format_name(full, "%s.%s", prefix, name);
    return conv2d_load(c, backend, ws, full, in, out, kernel, stride, padding, true);
}

static lcm_status load_norm(norm *n, const weight_set *ws, const char *prefix, const char *name,
                            int channels, int groups) {
    char full[NAME_SIZE];
    format_name(full, "%s.%s", prefix, name);
    return norm_load(n, ws, full, channels, groups, VAE_NORM_EPS);
}

// The VAE's ResnetBlock2D: no time embedding, GroupNorm eps 1e-6, output scale 1.
static lcm_status load_resnet(const ops_backend *backend, resnet_block *r, const weight_set *ws,
                              const char *prefix, int in, int out, int groups) {
    const resnet_block_config config = {.in_channels = in, .out_channels = out, .groups = groups,
                                        .eps = VAE_NORM_EPS, .output_scale_factor = 1.0f};
    return resnet_block_load(r, backend, ws, prefix, &config);
}

// One attention projection, under its current name or its pre-0.14 one, stored either as a linear
// weight [C, C] or as a 1x1 conv weight [C, C, 1, 1].
static lcm_status load_projection(const ops_backend *backend, linear *l, const weight_set *ws,
                                  const char *prefix,
                                  const char *name, const char *old_name, int channels) {
    char full[NAME_SIZE], weight[NAME_SIZE];
    format_name(full, "%s.%s", prefix, name);
    format_name(weight, "%s.weight", full);
    const st_tensor *t = weight_set_find(ws, weight, NULL);
    if (!t) {
        char old_full[NAME_SIZE], old_weight[NAME_SIZE];
        format_name(old_full, "%s.%s", prefix, old_name);
        format_name(old_weight, "%s.weight", old_full);
        const st_tensor *old = weight_set_find(ws, old_weight, NULL);
        // Neither name present: load the current one, whose failure names the missing tensor (and
        // which synthetic weights, having no file to look in, answer).
        if (!old) return linear_load(l, backend, ws, full, channels, channels, true);
        memcpy(full, old_full, sizeof full);
        t = old;
    }
    if (t->ndim == 4) return linear_load_from_conv1x1(l, backend, ws, full, channels, channels, 0);
    return linear_load(l, backend, ws, full, channels, channels, true);
}

static lcm_status load_attention(const ops_backend *backend, attention_block *a,
                                 const weight_set *ws, const char *prefix,
                                 int channels, int groups) {
    a->kernels = backend->kernels;
    LCM_TRY(load_norm(&a->group_norm, ws, prefix, "group_norm", channels, groups));
    LCM_TRY(load_projection(backend, &a->to_q, ws, prefix, "to_q", "query", channels));
    LCM_TRY(load_projection(backend, &a->to_k, ws, prefix, "to_k", "key", channels));
    LCM_TRY(load_projection(backend, &a->to_v, ws, prefix, "to_v", "value", channels));
    LCM_TRY(load_projection(backend, &a->to_out, ws, prefix, "to_out.0", "proj_attn", channels));
    return LCM_OK;
}

static void free_attention(attention_block *a) {
    norm_free(&a->group_norm);
    linear_free(&a->to_q);
    linear_free(&a->to_k);
    linear_free(&a->to_v);
    linear_free(&a->to_out);
}

static lcm_status load_mid_block(const ops_backend *backend, mid_block *m, const weight_set *ws,
                                 const char *prefix, const vae_config *cfg) {
    int channels = cfg->block_out_channels[cfg->block_count - 1], groups = cfg->norm_num_groups;
    char name[NAME_SIZE];
    format_name(name, "%s.resnets.0", prefix);
    LCM_TRY(load_resnet(backend, &m->resnet_in, ws, name, channels, channels, groups));
    m->has_attention = cfg->mid_block_add_attention;
    if (m->has_attention) {
        format_name(name, "%s.attentions.0", prefix);
        LCM_TRY(load_attention(backend, &m->attn, ws, name, channels, groups));
    }
    format_name(name, "%s.resnets.1", prefix);
    LCM_TRY(load_resnet(backend, &m->resnet_out, ws, name, channels, channels, groups));
    return LCM_OK;
}

static void free_mid_block(mid_block *m) {
    resnet_block_free(&m->resnet_in);
    free_attention(&m->attn);
    resnet_block_free(&m->resnet_out);
}

// The resnets of a down or up block: the first maps in -> out channels, the rest out -> out.
static lcm_status load_sampling_resnets(const ops_backend *backend, sampling_block *b,
                                        const weight_set *ws, const char *prefix,
                                        int count, int in, int out, int groups) {
    b->resnets = calloc((size_t)count, sizeof *b->resnets);
    if (!b->resnets) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading %s", prefix);
    b->count = count;
    for (int i = 0; i < count; i++) {
        char name[NAME_SIZE];
        format_name(name, "%s.resnets.%d", prefix, i);
        LCM_TRY(load_resnet(backend, &b->resnets[i], ws, name, i == 0 ? in : out, out, groups));
    }
    return LCM_OK;
}

static void free_sampling_block(sampling_block *b) {
    for (int i = 0; i < b->count; i++) resnet_block_free(&b->resnets[i]);
    free(b->resnets);
    conv2d_free(&b->resample_conv);
    b->resnets = NULL;
    b->count = 0;
}

static lcm_status load_encoder(const ops_backend *backend, vae_encoder *e, const weight_set *ws,
                               const vae_config *cfg) {
    const int *ch = cfg->block_out_channels, last = cfg->block_count - 1;
    int groups = cfg->norm_num_groups;
    LCM_TRY(load_conv(backend, &e->conv_in, ws, "encoder", "conv_in", cfg->in_channels, ch[0], 3,
                      1, 1));
    for (int i = 0; i <= last; i++) {
        char prefix[NAME_SIZE];
        format_name(prefix, "encoder.down_blocks.%d", i);
        sampling_block *b = &e->down[i];
        int in = i == 0 ? ch[0] : ch[i - 1];
        LCM_TRY(load_sampling_resnets(backend, b, ws, prefix, cfg->layers_per_block, in, ch[i],
                                      groups));
        b->has_resample = i != last;
        // Downsample2D with padding=0: the input is padded right/bottom before a 3x3 stride-2 conv.
        if (b->has_resample)
            LCM_TRY(load_conv(backend, &b->resample_conv, ws, prefix, "downsamplers.0.conv", ch[i],
                              ch[i], 3, 2, 0));
    }
    LCM_TRY(load_mid_block(backend, &e->mid, ws, "encoder.mid_block", cfg));
    LCM_TRY(load_norm(&e->norm_out, ws, "encoder", "conv_norm_out", ch[last], groups));
    LCM_TRY(load_conv(backend, &e->conv_out, ws, "encoder", "conv_out", ch[last],
                      2 * cfg->latent_channels, 3, 1, 1));
    e->loaded = true;
    return LCM_OK;
}

static void free_encoder(vae_encoder *e) {
    conv2d_free(&e->conv_in);
    for (int i = 0; i < VAE_MAX_BLOCKS; i++) free_sampling_block(&e->down[i]);
    free_mid_block(&e->mid);
    norm_free(&e->norm_out);
    conv2d_free(&e->conv_out);
    e->loaded = false;
}

static int64_t encoder_param_count(const vae_encoder *e, const vae_config *cfg);

static lcm_status load_decoder(const ops_backend *backend, vae_decoder *d, const weight_set *ws,
                               const vae_config *cfg) {
    const int *ch = cfg->block_out_channels, last = cfg->block_count - 1;
    int groups = cfg->norm_num_groups;
    LCM_TRY(
        load_conv(backend, &d->conv_in, ws, "decoder", "conv_in", cfg->latent_channels, ch[last],
                  3, 1, 1));
    LCM_TRY(load_mid_block(backend, &d->mid, ws, "decoder.mid_block", cfg));
    // Up block i works at the channel count of down block (last - i), coming from the previous one.
    for (int i = 0; i <= last; i++) {
        char prefix[NAME_SIZE];
        format_name(prefix, "decoder.up_blocks.%d", i);
        sampling_block *b = &d->up[i];
        int in = ch[i == 0 ? last : last - i + 1], out = ch[last - i];
        LCM_TRY(load_sampling_resnets(backend, b, ws, prefix, cfg->layers_per_block + 1, in, out,
                                      groups));
        b->has_resample = i != last;
        if (b->has_resample) {
            LCM_TRY(load_conv(backend, &b->resample_conv, ws, prefix, "upsamplers.0.conv", out,
                              out, 3, 1, 1));
            LCM_TRY(conv2d_prepare_upsampled(&b->resample_conv)); // only ever run after a 2x upsample
        }
    }
    LCM_TRY(load_norm(&d->norm_out, ws, "decoder", "conv_norm_out", ch[0], groups));
    LCM_TRY(load_conv(backend, &d->conv_out, ws, "decoder", "conv_out", ch[0], cfg->out_channels,
                      3, 1, 1));
    return LCM_OK;
}

static void free_decoder(vae_decoder *d) {
    conv2d_free(&d->conv_in);
    free_mid_block(&d->mid);
    for (int i = 0; i < VAE_MAX_BLOCKS; i++) free_sampling_block(&d->up[i]);
    norm_free(&d->norm_out);
    conv2d_free(&d->conv_out);
}

static lcm_status load_weights(const ops_backend *backend, vae_model *m, const weight_set *ws,
                               bool encoder_on_demand) {
    const vae_config *cfg = &m->config;
    int latent2 = 2 * cfg->latent_channels;
    // Read and checked now in any case, so that a broken file fails here and not in a request.
    LCM_TRY(load_encoder(backend, m->encoder, ws, cfg));
    m->encoder_params = encoder_param_count(m->encoder, cfg);
    if (encoder_on_demand) free_encoder(m->encoder); // before the decoder, which can reuse the memory
    if (cfg->use_quant_conv)
        LCM_TRY(conv2d_load(&m->quant_conv, backend, ws, "quant_conv", latent2, latent2, 1, 1, 0,
                            true));
    if (cfg->use_post_quant_conv)
        LCM_TRY(conv2d_load(&m->post_quant_conv, backend, ws, "post_quant_conv",
                            cfg->latent_channels, cfg->latent_channels, 1, 1, 0, true));
    LCM_TRY(load_decoder(backend, &m->decoder, ws, cfg));
    return LCM_OK;
}

static lcm_status parse_any_config(const json_config *json, void *config) {
    return vae_config_parse(json, config);
}

static lcm_status load_vae(const ops_backend *backend, const model_folder *folder,
                           const char *component, bool encoder_on_demand, vae_model **out) {
    *out = NULL;
    if (!component || !*component) component = ".";
    vae_config config = {0};
    LCM_TRY(model_folder_parse_config(folder, component, parse_any_config, &config));
    vae_model *m = calloc(1, sizeof *m);
    if (m && !(m->encoder = calloc(1, sizeof *m->encoder))) {
        free(m);
        m = NULL;
    }
    if (!m) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading the VAE");
    m->config = config;
    weight_set *ws = NULL;
    lcm_status st = model_folder_open_weights(folder, component, "diffusion_pytorch_model", &ws);
    if (st == LCM_OK) st = load_weights(backend, m, ws, encoder_on_demand);
    if (st == LCM_OK && encoder_on_demand) {
        m->weights = ws; // its mapping holds nothing resident (loads drop the pages they read)
        ws = NULL;
        m->backend = *backend;
    }
    weight_set_close(ws);
    if (st != LCM_OK) {
        vae_free(m);
        return lcm_fail_context(st, "loading the VAE (%s/%s): ", folder->root, component);
    }
    *out = m;
    return LCM_OK;
}

lcm_status vae_load(const ops_backend *backend, const model_folder *folder, const char *component,
                    vae_model **out) {
    return load_vae(backend, folder, component, false, out);
}

lcm_status vae_load_encoder_on_demand(const ops_backend *backend, const model_folder *folder,
                                      const char *component, vae_model **out) {
    return load_vae(backend, folder, component, true, out);
}

// The encoder of a model from vae_load_encoder_on_demand, read again from its weights on first use,
// with the kernels and precision the rest of the model was loaded with.
static lcm_status ensure_encoder(const vae_model *m) {
    if (m->encoder->loaded) return LCM_OK;
    if (!m->weights) return lcm_fail(LCM_ERR_INTERNAL, "VAE encode: the encoder is not loaded");
    lcm_status st = load_encoder(&m->backend, m->encoder, m->weights, &m->config);
    if (st != LCM_OK) {
        free_encoder(m->encoder);
        return lcm_fail_context(st, "loading the VAE encoder (%s): ", weight_set_source(m->weights));
    }
    return LCM_OK;
}

void vae_free(vae_model *m) {
    if (!m) return;
    if (m->encoder) free_encoder(m->encoder);
    free(m->encoder);
    conv2d_free(&m->quant_conv);
    free_decoder(&m->decoder);
    conv2d_free(&m->post_quant_conv);
    weight_set_close(m->weights);
    free(m);
}

const vae_config *vae_get_config(const vae_model *m) { return &m->config; }

static int64_t norm_params(const norm *n) { return n->weight ? 2 * (int64_t)n->channels : 0; }

static int64_t resnet_params(const resnet_block *r) {
    return norm_params(&r->norm1) + norm_params(&r->norm2) + conv2d_params(&r->conv1) +
           conv2d_params(&r->conv2) + (conv2d_present(&r->conv_shortcut) ? conv2d_params(&r->conv_shortcut) : 0);
}

static int64_t mid_block_params(const mid_block *m) {
    int64_t n = resnet_params(&m->resnet_in) + resnet_params(&m->resnet_out);
    if (m->has_attention)
        n += norm_params(&m->attn.group_norm) + linear_params(&m->attn.to_q) +
             linear_params(&m->attn.to_k) + linear_params(&m->attn.to_v) +
             linear_params(&m->attn.to_out);
    return n;
}

static int64_t sampling_block_params(const sampling_block *b) {
    int64_t n = b->has_resample ? conv2d_params(&b->resample_conv) : 0;
    for (int i = 0; i < b->count; i++) n += resnet_params(&b->resnets[i]);
    return n;
}

static int64_t encoder_param_count(const vae_encoder *e, const vae_config *cfg) {
    int64_t n = conv2d_params(&e->conv_in) + mid_block_params(&e->mid) + norm_params(&e->norm_out) +
                conv2d_params(&e->conv_out);
    for (int i = 0; i < cfg->block_count; i++) n += sampling_block_params(&e->down[i]);
    return n;
}

int64_t vae_param_count(const vae_model *m) {
    const vae_decoder *d = &m->decoder;
    int64_t n = m->encoder_params + conv2d_params(&d->conv_in) + mid_block_params(&d->mid) +
                norm_params(&d->norm_out) + conv2d_params(&d->conv_out);
    for (int i = 0; i < m->config.block_count; i++) n += sampling_block_params(&d->up[i]);
    if (m->config.use_quant_conv) n += conv2d_params(&m->quant_conv);
    if (m->config.use_post_quant_conv) n += conv2d_params(&m->post_quant_conv);
    return n;
}

// ---- which kernels the decoder runs ---------------------------------------------------------------

typedef struct family_count {
    const struct kernel_family *family;
    int on_family, layers;
} family_count;

static void count_layer(family_count *c, const layer_kernel *impl) {
    c->layers++;
    if (impl->family == c->family) c->on_family++;
}

static void count_resnet(family_count *c, const resnet_block *r) {
    count_layer(c, &r->conv1.impl);
    count_layer(c, &r->conv2.impl);
    if (conv2d_present(&r->conv_shortcut)) count_layer(c, &r->conv_shortcut.impl);
}

int vae_decoder_layers_on(const vae_model *m, const struct kernel_family *family, int *layers) {
    family_count c = {.family = family};
    const vae_decoder *d = &m->decoder;
    if (m->config.use_post_quant_conv) count_layer(&c, &m->post_quant_conv.impl);
    count_layer(&c, &d->conv_in.impl);
    count_resnet(&c, &d->mid.resnet_in);
    if (d->mid.has_attention) {
        count_layer(&c, &d->mid.attn.to_q.impl);
        count_layer(&c, &d->mid.attn.to_k.impl);
        count_layer(&c, &d->mid.attn.to_v.impl);
        count_layer(&c, &d->mid.attn.to_out.impl);
    }
    count_resnet(&c, &d->mid.resnet_out);
    for (int i = 0; i < m->config.block_count; i++) {
        const sampling_block *b = &d->up[i];
        for (int j = 0; j < b->count; j++) count_resnet(&c, &b->resnets[j]);
        if (b->has_resample) count_layer(&c, &b->resample_conv.impl);
    }
    count_layer(&c, &d->conv_out.impl);
    *layers = c.layers;
    return c.on_family;
}

// ---- forward pass ----------------------------------------------------------------------------

static void tap_value(vae_tap_fn tap, void *user, const char *name, const tensor *value) {
    if (tap && value) tap(user, name, value);
}

// x + residual, consuming x; NULL (x freed) when either is NULL.
static tensor *add_residual(tensor *x, const tensor *residual) {
    if (!add_inplace(x, residual)) {
        tensor_free(x);
        return NULL;
    }
    return x;
}

// [N, Cin, H, W] -> [N, Cout, H, W]
// [N, C, H, W] -> [N, C, H, W]: x + to_out(attention(q, k, v)) over the H*W positions.
static tensor *attention_block_forward(const attention_block *a, const tensor *x) {
    if (!x) return NULL;
    int64_t h = x->shape[2], w = x->shape[3];
    tensor *normed = group_norm(&a->group_norm, x);
    tensor *tokens = nchw_to_tokens(normed); // [N, H*W, C]
    tensor_free(normed);
    tensor *q = linear_forward(&a->to_q, tokens);
    tensor *k = linear_forward(&a->to_k, tokens);
    tensor *v = linear_forward(&a->to_v, tokens);
    tensor *attended = attention(q, k, v, 1, false);
    tensor *out = linear_forward(&a->to_out, attended);
    tensor_free(attended);
    tensor_free(v);
    tensor_free(k);
    tensor_free(q);
    tensor_free(tokens);
    tensor *y = tokens_to_nchw(out, h, w, a->kernels);
    tensor_free(out);
    return add_residual(y, x);
}

// Consumes x, like the other blocks below.
static tensor *mid_block_forward(const mid_block *m, tensor *x) {
    tensor *h = resnet_block_forward(&m->resnet_in, x, NULL);
    if (m->has_attention) tensor_replace(&h, attention_block_forward(&m->attn, h));
    return resnet_block_forward(&m->resnet_out, h, NULL);
}

// DownEncoderBlock2D: [N, Cin, H, W] -> [N, Cout, H/2, W/2] (no halving in the last block).
static tensor *down_block_forward(const sampling_block *b, tensor *x) {
    tensor *h = x;
    for (int i = 0; i < b->count; i++) h = resnet_block_forward(&b->resnets[i], h, NULL);
    if (b->has_resample) {
        tensor_replace(&h, pad2d(h, 0, 1, 0, 1));
        tensor_replace(&h, conv2d_forward(&b->resample_conv, h));
    }
    return h;
}

// UpDecoderBlock2D: [N, Cin, H, W] -> [N, Cout, 2H, 2W] (no doubling in the last block).
static tensor *up_block_forward(const sampling_block *b, tensor *x) {
    tensor *h = x;
    for (int i = 0; i < b->count; i++) h = resnet_block_forward(&b->resnets[i], h, NULL);
    if (b->has_resample) {
        // [N,C,H,W] -> [N,C,2H,2W], the doubled image read inside the convolution
        if (h) tensor_replace(&h, conv2d_forward_fused(&b->resample_conv, h, &(conv2d_fusion){.upsample_input = true}));
    }
    return h;
}

// [N, in_channels, H, W] -> [N, 2L, H/f, W/f]
static tensor *encoder_forward(const vae_model *m, const tensor *image, vae_tap_fn tap,
                               void *user) {
    const vae_encoder *e = m->encoder;
    tensor *h = conv2d_forward(&e->conv_in, image);
    tap_value(tap, user, "encoder.conv_in", h);
    for (int i = 0; i < m->config.block_count; i++) {
        h = down_block_forward(&e->down[i], h);
        char name[NAME_SIZE];
        format_name(name, "encoder.down_blocks.%d", i);
        tap_value(tap, user, name, h);
    }
    h = mid_block_forward(&e->mid, h);
    tap_value(tap, user, "encoder.mid_block", h);
    tensor_replace(&h, group_norm_silu(&e->norm_out, h));
    tensor_replace(&h, conv2d_forward(&e->conv_out, h));
    tap_value(tap, user, "encoder.conv_out", h);
    return h;
}

// [N, L, h, w] -> [N, out_channels, h*f, w*f]
static tensor *decoder_forward(const vae_model *m, const tensor *z, vae_tap_fn tap, void *user) {
    const vae_decoder *d = &m->decoder;
    tensor *h = conv2d_forward(&d->conv_in, z);
    tap_value(tap, user, "decoder.conv_in", h);
    h = mid_block_forward(&d->mid, h);
    tap_value(tap, user, "decoder.mid_block", h);
    for (int i = 0; i < m->config.block_count; i++) {
        h = up_block_forward(&d->up[i], h);
        char name[NAME_SIZE];
        format_name(name, "decoder.up_blocks.%d", i);
        tap_value(tap, user, name, h);
    }
    tensor_replace(&h, group_norm_silu(&d->norm_out, h));
    tensor_replace(&h, conv2d_forward(&d->conv_out, h));
    tap_value(tap, user, "decoder.conv_out", h);
    return h;
}

static lcm_status check_input(const char *what, const tensor *x, int channels, int64_t min_side) {
    if (!x || x->ndim != 4 || x->shape[0] < 1 || x->shape[1] != channels ||
        x->shape[2] < min_side || x->shape[3] < min_side)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "VAE %s: expected a [N, %d, H, W] tensor with H, W >= %lld", what, channels,
                        (long long)min_side);
    return LCM_OK;
}

// A forward pass returns NULL with the message and its status already set. Inputs are validated
// before it starts, so what remains is running out of memory (or a size too large to allocate).
static lcm_status forward_failure(const char *what) {
    lcm_status code = lcm_last_status() != LCM_OK ? lcm_last_status() : LCM_ERR_INTERNAL;
    return lcm_fail_context(code, "VAE %s: ", what);
}

lcm_status vae_decode_tapped(const vae_model *m, const tensor *latents, vae_tap_fn tap, void *user,
                             tensor **image) {
    *image = NULL;
    LCM_TRY(check_input("decode", latents, m->config.latent_channels, 1));
    tensor *z = m->config.use_post_quant_conv ? conv2d_forward(&m->post_quant_conv, latents)
                                              : tensor_copy(latents);
    tap_value(tap, user, "post_quant_conv", z);
    tensor *out = decoder_forward(m, z, tap, user);
    tensor_free(z);
    if (!out) return forward_failure("decode");
    *image = out;
    return LCM_OK;
}

lcm_status vae_decode(const vae_model *m, const tensor *latents, tensor **image) {
    return vae_decode_tapped(m, latents, NULL, NULL, image);
}

// Channels [first, first + count) of x [N, C, H, W].
static tensor *channel_slice(const tensor *x, int first, int count) {
    if (!x) return NULL;
    int64_t n = x->shape[0], c = x->shape[1], hw = x->shape[2] * x->shape[3];
    tensor *y = tensor_new4(n, count, x->shape[2], x->shape[3]);
    if (!y) return NULL;
    if (x->layout == TENSOR_NHWC) {
        y->layout = TENSOR_NHWC;
        for (int64_t p = 0; p < n * hw; p++)
            memcpy(y->data + p * count, x->data + p * c + first, sizeof(float) * (size_t)count);
        return y;
    }
    for (int64_t b = 0; b < n; b++)
        memcpy(y->data + b * count * hw, x->data + (b * c + first) * hw,
               sizeof(float) * (size_t)(count * hw));
    return y;
}

lcm_status vae_encode_tapped(const vae_model *m, const tensor *image, vae_tap_fn tap, void *user,
                             tensor **mean, tensor **logvar) {
    *mean = *logvar = NULL;
    LCM_TRY(check_input("encode", image, m->config.in_channels, m->config.downscale_factor));
    LCM_TRY(ensure_encoder(m));
    tensor *moments = encoder_forward(m, image, tap, user); // [N, 2L, H/f, W/f]
    if (m->config.use_quant_conv) tensor_replace(&moments, conv2d_forward(&m->quant_conv, moments));
    tap_value(tap, user, "quant_conv", moments);
    int latent = m->config.latent_channels;
    tensor *mu = channel_slice(moments, 0, latent);
    tensor *lv = channel_slice(moments, latent, latent);
    tensor_free(moments);
    if (!mu || !lv) {
        tensor_free(mu);
        tensor_free(lv);
        return forward_failure("encode");
    }
    int64_t n = tensor_numel(lv);
    for (int64_t i = 0; i < n; i++) lv->data[i] = fminf(fmaxf(lv->data[i], -30.0f), 20.0f);
    *mean = mu;
    *logvar = lv;
    return LCM_OK;
}

lcm_status vae_encode(const vae_model *m, const tensor *image, tensor **mean, tensor **logvar) {
    return vae_encode_tapped(m, image, NULL, NULL, mean, logvar);
}

tensor *vae_logvar_to_std(const tensor *logvar) {
    tensor *std = tensor_copy(logvar);
    if (!std) return NULL;
    int64_t n = tensor_numel(std);
    for (int64_t i = 0; i < n; i++) std->data[i] = expf(0.5f * std->data[i]);
    return std;
}
