#include "io/weights.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/json_config.h"
#include "io/safetensors_write.h"
#include "io/torch_pickle.h"

// Real SD checkpoints are split in at most a handful of shards; this bound keeps a hostile index
// file from opening thousands of files.
#define WEIGHTS_MAX_SHARDS 256

struct weight_set {
    char *source;
    st_file **shards;
    size_t shard_count;
    struct { // weight_set_add_patch
        weight_patch_fn fn;
        void *user;
    } patches[WEIGHT_SET_MAX_PATCHES];
    int patch_count;
    weight_recorder *recorder; // non-NULL for a synthetic set
    char *component;
    weight_rename_fn rename;   // non-NULL for a single-file checkpoint in another naming scheme
    void *rename_context;      // owned
    bool cache_allowed;        // weight_set_allow_cache
    char *cache_note;          // owned, or NULL
    void *attachment;          // weight_set_attach
    void (*release_attachment)(void *object);
};

typedef struct recorded_tensor {
    char *component, *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} recorded_tensor;

struct weight_recorder {
    uint64_t seed;
    recorded_tensor *tensors;
    size_t count, capacity;
};

void weight_set_close(weight_set *ws) {
    if (!ws) return;
    if (ws->release_attachment) ws->release_attachment(ws->attachment);
    free(ws->cache_note);
    for (size_t i = 0; i < ws->shard_count; i++) st_close(ws->shards[i]);
    free(ws->shards);
    free(ws->source);
    free(ws->component);
    free(ws->rename_context);
    free(ws);
}

static lcm_status new_set(const char *source, size_t shards, weight_set **out) {
    weight_set *ws = calloc(1, sizeof *ws);
    if (ws) ws->source = strdup(source);
    if (ws) ws->shards = calloc(shards ? shards : 1, sizeof *ws->shards);
    if (!ws || !ws->source || !ws->shards) {
        weight_set_close(ws);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", source);
    }
    *out = ws;
    return LCM_OK;
}

lcm_status weight_set_open_file(const char *path, weight_set **out) {
    *out = NULL;
    weight_set *ws;
    LCM_TRY(new_set(path, 1, &ws));
    // PyTorch checkpoints (.pt/.pth/.ckpt/.bin) are read by the whitelist unpickler into the same
    // tensor table as a safetensors file.
    lcm_status st = torch_is_checkpoint_name(path) ? torch_open(path, &ws->shards[0])
                                                   : st_open(path, &ws->shards[0]);
    if (st != LCM_OK) {
        weight_set_close(ws);
        return st;
    }
    ws->shard_count = 1;
    *out = ws;
    return LCM_OK;
}

// A shard name from an index must be a plain file name inside the component folder: no path
// separators, no "..", so a hostile index cannot make us open files elsewhere.
static bool is_plain_file_name(const char *name) {
    return name[0] && !strchr(name, '/') && strcmp(name, ".") && strcmp(name, "..");
}

static lcm_status open_sharded(const char *dir, const char *index_path, weight_set **out) {
    json_config index;
    LCM_TRY(json_config_load(index_path, NULL, &index));
    lcm_status st = LCM_OK;
    weight_set *ws = NULL;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(index.root, "weight_map");
    if (!cJSON_IsObject(map)) {
        st = lcm_fail(LCM_ERR_FORMAT, "%s: missing object field 'weight_map'", index_path);
        goto done;
    }
    // Distinct shard names, in first-seen order.
    const char *names[WEIGHTS_MAX_SHARDS];
    size_t count = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, map) {
        if (!cJSON_IsString(entry) || !is_plain_file_name(entry->valuestring)) {
            st = lcm_fail(LCM_ERR_FORMAT,
                          "%s: weight_map[\"%s\"] must be a file name in the same folder", index_path,
                          entry->string);
            goto done;
        }
        size_t k = 0;
        while (k < count && strcmp(names[k], entry->valuestring)) k++;
        if (k < count) continue;
        if (count == WEIGHTS_MAX_SHARDS) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: more than %d shards", index_path, WEIGHTS_MAX_SHARDS);
            goto done;
        }
        names[count++] = entry->valuestring;
    }
    if ((st = new_set(index_path, count, &ws)) != LCM_OK) goto done;
    for (size_t k = 0; k < count; k++) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[k]) >= (int)sizeof path) {
            st = lcm_fail(LCM_ERR_IO, "%s: shard path too long", index_path);
            goto done;
        }
        if ((st = st_open(path, &ws->shards[k])) != LCM_OK) goto done;
        ws->shard_count++;
    }
    // Every tensor the index names must be in the shard it names.
    cJSON_ArrayForEach(entry, map) {
        size_t k = 0;
        while (strcmp(names[k], entry->valuestring)) k++;
        if (!st_find(ws->shards[k], entry->string)) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' is listed in shard '%s' but not found there",
                          index_path, entry->string, names[k]);
            goto done;
        }
    }
done:
    json_config_free(&index);
    if (st != LCM_OK) weight_set_close(ws);
    else *out = ws;
    return st;
}

lcm_status weight_set_open(const char *dir, const char *basename, const char *variant,
                           weight_set **out) {
    *out = NULL;
    // diffusers' order: the variant's single file, the variant's index, then (fallback) the plain
    // single file and the plain index.
    for (int with_variant = variant && *variant ? 1 : 0; with_variant >= 0; with_variant--) {
        char stem[PATH_MAX], path[PATH_MAX + 32];
        if (snprintf(stem, sizeof stem, "%s/%s%s%s", dir, basename, with_variant ? "." : "",
                     with_variant ? variant : "") >= (int)sizeof stem)
            return lcm_fail(LCM_ERR_IO, "%s: path too long", dir);
        snprintf(path, sizeof path, "%s.safetensors", stem);
        if (access(path, F_OK) == 0) return weight_set_open_file(path, out);
        snprintf(path, sizeof path, "%s.safetensors.index.json", stem);
        if (access(path, F_OK) == 0) return open_sharded(dir, path, out);
    }
    if (variant && *variant)
        return lcm_fail(LCM_ERR_IO,
                        "%s: no weights found: expected %s.%s.safetensors or %s.safetensors (or a "
                        "sharded .safetensors.index.json)",
                        dir, basename, variant, basename);
    return lcm_fail(LCM_ERR_IO,
                    "%s: no weights found: expected %s.safetensors (or %s.safetensors.index.json); "
                    ".bin/.ckpt pickles are not loaded",
                    dir, basename, basename);
}

lcm_status weight_set_open_renamed(const char *path, weight_rename_fn rename, void *context,
                                  weight_set **out) {
    lcm_status st = weight_set_open_file(path, out);
    if (st != LCM_OK) {
        free(context);
        return st;
    }
    (*out)->rename = rename;
    (*out)->rename_context = context;
    return LCM_OK;
}

#define WEIGHT_NAME_MAX 512

const st_tensor *weight_set_find(const weight_set *ws, const char *name, const st_file **file) {
    if (ws->rename) {
        char stored[WEIGHT_NAME_MAX];
        if (ws->rename(ws->rename_context, ws->shards[0], name, stored, sizeof stored) != LCM_OK)
            return NULL;
        if (file) *file = ws->shards[0];
        return st_find(ws->shards[0], stored);
    }
    for (size_t i = 0; i < ws->shard_count; i++) {
        const st_tensor *t = st_find(ws->shards[i], name);
        if (t) {
            if (file) *file = ws->shards[i];
            return t;
        }
    }
    return NULL;
}

static lcm_status synthesize(const weight_set *ws, const char *name, int ndim,
                             const int64_t *shape, float **out);

// Shapes equal once trailing 1s are dropped: the original layout stores the VAE's attention
// projections as 1x1 convolutions [C, C, 1, 1] where diffusers has linear weights [C, C].
static bool same_up_to_trailing_ones(int ndim_a, const int64_t *a, int ndim_b, const int64_t *b) {
    while (ndim_a > 1 && a[ndim_a - 1] == 1) ndim_a--;
    while (ndim_b > 1 && b[ndim_b - 1] == 1) ndim_b--;
    if (ndim_a != ndim_b) return false;
    for (int i = 0; i < ndim_a; i++)
        if (a[i] != b[i]) return false;
    return true;
}

static lcm_status load_renamed(const weight_set *ws, const char *name, int ndim,
                               const int64_t *shape, float **out) {
    *out = NULL;
    char stored[WEIGHT_NAME_MAX];
    LCM_TRY(ws->rename(ws->rename_context, ws->shards[0], name, stored, sizeof stored));
    const st_file *file = ws->shards[0];
    const st_tensor *t = st_find(file, stored);
    if (!t)
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' (diffusers name '%s') is missing",
                        ws->source, stored, name);
    if (ndim >= 0 && !same_up_to_trailing_ones(t->ndim, t->shape, ndim, shape)) {
        char got[128], want[128];
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' (diffusers name '%s') has shape %s, expected %s",
                        ws->source, stored, name, st_format_shape(got, sizeof got, t->ndim, t->shape),
                        st_format_shape(want, sizeof want, ndim, shape));
    }
    float *data = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *data);
    if (!data) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for '%s'", ws->source, stored);
    lcm_status st = st_read_f32(file, t, data);
    if (st != LCM_OK) {
        free(data);
        return st;
    }
    st_release_pages(file, t);
    *out = data;
    return LCM_OK;
}

// An 8-bit weight (lcm quantize): I8 values with an F32 `NAME_scale` [shape[0]] beside them, one
// scale per output channel: w = q * scale[o]. Checks the shape and the scales; *scales is a copy
// (the caller frees it).
static lcm_status check_i8(const weight_set *ws, const st_file *file, const st_tensor *t, int ndim,
                           const int64_t *shape, float **scales) {
    *scales = NULL;
    if (ndim >= 0) {
        bool same = t->ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
        if (!same)
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' has %d dims [%lld, ...], expected %d [%lld, ...]",
                            ws->source, t->name, t->ndim, (long long)(t->ndim ? t->shape[0] : 0), ndim,
                            (long long)(ndim ? shape[0] : 0));
    }
    char scale_name[512];
    if (snprintf(scale_name, sizeof scale_name, "%s_scale", t->name) >= (int)sizeof scale_name)
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor name too long: %s", ws->source, t->name);
    const st_tensor *s = st_find(file, scale_name);
    int64_t channels = t->ndim ? t->shape[0] : 1;
    if (!s || s->dtype != ST_F32 || s->numel != channels || channels < 1)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: tensor '%s' is I8 but '%s' (F32, %lld per-output-channel scales) is %s",
                        ws->source, t->name, scale_name, (long long)channels,
                        s ? "of the wrong type or size" : "missing");
    float *copy = malloc(sizeof(float) * (size_t)channels);
    if (!copy) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for '%s'", ws->source, scale_name);
    memcpy(copy, s->data, sizeof(float) * (size_t)channels); // the mapping need not align floats
    for (int64_t o = 0; o < channels; o++)
        if (!isfinite(copy[o]) || copy[o] < 0) {
            lcm_status st = lcm_fail(LCM_ERR_FORMAT, "%s: '%s'[%lld] = %g: expected a finite scale >= 0",
                                     ws->source, scale_name, (long long)o, copy[o]);
            free(copy);
            return st;
        }
    *scales = copy;
    return LCM_OK;
}

// Dequantized here so every loader reads an 8-bit weight as float32.
static lcm_status load_i8_dequantized(const weight_set *ws, const st_file *file, const st_tensor *t,
                                      int ndim, const int64_t *shape, float **out) {
    *out = NULL;
    float *scales;
    LCM_TRY(check_i8(ws, file, t, ndim, shape, &scales));
    float *w = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    if (!w) {
        free(scales);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for '%s'", ws->source, t->name);
    }
    int64_t channels = t->ndim ? t->shape[0] : 1, per_channel = t->numel / channels;
    const int8_t *q = t->data;
    for (int64_t o = 0; o < channels; o++)
        for (int64_t k = 0; k < per_channel; k++)
            w[o * per_channel + k] = (float)q[o * per_channel + k] * scales[o];
    free(scales);
    st_release_pages(file, t);
    *out = w;
    return LCM_OK;
}

lcm_status weight_set_map_i8(const weight_set *ws, const char *name, int ndim, const int64_t *shape,
                             const int8_t **values, float **scales) {
    *values = NULL;
    *scales = NULL;
    if (ws->recorder || ws->rename || ws->patch_count > 0) return LCM_OK;
    const st_file *file;
    const st_tensor *t = weight_set_find(ws, name, &file);
    if (!t || t->dtype != ST_I8) return LCM_OK;
    LCM_TRY(check_i8(ws, file, t, ndim, shape, scales));
    *values = t->data;
    return LCM_OK;
}

static lcm_status load_f32_raw(const weight_set *ws, const char *name, int ndim,
                               const int64_t *shape, float **out) {
    if (ws->recorder) return synthesize(ws, name, ndim, shape, out);
    if (ws->rename) return load_renamed(ws, name, ndim, shape, out);
    const st_file *file;
    if (!weight_set_find(ws, name, &file)) {
        *out = NULL;
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' is missing", ws->source, name);
    }
    const st_tensor *t = st_find(file, name);
    if (t->dtype == ST_I8) return load_i8_dequantized(ws, file, t, ndim, shape, out);
    LCM_TRY(st_load_f32(file, name, ndim, shape, out));
    st_release_pages(file, t);
    return LCM_OK;
}

lcm_status weight_set_add_patch(weight_set *ws, weight_patch_fn patch, void *user) {
    if (ws->patch_count == WEIGHT_SET_MAX_PATCHES)
        return lcm_fail(LCM_ERR_INTERNAL, "%s: more than %d weight patches", ws->source,
                        WEIGHT_SET_MAX_PATCHES);
    ws->patches[ws->patch_count].fn = patch;
    ws->patches[ws->patch_count].user = user;
    ws->patch_count++;
    return LCM_OK;
}

// The tensor as stored, then every attached patch (LoRA) on its values.
lcm_status weight_set_load_f32(const weight_set *ws, const char *name, int ndim,
                               const int64_t *shape, float **out) {
    LCM_TRY(load_f32_raw(ws, name, ndim, shape, out));
    if (ws->patch_count == 0) return LCM_OK;
    if (ndim < 0) { // any shape was accepted: the patches see the stored one
        const st_tensor *t = weight_set_find(ws, name, NULL);
        if (!t) {
            free(*out);
            *out = NULL;
            return lcm_fail(LCM_ERR_INTERNAL, "%s: '%s' loaded but not found", ws->source, name);
        }
        ndim = t->ndim;
        shape = t->shape;
    }
    for (int i = 0; i < ws->patch_count; i++) {
        lcm_status st = ws->patches[i].fn(ws->patches[i].user, name, ndim, shape, *out);
        if (st != LCM_OK) {
            free(*out);
            *out = NULL;
            return st;
        }
    }
    return LCM_OK;
}

const float *weight_set_map_f32(const weight_set *ws, const char *name, int ndim,
                                const int64_t *shape) {
    if (ws->recorder || ws->patch_count > 0 || ndim < 0) return NULL;
    const st_file *file;
    const st_tensor *t = weight_set_find(ws, name, &file);
    if (!t || t->dtype != ST_F32 || !st_mapped(file) || t->ndim != ndim ||
        (uintptr_t)t->data % _Alignof(float))
        return NULL;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return NULL;
    return t->data;
}

void weight_set_release_tensor(const weight_set *ws, const char *name) {
    const st_file *file;
    const st_tensor *t = weight_set_find(ws, name, &file);
    if (t && file && st_mapped(file)) st_release_pages(file, t);
}

void weight_set_release_pages(const weight_set *ws) {
    for (size_t i = 0; i < ws->shard_count; i++) st_release_mapping(ws->shards[i]);
}

size_t weight_set_count(const weight_set *ws) {
    size_t n = 0;
    for (size_t i = 0; i < ws->shard_count; i++) n += st_count(ws->shards[i]);
    return n;
}

const st_tensor *weight_set_at(const weight_set *ws, size_t index) {
    for (size_t i = 0; i < ws->shard_count; i++) {
        if (index < st_count(ws->shards[i])) return st_at(ws->shards[i], index);
        index -= st_count(ws->shards[i]);
    }
    return NULL;
}

const char *weight_set_source(const weight_set *ws) { return ws->source; }

lcm_status weight_set_allow_cache(weight_set *ws, const char *note) {
    free(ws->cache_note);
    ws->cache_note = note ? strdup(note) : NULL;
    if (note && !ws->cache_note) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    ws->cache_allowed = true;
    return LCM_OK;
}

bool weight_set_cache_identity(const weight_set *ws, char *out, size_t size) {
    if (!ws->cache_allowed || ws->recorder || ws->patch_count || ws->shard_count == 0) return false;
    size_t used = 0;
    for (size_t i = 0; i < ws->shard_count; i++) {
        const char *path = st_path(ws->shards[i]);
        char real[PATH_MAX];
        struct stat sb;
        if (!path || !realpath(path, real) || stat(real, &sb) != 0) return false;
        int n = snprintf(out + used, size - used, "%s|%lld|%lld.%09ld|%llu|%llu\n", real,
                         (long long)sb.st_size, (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec,
                         (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino);
        if (n < 0 || (size_t)n >= size - used) return false;
        used += (size_t)n;
    }
    int n = snprintf(out + used, size - used, "note %s\n", ws->cache_note ? ws->cache_note : "");
    return n >= 0 && (size_t)n < size - used;
}

void weight_set_attach(const weight_set *ws, void *object, void (*release)(void *object)) {
    weight_set *w = (weight_set *)ws;
    if (w->release_attachment) w->release_attachment(w->attachment);
    w->attachment = object;
    w->release_attachment = release;
}

void *weight_set_attachment(const weight_set *ws) { return ws->attachment; }

// ---- synthetic weights ------------------------------------------------------------------------

lcm_status weight_recorder_new(uint64_t seed, weight_recorder **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    (*out)->seed = seed;
    return LCM_OK;
}

void weight_recorder_free(weight_recorder *r) {
    if (!r) return;
    for (size_t i = 0; i < r->count; i++) {
        free(r->tensors[i].component);
        free(r->tensors[i].name);
    }
    free(r->tensors);
    free(r);
}

lcm_status weight_set_open_synthetic(weight_recorder *recorder, const char *component,
                                     weight_set **out) {
    *out = NULL;
    weight_set *ws;
    char label[256];
    snprintf(label, sizeof label, "synthetic %s weights", component);
    LCM_TRY(new_set(label, 0, &ws));
    ws->recorder = recorder;
    if (!(ws->component = strdup(component))) {
        weight_set_close(ws);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    *out = ws;
    return LCM_OK;
}

static uint64_t hash_string(uint64_t h, const char *s) {
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull; // FNV-1a
    return h;
}

// Deterministic values for one tensor, in the spirit of PyTorch's default init: matrices and
// kernels uniform in +-1/sqrt(fan_in), 1-D `weight`s (norm scales) 1, biases small.
static void synthetic_values(uint64_t seed, const char *component, const char *name, int ndim,
                             const int64_t *shape, float *out, int64_t numel) {
    uint64_t state = hash_string(hash_string(seed ^ 0xcbf29ce484222325ull, component), name) | 1;
    size_t len = strlen(name);
    bool is_scale = ndim == 1 && len >= 6 && !strcmp(name + len - 6, "weight");
    // numel > 0: a zero-size tensor (no values to make) must not divide by its zero rows.
    float bound = ndim >= 2 && numel > 0 ? 1.0f / sqrtf((float)(numel / shape[0])) : 0.02f;
    for (int64_t i = 0; i < numel; i++) {
        if (is_scale) {
            out[i] = 1.0f;
            continue;
        }
        state ^= state >> 12, state ^= state << 25, state ^= state >> 27; // xorshift64*
        double u = (double)((state * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
        out[i] = (float)(2.0 * u - 1.0) * bound;
    }
}

static lcm_status synthesize(const weight_set *ws, const char *name, int ndim,
                             const int64_t *shape, float **out) {
    *out = NULL;
    weight_recorder *r = ws->recorder;
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return lcm_fail(LCM_ERR_INTERNAL, "synthetic weights need a known shape for '%s'", name);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    for (size_t i = 0; i < r->count; i++)
        if (!strcmp(r->tensors[i].component, ws->component) && !strcmp(r->tensors[i].name, name))
            return lcm_fail(LCM_ERR_INTERNAL, "synthetic weights: '%s' requested twice", name);
    if (r->count == r->capacity) {
        size_t cap = r->capacity ? 2 * r->capacity : 256;
        recorded_tensor *grown = realloc(r->tensors, cap * sizeof *grown);
        if (!grown) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
        r->tensors = grown;
        r->capacity = cap;
    }
    float *data = malloc((size_t)(numel ? numel : 1) * sizeof *data);
    recorded_tensor *t = &r->tensors[r->count];
    *t = (recorded_tensor){.component = strdup(ws->component), .name = strdup(name), .ndim = ndim};
    if (!data || !t->component || !t->name) {
        free(data);
        free(t->component);
        free(t->name);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    r->count++;
    synthetic_values(r->seed, ws->component, name, ndim, shape, data, numel);
    *out = data;
    return LCM_OK;
}

size_t weight_recorder_count(const weight_recorder *r, const char *component) {
    size_t n = 0;
    for (size_t i = 0; i < r->count; i++) n += !strcmp(r->tensors[i].component, component);
    return n;
}

typedef struct write_job {
    const weight_recorder *recorder;
    const recorded_tensor **tensors;
} write_job;

static lcm_status fill_recorded(void *user, size_t index, float *out, int64_t numel) {
    const write_job *job = user;
    const recorded_tensor *t = job->tensors[index];
    synthetic_values(job->recorder->seed, t->component, t->name, t->ndim, t->shape, out, numel);
    return LCM_OK;
}

lcm_status weight_recorder_write(const weight_recorder *r, const char *component, const char *path,
                                 st_dtype dtype) {
    size_t n = weight_recorder_count(r, component);
    st_write_entry *entries = calloc(n ? n : 1, sizeof *entries);
    const recorded_tensor **tensors = calloc(n ? n : 1, sizeof *tensors);
    if (!entries || !tensors) {
        free(entries);
        free(tensors);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < r->count; i++) {
        const recorded_tensor *t = &r->tensors[i];
        if (strcmp(t->component, component)) continue;
        tensors[k] = t;
        entries[k] = (st_write_entry){.name = t->name, .dtype = dtype, .ndim = t->ndim};
        memcpy(entries[k].shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        k++;
    }
    write_job job = {.recorder = r, .tensors = tensors};
    lcm_status st = st_write(path, entries, n, fill_recorded, &job, "pt");
    free(entries);
    free(tensors);
    return st;
}
