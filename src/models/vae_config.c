// AutoencoderKL's config.json, checked against what this implementation runs (vae.h).
#include "models/vae.h"

#include <string.h>

#include "core/error.h"
#include "io/json_config.h"

#define VAE_MAX_CHANNELS 16384

static lcm_status check_block_types(const json_config *c, const char *field, const char *expected,
                                    int block_count) {
    const char *types[VAE_MAX_BLOCKS];
    int count = 0;
    LCM_TRY(json_config_string_array(c, field, types, VAE_MAX_BLOCKS, &count));
    if (count != block_count)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: %s has %d entries but block_out_channels has %d; expected one block "
                        "type per entry of block_out_channels",
                        c->label, field, count, block_count);
    for (int i = 0; i < count; i++)
        if (strcmp(types[i], expected) != 0)
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s: %s[%d] = \"%s\" is not supported; this AutoencoderKL "
                            "implementation supports only \"%s\"",
                            c->label, field, i, types[i], expected);
    return LCM_OK;
}

lcm_status vae_config_parse(const json_config *c, vae_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    const char *class_name = NULL;
    LCM_TRY(json_config_string_or(c, "_class_name", "AutoencoderKL", &class_name));
    if (strcmp(class_name, "AutoencoderKL") != 0)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: _class_name = \"%s\", expected \"AutoencoderKL\"",
                        c->label, class_name);

    int64_t v, channels[VAE_MAX_BLOCKS];
    LCM_TRY(json_config_int_array(c, "block_out_channels", 1, VAE_MAX_CHANNELS, channels,
                                  VAE_MAX_BLOCKS, &cfg->block_count));
    for (int i = 0; i < cfg->block_count; i++) cfg->block_out_channels[i] = (int)channels[i];
    LCM_TRY(check_block_types(c, "down_block_types", "DownEncoderBlock2D", cfg->block_count));
    LCM_TRY(check_block_types(c, "up_block_types", "UpDecoderBlock2D", cfg->block_count));

    LCM_TRY(json_config_int_or(c, "in_channels", 3, 1, 64, &v));
    cfg->in_channels = (int)v;
    LCM_TRY(json_config_int_or(c, "out_channels", 3, 1, 64, &v));
    cfg->out_channels = (int)v;
    LCM_TRY(json_config_int_or(c, "latent_channels", 4, 1, 256, &v));
    cfg->latent_channels = (int)v;
    LCM_TRY(json_config_int_or(c, "layers_per_block", 1, 1, 32, &v));
    cfg->layers_per_block = (int)v;
    LCM_TRY(json_config_int_or(c, "norm_num_groups", 32, 1, VAE_MAX_CHANNELS, &v));
    cfg->norm_num_groups = (int)v;
    for (int i = 0; i < cfg->block_count; i++)
        if (cfg->block_out_channels[i] % cfg->norm_num_groups)
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: block_out_channels[%d] = %d is not a multiple of norm_num_groups "
                            "= %d",
                            c->label, i, cfg->block_out_channels[i], cfg->norm_num_groups);

    const char *act_fn = NULL;
    LCM_TRY(json_config_string_or(c, "act_fn", "silu", &act_fn));
    // diffusers' get_activation maps both names to nn.SiLU.
    if (strcmp(act_fn, "silu") != 0 && strcmp(act_fn, "swish") != 0)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: act_fn = \"%s\" is not supported; expected \"silu\"", c->label,
                        act_fn);

    LCM_TRY(json_config_bool_or(c, "mid_block_add_attention", true, &cfg->mid_block_add_attention));
    // Newer diffusers versions can drop the 1x1 quant convs; older configs never mention them.
    LCM_TRY(json_config_bool_or(c, "use_quant_conv", true, &cfg->use_quant_conv));
    LCM_TRY(json_config_bool_or(c, "use_post_quant_conv", true, &cfg->use_post_quant_conv));

    double scaling;
    LCM_TRY(json_config_float_or(c, "scaling_factor", 0.18215, 1e-6, 1e6, &scaling));
    cfg->scaling_factor = (float)scaling;
    // A shift_factor (SD3/Flux VAEs) changes how pipelines map latents; none of ours apply it.
    double shift;
    LCM_TRY(json_config_float_or(c, "shift_factor", 0.0, -1e6, 1e6, &shift));
    if (shift != 0.0)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: shift_factor = %g is not supported (Stable Diffusion 1.x VAEs have "
                        "none)",
                        c->label, shift);

    LCM_TRY(json_config_int_or(c, "sample_size", 32, 1, 1 << 16, &v));
    cfg->sample_size = (int)v;
    cfg->downscale_factor = 1 << (cfg->block_count - 1);
    // force_upcast only matters for half-precision runs; this implementation computes in float32.
    return LCM_OK;
}
