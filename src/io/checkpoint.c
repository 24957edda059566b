#include "io/checkpoint.h"

#include <stdarg.h>
#include <stdbool.h>
#include <strings.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/checkpoint_config.h"
#include "io/torch_pickle.h"

#define UNET_PREFIX "model.diffusion_model."
#define VAE_PREFIX "first_stage_model."
#define TEXT_PREFIX "cond_stage_model.transformer."
#define MAX_BLOCKS 8

struct checkpoint {
    char *path;
    st_file *file; // kept open for the metadata and the shapes
};

static bool ends_with(const char *text, const char *suffix) {
    size_t a = strlen(text), b = strlen(suffix);
    return a >= b && !strcasecmp(text + a - b, suffix);
}

static bool has_prefix_tensor(const st_file *f, const char *prefix) {
    size_t len = strlen(prefix);
    for (size_t i = 0; i < st_count(f); i++)
        if (!strncmp(st_at(f, i)->name, prefix, len)) return true;
    return false;
}

void checkpoint_close(checkpoint *ck) {
    if (!ck) return;
    st_close(ck->file);
    free(ck->path);
    free(ck);
}

lcm_status checkpoint_open(const char *path, checkpoint **out) {
    *out = NULL;
    // PyTorch pickles (.ckpt/.pt/.pth/.bin) go through the whitelist reader, which never executes
    // anything from the file and gives the same tensor table as a .safetensors file.
    bool pickle = torch_is_checkpoint_name(path);
    if (!pickle && !ends_with(path, ".safetensors"))
        return lcm_fail(LCM_ERR_IO, "%s: not a folder (nor a .safetensors or .ckpt checkpoint)", path);
    st_file *file = NULL;
    LCM_TRY(pickle ? torch_open(path, &file) : st_open(path, &file));
    return checkpoint_open_tensors(path, file, out);
}

lcm_status checkpoint_open_tensors(const char *path, st_file *file, checkpoint **out) {
    *out = NULL;
    checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->path = strdup(path))) {
        free(ck);
        st_close(file);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    ck->file = file;
    const st_file *f = ck->file;
    const char *problem = NULL;
    if (has_prefix_tensor(f, "conditioner.embedders."))
        problem = "an SDXL checkpoint (conditioner.embedders.*): only Stable Diffusion 1.x is supported";
    else if (has_prefix_tensor(f, "cond_stage_model.model."))
        problem = "a Stable Diffusion 2.x checkpoint (OpenCLIP text encoder): only 1.x is supported";
    else if (!st_find(f, UNET_PREFIX "input_blocks.0.0.weight"))
        problem = "not a Stable Diffusion 1.x checkpoint: no UNet tensor "
                  "'" UNET_PREFIX "input_blocks.0.0.weight' (a single-model file? give its folder)";
    else if (!has_prefix_tensor(f, VAE_PREFIX))
        problem = "no VAE tensors (first_stage_model.*): the checkpoint must hold the whole pipeline";
    else if (!has_prefix_tensor(f, TEXT_PREFIX))
        problem = "no text encoder tensors (cond_stage_model.transformer.*)";
    if (problem) {
        lcm_status bad = lcm_fail(LCM_ERR_UNSUPPORTED, "%s: %s", path, problem);
        checkpoint_close(ck);
        return bad;
    }
    *out = ck;
    return LCM_OK;
}

const st_file *checkpoint_tensors(const checkpoint *ck) { return ck->file; }

const char *checkpoint_metadata(const checkpoint *ck, const char *key) { return st_metadata(ck->file, key); }

const char *checkpoint_path(const checkpoint *ck) { return ck->path; }

lcm_status checkpoint_derive_config(const checkpoint *ck, const char *component, const char *filename,
                                    json_config *out) {
    return checkpoint_config_derive(ck->file, ck->path, component, filename, out);
}

lcm_status checkpoint_load_config(const checkpoint *ck, const char *component, const char *filename,
                                  json_config *out) {
    char key[320], label[300];
    snprintf(label, sizeof label, "%s%s%s", component ? component : "", component ? "/" : "", filename);
    snprintf(key, sizeof key, "lcm.config.%s", label);
    const char *embedded = st_metadata(ck->file, key);
    if (embedded) {
        char where[PATH_MAX + 400];
        snprintf(where, sizeof where, "%s: __metadata__[\"%s\"]", ck->path, key);
        return json_config_parse(embedded, strlen(embedded), where, out);
    }
    LCM_TRY(checkpoint_derive_config(ck, component, filename, out));
    if (component && !strcmp(component, "text_encoder") && !json_config_has(out, "num_attention_heads")) {
        json_config_free(out);
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: the text encoder's width is not a multiple of 64 (CLIP's head size), so "
                        "its number of attention heads (num_attention_heads) cannot be derived from "
                        "the tensors; convert the model's diffusers folder with `lcm convert`, which "
                        "stores its configs in the file",
                        ck->path);
    }
    return LCM_OK;
}

// ---- names: diffusers -> original layout -------------------------------------------------------

typedef enum ldm_component { LDM_UNET, LDM_VAE, LDM_TEXT } ldm_component;

typedef struct ldm_names {
    ldm_component component;
    int layers_per_block;
    int blocks;
    bool up_has_attention[MAX_BLOCKS];
} ldm_names;

static lcm_status emit(char *out, size_t size, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static lcm_status emit(char *out, size_t size, const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) return lcm_fail(LCM_ERR_FORMAT, "tensor name too long: '%s'", name);
    return LCM_OK;
}

static const char *after(const char *text, const char *prefix) {
    size_t len = strlen(prefix);
    return strncmp(text, prefix, len) ? NULL : text + len;
}

// "down_blocks.%d.resnets.%d." style prefixes: the numbers and what follows.
static const char *match2(const char *name, const char *fmt, int *a, int *b) {
    int consumed = -1;
    if (sscanf(name, fmt, a, b, &consumed) == 2 && consumed > 0) return name + consumed;
    return NULL;
}

static const char *match1(const char *name, const char *fmt, int *a) {
    int consumed = -1;
    if (sscanf(name, fmt, a, &consumed) == 1 && consumed > 0) return name + consumed;
    return NULL;
}

// ResnetBlock2D parameters inside a UNet block: diffusers -> LDM ResBlock.
static const char *unet_resnet_part(const char *rest, const char **tail) {
    static const struct { const char *diffusers, *ldm; } parts[] = {
        {"norm1.", "in_layers.0."},      {"conv1.", "in_layers.2."},
        {"time_emb_proj.", "emb_layers.1."}, {"norm2.", "out_layers.0."},
        {"conv2.", "out_layers.3."},     {"conv_shortcut.", "skip_connection."},
    };
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        if ((*tail = after(rest, parts[i].diffusers))) return parts[i].ldm;
    return NULL;
}

static lcm_status unet_name(const ldm_names *m, const char *name, char *out, size_t size) {
    static const struct { const char *diffusers, *ldm; } fixed[] = {
        {"conv_in.", "input_blocks.0.0."},           {"time_embedding.linear_1.", "time_embed.0."},
        {"time_embedding.linear_2.", "time_embed.2."}, {"time_embedding.cond_proj.", "time_embed.cond_proj."},
        {"conv_norm_out.", "out.0."},                {"conv_out.", "out.2."},
    };
    const char *rest, *tail, *part;
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if ((rest = after(name, fixed[i].diffusers)))
            return emit(out, size, name, UNET_PREFIX "%s%s", fixed[i].ldm, rest);
    int block, layer, per = m->layers_per_block;
    // Down block b's layer l is input_blocks[1 + b*(per+1) + l]; its downsampler comes last.
    if ((rest = match2(name, "down_blocks.%d.resnets.%d.%n", &block, &layer)) &&
        (part = unet_resnet_part(rest, &tail)))
        return emit(out, size, name, UNET_PREFIX "input_blocks.%d.0.%s%s", 1 + block * (per + 1) + layer,
                    part, tail);
    if ((rest = match2(name, "down_blocks.%d.attentions.%d.%n", &block, &layer)))
        return emit(out, size, name, UNET_PREFIX "input_blocks.%d.1.%s", 1 + block * (per + 1) + layer, rest);
    if ((rest = match1(name, "down_blocks.%d.downsamplers.0.conv.%n", &block)))
        return emit(out, size, name, UNET_PREFIX "input_blocks.%d.0.op.%s", 1 + block * (per + 1) + per, rest);
    if ((rest = match1(name, "mid_block.resnets.%d.%n", &layer)) && (layer == 0 || layer == 1) &&
        (part = unet_resnet_part(rest, &tail)))
        return emit(out, size, name, UNET_PREFIX "middle_block.%d.%s%s", 2 * layer, part, tail);
    if ((rest = after(name, "mid_block.attentions.0.")))
        return emit(out, size, name, UNET_PREFIX "middle_block.1.%s", rest);
    // Up block b has per+1 layers: output_blocks[b*(per+1) + l]; the upsampler sits in the last
    // one, after the attention when there is one.
    if ((rest = match2(name, "up_blocks.%d.resnets.%d.%n", &block, &layer)) &&
        (part = unet_resnet_part(rest, &tail)))
        return emit(out, size, name, UNET_PREFIX "output_blocks.%d.0.%s%s", block * (per + 1) + layer,
                    part, tail);
    if ((rest = match2(name, "up_blocks.%d.attentions.%d.%n", &block, &layer)))
        return emit(out, size, name, UNET_PREFIX "output_blocks.%d.1.%s", block * (per + 1) + layer, rest);
    if ((rest = match1(name, "up_blocks.%d.upsamplers.0.conv.%n", &block)) && block >= 0 &&
        block < m->blocks)
        return emit(out, size, name, UNET_PREFIX "output_blocks.%d.%d.conv.%s", block * (per + 1) + per,
                    m->up_has_attention[block] ? 2 : 1, rest);
    return lcm_fail(LCM_ERR_FORMAT, "no original-layout name known for UNet tensor '%s'", name);
}

static lcm_status vae_resnet(const char *rest, char *part, size_t size) {
    const char *tail = after(rest, "conv_shortcut.");
    snprintf(part, size, "%s%s", tail ? "nin_shortcut." : "", tail ? tail : rest);
    return LCM_OK;
}

static lcm_status vae_name(const ldm_names *m, const char *name, char *out, size_t size) {
    const char *rest, *coder = after(name, "encoder.") ? "encoder" : after(name, "decoder.") ? "decoder" : NULL;
    char part[300];
    int block, layer;
    if ((rest = after(name, "quant_conv.")) || (rest = after(name, "post_quant_conv.")))
        return emit(out, size, name, VAE_PREFIX "%s", name);
    if (!coder) return lcm_fail(LCM_ERR_FORMAT, "no original-layout name known for VAE tensor '%s'", name);
    const char *inner = name + 8; // after "encoder." / "decoder."
    if ((rest = after(inner, "conv_norm_out.")))
        return emit(out, size, name, VAE_PREFIX "%s.norm_out.%s", coder, rest);
    if (after(inner, "conv_in.") || after(inner, "conv_out."))
        return emit(out, size, name, VAE_PREFIX "%s", name);
    if ((rest = match2(inner, "down_blocks.%d.resnets.%d.%n", &block, &layer))) {
        vae_resnet(rest, part, sizeof part);
        return emit(out, size, name, VAE_PREFIX "%s.down.%d.block.%d.%s", coder, block, layer, part);
    }
    if ((rest = match1(inner, "down_blocks.%d.downsamplers.0.conv.%n", &block)))
        return emit(out, size, name, VAE_PREFIX "%s.down.%d.downsample.conv.%s", coder, block, rest);
    // The decoder's up blocks are numbered from the bottom in the original layout.
    if ((rest = match2(inner, "up_blocks.%d.resnets.%d.%n", &block, &layer))) {
        vae_resnet(rest, part, sizeof part);
        return emit(out, size, name, VAE_PREFIX "%s.up.%d.block.%d.%s", coder, m->blocks - 1 - block,
                     layer, part);
    }
    if ((rest = match1(inner, "up_blocks.%d.upsamplers.0.conv.%n", &block)))
        return emit(out, size, name, VAE_PREFIX "%s.up.%d.upsample.conv.%s", coder,
                    m->blocks - 1 - block, rest);
    if ((rest = match1(inner, "mid_block.resnets.%d.%n", &layer)) && (layer == 0 || layer == 1)) {
        vae_resnet(rest, part, sizeof part);
        return emit(out, size, name, VAE_PREFIX "%s.mid.block_%d.%s", coder, layer + 1, part);
    }
    if ((rest = after(inner, "mid_block.attentions.0."))) {
        static const struct { const char *diffusers, *ldm; } parts[] = {
            {"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."}, {"to_v.", "v."}, {"to_out.0.", "proj_out."}};
        for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
            const char *tail = after(rest, parts[i].diffusers);
            if (tail) return emit(out, size, name, VAE_PREFIX "%s.mid.attn_1.%s%s", coder, parts[i].ldm, tail);
        }
    }
    return lcm_fail(LCM_ERR_FORMAT, "no original-layout name known for VAE tensor '%s'", name);
}

static lcm_status names_from_config(const char *component, const json_config *config, ldm_names *m) {
    memset(m, 0, sizeof *m);
    if (!strcmp(component, "text_encoder")) {
        m->component = LDM_TEXT;
        return LCM_OK;
    }
    bool unet = !strcmp(component, "unet");
    if (!unet && strcmp(component, "vae"))
        return lcm_fail(LCM_ERR_UNSUPPORTED, "single-file checkpoints hold no '%s' component", component);
    m->component = unet ? LDM_UNET : LDM_VAE;
    int64_t per, channels[MAX_BLOCKS];
    int count;
    LCM_TRY(json_config_int_or(config, "layers_per_block", unet ? 2 : 1, 1, 16, &per));
    LCM_TRY(json_config_int_array(config, "block_out_channels", 1, 1 << 20, channels, MAX_BLOCKS, &count));
    m->layers_per_block = (int)per;
    m->blocks = count;
    if (unet) {
        const char *types[MAX_BLOCKS];
        int up_count;
        LCM_TRY(json_config_string_array(config, "up_block_types", types, MAX_BLOCKS, &up_count));
        for (int i = 0; i < up_count; i++) m->up_has_attention[i] = strstr(types[i], "CrossAttn") != NULL;
    }
    return LCM_OK;
}

static lcm_status original_name(const ldm_names *m, const char *name, char *out, size_t size) {
    switch (m->component) {
    case LDM_UNET: return unet_name(m, name, out, size);
    case LDM_VAE: return vae_name(m, name, out, size);
    case LDM_TEXT: return emit(out, size, name, TEXT_PREFIX "%s", name);
    }
    return LCM_ERR_INTERNAL;
}

lcm_status checkpoint_original_name(const char *component, const json_config *config,
                                    const char *name, char *out, size_t size) {
    ldm_names m;
    LCM_TRY(names_from_config(component, config, &m));
    return original_name(&m, name, out, size);
}

static lcm_status rename_tensor(const void *context, const st_file *file, const char *name, char *out,
                                size_t size) {
    const ldm_names *m = context;
    LCM_TRY(original_name(m, name, out, size));
    // Checkpoints saved with transformers < 4.31 lack the "text_model." level.
    const char *inner = m->component == LDM_TEXT ? after(name, "text_model.") : NULL;
    if (inner && !st_find(file, out)) {
        char legacy[512];
        LCM_TRY(emit(legacy, sizeof legacy, name, TEXT_PREFIX "%s", inner));
        if (st_find(file, legacy)) return emit(out, size, name, "%s", legacy);
    }
    return LCM_OK;
}

lcm_status checkpoint_open_weights(const checkpoint *ck, const char *component, weight_set **out) {
    *out = NULL;
    ldm_names *m = malloc(sizeof *m);
    if (!m) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    json_config config = {0};
    lcm_status st = LCM_OK;
    if (strcmp(component, "text_encoder")) st = checkpoint_load_config(ck, component, "config.json", &config);
    if (st == LCM_OK) st = names_from_config(component, &config, m);
    json_config_free(&config);
    if (st != LCM_OK) {
        free(m);
        return st;
    }
    return weight_set_open_renamed(ck->path, rename_tensor, m, out);
}
