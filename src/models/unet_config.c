// UNet2DConditionModel's config.json, checked against what this implementation runs (unet.h);
// diffusers v0.26.3 models/unets/unet_2d_condition.py's config handling.
#include "models/unet.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

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
