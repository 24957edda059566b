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
// Each part is its own file (pipeline/generate_parts.h); this one puts them together and turns
// the decoded tensor into the caller's 8-bit images.
#include <omp.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/rng.h"
#include "io/file.h"
#include "pipeline/decode.h"
#include "pipeline/generate_parts.h"
#include "pipeline/pipeline.h"

// Everything one generate_run holds until it returns.
typedef struct generation {
    lcm_scheduler *scheduler;
    tensor *embeds, *negative, *context, *cond, *latents, *denoised, *image;
    control_units control;
} generation;

static void generation_free(generation *g) {
    lcm_scheduler_free(g->scheduler);
    tensor_free(g->embeds);
    tensor_free(g->negative);
    tensor_free(g->context);
    tensor_free(g->cond);
    tensor_free(g->latents);
    tensor_free(g->denoised);
    tensor_free(g->image);
    control_units_free(&g->control);
}

// The scheduler's timesteps and the text conditions: prompt embeddings ([negative; positive] with
// classifier-free guidance) and the LCM guidance embedding.
static lcm_status prepare_conditions(lcm_pipeline *p, const lcm_request *r, bool cfg,
                                     generate_trace_fn trace, void *trace_user, generation *g) {
    double strength = r->init_image ? initial_latents_strength(r->strength) : 1.0;
    lcm_status st = lcm_scheduler_new(&p->scheduler_config, &g->scheduler);
    if (st == LCM_OK) st = lcm_scheduler_set_timesteps(g->scheduler, r->steps, strength, NULL, 0);
    // The text encoder's pages come back while it runs: activation buffers kept from an earlier
    // decode must not sit beside them (tensor.h's rule counts tensors, not mapped weights).
    tensor_release_cached();
    if (st == LCM_OK) st = guidance_encode_prompt(p, r->prompt, r->batch, &g->embeds);
    if (st == LCM_OK && cfg)
        st = guidance_encode_prompt(p, r->negative_prompt ? r->negative_prompt : "", r->batch, &g->negative);
    // The text encoder's weights are not needed again until the next request: out of memory while
    // the UNet and VAE run (re-read from the page cache next time, in a few tens of ms).
    clip_text_release_pages(p->text_encoder);
    if (st == LCM_OK) st = guidance_embedding_condition(p, r->guidance_scale, r->batch, &g->cond);
    if (st != LCM_OK) return st;
    generate_trace(trace, trace_user, "prompt_embeds", g->embeds);
    generate_trace(trace, trace_user, "negative_prompt_embeds", g->negative);
    generate_trace(trace, trace_user, "timestep_cond", g->cond);
    // With guidance the UNet sees [negative x B; positive x B], as diffusers' encode_prompt + cat.
    if (cfg && !(g->context = tensor_concat_batch(g->negative, g->embeds))) return LCM_ERR_OUT_OF_MEMORY;
    return LCM_OK;
}

// The image from the last denoised latents (equal to the latents after the last step), NCHW.
static lcm_status decode_image(lcm_pipeline *p, const tensor *denoised, tensor **image) {
    // The UNet's weights (and the ControlNet's) are out of memory while the VAE decodes.
    unet_release_weight_pages(p->unet);
    if (p->controlnet) controlnet_release_weight_pages(p->controlnet);
    LCM_TRY(pipeline_decode(p, denoised, image));
    tensor_replace(image, tensor_to_nchw(*image)); // callers index the image as NCHW
    return *image ? LCM_OK : LCM_ERR_OUT_OF_MEMORY;
}

lcm_status generate_run(lcm_pipeline *p, const lcm_request *request, generate_trace_fn trace,
                        void *trace_user, tensor **images) {
    *images = NULL;
    lcm_request r;
    LCM_TRY(generate_request_check(p, request, &r));
    bool cfg = guidance_uses_cfg(p, &r);
    generation g = {0};
    lcm_rng rng;
    lcm_rng_seed(&rng, r.seed);
    lcm_status st = prepare_conditions(p, &r, cfg, trace, trace_user, &g);
    if (st == LCM_OK) st = initial_latents(p, &r, g.scheduler, &rng, trace, trace_user, &g.latents);
    if (st == LCM_OK && !(g.denoised = tensor_new(g.latents->ndim, g.latents->shape)))
        st = LCM_ERR_OUT_OF_MEMORY;
    if (st == LCM_OK) st = control_units_prepare(&r, cfg ? 2 * r.batch : r.batch, trace, trace_user, &g.control);
    if (st == LCM_OK) {
        denoise_job job = {.p = p, .r = &r, .cfg = cfg, .scheduler = g.scheduler, .rng = &rng,
                           .context = cfg ? g.context : g.embeds, .cond = g.cond, .control = &g.control,
                           .trace = trace, .trace_user = trace_user};
        st = denoise(&job, g.latents, g.denoised);
    }
    if (st == LCM_OK) st = decode_image(p, g.denoised, &g.image);
    if (st == LCM_OK) {
        generate_trace(trace, trace_user, "image_decoded", g.image);
        *images = g.image;
        g.image = NULL;
    }
    generation_free(&g);
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
