// Loading and releasing the weights of the basic layers, with shape checks against the config.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/backend.h"
#include "ops/kernel_family.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"
#include "ops/packed_cache.h"

// ---- packing -----------------------------------------------------------------------------------

lcm_status linear_pack_kernel(linear *l, const ops_backend *b, linear_kernel kernel) {
    if (kernel == LINEAR_KERNEL_AUTO) {
        if (l->impl.family || !l->weight)
            return lcm_fail(LCM_ERR_INTERNAL, "linear_pack: nothing to pack");
        return backend_pack_linear(l, b, 0);
    }
    return linear_pack_named(l, b, kernel);
}

lcm_status linear_pack_with(linear *l, const ops_backend *b, bool force_primitive) {
    return linear_pack_kernel(l, b, force_primitive ? LINEAR_KERNEL_ONEDNN : LINEAR_KERNEL_AUTO);
}

lcm_status conv2d_pack_kernel(conv2d *c, const ops_backend *b, conv_kernel kernel) {
    return kernel == CONV_KERNEL_AUTO ? backend_pack_conv(c, b) : conv2d_pack_named(c, b, kernel);
}

lcm_status conv2d_prepare_upsampled(conv2d *c) {
    const kernel_family *family = c->impl.family;
    return family && family->conv_prepare_upsampled ? family->conv_prepare_upsampled(c) : LCM_OK;
}

lcm_status conv2d_pack_with(conv2d *c, const ops_backend *b, bool force_primitive) {
    return conv2d_pack_kernel(c, b, force_primitive ? CONV_KERNEL_ONEDNN : CONV_KERNEL_AUTO);
}

lcm_status linear_pack(linear *l, const ops_backend *b) {
    return linear_pack_with(l, b, false);
}

lcm_status conv2d_pack(conv2d *c, const ops_backend *b) {
    return conv2d_pack_with(c, b, false);
}

bool linear_present(const linear *l) {
    return l->weight || l->impl.family;
}
bool conv2d_present(const conv2d *c) {
    return c->weight || c->impl.family;
}

// ---- the packed-weight cache -------------------------------------------------------------------

// The cache of the layers loaded from `ws` with `b` (ops/packed_cache.h), or NULL where layers are
// not cached: reference kernels (they compute on the plain weight) and 8-bit layers.
static packed_cache *layer_cache(const ops_backend *b, const weight_set *ws, const layer_quant *q) {
    if (b->kernels == KERNELS_REFERENCE || (q && q->quantize_input)) return NULL;
    return packed_cache_for(ws, b);
}

// Fills the packed form of a convolution from the cache: the entry of the kernel family the
// backend gives this shape now (its table, else its rule), never another family's, which an
// earlier run with another table may have left: the layer would compute with another kernel than
// a fresh load, so the same weights would give other bits depending on the cache's history (a
// single-file checkpoint and its folder gave images one byte apart). False on a miss (or an entry
// that does not fit, which is then packed again and replaced).
static bool conv_from_cache(conv2d *c, const ops_backend *b, packed_cache *cache, const char *prefix) {
    int count;
    const kernel_family *const *families = backend_kernel_families(&count);
    const int32_t shape[5] = {c->in, c->out, c->kernel, c->stride, c->padding};
    const kernel_family *chosen = cache ? backend_conv_family(backend_conv_kernel(b, c->in, c->out, c->kernel,
                                                                                  c->stride, c->padding))
                                        : NULL;
    for (int f = 0; cache && f < count; f++) {
        if (!families[f]->conv_import || families[f] != chosen) continue; // not cached, or not chosen
        packed_entry e;
        packed_mapping *mapping =
            packed_cache_find(cache, prefix, families[f]->conv_cache, shape, &e);
        if (!mapping) continue;
        void *state = NULL;
        if (families[f]->conv_import(c, &e, &state) == LCM_OK) {
            c->impl = (layer_kernel){families[f], state};
            c->packed_source = mapping;
            return true;
        }
        if (getenv("LCM_VERBOSE")) fprintf(stderr, "lcm: cached %s not used: %s\n", prefix, error_last_message());
        packed_mapping_release(mapping);
    }
    return false;
}

static void conv_to_cache(const conv2d *c, packed_cache *cache, const char *prefix) {
    if (!cache || !c->impl.family || !c->impl.family->conv_export) return;
    packed_entry e;
    c->impl.family->conv_export(c, &e);
    packed_cache_add(cache, prefix, &e);
}

// As conv_from_cache, for a linear layer of `rows` (linear_load_rows).
static bool linear_from_cache(linear *l, const ops_backend *b, packed_cache *cache, const char *prefix,
                              int64_t rows) {
    int count;
    const kernel_family *const *families = backend_kernel_families(&count);
    const int32_t shape[5] = {l->in, l->out};
    const kernel_family *chosen = cache ? backend_linear_family(backend_linear_kernel(b, l->in, l->out, rows)) : NULL;
    for (int f = 0; cache && f < count; f++) {
        if (!families[f]->linear_import || families[f] != chosen) continue; // not cached, or not chosen
        packed_entry e;
        packed_mapping *mapping =
            packed_cache_find(cache, prefix, families[f]->linear_cache, shape, &e);
        if (!mapping) continue;
        void *state = NULL;
        if (families[f]->linear_import(l, &e, &state) == LCM_OK) {
            l->impl = (layer_kernel){families[f], state};
            l->packed_source = mapping;
            return true;
        }
        if (getenv("LCM_VERBOSE")) fprintf(stderr, "lcm: cached %s not used: %s\n", prefix, error_last_message());
        packed_mapping_release(mapping);
    }
    return false;
}

static void linear_to_cache(const linear *l, packed_cache *cache, const char *prefix) {
    if (!cache || !l->impl.family || !l->impl.family->linear_export) return;
    packed_entry e;
    l->impl.family->linear_export(l, &e);
    packed_cache_add(cache, prefix, &e);
}

// ---- loading ---------------------------------------------------------------------------------

static lcm_status load_tensor(const weight_set *ws, const char *prefix, const char *suffix,
                              int ndim, const int64_t *shape, float **out) {
    char name[512];
    if (snprintf(name, sizeof name, "%s.%s", prefix, suffix) >= (int)sizeof name)
        return lcm_fail(LCM_ERR_INTERNAL, "tensor name too long: %s", prefix);
    return weight_set_load_f32(ws, name, ndim, shape, out);
}

// Where a layer's weight is repacked for a fast kernel anyway, the packing reads it in place from
// the file's mapping (an F32 tensor without LoRA patches, weight_set_map_f32) instead of from a
// copy, and its pages are released right after: a model is then copied once at load (into its
// packed form), not twice. NULL where the weight must be copied first: reference kernels (they
// compute on the plain weight), 8-bit layers (quantized from the copy), another dtype, a patch.
static const float *weight_to_pack_in_place(const ops_backend *b, const weight_set *ws,
                                            const char *prefix, const layer_quant *q, int ndim,
                                            const int64_t *shape, char *name, size_t size) {
    if (b->kernels == KERNELS_REFERENCE || (q && q->quantize_input)) return NULL;
    if (snprintf(name, size, "%s.weight", prefix) >= (int)size) return NULL;
    return weight_set_map_f32(ws, name, ndim, shape);
}

// An 8-bit layer (layer_quant_runs_int8) whose weight the file stores as I8 is packed straight from
// the file's values and scales: no float copy, no quantizing again, and the file's pages dropped
// once packed. *done false (and nothing changed) otherwise: the caller loads a float copy.
static lcm_status pack_int8_as_stored(layer_quant *q, const ops_backend *b, const weight_set *ws,
                                      const char *prefix, int ndim, const int64_t *shape, int kernel,
                                      int stride, int padding, layer_kernel *impl, bool *done) {
    *done = false;
    if (!layer_quant_runs_int8(q, b)) return LCM_OK;
    char name[512];
    if (snprintf(name, sizeof name, "%s.weight", prefix) >= (int)sizeof name)
        return lcm_fail(LCM_ERR_INTERNAL, "tensor name too long: %s", prefix);
    const int8_t *values;
    float *scales;
    LCM_TRY(weight_set_map_i8(ws, name, ndim, shape, &values, &scales));
    if (!values) return LCM_OK;
    lcm_status st = layer_quant_pack_s8(q, b, values, scales, (int)shape[1], (int)shape[0], kernel,
                                        stride, padding, impl);
    free(scales);
    weight_set_release_tensor(ws, name);
    *done = st == LCM_OK;
    return st;
}

// `cached`: the layer may come from, and goes into, the packed-weight cache.
static lcm_status linear_load_packed(linear *l, const ops_backend *b, const weight_set *ws,
                                     const char *prefix, int in, int out, bool has_bias, bool cached,
                                     int64_t rows) {
    *l = (linear){.in = in, .out = out};
    char name[512];
    const int64_t shape[2] = {out, in};
    LCM_TRY(layer_quant_load(ws, prefix, &l->quant));
    packed_cache *cache = cached ? layer_cache(b, ws, l->quant) : NULL;
    if (cache) {
        if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &l->bias));
        if (linear_from_cache(l, b, cache, prefix, rows)) return LCM_OK;
        free(l->bias);
        l->bias = NULL;
    }
    const float *mapped = weight_to_pack_in_place(b, ws, prefix, l->quant, 2, shape, name, sizeof name);
    if (mapped) {
        if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &l->bias));
        l->weight = (float *)mapped;
        l->weight_mapped = true;
        lcm_status st = backend_pack_linear(l, b, rows);
        if (st == LCM_OK && !l->weight) linear_to_cache(l, cache, prefix);
        if (st == LCM_OK && l->weight) { // sgemm computes on the plain weight: keep a copy
            size_t bytes = sizeof(float) * (size_t)in * (size_t)out;
            float *copy = malloc(bytes);
            if (!copy) st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory loading %s", name);
            else memcpy(copy, mapped, bytes);
            l->weight = copy;
            l->weight_mapped = false;
            if (copy) linear_to_cache(l, cache, prefix);
        }
        weight_set_release_tensor(ws, name);
        return st;
    }
    bool as_stored;
    LCM_TRY(pack_int8_as_stored(l->quant, b, ws, prefix, 2, shape, 0, 1, 0, &l->impl, &as_stored));
    if (!as_stored) LCM_TRY(load_tensor(ws, prefix, "weight", 2, shape, &l->weight));
    if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &l->bias));
    if (as_stored) return LCM_OK;
    LCM_TRY(layer_quant_pack(l->quant, b, &l->weight, in, out, 0, 1, 0, &l->impl));
    if (b->kernels == KERNELS_FAST && l->weight) {
        LCM_TRY(backend_pack_linear(l, b, rows));
        linear_to_cache(l, cache, prefix);
    }
    return LCM_OK;
}

lcm_status linear_load(linear *l, const ops_backend *b, const weight_set *ws, const char *prefix,
                       int in, int out, bool has_bias) {
    return linear_load_packed(l, b, ws, prefix, in, out, has_bias, true, 0);
}

lcm_status linear_load_rows(linear *l, const ops_backend *b, const weight_set *ws,
                            const char *prefix, int in, int out, bool has_bias, int64_t rows) {
    return linear_load_packed(l, b, ws, prefix, in, out, has_bias, true, rows);
}

lcm_status linear_load_rows_uncached(linear *l, const ops_backend *b, const weight_set *ws,
                                     const char *prefix, int in, int out, bool has_bias, int64_t rows) {
    return linear_load_packed(l, b, ws, prefix, in, out, has_bias, false, rows);
}

lcm_status linear_load_from_conv1x1(linear *l, const ops_backend *b, const weight_set *ws,
                                    const char *prefix, int in, int out, int64_t rows) {
    *l = (linear){.in = in, .out = out};
    LCM_TRY(layer_quant_load(ws, prefix, &l->quant));
    LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &l->bias));
    packed_cache *cache = layer_cache(b, ws, l->quant);
    if (linear_from_cache(l, b, cache, prefix, rows)) return LCM_OK;
    const int64_t shape[4] = {out, in, 1, 1};
    bool as_stored;
    LCM_TRY(pack_int8_as_stored(l->quant, b, ws, prefix, 4, shape, 0, 1, 0, &l->impl, &as_stored));
    if (as_stored) return LCM_OK;
    LCM_TRY(load_tensor(ws, prefix, "weight", 4, shape, &l->weight));
    LCM_TRY(layer_quant_pack(l->quant, b, &l->weight, in, out, 0, 1, 0, &l->impl));
    if (b->kernels == KERNELS_FAST && l->weight) {
        LCM_TRY(backend_pack_linear(l, b, rows));
        linear_to_cache(l, cache, prefix);
    }
    return LCM_OK;
}

lcm_status conv2d_load(conv2d *c, const ops_backend *b, const weight_set *ws, const char *prefix,
                       int in, int out, int kernel, int stride, int padding, bool has_bias) {
    *c = (conv2d){.in = in, .out = out, .kernel = kernel, .stride = stride, .padding = padding};
    char name[512];
    const int64_t shape[4] = {out, in, kernel, kernel};
    LCM_TRY(layer_quant_load(ws, prefix, &c->quant));
    packed_cache *cache = layer_cache(b, ws, c->quant);
    if (cache) {
        if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &c->bias));
        if (conv_from_cache(c, b, cache, prefix)) return LCM_OK;
        free(c->bias);
        c->bias = NULL;
    }
    const float *mapped = weight_to_pack_in_place(b, ws, prefix, c->quant, 4, shape, name,
                                                  sizeof name);
    if (mapped) { // every conv kernel packs a copy: the plain weight is never kept
        if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &c->bias));
        c->weight = (float *)mapped;
        c->weight_mapped = true;
        lcm_status st = backend_pack_conv(c, b);
        if (st == LCM_OK) conv_to_cache(c, cache, prefix);
        weight_set_release_tensor(ws, name);
        return st;
    }
    bool as_stored;
    LCM_TRY(pack_int8_as_stored(c->quant, b, ws, prefix, 4, shape, kernel, stride, padding, &c->impl,
                                &as_stored));
    if (!as_stored) LCM_TRY(load_tensor(ws, prefix, "weight", 4, shape, &c->weight));
    if (has_bias) LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){out}, &c->bias));
    if (as_stored) return LCM_OK;
    LCM_TRY(layer_quant_pack(c->quant, b, &c->weight, in, out, kernel, stride, padding, &c->impl));
    if (b->kernels == KERNELS_FAST && c->weight) {
        LCM_TRY(backend_pack_conv(c, b));
        conv_to_cache(c, cache, prefix);
    }
    return LCM_OK;
}

lcm_status norm_load(norm *n, const weight_set *ws, const char *prefix, int channels, int groups,
                     float eps) {
    *n = (norm){.channels = channels, .groups = groups, .eps = eps};
    if (groups < 1 || channels % groups)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: %d channels do not split into %d groups", prefix,
                        channels, groups);
    LCM_TRY(load_tensor(ws, prefix, "weight", 1, (int64_t[]){channels}, &n->weight));
    LCM_TRY(load_tensor(ws, prefix, "bias", 1, (int64_t[]){channels}, &n->bias));
    return LCM_OK;
}

void norm_free(norm *n) {
    free(n->weight);
    free(n->bias);
    n->weight = n->bias = NULL;
}

int64_t linear_params(const linear *l) {
    return (int64_t)l->in * l->out + (l->bias ? l->out : 0);
}

int64_t conv2d_params(const conv2d *c) {
    return (int64_t)c->in * c->out * c->kernel * c->kernel + (c->bias ? c->out : 0);
}
