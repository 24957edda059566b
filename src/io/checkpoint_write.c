// lcm convert: a diffusers pipeline folder -> one .safetensors file in the original layout.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/model_folder.h"
#include "io/safetensors_write.h"

#define CONFIG_MAX_BYTES (4u << 20)
#define TOKENIZER_MAX_BYTES (16u << 20)

typedef struct source_tensor {
    const weight_set *weights;
    const st_tensor *tensor;
} source_tensor;

typedef struct convert_job {
    source_tensor *sources;
    st_write_entry *entries;
    char **names; // owned original names
    size_t count, capacity;
} convert_job;

static lcm_status fill_from_source(void *user, size_t index, float *out, int64_t numel) {
    const convert_job *job = user;
    const source_tensor *src = &job->sources[index];
    const st_file *file;
    weight_set_find(src->weights, src->tensor->name, &file);
    if (src->tensor->numel != numel) return lcm_fail(LCM_ERR_INTERNAL, "size changed: '%s'", src->tensor->name);
    return st_read_f32(file, src->tensor, out);
}

static lcm_status add_component(convert_job *job, const model_folder *folder, const char *component,
                                const weight_set *ws) {
    json_config config = {0};
    if (strcmp(component, "text_encoder"))
        LCM_TRY(model_folder_load_config(folder, component, "config.json", &config));
    lcm_status st = LCM_OK;
    for (size_t i = 0; i < weight_set_count(ws) && st == LCM_OK; i++) {
        const st_tensor *t = weight_set_at(ws, i);
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) continue; // position_ids
        char name[512];
        if ((st = checkpoint_original_name(component, &config, t->name, name, sizeof name)) != LCM_OK) break;
        if (job->count == job->capacity) {
            size_t cap = job->capacity ? job->capacity * 2 : 1024;
            source_tensor *s = realloc(job->sources, cap * sizeof *s);
            if (s) job->sources = s;
            st_write_entry *e = realloc(job->entries, cap * sizeof *e);
            if (e) job->entries = e;
            char **n = realloc(job->names, cap * sizeof *n);
            if (n) job->names = n;
            if (!s || !e || !n) {
                st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
                break;
            }
            job->capacity = cap;
        }
        char *copy = strdup(name);
        if (!copy) {
            st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
            break;
        }
        size_t k = job->count++;
        job->names[k] = copy;
        job->sources[k] = (source_tensor){ws, t};
        st_write_entry *e = &job->entries[k];
        *e = (st_write_entry){.name = copy, .dtype = t->dtype, .ndim = t->ndim};
        memcpy(e->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        // The original VAE attention projections are 1x1 convolutions.
        if (strstr(name, ".mid.attn_1.") && t->ndim == 2 && !strstr(name, ".norm.")) {
            e->shape[2] = e->shape[3] = 1;
            e->ndim = 4;
        }
    }
    json_config_free(&config);
    return st;
}

// The __metadata__ entries to write (keys and values owned).
typedef struct metadata_list {
    char *keys[16], *values[16];
    int count;
} metadata_list;

// Adds key = value (taking ownership of value; freed on failure).
static lcm_status add_entry(metadata_list *m, const char *key, char *value) {
    char *key_copy = strdup(key);
    if (!value || !key_copy || m->count == (int)(sizeof m->keys / sizeof *m->keys)) {
        free(value);
        free(key_copy);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory (metadata)");
    }
    m->keys[m->count] = key_copy;
    m->values[m->count++] = value;
    return LCM_OK;
}

// Adds KEY_PREFIX + RELATIVE = the text of model_dir/RELATIVE (a missing optional file adds nothing).
static lcm_status add_file(metadata_list *m, const char *model_dir, const char *relative, const char *key_prefix,
                           size_t max_bytes, bool optional) {
    char file[PATH_MAX + 128], key[256];
    snprintf(file, sizeof file, "%s/%s", model_dir, relative);
    if (optional && access(file, F_OK) != 0) return LCM_OK;
    char *text = NULL;
    size_t len = 0;
    LCM_TRY(read_text_file(file, max_bytes, &text, &len));
    if (strlen(text) != len) { // metadata values are C strings here
        free(text);
        return lcm_fail(LCM_ERR_FORMAT, "%s: contains a NUL byte", file);
    }
    snprintf(key, sizeof key, "%s%s", key_prefix, relative);
    return add_entry(m, key, text);
}

lcm_status checkpoint_write(const char *model_dir, const char *path, unsigned store) {
    model_folder folder;
    LCM_TRY(model_folder_open(model_dir, NULL, &folder));
    static const struct { const char *component, *basename; } parts[] = {
        {"unet", "diffusion_pytorch_model"}, {"vae", "diffusion_pytorch_model"}, {"text_encoder", "model"}};
    static const char *const configs[] = {"model_index.json", "unet/config.json", "vae/config.json",
                                          "text_encoder/config.json", "scheduler/scheduler_config.json"};
    static const char *const tokenizer_files[] = {"tokenizer/vocab.json", "tokenizer/merges.txt",
                                                  "tokenizer/special_tokens_map.json",
                                                  "tokenizer/tokenizer_config.json"};
    enum { PARTS = 3 };
    weight_set *weights[PARTS] = {0};
    metadata_list meta = {0};
    convert_job job = {0};
    lcm_status st = LCM_OK;
    if (folder.checkpoint || !folder.index.root)
        st = lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: expected a diffusers pipeline folder", model_dir);
    for (int i = 0; i < PARTS && st == LCM_OK; i++) {
        st = model_folder_open_weights(&folder, parts[i].component, parts[i].basename, &weights[i]);
        if (st == LCM_OK) st = add_component(&job, &folder, parts[i].component, weights[i]);
    }
    if (st == LCM_OK) st = add_entry(&meta, "format", strdup("pt"));
    for (size_t i = 0; i < sizeof configs / sizeof *configs && st == LCM_OK; i++) {
        bool text_config = !strcmp(configs[i], "text_encoder/config.json");
        if ((store & CHECKPOINT_STORE_CONFIGS) || (text_config && (store & CHECKPOINT_STORE_TEXT_CONFIG)))
            st = add_file(&meta, model_dir, configs[i], "lcm.config.", CONFIG_MAX_BYTES, false);
    }
    // The tokenizer travels too, so the file is all a user needs (vocab.json is ~1 MB).
    for (size_t i = 0; i < sizeof tokenizer_files / sizeof *tokenizer_files && st == LCM_OK &&
                       (store & CHECKPOINT_STORE_TOKENIZER);
         i++)
        st = add_file(&meta, model_dir, tokenizer_files[i], "lcm.", TOKENIZER_MAX_BYTES, i >= 2);
    if (st == LCM_OK)
        st = st_write_metadata(path, job.entries, job.count, fill_from_source, &job,
                               (const char *const *)meta.keys, (const char *const *)meta.values,
                               (size_t)meta.count);
    for (size_t i = 0; i < job.count; i++) free(job.names[i]);
    free(job.names);
    free(job.entries);
    free(job.sources);
    for (int i = 0; i < meta.count; i++) {
        free(meta.keys[i]);
        free(meta.values[i]);
    }
    for (int i = 0; i < PARTS; i++) weight_set_close(weights[i]);
    model_folder_close(&folder);
    return st;
}
