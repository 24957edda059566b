// JSON configuration files (config.json, model_index.json, scheduler_config.json, ...).
//
// Config files are untrusted input: every getter checks type and range and fails with a message
// that names the file, the field and what was expected, e.g.
//   "unet/config.json: block_out_channels[2] = 0, expected an integer in 1..65536".
// Getters named *_or return the default when the field is absent or JSON null (diffusers writes
// null for "use the default"); a present field of the wrong type is still an error.
#ifndef LCM_IO_JSON_CONFIG_H
#define LCM_IO_JSON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

typedef struct cJSON cJSON;

typedef struct json_config {
    cJSON *root;  // always a JSON object after a successful load
    char *label;  // how errors name the file ("unet/config.json" or a full path)
} json_config;

// Reads and parses `path` (at most 16 MiB). `label` (may be NULL = path) names it in errors.
// On success the caller owns *out and releases it with json_config_free.
lcm_status json_config_load(const char *path, const char *label, json_config *out);

// Parses bytes in memory (borrowed). Same ownership as json_config_load.
lcm_status json_config_parse(const char *text, size_t len, const char *label, json_config *out);

void json_config_free(json_config *config);

bool json_config_has(const json_config *c, const char *field);

lcm_status json_config_int(const json_config *c, const char *field, int64_t min, int64_t max,
                           int64_t *out);
lcm_status json_config_int_or(const json_config *c, const char *field, int64_t fallback,
                              int64_t min, int64_t max, int64_t *out);
lcm_status json_config_float(const json_config *c, const char *field, double min, double max,
                             double *out);
lcm_status json_config_float_or(const json_config *c, const char *field, double fallback,
                                double min, double max, double *out);
lcm_status json_config_bool_or(const json_config *c, const char *field, bool fallback, bool *out);

// *out is borrowed from the config (valid until json_config_free).
lcm_status json_config_string(const json_config *c, const char *field, const char **out);
lcm_status json_config_string_or(const json_config *c, const char *field, const char *fallback,
                                 const char **out);

// An array of 1..max_count integers in [min, max]; *count receives its length.
lcm_status json_config_int_array(const json_config *c, const char *field, int64_t min, int64_t max,
                                 int64_t *out, int max_count, int *count);

// An array of 1..max_count strings (borrowed from the config).
lcm_status json_config_string_array(const json_config *c, const char *field, const char **out,
                                    int max_count, int *count);

// `field` may be a single integer or an array of integers (diffusers' attention_head_dim): a single
// value is repeated `count` times; an array must have exactly `count` entries.
lcm_status json_config_int_or_array(const json_config *c, const char *field, int64_t min,
                                    int64_t max, int64_t *out, int count);

// Reads a whole (small) file into a NUL-terminated malloc'd buffer; caller frees. Files larger than
// max_bytes are an error (untrusted sizes never become unbounded allocations).
lcm_status read_text_file(const char *path, size_t max_bytes, char **out, size_t *len);

#endif
