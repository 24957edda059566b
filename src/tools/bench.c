// The stage timing of `lcm bench` (tools/bench.h).
#include "tools/bench.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "models/guidance_embedding.h"
#include "models/vae_tiled.h"
#include "pipeline/control_image.h"
#include "pipeline/pipeline.h"
#include "tools/flops.h"

double bench_seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double bench_cpu_seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void bench_fill_pseudo_random(float *x, int64_t n, uint32_t seed) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) * 0x1p-23f - 1.0f; // uniform in [-1, 1)
    }
}

struct lcm_bench {
    lcm_pipeline *pipeline;
    lcm_request request; // the end-to-end run's
    bool cfg;            // classifier-free guidance: the UNet step runs a batch of 2
    // --taesd: the decoders side by side. The end-to-end run keeps the pipeline's VAE.
    taesd_model *taesd;
    vae_tiling tiling;
    // The inputs the stage timings share, made once: prompt embeddings, latents, guidance
    // condition; for the UNet step, its batch (latents twice and [negative; prompt] embeddings under
    // guidance) and the prepared control image.
    tensor *embeds, *latents, *cond;
    tensor *step_latents, *step_context, *control;
};

static lcm_flops public_flops(flop_count f) {
    return (lcm_flops){f.conv3x3, f.conv1x1, f.linear, f.attention};
}

static lcm_status run_text(const lcm_bench *b, const char *prompt, tensor **embeds) {
    int32_t ids[CLIP_MAX_LENGTH];
    LCM_TRY(clip_tokenize(b->pipeline->tokenizer, prompt, ids, NULL));
    tensor_release_cached(); // as a generation does before its text encoder's pages come back
    lcm_status st = clip_text_forward(b->pipeline->text_encoder, ids, 1, CLIP_MAX_LENGTH, embeds, NULL);
    // As a generation does: the other stages run without the text encoder resident, and this
    // stage's time includes reading its weights back.
    clip_text_release_pages(b->pipeline->text_encoder);
    return st;
}

// One denoising step's networks as generate_run runs them: the ControlNet's residuals, then the UNet.
static lcm_status unet_step(const lcm_bench *b, tensor **out) {
    lcm_pipeline *p = b->pipeline;
    if (!p->controlnet) return unet_forward(p->unet, b->step_latents, 999.0f, b->step_context, b->cond, NULL, out);
    int count = controlnet_get_config(p->controlnet)->unet.skip_count;
    tensor *down[UNET_MAX_SKIPS] = {0}, *mid = NULL;
    lcm_status st = controlnet_forward(p->controlnet, b->step_latents, 999.0f, b->step_context, b->control,
                                       b->request.control_scale, down, &mid);
    if (st == LCM_OK) {
        unet_residuals residuals = {(const tensor *const *)down, count, mid};
        st = unet_forward(p->unet, b->step_latents, 999.0f, b->step_context, b->cond, &residuals, out);
    }
    for (int j = 0; j < count; j++) tensor_free(down[j]);
    tensor_free(mid);
    return st;
}

lcm_status bench_run_stage(lcm_bench *b, lcm_bench_stage stage, double *elapsed, double *cpu) {
    double t0 = bench_seconds_now(), c0 = bench_cpu_seconds_now();
    tensor *out = NULL;
    lcm_status st;
    switch (stage) {
    case LCM_BENCH_TEXT_ENCODING: st = run_text(b, b->request.prompt, &out); break;
    case LCM_BENCH_UNET_STEP: st = unet_step(b, &out); break;
    case LCM_BENCH_VAE_DECODE: st = vae_decode(b->pipeline->vae, b->latents, &out); break;
    case LCM_BENCH_VAE_DECODE_TILED:
        st = b->taesd ? vae_decode_tiled(b->pipeline->vae, b->latents, &b->tiling, NULL, NULL, &out)
                      : lcm_fail(LCM_ERR_INVALID_ARGUMENT, "the tiled VAE decode is timed only with a TAESD");
        break;
    case LCM_BENCH_TAESD_DECODE:
        st = b->taesd ? taesd_decode(b->taesd, b->latents, &out)
                      : lcm_fail(LCM_ERR_INVALID_ARGUMENT, "no TAESD to time");
        break;
    default: st = lcm_fail(LCM_ERR_INVALID_ARGUMENT, "stage %d is not a network stage", (int)stage); break;
    }
    *elapsed = bench_seconds_now() - t0;
    *cpu = bench_cpu_seconds_now() - c0;
    tensor_free(out);
    return st;
}

static lcm_status make_inputs(lcm_bench *b) {
    const unet_config *uc = unet_get_config(b->pipeline->unet);
    int factor = vae_get_config(b->pipeline->vae)->downscale_factor;
    const lcm_request *r = &b->request;
    LCM_TRY(run_text(b, r->prompt, &b->embeds));
    b->latents = tensor_new4(1, uc->in_channels, r->height / factor, r->width / factor);
    if (!b->latents) return LCM_ERR_OUT_OF_MEMORY;
    bench_fill_pseudo_random(b->latents->data, tensor_numel(b->latents), 7);
    if (uc->time_cond_proj_dim > 0) {
        b->cond = tensor_new2(1, uc->time_cond_proj_dim);
        if (!b->cond) return LCM_ERR_OUT_OF_MEMORY;
        lcm_guidance_embedding(r->guidance_scale - 1.0f, uc->time_cond_proj_dim, b->cond->data);
    }
    if (!b->cfg) {
        b->step_latents = tensor_copy(b->latents);
        b->step_context = tensor_copy(b->embeds);
    } else {
        // [negative; positive] as a generation under guidance: the empty negative prompt and the prompt.
        tensor *negative = NULL;
        LCM_TRY(run_text(b, "", &negative));
        b->step_context = tensor_concat_batch(negative, b->embeds);
        b->step_latents = tensor_concat_batch(b->latents, b->latents);
        tensor_free(negative);
    }
    if (!b->step_latents || !b->step_context) return LCM_ERR_OUT_OF_MEMORY;
    const lcm_image *control = r->control_image;
    if (control)
        LCM_TRY(control_image_prepare(control->rgb, control->width, control->height, r->width, r->height,
                                      b->cfg ? 2 : 1, &b->control));
    return LCM_OK;
}

// The work of each network stage and of the end-to-end run of `steps` steps.
static void count_flops(const lcm_bench *b, int steps, lcm_bench_plan *plan) {
    const lcm_pipeline *p = b->pipeline;
    const vae_config *vc = vae_get_config(p->vae);
    int lh = b->request.height / vc->downscale_factor, lw = b->request.width / vc->downscale_factor;
    flop_count text = clip_text_flops(clip_text_get_config(p->text_encoder), 1, CLIP_MAX_LENGTH);
    int step_batch = b->cfg ? 2 : 1;
    flop_count unet = unet_flops(unet_get_config(p->unet), step_batch, lh, lw, CLIP_MAX_LENGTH);
    if (p->controlnet) {
        flop_count control = controlnet_flops(controlnet_get_config(p->controlnet), step_batch, lh, lw,
                                              CLIP_MAX_LENGTH);
        unet.conv3x3 += control.conv3x3;
        unet.conv1x1 += control.conv1x1;
        unet.linear += control.linear;
        unet.attention += control.attention;
    }
    flop_count vae = vae_decode_flops(vc, 1, lh, lw);
    plan->flops[LCM_BENCH_TEXT_ENCODING] = public_flops(text);
    plan->flops[LCM_BENCH_UNET_STEP] = public_flops(unet);
    plan->flops[LCM_BENCH_VAE_DECODE] = public_flops(vae);
    // One step's networks per step (LCM's guidance is an embedding; classifier-free guidance doubles
    // the step's batch and encodes the negative prompt too).
    double texts = b->cfg ? 2 : 1;
    plan->flops[LCM_BENCH_END_TO_END] = (lcm_flops){
        texts * text.conv3x3 + steps * unet.conv3x3 + vae.conv3x3,
        texts * text.conv1x1 + steps * unet.conv1x1 + vae.conv1x1,
        texts * text.linear + steps * unet.linear + vae.linear,
        texts * text.attention + steps * unet.attention + vae.attention};
    plan->timed[LCM_BENCH_TEXT_ENCODING] = plan->timed[LCM_BENCH_UNET_STEP] = plan->timed[LCM_BENCH_VAE_DECODE] =
        plan->timed[LCM_BENCH_END_TO_END] = 1;
}

// options->taesd: loads TAESD and fixes the tiling of the tiled VAE row: diffusers' enable_tiling()
// tiles where they split this size, else the largest halving of them that does (what --vae-tiling
// auto would reach for a tight budget), so that the row always measures a tiled decode.
static lcm_status add_decoders(lcm_bench *b, const char *taesd_dir, lcm_bench_plan *plan) {
    // fp32 whatever the pipeline's precision, as this row has always measured it (lcm generate
    // --taesd loads TAESD with the pipeline's backend instead).
    ops_backend fp32 = ops_backend_from_environment(LCM_PRECISION_FP32);
    LCM_TRY(taesd_load_dir(&fp32, taesd_dir, &b->taesd));
    const vae_config *vc = vae_get_config(b->pipeline->vae);
    int lh = b->request.height / vc->downscale_factor, lw = b->request.width / vc->downscale_factor;
    vae_tiling *t = &b->tiling;
    LCM_TRY(vae_tiling_defaults(vc, t));
    while (!vae_tiling_applies(t, lh, lw) && t->tile_latent_min_size >= 8)
        LCM_TRY(vae_tiling_init(t, t->tile_sample_min_size / 2, t->tile_latent_min_size / 2, t->tile_overlap_factor));
    if (!vae_tiling_applies(t, lh, lw))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "--taesd: %dx%d latents are too small to tile", lw, lh);
    // The tiled decode's work: every tile decoded whole, overlaps included.
    flop_count tiled = {0};
    int rows = vae_tiling_tile_count(t, lh), cols = vae_tiling_tile_count(t, lw);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            int64_t y = (int64_t)i * t->stride_latent, x = (int64_t)j * t->stride_latent;
            int th = (int)(lh - y < t->tile_latent_min_size ? lh - y : t->tile_latent_min_size);
            int tw = (int)(lw - x < t->tile_latent_min_size ? lw - x : t->tile_latent_min_size);
            flop_count f = vae_decode_flops(vc, 1, th, tw);
            tiled.conv3x3 += f.conv3x3;
            tiled.conv1x1 += f.conv1x1;
            tiled.linear += f.linear;
            tiled.attention += f.attention;
        }
    snprintf(plan->tiles, sizeof plan->tiles, "%dx%d tiles of %d px", rows, cols, t->tile_sample_min_size);
    plan->flops[LCM_BENCH_VAE_DECODE_TILED] = public_flops(tiled);
    plan->flops[LCM_BENCH_TAESD_DECODE] = public_flops(taesd_decode_flops(taesd_get_config(b->taesd), 1, lh, lw));
    plan->timed[LCM_BENCH_VAE_DECODE_TILED] = plan->timed[LCM_BENCH_TAESD_DECODE] = 1;
    return LCM_OK;
}

lcm_status bench_open(lcm_pipeline *pipeline, const lcm_bench_options *options, const lcm_request *request,
                      lcm_bench **out, lcm_bench_plan *plan) {
    *out = NULL;
    memset(plan, 0, sizeof *plan);
    // The request checks (sizes, steps) before anything else, so a bad one fails fast and clearly.
    lcm_request resolved;
    LCM_TRY(generate_request_check(pipeline, request, &resolved));
    lcm_bench *b = calloc(1, sizeof *b);
    if (!b) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    b->pipeline = pipeline;
    b->request = *request;
    // As generate_run: guidance above 1 on a UNet without LCM's guidance embedding runs both prompts.
    b->cfg = unet_get_config(pipeline->unet)->time_cond_proj_dim == 0 && request->guidance_scale > 1.0f;
    plan->classifier_free = b->cfg;
    count_flops(b, resolved.steps, plan);
    lcm_status st = options->taesd ? add_decoders(b, options->taesd, plan) : LCM_OK;
    if (st == LCM_OK) st = make_inputs(b);
    if (st != LCM_OK) {
        bench_close(b);
        return st;
    }
    *out = b;
    return LCM_OK;
}

const lcm_request *bench_end_to_end_request(const lcm_bench *b) { return &b->request; }

lcm_pipeline *bench_pipeline(const lcm_bench *b) { return b->pipeline; }

void bench_close(lcm_bench *b) {
    if (!b) return;
    tensor_free(b->embeds);
    tensor_free(b->latents);
    tensor_free(b->cond);
    tensor_free(b->step_latents);
    tensor_free(b->step_context);
    tensor_free(b->control);
    taesd_free(b->taesd);
    free(b);
}
