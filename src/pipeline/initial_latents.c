// The latents a generation starts from (pipeline/generate_parts.h), drawn in diffusers' order so
// that the seed alone reproduces its images: text-to-image starts from the generator's first draw
// (init_noise_sigma = 1); img2img, as LatentConsistencyModelImg2ImgPipeline, from the encoded init
// image, sampled, scaled and noised to the first of the strength-cut timesteps.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/image_resize.h"
#include "pipeline/generate_parts.h"

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

// The strength as the Python float the user meant: diffusers computes int(50 * strength) in
// double, so 0.7 must be the double 0.7, not the float 0.7f widened (34 instead of 35 steps). The
// shortest decimal that reads back as the same float is what was typed.
double initial_latents_strength(float strength) {
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
    generate_trace(trace_fn, trace_user, "image_preprocessed", image);
    tensor *mean = NULL, *logvar = NULL, *std = NULL, *noise = NULL, *init = NULL, *latents = NULL;
    lcm_status st = vae_encode(p->vae, image, &mean, &logvar);
    tensor_free(image);
    if (st == LCM_OK && !(generate_make_nchw(&mean) && generate_make_nchw(&logvar))) st = LCM_ERR_OUT_OF_MEMORY;
    if (st != LCM_OK) goto done;
    generate_trace(trace_fn, trace_user, "enc.mean", mean);
    generate_trace(trace_fn, trace_user, "enc.logvar", logvar);
    std = vae_logvar_to_std(logvar);
    noise = tensor_new(mean->ndim, mean->shape);
    if (!std || !generate_make_nchw(&std) || !noise) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    size_t n = (size_t)tensor_numel(mean);
    lcm_rng_randn(rng, noise->data, n);
    generate_trace(trace_fn, trace_user, "enc.sample_noise", noise);
    // z = mean + std * noise; init = scaling_factor * z (float32 steps, as torch).
    float scaling_factor = vae_get_config(p->vae)->scaling_factor;
    for (size_t k = 0; k < n; k++) {
        float spread = std->data[k] * noise->data[k];
        mean->data[k] = scaling_factor * (mean->data[k] + spread);
    }
    generate_trace(trace_fn, trace_user, "init_latents_scaled", mean);
    init = repeat_batch(mean, r->batch);
    latents = init ? tensor_new(init->ndim, init->shape) : NULL;
    tensor_replace(&noise, init ? tensor_new(init->ndim, init->shape) : NULL);
    if (!latents || !noise) {
        st = LCM_ERR_OUT_OF_MEMORY;
        goto done;
    }
    size_t numel = (size_t)tensor_numel(init);
    lcm_rng_randn(rng, noise->data, numel);
    generate_trace(trace_fn, trace_user, "add_noise.noise", noise);
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

lcm_status initial_latents(lcm_pipeline *p, const lcm_request *r, const lcm_scheduler *s, lcm_rng *rng,
                           generate_trace_fn trace, void *trace_user, tensor **out) {
    *out = NULL;
    if (r->init_image) return img2img_latents(p, r, s, rng, trace, trace_user, out);
    int factor = vae_get_config(p->vae)->downscale_factor;
    tensor *latents = tensor_new4(r->batch, unet_get_config(p->unet)->in_channels, r->height / factor,
                                  r->width / factor);
    if (!latents) return LCM_ERR_OUT_OF_MEMORY;
    lcm_rng_randn(rng, latents->data, (size_t)tensor_numel(latents)); // init_noise_sigma = 1
    generate_trace(trace, trace_user, "initial_latents", latents);
    *out = latents;
    return LCM_OK;
}
