// UNet2DConditionModel: config validation, weight loading and the forward pass. See unet.h for the
// picture; the blocks (ResNet, spatial transformer, samplers, time embedding) live in blocks.c.
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

// ---- config ----------------------------------------------------------------------------------

static lcm_status unsupported(const json_config *c, const char *field, const char *value,
                              const char *supported) {
    return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: %s = %s is not supported (supported: %s)", c->label,
                    field, value, supported);
}

// The field's JSON text for messages (malloc'd; caller frees with cJSON_free), or NULL if absent.
static char *field_text(const json_config *c, const char *field) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(c->root, field);
    return item ? cJSON_PrintUnformatted(item) : NULL;
}

static bool field_is_explicit_null(const json_config *c, const char *field) {
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(c->root, field));
}

// Features this implementation does not have: the field must be absent or null.
static lcm_status require_null(const json_config *c, const char *field) {
    if (!json_config_has(c, field)) return LCM_OK;
    char *text = field_text(c, field);
    lcm_status st = unsupported(c, field, text ? text : "(a value)", "null");
    cJSON_free(text);
    return st;
}

// A string field that must have one particular value (absent = diffusers' default = that value).
static lcm_status require_string(const json_config *c, const char *field, const char *expected) {
    const char *value;
    LCM_TRY(json_config_string_or(c, field, expected, &value));
    if (strcmp(value, expected) != 0) {
        char quoted[256];
        snprintf(quoted, sizeof quoted, "\"%s\"", value);
        char wanted[256];
        snprintf(wanted, sizeof wanted, "\"%s\"", expected);
        return unsupported(c, field, quoted, wanted);
    }
    return LCM_OK;
}

// A boolean feature flag that must be false (a list of flags, one per block, must be all false).
static lcm_status require_false(const json_config *c, const char *field) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(c->root, field);
    if (!item || cJSON_IsNull(item) || cJSON_IsFalse(item)) return LCM_OK;
    if (cJSON_IsArray(item)) {
        bool all_false = true;
        const cJSON *entry;
        cJSON_ArrayForEach(entry, item) all_false = all_false && cJSON_IsFalse(entry);
        if (all_false) return LCM_OK;
    }
    if (!cJSON_IsBool(item) && !cJSON_IsArray(item))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' must be true or false", c->label, field);
    char *text = field_text(c, field);
    lcm_status st = unsupported(c, field, text ? text : "true", "false");
    cJSON_free(text);
    return st;
}

static lcm_status parse_block_types(const json_config *c, const char *field, const char *plain,
                                    const char *cross, const char *const *defaults, int count,
                                    bool *has_attention) {
    const char *types[UNET_MAX_BLOCKS];
    int n = count;
    if (json_config_has(c, field)) {
        LCM_TRY(json_config_string_array(c, field, types, UNET_MAX_BLOCKS, &n));
    } else {
        if (count != 4)
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: %s is missing and its default has 4 entries, but "
                            "block_out_channels has %d", c->label, field, count);
        for (int i = 0; i < 4; i++) types[i] = defaults[i];
    }
    if (n != count)
        return lcm_fail(LCM_ERR_FORMAT, "%s: %s has %d entries but block_out_channels has %d",
                        c->label, field, n, count);
    for (int i = 0; i < n; i++) {
        if (strcmp(types[i], cross) == 0) {
            has_attention[i] = true;
        } else if (strcmp(types[i], plain) == 0) {
            has_attention[i] = false;
        } else {
            char where[128], value[256], supported[128];
            snprintf(where, sizeof where, "%s[%d]", field, i);
            snprintf(value, sizeof value, "\"%s\"", types[i]);
            snprintf(supported, sizeof supported, "\"%s\", \"%s\"", cross, plain);
            return unsupported(c, where, value, supported);
        }
    }
    return LCM_OK;
}

// An "int or one int per block" field with a default; values copied into out[0..count).
static lcm_status per_block_int(const json_config *c, const char *field, int64_t fallback,
                                int64_t min, int64_t max, int count, int *out) {
    int64_t values[UNET_MAX_BLOCKS];
    if (json_config_has(c, field)) {
        LCM_TRY(json_config_int_or_array(c, field, min, max, values, count));
    } else {
        for (int i = 0; i < count; i++) values[i] = fallback;
    }
    for (int i = 0; i < count; i++) out[i] = (int)values[i];
    return LCM_OK;
}

static lcm_status parse_config(const json_config *c, const char *class_name, bool encoder_only,
                               unet_config *cfg) {
    *cfg = (unet_config){0};
    int64_t v;
    double d;
    bool flag;

    LCM_TRY(require_string(c, "_class_name", class_name));

    // Block layout. Defaults are diffusers' (the SD1.5 layout).
    static const int64_t default_channels[] = {320, 640, 1280, 1280};
    static const char *const default_down[] = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
    static const char *const default_up[] = {"UpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
    int64_t channels[UNET_MAX_BLOCKS];
    int n = 4;
    if (json_config_has(c, "block_out_channels")) {
        LCM_TRY(json_config_int_array(c, "block_out_channels", 1, 65536, channels, UNET_MAX_BLOCKS,
                                      &n));
    } else {
        memcpy(channels, default_channels, sizeof default_channels);
    }
    cfg->num_blocks = n;
    for (int i = 0; i < n; i++) cfg->block_out_channels[i] = (int)channels[i];
    LCM_TRY(parse_block_types(c, "down_block_types", "DownBlock2D", "CrossAttnDownBlock2D",
                              default_down, n, cfg->down_block_has_attention));
    if (!encoder_only)
        LCM_TRY(parse_block_types(c, "up_block_types", "UpBlock2D", "CrossAttnUpBlock2D",
                                  default_up, n, cfg->up_block_has_attention));
    if (field_is_explicit_null(c, "mid_block_type"))
        return unsupported(c, "mid_block_type", "null (no mid block)", "\"UNetMidBlock2DCrossAttn\"");
    LCM_TRY(require_string(c, "mid_block_type", "UNetMidBlock2DCrossAttn"));

    LCM_TRY(per_block_int(c, "layers_per_block", 2, 1, UNET_MAX_LAYERS_PER_BLOCK, n,
                          cfg->layers_per_block));
    LCM_TRY(per_block_int(c, "transformer_layers_per_block", 1, 1, 64, n,
                          cfg->transformer_layers_per_block));
    LCM_TRY(require_null(c, "reverse_transformer_layers_per_block"));
    // diffusers 0.26 itself refuses a non-null num_attention_heads (its "naming issue" error) and
    // takes the head count from attention_head_dim.
    LCM_TRY(require_null(c, "num_attention_heads"));
    LCM_TRY(per_block_int(c, "attention_head_dim", 8, 1, 65536, n, cfg->attention_heads));

    int cross_dims[UNET_MAX_BLOCKS];
    LCM_TRY(per_block_int(c, "cross_attention_dim", 1280, 1, 65536, n, cross_dims));
    for (int i = 1; i < n; i++)
        if (cross_dims[i] != cross_dims[0])
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s: cross_attention_dim differs between blocks (%d vs %d); one text "
                            "embedding size is supported", c->label, cross_dims[0], cross_dims[i]);
    cfg->cross_attention_dim = cross_dims[0];

    if (field_is_explicit_null(c, "norm_num_groups"))
        return unsupported(c, "norm_num_groups", "null", "an integer");
    LCM_TRY(json_config_int_or(c, "norm_num_groups", 32, 1, 65536, &v));
    cfg->norm_num_groups = (int)v;
    LCM_TRY(json_config_float_or(c, "norm_eps", 1e-5, 0, 1, &d));
    cfg->norm_eps = (float)d;
    for (int i = 0; i < n; i++) {
        int ch = cfg->block_out_channels[i];
        if (ch % cfg->norm_num_groups)
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: block_out_channels[%d] = %d, expected a multiple of "
                            "norm_num_groups = %d", c->label, i, ch, cfg->norm_num_groups);
        if (cfg->down_block_has_attention[i] || cfg->up_block_has_attention[n - 1 - i] ||
            i == n - 1) {
            if (ch % cfg->attention_heads[i])
                return lcm_fail(LCM_ERR_UNSUPPORTED,
                                "%s: attention_head_dim[%d] = %d heads do not divide "
                                "block_out_channels[%d] = %d", c->label, i,
                                cfg->attention_heads[i], i, ch);
        }
    }

    LCM_TRY(json_config_int_or(c, "in_channels", 4, 1, 65536, &v));
    cfg->in_channels = (int)v;
    LCM_TRY(json_config_int_or(c, "out_channels", 4, 1, 65536, &v));
    cfg->out_channels = (int)v;
    if (json_config_has(c, "sample_size")) {
        int64_t size[2];
        LCM_TRY(json_config_int_or_array(c, "sample_size", 1, 65536, size, 2));
        cfg->sample_size[0] = (int)size[0];
        cfg->sample_size[1] = (int)size[1];
    }

    LCM_TRY(json_config_bool_or(c, "use_linear_projection", false, &flag));
    cfg->use_linear_projection = flag;
    LCM_TRY(json_config_bool_or(c, "upcast_attention", false, &flag)); // always float32 here
    LCM_TRY(json_config_bool_or(c, "flip_sin_to_cos", true, &flag));
    cfg->flip_sin_to_cos = flag;
    LCM_TRY(json_config_float_or(c, "freq_shift", 0, -65536, 65536, &d));
    cfg->freq_shift = (float)d;
    LCM_TRY(json_config_int_or(c, "downsample_padding", 1, 0, 1, &v));
    cfg->downsample_padding = (int)v;
    LCM_TRY(json_config_float_or(c, "mid_block_scale_factor", 1, 1e-6, 1e6, &d));
    cfg->mid_block_scale_factor = (float)d;
    LCM_TRY(json_config_float_or(c, "resnet_out_scale_factor", 1, 1e-6, 1e6, &d));
    cfg->resnet_out_scale_factor = (float)d;

    LCM_TRY(require_string(c, "time_embedding_type", "positional"));
    LCM_TRY(json_config_int_or(c, "time_embedding_dim", 4LL * cfg->block_out_channels[0], 1, 1 << 20,
                               &v));
    cfg->time_embed_dim = (int)v;
    LCM_TRY(json_config_int_or(c, "time_cond_proj_dim", 0, 1, 65536, &v));
    cfg->time_cond_proj_dim = (int)v;

    // Everything else must be the plain SD1.5/LCM setting.
    LCM_TRY(require_string(c, "act_fn", "silu"));
    LCM_TRY(require_string(c, "resnet_time_scale_shift", "default"));
    LCM_TRY(require_string(c, "attention_type", "default"));
    LCM_TRY(require_false(c, "center_input_sample"));
    LCM_TRY(require_false(c, "only_cross_attention"));
    LCM_TRY(require_false(c, "dual_cross_attention"));
    LCM_TRY(require_false(c, "resnet_skip_time_act"));
    LCM_TRY(require_null(c, "class_embed_type"));
    LCM_TRY(require_null(c, "num_class_embeds"));
    LCM_TRY(require_null(c, "addition_embed_type"));
    LCM_TRY(require_null(c, "encoder_hid_dim"));
    LCM_TRY(require_null(c, "encoder_hid_dim_type"));
    LCM_TRY(require_null(c, "time_embedding_act_fn"));
    LCM_TRY(require_null(c, "timestep_post_act"));
    LCM_TRY(require_null(c, "cross_attention_norm"));
    static const char *const kernel_fields[] = {"conv_in_kernel", "conv_out_kernel"};
    for (int i = 0; i < 2; i++) {
        LCM_TRY(json_config_int_or(c, kernel_fields[i], 3, 1, 15, &v));
        char value[32];
        snprintf(value, sizeof value, "%lld", (long long)v);
        if (v != 3) return unsupported(c, kernel_fields[i], value, "3");
    }

    cfg->skip_count = 1;
    for (int i = 0; i < n; i++) cfg->skip_count += cfg->layers_per_block[i] + (i < n - 1 ? 1 : 0);
    return LCM_OK;
}

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
        st = parse_config(&config, "UNet2DConditionModel", false, &m->config);
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

lcm_status unet_config_parse(const json_config *c, const char *class_name, bool encoder_only,
                             unet_config *cfg) {
    return parse_config(c, class_name, encoder_only, cfg);
}

void unet_skip_channels(const unet_config *cfg, int *channels) {
    int k = 0;
    channels[k++] = cfg->block_out_channels[0]; // conv_in
    for (int i = 0; i < cfg->num_blocks; i++) {
        for (int j = 0; j < cfg->layers_per_block[i]; j++) channels[k++] = cfg->block_out_channels[i];
        if (i < cfg->num_blocks - 1) channels[k++] = cfg->block_out_channels[i]; // downsampler
    }
}

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

    tensor *temb = unet_time_embedding(m, timestep, sample->shape[0], timestep_cond, &o);

    tensor *h = conv2d_forward(&m->conv_in, sample); // [N, C0, h, w]
    observe(&o, "conv_in", h);
    skip_push(&skips, h);

    char name[32];
    for (int i = 0; i < cfg->num_blocks; i++) {
        h = unet_down_block(&m->down_blocks[i], h, temb, context, &skips);
        snprintf(name, sizeof name, "down_blocks.%d", i);
        observe(&o, name, h);
    }

    lcm_status st = LCM_OK;
    if (residuals) st = add_down_residuals(&skips, residuals);
    if (st != LCM_OK) tensor_replace(&h, NULL); // the rest of the pass then does nothing

    h = unet_mid_block(&m->mid_block, h, temb, context);
    observe(&o, "mid_block", h);
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

    tensor *temb = unet_time_embedding(m, timestep, sample->shape[0], timestep_cond, &o);
    tensor *h = conv2d_forward(&m->conv_in, sample); // [N, C0, h, w]
    lcm_status st = LCM_OK;
    if (h && conv_in_addition) {
        if (same_shape(h, conv_in_addition)) {
            add_inplace(h, conv_in_addition);
        } else {
            st = lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                          "unet encoder: the addition to conv_in's output must be [%lld, %lld, "
                          "%lld, %lld]", (long long)h->shape[0], (long long)h->shape[1],
                          (long long)h->shape[2], (long long)h->shape[3]);
            tensor_replace(&h, NULL);
        }
    }
    skip_push(&skips, h);
    for (int i = 0; i < cfg->num_blocks; i++)
        h = unet_down_block(&m->down_blocks[i], h, temb, encoder_hidden_states, &skips);
    h = unet_mid_block(&m->mid_block, h, temb, encoder_hidden_states);
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
