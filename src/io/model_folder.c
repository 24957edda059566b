#include "io/model_folder.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/hub_cache.h"

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

void model_folder_close(model_folder *folder) {
    if (!folder) return;
    json_config_free(&folder->index);
    checkpoint_close(folder->checkpoint);
    folder->checkpoint = NULL;
    free(folder->root);
    free(folder->variant);
    folder->root = folder->variant = NULL;
}

static lcm_status open_checkpoint(const char *path, model_folder *out) {
    LCM_TRY(checkpoint_open(path, &out->checkpoint));
    out->root = strdup(path);
    lcm_status st = out->root ? checkpoint_load_config(out->checkpoint, NULL, "model_index.json", &out->index)
                              : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    if (st != LCM_OK) {
        model_folder_close(out);
        return lcm_fail_context(st, "%s: ", path);
    }
    return LCM_OK;
}

lcm_status model_folder_open(const char *dir, const char *variant, model_folder *out) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (stat(dir, &sb) == 0 && S_ISREG(sb.st_mode)) return open_checkpoint(dir, out);
    if (!is_dir(dir) && hub_is_id(dir))
        return lcm_fail(LCM_ERR_IO,
                        "%s: no such folder; for a Hugging Face hub id, resolve it to its cache "
                        "folder first (lcm_model_resolve)",
                        dir);
    if (!is_dir(dir))
        return lcm_fail(LCM_ERR_IO, "%s: %s", dir,
                        access(dir, F_OK) == 0 ? "not a folder" : "no such folder");
    out->root = strdup(dir);
    out->variant = variant && *variant ? strdup(variant) : NULL;
    if (!out->root || (variant && *variant && !out->variant)) {
        model_folder_close(out);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/model_index.json", dir);
    if (access(path, F_OK) == 0) {
        lcm_status st = json_config_load(path, "model_index.json", &out->index);
        if (st != LCM_OK) {
            model_folder_close(out);
            return lcm_fail_context(st, "%s: ", dir);
        }
        return LCM_OK;
    }
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (access(path, F_OK) == 0) return LCM_OK; // a single-model folder
    model_folder_close(out);
    return lcm_fail(LCM_ERR_IO,
                    "%s: not a model folder (no model_index.json or config.json inside); expected a "
                    "diffusers pipeline folder such as SimianLuo/LCM_Dreamshaper_v7",
                    dir);
}

const char *model_folder_pipeline_class(const model_folder *folder) {
    if (!folder->index.root) return NULL;
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(folder->index.root, "_class_name");
    return cJSON_IsString(c) ? c->valuestring : NULL;
}

bool model_folder_has_component(const model_folder *folder, const char *component,
                                const char **class_name) {
    if (!folder->index.root) return false;
    const cJSON *entry = cJSON_GetObjectItemCaseSensitive(folder->index.root, component);
    if (!cJSON_IsArray(entry) || cJSON_GetArraySize(entry) != 2) return false;
    const cJSON *cls = cJSON_GetArrayItem(entry, 1);
    if (!cJSON_IsString(cls)) return false;
    if (class_name) *class_name = cls->valuestring;
    return true;
}

lcm_status model_folder_component_dir(const model_folder *folder, const char *component, char *buf,
                                      size_t size) {
    if (folder->checkpoint)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: a single-file checkpoint has no '%s' folder",
                        folder->root, component);
    if (snprintf(buf, size, "%s/%s", folder->root, component) >= (int)size)
        return lcm_fail(LCM_ERR_IO, "%s: path too long", folder->root);
    if (!is_dir(buf))
        return lcm_fail(LCM_ERR_IO, "%s: component folder '%s' is missing", folder->root, component);
    return LCM_OK;
}

lcm_status model_folder_load_config(const model_folder *folder, const char *component,
                                    const char *filename, json_config *out) {
    if (folder->checkpoint) return checkpoint_load_config(folder->checkpoint, component, filename, out);
    char dir[PATH_MAX], path[PATH_MAX + 64], label[256];
    LCM_TRY(model_folder_component_dir(folder, component, dir, sizeof dir));
    snprintf(path, sizeof path, "%s/%s", dir, filename);
    snprintf(label, sizeof label, "%s/%s", component, filename);
    lcm_status st = json_config_load(path, label, out);
    if (st != LCM_OK) return lcm_fail_context(st, "%s: ", folder->root);
    return LCM_OK;
}

lcm_status model_folder_parse_config(const model_folder *folder, const char *component,
                                     model_config_parser parse, void *config) {
    json_config json;
    LCM_TRY(model_folder_load_config(folder, component, "config.json", &json));
    lcm_status st = parse(&json, config);
    json_config_free(&json);
    return st == LCM_OK ? LCM_OK : lcm_fail_context(st, "%s: ", folder->root);
}

static lcm_status open_weights_plain(const model_folder *folder, const char *component,
                                     const char *basename, weight_set **out) {
    if (folder->synthetic) return weight_set_open_synthetic(folder->synthetic, component, out);
    if (folder->checkpoint) return checkpoint_open_weights(folder->checkpoint, component, out);
    char dir[PATH_MAX];
    LCM_TRY(model_folder_component_dir(folder, component, dir, sizeof dir));
    return weight_set_open(dir, basename, folder->variant, out);
}

lcm_status model_folder_open_weights(const model_folder *folder, const char *component,
                                     const char *basename, weight_set **out) {
    LCM_TRY(open_weights_plain(folder, component, basename, out));
    if (folder->packed_cache) {
        lcm_status st = weight_set_allow_cache(*out, component);
        if (st != LCM_OK) {
            weight_set_close(*out);
            *out = NULL;
            return st;
        }
    }
    if (folder->weights_hook) {
        lcm_status st = folder->weights_hook(folder->weights_hook_user, component, *out);
        if (st != LCM_OK) {
            weight_set_close(*out);
            *out = NULL;
            return st;
        }
    }
    return LCM_OK;
}
