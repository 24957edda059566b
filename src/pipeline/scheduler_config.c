// A diffusers scheduler config (scheduler/scheduler_config.json) read into the parsed config the
// LCM scheduler takes. src/sched sits beside src/io and so reads no JSON: the pipeline, which finds
// the file in the model folder, reads it here.
#include "pipeline/scheduler_config.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

// A string field that must be one of `names` (NULL-terminated, in the order of the enum it
// selects): *index says which. `expected` lists them for the message.
static lcm_status parse_choice(const json_config *cfg, const char *field, const char *fallback,
                               const char *const *names, const char *expected, int *index) {
    const char *name;
    LCM_TRY(json_config_string_or(cfg, field, fallback, &name));
    for (int i = 0; names[i]; i++)
        if (strcmp(name, names[i]) == 0) {
            *index = i;
            return LCM_OK;
        }
    return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: %s = \"%s\" is not supported (%s)", cfg->label, field, name,
                    expected);
}

static lcm_status parse_beta_schedule(const json_config *cfg, lcm_scheduler_config *out) {
    static const char *const names[] = {"linear", "scaled_linear", "squaredcos_cap_v2", NULL}; // lcm_beta_schedule
    int index;
    LCM_TRY(parse_choice(cfg, "beta_schedule", "scaled_linear", names,
                         "LCMScheduler knows \"linear\", \"scaled_linear\" and \"squaredcos_cap_v2\"", &index));
    out->beta_schedule = (lcm_beta_schedule)index;
    return LCM_OK;
}

static lcm_status parse_prediction_type(const json_config *cfg, lcm_scheduler_config *out) {
    static const char *const names[] = {"epsilon", "sample", "v_prediction", NULL}; // lcm_prediction_type
    int index;
    LCM_TRY(parse_choice(cfg, "prediction_type", "epsilon", names,
                         "expected \"epsilon\", \"sample\" or \"v_prediction\"", &index));
    out->prediction_type = (lcm_prediction_type)index;
    return LCM_OK;
}

// trained_betas: null/absent, or an array of num_train_timesteps numbers (kept as float32, as
// torch.tensor(trained_betas, dtype=float32) does).
static lcm_status parse_trained_betas(const json_config *cfg, lcm_scheduler_config *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(cfg->root, "trained_betas");
    if (!item || cJSON_IsNull(item)) return LCM_OK;
    if (!cJSON_IsArray(item))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field 'trained_betas' must be null or an array of numbers",
                        cfg->label);
    int n = cJSON_GetArraySize(item);
    if ((int64_t)n != out->num_train_timesteps)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: trained_betas has %d entries, expected num_train_timesteps = %lld",
                        cfg->label, n, (long long)out->num_train_timesteps);
    float *betas = malloc(sizeof *betas * (size_t)n);
    if (!betas) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", cfg->label);
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(item, i);
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0 && v->valuedouble < 1.0)) {
            free(betas);
            return lcm_fail(LCM_ERR_FORMAT, "%s: trained_betas[%d] must be a number in [0, 1)",
                            cfg->label, i);
        }
        betas[i] = (float)v->valuedouble;
    }
    out->trained_betas = betas;
    return LCM_OK;
}

static lcm_status parse_config(const json_config *cfg, lcm_scheduler_config *out) {
    const char *label = cfg->label;
    LCM_TRY(json_config_int_or(cfg, "num_train_timesteps", out->num_train_timesteps, 1,
                               LCM_SCHEDULER_MAX_TRAIN_TIMESTEPS, &out->num_train_timesteps));
    LCM_TRY(json_config_float_or(cfg, "beta_start", out->beta_start, 0.0, 0.999999, &out->beta_start));
    LCM_TRY(json_config_float_or(cfg, "beta_end", out->beta_end, 0.0, 0.999999, &out->beta_end));
    LCM_TRY(parse_beta_schedule(cfg, out));
    LCM_TRY(json_config_int_or(cfg, "original_inference_steps", out->original_inference_steps, 1,
                               LCM_SCHEDULER_MAX_TRAIN_TIMESTEPS, &out->original_inference_steps));
    LCM_TRY(json_config_bool_or(cfg, "clip_sample", out->clip_sample, &out->clip_sample));
    LCM_TRY(json_config_float_or(cfg, "clip_sample_range", out->clip_sample_range, 0.0, 1e30,
                                 &out->clip_sample_range));
    LCM_TRY(json_config_bool_or(cfg, "set_alpha_to_one", out->set_alpha_to_one,
                                &out->set_alpha_to_one));
    LCM_TRY(json_config_int_or(cfg, "steps_offset", out->steps_offset, 0, LCM_SCHEDULER_MAX_TRAIN_TIMESTEPS,
                               &out->steps_offset));
    LCM_TRY(parse_prediction_type(cfg, out));
    LCM_TRY(json_config_bool_or(cfg, "thresholding", out->thresholding, &out->thresholding));
    LCM_TRY(json_config_float_or(cfg, "dynamic_thresholding_ratio", out->dynamic_thresholding_ratio,
                                 0.0, 1.0, &out->dynamic_thresholding_ratio));
    LCM_TRY(json_config_float_or(cfg, "sample_max_value", out->sample_max_value, 0.0, 1e30,
                                 &out->sample_max_value));
    const char *spacing;
    LCM_TRY(json_config_string_or(cfg, "timestep_spacing", "leading", &spacing));
    if (strlen(spacing) >= sizeof out->timestep_spacing)
        return lcm_fail(LCM_ERR_FORMAT, "%s: timestep_spacing = \"%.40s...\" is too long", label,
                        spacing);
    snprintf(out->timestep_spacing, sizeof out->timestep_spacing, "%s", spacing);
    LCM_TRY(json_config_float_or(cfg, "timestep_scaling", out->timestep_scaling, -1e30, 1e30,
                                 &out->timestep_scaling));
    LCM_TRY(json_config_bool_or(cfg, "rescale_betas_zero_snr", out->rescale_betas_zero_snr,
                                &out->rescale_betas_zero_snr));
    if (out->thresholding)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: thresholding = true is not supported (dynamic thresholding is meant for "
                        "pixel-space models, not latent diffusion); set it to false",
                        label);
    // Read last: its length is checked against num_train_timesteps.
    return parse_trained_betas(cfg, out);
}

lcm_status scheduler_config_read(const json_config *cfg, lcm_scheduler_config *out) {
    lcm_scheduler_config_default(out);
    lcm_status st = parse_config(cfg, out);
    if (st != LCM_OK) lcm_scheduler_config_free(out);
    return st;
}
