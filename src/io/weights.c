#include "io/weights.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "io/json_config.h"

// Real SD checkpoints are split in at most a handful of shards; this bound keeps a hostile index
// file from opening thousands of files.
#define WEIGHTS_MAX_SHARDS 256

struct weight_set {
    char *source;
    st_file **shards;
    size_t shard_count;
};

void weight_set_close(weight_set *ws) {
    if (!ws) return;
    for (size_t i = 0; i < ws->shard_count; i++) st_close(ws->shards[i]);
    free(ws->shards);
    free(ws->source);
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
    lcm_status st = st_open(path, &ws->shards[0]);
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

const st_tensor *weight_set_find(const weight_set *ws, const char *name, const st_file **file) {
    for (size_t i = 0; i < ws->shard_count; i++) {
        const st_tensor *t = st_find(ws->shards[i], name);
        if (t) {
            if (file) *file = ws->shards[i];
            return t;
        }
    }
    return NULL;
}

lcm_status weight_set_load_f32(const weight_set *ws, const char *name, int ndim,
                               const int64_t *shape, float **out) {
    const st_file *file;
    if (!weight_set_find(ws, name, &file)) {
        *out = NULL;
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' is missing", ws->source, name);
    }
    return st_load_f32(file, name, ndim, shape, out);
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
