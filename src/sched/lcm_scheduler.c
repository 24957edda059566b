// diffusers 0.26.3 LCMScheduler (schedulers/scheduling_lcm.py), float32 exactly as torch 1.13 CPU
// computes it.
//
// Bit-level notes, each checked against tiny-lcm/golden/scheduler.safetensors (alphas_cumprod is
// reproduced bit for bit):
//  * torch.linspace(start, end, n, dtype=float32) runs the AVX2 kernel: 8-wide vectors, two per loop
//    iteration, each vector `base + j*step` from a base taken at its first index; indices below
//    n/2 count up from `start`, the rest count down from `end` (`end - step*(n-1-i)`), and the
//    compiler fused those multiply-adds (fmaf). A scalar loop finishes the last n % 16 values.
//    Without the fused base the cumulative product drifts by ulps from index 273 on.
//  * torch.cumprod on CPU accumulates in double (acc_type<float> is double) and rounds each
//    element to float32. A float32 running product is off from index 11 on.
//  * `x ** 2` is x*x, `x ** 0.5` is sqrt, `1 - x` and every product are single float32 ops: each
//    rounding happens in its own statement here, so no compiler contraction can merge them.
//  * The pipelines pass timesteps as 0-d int64 tensors, so `timestep * timestep_scaling` and the
//    c_skip / c_out formulas are float32 tensor ops (`0.25 / x` is `x.reciprocal() * 0.25`).
#include "sched/lcm_scheduler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

struct lcm_scheduler {
    lcm_scheduler_config config; // copy; config.trained_betas is always NULL here
    float *alphas_cumprod;       // [num_train_timesteps]
    float final_alpha_cumprod;
    int64_t *timesteps; // [num_timesteps], descending
    int num_timesteps;
    // diffusers' self.num_inference_steps: equals num_timesteps except for custom timesteps cut by
    // strength, where diffusers keeps the uncut count (and so draws noise even at the last step).
    int num_inference_steps;
};

// ---------------------------------------------------------------------------------------------
// Configuration

lcm_status lcm_scheduler_config_default(lcm_scheduler_config *out) {
    memset(out, 0, sizeof *out);
    out->num_train_timesteps = 1000;
    out->beta_start = 0.00085;
    out->beta_end = 0.012;
    out->beta_schedule = LCM_BETA_SCALED_LINEAR;
    out->trained_betas = NULL;
    out->original_inference_steps = 50;
    out->clip_sample = false;
    out->clip_sample_range = 1.0;
    out->set_alpha_to_one = true;
    out->steps_offset = 0;
    out->prediction_type = LCM_PREDICT_EPSILON;
    out->thresholding = false;
    out->dynamic_thresholding_ratio = 0.995;
    out->sample_max_value = 1.0;
    snprintf(out->timestep_spacing, sizeof out->timestep_spacing, "leading");
    out->timestep_scaling = 10.0;
    out->rescale_betas_zero_snr = false;
    return LCM_OK;
}

void lcm_scheduler_config_free(lcm_scheduler_config *config) {
    if (!config) return;
    free(config->trained_betas);
    config->trained_betas = NULL;
}

// ---------------------------------------------------------------------------------------------
// The noise schedule

// torch.linspace(start, end, n, dtype=float32) as torch 1.13's AVX2 CPU kernel computes it (see the
// note at the top). `start` and `end` are Python floats, converted to float32 first.
static void torch_linspace_f32(double start_d, double end_d, int64_t n, float *out) {
    const float start = (float)start_d, end = (float)end_d;
    if (n == 1) {
        out[0] = start;
        return;
    }
    const float step = (end - start) / (float)(n - 1);
    const int64_t halfway = n / 2;
    const int64_t vector_width = 8;
    int64_t i = 0;
    for (; i + 2 * vector_width <= n; i += vector_width) {
        float base = i < halfway ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - 1 - i), end);
        for (int64_t j = 0; j < vector_width; j++) out[i + j] = fmaf((float)j, step, base);
    }
    for (; i < n; i++)
        out[i] = i < halfway ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - 1 - i), end);
}

// diffusers' betas_for_alpha_bar (cosine): Python float (double) math, then a float32 tensor.
static void betas_for_alpha_bar(int64_t n, float *betas) {
    const double pi = 3.141592653589793;
    for (int64_t i = 0; i < n; i++) {
        double t1 = (double)i / (double)n, t2 = (double)(i + 1) / (double)n;
        double a1 = cos((t1 + 0.008) / 1.008 * pi / 2);
        double a2 = cos((t2 + 0.008) / 1.008 * pi / 2);
        a1 = a1 * a1;
        a2 = a2 * a2;
        double beta = 1 - a2 / a1;
        betas[i] = (float)(beta < 0.999 ? beta : 0.999);
    }
}

// torch.cumprod of a float32 vector on CPU: accumulated in double, each element rounded.
static void torch_cumprod_f32(const float *x, int64_t n, float *out) {
    double acc = 1.0;
    for (int64_t i = 0; i < n; i++) {
        acc *= (double)x[i];
        out[i] = (float)acc;
    }
}

// rescale_zero_terminal_snr (arXiv 2305.08891, Algorithm 1), float32 tensor ops as diffusers does
// them; rewrites betas in place.
static lcm_status rescale_zero_terminal_snr(float *betas, int64_t n) {
    float *sqrt_bar = malloc(sizeof *sqrt_bar * (size_t)n);
    if (!sqrt_bar) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "scheduler: out of memory");
    for (int64_t i = 0; i < n; i++) sqrt_bar[i] = 1.0f - betas[i];
    torch_cumprod_f32(sqrt_bar, n, sqrt_bar);
    for (int64_t i = 0; i < n; i++) sqrt_bar[i] = sqrtf(sqrt_bar[i]);
    const float first = sqrt_bar[0], last = sqrt_bar[n - 1];
    // Shift so the last timestep is zero, scale so the first is back to its old value.
    const float span = first - last;
    const float scale = first / span;
    for (int64_t i = 0; i < n; i++) {
        float shifted = sqrt_bar[i] - last;
        sqrt_bar[i] = shifted * scale;
    }
    // alphas_bar = sqrt_bar^2; alphas = alphas_bar[i] / alphas_bar[i-1] (alphas_bar[0] first);
    // betas = 1 - alphas. Walk backwards so alphas_bar[i-1] is still available.
    for (int64_t i = n - 1; i >= 0; i--) {
        float bar = sqrt_bar[i] * sqrt_bar[i];
        float alpha = bar;
        if (i > 0) {
            float bar_before = sqrt_bar[i - 1] * sqrt_bar[i - 1];
            alpha = bar / bar_before;
        }
        betas[i] = 1.0f - alpha;
    }
    free(sqrt_bar);
    return LCM_OK;
}

static lcm_status make_betas(const lcm_scheduler_config *c, float *betas) {
    const int64_t n = c->num_train_timesteps;
    if (c->trained_betas) {
        memcpy(betas, c->trained_betas, sizeof *betas * (size_t)n);
    } else if (c->beta_schedule == LCM_BETA_LINEAR) {
        torch_linspace_f32(c->beta_start, c->beta_end, n, betas);
    } else if (c->beta_schedule == LCM_BETA_SCALED_LINEAR) {
        // Python's `beta_start**0.5` is C pow(); then float32 linspace, then `** 2` = x*x.
        torch_linspace_f32(pow(c->beta_start, 0.5), pow(c->beta_end, 0.5), n, betas);
        for (int64_t i = 0; i < n; i++) betas[i] = betas[i] * betas[i];
    } else if (c->beta_schedule == LCM_BETA_SQUAREDCOS_CAP_V2) {
        betas_for_alpha_bar(n, betas);
    } else {
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "scheduler: beta_schedule %d is not valid",
                        (int)c->beta_schedule);
    }
    if (c->rescale_betas_zero_snr) LCM_TRY(rescale_zero_terminal_snr(betas, n));
    return LCM_OK;
}

static lcm_status check_config(const lcm_scheduler_config *c) {
    if (c->num_train_timesteps < 1 || c->num_train_timesteps > LCM_SCHEDULER_MAX_TRAIN_TIMESTEPS)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: num_train_timesteps = %lld, expected 1..%d",
                        (long long)c->num_train_timesteps, LCM_SCHEDULER_MAX_TRAIN_TIMESTEPS);
    if (c->original_inference_steps < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: original_inference_steps = %lld, expected at least 1",
                        (long long)c->original_inference_steps);
    if (c->thresholding)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "scheduler: thresholding = true is not supported");
    if (!isfinite(c->beta_start) || !isfinite(c->beta_end) || c->beta_start < 0 || c->beta_end < 0)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: beta_start = %g, beta_end = %g, expected finite values >= 0",
                        c->beta_start, c->beta_end);
    if (!isfinite(c->timestep_scaling) || !isfinite(c->clip_sample_range))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: timestep_scaling and clip_sample_range must be finite");
    return LCM_OK;
}

lcm_status lcm_scheduler_new(const lcm_scheduler_config *config, lcm_scheduler **out) {
    *out = NULL;
    LCM_TRY(check_config(config));
    const int64_t n = config->num_train_timesteps;
    lcm_scheduler *s = calloc(1, sizeof *s);
    float *betas = malloc(sizeof *betas * (size_t)n);
    if (s) s->alphas_cumprod = malloc(sizeof *s->alphas_cumprod * (size_t)n);
    if (!s || !betas || !s->alphas_cumprod) {
        free(betas);
        lcm_scheduler_free(s);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "scheduler: out of memory");
    }
    s->config = *config;
    s->config.trained_betas = NULL; // not kept: the betas are folded into alphas_cumprod below

    lcm_status st = make_betas(config, betas);
    if (st != LCM_OK) {
        free(betas);
        lcm_scheduler_free(s);
        return st;
    }
    // alphas = 1 - betas (float32), alphas_cumprod = cumprod(alphas).
    for (int64_t i = 0; i < n; i++) betas[i] = 1.0f - betas[i];
    torch_cumprod_f32(betas, n, s->alphas_cumprod);
    free(betas);
    s->final_alpha_cumprod = config->set_alpha_to_one ? 1.0f : s->alphas_cumprod[0];
    *out = s;
    return LCM_OK;
}

void lcm_scheduler_free(lcm_scheduler *scheduler) {
    if (!scheduler) return;
    free(scheduler->alphas_cumprod);
    free(scheduler->timesteps);
    free(scheduler);
}

int64_t lcm_scheduler_num_train_timesteps(const lcm_scheduler *s) {
    return s->config.num_train_timesteps;
}

float lcm_scheduler_alpha_cumprod(const lcm_scheduler *s, int64_t t) {
    if (t < 0 || t >= s->config.num_train_timesteps) return NAN;
    return s->alphas_cumprod[t];
}

float lcm_scheduler_final_alpha_cumprod(const lcm_scheduler *s) { return s->final_alpha_cumprod; }

// ---------------------------------------------------------------------------------------------
// Timesteps

// The standard LCM schedule: the distillation timesteps [k-1, 2k-1, ...] (k = N / original_steps),
// only the first int(original_steps * strength) of them, reversed, then num_inference_steps of them
// at evenly spaced indices floor(i * len / steps) (numpy linspace without endpoint, in double).
static lcm_status standard_timesteps(const lcm_scheduler *s, int num_inference_steps,
                                     double strength, int64_t *out) {
    const int64_t train_steps = s->config.num_train_timesteps;
    const int64_t original_steps = s->config.original_inference_steps;
    if (num_inference_steps < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: num_inference_steps = %d, expected at least 1",
                        num_inference_steps);
    if (num_inference_steps > train_steps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: num_inference_steps = %d cannot be larger than "
                        "num_train_timesteps = %lld",
                        num_inference_steps, (long long)train_steps);
    const int64_t k = train_steps / original_steps;
    const int64_t origin_count = (int64_t)((double)original_steps * strength); // Python int()
    if (origin_count / num_inference_steps < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: original_inference_steps x strength = %lld x %g = %lld timesteps "
                        "to choose from, fewer than num_inference_steps = %d; use at most %lld steps "
                        "or a strength above %g",
                        (long long)original_steps, strength, (long long)origin_count,
                        num_inference_steps, (long long)origin_count,
                        (double)num_inference_steps / (double)original_steps);
    if (num_inference_steps > original_steps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: num_inference_steps = %d cannot be larger than "
                        "original_inference_steps = %lld (the steps are a subset of that schedule)",
                        num_inference_steps, (long long)original_steps);
    const double spacing = (double)origin_count / (double)num_inference_steps;
    for (int i = 0; i < num_inference_steps; i++) {
        int64_t index = (int64_t)floor((double)i * spacing);
        // origin reversed: origin[j] = (j + 1) * k - 1, read from the end.
        out[i] = (origin_count - index) * k - 1;
    }
    return LCM_OK;
}

static lcm_status check_custom_timesteps(const lcm_scheduler *s, const int64_t *ts, int n) {
    const int64_t train_steps = s->config.num_train_timesteps;
    for (int i = 0; i < n; i++) {
        if (i > 0 && ts[i] >= ts[i - 1])
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "scheduler: custom timesteps must be strictly descending, but "
                            "timesteps[%d] = %lld follows %lld",
                            i, (long long)ts[i], (long long)ts[i - 1]);
        // diffusers only rejects timesteps[0] >= N; a negative one would index alphas_cumprod from
        // the end in torch, which is never meant, so it is refused here too.
        if (ts[i] < 0 || ts[i] >= train_steps)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "scheduler: custom timesteps[%d] = %lld, expected 0..%lld", i,
                            (long long)ts[i], (long long)(train_steps - 1));
    }
    return LCM_OK;
}

lcm_status lcm_scheduler_set_timesteps(lcm_scheduler *s, int num_inference_steps, double strength,
                                       const int64_t *custom_timesteps, int n_custom) {
    if (!(strength > 0.0 && strength <= 1.0))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "scheduler: strength = %g, expected 0 < strength <= 1",
                        strength);
    if (s->config.original_inference_steps > s->config.num_train_timesteps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: original_inference_steps = %lld cannot be larger than "
                        "num_train_timesteps = %lld",
                        (long long)s->config.original_inference_steps,
                        (long long)s->config.num_train_timesteps);
    int count, inference_steps;
    int64_t *timesteps;
    if (custom_timesteps) {
        if (n_custom < 1 || n_custom > s->config.num_train_timesteps)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "scheduler: %d custom timesteps, expected 1..%lld", n_custom,
                            (long long)s->config.num_train_timesteps);
        if (num_inference_steps != 0 && num_inference_steps != n_custom)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "scheduler: num_inference_steps = %d with %d custom timesteps; pass 0 "
                            "(the custom list decides the steps)",
                            num_inference_steps, n_custom);
        LCM_TRY(check_custom_timesteps(s, custom_timesteps, n_custom));
        // strength keeps the tail, as StableDiffusionImg2ImgPipeline.get_timesteps does.
        int keep = (int)((double)n_custom * strength);
        if (keep > n_custom) keep = n_custom;
        if (keep < 1)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "scheduler: strength %g keeps int(%d x %g) = 0 of the custom timesteps",
                            strength, n_custom, strength);
        inference_steps = n_custom;
        count = keep;
        timesteps = malloc(sizeof *timesteps * (size_t)count);
        if (!timesteps) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "scheduler: out of memory");
        memcpy(timesteps, custom_timesteps + (n_custom - keep), sizeof *timesteps * (size_t)count);
    } else {
        count = inference_steps = num_inference_steps;
        timesteps = malloc(sizeof *timesteps * (size_t)(count > 0 ? count : 1));
        if (!timesteps) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "scheduler: out of memory");
        lcm_status st = standard_timesteps(s, num_inference_steps, strength, timesteps);
        if (st != LCM_OK) {
            free(timesteps);
            return st;
        }
    }
    free(s->timesteps);
    s->timesteps = timesteps;
    s->num_timesteps = count;
    s->num_inference_steps = inference_steps;
    return LCM_OK;
}

int lcm_scheduler_num_steps(const lcm_scheduler *s) { return s->num_timesteps; }

const int64_t *lcm_scheduler_timesteps(const lcm_scheduler *s) { return s->timesteps; }

bool lcm_scheduler_needs_noise(const lcm_scheduler *s, int step_index) {
    if (step_index < 0 || step_index >= s->num_timesteps) return false;
    return step_index != s->num_inference_steps - 1;
}

// ---------------------------------------------------------------------------------------------
// The step

// get_scalings_for_boundary_condition_discrete with a 0-d int64 tensor timestep: all float32.
void lcm_scheduler_scalings(const lcm_scheduler *s, int64_t t, float *c_skip, float *c_out) {
    const float sigma_data_sq = 0.25f; // sigma_data = 0.5
    const float scaled = (float)t * (float)s->config.timestep_scaling;
    const float scaled_sq = scaled * scaled;
    const float denom = scaled_sq + sigma_data_sq;
    const float reciprocal = 1.0f / denom;
    *c_skip = reciprocal * sigma_data_sq;
    *c_out = scaled / sqrtf(denom);
}

lcm_status lcm_scheduler_step_info(const lcm_scheduler *s, int step_index, lcm_step_info *out) {
    if (!s->timesteps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: no timesteps; call lcm_scheduler_set_timesteps first");
    if (step_index < 0 || step_index >= s->num_timesteps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "scheduler: step_index = %d, expected 0..%d",
                        step_index, s->num_timesteps - 1);
    out->timestep = s->timesteps[step_index];
    out->prev_timestep =
        step_index + 1 < s->num_timesteps ? s->timesteps[step_index + 1] : out->timestep;
    out->alpha_prod_t = s->alphas_cumprod[out->timestep];
    out->alpha_prod_t_prev =
        out->prev_timestep >= 0 ? s->alphas_cumprod[out->prev_timestep] : s->final_alpha_cumprod;
    lcm_scheduler_scalings(s, out->timestep, &out->c_skip, &out->c_out);
    return LCM_OK;
}

// torch.clamp(x, -r, r) with float32 bounds; NaN stays NaN.
static float clamp_sample(float x, float range) {
    if (isnan(x)) return x;
    float lower = x < -range ? -range : x;
    return lower > range ? range : lower;
}

lcm_status lcm_scheduler_step(const lcm_scheduler *s, int step_index, const float *model_output,
                              const float *sample, const float *noise, size_t numel,
                              float *denoised, float *prev_sample) {
    lcm_step_info info;
    LCM_TRY(lcm_scheduler_step_info(s, step_index, &info));
    const bool wants_noise = lcm_scheduler_needs_noise(s, step_index);
    if (wants_noise && !noise)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: step %d of %d needs the caller's noise draw (got NULL)",
                        step_index, s->num_timesteps);
    if (!wants_noise && noise)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "scheduler: step %d is the last one and takes no noise; pass NULL so the "
                        "random draws stay in diffusers' order",
                        step_index);
    if (!model_output || !sample || !prev_sample)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "scheduler: step needs model_output, sample and "
                                                  "prev_sample buffers");

    // 0-d float32 tensors in diffusers: beta_prod_t = 1 - alpha_prod_t, then .sqrt().
    const float sqrt_alpha = sqrtf(info.alpha_prod_t);
    const float beta = 1.0f - info.alpha_prod_t;
    const float sqrt_beta = sqrtf(beta);
    const float sqrt_alpha_prev = sqrtf(info.alpha_prod_t_prev);
    const float beta_prev = 1.0f - info.alpha_prod_t_prev;
    const float sqrt_beta_prev = sqrtf(beta_prev);
    const float clip_range = (float)s->config.clip_sample_range;
    const lcm_prediction_type prediction = s->config.prediction_type;

    for (size_t i = 0; i < numel; i++) {
        const float x = sample[i], model = model_output[i];
        // Predicted original sample x0, one rounding per torch op.
        float x0;
        if (prediction == LCM_PREDICT_EPSILON) {
            float scaled_noise = sqrt_beta * model;
            float numerator = x - scaled_noise;
            x0 = numerator / sqrt_alpha;
        } else if (prediction == LCM_PREDICT_SAMPLE) {
            x0 = model;
        } else {
            float scaled_sample = sqrt_alpha * x;
            float scaled_model = sqrt_beta * model;
            x0 = scaled_sample - scaled_model;
        }
        if (s->config.clip_sample) x0 = clamp_sample(x0, clip_range);

        // Boundary condition: denoised = c_out * x0 + c_skip * sample.
        float out_term = info.c_out * x0;
        float skip_term = info.c_skip * x;
        float d = out_term + skip_term;

        float next = d;
        if (wants_noise) {
            float signal = sqrt_alpha_prev * d;
            float fresh = sqrt_beta_prev * noise[i];
            next = signal + fresh;
        }
        if (denoised) denoised[i] = d;
        prev_sample[i] = next;
    }
    return LCM_OK;
}

lcm_status lcm_scheduler_add_noise(const lcm_scheduler *s, int64_t t, const float *original,
                                   const float *noise, size_t numel, float *out) {
    if (t < 0 || t >= s->config.num_train_timesteps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "scheduler: add_noise timestep %lld, expected 0..%lld",
                        (long long)t, (long long)(s->config.num_train_timesteps - 1));
    const float alpha = s->alphas_cumprod[t];
    const float sqrt_alpha = sqrtf(alpha);
    const float one_minus = 1.0f - alpha;
    const float sqrt_one_minus = sqrtf(one_minus);
    for (size_t i = 0; i < numel; i++) {
        float signal = sqrt_alpha * original[i];
        float fresh = sqrt_one_minus * noise[i];
        out[i] = signal + fresh;
    }
    return LCM_OK;
}
