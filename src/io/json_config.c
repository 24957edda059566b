#include "io/json_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "io/file.h"

#define JSON_CONFIG_MAX_BYTES (16u * 1024u * 1024u)

lcm_status read_text_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    *out = NULL;
    FILE *fp;
    long long file_size;
    LCM_TRY(io_fopen_regular(path, &fp, &file_size));
    if ((uint64_t)file_size > max_bytes) {
        fclose(fp);
        return lcm_fail(LCM_ERR_FORMAT, "%s: %lld bytes, larger than the %zu allowed for this file",
                        path, file_size, max_bytes);
    }
    size_t size = (size_t)file_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        fclose(fp);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, size, fp);
    int err = ferror(fp);
    fclose(fp);
    if (err || got != size) {
        free(buf);
        return lcm_fail(LCM_ERR_IO, "%s: read failed", path);
    }
    buf[size] = '\0';
    *out = buf;
    if (len) *len = size;
    return LCM_OK;
}

lcm_status json_config_parse(const char *text, size_t len, const char *label, json_config *out) {
    memset(out, 0, sizeof *out);
    out->label = strdup(label);
    if (!out->label) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    const char *end = NULL;
    out->root = cJSON_ParseWithLengthOpts(text, len, &end, false);
    if (!out->root) {
        const char *at = cJSON_GetErrorPtr();
        size_t offset = at && at >= text && at <= text + len ? (size_t)(at - text) : 0;
        json_config_free(out);
        return lcm_fail(LCM_ERR_FORMAT, "%s: not valid JSON (error near byte %zu)", label, offset);
    }
    // Like Python's json.loads, which diffusers uses: only whitespace may follow the value.
    for (const char *p = end; p && p < text + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            json_config_free(out);
            return lcm_fail(LCM_ERR_FORMAT, "%s: not valid JSON (extra data at byte %zu)", label,
                            (size_t)(p - text));
        }
    if (!cJSON_IsObject(out->root)) {
        json_config_free(out);
        return lcm_fail(LCM_ERR_FORMAT, "%s: expected a JSON object at the top level", label);
    }
    return LCM_OK;
}

lcm_status json_config_load(const char *path, const char *label, json_config *out) {
    memset(out, 0, sizeof *out);
    char *text;
    size_t len;
    LCM_TRY(read_text_file(path, JSON_CONFIG_MAX_BYTES, &text, &len));
    lcm_status st = json_config_parse(text, len, label ? label : path, out);
    free(text);
    return st;
}

void json_config_free(json_config *config) {
    if (!config) return;
    cJSON_Delete(config->root);
    free(config->label);
    config->root = NULL;
    config->label = NULL;
}

static const cJSON *field_of(const json_config *c, const char *field) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(c->root, field);
    return item && !cJSON_IsNull(item) ? item : NULL;
}

bool json_config_has(const json_config *c, const char *field) { return field_of(c, field) != NULL; }

static lcm_status missing(const json_config *c, const char *field, const char *expected) {
    return lcm_fail(LCM_ERR_FORMAT, "%s: missing field '%s' (expected %s)", c->label, field, expected);
}

// Checks one JSON value as an integer in [min, max]; `where` is "field" or "field[i]".
static lcm_status check_int(const json_config *c, const cJSON *item, const char *where, int64_t min,
                            int64_t max, int64_t *out) {
    // The range test is done on the int64 value: (double)INT64_MAX rounds up to 2^63, so comparing
    // doubles would let 2^63 through, and converting it to int64 is undefined behaviour.
    double v = cJSON_IsNumber(item) ? item->valuedouble : 0.0;
    bool in_int64 = v >= -9223372036854775808.0 && v < 9223372036854775808.0;
    if (!cJSON_IsNumber(item) || v != floor(v) || !in_int64 || (int64_t)v < min ||
        (int64_t)v > max) {
        char got[64];
        if (cJSON_IsNumber(item)) snprintf(got, sizeof got, "%.17g", item->valuedouble);
        else snprintf(got, sizeof got, "a %s", cJSON_IsString(item) ? "string" : "non-number");
        return lcm_fail(LCM_ERR_FORMAT, "%s: %s = %s, expected an integer in %lld..%lld", c->label,
                        where, got, (long long)min, (long long)max);
    }
    *out = (int64_t)v;
    return LCM_OK;
}

lcm_status json_config_int(const json_config *c, const char *field, int64_t min, int64_t max,
                           int64_t *out) {
    const cJSON *item = field_of(c, field);
    if (!item) return missing(c, field, "an integer");
    return check_int(c, item, field, min, max, out);
}

lcm_status json_config_int_or(const json_config *c, const char *field, int64_t fallback,
                              int64_t min, int64_t max, int64_t *out) {
    const cJSON *item = field_of(c, field);
    if (!item) {
        *out = fallback;
        return LCM_OK;
    }
    return check_int(c, item, field, min, max, out);
}

static lcm_status check_float(const json_config *c, const cJSON *item, const char *field, double min,
                              double max, double *out) {
    if (!cJSON_IsNumber(item) || !(item->valuedouble >= min && item->valuedouble <= max))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' must be a number in %g..%g", c->label, field,
                        min, max);
    *out = item->valuedouble;
    return LCM_OK;
}

lcm_status json_config_float(const json_config *c, const char *field, double min, double max,
                             double *out) {
    const cJSON *item = field_of(c, field);
    if (!item) return missing(c, field, "a number");
    return check_float(c, item, field, min, max, out);
}

lcm_status json_config_float_or(const json_config *c, const char *field, double fallback,
                                double min, double max, double *out) {
    const cJSON *item = field_of(c, field);
    if (!item) {
        *out = fallback;
        return LCM_OK;
    }
    return check_float(c, item, field, min, max, out);
}

lcm_status json_config_bool_or(const json_config *c, const char *field, bool fallback, bool *out) {
    const cJSON *item = field_of(c, field);
    if (!item) {
        *out = fallback;
        return LCM_OK;
    }
    if (!cJSON_IsBool(item))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' must be true or false", c->label, field);
    *out = cJSON_IsTrue(item);
    return LCM_OK;
}

lcm_status json_config_string(const json_config *c, const char *field, const char **out) {
    const cJSON *item = field_of(c, field);
    if (!item) return missing(c, field, "a string");
    if (!cJSON_IsString(item))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' must be a string", c->label, field);
    *out = item->valuestring;
    return LCM_OK;
}

lcm_status json_config_string_or(const json_config *c, const char *field, const char *fallback,
                                 const char **out) {
    if (!field_of(c, field)) {
        *out = fallback;
        return LCM_OK;
    }
    return json_config_string(c, field, out);
}

static lcm_status array_of(const json_config *c, const char *field, int max_count,
                           const cJSON **out, int *count) {
    const cJSON *item = field_of(c, field);
    if (!item) return missing(c, field, "an array");
    if (!cJSON_IsArray(item))
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' must be an array", c->label, field);
    int n = cJSON_GetArraySize(item);
    if (n < 1 || n > max_count)
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' has %d entries, expected 1..%d", c->label,
                        field, n, max_count);
    *out = item;
    *count = n;
    return LCM_OK;
}

lcm_status json_config_int_array(const json_config *c, const char *field, int64_t min, int64_t max,
                                 int64_t *out, int max_count, int *count) {
    const cJSON *array;
    LCM_TRY(array_of(c, field, max_count, &array, count));
    for (int i = 0; i < *count; i++) {
        char where[128];
        snprintf(where, sizeof where, "%s[%d]", field, i);
        LCM_TRY(check_int(c, cJSON_GetArrayItem(array, i), where, min, max, &out[i]));
    }
    return LCM_OK;
}

lcm_status json_config_string_array(const json_config *c, const char *field, const char **out,
                                    int max_count, int *count) {
    const cJSON *array;
    LCM_TRY(array_of(c, field, max_count, &array, count));
    for (int i = 0; i < *count; i++) {
        const cJSON *item = cJSON_GetArrayItem(array, i);
        if (!cJSON_IsString(item))
            return lcm_fail(LCM_ERR_FORMAT, "%s: %s[%d] must be a string", c->label, field, i);
        out[i] = item->valuestring;
    }
    return LCM_OK;
}

lcm_status json_config_int_or_array(const json_config *c, const char *field, int64_t min,
                                    int64_t max, int64_t *out, int count) {
    const cJSON *item = field_of(c, field);
    if (!item) return missing(c, field, "an integer or an array of integers");
    if (cJSON_IsNumber(item)) {
        int64_t v;
        LCM_TRY(check_int(c, item, field, min, max, &v));
        for (int i = 0; i < count; i++) out[i] = v;
        return LCM_OK;
    }
    int n;
    LCM_TRY(json_config_int_array(c, field, min, max, out, count, &n));
    if (n != count)
        return lcm_fail(LCM_ERR_FORMAT, "%s: field '%s' has %d entries, expected %d (one per block)",
                        c->label, field, n, count);
    return LCM_OK;
}
