// LoRA adapters: parsing the three key formats, checking them, and fusing them into weights as
// the model loaders read them (see lora.h for the formats and the matching rule).
#include "adapt/lora.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/safetensors.h"
#include "ops/gemm.h"

// How many unmatched keys an error message lists before "...".
#define LORA_MAX_LISTED_KEYS 8

typedef enum lora_target { LORA_UNET, LORA_TEXT_ENCODER, LORA_TARGET_COUNT } lora_target;

static const char *const TARGET_NAMES[LORA_TARGET_COUNT] = {"unet", "text_encoder"};

// One adapted layer: its low-rank pair and alpha, as found in the file.
typedef struct lora_module {
    lora_target target;
    char *module; // "down_blocks.0.attentions.0.proj_in", or kohya "down_blocks_0_attentions_0_proj_in"
    bool kohya;   // module is in kohya's underscore form
    char *key;    // the file's key stem (everything before the role suffix), for messages
    const st_tensor *down, *up, *alpha; // borrowed from the adapter's file; alpha may be NULL
    int rank;
    float alpha_value;
    char *applied_to; // the first weight it was fused into; NULL while unmatched
} lora_module;

typedef struct lora_adapter {
    char *path;
    float scale;
    st_file *file; // open until lora_set_finish
    lora_module *modules;
    int module_count;
    char **unknown_keys; // tensors that are not LoRA down/up/alpha tensors
    int unknown_count;
    lora_stats stats;
} lora_adapter;

// What a weight_set patch needs: the set and the component it patches.
typedef struct lora_binding {
    lora_set *set;
    lora_target target;
} lora_binding;

struct lora_set {
    lora_adapter *adapters;
    int count;
    bool lenient;
    bool finished;
    lora_binding bindings[LORA_TARGET_COUNT];
    char *report;
};

// ---- key parsing -----------------------------------------------------------------------------

typedef enum lora_role { ROLE_DOWN, ROLE_UP, ROLE_ALPHA } lora_role;

// The tensor-name endings of each format, longest first where one ends another.
static const struct {
    const char *suffix;
    lora_role role;
    bool legacy; // diffusers' attention-processor format: the module needs renaming, see below
} ROLE_SUFFIXES[] = {
    {".lora_linear_layer.down.weight", ROLE_DOWN, false}, // diffusers, text encoder
    {".lora_linear_layer.up.weight", ROLE_UP, false},
    {".lora.down.weight", ROLE_DOWN, false}, // diffusers
    {".lora.up.weight", ROLE_UP, false},
    {".lora_down.weight", ROLE_DOWN, false}, // kohya
    {".lora_up.weight", ROLE_UP, false},
    {".lora_A.weight", ROLE_DOWN, false}, // PEFT
    {".lora_B.weight", ROLE_UP, false},
    {"_lora.down.weight", ROLE_DOWN, true}, // diffusers < 0.21: "...attn1.processor.to_q_lora.down.weight"
    {"_lora.up.weight", ROLE_UP, true},
    {".alpha", ROLE_ALPHA, false},
};

static const struct {
    const char *prefix;
    lora_target target;
    bool kohya;
} COMPONENT_PREFIXES[] = {
    {"lora_unet_", LORA_UNET, true},
    {"lora_te_", LORA_TEXT_ENCODER, true},
    {"unet.", LORA_UNET, false},
    {"text_encoder.", LORA_TEXT_ENCODER, false},
};

// The attention-processor format names the processor's projections; these are the layers they
// adapt (diffusers renames them the same way when it loads such a file).
static const struct {
    lora_target target;
    const char *ending, *layer;
} LEGACY_LAYERS[] = {
    {LORA_UNET, ".processor.to_q", ".to_q"},
    {LORA_UNET, ".processor.to_k", ".to_k"},
    {LORA_UNET, ".processor.to_v", ".to_v"},
    {LORA_UNET, ".processor.to_out", ".to_out.0"},
    {LORA_TEXT_ENCODER, ".to_q", ".q_proj"},
    {LORA_TEXT_ENCODER, ".to_k", ".k_proj"},
    {LORA_TEXT_ENCODER, ".to_v", ".v_proj"},
    {LORA_TEXT_ENCODER, ".to_out", ".out_proj"},
};

static bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *s, size_t len, const char *suffix) {
    size_t n = strlen(suffix);
    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

#define LORA_MAX_NAME 512

typedef struct parsed_key {
    lora_target target;
    bool kohya;
    lora_role role;
    char module[LORA_MAX_NAME]; // the layer's name in the model, or its kohya form
    size_t stem_len;            // key length without the role suffix
} parsed_key;

// Splits a tensor name into component, module and role; false when it is not a LoRA key.
static bool parse_key(const char *key, parsed_key *out) {
    size_t len = strlen(key);
    size_t suffix = 0;
    bool found = false, legacy = false;
    for (size_t i = 0; i < sizeof ROLE_SUFFIXES / sizeof ROLE_SUFFIXES[0] && !found; i++) {
        if (ends_with(key, len, ROLE_SUFFIXES[i].suffix)) {
            out->role = ROLE_SUFFIXES[i].role;
            legacy = ROLE_SUFFIXES[i].legacy;
            suffix = strlen(ROLE_SUFFIXES[i].suffix);
            found = true;
        }
    }
    if (!found || suffix >= len) return false;
    out->stem_len = len - suffix;

    const char *module = key;
    if (starts_with(module, "base_model.model.")) module += strlen("base_model.model.");
    out->target = starts_with(module, "text_model.") ? LORA_TEXT_ENCODER : LORA_UNET;
    out->kohya = false;
    for (size_t i = 0; i < sizeof COMPONENT_PREFIXES / sizeof COMPONENT_PREFIXES[0]; i++) {
        if (starts_with(module, COMPONENT_PREFIXES[i].prefix)) {
            out->target = COMPONENT_PREFIXES[i].target;
            out->kohya = COMPONENT_PREFIXES[i].kohya;
            module += strlen(COMPONENT_PREFIXES[i].prefix);
            break;
        }
    }
    if (module >= key + out->stem_len) return false;
    size_t module_len = (size_t)(key + out->stem_len - module);
    if (module_len >= sizeof out->module) return false;
    // A kohya module name has no dots; one with dots is some other format we do not know.
    if (out->kohya && memchr(module, '.', module_len)) return false;
    if (legacy && out->kohya) return false;
    memcpy(out->module, module, module_len);
    out->module[module_len] = 0;
    if (legacy) {
        size_t i = 0, n = sizeof LEGACY_LAYERS / sizeof LEGACY_LAYERS[0];
        while (i < n && (LEGACY_LAYERS[i].target != out->target ||
                         !ends_with(out->module, module_len, LEGACY_LAYERS[i].ending)))
            i++;
        if (i == n) return false;
        size_t keep = module_len - strlen(LEGACY_LAYERS[i].ending);
        if (keep + strlen(LEGACY_LAYERS[i].layer) >= sizeof out->module) return false;
        strcpy(out->module + keep, LEGACY_LAYERS[i].layer);
    }
    return true;
}

// ---- opening an adapter ----------------------------------------------------------------------

static void adapter_free(lora_adapter *a) {
    for (int i = 0; i < a->module_count; i++) {
        free(a->modules[i].module);
        free(a->modules[i].key);
        free(a->modules[i].applied_to);
    }
    free(a->modules);
    for (int i = 0; i < a->unknown_count; i++) free(a->unknown_keys[i]);
    free(a->unknown_keys);
    st_close(a->file);
    free(a->path);
    memset(a, 0, sizeof *a);
}

static lora_module *find_or_add_module(lora_adapter *a, const char *key, const parsed_key *k) {
    for (int i = 0; i < a->module_count; i++) {
        lora_module *m = &a->modules[i];
        if (m->target == k->target && m->kohya == k->kohya && !strcmp(m->module, k->module)) return m;
    }
    lora_module *m = &a->modules[a->module_count];
    *m = (lora_module){.target = k->target, .kohya = k->kohya};
    m->module = strdup(k->module);
    m->key = strndup(key, k->stem_len);
    if (!m->module || !m->key) {
        free(m->module);
        free(m->key);
        return NULL;
    }
    a->module_count++;
    return m;
}

static bool is_float_dtype(st_dtype d) {
    return d == ST_F32 || d == ST_F16 || d == ST_BF16 || d == ST_F64;
}

// Checks one module's tensors on their own (the model's shapes are checked when fusing).
static lcm_status check_module(const lora_adapter *a, lora_module *m) {
    char shape_a[96], shape_b[96];
    if (!m->down || !m->up)
        return lcm_fail(LCM_ERR_FORMAT, "%s: LoRA module '%s' has %s but no %s tensor", a->path,
                        m->key, m->down ? "a down tensor" : m->up ? "an up tensor" : "only an alpha",
                        !m->down && !m->up ? "down or up" : m->down ? "up" : "down");
    const st_tensor *pair[2] = {m->down, m->up};
    for (int i = 0; i < 2; i++) {
        const st_tensor *t = pair[i];
        if (!is_float_dtype(t->dtype))
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected a float type",
                            a->path, t->name, st_dtype_name(t->dtype));
        if (t->ndim != 2 && t->ndim != 4)
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: tensor '%s' has shape %s, expected 2 dimensions (linear) or 4 (conv)",
                            a->path, t->name,
                            st_format_shape(shape_a, sizeof shape_a, t->ndim, t->shape));
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] <= 0)
                return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' has an empty shape %s", a->path,
                                t->name, st_format_shape(shape_a, sizeof shape_a, t->ndim, t->shape));
    }
    if (m->up->ndim == 4 && (m->up->shape[2] != 1 || m->up->shape[3] != 1))
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: tensor '%s' has shape %s: only 1x1 up kernels are supported (LoCon "
                        "style [out, rank, 1, 1])",
                        a->path, m->up->name,
                        st_format_shape(shape_a, sizeof shape_a, m->up->ndim, m->up->shape));
    if (m->down->shape[0] != m->up->shape[1])
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: LoRA module '%s': rank mismatch: '%s' has shape %s (rank %lld) but "
                        "'%s' has shape %s (rank %lld)",
                        a->path, m->key, m->down->name,
                        st_format_shape(shape_a, sizeof shape_a, m->down->ndim, m->down->shape),
                        (long long)m->down->shape[0], m->up->name,
                        st_format_shape(shape_b, sizeof shape_b, m->up->ndim, m->up->shape),
                        (long long)m->up->shape[1]);
    if (m->down->shape[0] > 1 << 20)
        return lcm_fail(LCM_ERR_FORMAT, "%s: LoRA module '%s': rank %lld is implausible", a->path,
                        m->key, (long long)m->down->shape[0]);
    m->rank = (int)m->down->shape[0];
    if (m->alpha) {
        const st_tensor *t = m->alpha;
        // Any numeric dtype: diffusers reads alpha with .item().
        if (t->numel != 1 || t->ndim > 1 || t->dtype == ST_BOOL)
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: tensor '%s' has shape %s and dtype %s, expected a numeric scalar",
                            a->path, t->name, st_format_shape(shape_a, sizeof shape_a, t->ndim, t->shape),
                            st_dtype_name(t->dtype));
        LCM_TRY(st_read_f32(a->file, t, &m->alpha_value));
        if (!isfinite(m->alpha_value))
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' = %g, expected a finite alpha", a->path,
                            t->name, (double)m->alpha_value);
    }
    return LCM_OK;
}

static lcm_status adapter_open(const lcm_lora *spec, lora_adapter *a) {
    memset(a, 0, sizeof *a);
    if (!spec->path || !*spec->path)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "LoRA adapter with an empty path");
    if (!isfinite(spec->scale))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: LoRA scale %g, expected a finite number",
                        spec->path, (double)spec->scale);
    a->scale = spec->scale;
    if (!(a->path = strdup(spec->path))) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    LCM_TRY(st_open(spec->path, &a->file));
    size_t n = st_count(a->file);
    // At most one module per tensor; unknown keys likewise.
    a->modules = calloc(n ? n : 1, sizeof *a->modules);
    a->unknown_keys = calloc(n ? n : 1, sizeof *a->unknown_keys);
    if (!a->modules || !a->unknown_keys) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_at(a->file, i);
        parsed_key k;
        if (!parse_key(t->name, &k)) {
            if (!(a->unknown_keys[a->unknown_count] = strdup(t->name)))
                return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
            a->unknown_count++;
            continue;
        }
        lora_module *m = find_or_add_module(a, t->name, &k);
        if (!m) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
        const st_tensor **slot = k.role == ROLE_DOWN ? &m->down : k.role == ROLE_UP ? &m->up : &m->alpha;
        if (*slot)
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensors '%s' and '%s' are the same part of one LoRA module",
                            a->path, (*slot)->name, t->name);
        *slot = t;
    }
    for (int i = 0; i < a->module_count; i++) LCM_TRY(check_module(a, &a->modules[i]));
    if (a->module_count == 0)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: no LoRA tensors found (expected kohya '*.lora_down.weight', diffusers "
                        "'*.lora.down.weight' or PEFT '*.lora_A.weight' keys)%s%s",
                        a->path, a->unknown_count ? "; first key: " : "",
                        a->unknown_count ? a->unknown_keys[0] : "");
    return LCM_OK;
}

// Lists up to LORA_MAX_LISTED_KEYS keys of `a` that matched nothing into buf: the tensors that are
// no LoRA tensors, then (with_modules) the modules not fused into any weight.
static int list_unmatched(const lora_adapter *a, bool with_modules, char *buf, size_t size) {
    size_t used = 0;
    int count = 0;
    buf[0] = 0;
    int total = a->unknown_count + (with_modules ? a->module_count : 0);
    for (int i = 0; i < total; i++) {
        const char *key;
        if (i < a->unknown_count) key = a->unknown_keys[i];
        else if (!a->modules[i - a->unknown_count].applied_to) key = a->modules[i - a->unknown_count].key;
        else continue;
        if (count < LORA_MAX_LISTED_KEYS && used < size) {
            int w = snprintf(buf + used, size - used, "%s'%s'", count ? ", " : "", key);
            if (w > 0) used += (size_t)w;
        } else if (count == LORA_MAX_LISTED_KEYS && used < size) {
            int w = snprintf(buf + used, size - used, ", ...");
            if (w > 0) used += (size_t)w;
        }
        count++;
    }
    return count;
}

lcm_status lora_set_open(const lcm_lora *loras, int count, bool lenient, lora_set **out) {
    *out = NULL;
    if (count < 0 || (count > 0 && !loras))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lora_count = %d with %s adapter array", count,
                        loras ? "an" : "no");
    lora_set *set = calloc(1, sizeof *set);
    if (set) set->adapters = calloc(count ? (size_t)count : 1, sizeof *set->adapters);
    if (!set || !set->adapters) {
        lora_set_free(set);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    set->lenient = lenient;
    for (int t = 0; t < LORA_TARGET_COUNT; t++) set->bindings[t] = (lora_binding){set, (lora_target)t};
    for (int i = 0; i < count; i++) {
        lcm_status st = adapter_open(&loras[i], &set->adapters[i]);
        set->count++;
        if (st == LCM_OK && set->adapters[i].unknown_count) {
            // Keys that are no LoRA tensor at all can be reported before any model is loaded.
            lora_adapter *a = &set->adapters[i];
            char keys[1024];
            list_unmatched(a, false, keys, sizeof keys);
            if (!lenient) {
                st = lcm_fail(LCM_ERR_FORMAT,
                              "%s: %d tensor(s) are not LoRA down/up/alpha tensors of a known format: %s "
                              "(lora_lenient / --lora-lenient skips them)",
                              a->path, a->unknown_count, keys);
            } else {
                fprintf(stderr, "warning: %s: skipping %d tensor(s) that are not LoRA tensors: %s\n",
                        a->path, a->unknown_count, keys);
            }
        }
        if (st != LCM_OK) {
            lora_set_free(set);
            return st;
        }
    }
    *out = set;
    return LCM_OK;
}

void lora_set_free(lora_set *set) {
    if (!set) return;
    for (int i = 0; i < set->count; i++) adapter_free(&set->adapters[i]);
    free(set->adapters);
    free(set->report);
    free(set);
}

// ---- fusing ----------------------------------------------------------------------------------

// Whether a module of the adapter names the weight `name` (without ".weight", `name_len` chars).
static bool module_matches(const lora_module *m, const char *name, size_t name_len) {
    if (strlen(m->module) != name_len) return false;
    if (!m->kohya) return memcmp(m->module, name, name_len) == 0;
    for (size_t i = 0; i < name_len; i++)
        if (m->module[i] != (name[i] == '.' ? '_' : name[i])) return false;
    return true;
}

// W [out, fan_in] += scale * ((alpha / rank) * up [out, rank]) @ down [rank, fan_in].
static lcm_status fuse_module(const lora_adapter *a, const lora_module *m, const char *name, int ndim,
                              const int64_t *shape, float *weight) {
    char shape_w[96], shape_a[96], shape_b[96];
    if (ndim != 2 && ndim != 4)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: LoRA module '%s' matches '%s' of shape %s, which is not a linear or conv "
                        "weight",
                        a->path, m->key, name, st_format_shape(shape_w, sizeof shape_w, ndim, shape));
    int64_t out = shape[0], fan_in = 1;
    for (int d = 1; d < ndim; d++) fan_in *= shape[d];
    int64_t down_fan_in = m->down->numel / m->rank;
    // The down kernel must be the weight's kernel; a 1x1 conv and a linear layer are the same
    // matrix, so either form of the pair fits either layer.
    bool kernel_fits = true;
    if (ndim == 4 && m->down->ndim == 4)
        kernel_fits = m->down->shape[1] == shape[1] && m->down->shape[2] == shape[2] &&
                      m->down->shape[3] == shape[3];
    if (ndim == 2 && m->down->ndim == 4) kernel_fits = m->down->shape[2] == 1 && m->down->shape[3] == 1;
    if (m->up->shape[0] != out || down_fan_in != fan_in || !kernel_fits)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: LoRA module '%s' does not fit the model: '%s' has shape %s, but the "
                        "adapter's up is %s and down is %s",
                        a->path, m->key, name, st_format_shape(shape_w, sizeof shape_w, ndim, shape),
                        st_format_shape(shape_a, sizeof shape_a, m->up->ndim, m->up->shape),
                        st_format_shape(shape_b, sizeof shape_b, m->down->ndim, m->down->shape));
    if (a->scale == 0) return LCM_OK; // W + 0 * delta: nothing to compute

    float *up = malloc((size_t)m->up->numel * sizeof *up);
    float *down = malloc((size_t)m->down->numel * sizeof *down);
    lcm_status st = up && down ? LCM_OK : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == LCM_OK) st = st_read_f32(a->file, m->up, up);
    if (st == LCM_OK) st = st_read_f32(a->file, m->down, down);
    if (st == LCM_OK) {
        // diffusers' _fuse_lora: w_up = w_up * network_alpha / rank (two roundings, in that order),
        // then W + lora_scale * (w_up @ w_down).
        if (m->alpha)
            for (int64_t i = 0; i < m->up->numel; i++) up[i] = up[i] * m->alpha_value / (float)m->rank;
        gemm_f32(false, false, out, fan_in, m->rank, a->scale, up, m->rank, down, fan_in, 1.0f,
                 weight, fan_in);
    }
    free(up);
    free(down);
    return st;
}

// weight_patch_fn: fuses every adapter module that names this weight.
static lcm_status patch_weight(void *user, const char *name, int ndim, const int64_t *shape,
                               float *values) {
    const lora_binding *binding = user;
    lora_set *set = binding->set;
    if (set->finished)
        return lcm_fail(LCM_ERR_INTERNAL, "'%s' loaded after the LoRA adapters were released", name);
    size_t len = strlen(name);
    if (!ends_with(name, len, ".weight")) return LCM_OK;
    size_t module_len = len - strlen(".weight");
    for (int i = 0; i < set->count; i++) {
        lora_adapter *a = &set->adapters[i];
        for (int j = 0; j < a->module_count; j++) {
            lora_module *m = &a->modules[j];
            if (m->target != binding->target || !module_matches(m, name, module_len)) continue;
            if (m->applied_to && strcmp(m->applied_to, name))
                return lcm_fail(LCM_ERR_FORMAT,
                                "%s: LoRA module '%s' is ambiguous: it matches both '%s' and '%s' "
                                "of the %s",
                                a->path, m->key, m->applied_to, name, TARGET_NAMES[m->target]);
            LCM_TRY(fuse_module(a, m, name, ndim, shape, values));
            if (!m->applied_to && !(m->applied_to = strdup(name)))
                return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
        }
    }
    return LCM_OK;
}

lcm_status lora_set_attach(lora_set *set, const char *component, weight_set *weights) {
    if (set->finished)
        return lcm_fail(LCM_ERR_INTERNAL, "LoRA adapters attached to '%s' after they were released",
                        component);
    for (int t = 0; t < LORA_TARGET_COUNT; t++)
        if (!strcmp(component, TARGET_NAMES[t]))
            return weight_set_add_patch(weights, patch_weight, &set->bindings[t]);
    return LCM_OK;
}

// ---- after loading ---------------------------------------------------------------------------

static void count_applied(lora_adapter *a) {
    lora_stats *s = &a->stats;
    *s = (lora_stats){.modules = a->module_count, .unmatched_keys = a->unknown_count};
    for (int i = 0; i < a->module_count; i++) {
        const lora_module *m = &a->modules[i];
        if (!m->applied_to) {
            s->unmatched_keys += 2 + (m->alpha != NULL);
            continue;
        }
        s->applied_modules++;
        s->applied_tensors += 2 + (m->alpha != NULL);
        if (m->target == LORA_UNET) s->unet_modules++;
        else s->text_encoder_modules++;
    }
}

lcm_status lora_set_finish(lora_set *set) {
    if (set->finished) return LCM_OK;
    size_t report_size = 1;
    for (int i = 0; i < set->count; i++) {
        lora_adapter *a = &set->adapters[i];
        count_applied(a);
        int unmatched_modules = a->module_count - a->stats.applied_modules;
        if (unmatched_modules > 0) {
            char keys[1024];
            list_unmatched(a, true, keys, sizeof keys);
            if (!set->lenient)
                return lcm_fail(LCM_ERR_FORMAT,
                                "%s: %d of %d LoRA modules match no weight of the model: %s "
                                "(lora_lenient / --lora-lenient applies the rest)",
                                a->path, unmatched_modules, a->module_count, keys);
            fprintf(stderr, "warning: %s: %d of %d LoRA modules match no weight of the model and "
                            "are skipped: %s\n",
                    a->path, unmatched_modules, a->module_count, keys);
        }
        report_size += strlen(a->path) + 160;
    }
    set->report = malloc(report_size);
    if (!set->report) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    size_t used = 0;
    set->report[0] = 0;
    for (int i = 0; i < set->count; i++) {
        const lora_adapter *a = &set->adapters[i];
        const lora_stats *s = &a->stats;
        int w = snprintf(set->report + used, report_size - used,
                         "%s (scale %g): %d tensors applied to %d modules (unet %d, text_encoder %d)",
                         a->path, (double)a->scale, s->applied_tensors, s->applied_modules,
                         s->unet_modules, s->text_encoder_modules);
        if (w > 0) used += (size_t)w;
        if (used >= report_size) used = report_size - 1;
        if (s->unmatched_keys) {
            w = snprintf(set->report + used, report_size - used, "; %d unmatched keys skipped",
                         s->unmatched_keys);
            if (w > 0) used += (size_t)w;
            if (used >= report_size) used = report_size - 1;
        }
        w = snprintf(set->report + used, report_size - used, "%s", i + 1 < set->count ? "\n" : "");
        if (w > 0) used += (size_t)w;
        if (used >= report_size) used = report_size - 1;
    }
    // The updates now live in the weights; the adapter files are no longer needed.
    for (int i = 0; i < set->count; i++) {
        st_close(set->adapters[i].file);
        set->adapters[i].file = NULL;
    }
    set->finished = true;
    return LCM_OK;
}

int lora_set_count(const lora_set *set) { return set->count; }

void lora_set_stats(const lora_set *set, int index, lora_stats *out) {
    *out = set->adapters[index].stats;
}

const char *lora_set_report(const lora_set *set) { return set->report ? set->report : ""; }
