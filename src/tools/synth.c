// `lcm synth`: model folders with random weights (tools/synth.h).
#include "tools/synth.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/model_folder.h"
#include "models/clip_text.h"
#include "models/taesd.h"
#include "models/unet.h"
#include "models/vae.h"
#include "ops/backend.h"

typedef struct synth_progress {
    lcm_synth_progress_fn fn; // may be NULL
    void *user_data;
} synth_progress;

static void report(const synth_progress *p, const char *component, const char *cls, const char *file,
                   size_t tensors) {
    if (p->fn) p->fn(p->user_data, component, cls, file, tensors);
}

static lcm_status copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    if (!in) return lcm_fail(LCM_ERR_IO, "%s: cannot open: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return lcm_fail(LCM_ERR_IO, "%s: cannot create: %s", to, strerror(errno));
    }
    char buf[65536];
    size_t n;
    lcm_status st = LCM_OK;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) st = lcm_fail(LCM_ERR_IO, "%s: write failed", to);
    if (ferror(in)) st = lcm_fail(LCM_ERR_IO, "%s: read failed", from);
    fclose(in);
    if (fclose(out) != 0 && st == LCM_OK) st = lcm_fail(LCM_ERR_IO, "%s: write failed", to);
    return st;
}

// Copies the regular files of `from` (configs, tokenizer files) into `to`.
static lcm_status copy_folder_files(const char *from, const char *to) {
    DIR *d = opendir(from);
    if (!d) return lcm_fail(LCM_ERR_IO, "%s: cannot list: %s", from, strerror(errno));
    struct dirent *e;
    lcm_status st = LCM_OK;
    while (st == LCM_OK && (e = readdir(d))) {
        char src[PATH_MAX], dst[PATH_MAX];
        snprintf(src, sizeof src, "%s/%s", from, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", to, e->d_name);
        struct stat sb;
        if (stat(src, &sb) == 0 && S_ISREG(sb.st_mode)) st = copy_file(src, dst);
    }
    closedir(d);
    return st;
}

static lcm_status make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return lcm_fail(LCM_ERR_IO, "%s: cannot create folder: %s", path, strerror(errno));
    return LCM_OK;
}

// Loads one component through the synthetic weights (which records its tensors), then frees it.
static lcm_status record_component(model_folder *folder, const char *component, const char *cls) {
    // Loaded as `lcm generate` would in fp32: the synthetic weights record what the loaders read.
    ops_backend backend = ops_backend_from_environment(LCM_PRECISION_FP32);
    if (!strcmp(cls, "CLIPTextModel")) {
        clip_text_model *m;
        LCM_TRY(clip_text_load(&backend, folder, component, &m));
        clip_text_free(m);
    } else if (!strcmp(cls, "UNet2DConditionModel")) {
        unet_model *m;
        LCM_TRY(unet_load(&backend, folder, component, &m));
        unet_free(m);
    } else if (!strcmp(cls, "AutoencoderKL")) {
        vae_model *m;
        LCM_TRY(vae_load(&backend, folder, component, &m));
        vae_free(m);
    } else if (!strcmp(cls, "AutoencoderTiny")) {
        taesd_model *m;
        LCM_TRY(taesd_load(&backend, folder, component, &m));
        taesd_free(m);
    } else {
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: cannot synthesize weights for a %s", component, cls);
    }
    return LCM_OK;
}

// A single-model folder (config.json at the root, like madebyollin/taesd): the config and the
// weights of the class it names.
static lcm_status synthesize_single(model_folder *folder, const weight_recorder *recorder,
                                    const char *config_dir, const char *out_dir, st_dtype dtype,
                                    const synth_progress *progress) {
    json_config config;
    LCM_TRY(model_folder_load_config(folder, ".", "config.json", &config));
    const char *cls = NULL;
    lcm_status st = json_config_string(&config, "_class_name", &cls);
    char from[PATH_MAX], path[PATH_MAX];
    snprintf(from, sizeof from, "%s/config.json", config_dir);
    snprintf(path, sizeof path, "%s/config.json", out_dir);
    if (st == LCM_OK) st = make_dir(out_dir);
    if (st == LCM_OK) st = copy_file(from, path);
    if (st == LCM_OK) {
        report(progress, NULL, cls, NULL, 0);
        st = record_component(folder, ".", cls);
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", out_dir);
    if (st == LCM_OK) st = weight_recorder_write(recorder, ".", path, dtype);
    if (st == LCM_OK) report(progress, NULL, cls, path, weight_recorder_count(recorder, "."));
    json_config_free(&config);
    return st;
}

lcm_status synth_model(const char *config_dir, const char *out_dir, const char *tokenizer_dir, st_dtype dtype,
                       lcm_synth_progress_fn progress_fn, void *user_data) {
    const synth_progress progress = {progress_fn, user_data};
    weight_recorder *recorder;
    LCM_TRY(weight_recorder_new(0x5eed, &recorder));
    model_folder folder;
    lcm_status st = model_folder_open(config_dir, NULL, &folder);
    if (st != LCM_OK) {
        weight_recorder_free(recorder);
        return st;
    }
    folder.synthetic = recorder;
    if (!folder.index.root) {
        st = synthesize_single(&folder, recorder, config_dir, out_dir, dtype, &progress);
        goto done;
    }
    if ((st = make_dir(out_dir)) != LCM_OK) goto done;
    char path[PATH_MAX], from[PATH_MAX];
    snprintf(from, sizeof from, "%s/model_index.json", config_dir);
    snprintf(path, sizeof path, "%s/model_index.json", out_dir);
    if ((st = copy_file(from, path)) != LCM_OK) goto done;

    static const char *const components[] = {"tokenizer", "scheduler", "text_encoder", "unet", "vae"};
    for (size_t i = 0; i < sizeof components / sizeof components[0]; i++) {
        const char *component = components[i], *cls;
        if (!model_folder_has_component(&folder, component, &cls)) continue;
        snprintf(from, sizeof from, "%s/%s", config_dir, component);
        snprintf(path, sizeof path, "%s/%s", out_dir, component);
        if ((st = make_dir(path)) != LCM_OK || (st = copy_folder_files(from, path)) != LCM_OK) goto done;
        if (!strcmp(component, "tokenizer")) {
            // Config folders often hold the tokenizer's JSON only; vocab and merges come from elsewhere.
            char vocab[PATH_MAX + 16];
            snprintf(vocab, sizeof vocab, "%s/vocab.json", path);
            if (access(vocab, F_OK) != 0) {
                if (!tokenizer_dir) {
                    st = lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                                  "%s/tokenizer has no vocab.json/merges.txt: pass --tokenizer DIR", config_dir);
                    goto done;
                }
                if ((st = copy_folder_files(tokenizer_dir, path)) != LCM_OK) goto done;
            }
            continue;
        }
        if (!strcmp(component, "scheduler")) continue;
        report(&progress, component, cls, NULL, 0);
        if ((st = record_component(&folder, component, cls)) != LCM_OK) goto done;
        char weights[PATH_MAX + 64];
        snprintf(weights, sizeof weights, "%s/%s.safetensors", path,
                 !strcmp(component, "text_encoder") ? "model" : "diffusion_pytorch_model");
        if ((st = weight_recorder_write(recorder, component, weights, dtype)) != LCM_OK) goto done;
        report(&progress, component, cls, weights, weight_recorder_count(recorder, component));
    }
done:
    model_folder_close(&folder);
    weight_recorder_free(recorder);
    return st;
}
