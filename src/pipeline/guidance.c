// What steers the UNet toward the prompt (pipeline/generate_parts.h): the prompt embeddings, the
// guidance embedding of LCM-distilled UNets (w = guidance_scale - 1, no second UNet pass), and
// classifier-free guidance for the others (negative and positive prompt in one batch, combined as
// u + g * (c - u)), as diffusers' LatentConsistencyModelPipeline and StableDiffusionPipeline.
#include <string.h>

#include "core/error.h"
#include "models/guidance_embedding.h"
#include "pipeline/generate_parts.h"

bool guidance_uses_cfg(const lcm_pipeline *p, const lcm_request *r) {
    return unet_get_config(p->unet)->time_cond_proj_dim == 0 && r->guidance_scale > 1.0f;
}

lcm_status guidance_encode_prompt(lcm_pipeline *p, const char *prompt, int batch, tensor **out) {
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

lcm_status guidance_embedding_condition(const lcm_pipeline *p, float guidance_scale, int batch,
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

tensor *guidance_combine(const tensor *out, float guidance) {
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
