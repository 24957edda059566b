// The ControlNet units of a generation (pipeline/generate_parts.h), as diffusers'
// StableDiffusionControlNetPipeline and its MultiControlNet: each unit's control image is prepared
// once (pipeline/control_image.h); before each UNet call the ControlNet turns the step's UNet input
// and every active unit's image into residuals for the UNet's skips and mid block, summed over
// the units.
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "pipeline/control_image.h"
#include "pipeline/generate_parts.h"

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
        generate_trace_step(trace_fn, trace_user, step, what, down[j]);
    }
    generate_trace_step(trace_fn, trace_user, step, "controlnet_mid", *mid);
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

lcm_status control_units_prepare(const lcm_request *r, int rows, generate_trace_fn trace,
                                 void *trace_user, control_units *out) {
    memset(out, 0, sizeof *out);
    if (r->control_image)
        out->units[out->count++] = (lcm_control_unit){r->control_image, r->control_scale, 0.0f, 1.0f};
    for (int u = 0; u < r->control_unit_count; u++) out->units[out->count++] = r->control_units[u];
    for (int u = 0; u < out->count; u++) {
        const lcm_image *img = out->units[u].image;
        LCM_TRY(control_image_prepare(img->rgb, img->width, img->height, r->width, r->height, rows,
                                      &out->images[u]));
        if (u == 0) generate_trace(trace, trace_user, "controlnet_cond", out->images[u]);
    }
    return LCM_OK;
}

void control_units_free(control_units *c) {
    for (int u = 0; u < LCM_MAX_CONTROL_UNITS; u++) tensor_replace(&c->images[u], NULL);
    c->count = 0;
}

lcm_status control_units_residuals(lcm_pipeline *p, const control_units *c, int step, int steps,
                                   const tensor *input, float timestep, const tensor *context,
                                   generate_trace_fn trace, void *trace_user, tensor **down,
                                   tensor **mid, bool *steered) {
    *steered = false;
    int down_count = c->count > 0 ? controlnet_get_config(p->controlnet)->unet.skip_count : 0;
    tensor *extra_down[UNET_MAX_SKIPS] = {0}, *extra_mid = NULL;
    lcm_status st = LCM_OK;
    for (int u = 0; u < c->count && st == LCM_OK; u++) {
        const lcm_control_unit *unit = &c->units[u];
        // diffusers' controlnet_keep: the unit is off outside its [start, end] share of steps.
        if ((double)step / steps < unit->guidance_start || (double)(step + 1) / steps > unit->guidance_end)
            continue;
        if (!*steered) {
            st = control_residuals(p, input, timestep, context, c->images[u], unit->scale, step, trace,
                                   trace_user, down, mid);
        } else {
            st = control_residuals(p, input, timestep, context, c->images[u], unit->scale, step, NULL,
                                   NULL, extra_down, &extra_mid);
            for (int j = 0; j < down_count && st == LCM_OK; j++) st = add_into(down[j], extra_down[j]);
            if (st == LCM_OK) st = add_into(*mid, extra_mid);
            for (int j = 0; j < down_count; j++) tensor_replace(&extra_down[j], NULL);
            tensor_replace(&extra_mid, NULL);
        }
        if (st == LCM_OK) *steered = true;
    }
    return st;
}
