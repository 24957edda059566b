// lcm convert: a diffusers pipeline folder -> one .safetensors file in the original layout.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/model_folder.h"
#include "io/safetensors_write.h"

#define CONFIG_MAX_BYTES (4u << 20)

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

static bool same_file_content(const char *a, const char *b) {
    char *ta = NULL, *tb = NULL;
    size_t la = 0, lb = 0;
    bool same = read_text_file(a, 16u << 20, &ta, &la) == LCM_OK &&
                read_text_file(b, 16u << 20, &tb, &lb) == LCM_OK && la == lb && !memcmp(ta, tb, la);
    free(ta);
    free(tb);
    lcm_clear_error();
    return same;
}

lcm_status lcm_convert_to_single_file(const char *model_dir, const char *path) {
    model_folder folder;
    LCM_TRY(model_folder_open(model_dir, NULL, &folder));
    static const struct { const char *component, *basename; } parts[] = {
        {"unet", "diffusion_pytorch_model"}, {"vae", "diffusion_pytorch_model"}, {"text_encoder", "model"}};
    static const char *configs[] = {"model_index.json", "unet/config.json", "vae/config.json",
                                    "text_encoder/config.json", "scheduler/scheduler_config.json"};
    enum { PARTS = 3, CONFIGS = 5 };
    weight_set *weights[PARTS] = {0};
    char *texts[CONFIGS] = {0}, keys[CONFIGS + 1][64];
    const char *meta_keys[CONFIGS + 1], *meta_values[CONFIGS + 1];
    convert_job job = {0};
    lcm_status st = LCM_OK;
    if (folder.checkpoint || !folder.index.root)
        st = lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: expected a diffusers pipeline folder", model_dir);
    // The tokenizer is not stored: it must be the one loading the file will use.
    for (int i = 0; i < 2 && st == LCM_OK; i++) {
        const char *file = i ? "merges.txt" : "vocab.json";
        char mine[PATH_MAX + 32], shipped[PATH_MAX + 64];
        snprintf(mine, sizeof mine, "%s/tokenizer/%s", model_dir, file);
        snprintf(shipped, sizeof shipped, "%s/tokenizer-clip-vit-large-patch14/%s", checkpoint_data_dir(), file);
        if (!same_file_content(mine, shipped))
            st = lcm_fail(LCM_ERR_UNSUPPORTED,
                          "%s: differs from the standard CLIP tokenizer (%s); single files do not "
                          "carry a tokenizer",
                          mine, shipped);
    }
    for (int i = 0; i < PARTS && st == LCM_OK; i++) {
        st = model_folder_open_weights(&folder, parts[i].component, parts[i].basename, &weights[i]);
        if (st == LCM_OK) st = add_component(&job, &folder, parts[i].component, weights[i]);
    }
    meta_keys[0] = "format";
    meta_values[0] = "pt";
    for (int i = 0; i < CONFIGS && st == LCM_OK; i++) {
        char file[PATH_MAX + 64];
        size_t len;
        snprintf(file, sizeof file, "%s/%s", model_dir, configs[i]);
        st = read_text_file(file, CONFIG_MAX_BYTES, &texts[i], &len);
        snprintf(keys[i], sizeof keys[i], "lcm.config.%s", configs[i]);
        meta_keys[i + 1] = keys[i];
        meta_values[i + 1] = texts[i];
    }
    if (st == LCM_OK)
        st = st_write_metadata(path, job.entries, job.count, fill_from_source, &job, meta_keys,
                               meta_values, CONFIGS + 1);
    for (size_t i = 0; i < job.count; i++) free(job.names[i]);
    free(job.names);
    free(job.entries);
    free(job.sources);
    for (int i = 0; i < CONFIGS; i++) free(texts[i]);
    for (int i = 0; i < PARTS; i++) weight_set_close(weights[i]);
    model_folder_close(&folder);
    return st;
}
