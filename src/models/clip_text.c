// CLIP text transformer: embeddings, pre-LayerNorm encoder layers with causal self-attention,
// final LayerNorm. Weight names follow transformers' CLIPTextModel state dict ("text_model.*").
#include "models/clip_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "ops/backend.h"
#include "ops/gather.h"
#include "ops/ops.h"
#include "ops/packed_cache.h"

typedef struct clip_encoder_layer {
    norm layer_norm1;
    linear q_proj, k_proj, v_proj, out_proj;
    norm layer_norm2;
    linear fc1, fc2;
} clip_encoder_layer;

// The projections (two thirds of the model's weights) are packed for the backend's kernels like
// any model's, through the packed-weight cache where the pipeline allows it, and the token
// embedding (the other third, of which a prompt reads 77 rows) is used in place in the weight
// file's mapping where the file stores it as float32. clip_text_release_pages drops both mappings'
// pages after each prompt, so a pipeline does not keep the encoder resident while the UNet and VAE
// run; they come back from the page cache at the next prompt. (Packed copies made by a load
// without the cache stay resident: about 0.34 GB for SD's encoder.) Layers are packed for a
// prompt's 77 rows, in float32 whatever the pipeline's precision: the encoder costs tens of
// milliseconds a prompt and its output conditions every step.
//
// Weights stored in 8 bits (`lcm quantize --compress-weights`) are not kept in any other form:
// held as float32 they would take 4x their file size (about 0.5 GB for SD's encoder) through the
// whole generation. Such a model holds nothing but the file's mapping (the 8-bit values and their
// scales, dropped by clip_text_release_pages) and, in each forward pass, loads the token embedding
// and then one encoder layer at a time, dequantized by the same weight reader and packed for the
// same kernels as a load would (never into the cache), and frees each right after use (`on_use`).
// The results are exactly those of a model holding the copies; a pass costs the dequantization
// and packing of every weight once.
struct clip_text_model {
    clip_text_config config;
    weight_set *weights;        // kept open: the weights used in place live in its mapping
    const float *token_embedding_mapped; // token_embedding's values in the mapping, or NULL
    float *token_embedding;     // [vocab_size, hidden_size] (owned copy, the mapped values, or
                                // NULL when on_use)
    float *position_embedding;  // [max_position_embeddings, hidden_size]
    clip_encoder_layer *layers; // [num_hidden_layers]; empty (zeroed) when on_use
    bool on_use;                // 8-bit weights: loaded per forward pass (above)
    ops_backend backend;        // the loading backend's copy in float32, also for on_use passes
    struct packed_mapping *packed; // the packed-weight cache mapping the layers borrow, or NULL
    norm final_layer_norm;
    int64_t param_count;
};

// ---- config ------------------------------------------------------------------------------------

lcm_status clip_text_config_read(const json_config *config, clip_text_config *out) {
    memset(out, 0, sizeof *out);
    int64_t hidden, intermediate, layers, heads, positions, vocab, eos;
    double eps;
    const char *act;
    // transformers' CLIPTextConfig defaults, for fields a config may leave out.
    LCM_TRY(json_config_int_or(config, "hidden_size", 512, 1, 65536, &hidden));
    LCM_TRY(json_config_int_or(config, "intermediate_size", 2048, 1, 1 << 20, &intermediate));
    LCM_TRY(json_config_int_or(config, "num_hidden_layers", 12, 1, 1024, &layers));
    LCM_TRY(json_config_int_or(config, "num_attention_heads", 8, 1, 65536, &heads));
    LCM_TRY(json_config_int_or(config, "max_position_embeddings", 77, 1, 65536, &positions));
    LCM_TRY(json_config_int_or(config, "vocab_size", 49408, 1, 1 << 24, &vocab));
    LCM_TRY(json_config_float_or(config, "layer_norm_eps", 1e-5, 0.0, 1.0, &eps));
    LCM_TRY(json_config_string_or(config, "hidden_act", "quick_gelu", &act));
    LCM_TRY(json_config_int_or(config, "eos_token_id", 49407, INT32_MIN, INT32_MAX, &eos));

    if (hidden % heads)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: num_attention_heads = %lld does not divide hidden_size = %lld",
                        config->label, (long long)heads, (long long)hidden);
    if (!strcmp(act, "quick_gelu")) {
        out->hidden_act = CLIP_ACT_QUICK_GELU;
    } else if (!strcmp(act, "gelu")) {
        out->hidden_act = CLIP_ACT_GELU;
    } else {
        return lcm_fail(
            LCM_ERR_UNSUPPORTED,
            "%s: hidden_act = \"%s\" is not supported (expected \"quick_gelu\" or \"gelu\")",
            config->label, act);
    }
    out->hidden_size = (int)hidden;
    out->intermediate_size = (int)intermediate;
    out->num_hidden_layers = (int)layers;
    out->num_attention_heads = (int)heads;
    out->max_position_embeddings = (int)positions;
    out->vocab_size = (int)vocab;
    out->layer_norm_eps = (float)eps;
    out->eos_token_id = eos;
    return LCM_OK;
}

// ---- weights -----------------------------------------------------------------------------------

#define TOKEN_EMBEDDING "text_model.embeddings.token_embedding.weight"

static void encoder_layer_free(clip_encoder_layer *l) {
    norm_free(&l->layer_norm1);
    linear_free(&l->q_proj);
    linear_free(&l->k_proj);
    linear_free(&l->v_proj);
    linear_free(&l->out_proj);
    norm_free(&l->layer_norm2);
    linear_free(&l->fc1);
    linear_free(&l->fc2);
}

static int64_t norm_params(const norm *n) { return 2 * (int64_t)n->channels; }

static int64_t encoder_layer_params(const clip_encoder_layer *l) {
    return norm_params(&l->layer_norm1) + linear_params(&l->q_proj) + linear_params(&l->k_proj) +
           linear_params(&l->v_proj) + linear_params(&l->out_proj) + norm_params(&l->layer_norm2) +
           linear_params(&l->fc1) + linear_params(&l->fc2);
}

// "text_model.encoder.layers.{index}.{part}" into buf.
static const char *layer_weight(char *buf, size_t size, int index, const char *part) {
    snprintf(buf, size, "text_model.encoder.layers.%d.%s", index, part);
    return buf;
}

// A projection of an encoder layer: packed for the kernels that multiply a prompt's tokens;
// `per_use` layers (an on_use pass's) bypass the packed-weight cache.
static lcm_status projection_load(linear *l, const ops_backend *backend, const weight_set *ws,
                                  int index, const char *part, int in, int out,
                                  const clip_text_config *c, bool per_use) {
    char prefix[128];
    layer_weight(prefix, sizeof prefix, index, part);
    int64_t rows = c->max_position_embeddings; // the tokens of one prompt
    return per_use ? linear_load_rows_uncached(l, backend, ws, prefix, in, out, true, rows)
                   : linear_load_rows(l, backend, ws, prefix, in, out, true, rows);
}

static lcm_status encoder_layer_load(const ops_backend *backend, clip_encoder_layer *l,
                                     const weight_set *ws, int index, const clip_text_config *c,
                                     bool per_use) {
    char n[128];
    int hidden = c->hidden_size, inner = c->intermediate_size;
    float eps = c->layer_norm_eps;
    LCM_TRY(norm_load(&l->layer_norm1, ws, layer_weight(n, sizeof n, index, "layer_norm1"), hidden,
                      1, eps));
    LCM_TRY(projection_load(&l->q_proj, backend, ws, index, "self_attn.q_proj", hidden, hidden, c, per_use));
    LCM_TRY(projection_load(&l->k_proj, backend, ws, index, "self_attn.k_proj", hidden, hidden, c, per_use));
    LCM_TRY(projection_load(&l->v_proj, backend, ws, index, "self_attn.v_proj", hidden, hidden, c, per_use));
    LCM_TRY(projection_load(&l->out_proj, backend, ws, index, "self_attn.out_proj", hidden, hidden, c, per_use));
    LCM_TRY(norm_load(&l->layer_norm2, ws, layer_weight(n, sizeof n, index, "layer_norm2"), hidden,
                      1, eps));
    LCM_TRY(projection_load(&l->fc1, backend, ws, index, "mlp.fc1", hidden, inner, c, per_use));
    LCM_TRY(projection_load(&l->fc2, backend, ws, index, "mlp.fc2", inner, hidden, c, per_use));
    return LCM_OK;
}

// `per_use`: the layers are freed right after (an 8-bit model, on_use), so their packing is not
// worth a place in the packed-weight cache.
static lcm_status load_weights(const ops_backend *backend, clip_text_model *m,
                               const weight_set *ws, bool per_use) {
    const clip_text_config *c = &m->config;
    int64_t hidden = c->hidden_size;
    const char *token_name = TOKEN_EMBEDDING;
    int64_t token_shape[2] = {c->vocab_size, hidden};
    m->token_embedding_mapped = weight_set_map_f32(ws, token_name, 2, token_shape);
    if (m->token_embedding_mapped) m->token_embedding = (float *)m->token_embedding_mapped; // read only
    else LCM_TRY(weight_set_load_f32(ws, token_name, 2, token_shape, &m->token_embedding));
    LCM_TRY(weight_set_load_f32(ws, "text_model.embeddings.position_embedding.weight", 2,
                                (int64_t[]){c->max_position_embeddings, hidden},
                                &m->position_embedding));
    m->param_count = (c->vocab_size + (int64_t)c->max_position_embeddings) * hidden;
    for (int i = 0; i < c->num_hidden_layers; i++) {
        LCM_TRY(encoder_layer_load(backend, &m->layers[i], ws, i, c, per_use));
        m->param_count += encoder_layer_params(&m->layers[i]);
    }
    LCM_TRY(norm_load(&m->final_layer_norm, ws, "text_model.final_layer_norm", c->hidden_size, 1,
                      c->layer_norm_eps));
    m->param_count += norm_params(&m->final_layer_norm);
    return LCM_OK;
}

// Whether the encoder layers' weights are stored in 8 bits (the first layer's query projection
// stands for all: `lcm quantize --compress-weights` writes every projection so).
static bool stored_8bit(const weight_set *ws) {
    char name[128];
    const st_tensor *t = weight_set_find(ws, layer_weight(name, sizeof name, 0, "self_attn.q_proj.weight"),
                                         NULL);
    return t && t->dtype == ST_I8;
}

// Frees the copies an on_use model loads per forward pass (the token embedding when it is one, and
// every encoder layer); position embedding and final norm are kept (a few hundred kilobytes).
static void free_weights_until_use(clip_text_model *m) {
    if (!m->token_embedding_mapped) free(m->token_embedding);
    m->token_embedding = NULL;
    m->token_embedding_mapped = NULL;
    for (int i = 0; i < m->config.num_hidden_layers; i++) {
        encoder_layer_free(&m->layers[i]);
        m->layers[i] = (clip_encoder_layer){0};
    }
    m->on_use = true;
}

void clip_text_free(clip_text_model *m) {
    if (!m) return;
    if (!m->token_embedding_mapped) free(m->token_embedding);
    free(m->position_embedding);
    if (m->layers)
        for (int i = 0; i < m->config.num_hidden_layers; i++) encoder_layer_free(&m->layers[i]);
    free(m->layers);
    norm_free(&m->final_layer_norm);
    packed_mapping_release(m->packed);
    weight_set_close(m->weights); // after the layers that borrow from it
    free(m);
}

lcm_status clip_text_load(const ops_backend *backend, const model_folder *folder,
                          const char *component, clip_text_model **out) {
    *out = NULL;
    json_config config;
    LCM_TRY(model_folder_load_config(folder, component, "config.json", &config));
    clip_text_model *m = calloc(1, sizeof *m);
    if (!m) {
        json_config_free(&config);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", component);
    }
    lcm_status st = clip_text_config_read(&config, &m->config);
    json_config_free(&config);
    if (st != LCM_OK) {
        free(m);
        return lcm_fail_context(st, "%s: ", folder->root);
    }
    m->layers = calloc((size_t)m->config.num_hidden_layers, sizeof *m->layers);
    if (!m->layers) {
        clip_text_free(m);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", component);
    }
    m->backend = *backend;
    m->backend.precision = LCM_PRECISION_FP32;
    st = model_folder_open_weights(folder, component, "model", &m->weights);
    // Loaded in full once in any case: every tensor is checked (shapes, values) when the model
    // opens, not at its first prompt.
    bool compressed = st == LCM_OK && stored_8bit(m->weights);
    if (st == LCM_OK) st = load_weights(&m->backend, m, m->weights, compressed);
    if (st == LCM_OK && compressed) free_weights_until_use(m);
    if (st == LCM_OK) m->packed = packed_cache_mapping(m->weights);
    // Nothing of the file needs to stay resident until the first prompt.
    if (st == LCM_OK) clip_text_release_pages(m);
    if (st != LCM_OK) {
        clip_text_free(m);
        return lcm_fail_context(st, "loading %s: ", component);
    }
    *out = m;
    return LCM_OK;
}

void clip_text_release_pages(const clip_text_model *m) {
    weight_set_release_pages(m->weights);
    packed_mapping_drop_pages(m->packed);
}

bool clip_text_loads_weights_on_use(const clip_text_model *m) { return m->on_use; }

const clip_text_config *clip_text_get_config(const clip_text_model *m) { return &m->config; }
int clip_text_hidden_size(const clip_text_model *m) { return m->config.hidden_size; }
int64_t clip_text_param_count(const clip_text_model *m) { return m->param_count; }

// ---- forward -----------------------------------------------------------------------------------

// ids [B, N] -> token_embedding[id] + position_embedding[position]: [B, N, C]. NULL with the
// error set on failure.
static tensor *text_embeddings(const clip_text_model *m, const int32_t *ids, int batch,
                               int n_tokens, int32_t *position_ids) {
    const clip_text_config *c = &m->config;
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < n_tokens; t++) position_ids[b * n_tokens + t] = t;
    float *loaded = NULL; // on_use: this pass's copy of the token embedding
    if (m->on_use &&
        weight_set_load_f32(m->weights, TOKEN_EMBEDDING, 2,
                            (int64_t[]){c->vocab_size, c->hidden_size}, &loaded) != LCM_OK)
        return NULL;
    tensor *x = embedding_lookup(loaded ? loaded : m->token_embedding, c->vocab_size,
                                 c->hidden_size, ids, batch, n_tokens);
    free(loaded);
    tensor *positions = embedding_lookup(m->position_embedding, c->max_position_embeddings,
                                         c->hidden_size, position_ids, batch, n_tokens);
    add_inplace(x, positions);
    tensor_free(positions);
    return x;
}

// Multi-head self-attention where each token sees itself and the tokens before it.
// x [B, N, C] -> [B, N, C]
static tensor *causal_self_attention(const clip_encoder_layer *l, int heads, const tensor *x) {
    tensor *q = linear_forward(&l->q_proj, x);
    tensor *k = linear_forward(&l->k_proj, x);
    tensor *v = linear_forward(&l->v_proj, x);
    tensor *a = attention(q, k, v, heads, true);
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
    tensor_replace(&a, linear_forward(&l->out_proj, a));
    return a;
}

// fc1 -> activation -> fc2: [B, N, C] -> [B, N, intermediate] -> [B, N, C]
static tensor *mlp(const clip_encoder_layer *l, clip_activation act, const tensor *x) {
    tensor *h = linear_forward(&l->fc1, x);
    if (act == CLIP_ACT_QUICK_GELU)
        quick_gelu_inplace(h);
    else
        gelu_inplace(h);
    tensor_replace(&h, linear_forward(&l->fc2, h));
    return h;
}

// Pre-LayerNorm residual layer; consumes x and returns the layer output [B, N, C].
static tensor *encoder_layer(const clip_encoder_layer *l, const clip_text_config *c, tensor *x) {
    tensor *h = layer_norm(&l->layer_norm1, x);
    tensor_replace(&h, causal_self_attention(l, c->num_attention_heads, h));
    add_inplace(x, h);
    tensor_replace(&h, layer_norm(&l->layer_norm2, x));
    tensor_replace(&h, mlp(l, c->hidden_act, h));
    add_inplace(x, h);
    tensor_free(h);
    return x;
}

// transformers' pooled-token rule (CLIPTextTransformer.forward), see clip_text.h.
static void pooled_positions(const clip_text_config *c, const int32_t *ids, int batch, int n_tokens,
                             int64_t *index) {
    for (int b = 0; b < batch; b++) {
        const int32_t *row = ids + (int64_t)b * n_tokens;
        int64_t best = 0;
        if (c->eos_token_id == 2) {
            for (int t = 1; t < n_tokens; t++)
                if (row[t] > row[best]) best = t;
        } else {
            for (int t = 0; t < n_tokens; t++)
                if (row[t] == c->eos_token_id) {
                    best = t;
                    break;
                }
        }
        index[b] = best;
    }
}

static lcm_status check_inputs(const clip_text_config *c, const int32_t *ids, int batch,
                               int n_tokens) {
    if (batch < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "text encoder: batch size %d, expected >= 1",
                        batch);
    if (n_tokens < 1 || n_tokens > c->max_position_embeddings)
        return lcm_fail(
            LCM_ERR_INVALID_ARGUMENT,
            "text encoder: %d tokens per prompt, expected 1..%d (max_position_embeddings)",
            n_tokens, c->max_position_embeddings);
    for (int64_t i = 0; i < (int64_t)batch * n_tokens; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "text encoder: token id %d (prompt %lld, position %lld) is outside the "
                            "vocabulary 0..%d",
                            (int)ids[i], (long long)(i / n_tokens), (long long)(i % n_tokens),
                            c->vocab_size - 1);
    return LCM_OK;
}

lcm_status clip_text_forward_probed(const clip_text_model *m, const int32_t *ids, int batch,
                                    int n_tokens, clip_text_probe probe, void *user,
                                    tensor **last_hidden_state, tensor **pooled) {
    *last_hidden_state = NULL;
    if (pooled) *pooled = NULL;
    const clip_text_config *c = &m->config;
    LCM_TRY(check_inputs(c, ids, batch, n_tokens));

    int64_t count = (int64_t)batch * n_tokens;
    int32_t *position_ids = malloc(sizeof *position_ids * (size_t)count);
    int64_t *pool_index = malloc(sizeof *pool_index * (size_t)batch);
    if (!position_ids || !pool_index) {
        free(position_ids);
        free(pool_index);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "text encoder: out of memory");
    }

    tensor *x = text_embeddings(m, ids, batch, n_tokens, position_ids); // [B, N, C]
    if (probe && x) probe(user, "text_model.embeddings", x);
    for (int i = 0; i < c->num_hidden_layers && x; i++) {
        clip_encoder_layer loaded = {0}; // on_use: this layer's weights for this pass only
        if (m->on_use && encoder_layer_load(&m->backend, &loaded, m->weights, i, c, true) != LCM_OK)
            tensor_replace(&x, NULL);
        else
            x = encoder_layer(m->on_use ? &loaded : &m->layers[i], c, x);
        encoder_layer_free(&loaded);
        if (probe && x) {
            char name[64];
            snprintf(name, sizeof name, "text_model.encoder.layers.%d", i);
            probe(user, name, x);
        }
    }
    tensor_replace(&x, layer_norm(&m->final_layer_norm, x));

    tensor *pool = NULL;
    if (pooled && x) {
        pooled_positions(c, ids, batch, n_tokens, pool_index);
        pool = select_token_rows(x, pool_index); // [B, C]
    }
    free(position_ids);
    free(pool_index);
    if (!x || (pooled && !pool)) {
        tensor_free(x);
        tensor_free(pool);
        return lcm_fail_context(LCM_ERR_INTERNAL, "text encoder: ");
    }
    *last_hidden_state = x;
    if (pooled) *pooled = pool;
    return LCM_OK;
}

lcm_status clip_text_forward(const clip_text_model *m, const int32_t *ids, int batch, int n_tokens,
                             tensor **last_hidden_state, tensor **pooled) {
    return clip_text_forward_probed(m, ids, batch, n_tokens, NULL, NULL, last_hidden_state, pooled);
}
