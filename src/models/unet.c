// UNet2DConditionModel: weight loading and the forward pass (its config: unet_config.c). See unet.h
// for the picture; the blocks (ResNet, spatial transformer, samplers, time embedding) live in blocks.c.
//
// Sources followed (diffusers v0.26.3): models/unets/unet_2d_condition.py (config handling,
// forward), models/unets/unet_2d_blocks.py (CrossAttnDownBlock2D, DownBlock2D,
// UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D).
#include "models/unet.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "models/blocks.h"
#include "ops/backend.h"
#include "ops/packed_cache.h"

// ---- the model -------------------------------------------------------------------------------

// Up blocks have one ResNet more than the down block they mirror.
#define UNET_MAX_LAYERS (UNET_MAX_LAYERS_PER_BLOCK + 1)

typedef struct down_block {
    int num_layers;
    bool has_attention, has_downsample;
    resnet_block resnets[UNET_MAX_LAYERS];
    transformer_2d attentions[UNET_MAX_LAYERS]; // used when has_attention
    downsample downsampler;                     // used when has_downsample
} down_block;

// UNetMidBlock2DCrossAttn with diffusers' num_layers = 1: ResNet, transformer, ResNet.
typedef struct mid_block {
    resnet_block resnets[2];
    transformer_2d attention;
} mid_block;

typedef struct up_block {
    int num_layers;
    bool has_attention, has_upsample;
    resnet_block resnets[UNET_MAX_LAYERS];
    transformer_2d attentions[UNET_MAX_LAYERS];
    upsample upsampler;
} up_block;

struct unet_model {
    unet_config config;
    bool encoder_only; // loaded by unet_encoder_load: no up blocks, no conv_out
    time_embedding time_embedding;
    conv2d conv_in;
    down_block down_blocks[UNET_MAX_BLOCKS];
    mid_block mid_block;
    up_block up_blocks[UNET_MAX_BLOCKS];
    norm conv_norm_out;
    conv2d conv_out;
    struct packed_mapping *packed; // the packed-weight cache file the layers borrow from, or NULL
    kernel_set kernels; // the set its layers were loaded for (from the backend), for silu
};

// ---- loading ---------------------------------------------------------------------------------

#define NAME_SIZE 256

static lcm_status name_of(char *buf, const char *fmt, ...) LCM_PRINTF(2, 3);
static lcm_status name_of(char *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, NAME_SIZE, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= NAME_SIZE) return lcm_fail(LCM_ERR_INTERNAL, "weight name too long");
    return LCM_OK;
}

// CLIP's 77 tokens: what the UNet's cross-attention keys and values almost always see.
#define CONTEXT_TOKENS 77

static transformer_2d_config attention_config(const unet_config *cfg, int channels, int block) {
    return (transformer_2d_config){
        .context_tokens = CONTEXT_TOKENS,
        .channels = channels,
        .heads = cfg->attention_heads[block],
        .head_dim = channels / cfg->attention_heads[block],
        .depth = cfg->transformer_layers_per_block[block],
        .groups = cfg->norm_num_groups,
        .cross_attention_dim = cfg->cross_attention_dim,
        .use_linear_projection = cfg->use_linear_projection,
    };
}

static resnet_block_config resnet_config(const unet_config *cfg, int in, int out, float scale) {
    return (resnet_block_config){
        .in_channels = in,
        .out_channels = out,
        .temb_channels = cfg->time_embed_dim,
        .groups = cfg->norm_num_groups,
        .eps = cfg->norm_eps,
        .output_scale_factor = scale,
    };
}

static lcm_status load_down_block(const ops_backend *backend, down_block *b, const weight_set *ws,
                                  const unet_config *cfg, int index) {
    int in = index == 0 ? cfg->block_out_channels[0] : cfg->block_out_channels[index - 1];
    int out = cfg->block_out_channels[index];
    b->num_layers = cfg->layers_per_block[index];
    b->has_attention = cfg->down_block_has_attention[index];
    b->has_downsample = index < cfg->num_blocks - 1;
    char name[NAME_SIZE];
    for (int i = 0; i < b->num_layers; i++) {
        resnet_block_config rc = resnet_config(cfg, i == 0 ? in : out, out, cfg->resnet_out_scale_factor);
        LCM_TRY(name_of(name, "down_blocks.%d.resnets.%d", index, i));
        LCM_TRY(resnet_block_load(&b->resnets[i], backend, ws, name, &rc));
        if (b->has_attention) {
            transformer_2d_config tc = attention_config(cfg, out, index);
            LCM_TRY(name_of(name, "down_blocks.%d.attentions.%d", index, i));
            LCM_TRY(transformer_2d_load(&b->attentions[i], backend, ws, name, &tc));
        }
    }
    if (b->has_downsample) {
        LCM_TRY(name_of(name, "down_blocks.%d.downsamplers.0", index));
        LCM_TRY(downsample_load(&b->downsampler, backend, ws, name, out, out,
                                cfg->downsample_padding));
    }
    return LCM_OK;
}

static lcm_status load_mid_block(const ops_backend *backend, mid_block *b, const weight_set *ws,
                                 const unet_config *cfg) {
    int last = cfg->num_blocks - 1, channels = cfg->block_out_channels[last];
    resnet_block_config rc = resnet_config(cfg, channels, channels, cfg->mid_block_scale_factor);
    transformer_2d_config tc = attention_config(cfg, channels, last);
    LCM_TRY(resnet_block_load(&b->resnets[0], backend, ws, "mid_block.resnets.0", &rc));
    LCM_TRY(transformer_2d_load(&b->attention, backend, ws, "mid_block.attentions.0", &tc));
    LCM_TRY(resnet_block_load(&b->resnets[1], backend, ws, "mid_block.resnets.1", &rc));
    return LCM_OK;
}

// Up block `index` (0 = deepest) mirrors down block `mirror` = num_blocks-1-index: its ResNets
// take the previous up block's output (or the same block's previous ResNet) concatenated with one
// skip connection, whose width is the down path's width at that point.
static lcm_status load_up_block(const ops_backend *backend, up_block *b, const weight_set *ws,
                                const unet_config *cfg, int index) {
    int n = cfg->num_blocks, mirror = n - 1 - index;
    int out = cfg->block_out_channels[mirror];
    int prev_out = cfg->block_out_channels[index == 0 ? n - 1 : mirror + 1];
    int skip_in = cfg->block_out_channels[mirror > 0 ? mirror - 1 : 0];
    b->num_layers = cfg->layers_per_block[mirror] + 1;
    b->has_attention = cfg->up_block_has_attention[index];
    b->has_upsample = index < n - 1;
    char name[NAME_SIZE];
    for (int i = 0; i < b->num_layers; i++) {
        int from_below = i == 0 ? prev_out : out;
        int from_skip = i == b->num_layers - 1 ? skip_in : out;
        resnet_block_config rc =
            resnet_config(cfg, from_below + from_skip, out, cfg->resnet_out_scale_factor);
        LCM_TRY(name_of(name, "up_blocks.%d.resnets.%d", index, i));
        LCM_TRY(resnet_block_load(&b->resnets[i], backend, ws, name, &rc));
        if (b->has_attention) {
            transformer_2d_config tc = attention_config(cfg, out, mirror);
            LCM_TRY(name_of(name, "up_blocks.%d.attentions.%d", index, i));
            LCM_TRY(transformer_2d_load(&b->attentions[i], backend, ws, name, &tc));
        }
    }
    if (b->has_upsample) {
        LCM_TRY(name_of(name, "up_blocks.%d.upsamplers.0", index));
        LCM_TRY(upsample_load(&b->upsampler, backend, ws, name, out, out));
    }
    return LCM_OK;
}

// The time embedding, conv_in, down blocks and mid block: what ControlNetModel copies.
static lcm_status load_encoder_weights(const ops_backend *backend, unet_model *m,
                                       const weight_set *ws) {
    const unet_config *cfg = &m->config;
    int first = cfg->block_out_channels[0];
    m->kernels = backend->kernels;
    LCM_TRY(time_embedding_load(&m->time_embedding, backend, ws, "time_embedding", first,
                                cfg->time_embed_dim, cfg->time_cond_proj_dim));
    LCM_TRY(conv2d_load(&m->conv_in, backend, ws, "conv_in", cfg->in_channels, first, 3, 1, 1,
                        true));
    for (int i = 0; i < cfg->num_blocks; i++) LCM_TRY(load_down_block(backend, &m->down_blocks[i],
                                                                      ws, cfg, i));
    LCM_TRY(load_mid_block(backend, &m->mid_block, ws, cfg));
    return LCM_OK;
}

static lcm_status load_weights(const ops_backend *backend, unet_model *m, const weight_set *ws) {
    const unet_config *cfg = &m->config;
    int first = cfg->block_out_channels[0];
    LCM_TRY(load_encoder_weights(backend, m, ws));
    for (int i = 0; i < cfg->num_blocks; i++) LCM_TRY(load_up_block(backend, &m->up_blocks[i], ws,
                                                                    cfg, i));
    LCM_TRY(norm_load(&m->conv_norm_out, ws, "conv_norm_out", first, cfg->norm_num_groups,
                      cfg->norm_eps));
    LCM_TRY(conv2d_load(&m->conv_out, backend, ws, "conv_out", first, cfg->out_channels, 3, 1, 1,
                        true));
    return LCM_OK;
}

lcm_status unet_load(const ops_backend *backend, const model_folder *folder, const char *component,
                     unet_model **out) {
    *out = NULL;
    unet_model *m = calloc(1, sizeof *m);
    if (!m) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading %s", component);
    json_config config;
    lcm_status st = model_folder_load_config(folder, component, "config.json", &config);
    if (st == LCM_OK) {
        st = unet_config_parse(&config, "UNet2DConditionModel", false, &m->config);
        json_config_free(&config);
    }
    weight_set *ws = NULL;
    if (st == LCM_OK) st = model_folder_open_weights(folder, component, "diffusion_pytorch_model", &ws);
    if (st == LCM_OK) {
        st = load_weights(backend, m, ws);
        if (st != LCM_OK) st = lcm_fail_context(st, "loading %s: ", component);
    }
    if (st == LCM_OK) m->packed = packed_cache_mapping(ws);
    weight_set_close(ws);
    if (st != LCM_OK) {
        unet_free(m);
        return st;
    }
    *out = m;
    return LCM_OK;
}

void unet_release_weight_pages(const unet_model *m) { packed_mapping_drop_pages(m->packed); }

void unet_free(unet_model *m) {
    if (!m) return;
    packed_mapping_release(m->packed);
    time_embedding_free(&m->time_embedding);
    conv2d_free(&m->conv_in);
    for (int b = 0; b < UNET_MAX_BLOCKS; b++) {
        down_block *down = &m->down_blocks[b];
        up_block *up = &m->up_blocks[b];
        for (int i = 0; i < UNET_MAX_LAYERS; i++) {
            resnet_block_free(&down->resnets[i]);
            transformer_2d_free(&down->attentions[i]);
            resnet_block_free(&up->resnets[i]);
            transformer_2d_free(&up->attentions[i]);
        }
        downsample_free(&down->downsampler);
        upsample_free(&up->upsampler);
    }
    resnet_block_free(&m->mid_block.resnets[0]);
    resnet_block_free(&m->mid_block.resnets[1]);
    transformer_2d_free(&m->mid_block.attention);
    norm_free(&m->conv_norm_out);
    conv2d_free(&m->conv_out);
    free(m);
}

const unet_config *unet_get_config(const unet_model *m) { return &m->config; }

lcm_status unet_encoder_load(const ops_backend *backend, const weight_set *ws,
                             const unet_config *cfg, unet_model **out) {
    *out = NULL;
    unet_model *m = calloc(1, sizeof *m);
    if (!m) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading a unet encoder");
    m->config = *cfg;
    m->encoder_only = true;
    lcm_status st = load_encoder_weights(backend, m, ws);
    if (st != LCM_OK) {
        unet_free(m);
        return st;
    }
    *out = m;
    return LCM_OK;
}

// ---- forward ---------------------------------------------------------------------------------

// The skip connections: pushed on the way down (copies of the activations at that point), popped
// on the way up in reverse order.
typedef struct skip_stack {
    tensor **items;
    int count, capacity;
} skip_stack;

static void skip_push(skip_stack *s, const tensor *h) {
    // capacity == config.skip_count, and the down path pushes exactly that many.
    if (s->count < s->capacity) s->items[s->count++] = h ? tensor_copy(h) : NULL;
}

static tensor *skip_pop(skip_stack *s) { return s->count > 0 ? s->items[--s->count] : NULL; }

typedef struct observer {
    unet_observer fn;
    void *user;
} observer;

static void observe(const observer *o, const char *name, const tensor *value) {
    if (o->fn && value) o->fn(o->user, name, value);
}

// Sinusoidal features of the timestep, plus the guidance embedding through cond_proj, through
// the MLP: [N, time_embed_dim].
static tensor *unet_time_embedding(const unet_model *m, float timestep, int64_t batch,
                                   const tensor *timestep_cond, const observer *o) {
    const unet_config *cfg = &m->config;
    tensor *features = timestep_features(timestep, batch, cfg->block_out_channels[0],
                                         cfg->flip_sin_to_cos, cfg->freq_shift);
    observe(o, "time_proj", features);
    tensor *temb = time_embedding_forward(&m->time_embedding, features, timestep_cond);
    tensor_free(features);
    observe(o, "time_embedding", temb);
    return temb;
}

// [N, Cin, H, W] -> [N, C, H/2, W/2] (no downsampler in the last block). Consumes h; pushes one
// skip per layer and one after the downsampler.
static tensor *unet_down_block(const down_block *b, tensor *h, const tensor *temb,
                               const tensor *context, skip_stack *skips) {
    for (int i = 0; i < b->num_layers; i++) {
        h = resnet_block_forward(&b->resnets[i], h, temb);
        if (b->has_attention) tensor_replace(&h, transformer_2d_forward(&b->attentions[i], h, context));
        skip_push(skips, h);
    }
    if (b->has_downsample) {
        tensor_replace(&h, downsample_forward(&b->downsampler, h));
        skip_push(skips, h);
    }
    return h;
}

// [N, C, H, W] -> [N, C, H, W]. Consumes h.
static tensor *unet_mid_block(const mid_block *b, tensor *h, const tensor *temb,
                              const tensor *context) {
    h = resnet_block_forward(&b->resnets[0], h, temb);
    tensor_replace(&h, transformer_2d_forward(&b->attention, h, context));
    h = resnet_block_forward(&b->resnets[1], h, temb);
    return h;
}

// [N, Cprev, H, W] -> [N, C, 2H, 2W] (no upsampler in the last block). Consumes h and one skip per
// layer. The upsampler doubles the size, or, when `to_skip_size`, resizes to the spatial size of
// the next skip connection (diffusers' forward_upsample_size for latents that are not a multiple
// of 2^upsamplers: 3 -> 2 on the way down must come back as 2 -> 3, not 4).
static tensor *unet_up_block(const up_block *b, tensor *h, const tensor *temb,
                             const tensor *context, skip_stack *skips, bool to_skip_size) {
    for (int i = 0; i < b->num_layers; i++) {
        tensor *skip = skip_pop(skips);
        tensor *joined = concat_channels(h, skip); // [N, C + Cskip, H, W]
        tensor_free(h);
        tensor_free(skip);
        h = joined;
        h = resnet_block_forward(&b->resnets[i], h, temb);
        if (b->has_attention) tensor_replace(&h, transformer_2d_forward(&b->attentions[i], h, context));
    }
    if (b->has_upsample && h) {
        int64_t out_h = 2 * h->shape[2], out_w = 2 * h->shape[3];
        const tensor *next = skips->count > 0 ? skips->items[skips->count - 1] : NULL;
        if (to_skip_size && next) {
            out_h = next->shape[2];
            out_w = next->shape[3];
        }
        tensor_replace(&h, upsample_forward(&b->upsampler, h, out_h, out_w));
    }
    return h;
}

static bool same_shape(const tensor *a, const tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

static lcm_status check_inputs(const unet_model *m, const tensor *sample, float timestep,
                               const tensor *context, const tensor *timestep_cond,
                               const unet_residuals *residuals) {
    const unet_config *cfg = &m->config;
    if (!sample || sample->ndim != 4 || sample->shape[0] < 1 || sample->shape[1] != cfg->in_channels ||
        sample->shape[2] < 1 || sample->shape[3] < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "unet: sample must be [N, %d, h, w]",
                        cfg->in_channels);
    int64_t batch = sample->shape[0];
    if (!context || context->ndim != 3 || context->shape[0] != batch || context->shape[1] < 1 ||
        context->shape[2] != cfg->cross_attention_dim)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "unet: encoder_hidden_states must be [%lld, L, %d]", (long long)batch,
                        cfg->cross_attention_dim);
    if (!(timestep == timestep) || timestep > 1e30f || timestep < -1e30f)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "unet: timestep must be finite");
    if (timestep_cond) {
        if (cfg->time_cond_proj_dim == 0)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "unet: timestep_cond given, but this unet has no time_cond_proj_dim "
                            "(not an LCM-distilled model)");
        if (timestep_cond->ndim != 2 || timestep_cond->shape[0] != batch ||
            timestep_cond->shape[1] != cfg->time_cond_proj_dim)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "unet: timestep_cond must be [%lld, %d]",
                            (long long)batch, cfg->time_cond_proj_dim);
    }
    if (residuals) {
        if (!residuals->down || !residuals->mid || residuals->down_count != cfg->skip_count)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "unet: residuals need %d down tensors and a mid tensor (got %d%s)",
                            cfg->skip_count, residuals->down_count,
                            residuals->mid ? "" : ", no mid");
        for (int i = 0; i < residuals->down_count; i++)
            if (!residuals->down[i])
                return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "unet: down residual %d is NULL", i);
    }
    return LCM_OK;
}

// Adds residual i to skip connection i (shapes checked).
static lcm_status add_down_residuals(skip_stack *skips, const unet_residuals *residuals) {
    for (int i = 0; i < skips->count; i++) {
        tensor *skip = skips->items[i];
        if (!skip) continue; // an earlier failure; reported after the pass
        if (!same_shape(skip, residuals->down[i]))
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "unet: down residual %d has the wrong shape (expected [%lld, %lld, "
                            "%lld, %lld])", i, (long long)skip->shape[0], (long long)skip->shape[1],
                            (long long)skip->shape[2], (long long)skip->shape[3]);
        add_inplace(skip, residuals->down[i]);
    }
    return LCM_OK;
}

// Status for an op that returned NULL: ops only fail on allocation (inputs were checked above)
// or on an internal inconsistency; both set the message and its code.
static lcm_status op_failure(void) {
    lcm_status code = lcm_last_status();
    return code != LCM_OK ? code : LCM_ERR_INTERNAL;
}

// The encoder half both passes run: the time embedding (*temb, the caller's), conv_in plus
// `conv_in_addition` (a ControlNet's conditioning, or NULL), the down blocks pushing their skips,
// then `residuals`' down tensors added to the skips (a ControlNet's output given to the whole UNet,
// or NULL), and the mid block. Returns the mid block's output; NULL after a failure, with *st set
// when it was a wrong shape (an op failure leaves *st LCM_OK: the caller asks op_failure()).
static tensor *encoder_half(const unet_model *m, const tensor *sample, float timestep,
                            const tensor *context, const tensor *timestep_cond,
                            const tensor *conv_in_addition, const unet_residuals *residuals,
                            const observer *o, skip_stack *skips, tensor **temb, lcm_status *st) {
    const unet_config *cfg = &m->config;
    *st = LCM_OK;
    *temb = unet_time_embedding(m, timestep, sample->shape[0], timestep_cond, o);
    tensor *h = conv2d_forward(&m->conv_in, sample); // [N, C0, h, w]
    observe(o, "conv_in", h);
    if (h && conv_in_addition) {
        if (same_shape(h, conv_in_addition)) {
            add_inplace(h, conv_in_addition);
        } else {
            *st = lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                           "unet encoder: the addition to conv_in's output must be [%lld, %lld, "
                           "%lld, %lld]", (long long)h->shape[0], (long long)h->shape[1],
                           (long long)h->shape[2], (long long)h->shape[3]);
            tensor_replace(&h, NULL);
        }
    }
    skip_push(skips, h);

    char name[32];
    for (int i = 0; i < cfg->num_blocks; i++) {
        h = unet_down_block(&m->down_blocks[i], h, *temb, context, skips);
        snprintf(name, sizeof name, "down_blocks.%d", i);
        observe(o, name, h);
    }
    if (residuals && *st == LCM_OK) *st = add_down_residuals(skips, residuals);
    if (*st != LCM_OK) tensor_replace(&h, NULL); // the rest of the pass then does nothing

    h = unet_mid_block(&m->mid_block, h, *temb, context);
    observe(o, "mid_block", h);
    return h;
}

lcm_status unet_forward_observed(const unet_model *m, const tensor *sample, float timestep,
                                 const tensor *encoder_hidden_states, const tensor *timestep_cond,
                                 const unet_residuals *residuals, unet_observer observe_fn,
                                 void *user, tensor **noise_pred) {
    *noise_pred = NULL;
    if (m->encoder_only)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "unet: this model holds only the encoder half (unet_encoder_load)");
    LCM_TRY(check_inputs(m, sample, timestep, encoder_hidden_states, timestep_cond, residuals));
    const unet_config *cfg = &m->config;
    const observer o = {observe_fn, user};
    const tensor *context = encoder_hidden_states;

    skip_stack skips = {.capacity = cfg->skip_count};
    skips.items = calloc((size_t)skips.capacity, sizeof *skips.items);
    if (!skips.items) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "unet: out of memory");

    // Without this the upsamplers double sizes blindly, which only works when h and w are
    // multiples of 2^(number of upsamplers).
    int64_t overall_factor = (int64_t)1 << (cfg->num_blocks - 1);
    bool to_skip_size = sample->shape[2] % overall_factor || sample->shape[3] % overall_factor;

    tensor *temb;
    lcm_status st;
    tensor *h = encoder_half(m, sample, timestep, context, timestep_cond, NULL, residuals, &o, &skips,
                             &temb, &st);
    if (residuals && h && st == LCM_OK) {
        if (same_shape(h, residuals->mid)) {
            add_inplace(h, residuals->mid);
        } else {
            st = lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                          "unet: mid residual has the wrong shape (expected [%lld, %lld, %lld, "
                          "%lld])", (long long)h->shape[0], (long long)h->shape[1],
                          (long long)h->shape[2], (long long)h->shape[3]);
            tensor_replace(&h, NULL);
        }
    }

    char name[32];
    for (int i = 0; i < cfg->num_blocks; i++) {
        h = unet_up_block(&m->up_blocks[i], h, temb, context, &skips, to_skip_size);
        snprintf(name, sizeof name, "up_blocks.%d", i);
        observe(&o, name, h);
    }

    tensor_replace(&h, group_norm(&m->conv_norm_out, h));
    observe(&o, "conv_norm_out", h);
    silu_inplace(h, m->kernels);
    tensor_replace(&h, conv2d_forward(&m->conv_out, h)); // [N, out_channels, h, w]
    observe(&o, "conv_out", h);

    tensor_free(temb);
    while (skips.count > 0) tensor_free(skip_pop(&skips));
    free(skips.items);
    if (st != LCM_OK) {
        tensor_free(h);
        return st;
    }
    if (!h) return op_failure();
    *noise_pred = h;
    return LCM_OK;
}

lcm_status unet_forward(const unet_model *m, const tensor *sample, float timestep,
                        const tensor *encoder_hidden_states, const tensor *timestep_cond,
                        const unet_residuals *residuals, tensor **noise_pred) {
    return unet_forward_observed(m, sample, timestep, encoder_hidden_states, timestep_cond,
                                 residuals, NULL, NULL, noise_pred);
}

lcm_status unet_encoder_forward(const unet_model *m, const tensor *sample, float timestep,
                                const tensor *encoder_hidden_states, const tensor *timestep_cond,
                                const tensor *conv_in_addition, tensor **skips_out,
                                tensor **mid_out) {
    const unet_config *cfg = &m->config;
    for (int i = 0; i < cfg->skip_count; i++) skips_out[i] = NULL;
    *mid_out = NULL;
    LCM_TRY(check_inputs(m, sample, timestep, encoder_hidden_states, timestep_cond, NULL));
    const observer o = {NULL, NULL};
    skip_stack skips = {.capacity = cfg->skip_count};
    skips.items = calloc((size_t)skips.capacity, sizeof *skips.items);
    if (!skips.items) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "unet encoder: out of memory");

    tensor *temb;
    lcm_status st;
    tensor *h = encoder_half(m, sample, timestep, encoder_hidden_states, timestep_cond, conv_in_addition,
                             NULL, &o, &skips, &temb, &st);
    tensor_free(temb);

    bool complete = h != NULL && skips.count == cfg->skip_count;
    for (int i = 0; i < skips.count; i++) complete = complete && skips.items[i] != NULL;
    if (st == LCM_OK && !complete) st = op_failure();
    if (st != LCM_OK) {
        tensor_free(h);
        while (skips.count > 0) tensor_free(skip_pop(&skips));
        free(skips.items);
        return st;
    }
    for (int i = 0; i < skips.count; i++) skips_out[i] = skips.items[i];
    free(skips.items);
    *mid_out = h;
    return LCM_OK;
}
