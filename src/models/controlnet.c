// ControlNetModel: config, weights and forward pass. See controlnet.h for the picture. The encoder
// half is the UNet's own code (unet.h), so the two cannot drift apart.
//
// Sources followed (diffusers v0.26.3): models/controlnet.py (ControlNetConditioningEmbedding,
// ControlNetModel.__init__/forward).
#include "models/controlnet.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/model_folder.h"
#include "ops/backend.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"
#include "ops/packed_cache.h"

struct controlnet_model {
    controlnet_config config;
    char *label; // the folder, for messages
    unet_model *encoder; // time embedding, conv_in, down blocks, mid block
    // controlnet_cond_embedding: conv_in, then pairs (same width, stride 2 to the next width),
    // conv_out to the UNet's first block width.
    conv2d embed_in;
    conv2d embed_blocks[2 * (CONTROLNET_MAX_EMBEDDING_BLOCKS - 1)];
    int embed_block_count;
    conv2d embed_out;
    conv2d down_convs[UNET_MAX_SKIPS]; // controlnet_down_blocks.i, 1x1
    struct packed_mapping *packed; // the packed-weight cache file the layers borrow from, or NULL
    conv2d mid_conv;                   // controlnet_mid_block, 1x1
    kernel_set kernels; // the set its layers were loaded for (from the backend), for silu
};

// ---- config ----------------------------------------------------------------------------------

static lcm_status parse_config(const json_config *c, controlnet_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    LCM_TRY(unet_config_parse(c, "ControlNetModel", true, &cfg->unet));
    int64_t v;
    LCM_TRY(json_config_int_or(c, "conditioning_channels", 3, 1, 64, &v));
    cfg->conditioning_channels = (int)v;
    int64_t channels[CONTROLNET_MAX_EMBEDDING_BLOCKS] = {16, 32, 96, 256};
    int n = 4;
    if (json_config_has(c, "conditioning_embedding_out_channels"))
        LCM_TRY(json_config_int_array(c, "conditioning_embedding_out_channels", 1, 65536, channels,
                                      CONTROLNET_MAX_EMBEDDING_BLOCKS, &n));
    if (n < 1)
        return lcm_fail(LCM_ERR_FORMAT, "%s: conditioning_embedding_out_channels is empty", c->label);
    cfg->embedding_count = n;
    for (int i = 0; i < n; i++) cfg->embedding_channels[i] = (int)channels[i];
    const char *order;
    LCM_TRY(json_config_string_or(c, "controlnet_conditioning_channel_order", "rgb", &order));
    if (strcmp(order, "rgb") && strcmp(order, "bgr"))
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: controlnet_conditioning_channel_order = \"%s\" is not supported "
                        "(supported: \"rgb\", \"bgr\")", c->label, order);
    cfg->bgr = !strcmp(order, "bgr");
    bool pool;
    LCM_TRY(json_config_bool_or(c, "global_pool_conditions", false, &pool));
    if (pool)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: global_pool_conditions = true is not supported (supported: false)",
                        c->label);
    return LCM_OK;
}

// ---- loading ---------------------------------------------------------------------------------

static lcm_status load_weights(const ops_backend *backend, controlnet_model *m,
                               const weight_set *ws) {
    const controlnet_config *cfg = &m->config;
    m->kernels = backend->kernels;
    LCM_TRY(unet_encoder_load(backend, ws, &cfg->unet, &m->encoder));
    const int *emb = cfg->embedding_channels;
    LCM_TRY(conv2d_load(&m->embed_in, backend, ws, "controlnet_cond_embedding.conv_in",
                        cfg->conditioning_channels, emb[0], 3, 1, 1, true));
    char name[128];
    m->embed_block_count = 2 * (cfg->embedding_count - 1);
    for (int i = 0; i + 1 < cfg->embedding_count; i++) {
        snprintf(name, sizeof name, "controlnet_cond_embedding.blocks.%d", 2 * i);
        LCM_TRY(conv2d_load(&m->embed_blocks[2 * i], backend, ws, name, emb[i], emb[i], 3, 1, 1,
                            true));
        snprintf(name, sizeof name, "controlnet_cond_embedding.blocks.%d", 2 * i + 1);
        LCM_TRY(conv2d_load(&m->embed_blocks[2 * i + 1], backend, ws, name, emb[i], emb[i + 1], 3,
                            2, 1, true));
    }
    LCM_TRY(conv2d_load(&m->embed_out, backend, ws, "controlnet_cond_embedding.conv_out",
                        emb[cfg->embedding_count - 1], cfg->unet.block_out_channels[0], 3, 1, 1,
                        true));
    int skip_channels[UNET_MAX_SKIPS];
    unet_skip_channels(&cfg->unet, skip_channels);
    for (int i = 0; i < cfg->unet.skip_count; i++) {
        snprintf(name, sizeof name, "controlnet_down_blocks.%d", i);
        LCM_TRY(conv2d_load(&m->down_convs[i], backend, ws, name, skip_channels[i],
                            skip_channels[i], 1, 1, 0, true));
    }
    int mid = cfg->unet.block_out_channels[cfg->unet.num_blocks - 1];
    LCM_TRY(conv2d_load(&m->mid_conv, backend, ws, "controlnet_mid_block", mid, mid, 1, 1, 0,
                        true));
    return LCM_OK;
}

lcm_status controlnet_load(const ops_backend *backend, const char *dir, const char *variant,
                           bool packed_cache, controlnet_model **out) {
    *out = NULL;
    controlnet_model *m = calloc(1, sizeof *m);
    if (!m || !(m->label = strdup(dir))) {
        free(m);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading %s", dir);
    }
    model_folder folder;
    lcm_status st = model_folder_open(dir, variant, &folder);
    if (st != LCM_OK) {
        controlnet_free(m);
        return lcm_fail_context(st, "ControlNet: ");
    }
    folder.packed_cache = packed_cache;
    json_config config;
    st = model_folder_load_config(&folder, ".", "config.json", &config);
    if (st == LCM_OK) {
        st = parse_config(&config, &m->config);
        json_config_free(&config);
    }
    weight_set *ws = NULL;
    if (st == LCM_OK) st = model_folder_open_weights(&folder, ".", "diffusion_pytorch_model", &ws);
    if (st == LCM_OK) st = load_weights(backend, m, ws);
    if (st == LCM_OK) m->packed = packed_cache_mapping(ws);
    weight_set_close(ws);
    model_folder_close(&folder);
    if (st != LCM_OK) {
        controlnet_free(m);
        return lcm_fail_context(st, "ControlNet %s: ", dir);
    }
    *out = m;
    return LCM_OK;
}

void controlnet_release_weight_pages(const controlnet_model *m) { packed_mapping_drop_pages(m->packed); }

void controlnet_free(controlnet_model *m) {
    if (!m) return;
    packed_mapping_release(m->packed);
    unet_free(m->encoder);
    conv2d_free(&m->embed_in);
    for (int i = 0; i < 2 * (CONTROLNET_MAX_EMBEDDING_BLOCKS - 1); i++) conv2d_free(&m->embed_blocks[i]);
    conv2d_free(&m->embed_out);
    for (int i = 0; i < UNET_MAX_SKIPS; i++) conv2d_free(&m->down_convs[i]);
    conv2d_free(&m->mid_conv);
    free(m->label);
    free(m);
}

const controlnet_config *controlnet_get_config(const controlnet_model *m) { return &m->config; }

lcm_status controlnet_check_fits(const controlnet_model *m, const unet_config *unet,
                                 const char *unet_label) {
    const unet_config *own = &m->config.unet;
    if (own->in_channels != unet->in_channels)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "ControlNet %s does not fit the UNet of %s: in_channels %d vs %d",
                        m->label, unet_label, own->in_channels, unet->in_channels);
    if (own->cross_attention_dim != unet->cross_attention_dim)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "ControlNet %s does not fit the UNet of %s: cross_attention_dim %d vs %d",
                        m->label, unet_label, own->cross_attention_dim, unet->cross_attention_dim);
    if (own->skip_count != unet->skip_count)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "ControlNet %s does not fit the UNet of %s: %d skip connections vs %d "
                        "(block_out_channels / layers_per_block differ)",
                        m->label, unet_label, own->skip_count, unet->skip_count);
    int a[UNET_MAX_SKIPS], b[UNET_MAX_SKIPS];
    unet_skip_channels(own, a);
    unet_skip_channels(unet, b);
    for (int i = 0; i < own->skip_count; i++)
        if (a[i] != b[i])
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "ControlNet %s does not fit the UNet of %s: down residual %d has %d "
                            "channels, the UNet's skip connection has %d (block_out_channels differ)",
                            m->label, unet_label, i, a[i], b[i]);
    if (own->num_blocks != unet->num_blocks ||
        own->block_out_channels[own->num_blocks - 1] != unet->block_out_channels[unet->num_blocks - 1])
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "ControlNet %s does not fit the UNet of %s: mid block channels differ",
                        m->label, unet_label);
    return LCM_OK;
}

// ---- forward ---------------------------------------------------------------------------------

// ControlNetConditioningEmbedding: [N, 3, H, W] -> [N, C0, H/8, W/8] (three stride-2 convs for
// the usual four widths).
static tensor *conditioning_embedding(const controlnet_model *m, const tensor *cond) {
    tensor *h = conv2d_forward(&m->embed_in, cond);
    silu_inplace(h, m->kernels);
    for (int i = 0; i < m->embed_block_count; i++) {
        tensor_replace(&h, conv2d_forward(&m->embed_blocks[i], h));
        silu_inplace(h, m->kernels);
    }
    tensor_replace(&h, conv2d_forward(&m->embed_out, h));
    return h;
}

// The conditioning image with its channels reversed (RGB <-> BGR).
static tensor *flip_channels(const tensor *x) {
    tensor *plain = tensor_to_nchw(x);
    tensor *out = plain ? tensor_copy(plain) : NULL;
    if (out) {
        int64_t n = x->shape[0], c = x->shape[1], plane = x->shape[2] * x->shape[3];
        for (int64_t b = 0; b < n; b++)
            for (int64_t k = 0; k < c; k++)
                memcpy(out->data + (b * c + k) * plane, plain->data + (b * c + (c - 1 - k)) * plane,
                       sizeof(float) * plane);
    }
    tensor_free(plain);
    return out;
}

// controlnet_forward's work once its arguments are checked.
static lcm_status controlnet_compute(const controlnet_model *m, const tensor *sample, float timestep,
                                     const tensor *encoder_hidden_states, const tensor *cond,
                                     float scale, tensor **down, tensor **mid) {
    const controlnet_config *cfg = &m->config;
    int count = cfg->unet.skip_count;
    tensor *flipped = cfg->bgr ? flip_channels(cond) : NULL;
    tensor *embedding = conditioning_embedding(m, flipped ? flipped : cond); // [N, C0, H/8, W/8]
    tensor_free(flipped);
    if (!embedding)
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "ControlNet %s: conditioning embedding failed: %s",
                        m->label, error_last_message());
    tensor *skips[UNET_MAX_SKIPS];
    tensor *h = NULL;
    lcm_status st = unet_encoder_forward(m->encoder, sample, timestep, encoder_hidden_states, NULL,
                                         embedding, skips, &h);
    tensor_free(embedding);
    if (st != LCM_OK) return lcm_fail_context(st, "ControlNet %s: ", m->label);

    bool ok = true;
    for (int i = 0; i < count; i++) {
        down[i] = conv2d_forward(&m->down_convs[i], skips[i]);
        scale_inplace(down[i], scale);
        tensor_free(skips[i]);
        ok = ok && down[i];
    }
    *mid = conv2d_forward(&m->mid_conv, h);
    scale_inplace(*mid, scale);
    tensor_free(h);
    if (!ok || !*mid) {
        for (int i = 0; i < count; i++) tensor_replace(&down[i], NULL);
        tensor_replace(mid, NULL);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "ControlNet %s: out of memory", m->label);
    }
    return LCM_OK;
}

lcm_status controlnet_forward(const controlnet_model *m, const tensor *sample, float timestep,
                              const tensor *encoder_hidden_states, const tensor *cond, float scale,
                              tensor **down, tensor **mid) {
    const controlnet_config *cfg = &m->config;
    int count = cfg->unet.skip_count;
    for (int i = 0; i < count; i++) down[i] = NULL;
    *mid = NULL;
    if (!sample || sample->ndim != 4 || !cond || cond->ndim != 4 ||
        cond->shape[0] != sample->shape[0] || cond->shape[1] != cfg->conditioning_channels)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "ControlNet %s: the conditioning image must be [N, %d, H, W] with the "
                        "sample's batch N", m->label, cfg->conditioning_channels);

    // Calibration (tools/quantize_model.h) tells these layers from the UNet's of the same names.
    const char *outer_scope = ops_set_observer_scope("controlnet");
    lcm_status st = controlnet_compute(m, sample, timestep, encoder_hidden_states, cond, scale, down, mid);
    ops_set_observer_scope(outer_scope);
    return st;
}
