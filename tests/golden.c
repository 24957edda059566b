#include "golden.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json_config.h"
#include "io/model_folder.h"
#include "models/controlnet.h"
#include "testutil.h"

cJSON *golden_info(const st_file *file) {
    const char *text = st_metadata(file, "info");
    cJSON *info = text ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(info)) {
        fprintf(stderr, "FATAL: %s: no parseable __metadata__.info\n", st_path(file));
        exit(2);
    }
    return info;
}

double golden_number(const cJSON *info, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(info, field);
    if (!cJSON_IsNumber(v)) {
        fprintf(stderr, "FATAL: golden info has no number '%s'\n", field);
        exit(2);
    }
    return v->valuedouble;
}

const char *golden_string(const cJSON *info, const char *field) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(info, field);
    if (!cJSON_IsString(v)) {
        fprintf(stderr, "FATAL: golden info has no string '%s'\n", field);
        exit(2);
    }
    return v->valuestring;
}

float *golden_f32(const st_file *file, const char *name, int64_t *numel) {
    const st_tensor *t = st_find(file, name);
    if (!t) return NULL;
    float *data = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *data);
    if (!data || st_read_f32(file, t, data) != LCM_OK) {
        fprintf(stderr, "FATAL: %s: cannot read '%s'\n", st_path(file), name);
        exit(2);
    }
    if (numel) *numel = t->numel;
    return data;
}

bool golden_compare(const st_file *file, const char *name, const tensor *got, double abs_tol,
                    double rel_to_max, bool required) {
    int64_t n = 0;
    float *want = golden_f32(file, name, &n);
    if (!want) {
        if (required) CHECK(false, "%s: golden tensor '%s' missing", st_path(file), name);
        return !required;
    }
    char what[512];
    snprintf(what, sizeof what, "%s: %s", st_path(file), name);
    bool ok;
    if (!got || tensor_numel(got) != n) {
        CHECK(false, "%s: computed tensor has %lld values, golden %lld", what,
              got ? (long long)tensor_numel(got) : -1LL, (long long)n);
        ok = false;
    } else {
        tensor *plain = tensor_to_nchw(got); // the fast kernels may return channels-last
        ok = plain && test_close(what, plain->data, want, (size_t)n,
                                 abs_tol + rel_to_max * test_max_abs(want, (size_t)n), 0.0);
        tensor_free(plain);
    }
    free(want);
    return ok;
}

void golden_request(const cJSON *info, lcm_request *r) {
    lcm_request_init(r);
    r->prompt = golden_string(info, "prompt");
    r->seed = (uint64_t)golden_number(info, "seed");
    r->steps = (int)golden_number(info, "steps");
    r->guidance_scale = (float)golden_number(info, "guidance");
    r->width = (int)golden_number(info, "w");
    r->height = (int)golden_number(info, "h");
}

void golden_taps_record(void *user, const char *name, const tensor *value) {
    golden_taps *t = user;
    if (t->count == GOLDEN_MAX_TAPS) return;
    t->names[t->count] = strdup(name);
    t->values[t->count] = tensor_copy(value);
    t->count++;
}

const tensor *golden_taps_find(const golden_taps *t, const char *name) {
    for (int i = 0; i < t->count; i++)
        if (strcmp(t->names[i], name) == 0) return t->values[i];
    return NULL;
}

void golden_taps_free(golden_taps *t) {
    for (int i = 0; i < t->count; i++) {
        free(t->names[i]);
        tensor_free(t->values[i]);
    }
    t->count = 0;
}

void golden_folder_class(const char *dir, char *buf, size_t size) {
    static const char *const files[] = {"model_index.json", "config.json"};
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof files / sizeof files[0] && !buf[0]; i++) {
        char path[1200];
        json_config c;
        const char *name;
        test_path(path, sizeof path, "%s/%s", dir, files[i]);
        if (json_config_load(path, NULL, &c) != LCM_OK) continue;
        if (json_config_string(&c, "_class_name", &name) == LCM_OK) snprintf(buf, size, "%s", name);
        json_config_free(&c);
    }
    lcm_clear_error();
}

bool golden_controlnet_fits(const char *cn_dir, const char *model_dir) {
    controlnet_model *cn = NULL;
    if (controlnet_load(test_backend_for(LCM_PRECISION_FP32), cn_dir, NULL, false, &cn) != LCM_OK) {
        lcm_clear_error();
        return false;
    }
    model_folder folder;
    json_config cfg;
    unet_config ucfg;
    bool fits = false;
    if (model_folder_open(model_dir, NULL, &folder) == LCM_OK) {
        if (model_folder_load_config(&folder, "unet", "config.json", &cfg) == LCM_OK) {
            fits = unet_config_parse(&cfg, "UNet2DConditionModel", false, &ucfg) == LCM_OK &&
                   controlnet_check_fits(cn, &ucfg, model_dir) == LCM_OK;
            json_config_free(&cfg);
        }
        model_folder_close(&folder);
    }
    controlnet_free(cn);
    lcm_clear_error();
    return fits;
}
