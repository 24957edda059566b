// `lcm info` (lcm_model_describe in lcm.h): what a model folder holds, without loading any network.
// For a diffusers pipeline folder (model_index.json) every listed component is described: its
// class, the architecture values that matter from its config, and which weights file the variant
// rule picks, with the dtypes found there and the parameter count (the sum of the element counts
// of every tensor in the file(s)). A single-model folder (config.json + weights at the root, like
// madebyollin/taesd) is described as one component named "model".
#include "tools/model_info.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "io/model_folder.h"
#include "ops/backend.h"
#include "ops/cpu.h"

#define MAX_BLOCKS 16

// ---- building the description ------------------------------------------------------------------

static lcm_status out_of_memory(void) {
    return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory building the description");
}

static lcm_status add_item(cJSON *obj, const char *key, cJSON *item) {
    if (!item || !cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        return out_of_memory();
    }
    return LCM_OK;
}

// A list of per-block values, shown as one number when every block has the same value.
static lcm_status add_per_block(cJSON *obj, const char *key, const int64_t *values, int count) {
    bool uniform = true;
    for (int i = 1; i < count; i++) uniform = uniform && values[i] == values[0];
    if (uniform) return add_item(obj, key, cJSON_CreateNumber((double)values[0]));
    cJSON *array = cJSON_CreateArray();
    for (int i = 0; array && i < count; i++)
        if (!cJSON_AddItemToArray(array, cJSON_CreateNumber((double)values[i]))) {
            cJSON_Delete(array);
            return out_of_memory();
        }
    return add_item(obj, key, array);
}

static lcm_status add_int_array(cJSON *obj, const json_config *c, const char *field, int *count) {
    int64_t values[MAX_BLOCKS];
    int n;
    LCM_TRY(json_config_int_array(c, field, 1, 1 << 20, values, MAX_BLOCKS, &n));
    cJSON *array = cJSON_CreateArray();
    for (int i = 0; array && i < n; i++)
        if (!cJSON_AddItemToArray(array, cJSON_CreateNumber((double)values[i]))) {
            cJSON_Delete(array);
            return out_of_memory();
        }
    if (count) *count = n;
    return add_item(obj, field, array);
}

// Integer field shown as `fallback` when absent; a JSON null shows as "none" when fallback < 0.
static lcm_status add_int(cJSON *obj, const json_config *c, const char *field, int64_t fallback) {
    int64_t v;
    LCM_TRY(json_config_int_or(c, field, fallback, 0, INT32_MAX, &v));
    return add_item(obj, field, v < 0 ? cJSON_CreateNull() : cJSON_CreateNumber((double)v));
}

static lcm_status add_float(cJSON *obj, const json_config *c, const char *field, double fallback) {
    double v;
    LCM_TRY(json_config_float_or(c, field, fallback, -1e30, 1e30, &v));
    return add_item(obj, field, cJSON_CreateNumber(v));
}

static lcm_status add_string(cJSON *obj, const json_config *c, const char *field,
                             const char *fallback) {
    const char *v;
    LCM_TRY(json_config_string_or(c, field, fallback, &v));
    return add_item(obj, field, v ? cJSON_CreateString(v) : cJSON_CreateNull());
}

// Fields shown only when the config has them (schedulers differ in what they define).
static lcm_status add_if_present(cJSON *obj, const json_config *c, const char *field) {
    if (!json_config_has(c, field)) return LCM_OK;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(c->root, field);
    if (cJSON_IsBool(item)) {
        bool v;
        LCM_TRY(json_config_bool_or(c, field, false, &v));
        return add_item(obj, field, cJSON_CreateBool(v));
    }
    if (cJSON_IsString(item)) return add_string(obj, c, field, NULL);
    return add_float(obj, c, field, 0);
}

// UNet2DConditionModel and ControlNetModel.
static lcm_status describe_unet(const json_config *c, bool is_controlnet, cJSON *out) {
    int blocks;
    LCM_TRY(add_int_array(out, c, "block_out_channels", &blocks));
    int64_t values[MAX_BLOCKS];
    if (json_config_has(c, "layers_per_block"))
        LCM_TRY(json_config_int_or_array(c, "layers_per_block", 1, 1024, values, blocks));
    else
        for (int i = 0; i < blocks; i++) values[i] = 2;
    LCM_TRY(add_per_block(out, "layers_per_block", values, blocks));
    // diffusers' naming quirk: attention_head_dim is the number of heads unless
    // num_attention_heads is given.
    const char *heads_field =
        json_config_has(c, "num_attention_heads") ? "num_attention_heads" : "attention_head_dim";
    if (json_config_has(c, heads_field))
        LCM_TRY(json_config_int_or_array(c, heads_field, 1, 65536, values, blocks));
    else
        for (int i = 0; i < blocks; i++) values[i] = 8;
    LCM_TRY(add_per_block(out, "attention_heads", values, blocks));
    if (json_config_has(c, "cross_attention_dim"))
        LCM_TRY(json_config_int_or_array(c, "cross_attention_dim", 1, 1 << 20, values, blocks));
    else
        for (int i = 0; i < blocks; i++) values[i] = 1280;
    LCM_TRY(add_per_block(out, "cross_attention_dim", values, blocks));
    // The LCM guidance embedding's width; "none" for plain SD unets. ControlNets rarely have one.
    if (!is_controlnet || json_config_has(c, "time_cond_proj_dim"))
        LCM_TRY(add_int(out, c, "time_cond_proj_dim", -1));
    LCM_TRY(add_int(out, c, "sample_size", -1));
    LCM_TRY(add_int(out, c, "in_channels", 4));
    if (json_config_has(c, "conditioning_embedding_out_channels"))
        LCM_TRY(add_int_array(out, c, "conditioning_embedding_out_channels", NULL));
    return LCM_OK;
}

static lcm_status describe_vae(const json_config *c, cJSON *out) {
    LCM_TRY(add_int_array(out, c, "block_out_channels", NULL));
    LCM_TRY(add_int(out, c, "layers_per_block", 1));
    LCM_TRY(add_int(out, c, "latent_channels", 4));
    LCM_TRY(add_float(out, c, "scaling_factor", 0.18215));
    LCM_TRY(add_int(out, c, "sample_size", -1));
    return add_if_present(out, c, "force_upcast");
}

static lcm_status describe_taesd(const json_config *c, cJSON *out) {
    LCM_TRY(add_int_array(out, c, "encoder_block_out_channels", NULL));
    LCM_TRY(add_int_array(out, c, "decoder_block_out_channels", NULL));
    LCM_TRY(add_int_array(out, c, "num_encoder_blocks", NULL));
    LCM_TRY(add_int_array(out, c, "num_decoder_blocks", NULL));
    LCM_TRY(add_int(out, c, "latent_channels", 4));
    LCM_TRY(add_float(out, c, "scaling_factor", 1.0));
    return add_string(out, c, "act_fn", "relu");
}

// transformers' CLIPTextConfig defaults for absent fields.
static lcm_status describe_text_encoder(const json_config *c, cJSON *out) {
    LCM_TRY(add_int(out, c, "hidden_size", 512));
    LCM_TRY(add_int(out, c, "num_hidden_layers", 12));
    LCM_TRY(add_int(out, c, "num_attention_heads", 8));
    LCM_TRY(add_int(out, c, "intermediate_size", 2048));
    LCM_TRY(add_string(out, c, "hidden_act", "quick_gelu"));
    LCM_TRY(add_int(out, c, "max_position_embeddings", 77));
    return add_int(out, c, "vocab_size", 49408);
}

static lcm_status describe_scheduler(const json_config *c, cJSON *out) {
    static const char *const fields[] = {
        "num_train_timesteps",      "beta_schedule",    "beta_start",   "beta_end",
        "prediction_type",          "timestep_spacing", "steps_offset", "set_alpha_to_one",
        "original_inference_steps", "timestep_scaling", "clip_sample",  "skip_prk_steps",
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        LCM_TRY(add_if_present(out, c, fields[i]));
    return LCM_OK;
}

// Vocabulary size = entries of vocab.json (a 1-2 MB file: cheap enough to parse).
static lcm_status describe_tokenizer(const model_folder *folder, const char *name, cJSON *out) {
    if (folder->checkpoint) { // the file's own tokenizer, if it carries one
        const char *vocab_text = checkpoint_metadata(folder->checkpoint, CHECKPOINT_TOKENIZER_KEY "vocab.json");
        json_config vocab;
        if (!vocab_text) return add_item(out, "vocab_size", cJSON_CreateNull());
        LCM_TRY(json_config_parse(vocab_text, strlen(vocab_text), "tokenizer/vocab.json", &vocab));
        int size = cJSON_GetArraySize(vocab.root);
        json_config_free(&vocab);
        return add_item(out, "vocab_size", cJSON_CreateNumber(size));
    }
    char dir[PATH_MAX], path[PATH_MAX + 32];
    LCM_TRY(model_folder_component_dir(folder, name, dir, sizeof dir));
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    struct stat sb;
    if (stat(path, &sb) == 0) {
        json_config vocab;
        LCM_TRY(model_folder_load_config(folder, name, "vocab.json", &vocab));
        int size = cJSON_GetArraySize(vocab.root);
        json_config_free(&vocab);
        LCM_TRY(add_item(out, "vocab_size", cJSON_CreateNumber(size)));
    }
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (stat(path, &sb) == 0) {
        json_config config;
        LCM_TRY(model_folder_load_config(folder, name, "tokenizer_config.json", &config));
        lcm_status st = add_int(out, &config, "model_max_length", -1);
        json_config_free(&config);
        LCM_TRY(st);
    }
    return LCM_OK;
}

static bool contains(const char *s, const char *part) { return s && strstr(s, part) != NULL; }

// Components that are code plus small files, not networks.
static bool has_no_weights(const char *class_name) {
    return contains(class_name, "Scheduler") || contains(class_name, "Tokenizer") ||
           contains(class_name, "FeatureExtractor") || contains(class_name, "ImageProcessor");
}

// The config summary for a class this command knows; other classes show no summary.
static lcm_status describe_config(const char *class_name, const json_config *c, cJSON *out) {
    if (!strcmp(class_name, "UNet2DConditionModel")) return describe_unet(c, false, out);
    if (!strcmp(class_name, "ControlNetModel")) return describe_unet(c, true, out);
    if (!strcmp(class_name, "AutoencoderKL")) return describe_vae(c, out);
    if (!strcmp(class_name, "AutoencoderTiny")) return describe_taesd(c, out);
    if (!strncmp(class_name, "CLIPTextModel", 13)) return describe_text_encoder(c, out);
    if (contains(class_name, "Scheduler")) return describe_scheduler(c, out);
    return LCM_OK;
}

// Path of `path` relative to the model folder, for display.
static const char *relative_to(const char *root, const char *path) {
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    return !strncmp(path, root, n) && path[n] == '/' ? path + n + 1 : path;
}

static lcm_status describe_weights(const model_folder *folder, const weight_set *ws, cJSON *out) {
    int64_t per_dtype[ST_DTYPE_COUNT] = {0};
    int64_t parameters = 0;
    size_t count = weight_set_count(ws);
    for (size_t i = 0; i < count; i++) {
        const st_tensor *t = weight_set_at(ws, i);
        per_dtype[t->dtype]++;
        parameters += t->numel;
    }
    cJSON *dtypes = cJSON_CreateObject();
    for (int d = 0; dtypes && d < ST_DTYPE_COUNT; d++)
        if (per_dtype[d] &&
            !cJSON_AddNumberToObject(dtypes, st_dtype_name((st_dtype)d), (double)per_dtype[d])) {
            cJSON_Delete(dtypes);
            return out_of_memory();
        }
    LCM_TRY(add_item(out, "file",
                     cJSON_CreateString(relative_to(folder->root, weight_set_source(ws)))));
    LCM_TRY(add_item(out, "dtypes", dtypes));
    LCM_TRY(add_item(out, "tensors", cJSON_CreateNumber((double)count)));
    return add_item(out, "parameters", cJSON_CreateNumber((double)parameters));
}

// A single-model folder's weights: the diffusers or transformers name, else the one .safetensors
// file at the root (e.g. a converted checkpoint with its own name).
static lcm_status open_root_weights(const model_folder *folder, weight_set **ws) {
    const char *variant = folder->variant;
    if (weight_set_open(folder->root, "diffusion_pytorch_model", variant, ws) == LCM_OK)
        return LCM_OK;
    if (weight_set_open(folder->root, "model", variant, ws) == LCM_OK) return LCM_OK;
    DIR *d = opendir(folder->root);
    if (!d) return lcm_fail(LCM_ERR_IO, "%s: cannot list the folder", folder->root);
    char found[NAME_MAX + 1] = "";
    int matches = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len > 12 && !strcmp(e->d_name + len - 12, ".safetensors")) {
            snprintf(found, sizeof found, "%s", e->d_name);
            matches++;
        }
    }
    closedir(d);
    if (matches != 1)
        return lcm_fail(LCM_ERR_IO,
                        "%s: no weights found: expected diffusion_pytorch_model.safetensors, "
                        "model.safetensors or a single .safetensors file (found %d)",
                        folder->root, matches);
    char path[PATH_MAX + NAME_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", folder->root, found);
    return weight_set_open_file(path, ws);
}

// diffusers models are saved as diffusion_pytorch_model.*, transformers models (the text encoder,
// and the safety checker whose model_index library is "stable_diffusion") as model.*.
static lcm_status open_component_weights(const model_folder *folder, const char *name,
                                         const char *library, weight_set **ws) {
    bool diffusers = library && !strcmp(library, "diffusers");
    const char *first = diffusers ? "diffusion_pytorch_model" : "model";
    const char *second = diffusers ? "model" : "diffusion_pytorch_model";
    lcm_status st = model_folder_open_weights(folder, name, first, ws);
    if (st != LCM_ERR_IO) return st; // found (or found but malformed: report that)
    char first_error[1024];
    snprintf(first_error, sizeof first_error, "%s", error_last_message());
    if (model_folder_open_weights(folder, name, second, ws) == LCM_OK) return LCM_OK;
    return lcm_fail(st, "%s", first_error);
}

// One component of a pipeline folder, or (name == NULL) the single model at the folder's root.
static lcm_status describe_component(const model_folder *folder, const char *name,
                                     const char *library, const char *class_name, cJSON *out) {
    bool root = name == NULL;
    char dir[PATH_MAX];
    if (!root && !folder->checkpoint) LCM_TRY(model_folder_component_dir(folder, name, dir, sizeof dir));
    json_config config = {0};
    lcm_status st = LCM_OK;
    cJSON *summary = cJSON_CreateObject(), *weights = NULL;
    if (!summary) return out_of_memory();

    if (root) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/config.json", folder->root);
        st = json_config_load(path, "config.json", &config);
        if (st == LCM_OK) st = json_config_string_or(&config, "_class_name", NULL, &class_name);
    } else {
        char path[PATH_MAX + 32];
        const char *file =
            contains(class_name, "Scheduler") ? "scheduler_config.json" : "config.json";
        snprintf(path, sizeof path, "%s/%s", dir, file);
        struct stat sb;
        // Networks and schedulers must have their config; other components may not.
        bool required = contains(class_name, "Scheduler") || !has_no_weights(class_name);
        // A single file has the configs of its networks and scheduler (stored or derived) only.
        if (required || (!folder->checkpoint && stat(path, &sb) == 0))
            st = model_folder_load_config(folder, name, file, &config);
    }
    if (st == LCM_OK) st = add_item(out, "name", cJSON_CreateString(root ? "model" : name));
    if (st == LCM_OK)
        st = add_item(out, "library", library ? cJSON_CreateString(library) : cJSON_CreateNull());
    if (st == LCM_OK)
        st = add_item(out, "class",
                      class_name ? cJSON_CreateString(class_name) : cJSON_CreateNull());
    if (st == LCM_OK && config.root && class_name) {
        st = describe_config(class_name, &config, summary);
        if (st != LCM_OK && !root) st = lcm_fail_context(st, "%s: ", folder->root);
    }
    if (st == LCM_OK && contains(class_name, "Tokenizer"))
        st = describe_tokenizer(folder, name, summary);
    if (st == LCM_OK) {
        st = add_item(out, "config", summary);
        summary = NULL;
    }
    if (st == LCM_OK && !has_no_weights(class_name)) {
        weight_set *ws = NULL;
        st = root ? open_root_weights(folder, &ws)
                  : open_component_weights(folder, name, library, &ws);
        if (st == LCM_OK)
            st = (weights = cJSON_CreateObject()) ? describe_weights(folder, ws, weights)
                                                  : out_of_memory();
        weight_set_close(ws);
        if (st == LCM_OK) {
            st = add_item(out, "weights", weights);
            weights = NULL;
        }
    }
    cJSON_Delete(summary);
    cJSON_Delete(weights);
    json_config_free(&config);
    // Component errors already name the component's file; the root config is just "config.json".
    if (st != LCM_OK && root) return lcm_fail_context(st, "%s: ", folder->root);
    return st;
}

// A component name from model_index.json becomes a folder name: keep it inside the model folder.
static bool is_plain_name(const char *name) {
    return name[0] && name[0] != '.' && !strchr(name, '/') && !strchr(name, '\\');
}

static bool is_unused_component(const char *name) {
    return !strcmp(name, "safety_checker") || !strcmp(name, "feature_extractor") ||
           !strcmp(name, "image_encoder");
}

static lcm_status describe_folder(const model_folder *folder, cJSON *doc) {
    cJSON *components = cJSON_CreateArray(), *unused = cJSON_CreateArray();
    lcm_status st = components && unused ? LCM_OK : out_of_memory();
    if (st == LCM_OK) st = add_item(doc, "folder", cJSON_CreateString(
                            folder->checkpoint ? checkpoint_path(folder->checkpoint) : folder->root));
    // What this machine runs the model with (ops/backend.h).
    if (st == LCM_OK) st = add_item(doc, "cpu", cJSON_CreateString(cpu_features_get()->name));
    if (st == LCM_OK) st = add_item(doc, "cpu_features", cJSON_CreateString(cpu_feature_list()));
    if (st == LCM_OK)
        st = add_item(doc, "kernel_choice",
                      cJSON_CreateString(ops_backend_from_environment(LCM_PRECISION_FP32).tune
                                             ? "measured per layer shape"
                                             : "built-in rules (LCM_TUNE=off)"));
    if (st == LCM_OK) st = add_item(doc, "kernel_cache", cJSON_CreateString(backend_tuning_file()));
    if (st == LCM_OK)
        st = add_item(doc, "variant",
                      folder->variant ? cJSON_CreateString(folder->variant) : cJSON_CreateNull());
    if (st == LCM_OK && !folder->index.root) { // single-model folder
        cJSON *component = cJSON_CreateObject();
        st = component ? describe_component(folder, NULL, NULL, NULL, component) : out_of_memory();
        if (!cJSON_AddItemToArray(components, component)) cJSON_Delete(component);
        if (st == LCM_OK) st = add_item(doc, "pipeline", cJSON_CreateNull());
    } else if (st == LCM_OK) {
        const char *pipeline = model_folder_pipeline_class(folder), *version = NULL;
        st = json_config_string_or(&folder->index, "_diffusers_version", NULL, &version);
        if (st == LCM_OK)
            st = add_item(doc, "pipeline",
                          pipeline ? cJSON_CreateString(pipeline) : cJSON_CreateNull());
        if (st == LCM_OK)
            st = add_item(doc, "diffusers_version",
                          version ? cJSON_CreateString(version) : cJSON_CreateNull());
        const cJSON *entry;
        cJSON_ArrayForEach(entry, folder->index.root) {
            if (st != LCM_OK) break;
            const char *name = entry->string;
            if (name[0] == '_' || !cJSON_IsArray(entry)) continue; // _class_name, flags
            const cJSON *library = cJSON_GetArrayItem(entry, 0),
                        *cls = cJSON_GetArrayItem(entry, 1);
            if (cJSON_GetArraySize(entry) != 2 ||
                !(cJSON_IsString(library) || cJSON_IsNull(library)) ||
                !(cJSON_IsString(cls) || cJSON_IsNull(cls))) {
                st = lcm_fail(LCM_ERR_FORMAT,
                              "%s/model_index.json: %s must be [library, class] (strings or null)",
                              folder->root, name);
                break;
            }
            if (cJSON_IsNull(cls)) {
                if (!cJSON_AddItemToArray(unused, cJSON_CreateString(name))) st = out_of_memory();
                continue;
            }
            if (!is_plain_name(name)) {
                st = lcm_fail(LCM_ERR_FORMAT,
                              "%s/model_index.json: component name '%s' is not a plain folder name",
                              folder->root, name);
                break;
            }
            // diffusers folders list a safety checker and its image processor that lcm.c never
            // runs; downloads of only what the pipeline needs leave their folders out.
            char dir[PATH_MAX];
            struct stat sb;
            snprintf(dir, sizeof dir, "%s/%s", folder->root, name);
            if (is_unused_component(name) && stat(dir, &sb) != 0) {
                if (!cJSON_AddItemToArray(unused, cJSON_CreateString(name))) st = out_of_memory();
                continue;
            }
            cJSON *component = cJSON_CreateObject();
            st = component
                     ? describe_component(folder, name,
                                          cJSON_IsString(library) ? library->valuestring : NULL,
                                          cls->valuestring, component)
                     : out_of_memory();
            if (!cJSON_AddItemToArray(components, component)) cJSON_Delete(component);
        }
    }
    if (st == LCM_OK) {
        st = add_item(doc, "components", components);
        components = NULL;
    }
    if (st == LCM_OK) {
        st = add_item(doc, "absent_components", unused);
        unused = NULL;
    }
    cJSON_Delete(components);
    cJSON_Delete(unused);
    return st;
}

lcm_status model_info_describe(const char *path, const char *variant, char **json) {
    *json = NULL;
    model_folder folder;
    LCM_TRY(model_folder_open(path, variant, &folder));
    cJSON *doc = cJSON_CreateObject();
    lcm_status st = doc ? describe_folder(&folder, doc) : out_of_memory();
    model_folder_close(&folder);
    if (st == LCM_OK && !(*json = cJSON_Print(doc))) st = out_of_memory();
    cJSON_Delete(doc);
    return st;
}
