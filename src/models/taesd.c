// AutoencoderTiny (TAESD) following diffusers v0.26.3 (autoencoder_tiny.py, vae.py EncoderTiny /
// DecoderTiny, unet_2d_blocks.py AutoencoderTinyBlock). fixtures/README.md section 7.5.
//
// Both halves are one nn.Sequential; the layers are kept in that order so that layer K here is
// `decoder.layers.K` / `encoder.layers.K` there (weights and debug taps use those names):
//
//   DecoderTiny: conv(L->C) ReLU | per stage: Block x n, [Upsample x2, conv(C->C, no bias)] | last
//                stage ends with conv(C->out) instead of upsample+conv
//   EncoderTiny: conv(in->C) | Block x n0 | per further stage: conv(C->C, stride 2, no bias),
//                Block x n | conv(C->L)
//   Block(x) = ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x), all convs 3x3 with padding 1.
#include "models/taesd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/json_config.h"
#include "ops/ops.h"
#include "ops/pointwise.h"

#define TAESD_MAX_CHANNELS 4096
#define TAESD_MAX_BLOCKS_PER_STAGE 64
// DecoderTiny hard-codes the clamp magnitude (not config.latent_magnitude).
#define TAESD_INPUT_CLAMP 3.0f
#define NAME_SIZE 128

typedef enum layer_kind { LAYER_CONV, LAYER_RELU, LAYER_BLOCK, LAYER_UPSAMPLE } layer_kind;

// One entry of the nn.Sequential.
typedef struct layer {
    layer_kind kind;
    conv2d conv[3]; // LAYER_CONV: conv[0]; LAYER_BLOCK: the block's conv.0, conv.2, conv.4
} layer;

typedef struct layer_stack {
    int count;
    layer *layers;
} layer_stack;

struct taesd_model {
    taesd_config config;
    layer_stack encoder, decoder;
};

// ---- config ----------------------------------------------------------------------------------

// An integer array field with a default, of exactly `expected_count` entries when that is > 0.
static lcm_status int_array_or(const json_config *c, const char *field, const int *fallback,
                               int fallback_count, int64_t min, int64_t max, int *out, int *count) {
    if (!json_config_has(c, field)) {
        for (int i = 0; i < fallback_count; i++) out[i] = fallback[i];
        *count = fallback_count;
        return LCM_OK;
    }
    int64_t values[TAESD_MAX_STAGES];
    LCM_TRY(json_config_int_array(c, field, min, max, values, TAESD_MAX_STAGES, count));
    for (int i = 0; i < *count; i++) out[i] = (int)values[i];
    return LCM_OK;
}

static lcm_status check_channels(const json_config *c, const char *field, int stage_count,
                                 int *channels) {
    static const int fallback[4] = {64, 64, 64, 64};
    int values[TAESD_MAX_STAGES], count = 0;
    LCM_TRY(int_array_or(c, field, fallback, 4, 1, TAESD_MAX_CHANNELS, values, &count));
    if (count != stage_count)
        return lcm_fail(LCM_ERR_FORMAT, "%s: %s has %d entries, expected %d (one per stage)",
                        c->label, field, count, stage_count);
    for (int i = 0; i < count; i++) {
        if (*channels == 0) *channels = values[i];
        // Every stage is built from C->C convs, so different widths cannot be wired together.
        if (values[i] != *channels)
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s: %s[%d] = %d differs from %d; AutoencoderTiny needs the same "
                            "channel count in every stage (and in encoder and decoder)",
                            c->label, field, i, values[i], *channels);
    }
    return LCM_OK;
}

static lcm_status parse_config(const json_config *c, taesd_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    const char *class_name = NULL;
    LCM_TRY(json_config_string_or(c, "_class_name", "AutoencoderTiny", &class_name));
    if (strcmp(class_name, "AutoencoderTiny") != 0)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: _class_name = \"%s\", expected \"AutoencoderTiny\" (a TAESD folder "
                        "such as madebyollin/taesd)",
                        c->label, class_name);
    int64_t v;
    LCM_TRY(json_config_int_or(c, "in_channels", 3, 1, 64, &v));
    cfg->in_channels = (int)v;
    LCM_TRY(json_config_int_or(c, "out_channels", 3, 1, 64, &v));
    cfg->out_channels = (int)v;
    LCM_TRY(json_config_int_or(c, "latent_channels", 4, 1, 256, &v));
    cfg->latent_channels = (int)v;

    static const int encoder_default[4] = {1, 3, 3, 3}, decoder_default[4] = {3, 3, 3, 1};
    int encoder_count = 0, decoder_count = 0;
    LCM_TRY(int_array_or(c, "num_encoder_blocks", encoder_default, 4, 0, TAESD_MAX_BLOCKS_PER_STAGE,
                         cfg->encoder_blocks, &encoder_count));
    LCM_TRY(int_array_or(c, "num_decoder_blocks", decoder_default, 4, 0, TAESD_MAX_BLOCKS_PER_STAGE,
                         cfg->decoder_blocks, &decoder_count));
    if (encoder_count != decoder_count)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: num_encoder_blocks has %d stages but num_decoder_blocks has %d; the "
                        "encoder would downscale by a different factor than the decoder upscales",
                        c->label, encoder_count, decoder_count);
    cfg->stage_count = encoder_count;
    LCM_TRY(check_channels(c, "encoder_block_out_channels", cfg->stage_count, &cfg->channels));
    LCM_TRY(check_channels(c, "decoder_block_out_channels", cfg->stage_count, &cfg->channels));

    LCM_TRY(json_config_int_or(c, "upsampling_scaling_factor", 2, 1, 16, &v));
    if (v != 2)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: upsampling_scaling_factor = %lld is not supported; expected 2",
                        c->label, (long long)v);
    const char *act_fn = NULL;
    LCM_TRY(json_config_string_or(c, "act_fn", "relu", &act_fn));
    if (strcmp(act_fn, "relu") != 0)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: act_fn = \"%s\" is not supported; expected \"relu\"",
                        c->label, act_fn);
    double scaling;
    LCM_TRY(json_config_float_or(c, "scaling_factor", 1.0, 1e-6, 1e6, &scaling));
    cfg->scaling_factor = (float)scaling;
    // latent_magnitude / latent_shift only serve AutoencoderTiny.forward's uint8 round trip and
    // force_upcast only half precision; none of them changes decode or encode. Type-check them.
    double unused;
    LCM_TRY(json_config_float_or(c, "latent_magnitude", 3.0, -1e6, 1e6, &unused));
    LCM_TRY(json_config_float_or(c, "latent_shift", 0.5, -1e6, 1e6, &unused));
    bool upcast;
    LCM_TRY(json_config_bool_or(c, "force_upcast", false, &upcast));
    cfg->downscale_factor = 1 << (cfg->stage_count - 1);
    return LCM_OK;
}

// ---- loading ---------------------------------------------------------------------------------

static lcm_status load_conv(const ops_backend *backend, conv2d *conv, const weight_set *ws,
                            const char *prefix, int in, int out, int stride, bool has_bias) {
    return conv2d_load(conv, backend, ws, prefix, in, out, 3, stride, 1, has_bias);
}

// Appends a layer; the stack was sized for all of them beforehand.
static layer *push(layer_stack *s, layer_kind kind) {
    layer *l = &s->layers[s->count++];
    l->kind = kind;
    return l;
}

static lcm_status push_conv(const ops_backend *backend, layer_stack *s, const weight_set *ws,
                            const char *half, int in, int out, int stride, bool has_bias) {
    char prefix[NAME_SIZE];
    snprintf(prefix, sizeof prefix, "%s.layers.%d", half, s->count);
    return load_conv(backend, &push(s, LAYER_CONV)->conv[0], ws, prefix, in, out, stride, has_bias);
}

static lcm_status push_blocks(const ops_backend *backend, layer_stack *s, const weight_set *ws,
                              const char *half, int count, int channels) {
    for (int b = 0; b < count; b++) {
        int index = s->count;
        layer *l = push(s, LAYER_BLOCK);
        for (int k = 0; k < 3; k++) {
            char prefix[NAME_SIZE];
            snprintf(prefix, sizeof prefix, "%s.layers.%d.conv.%d", half, index, 2 * k);
            LCM_TRY(load_conv(backend, &l->conv[k], ws, prefix, channels, channels, 1, true));
        }
    }
    return LCM_OK;
}

static lcm_status alloc_stack(layer_stack *s, int count) {
    s->layers = calloc((size_t)count, sizeof *s->layers);
    if (!s->layers) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading TAESD");
    return LCM_OK;
}

static lcm_status load_decoder(const ops_backend *backend, layer_stack *s, const weight_set *ws,
                               const taesd_config *cfg) {
    int total = 2;
    for (int i = 0; i < cfg->stage_count; i++) total += cfg->decoder_blocks[i] + 2;
    LCM_TRY(alloc_stack(s, total));
    int C = cfg->channels;
    LCM_TRY(push_conv(backend, s, ws, "decoder", cfg->latent_channels, C, 1, true));
    push(s, LAYER_RELU);
    for (int i = 0; i < cfg->stage_count; i++) {
        bool last = i == cfg->stage_count - 1;
        LCM_TRY(push_blocks(backend, s, ws, "decoder", cfg->decoder_blocks[i], C));
        if (!last) push(s, LAYER_UPSAMPLE);
        LCM_TRY(push_conv(backend, s, ws, "decoder", C, last ? cfg->out_channels : C, 1, last));
        // Without a tap the upsample is read by this conv (stack_forward)
        if (!last) LCM_TRY(conv2d_prepare_upsampled(&s->layers[s->count - 1].conv[0]));
    }
    return LCM_OK;
}

static lcm_status load_encoder(const ops_backend *backend, layer_stack *s, const weight_set *ws,
                               const taesd_config *cfg) {
    int total = 1;
    for (int i = 0; i < cfg->stage_count; i++) total += cfg->encoder_blocks[i] + 1;
    LCM_TRY(alloc_stack(s, total));
    int C = cfg->channels;
    for (int i = 0; i < cfg->stage_count; i++) {
        if (i == 0)
            LCM_TRY(push_conv(backend, s, ws, "encoder", cfg->in_channels, C, 1, true));
        else
            LCM_TRY(push_conv(backend, s, ws, "encoder", C, C, 2, false));
        LCM_TRY(push_blocks(backend, s, ws, "encoder", cfg->encoder_blocks[i], C));
    }
    return push_conv(backend, s, ws, "encoder", C, cfg->latent_channels, 1, true);
}

static void free_stack(layer_stack *s) {
    for (int i = 0; i < s->count; i++)
        for (int k = 0; k < 3; k++) conv2d_free(&s->layers[i].conv[k]);
    free(s->layers);
    s->layers = NULL;
    s->count = 0;
}

static lcm_status parse_any_config(const json_config *json, void *config) {
    return parse_config(json, config);
}

lcm_status taesd_load(const ops_backend *backend, const model_folder *folder,
                      const char *component, taesd_model **out) {
    *out = NULL;
    if (!component || !*component) component = ".";
    taesd_config config = {0};
    LCM_TRY(model_folder_parse_config(folder, component, parse_any_config, &config));
    taesd_model *m = calloc(1, sizeof *m);
    if (!m) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading TAESD");
    m->config = config;
    weight_set *ws = NULL;
    lcm_status st = model_folder_open_weights(folder, component, "diffusion_pytorch_model", &ws);
    if (st == LCM_OK) st = load_encoder(backend, &m->encoder, ws, &m->config);
    if (st == LCM_OK) st = load_decoder(backend, &m->decoder, ws, &m->config);
    weight_set_close(ws);
    if (st != LCM_OK) {
        taesd_free(m);
        return lcm_fail_context(st, "loading TAESD (%s): ", folder->root);
    }
    *out = m;
    return LCM_OK;
}

lcm_status taesd_load_dir(const ops_backend *backend, const char *dir, taesd_model **out) {
    *out = NULL;
    model_folder folder;
    LCM_TRY(model_folder_open(dir, NULL, &folder));
    lcm_status st = LCM_OK;
    if (folder.index.root)
        st = lcm_fail(LCM_ERR_FORMAT,
                      "%s: a pipeline folder (model_index.json); expected a TAESD model folder "
                      "with config.json and diffusion_pytorch_model.safetensors at its root",
                      dir);
    if (st == LCM_OK) st = taesd_load(backend, &folder, NULL, out);
    model_folder_close(&folder);
    return st;
}

void taesd_free(taesd_model *m) {
    if (!m) return;
    free_stack(&m->encoder);
    free_stack(&m->decoder);
    free(m);
}

const taesd_config *taesd_get_config(const taesd_model *m) { return &m->config; }

static int64_t stack_params(const layer_stack *s) {
    int64_t n = 0;
    for (int i = 0; i < s->count; i++) {
        const layer *l = &s->layers[i];
        int convs = l->kind == LAYER_BLOCK ? 3 : l->kind == LAYER_CONV ? 1 : 0;
        for (int k = 0; k < convs; k++) n += conv2d_params(&l->conv[k]);
    }
    return n;
}

int64_t taesd_param_count(const taesd_model *m) {
    return stack_params(&m->encoder) + stack_params(&m->decoder);
}

// ---- forward pass ----------------------------------------------------------------------------

// [N, C, H, W] -> [N, C, H, W]: ReLU(conv(ReLU(conv(ReLU(conv(x))))) + x), each ReLU and the
// skip add done inside its convolution.
static tensor *block_forward(const layer *l, const tensor *x) {
    const conv2d_fusion relu = {.activation = CONV_ACTIVATION_RELU};
    tensor *h = conv2d_forward_fused(&l->conv[0], x, &relu);
    tensor_replace(&h, conv2d_forward_fused(&l->conv[1], h, &relu));
    const conv2d_fusion skip_relu = {.residual = x, .activation = CONV_ACTIVATION_RELU};
    if (h) tensor_replace(&h, conv2d_forward_fused(&l->conv[2], h, &skip_relu));
    return h;
}

// Reports layer i's output to the tap as "<half>.layers.<i>" (NCHW, as diffusers' hooks see it).
static void tap_layer(taesd_tap_fn tap, void *user, const char *half, int i, const tensor *value) {
    if (!value) return;
    char name[NAME_SIZE];
    snprintf(name, sizeof name, "%s.layers.%d", half, i);
    tensor *plain = tensor_to_nchw(value);
    if (plain) tap(user, name, plain);
    tensor_free(plain);
}

// Runs the layers in order; consumes x. `half` names the taps ("decoder" / "encoder"). An upsample
// is read by the convolution after it (conv2d_prepare_upsampled: 4/9 of the work); without a tap a
// ReLU runs inside the convolution before it (the same values either way).
static tensor *stack_forward(const layer_stack *s, const char *half, tensor *x, taesd_tap_fn tap,
                             void *user) {
    tensor *h = x;
    bool upsample_pending = false;
    for (int i = 0; i < s->count && h; i++) {
        const layer *l = &s->layers[i];
        bool next_is_conv = i + 1 < s->count && s->layers[i + 1].kind == LAYER_CONV;
        bool next_is_relu = i + 1 < s->count && s->layers[i + 1].kind == LAYER_RELU;
        switch (l->kind) {
        case LAYER_CONV: {
            conv2d_fusion fusion = {.upsample_input = upsample_pending};
            upsample_pending = false;
            if (!tap && next_is_relu) {
                fusion.activation = CONV_ACTIVATION_RELU;
                i++;
            }
            tensor_replace(&h, conv2d_forward_fused(&l->conv[0], h, &fusion));
            break;
        }
        case LAYER_RELU: relu_inplace(h); continue; // diffusers' shared ReLU module is not hooked
        case LAYER_BLOCK: tensor_replace(&h, block_forward(l, h)); break;
        case LAYER_UPSAMPLE:
            if (next_is_conv) {
                // The conv reads the doubled image; a tap sees it made for its own sake, so that
                // the result does not depend on whether anyone is looking.
                upsample_pending = true;
                if (tap) {
                    tensor *doubled = upsample_nearest2x(h); // [N,C,2H,2W]
                    tap_layer(tap, user, half, i, doubled);
                    tensor_free(doubled);
                }
                continue;
            }
            tensor_replace(&h, upsample_nearest2x(h)); // [N,C,2H,2W]
            break;
        }
        if (tap) tap_layer(tap, user, half, i, h);
    }
    return h;
}

static lcm_status check_input(const char *what, const tensor *x, int channels) {
    if (!x || x->ndim != 4 || x->shape[0] < 1 || x->shape[1] != channels || x->shape[2] < 1 ||
        x->shape[3] < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "TAESD %s: expected a [N, %d, H, W] tensor", what,
                        channels);
    return LCM_OK;
}

// The ops report failures by returning NULL with the message and its code set (out of memory is
// what remains after the inputs were checked).
static lcm_status forward_failure(const char *what) {
    lcm_status code = lcm_last_status() != LCM_OK ? lcm_last_status() : LCM_ERR_INTERNAL;
    return lcm_fail_context(code, "TAESD %s: ", what);
}

lcm_status taesd_decode_tapped(const taesd_model *m, const tensor *latents, taesd_tap_fn tap,
                               void *user, tensor **image) {
    *image = NULL;
    LCM_TRY(check_input("decode", latents, m->config.latent_channels));
    tensor *h = tensor_to_nchw(latents);
    tanh_clamp_inplace(h, TAESD_INPUT_CLAMP);
    if (tap && h) tap(user, "clamped_input", h);
    h = stack_forward(&m->decoder, "decoder", h, tap, user); // [N,L,h,w] -> [N,3,8h,8w] in ~[0,1]
    scale_shift_inplace(h, 2.0f, -1.0f); // diffusers' x.mul(2).sub(1): [0,1] -> [-1,1]
    tensor_replace(&h, tensor_to_nchw(h));
    if (!h) return forward_failure("decode");
    *image = h;
    return LCM_OK;
}

lcm_status taesd_decode(const taesd_model *m, const tensor *latents, tensor **image) {
    return taesd_decode_tapped(m, latents, NULL, NULL, image);
}

lcm_status taesd_encode_tapped(const taesd_model *m, const tensor *image, taesd_tap_fn tap,
                               void *user, tensor **latents) {
    *latents = NULL;
    LCM_TRY(check_input("encode", image, m->config.in_channels));
    tensor *h = tensor_to_nchw(image);
    shift_divide_inplace(h, 1.0f, 2.0f); // diffusers' x.add(1).div(2): [-1,1] -> [0,1]
    h = stack_forward(&m->encoder, "encoder", h, tap, user); // [N,3,H,W] -> [N,L,H/8,W/8]
    tensor_replace(&h, tensor_to_nchw(h));
    if (!h) return forward_failure("encode");
    *latents = h;
    return LCM_OK;
}

lcm_status taesd_encode(const taesd_model *m, const tensor *image, tensor **latents) {
    return taesd_encode_tapped(m, image, NULL, NULL, latents);
}
