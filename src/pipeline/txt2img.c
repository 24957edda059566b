// Text to image with a Latent Consistency Model, step for step as diffusers'
// LatentConsistencyModelPipeline (fixtures/README.md section 7.2):
//
//   ids = tokenize(prompt); embeds = text_encoder(ids)
//   latents = randn([batch, 4, H/8, W/8])                        (first draw of the generator)
//   w_embedding = guidance_embedding(guidance_scale - 1)
//   for each LCM timestep t:
//       eps = unet(latents, t, embeds, w_embedding)
//       denoised, latents = lcm_step(eps, latents, noise = randn(...) except at the last step)
//   image = vae.decode(denoised / scaling_factor)
//
// The random draws happen in exactly diffusers' order, so the seed alone reproduces its images.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/rng.h"
#include "models/guidance_embedding.h"
#include "pipeline/pipeline.h"

// Beyond this many pixels per image the VAE's activations alone need tens of GB.
#define TXT2IMG_MAX_SIDE 4096
#define TXT2IMG_MAX_BATCH 16

void lcm_request_init(lcm_request *r) {
    memset(r, 0, sizeof *r);
    r->prompt = "";
    r->steps = 4;
    r->guidance_scale = 8.5f;
    r->batch = 1;
    r->strength = 0.8f;
    r->control_scale = 1.0f;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Rough peak bytes of one generation beyond the weights: the VAE decoder's widest activations at
// full resolution dominate (128 channels x H x W, a handful alive at once, per image).
static double estimated_activation_bytes(const lcm_request *r) {
    return (double)r->batch * r->width * r->height * 128.0 * sizeof(float) * 6.0;
}

lcm_status txt2img_validate(const lcm_pipeline *p, const lcm_request *request, lcm_request *r) {
    *r = *request;
    if (!r->prompt) r->prompt = "";
    if (r->negative_prompt && r->negative_prompt[0])
        return lcm_fail(LCM_ERR_UNSUPPORTED, "negative prompts are not supported yet");
    if (r->init_image) return lcm_fail(LCM_ERR_UNSUPPORTED, "img2img is not supported yet");
    if (r->control_image)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "ControlNet images are not supported yet");
    if (r->preview) return lcm_fail(LCM_ERR_UNSUPPORTED, "previews are not supported yet");
    int native = lcm_pipeline_default_size(p);
    if (r->width == 0) r->width = native;
    if (r->height == 0) r->height = native;
    if (r->width < 8 || r->height < 8 || r->width % 8 || r->height % 8 ||
        r->width > TXT2IMG_MAX_SIDE || r->height > TXT2IMG_MAX_SIDE)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "image size %dx%d: width and height must be multiples of 8 between 8 and %d",
                        r->width, r->height, TXT2IMG_MAX_SIDE);
    int max_steps = lcm_pipeline_max_steps(p);
    if (r->steps < 1 || r->steps > max_steps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "steps = %d: expected 1..%d (the scheduler's original_inference_steps)",
                        r->steps, max_steps);
    if (r->batch < 1 || r->batch > TXT2IMG_MAX_BATCH)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "batch = %d: expected 1..%d", r->batch,
                        TXT2IMG_MAX_BATCH);
    if (!isfinite(r->guidance_scale) || fabsf(r->guidance_scale) > 1000.0f)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "guidance scale %g: expected a finite number "
                        "(LCM models are distilled for about 1..15)", r->guidance_scale);
    double pages = (double)sysconf(_SC_PHYS_PAGES), page_size = (double)sysconf(_SC_PAGESIZE);
    double need = estimated_activation_bytes(r);
    if (pages > 0 && page_size > 0 && need > pages * page_size)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "%dx%d x %d images needs about %.1f GB of working memory, more than this "
                        "machine has (%.1f GB); use a smaller size or batch",
                        r->width, r->height, r->batch, need / 1e9, pages * page_size / 1e9);
    return LCM_OK;
}

static void trace(txt2img_trace_fn fn, void *user, const char *name, const tensor *t) {
    if (fn && t) fn(user, name, t);
}

static void trace_step(txt2img_trace_fn fn, void *user, int step, const char *what, const tensor *t) {
    char name[64];
    snprintf(name, sizeof name, "step%d.%s", step, what);
    trace(fn, user, name, t);
}

// prompt -> [batch, 77, hidden]: the embedding of one prompt, repeated for each image.
static lcm_status encode_prompt(lcm_pipeline *p, const char *prompt, int batch, tensor **out) {
    int32_t ids[CLIP_MAX_LENGTH];
    LCM_TRY(clip_tokenize(p->tokenizer, prompt, ids, NULL));
    tensor *one = NULL;
    LCM_TRY(clip_text_forward(p->text_encoder, ids, 1, CLIP_MAX_LENGTH, &one, NULL));
    tensor *embeds = tensor_new3(batch, one->shape[1], one->shape[2]);
    if (!embeds) {
        tensor_free(one);
        return LCM_ERR_OUT_OF_MEMORY;
    }
    int64_t per_image = tensor_numel(one);
    for (int b = 0; b < batch; b++) memcpy(embeds->data + b * per_image, one->data, sizeof(float) * per_image);
    tensor_free(one);
    *out = embeds;
    return LCM_OK;
}

// [batch, time_cond_proj_dim] guidance embedding, or NULL when the UNet has no cond_proj.
static lcm_status guidance_condition(const lcm_pipeline *p, float guidance_scale, int batch,
                                     tensor **out) {
    *out = NULL;
    int dim = unet_get_config(p->unet)->time_cond_proj_dim;
    if (dim <= 0) return LCM_OK;
    tensor *cond = tensor_new2(batch, dim);
    if (!cond) return LCM_ERR_OUT_OF_MEMORY;
    // diffusers: w = guidance_scale - 1 as a float32 tensor.
    float w = guidance_scale - 1.0f;
    for (int b = 0; b < batch; b++) lcm_guidance_embedding(w, dim, cond->data + (int64_t)b * dim);
    *out = cond;
    return LCM_OK;
}

lcm_status txt2img_run(lcm_pipeline *p, const lcm_request *request, txt2img_trace_fn trace_fn,
                       void *trace_user, tensor **images) {
    *images = NULL;
    lcm_request r;
    LCM_TRY(txt2img_validate(p, request, &r));

    lcm_scheduler *scheduler = NULL;
    tensor *embeds = NULL, *cond = NULL, *latents = NULL, *denoised = NULL, *noise = NULL;
    tensor *eps = NULL, *image = NULL;
    lcm_status st = lcm_scheduler_new(&p->scheduler_config, &scheduler);
    if (st == LCM_OK) st = lcm_scheduler_set_timesteps(scheduler, r.steps, 1.0f, NULL, 0);
    if (st == LCM_OK) st = encode_prompt(p, r.prompt, r.batch, &embeds);
    if (st == LCM_OK) st = guidance_condition(p, r.guidance_scale, r.batch, &cond);
    if (st != LCM_OK) goto done;
    trace(trace_fn, trace_user, "prompt_embeds", embeds);
    trace(trace_fn, trace_user, "timestep_cond", cond);

    int latent_channels = unet_get_config(p->unet)->in_channels;
    int factor = vae_get_config(p->vae)->downscale_factor;
    int64_t lh = r.height / factor, lw = r.width / factor;
    lcm_rng rng;
    lcm_rng_seed(&rng, r.seed);
    latents = tensor_new4(r.batch, latent_channels, lh, lw);
    denoised = tensor_new4(r.batch, latent_channels, lh, lw);
    noise = tensor_new4(r.batch, latent_channels, lh, lw);
    if (!latents || !denoised || !noise) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    size_t numel = (size_t)tensor_numel(latents);
    lcm_rng_randn(&rng, latents->data, numel); // init_noise_sigma is 1 for LCM
    trace(trace_fn, trace_user, "initial_latents", latents);

    int steps = lcm_scheduler_num_steps(scheduler);
    const int64_t *timesteps = lcm_scheduler_timesteps(scheduler);
    double start = now_seconds();
    for (int i = 0; i < steps; i++) {
        trace_step(trace_fn, trace_user, i, "latents_in", latents);
        st = unet_forward(p->unet, latents, (float)timesteps[i], embeds, cond, NULL, &eps);
        if (st != LCM_OK) goto done;
        // the scheduler works on plain NCHW arrays; the fast kernels return channels-last
        tensor_replace(&eps, tensor_to_nchw(eps));
        if (!eps) {
            st = LCM_ERR_OUT_OF_MEMORY;
            goto done;
        }
        trace_step(trace_fn, trace_user, i, "noise_pred", eps);
        bool draw = lcm_scheduler_needs_noise(scheduler, i);
        if (draw) {
            lcm_rng_randn(&rng, noise->data, numel);
            trace_step(trace_fn, trace_user, i, "scheduler_noise", noise);
        }
        st = lcm_scheduler_step(scheduler, i, eps->data, latents->data, draw ? noise->data : NULL,
                                numel, denoised->data, latents->data);
        tensor_replace(&eps, NULL);
        if (st != LCM_OK) goto done;
        trace_step(trace_fn, trace_user, i, "denoised", denoised);
        trace_step(trace_fn, trace_user, i, "latents_out", latents);
        if (r.progress && r.progress(r.progress_user_data, i + 1, steps, now_seconds() - start)) {
            st = lcm_fail(LCM_ERR_CANCELLED, "generation cancelled after step %d of %d", i + 1, steps);
            goto done;
        }
    }

    // The image comes from the last denoised latents (equal to `latents` after the last step).
    // A division, not a multiplication by the reciprocal: that is what diffusers computes.
    float scaling_factor = vae_get_config(p->vae)->scaling_factor;
    for (size_t k = 0; k < numel; k++) denoised->data[k] /= scaling_factor;
    st = vae_decode(p->vae, denoised, &image);
    if (st != LCM_OK) goto done;
    tensor_replace(&image, tensor_to_nchw(image)); // callers index the image as NCHW
    if (!image) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    trace(trace_fn, trace_user, "image_decoded", image);
    *images = image;
    image = NULL;
done:
    lcm_scheduler_free(scheduler);
    tensor_free(embeds);
    tensor_free(cond);
    tensor_free(latents);
    tensor_free(denoised);
    tensor_free(noise);
    tensor_free(eps);
    tensor_free(image);
    return st;
}

void lcm_result_free(lcm_result *result) {
    if (!result) return;
    for (int i = 0; i < result->count; i++) free(result->images[i].rgb);
    free(result->images);
    free(result);
}

lcm_status lcm_generate(lcm_pipeline *p, const lcm_request *request, lcm_result **out) {
    *out = NULL;
    if (!p || !request) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_generate: NULL argument");
    tensor *images = NULL;
    LCM_TRY(txt2img_run(p, request, NULL, NULL, &images));
    int batch = (int)images->shape[0], height = (int)images->shape[2], width = (int)images->shape[3];
    lcm_result *result = calloc(1, sizeof *result);
    if (result) result->images = calloc((size_t)batch, sizeof *result->images);
    if (!result || !result->images) goto oom;
    result->seed = request->seed;
    for (int b = 0; b < batch; b++) {
        lcm_image *img = &result->images[b];
        img->width = width;
        img->height = height;
        img->rgb = malloc((size_t)width * height * 3);
        if (!img->rgb) goto oom;
        result->count++;
        lcm_status st = vae_image_to_rgb8(images, b, img->rgb);
        if (st != LCM_OK) {
            tensor_free(images);
            lcm_result_free(result);
            return st;
        }
    }
    tensor_free(images);
    *out = result;
    return LCM_OK;
oom:
    tensor_free(images);
    lcm_result_free(result);
    return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for the output images");
}
