// libFuzzer harness for JSON configs: parses the input and calls every getter on every top-level
// field name the input has (plus a few fixed ones), with narrow and full int64 ranges, so type,
// range and conversion checks all see hostile values.
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/error.h"
#include "guarded_input.h"
#include "io/json_config.h"

#define MAX_ENTRIES 8

static void exercise_field(const json_config *c, const char *field) {
    int64_t i64, ints[MAX_ENTRIES];
    double f;
    bool b;
    const char *s, *strings[MAX_ENTRIES];
    int count;
    (void)json_config_has(c, field);
    (void)json_config_int(c, field, INT64_MIN, INT64_MAX, &i64);
    (void)json_config_int(c, field, 1, 65536, &i64);
    (void)json_config_int_or(c, field, 7, -3, 3, &i64);
    (void)json_config_float(c, field, -1e300, 1e300, &f);
    (void)json_config_float_or(c, field, 0.5, 0.0, 1.0, &f);
    (void)json_config_bool_or(c, field, true, &b);
    (void)json_config_string(c, field, &s);
    (void)json_config_string_or(c, field, "fallback", &s);
    if (json_config_int_array(c, field, INT64_MIN, INT64_MAX, ints, MAX_ENTRIES, &count) == LCM_OK &&
        (count < 1 || count > MAX_ENTRIES))
        abort();
    if (json_config_string_array(c, field, strings, MAX_ENTRIES, &count) == LCM_OK) {
        if (count < 1 || count > MAX_ENTRIES) abort();
        for (int i = 0; i < count; i++)
            if (!strings[i]) abort();
    }
    for (int n = 1; n <= 4; n++) (void)json_config_int_or_array(c, field, 0, 4096, ints, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    guarded_input input;
    if (guarded_input_make(&input, data, size) != 0) return 0;
    json_config config;
    if (json_config_parse((const char *)input.bytes, size, "fuzz/config.json", &config) == LCM_OK) {
        static const char *fixed[] = {"in_channels", "block_out_channels", "attention_head_dim",
                                      "_class_name", ""};
        for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) exercise_field(&config, fixed[i]);
        const cJSON *item;
        cJSON_ArrayForEach(item, config.root) exercise_field(&config, item->string);
        json_config_free(&config);
    } else if (config.root != NULL || config.label != NULL || lcm_last_error()[0] == '\0') {
        abort(); // a failure must leave nothing to free and must say why
    }
    lcm_clear_error();
    guarded_input_free(&input);
    return 0;
}
