// The quantization.json that `lcm quantize` (tools/quantize_model.c) writes beside 8-bit weights,
// checked against this program's format and against the weights beside it.
#include "io/quantization_scheme.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "io/json_config.h"
#include "io/weights.h"

// A field of `object` (named `where` in messages, e.g. "weights.dtype") that must be a string
// among `allowed` (NULL-terminated; NULL list = any string).
static lcm_status scheme_string(const char *path, const cJSON *object, const char *where, const char *field,
                                const char *const *allowed, const char **out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, field);
    char expected[256] = "";
    for (const char *const *a = allowed; a && *a; a++)
        snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s\"%s\"",
                 a == allowed ? "" : " or ", *a);
    if (!allowed) snprintf(expected, sizeof expected, "a string");
    if (!item)
        return lcm_fail(LCM_ERR_FORMAT, "%s: missing field '%s%s' (expected %s)", path, where, field, expected);
    if (!cJSON_IsString(item))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s%s' is not a string (expected %s)", path, where, field,
                        expected);
    for (const char *const *a = allowed; a && *a; a++)
        if (!strcmp(item->valuestring, *a)) {
            *out = item->valuestring;
            return LCM_OK;
        }
    if (allowed)
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s%s' is \"%.64s\", expected %s", path, where, field,
                        item->valuestring, expected);
    *out = item->valuestring;
    return LCM_OK;
}

static lcm_status scheme_object(const char *path, const cJSON *root, const char *field, const cJSON **out) {
    *out = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!*out) return lcm_fail(LCM_ERR_FORMAT, "%s: missing field '%s' (expected an object)", path, field);
    if (!cJSON_IsObject(*out))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' is not an object", path, field);
    return LCM_OK;
}

static lcm_status scheme_bool(const char *path, const cJSON *root, const char *field, bool *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!item) return lcm_fail(LCM_ERR_FORMAT, "%s: missing field '%s' (expected true or false)", path, field);
    if (!cJSON_IsBool(item))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' is not a boolean (expected true or false)", path, field);
    *out = cJSON_IsTrue(item);
    return LCM_OK;
}

// The fields quantize_model writes (write_scheme); *weights_only and *fp32_layers (borrowed from
// root, NULL for weight-only files) say what the weights must agree with.
static lcm_status scheme_fields(const char *path, const cJSON *root, bool *weights_only, const cJSON **fp32_layers) {
    *fp32_layers = NULL;
    const char *text;
    LCM_TRY(scheme_string(path, root, "", "format", (const char *const[]){"lcm.c int8", NULL}, &text));
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!version) return lcm_fail(LCM_ERR_FORMAT, "%s: missing field 'version' (expected 1)", path);
    if (!cJSON_IsNumber(version))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field 'version' is not a number (expected 1)", path);
    if (version->valuedouble != 1)
        return lcm_fail(LCM_ERR_FORMAT, "%s: field 'version' is %.17g, expected 1 (a file of another version of "
                        "lcm quantize: quantize the model again)", path, version->valuedouble);
    LCM_TRY(scheme_string(path, root, "", "model", NULL, &text));
    LCM_TRY(scheme_bool(path, root, "weights_only", weights_only));
    const cJSON *weights;
    LCM_TRY(scheme_object(path, root, "weights", &weights));
    LCM_TRY(scheme_string(path, weights, "weights.", "dtype", (const char *const[]){"s8", NULL}, &text));
    LCM_TRY(scheme_string(path, weights, "weights.", "granularity", (const char *const[]){"per_output_channel", NULL},
                          &text));
    LCM_TRY(scheme_string(path, weights, "weights.", "scheme", (const char *const[]){"symmetric", NULL}, &text));
    if (*weights_only) return LCM_OK;
    const cJSON *acts;
    LCM_TRY(scheme_object(path, root, "activations", &acts));
    LCM_TRY(scheme_string(path, acts, "activations.", "dtype", (const char *const[]){"u8", NULL}, &text));
    LCM_TRY(scheme_string(path, acts, "activations.", "granularity", (const char *const[]){"per_tensor", NULL}, &text));
    LCM_TRY(scheme_string(path, acts, "activations.", "scheme", (const char *const[]){"asymmetric", "symmetric", NULL},
                          &text));
    LCM_TRY(scheme_string(path, acts, "activations.", "method", (const char *const[]){"minmax", "percentile", NULL},
                          &text));
    const cJSON *keep = cJSON_GetObjectItemCaseSensitive(root, "fp32_layers");
    if (!keep) return lcm_fail(LCM_ERR_FORMAT, "%s: missing field 'fp32_layers' (expected an array of layer names)", path);
    if (!cJSON_IsArray(keep))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field 'fp32_layers' is not an array (expected layer names)", path);
    int i = 0;
    for (const cJSON *k = keep->child; k; k = k->next, i++)
        if (!cJSON_IsString(k) || !*k->valuestring)
            return lcm_fail(LCM_ERR_FORMAT, "%s: fp32_layers[%d] is not a layer name (expected a non-empty string)",
                            path, i);
    *fp32_layers = keep;
    return LCM_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

// Whether `layer` is `name` or below it ("down_blocks.0" covers "down_blocks.0.resnets.0.conv1").
static bool layer_under(const char *layer, const char *name) {
    size_t n = strlen(name);
    return !strncmp(layer, name, n) && (layer[n] == 0 || layer[n] == '.');
}

// The weights a quantization.json at `path` describes (`file`, the folder's only weight file that
// quantize_model writes) agree with it. `described`: whether there is such a file at all.
static lcm_status scheme_matches_weights(const char *path, const char *file, bool described, bool weights_only,
                                         const cJSON *fp32_layers) {
    struct stat sb;
    if (stat(file, &sb) != 0) return LCM_OK; // weights under another name: not written by lcm quantize
    weight_set *ws = NULL;
    lcm_status st = weight_set_open_file(file, &ws);
    if (st != LCM_OK) {
        // the loader reports a damaged weight file better, naming the tensor
        error_clear();
        return LCM_OK;
    }
    const char *with_input = NULL;
    for (size_t i = 0; st == LCM_OK && i < weight_set_count(ws); i++) {
        const st_tensor *t = weight_set_at(ws, i);
        if (!with_input && ends_with(t->name, ".input_scale")) with_input = t->name;
        if (t->dtype != ST_I8 || !fp32_layers) continue;
        for (const cJSON *k = fp32_layers->child; k; k = k->next)
            if (layer_under(t->name, k->valuestring)) {
                st = lcm_fail(LCM_ERR_FORMAT, "%s: fp32_layers names '%s', but %s stores %s in 8 bits", path,
                              k->valuestring, file, t->name);
                break;
            }
    }
    if (st == LCM_OK && !described && with_input)
        st = lcm_fail(LCM_ERR_FORMAT, "%s: missing, but %s holds 8-bit activation parameters (%s): the folder "
                      "written by lcm quantize is incomplete", path, file, with_input);
    else if (st == LCM_OK && described && weights_only && with_input)
        st = lcm_fail(LCM_ERR_FORMAT, "%s: weights_only is true, but %s holds 8-bit activation parameters (%s)",
                      path, file, with_input);
    else if (st == LCM_OK && described && !weights_only && !with_input)
        st = lcm_fail(LCM_ERR_FORMAT, "%s: 'activations' describes 8-bit activations, but %s holds no "
                      "NAME.input_scale tensor", path, file);
    weight_set_close(ws);
    return st;
}

lcm_status quantization_scheme_check(const char *dir) {
    char path[4096], file[4096];
    if (snprintf(path, sizeof path, "%s/quantization.json", dir) >= (int)sizeof path ||
        snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", dir) >= (int)sizeof file)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
    struct stat sb;
    if (stat(path, &sb) != 0) return scheme_matches_weights(path, file, false, false, NULL);
    json_config c;
    LCM_TRY(json_config_load(path, NULL, &c));
    bool weights_only = false;
    const cJSON *fp32_layers = NULL;
    lcm_status st = scheme_fields(path, c.root, &weights_only, &fp32_layers);
    if (st == LCM_OK) st = scheme_matches_weights(path, file, true, weights_only, fp32_layers);
    json_config_free(&c);
    return st;
}

static int visible_folder(const struct dirent *e) {
    return e->d_name[0] != '.';
}

lcm_status quantization_scheme_check_model(const char *model_dir) {
    struct dirent **entries = NULL;
    int n = scandir(model_dir, &entries, visible_folder, alphasort);
    if (n < 0) return LCM_OK; // a single-file checkpoint, or no folder: nothing lcm quantize wrote
    lcm_status st = LCM_OK;
    for (int i = 0; i < n; i++) {
        char dir[4096];
        struct stat sb;
        if (st == LCM_OK && snprintf(dir, sizeof dir, "%s/%s", model_dir, entries[i]->d_name) >= (int)sizeof dir)
            st = lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: path too long", model_dir);
        else if (st == LCM_OK && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode))
            st = quantization_scheme_check(dir);
        free(entries[i]);
    }
    free(entries);
    return st;
}
