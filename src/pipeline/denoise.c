// The step loop of a generation (pipeline/generate_parts.h), as diffusers' pipelines run it:
//
//   for each LCM timestep t:
//       input = latents, twice with classifier-free guidance ([negative; positive] rows)
//       residuals = ControlNet units active at this step (none without a ControlNet)
//       eps = unet(input, t, context, guidance embedding, residuals), guided with CFG
//       denoised, latents = lcm_step(eps, latents, noise = randn(...) except at the last step)
//       previews and progress callbacks
#include <stdlib.h>
#include <time.h>

#include "core/error.h"
#include "pipeline/decode.h"
#include "pipeline/generate_parts.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// One preview per image of the batch, of the current denoised estimate.
static lcm_status send_previews(const lcm_pipeline *p, const lcm_request *r, const tensor *denoised,
                                int steps_done, int total_steps) {
    for (int b = 0; b < r->batch; b++) {
        lcm_image preview;
        LCM_TRY(decode_preview(p, denoised, b, &preview));
        r->preview(r->preview_user_data, steps_done, total_steps, b, &preview);
        free(preview.rgb);
    }
    return LCM_OK;
}

// The UNet's noise prediction for step `i` at timestep t (guided when the job runs CFG): *eps is
// [batch, C, h, w], plain NCHW, owned by the caller.
static lcm_status predict_noise(const denoise_job *job, int i, int steps, float t, const tensor *latents,
                                tensor **eps) {
    *eps = NULL;
    lcm_pipeline *p = job->p;
    tensor *model_input = NULL, *out = NULL, *down[UNET_MAX_SKIPS] = {0}, *mid = NULL;
    int down_count = p->controlnet ? controlnet_get_config(p->controlnet)->unet.skip_count : 0;
    lcm_status st = LCM_OK;
    if (job->cfg && !(model_input = tensor_concat_batch(latents, latents))) return LCM_ERR_OUT_OF_MEMORY;
    const tensor *input = job->cfg ? model_input : latents;
    generate_trace_step(job->trace, job->trace_user, i, "unet_latent_input", input);
    bool steered = false;
    st = control_units_residuals(p, job->control, i, steps, input, t, job->context, job->trace,
                                 job->trace_user, down, &mid, &steered);
    unet_residuals residuals = {(const tensor *const *)down, down_count, mid};
    if (st == LCM_OK)
        st = unet_forward(p->unet, input, t, job->context, job->cond, steered ? &residuals : NULL, &out);
    for (int j = 0; j < down_count; j++) tensor_replace(&down[j], NULL);
    tensor_replace(&mid, NULL);
    tensor_replace(&model_input, NULL);
    if (st == LCM_OK && !generate_make_nchw(&out)) st = LCM_ERR_OUT_OF_MEMORY;
    if (st != LCM_OK) {
        tensor_free(out);
        return st;
    }
    generate_trace_step(job->trace, job->trace_user, i, "noise_pred", out);
    generate_trace_step(job->trace, job->trace_user, i, "unet_output", out);
    if (!job->cfg) {
        *eps = out;
        return LCM_OK;
    }
    *eps = guidance_combine(out, job->r->guidance_scale);
    tensor_free(out);
    if (!*eps) return LCM_ERR_OUT_OF_MEMORY;
    generate_trace_step(job->trace, job->trace_user, i, "noise_pred_guided", *eps);
    return LCM_OK;
}

lcm_status denoise(const denoise_job *job, tensor *latents, tensor *denoised) {
    const lcm_request *r = job->r;
    size_t numel = (size_t)tensor_numel(latents);
    tensor *noise = tensor_new(latents->ndim, latents->shape);
    if (!noise) return LCM_ERR_OUT_OF_MEMORY;
    int steps = lcm_scheduler_num_steps(job->scheduler);
    const int64_t *timesteps = lcm_scheduler_timesteps(job->scheduler);
    double start = now_seconds();
    lcm_status st = LCM_OK;
    for (int i = 0; i < steps && st == LCM_OK; i++) {
        float t = (float)timesteps[i];
        generate_trace_step(job->trace, job->trace_user, i, "latents_in", latents);
        tensor *eps = NULL;
        st = predict_noise(job, i, steps, t, latents, &eps);
        if (st != LCM_OK) break;
        bool draw = lcm_scheduler_needs_noise(job->scheduler, i);
        if (draw) {
            lcm_rng_randn(job->rng, noise->data, numel);
            generate_trace_step(job->trace, job->trace_user, i, "scheduler_noise", noise);
        }
        st = lcm_scheduler_step(job->scheduler, i, eps->data, latents->data, draw ? noise->data : NULL,
                                numel, denoised->data, latents->data);
        tensor_free(eps);
        if (st != LCM_OK) break;
        generate_trace_step(job->trace, job->trace_user, i, "denoised", denoised);
        generate_trace_step(job->trace, job->trace_user, i, "latents_out", latents);
        if (r->preview && (st = send_previews(job->p, r, denoised, i + 1, steps)) != LCM_OK) break;
        int stop = r->progress ? r->progress(r->progress_user_data, i + 1, steps, now_seconds() - start) : 0;
        if (stop) {
            if (r->keep_partial && stop == LCM_STOP_KEEP_PARTIAL) break; // decode what the last step denoised
            st = lcm_fail(LCM_ERR_CANCELLED, "generation cancelled after step %d of %d", i + 1, steps);
        }
    }
    tensor_free(noise);
    return st;
}
