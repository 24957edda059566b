// Configs of a single-file SD1.x checkpoint that carries none: what diffusers' single-file loader
// builds from the original v1-inference.yaml plus checks of the tensor shapes. Every size comes from
// a shape (so odd-sized models load right); what no shape records is the SD1.5 constant:
//   UNet   attention_head_dim 8 (heads per block), norm_num_groups 32, sample_size 64
//   VAE    norm_num_groups 32, scaling_factor 0.18215, sample_size 512
//   CLIP   head size 64 (num_attention_heads = hidden / 64), quick_gelu, layer_norm_eps 1e-5
//   scheduler  1000 training steps, scaled_linear betas 0.00085..0.012: LCM_Dreamshaper_v7's
//          LCMScheduler config for LCM-distilled UNets (time_embed.cond_proj), SD1.5's PNDM otherwise.
#include "io/checkpoint_config.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define UNET_PREFIX "model.diffusion_model."
#define VAE_PREFIX "first_stage_model."
#define TEXT_PREFIX "cond_stage_model.transformer."
#define MAX_BLOCKS 8
#define MAX_LAYERS_PER_BLOCK 16

// The SD1.5 constants that no tensor shape records.
#define SD15_UNET_ATTENTION_HEADS 8
#define SD15_UNET_SAMPLE_SIZE 64
#define SD15_NORM_GROUPS 32
#define SD15_VAE_SAMPLE_SIZE 512
#define SD15_VAE_SCALING_FACTOR 0.18215
#define CLIP_HEAD_SIZE 64

typedef struct shapes {
    const st_file *file;
    const char *path; // for messages
} shapes;

// The tensor printf(fmt, ...) names, or NULL.
static const st_tensor *find(const shapes *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static const st_tensor *find(const shapes *s, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= sizeof name ? NULL : st_find(s->file, name);
}

// Dimension `dim` of tensor `name`, which must exist with at least `ndim` dimensions.
static lcm_status dimension(const shapes *s, const char *name, int ndim, int dim, int *out) {
    const st_tensor *t = st_find(s->file, name);
    if (!t)
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' is missing (needed to work out the model's sizes)",
                        s->path, name);
    if (t->ndim < ndim || t->shape[dim] < 1 || t->shape[dim] > 1 << 20)
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' has an unexpected shape (%d dimensions)", s->path,
                        name, t->ndim);
    *out = (int)t->shape[dim];
    return LCM_OK;
}

// One past the largest N of the tensors named PREFIX N . ..., or 0 (numbers above 65535 are not
// block indices and are ignored).
static int count_numbered(const shapes *s, const char *prefix) {
    size_t len = strlen(prefix);
    int count = 0;
    for (size_t i = 0; i < st_count(s->file); i++) {
        const char *name = st_at(s->file, i)->name, *digits = name + len;
        if (strncmp(name, prefix, len) || *digits < '0' || *digits > '9') continue;
        char *end;
        long n = strtol(digits, &end, 10);
        if (*end == '.' && n < 1 << 16 && n + 1 > count) count = (int)n + 1;
    }
    return count;
}

static cJSON *int_array(const int *values, int count) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < count; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(values[i]));
    return a;
}

static cJSON *repeated(const char *text, int count) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < count; i++) cJSON_AddItemToArray(a, cJSON_CreateString(text));
    return a;
}

static cJSON *block_types(const bool *attention, int count, const char *with, const char *without) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < count; i++) cJSON_AddItemToArray(a, cJSON_CreateString(attention[i] ? with : without));
    return a;
}

// UNet2DConditionModel. Down block b's layers are input_blocks[1 + b*(L+1) .. b*(L+1) + L], its
// downsampler input_blocks[(b+1)*(L+1)] ("op"); up block b's are output_blocks[b*(L+1) ..].
static lcm_status derive_unet(const shapes *s, cJSON *c) {
    int in_channels, out_channels, inputs = count_numbered(s, UNET_PREFIX "input_blocks."), first_op = -1,
                                   ops = 0;
    LCM_TRY(dimension(s, UNET_PREFIX "input_blocks.0.0.weight", 4, 1, &in_channels));
    LCM_TRY(dimension(s, UNET_PREFIX "out.2.weight", 4, 0, &out_channels));
    if (inputs > MAX_BLOCKS * (MAX_LAYERS_PER_BLOCK + 1))
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: %d UNet input_blocks, more than SD1.x-style UNets have", s->path,
                        inputs);
    for (int i = 0; i < inputs; i++)
        if (find(s, UNET_PREFIX "input_blocks.%d.0.op.weight", i)) {
            ops++;
            if (first_op < 0) first_op = i;
        }
    int blocks = ops + 1, layers = first_op > 0 ? first_op - 1 : inputs - 1;
    if (layers < 1 || layers > MAX_LAYERS_PER_BLOCK || blocks > MAX_BLOCKS || inputs != blocks * (layers + 1) ||
        count_numbered(s, UNET_PREFIX "output_blocks.") != blocks * (layers + 1))
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: the UNet's input_blocks/output_blocks (%d, %d downsamplers) do not form the "
                        "SD1.x layout",
                        s->path, inputs, ops);
    int channels[MAX_BLOCKS], transformer_layers = 1;
    bool down_attention[MAX_BLOCKS], up_attention[MAX_BLOCKS], found_attention = false;
    for (int b = 0; b < blocks; b++) {
        int first = 1 + b * (layers + 1);
        char name[256];
        snprintf(name, sizeof name, UNET_PREFIX "input_blocks.%d.0.out_layers.3.weight", first);
        LCM_TRY(dimension(s, name, 1, 0, &channels[b]));
        down_attention[b] = find(s, UNET_PREFIX "input_blocks.%d.1.proj_in.weight", first) != NULL;
        up_attention[b] = find(s, UNET_PREFIX "output_blocks.%d.1.proj_in.weight", b * (layers + 1)) != NULL;
        if (down_attention[b] && !found_attention) {
            found_attention = true;
            snprintf(name, sizeof name, UNET_PREFIX "input_blocks.%d.1.transformer_blocks.", first);
            transformer_layers = count_numbered(s, name);
        }
    }
    const st_tensor *proj_in = find(s, UNET_PREFIX "middle_block.1.proj_in.weight");
    int cross_attention_dim;
    LCM_TRY(dimension(s, UNET_PREFIX "middle_block.1.transformer_blocks.0.attn2.to_k.weight", 2, 1,
                      &cross_attention_dim));

    cJSON_AddStringToObject(c, "_class_name", "UNet2DConditionModel");
    cJSON_AddStringToObject(c, "act_fn", "silu");
    cJSON_AddNumberToObject(c, "attention_head_dim", SD15_UNET_ATTENTION_HEADS);
    cJSON_AddItemToObject(c, "block_out_channels", int_array(channels, blocks));
    cJSON_AddNumberToObject(c, "cross_attention_dim", cross_attention_dim);
    cJSON_AddItemToObject(c, "down_block_types",
                          block_types(down_attention, blocks, "CrossAttnDownBlock2D", "DownBlock2D"));
    cJSON_AddNumberToObject(c, "in_channels", in_channels);
    cJSON_AddNumberToObject(c, "layers_per_block", layers);
    cJSON_AddStringToObject(c, "mid_block_type", "UNetMidBlock2DCrossAttn");
    cJSON_AddNumberToObject(c, "norm_num_groups", SD15_NORM_GROUPS);
    cJSON_AddNumberToObject(c, "out_channels", out_channels);
    cJSON_AddNumberToObject(c, "sample_size", SD15_UNET_SAMPLE_SIZE);
    const st_tensor *cond_proj = find(s, UNET_PREFIX "time_embed.cond_proj.weight");
    if (cond_proj && cond_proj->ndim == 2) // LCM-distilled: the guidance embedding's projection
        cJSON_AddNumberToObject(c, "time_cond_proj_dim", (double)cond_proj->shape[1]);
    else
        cJSON_AddNullToObject(c, "time_cond_proj_dim");
    cJSON_AddNumberToObject(c, "transformer_layers_per_block", transformer_layers);
    cJSON_AddItemToObject(c, "up_block_types",
                          block_types(up_attention, blocks, "CrossAttnUpBlock2D", "UpBlock2D"));
    // SD 2.x-style linear projections show as 2-D proj_in weights (1x1 convolutions in SD1.x).
    cJSON_AddBoolToObject(c, "use_linear_projection", proj_in && proj_in->ndim == 2);
    return LCM_OK;
}

// AutoencoderKL: encoder.down.B.block.L, the decoder mirrored.
static lcm_status derive_vae(const shapes *s, cJSON *c) {
    int in_channels, out_channels, latent_channels, blocks = count_numbered(s, VAE_PREFIX "encoder.down."),
                                                    layers = count_numbered(s, VAE_PREFIX "encoder.down.0.block.");
    LCM_TRY(dimension(s, VAE_PREFIX "encoder.conv_in.weight", 4, 1, &in_channels));
    LCM_TRY(dimension(s, VAE_PREFIX "decoder.conv_out.weight", 4, 0, &out_channels));
    LCM_TRY(dimension(s, VAE_PREFIX "decoder.conv_in.weight", 4, 1, &latent_channels));
    if (blocks < 1 || blocks > MAX_BLOCKS || layers < 1)
        return lcm_fail(LCM_ERR_FORMAT, "%s: the VAE's encoder.down blocks (%d) do not form the SD1.x layout",
                        s->path, blocks);
    int channels[MAX_BLOCKS];
    for (int b = 0; b < blocks; b++) {
        char name[256];
        snprintf(name, sizeof name, VAE_PREFIX "encoder.down.%d.block.0.conv1.weight", b);
        LCM_TRY(dimension(s, name, 1, 0, &channels[b]));
    }
    cJSON_AddStringToObject(c, "_class_name", "AutoencoderKL");
    cJSON_AddStringToObject(c, "act_fn", "silu");
    cJSON_AddItemToObject(c, "block_out_channels", int_array(channels, blocks));
    cJSON_AddItemToObject(c, "down_block_types", repeated("DownEncoderBlock2D", blocks));
    cJSON_AddNumberToObject(c, "in_channels", in_channels);
    cJSON_AddNumberToObject(c, "latent_channels", latent_channels);
    cJSON_AddNumberToObject(c, "layers_per_block", layers);
    cJSON_AddNumberToObject(c, "norm_num_groups", SD15_NORM_GROUPS);
    cJSON_AddNumberToObject(c, "out_channels", out_channels);
    cJSON_AddNumberToObject(c, "sample_size", SD15_VAE_SAMPLE_SIZE);
    cJSON_AddNumberToObject(c, "scaling_factor", SD15_VAE_SCALING_FACTOR);
    cJSON_AddItemToObject(c, "up_block_types", repeated("UpDecoderBlock2D", blocks));
    return LCM_OK;
}

// CLIPTextModel (transformers names; files from transformers < 4.31 lack the "text_model." level).
static lcm_status derive_text_encoder(const shapes *s, cJSON *c) {
    bool legacy = !find(s, TEXT_PREFIX "text_model.embeddings.token_embedding.weight") &&
                  find(s, TEXT_PREFIX "embeddings.token_embedding.weight");
    const char *level = legacy ? "" : "text_model.";
    char name[256], layers_prefix[128];
    int vocab, hidden, positions, intermediate;
    snprintf(name, sizeof name, TEXT_PREFIX "%sembeddings.token_embedding.weight", level);
    LCM_TRY(dimension(s, name, 2, 0, &vocab));
    LCM_TRY(dimension(s, name, 2, 1, &hidden));
    snprintf(name, sizeof name, TEXT_PREFIX "%sembeddings.position_embedding.weight", level);
    LCM_TRY(dimension(s, name, 2, 0, &positions));
    snprintf(name, sizeof name, TEXT_PREFIX "%sencoder.layers.0.mlp.fc1.weight", level);
    LCM_TRY(dimension(s, name, 2, 0, &intermediate));
    snprintf(layers_prefix, sizeof layers_prefix, TEXT_PREFIX "%sencoder.layers.", level);
    int layers = count_numbered(s, layers_prefix);

    cJSON *architectures = cJSON_AddArrayToObject(c, "architectures");
    if (architectures) cJSON_AddItemToArray(architectures, cJSON_CreateString("CLIPTextModel"));
    cJSON_AddNumberToObject(c, "bos_token_id", 0);
    cJSON_AddNumberToObject(c, "eos_token_id", 2); // CLIP's original config value (see clip_text.c)
    cJSON_AddStringToObject(c, "hidden_act", "quick_gelu");
    cJSON_AddNumberToObject(c, "hidden_size", hidden);
    cJSON_AddNumberToObject(c, "intermediate_size", intermediate);
    cJSON_AddNumberToObject(c, "layer_norm_eps", 1e-5);
    cJSON_AddNumberToObject(c, "max_position_embeddings", positions);
    cJSON_AddStringToObject(c, "model_type", "clip_text_model");
    // The head count is not in any shape: CLIP's heads are 64 wide.
    if (hidden % CLIP_HEAD_SIZE == 0) cJSON_AddNumberToObject(c, "num_attention_heads", hidden / CLIP_HEAD_SIZE);
    cJSON_AddNumberToObject(c, "num_hidden_layers", layers);
    cJSON_AddNumberToObject(c, "pad_token_id", 1);
    cJSON_AddNumberToObject(c, "vocab_size", vocab);
    return LCM_OK;
}

static void derive_scheduler(bool lcm, cJSON *c) {
    cJSON_AddStringToObject(c, "_class_name", lcm ? "LCMScheduler" : "PNDMScheduler");
    cJSON_AddNumberToObject(c, "beta_end", 0.012);
    cJSON_AddStringToObject(c, "beta_schedule", "scaled_linear");
    cJSON_AddNumberToObject(c, "beta_start", 0.00085);
    cJSON_AddBoolToObject(c, "clip_sample", false);
    cJSON_AddNumberToObject(c, "num_train_timesteps", 1000);
    cJSON_AddNullToObject(c, "trained_betas");
    if (lcm) { // LCM_Dreamshaper_v7's scheduler_config.json
        cJSON_AddNumberToObject(c, "clip_sample_range", 1.0);
        cJSON_AddNumberToObject(c, "dynamic_thresholding_ratio", 0.995);
        cJSON_AddNumberToObject(c, "original_inference_steps", 50);
        cJSON_AddStringToObject(c, "prediction_type", "epsilon");
        cJSON_AddBoolToObject(c, "rescale_betas_zero_snr", false);
        cJSON_AddNumberToObject(c, "sample_max_value", 1.0);
        cJSON_AddBoolToObject(c, "set_alpha_to_one", true);
        cJSON_AddNumberToObject(c, "steps_offset", 0);
        cJSON_AddBoolToObject(c, "thresholding", false);
        cJSON_AddStringToObject(c, "timestep_spacing", "leading");
    } else { // stable-diffusion-v1-5's
        cJSON_AddBoolToObject(c, "set_alpha_to_one", false);
        cJSON_AddBoolToObject(c, "skip_prk_steps", true);
        cJSON_AddNumberToObject(c, "steps_offset", 1);
    }
}

static void add_component(cJSON *c, const char *name, const char *library, const char *class_name) {
    cJSON *entry = cJSON_AddArrayToObject(c, name);
    if (!entry) return;
    cJSON_AddItemToArray(entry, cJSON_CreateString(library));
    cJSON_AddItemToArray(entry, cJSON_CreateString(class_name));
}

static void derive_model_index(bool lcm, cJSON *c) {
    cJSON_AddStringToObject(c, "_class_name", lcm ? "LatentConsistencyModelPipeline" : "StableDiffusionPipeline");
    add_component(c, "scheduler", "diffusers", lcm ? "LCMScheduler" : "PNDMScheduler");
    add_component(c, "text_encoder", "transformers", "CLIPTextModel");
    add_component(c, "tokenizer", "transformers", "CLIPTokenizer");
    add_component(c, "unet", "diffusers", "UNet2DConditionModel");
    add_component(c, "vae", "diffusers", "AutoencoderKL");
}

lcm_status checkpoint_config_derive(const st_file *tensors, const char *path, const char *component,
                                    const char *filename, json_config *out) {
    *out = (json_config){0};
    shapes s = {tensors, path};
    char label[600];
    snprintf(label, sizeof label, "%s: %s%s%s (derived from the tensor shapes)", s.path, component ? component : "",
             component ? "/" : "", filename);
    // An LCM-distilled UNet has the guidance embedding's projection.
    bool lcm = st_find(s.file, UNET_PREFIX "time_embed.cond_proj.weight") != NULL;
    cJSON *c = cJSON_CreateObject();
    if (!c || !(out->label = strdup(label))) {
        cJSON_Delete(c);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    out->root = c;
    lcm_status st = LCM_OK;
    const char *what = component ? component : "";
    bool config_json = !strcmp(filename, "config.json");
    if (!component && !strcmp(filename, "model_index.json"))
        derive_model_index(lcm, c);
    else if (!strcmp(what, "scheduler") && !strcmp(filename, "scheduler_config.json"))
        derive_scheduler(lcm, c);
    else if (!strcmp(what, "unet") && config_json)
        st = derive_unet(&s, c);
    else if (!strcmp(what, "vae") && config_json)
        st = derive_vae(&s, c);
    else if (!strcmp(what, "text_encoder") && config_json)
        st = derive_text_encoder(&s, c);
    else
        st = lcm_fail(LCM_ERR_IO, "%s: the file's metadata has no %s%s%s and it cannot be derived", s.path,
                      component ? component : "", component ? "/" : "", filename);
    if (st != LCM_OK) json_config_free(out);
    return st;
}
