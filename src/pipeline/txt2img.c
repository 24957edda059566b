// Image generation with a Latent Consistency Model, step for step as diffusers' pipelines:
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
// and, switched on by the request and the model (sections 7.3, 7.4):
//  - classifier-free guidance (StableDiffusionPipeline with the LCM scheduler; UNets without a
//    guidance embedding, guidance > 1): the UNet sees [negative; positive] embeddings and a doubled
//    latent batch, eps = u + g * (c - u);
//  - img2img (LatentConsistencyModelImg2ImgPipeline): the latents start from the encoded init image
//    (a latent sample, then add_noise to the first of the strength-cut timesteps: two draws);
//  - ControlNet (StableDiffusionControlNetPipeline): before each UNet call the ControlNet turns the
//    same input batch and the control image into residuals for the UNet's skips and mid block.
//
// The random draws happen in exactly diffusers' order, so the seed alone reproduces its images.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/rng.h"
#include "models/guidance_embedding.h"
#include "io/file.h"
#include "io/image_resize.h"
#include "pipeline/control_image.h"
#include "pipeline/decode.h"
#include "pipeline/pipeline.h"

// Beyond this many pixels per image the VAE's activations alone need tens of GB.
#define TXT2IMG_MAX_SIDE 4096
#define TXT2IMG_MAX_BATCH 16

void generate_request_init(lcm_request *r) {
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

// Rough peak bytes of one generation beyond the weights: the decode (the smallest the pipeline may
// choose: tiled when tiling is allowed, see pipeline/decode.h) or the UNet's activations at latent
// resolution (skip connections and feed-forward inputs: about 24 x block_out_channels[0] floats
// per latent pixel), whichever is larger.
static double estimated_activation_bytes(const lcm_pipeline *p, const lcm_request *r) {
    int factor = vae_get_config(p->vae)->downscale_factor;
    int64_t lh = r->height / factor, lw = r->width / factor;
    double unet = (double)r->batch * lh * lw * 24.0 * unet_get_config(p->unet)->block_out_channels[0] *
                  sizeof(float);
    double decode = decode_min_working_bytes(p, r->batch, lh, lw);
    return decode > unet ? decode : unet;
}

// Whether the request runs classifier-free guidance: as diffusers' StableDiffusionPipeline, only for
// UNets without an LCM guidance embedding and a guidance scale above 1.
static bool uses_cfg(const lcm_pipeline *p, const lcm_request *r) {
    return unet_get_config(p->unet)->time_cond_proj_dim == 0 && r->guidance_scale > 1.0f;
}

lcm_status generate_request_check(const lcm_pipeline *p, const lcm_request *request, lcm_request *r) {
    *r = *request;
    if (!r->prompt) r->prompt = "";
    bool has_negative = r->negative_prompt && r->negative_prompt[0];
    bool lcm_unet = unet_get_config(p->unet)->time_cond_proj_dim > 0;
    if (has_negative && lcm_unet)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "a negative prompt needs classifier-free guidance, which LCM-distilled UNets "
                        "(time_cond_proj_dim set) do not use; LatentConsistencyModelPipeline has no "
                        "negative prompt");
    // The LCM-LoRA recipe's rule: guidance below 1 with a negative prompt means "1 + that much
    // guidance", so the negative prompt is not silently ignored.
    if (has_negative && !lcm_unet && r->guidance_scale < 1.0f && r->guidance_scale >= 0.0f)
        r->guidance_scale += 1.0f;
    bool has_control = r->control_image || r->control_unit_count > 0;
    if (r->control_unit_count < 0 || (r->control_unit_count > 0 && !r->control_units) ||
        r->control_unit_count + (r->control_image != NULL) > LCM_MAX_CONTROL_UNITS)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%d control units: expected at most %d, with their array",
                        r->control_unit_count + (r->control_image != NULL), LCM_MAX_CONTROL_UNITS);
    if (has_control && !p->controlnet)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "a control image was given, but the pipeline was opened without a ControlNet");
    if (p->controlnet && !has_control)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "the pipeline has a ControlNet: the request needs a control image");
    for (int i = 0; i < r->control_unit_count; i++) {
        const lcm_control_unit *u = &r->control_units[i];
        if (!u->image)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "control unit %d has no image", i);
        if (!(isfinite(u->scale) && fabsf(u->scale) <= 100.0f))
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "control unit %d: scale %g: expected a finite number "
                            "(usually 0..2)", i, u->scale);
        if (!(u->guidance_start >= 0.0f && u->guidance_start <= u->guidance_end && u->guidance_end <= 1.0f))
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "control unit %d: guidance %g..%g: expected "
                            "0 <= start <= end <= 1", i, u->guidance_start, u->guidance_end);
    }
    // The first control image decides the size when none is given.
    const lcm_image *first_control = r->control_image ? r->control_image
                                     : r->control_unit_count > 0 ? r->control_units[0].image : NULL;
    const lcm_image *sources[2] = {r->init_image, first_control};
    const char *source_names[2] = {"init image", "control image"};
    for (int i = 0; i < 2; i++) {
        const lcm_image *img = sources[i];
        if (!img) continue;
        if (!img->rgb || img->width < 1 || img->height < 1 || img->width > TXT2IMG_MAX_SIDE ||
            img->height > TXT2IMG_MAX_SIDE)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: %dx%d, expected 1..%d pixels a side",
                            source_names[i], img->width, img->height, TXT2IMG_MAX_SIDE);
        // diffusers takes the output size from the image when none is given, rounded down to a
        // multiple of the VAE factor (VaeImageProcessor.get_default_height_width).
        int factor = vae_get_config(p->vae)->downscale_factor;
        if (r->width == 0) r->width = img->width - img->width % factor;
        if (r->height == 0) r->height = img->height - img->height % factor;
        if (r->width == 0 || r->height == 0)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: %dx%d is smaller than %d pixels a side",
                            source_names[i], img->width, img->height, factor);
    }
    if (r->init_image && !(r->strength > 0.0f && r->strength <= 1.0f))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "strength %g: expected 0 < strength <= 1",
                        r->strength);
    if (r->control_image && !(isfinite(r->control_scale) && fabsf(r->control_scale) <= 100.0f))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "control scale %g: expected a finite number "
                        "(usually 0..2)", r->control_scale);
    int native = pipeline_default_size(p);
    if (r->width == 0) r->width = native;
    if (r->height == 0) r->height = native;
    if (r->width < 8 || r->height < 8 || r->width % 8 || r->height % 8 ||
        r->width > TXT2IMG_MAX_SIDE || r->height > TXT2IMG_MAX_SIDE)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "image size %dx%d: width and height must be multiples of 8 between 8 and %d",
                        r->width, r->height, TXT2IMG_MAX_SIDE);
    int max_steps = pipeline_max_steps(p);
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
    double need = estimated_activation_bytes(p, r);
    if (pages > 0 && page_size > 0 && need > pages * page_size)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "%dx%d x %d images needs about %.1f GB of working memory, more than this "
                        "machine has (%.1f GB); use a smaller size or batch",
                        r->width, r->height, r->batch, need / 1e9, pages * page_size / 1e9);
    return LCM_OK;
}

static void trace(generate_trace_fn fn, void *user, const char *name, const tensor *t) {
    if (fn && t) fn(user, name, t);
}

static void trace_step(generate_trace_fn fn, void *user, int step, const char *what, const tensor *t) {
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

// `copies` times the batch-1 tensor `one`, along the batch axis.
static tensor *repeat_batch(const tensor *one, int copies) {
    int64_t shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < one->ndim; i++) shape[i] = one->shape[i];
    shape[0] = copies;
    tensor *out = tensor_new(one->ndim, shape);
    if (!out) return NULL;
    int64_t n = tensor_numel(one);
    for (int b = 0; b < copies; b++) memcpy(out->data + b * n, one->data, sizeof(float) * (size_t)n);
    return out;
}

// Makes *t plain NCHW (op outputs may come channels-last); false when out of memory.
static bool make_plain(tensor **t) {
    if (!*t || (*t)->layout == TENSOR_NCHW) return *t != NULL;
    tensor_replace(t, tensor_to_nchw(*t));
    return *t != NULL;
}

// The strength as the Python float the user meant: diffusers computes int(50 * strength) in
// double, so 0.7 must be the double 0.7, not the float 0.7f widened (34 instead of 35 steps). The
// shortest decimal that reads back as the same float is what was typed.
static double strength_as_double(float strength) {
    char text[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(text, sizeof text, "%.*g", digits, (double)strength);
        if (strtof(text, NULL) == strength) return strtod(text, NULL);
    }
    return strength;
}

// img2img's starting latents, as LatentConsistencyModelImg2ImgPipeline.prepare_latents: encode the
// init image, sample the latent distribution (first draw), scale, repeat for the batch, then noise
// it to the first timestep (second draw).
static lcm_status img2img_latents(lcm_pipeline *p, const lcm_request *r, const lcm_scheduler *s,
                                  lcm_rng *rng, generate_trace_fn trace_fn, void *trace_user,
                                  tensor **out) {
    *out = NULL;
    // An image of another size is resized as VaeImageProcessor.preprocess does (Pillow Lanczos).
    const lcm_image *source = r->init_image;
    uint8_t *resized = NULL;
    if (source->width != r->width || source->height != r->height)
        LCM_TRY(image_resize_lanczos(source->rgb, source->width, source->height, r->width, r->height,
                                     &resized));
    tensor *image = vae_rgb8_to_image(resized ? resized : source->rgb, r->width, r->height);
    free(resized);
    if (!image) return LCM_ERR_OUT_OF_MEMORY;
    trace(trace_fn, trace_user, "image_preprocessed", image);
    tensor *mean = NULL, *logvar = NULL, *std = NULL, *noise = NULL, *init = NULL, *latents = NULL;
    lcm_status st = vae_encode(p->vae, image, &mean, &logvar);
    tensor_free(image);
    if (st == LCM_OK && !(make_plain(&mean) && make_plain(&logvar))) st = LCM_ERR_OUT_OF_MEMORY;
    if (st != LCM_OK) goto done;
    trace(trace_fn, trace_user, "enc.mean", mean);
    trace(trace_fn, trace_user, "enc.logvar", logvar);
    std = vae_logvar_to_std(logvar);
    noise = tensor_new(mean->ndim, mean->shape);
    if (!std || !make_plain(&std) || !noise) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    size_t n = (size_t)tensor_numel(mean);
    lcm_rng_randn(rng, noise->data, n);
    trace(trace_fn, trace_user, "enc.sample_noise", noise);
    // z = mean + std * noise; init = scaling_factor * z (float32 steps, as torch).
    float scaling_factor = vae_get_config(p->vae)->scaling_factor;
    for (size_t k = 0; k < n; k++) {
        float spread = std->data[k] * noise->data[k];
        mean->data[k] = scaling_factor * (mean->data[k] + spread);
    }
    trace(trace_fn, trace_user, "init_latents_scaled", mean);
    init = repeat_batch(mean, r->batch);
    latents = init ? tensor_new(init->ndim, init->shape) : NULL;
    tensor_replace(&noise, init ? tensor_new(init->ndim, init->shape) : NULL);
    if (!latents || !noise) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    size_t numel = (size_t)tensor_numel(init);
    lcm_rng_randn(rng, noise->data, numel);
    trace(trace_fn, trace_user, "add_noise.noise", noise);
    st = lcm_scheduler_add_noise(s, lcm_scheduler_timesteps(s)[0], init->data, noise->data, numel,
                                 latents->data);
    if (st == LCM_OK) {
        *out = latents;
        latents = NULL;
    }
done:
    tensor_free(mean);
    tensor_free(logvar);
    tensor_free(std);
    tensor_free(noise);
    tensor_free(init);
    tensor_free(latents);
    return st;
}

// The ControlNet's residuals for this step's UNet input, traced as stepI.controlnet_down_J /
// stepI.controlnet_mid. down[] and *mid are owned by the caller.
static lcm_status control_residuals(lcm_pipeline *p, const tensor *model_input, float timestep,
                                    const tensor *context, const tensor *control, float scale,
                                    int step, generate_trace_fn trace_fn, void *trace_user,
                                    tensor **down, tensor **mid) {
    LCM_TRY(controlnet_forward(p->controlnet, model_input, timestep, context, control, scale, down, mid));
    int count = controlnet_get_config(p->controlnet)->unet.skip_count;
    char what[48];
    for (int j = 0; j < count; j++) {
        snprintf(what, sizeof what, "controlnet_down_%d", j);
        trace_step(trace_fn, trace_user, step, what, down[j]);
    }
    trace_step(trace_fn, trace_user, step, "controlnet_mid", *mid);
    return LCM_OK;
}

// sum += addend, elementwise (the residuals of one more ControlNet unit): same shape, either layout.
static lcm_status add_into(tensor *sum, const tensor *addend) {
    tensor *converted = NULL;
    if (addend->layout != sum->layout) {
        converted = sum->layout == TENSOR_NCHW ? tensor_to_nchw(addend) : tensor_to_nhwc(addend);
        if (!converted) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory summing ControlNet residuals");
        addend = converted;
    }
    if (tensor_numel(sum) != tensor_numel(addend)) {
        tensor_free(converted);
        return lcm_fail(LCM_ERR_INTERNAL, "ControlNet residuals of different sizes cannot be summed");
    }
    int64_t n = tensor_numel(sum);
    for (int64_t k = 0; k < n; k++) sum->data[k] += addend->data[k];
    tensor_free(converted);
    return LCM_OK;
}

// Classifier-free guidance on the UNet's [2B, ...] output: u + g * (c - u), u the first half
// (negative prompt), c the second. A new [B, ...] tensor.
static tensor *guided(const tensor *out, float guidance) {
    int64_t shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < out->ndim; i++) shape[i] = out->shape[i];
    shape[0] = out->shape[0] / 2;
    tensor *eps = tensor_new(out->ndim, shape);
    if (!eps) return NULL;
    int64_t n = tensor_numel(eps);
    const float *u = out->data, *c = out->data + n;
    for (int64_t k = 0; k < n; k++) {
        float diff = c[k] - u[k];
        float pull = guidance * diff;
        eps->data[k] = u[k] + pull;
    }
    return eps;
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

lcm_status generate_run(lcm_pipeline *p, const lcm_request *request, generate_trace_fn trace_fn,
                       void *trace_user, tensor **images) {
    *images = NULL;
    lcm_request r;
    LCM_TRY(generate_request_check(p, request, &r));
    bool cfg = uses_cfg(p, &r);

    lcm_scheduler *scheduler = NULL;
    tensor *embeds = NULL, *negative = NULL, *context = NULL, *cond = NULL, *latents = NULL;
    tensor *denoised = NULL, *noise = NULL, *model_input = NULL, *out = NULL, *eps = NULL;
    tensor *image = NULL, *control[LCM_MAX_CONTROL_UNITS] = {0};
    tensor *down[UNET_MAX_SKIPS] = {0}, *mid = NULL, *extra_down[UNET_MAX_SKIPS] = {0}, *extra_mid = NULL;
    int down_count = p->controlnet ? controlnet_get_config(p->controlnet)->unet.skip_count : 0;
    double strength = r.init_image ? strength_as_double(r.strength) : 1.0;
    lcm_status st = lcm_scheduler_new(&p->scheduler_config, &scheduler);
    if (st == LCM_OK) st = lcm_scheduler_set_timesteps(scheduler, r.steps, strength, NULL, 0);
    // The text encoder's pages come back while it runs: activation buffers kept from an earlier
    // decode must not sit beside them (tensor.h's rule counts tensors, not mapped weights).
    tensor_release_cached();
    if (st == LCM_OK) st = encode_prompt(p, r.prompt, r.batch, &embeds);
    if (st == LCM_OK && cfg) st = encode_prompt(p, r.negative_prompt ? r.negative_prompt : "", r.batch, &negative);
    // The text encoder's weights are not needed again until the next request: out of memory while
    // the UNet and VAE run (re-read from the page cache next time, in a few tens of ms).
    clip_text_release_pages(p->text_encoder);
    if (st == LCM_OK) st = guidance_condition(p, r.guidance_scale, r.batch, &cond);
    if (st != LCM_OK) goto done;
    trace(trace_fn, trace_user, "prompt_embeds", embeds);
    trace(trace_fn, trace_user, "negative_prompt_embeds", negative);
    trace(trace_fn, trace_user, "timestep_cond", cond);
    // With guidance the UNet sees [negative x B; positive x B], as diffusers' encode_prompt + cat.
    if (cfg && !(context = tensor_concat_batch(negative, embeds))) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }

    int latent_channels = unet_get_config(p->unet)->in_channels;
    int factor = vae_get_config(p->vae)->downscale_factor;
    int64_t lh = r.height / factor, lw = r.width / factor;
    lcm_rng rng;
    lcm_rng_seed(&rng, r.seed);
    if (r.init_image) {
        st = img2img_latents(p, &r, scheduler, &rng, trace_fn, trace_user, &latents);
        if (st != LCM_OK) goto done;
    } else {
        latents = tensor_new4(r.batch, latent_channels, lh, lw);
        if (!latents) {
            st = LCM_ERR_OUT_OF_MEMORY;
            goto done;
        }
        lcm_rng_randn(&rng, latents->data, (size_t)tensor_numel(latents)); // init_noise_sigma = 1
        trace(trace_fn, trace_user, "initial_latents", latents);
    }
    denoised = tensor_new4(r.batch, latent_channels, lh, lw);
    noise = tensor_new4(r.batch, latent_channels, lh, lw);
    if (!denoised || !noise) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    // Every control unit as {image, scale, start, end}; control_image first.
    lcm_control_unit units[LCM_MAX_CONTROL_UNITS];
    int unit_count = 0;
    if (r.control_image) units[unit_count++] = (lcm_control_unit){r.control_image, r.control_scale, 0.0f, 1.0f};
    for (int u = 0; u < r.control_unit_count; u++) units[unit_count++] = r.control_units[u];
    for (int u = 0; u < unit_count; u++) {
        const lcm_image *img = units[u].image;
        st = control_image_prepare(img->rgb, img->width, img->height, r.width, r.height,
                                   cfg ? 2 * r.batch : r.batch, &control[u]);
        if (st != LCM_OK) goto done;
        if (u == 0) trace(trace_fn, trace_user, "controlnet_cond", control[u]);
    }
    size_t numel = (size_t)tensor_numel(latents);

    int steps = lcm_scheduler_num_steps(scheduler);
    const int64_t *timesteps = lcm_scheduler_timesteps(scheduler);
    const tensor *unet_context = cfg ? context : embeds;
    double start = now_seconds();
    for (int i = 0; i < steps; i++) {
        float t = (float)timesteps[i];
        trace_step(trace_fn, trace_user, i, "latents_in", latents);
        if (cfg && !(model_input = tensor_concat_batch(latents, latents))) {
            st = LCM_ERR_OUT_OF_MEMORY;
            goto done;
        }
        const tensor *input = cfg ? model_input : latents;
        trace_step(trace_fn, trace_user, i, "unet_latent_input", input);
        unet_residuals residuals = {(const tensor *const *)down, down_count, NULL};
        bool steered = false;
        for (int u = 0; u < unit_count; u++) {
            // diffusers' controlnet_keep: the unit is off outside its [start, end] share of steps.
            if ((double)i / steps < units[u].guidance_start || (double)(i + 1) / steps > units[u].guidance_end)
                continue;
            if (!steered) {
                st = control_residuals(p, input, t, unet_context, control[u], units[u].scale, i, trace_fn,
                                       trace_user, down, &mid);
            } else {
                st = control_residuals(p, input, t, unet_context, control[u], units[u].scale, i, NULL, NULL,
                                       extra_down, &extra_mid);
                for (int j = 0; j < down_count && st == LCM_OK; j++) st = add_into(down[j], extra_down[j]);
                if (st == LCM_OK) st = add_into(mid, extra_mid);
                for (int j = 0; j < down_count; j++) tensor_replace(&extra_down[j], NULL);
                tensor_replace(&extra_mid, NULL);
            }
            if (st != LCM_OK) goto done;
            steered = true;
            residuals.mid = mid;
        }
        st = unet_forward(p->unet, input, t, unet_context, cond, steered ? &residuals : NULL, &out);
        for (int j = 0; j < down_count; j++) tensor_replace(&down[j], NULL);
        tensor_replace(&mid, NULL);
        tensor_replace(&model_input, NULL);
        if (st == LCM_OK && !make_plain(&out)) st = LCM_ERR_OUT_OF_MEMORY;
        if (st != LCM_OK) goto done;
        trace_step(trace_fn, trace_user, i, "noise_pred", out);
        trace_step(trace_fn, trace_user, i, "unet_output", out);
        if (cfg) {
            eps = guided(out, r.guidance_scale);
            tensor_replace(&out, NULL);
            if (!eps) {
                st = LCM_ERR_OUT_OF_MEMORY;
                goto done;
            }
            trace_step(trace_fn, trace_user, i, "noise_pred_guided", eps);
        } else {
            eps = out;
            out = NULL;
        }
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
        if (r.preview && (st = send_previews(p, &r, denoised, i + 1, steps)) != LCM_OK) goto done;
        int stop = r.progress ? r.progress(r.progress_user_data, i + 1, steps, now_seconds() - start) : 0;
        if (stop) {
            if (r.keep_partial && stop == LCM_STOP_KEEP_PARTIAL) break; // decode what the last step denoised
            st = lcm_fail(LCM_ERR_CANCELLED, "generation cancelled after step %d of %d", i + 1, steps);
            goto done;
        }
    }

    // The image comes from the last denoised latents (equal to `latents` after the last step). The
    // UNet's weights (and the ControlNet's) are out of memory while the VAE decodes.
    unet_release_weight_pages(p->unet);
    if (p->controlnet) controlnet_release_weight_pages(p->controlnet);
    st = pipeline_decode(p, denoised, &image);
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
    tensor_free(negative);
    tensor_free(context);
    tensor_free(cond);
    tensor_free(latents);
    tensor_free(denoised);
    tensor_free(noise);
    tensor_free(model_input);
    tensor_free(out);
    tensor_free(eps);
    tensor_free(image);
    for (int u = 0; u < LCM_MAX_CONTROL_UNITS; u++) tensor_free(control[u]);
    for (int j = 0; j < down_count; j++) tensor_free(down[j]);
    for (int j = 0; j < down_count; j++) tensor_free(extra_down[j]);
    tensor_free(mid);
    tensor_free(extra_mid);
    return st;
}

void generate_result_free(lcm_result *result) {
    if (!result) return;
    for (int i = 0; i < result->count; i++) free(result->images[i].rgb);
    free(result->images);
    free(result);
}

static lcm_status run_to_result(lcm_pipeline *p, const lcm_request *request, lcm_result **out);

lcm_status generate_images(lcm_pipeline *p, const lcm_request *request, lcm_result **out) {
    *out = NULL;
    // Weights used in place (and packed-weight cache arrays) are read from their files' mappings:
    // a file of this pipeline that shrank read as zeros (io/file.h), before this request (the
    // zeros stay) or during it, so the images would not be the model's.
    lcm_status st = io_mapping_owner_check(&p->mappings, "generating");
    if (st != LCM_OK) return st;
    io_mapping_owner *previous_owner = io_mapping_owner_enter(&p->mappings); // files mapped late
    st = run_to_result(p, request, out);
    io_mapping_owner_enter(previous_owner);
    if (st == LCM_OK && (st = io_mapping_owner_check(&p->mappings, "generating")) != LCM_OK) {
        generate_result_free(*out);
        *out = NULL;
    }
    // Activation buffers kept for reuse between layers are not held by an idle pipeline.
    tensor_release_cached();
    return st;
}

static lcm_status run_to_result(lcm_pipeline *p, const lcm_request *request, lcm_result **out) {
    // The thread count is per calling thread in OpenMP: a pipeline opened on one thread and used on
    // another (a server's worker) must still run with the count its primitives were made for.
    omp_set_num_threads(p->threads);
    io_prepare_threads_for_faults(); // the team reads weights from the files' mappings
    tensor *images = NULL;
    LCM_TRY(generate_run(p, request, NULL, NULL, &images));
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
            generate_result_free(result);
            return st;
        }
    }
    tensor_free(images);
    *out = result;
    return LCM_OK;
oom:
    tensor_free(images);
    generate_result_free(result);
    return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for the output images");
}
