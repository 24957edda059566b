// The Latent Consistency Model scheduler: diffusers 0.26.3 `LCMScheduler`, reproduced to the bit.
//
// An LCM sampler takes very few steps (1..8). At each timestep t the model's prediction is turned
// into an estimate of the clean latent x0, and the consistency-model boundary condition
//     denoised = c_out(t) * x0 + c_skip(t) * sample
// gives the step's result; every step but the last re-noises it to the next timestep with fresh
// Gaussian noise. The noise is drawn by the CALLER, from the torch-compatible generator, exactly
// when lcm_scheduler_needs_noise() says so, because diffusers draws it inside step() and the order
// of draws decides every later random number.
//
// Numerics follow torch 1.13 on CPU, which made the golden data: alphas_cumprod is torch's float32
// linspace (AVX2 kernel) squared, then a cumulative product accumulated in double and rounded per
// element; the step is float32 tensor arithmetic with 0-d float32 tensors as the per-step scalars.
// See lcm_scheduler.c for each detail and how it was verified.
//
// Usage:
//   lcm_scheduler_config cfg;  lcm_scheduler_config_default(&cfg);   // or scheduler_config_read
//                              // (pipeline/scheduler_config.h) from any diffusers scheduler config
//   lcm_scheduler *s;          lcm_scheduler_new(&cfg, &s);  lcm_scheduler_config_free(&cfg);
//   lcm_scheduler_set_timesteps(s, 4, 1.0, NULL, 0);
//   for (int i = 0; i < lcm_scheduler_num_steps(s); i++) {
//       int64_t t = lcm_scheduler_timesteps(s)[i];  ... model_output = unet(latents, t) ...
//       const float *noise = lcm_scheduler_needs_noise(s, i) ? draw_randn(numel) : NULL;
//       lcm_scheduler_step(s, i, model_output, latents, noise, numel, denoised, latents);
//   }
#ifndef LCM_SCHED_LCM_SCHEDULER_H
#define LCM_SCHED_LCM_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

// Large enough for any real schedule, small enough that a hostile config cannot make us allocate
// gigabytes.
#define LCM_SCHEDULER_MAX_TRAIN_TIMESTEPS 100000

typedef enum lcm_beta_schedule {
    LCM_BETA_LINEAR,            // linspace(beta_start, beta_end, N)
    LCM_BETA_SCALED_LINEAR,     // linspace(sqrt(beta_start), sqrt(beta_end), N)^2 (Stable Diffusion)
    LCM_BETA_SQUAREDCOS_CAP_V2, // the Glide cosine schedule (betas_for_alpha_bar)
} lcm_beta_schedule;

typedef enum lcm_prediction_type {
    LCM_PREDICT_EPSILON,      // the model predicts the noise
    LCM_PREDICT_SAMPLE,       // the model predicts x0 directly
    LCM_PREDICT_V_PREDICTION, // v = sqrt(a)*noise - sqrt(1-a)*x0
} lcm_prediction_type;

// LCMScheduler's constructor arguments, with its defaults (lcm_scheduler_config_default).
typedef struct lcm_scheduler_config {
    int64_t num_train_timesteps;       // 1000
    double beta_start;                 // 0.00085
    double beta_end;                   // 0.012
    lcm_beta_schedule beta_schedule;   // scaled_linear
    float *trained_betas;              // NULL, or num_train_timesteps betas owned by this config
    int64_t original_inference_steps;  // 50: the distillation schedule the steps are taken from
    bool clip_sample;                  // false
    double clip_sample_range;          // 1.0
    bool set_alpha_to_one;             // true
    int64_t steps_offset;              // 0 (stored; LCMScheduler 0.26.3 never reads it)
    lcm_prediction_type prediction_type; // epsilon
    bool thresholding;                 // false (true is not supported)
    double dynamic_thresholding_ratio; // 0.995 (only meaningful with thresholding)
    double sample_max_value;           // 1.0 (only meaningful with thresholding)
    char timestep_spacing[32];         // "leading" (stored; LCMScheduler 0.26.3 never reads it)
    double timestep_scaling;           // 10.0
    bool rescale_betas_zero_snr;       // false
} lcm_scheduler_config;

// Fills *out with LCMScheduler's defaults. Release with lcm_scheduler_config_free (harmless here).
lcm_status lcm_scheduler_config_default(lcm_scheduler_config *out);

// Releases what the config owns (trained_betas). NULL and default configs are fine.
void lcm_scheduler_config_free(lcm_scheduler_config *config);

typedef struct lcm_scheduler lcm_scheduler;

// Builds the noise schedule (betas, alphas_cumprod). The config is copied: the caller may free it
// right after. The caller owns *out (lcm_scheduler_free). Before set_timesteps the scheduler has no
// steps.
lcm_status lcm_scheduler_new(const lcm_scheduler_config *config, lcm_scheduler **out);
void lcm_scheduler_free(lcm_scheduler *scheduler);

// Chooses the inference timesteps, as LCMScheduler.set_timesteps(num_inference_steps,
// strength=strength) or, with custom_timesteps, set_timesteps(timesteps=custom, strength=strength).
//  - num_inference_steps: 1..original_inference_steps (must be 0 or n_custom with custom timesteps).
//  - strength: in (0, 1]; 1.0 for text-to-image. It is a double because diffusers multiplies the
//    Python float: int(50 * 0.7) = 35 in double but 34 with the float 0.7f.
//  - custom_timesteps (borrowed; NULL for the standard schedule): strictly descending, each in
//    0..num_train_timesteps-1; strength < 1 keeps the last int(n * strength) of them.
// Invalid requests are LCM_ERR_INVALID_ARGUMENT with diffusers' reason; the old steps are kept then.
lcm_status lcm_scheduler_set_timesteps(lcm_scheduler *scheduler, int num_inference_steps,
                                       double strength, const int64_t *custom_timesteps,
                                       int n_custom);

// The timesteps chosen by the last set_timesteps (0 / NULL before any). Borrowed; valid until the
// next set_timesteps or free.
int lcm_scheduler_num_steps(const lcm_scheduler *scheduler);
const int64_t *lcm_scheduler_timesteps(const lcm_scheduler *scheduler);

// Whether step `step_index` needs a noise draw: diffusers draws one unless
// step_index == num_inference_steps - 1. (With custom timesteps and strength < 1 diffusers keeps the
// untruncated num_inference_steps, so even the last step draws noise; this is reproduced.)
bool lcm_scheduler_needs_noise(const lcm_scheduler *scheduler, int step_index);

// The per-step scalars of step `step_index`, as diffusers' step() computes them.
typedef struct lcm_step_info {
    int64_t timestep;         // timesteps[step_index]
    int64_t prev_timestep;    // timesteps[step_index + 1], or timestep at the last step
    float alpha_prod_t;       // alphas_cumprod[timestep]
    float alpha_prod_t_prev;  // alphas_cumprod[prev_timestep] (final_alpha_cumprod if < 0)
    float c_skip, c_out;      // the boundary-condition scalings at timestep
} lcm_step_info;

lcm_status lcm_scheduler_step_info(const lcm_scheduler *scheduler, int step_index,
                                   lcm_step_info *out);

// One LCM step on `numel` values: model_output and sample -> denoised and prev_sample (the next
// latents). `noise` (numel values of the caller's randn draw) must be given exactly when
// lcm_scheduler_needs_noise(step_index) is true and NULL otherwise; then prev_sample = denoised.
// `denoised` may be NULL when not wanted. Outputs may be the same buffers as the inputs (the update
// is elementwise), e.g. prev_sample == sample to update latents in place.
lcm_status lcm_scheduler_step(const lcm_scheduler *scheduler, int step_index,
                              const float *model_output, const float *sample, const float *noise,
                              size_t numel, float *denoised, float *prev_sample);

// Boundary-condition scalings at any training timestep t (0..num_train_timesteps-1), computed in
// float32 as diffusers does for the tensor timesteps every pipeline passes.
void lcm_scheduler_scalings(const lcm_scheduler *scheduler, int64_t t, float *c_skip, float *c_out);

// alphas_cumprod[t] for 0 <= t < num_train_timesteps (the float32 values torch holds).
float lcm_scheduler_alpha_cumprod(const lcm_scheduler *scheduler, int64_t t);
// alphas_cumprod[0], or 1 with set_alpha_to_one.
float lcm_scheduler_final_alpha_cumprod(const lcm_scheduler *scheduler);
int64_t lcm_scheduler_num_train_timesteps(const lcm_scheduler *scheduler);

// img2img's forward diffusion (diffusers' add_noise) at training timestep t (0..N-1):
// out = sqrt(a_t) * original + sqrt(1 - a_t) * noise, in float32. `out` may alias either input.
lcm_status lcm_scheduler_add_noise(const lcm_scheduler *scheduler, int64_t t, const float *original,
                                   const float *noise, size_t numel, float *out);

#endif
