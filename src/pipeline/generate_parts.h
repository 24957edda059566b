// The parts of one generation, each in its own file, that generate.c (generate_run) puts together:
//   generate_request.c  the request checked and completed (sizes, steps, units, memory)
//   guidance.c          what steers the UNet: prompt embeddings, LCM's guidance embedding,
//                       classifier-free guidance
//   initial_latents.c   the starting latents: noise (text-to-image) or the noised init image
//   control_units.c     the ControlNet units and their residuals at each step
//   denoise.c           the step loop: UNet, guidance, scheduler step, previews, progress
// Every tensor a part returns is owned by the caller; the trace names are those of the golden files
// (fixtures/README.md section 7).
#ifndef LCM_PIPELINE_GENERATE_PARTS_H
#define LCM_PIPELINE_GENERATE_PARTS_H

#include <stdbool.h>
#include <stdio.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "lcm.h"
#include "pipeline/pipeline.h"
#include "sched/lcm_scheduler.h"

// ---- tracing and tensor layout, shared by the parts ----

static inline void generate_trace(generate_trace_fn fn, void *user, const char *name, const tensor *t) {
    if (fn && t) fn(user, name, t);
}

// Traces `t` as "stepSTEP.WHAT".
static inline void generate_trace_step(generate_trace_fn fn, void *user, int step, const char *what,
                                       const tensor *t) {
    char name[64];
    snprintf(name, sizeof name, "step%d.%s", step, what);
    generate_trace(fn, user, name, t);
}

// Makes *t plain NCHW (op outputs may come channels-last); false when out of memory.
static inline bool generate_make_nchw(tensor **t) {
    if (!*t || (*t)->layout == TENSOR_NCHW) return *t != NULL;
    tensor_replace(t, tensor_to_nchw(*t));
    return *t != NULL;
}

// ---- guidance.c ----

// Whether the request runs classifier-free guidance: as diffusers' StableDiffusionPipeline, only
// for UNets without an LCM guidance embedding and a guidance scale above 1.
bool guidance_uses_cfg(const lcm_pipeline *p, const lcm_request *r);

// prompt -> [batch, 77, hidden]: the embedding of one prompt, repeated for each image.
lcm_status guidance_encode_prompt(lcm_pipeline *p, const char *prompt, int batch, tensor **out);

// [batch, time_cond_proj_dim] LCM guidance embedding of w = guidance_scale - 1, or *out = NULL
// when the UNet has no cond_proj.
lcm_status guidance_embedding_condition(const lcm_pipeline *p, float guidance_scale, int batch,
                                        tensor **out);

// Classifier-free guidance on the UNet's [2B, ...] output: u + g * (c - u), u the first half
// (negative prompt), c the second. A new [B, ...] tensor, NULL when out of memory.
tensor *guidance_combine(const tensor *unet_output, float guidance);

// ---- initial_latents.c ----

// The strength as the double diffusers computes its img2img timesteps with (see the file).
double initial_latents_strength(float strength);

// The latents the first step starts from, [batch, C, H/8, W/8]: the generator's first draw for
// text-to-image, the encoded and noised init image for img2img (two draws). `s` has its timesteps.
lcm_status initial_latents(lcm_pipeline *p, const lcm_request *r, const lcm_scheduler *s, lcm_rng *rng,
                           generate_trace_fn trace, void *trace_user, tensor **out);

// ---- control_units.c ----

// Every ControlNet unit of a request ({image, scale, start, end}; control_image first) with its
// prepared image, one copy per UNet batch row.
typedef struct control_units {
    lcm_control_unit units[LCM_MAX_CONTROL_UNITS];
    tensor *images[LCM_MAX_CONTROL_UNITS];
    int count;
} control_units;

// Fills *out for the resolved request `r` (none without a ControlNet). `rows` is the UNet's batch.
// On failure the caller still frees *out (control_units_free).
lcm_status control_units_prepare(const lcm_request *r, int rows, generate_trace_fn trace,
                                 void *trace_user, control_units *out);

void control_units_free(control_units *c);

// The summed residuals of every unit active at step `step` of `steps` (diffusers' controlnet_keep)
// for this step's UNet input: down[0..skip_count) and *mid, owned by the caller (NULL when no
// unit is active: then *steered is false). The first active unit is traced.
lcm_status control_units_residuals(lcm_pipeline *p, const control_units *c, int step, int steps,
                                   const tensor *input, float timestep, const tensor *context,
                                   generate_trace_fn trace, void *trace_user, tensor **down,
                                   tensor **mid, bool *steered);

// ---- denoise.c ----

// What the step loop works on; everything borrowed.
typedef struct denoise_job {
    lcm_pipeline *p;
    const lcm_request *r;   // resolved (generate_request_check)
    bool cfg;               // classifier-free guidance: the UNet sees [negative; positive]
    lcm_scheduler *scheduler;
    lcm_rng *rng;
    const tensor *context;  // the UNet's text condition ([negative x B; positive x B] with cfg)
    const tensor *cond;     // the LCM guidance embedding, or NULL
    const control_units *control;
    generate_trace_fn trace;
    void *trace_user;
} denoise_job;

// Runs every step from `latents` (updated in place); *denoised (same shape) receives the last
// step's denoised estimate, which the image is decoded from. A progress callback that cancels gives
// LCM_ERR_CANCELLED; one that returns LCM_STOP_KEEP_PARTIAL with keep_partial stops with LCM_OK.
lcm_status denoise(const denoise_job *job, tensor *latents, tensor *denoised);

#endif
