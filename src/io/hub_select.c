// Which files of a hub repository a pull fetches (io/hub_parse.h): for a diffusers pipeline its
// configs, tokenizer and each component's weights; for a CLIP tokenizer repository the tokenizer
// files; for one model at a repository's root its config and weights. Weights follow the variant
// rule of io/weights.c and are only ever .safetensors; the shards an index names join later.
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/hub_cache.h"
#include "io/hub_parse.h"

static bool plan_has(const hub_plan *p, const char *path) {
    for (int i = 0; i < p->count; i++)
        if (!strcmp(p->files[i].path, path)) return true;
    return false;
}

static lcm_status plan_add(hub_plan *p, const char *path) {
    if (plan_has(p, path)) return LCM_OK;
    if (p->count == HUB_MAX_FILES) return lcm_fail(LCM_ERR_FORMAT, "too many files to download");
    if (!hub_is_safe_file_name(path))
        return lcm_fail(LCM_ERR_FORMAT, "refusing to download '%s': not a plain relative path", path);
    hub_file *f = &p->files[p->count++];
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->size = -1;
    return LCM_OK;
}

static bool listed(const cJSON *siblings, const char *path) {
    const cJSON *s;
    cJSON_ArrayForEach(s, siblings) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "rfilename");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, path)) return true;
    }
    return false;
}

// One model's weights, NAME = "unet/diffusion_pytorch_model" say, with the variant rule of
// io/weights.c: NAME.VARIANT.safetensors, its .index.json, NAME.safetensors, its .index.json.
static lcm_status plan_weights(const char *label, const cJSON *siblings, const char *variant,
                               const char *name, hub_plan *plan) {
    for (int with_variant = variant && *variant ? 1 : 0; with_variant >= 0; with_variant--) {
        char single[600], index[620];
        snprintf(single, sizeof single, "%s%s%s.safetensors", name, with_variant ? "." : "",
                 with_variant ? variant : "");
        snprintf(index, sizeof index, "%s.index.json", single);
        if (listed(siblings, single)) return plan_add(plan, single);
        if (listed(siblings, index)) return plan_add(plan, index);
    }
    return lcm_fail(LCM_ERR_UNSUPPORTED,
                    "%s has no %s%s%s%s.safetensors weights (lcm.c loads only .safetensors, not "
                    ".bin/.ckpt pickles)",
                    label, name, variant && *variant ? "[." : "", variant && *variant ? variant : "",
                    variant && *variant ? "]" : "");
}

// The configs and tokenizer files of the pipeline, and each component's weights with the variant
// rule of io/weights.c (variant single file, variant index, plain single file, plain index). Safety
// checker, feature extractor, .bin/.ckpt pickles, ONNX and Flax files are never fetched.
static lcm_status plan_files(const char *label, const cJSON *siblings, const char *variant,
                             hub_plan *plan) {
    static const char *required[] = {"model_index.json",     "scheduler/scheduler_config.json",
                                     "tokenizer/vocab.json", "tokenizer/merges.txt",
                                     "text_encoder/config.json", "unet/config.json",
                                     "vae/config.json"};
    static const char *optional[] = {"tokenizer/special_tokens_map.json",
                                     "tokenizer/tokenizer_config.json"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        if (!listed(siblings, required[i]))
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s has no %s: not a Stable Diffusion / LCM pipeline in the diffusers "
                            "layout (model_index.json, scheduler/, tokenizer/, text_encoder/, unet/, "
                            "vae/)",
                            label, required[i]);
        LCM_TRY(plan_add(plan, required[i]));
    }
    for (size_t i = 0; i < sizeof optional / sizeof *optional; i++)
        if (listed(siblings, optional[i])) LCM_TRY(plan_add(plan, optional[i]));
    static const char *const components[] = {"text_encoder/model", "unet/diffusion_pytorch_model",
                                             "vae/diffusion_pytorch_model"};
    for (size_t i = 0; i < sizeof components / sizeof *components; i++)
        LCM_TRY(plan_weights(label, siblings, variant, components[i], plan));
    return LCM_OK;
}

// Only the tokenizer files, at the repository's root (openai/clip-vit-large-patch14 keeps them
// there, next to the 1.7 GB of CLIP weights we never want).
static lcm_status plan_tokenizer_files(const char *label, const cJSON *siblings, hub_plan *plan) {
    static const char *required[] = {"vocab.json", "merges.txt"};
    static const char *optional[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        if (!listed(siblings, required[i]))
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s has no %s at its root: not a CLIP tokenizer repository",
                            label, required[i]);
        LCM_TRY(plan_add(plan, required[i]));
    }
    for (size_t i = 0; i < sizeof optional / sizeof *optional; i++)
        if (listed(siblings, optional[i])) LCM_TRY(plan_add(plan, optional[i]));
    return LCM_OK;
}

// A repository holding one diffusers model at its root (madebyollin/taesd, a ControlNet such as
// lllyasviel/control_v11p_sd15_normalbae): config.json and the weights, variant rule as above.
static lcm_status plan_single_model_files(const char *label, const cJSON *siblings, const char *variant,
                                          hub_plan *plan) {
    if (!listed(siblings, "config.json"))
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s has no config.json at its root: not a single diffusers model (expected "
                        "config.json + diffusion_pytorch_model.safetensors, like madebyollin/taesd)",
                        label);
    LCM_TRY(plan_add(plan, "config.json"));
    return plan_weights(label, siblings, variant, "diffusion_pytorch_model", plan);
}

lcm_status hub_plan_add_shard_file(const char *snapshot_file, const char *path, hub_plan *plan) {
    char *text = NULL;
    size_t len = 0;
    FILE *fp = fopen(snapshot_file, "rb");
    if (!fp) return lcm_fail(LCM_ERR_IO, "%s: %s", snapshot_file, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (size < 0 || size > (long)HUB_API_MAX_BYTES || !(text = malloc((size_t)size + 1))) {
        fclose(fp);
        return lcm_fail(LCM_ERR_FORMAT, "%s: too large or unreadable", snapshot_file);
    }
    len = fread(text, 1, (size_t)size, fp);
    fclose(fp);
    lcm_status st = hub_plan_add_shards(text, len, path, plan);
    free(text);
    return st;
}

lcm_status hub_plan_add_shards(const char *text, size_t len, const char *path, hub_plan *plan) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    lcm_status st = cJSON_IsObject(map) ? LCM_OK
                                        : lcm_fail(LCM_ERR_FORMAT, "%s: no object 'weight_map'", path);
    // The shards sit next to the index: in its folder, or at the root (single-model repos).
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    const cJSON *entry;
    if (st == LCM_OK) cJSON_ArrayForEach(entry, map) {
        char shard[1100];
        if (!cJSON_IsString(entry) || strchr(entry->valuestring, '/')) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: bad shard name for '%s'", path, entry->string);
            break;
        }
        snprintf(shard, sizeof shard, "%.*s%s", dir_len, path, entry->valuestring);
        if ((st = plan_add(plan, shard)) != LCM_OK) break;
    }
    cJSON_Delete(root);
    return st;
}

lcm_status hub_plan_from_revision(const char *text, size_t len, const char *what, const char *url,
                                  hub_selection selection, const char *variant, char commit[64],
                                  hub_plan *plan) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(root, "sha");
    const cJSON *siblings = cJSON_GetObjectItemCaseSensitive(root, "siblings");
    if (!cJSON_IsString(sha) || !hub_is_commit_hash(sha->valuestring) || !cJSON_IsArray(siblings)) {
        cJSON_Delete(root);
        return lcm_fail(LCM_ERR_FORMAT, "%s: the answer of %s has no commit 'sha' or 'siblings' list",
                        what, url);
    }
    snprintf(commit, 64, "%s", sha->valuestring);
    lcm_status st = selection == HUB_SELECT_TOKENIZER       ? plan_tokenizer_files(what, siblings, plan)
                    : selection == HUB_SELECT_SINGLE_MODEL ? plan_single_model_files(what, siblings, variant, plan)
                                                           : plan_files(what, siblings, variant, plan);
    cJSON_Delete(root);
    return st;
}
