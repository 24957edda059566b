// A generation request checked against the pipeline and completed: the output size (from the
// init or control image, else the model's), the steps, batch, guidance, ControlNet units and
// whether the working memory fits this machine. Nothing runs before this has passed.
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "pipeline/decode.h"
#include "pipeline/pipeline.h"

// Beyond this many pixels per image the VAE's activations alone need tens of GB.
#define GENERATE_MAX_SIDE 4096
#define GENERATE_MAX_BATCH 16

void generate_request_init(lcm_request *r) {
    memset(r, 0, sizeof *r);
    r->prompt = "";
    r->steps = 4;
    r->guidance_scale = 8.5f;
    r->batch = 1;
    r->strength = 0.8f;
    r->control_scale = 1.0f;
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
        if (!img->rgb || img->width < 1 || img->height < 1 || img->width > GENERATE_MAX_SIDE ||
            img->height > GENERATE_MAX_SIDE)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: %dx%d, expected 1..%d pixels a side",
                            source_names[i], img->width, img->height, GENERATE_MAX_SIDE);
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
        r->width > GENERATE_MAX_SIDE || r->height > GENERATE_MAX_SIDE)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "image size %dx%d: width and height must be multiples of 8 between 8 and %d",
                        r->width, r->height, GENERATE_MAX_SIDE);
    int max_steps = pipeline_max_steps(p);
    if (r->steps < 1 || r->steps > max_steps)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "steps = %d: expected 1..%d (the scheduler's original_inference_steps)",
                        r->steps, max_steps);
    if (r->batch < 1 || r->batch > GENERATE_MAX_BATCH)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "batch = %d: expected 1..%d", r->batch,
                        GENERATE_MAX_BATCH);
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
