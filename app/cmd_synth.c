// lcm synth: a full-size model folder with random weights, from config files alone, for
// benchmarks (real weights cannot be downloaded everywhere). The model loaders themselves say which
// tensors exist and their shapes: each component is loaded from synthetic weights that record every
// request, and the recorded tensors are then written in the real diffusers layout.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/args.h"
#include "app/commands.h"
#include "core/error.h"
#include "io/model_folder.h"
#include "models/taesd.h"
#include "models/unet.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "models/clip_text.h"

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
                                    const char *config_dir, const char *out_dir, st_dtype dtype) {
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
        fprintf(stderr, "synthesizing %s...\n", cls);
        st = record_component(folder, ".", cls);
    }
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", out_dir);
    if (st == LCM_OK) st = weight_recorder_write(recorder, ".", path, dtype);
    if (st == LCM_OK)
        fprintf(stderr, "wrote %s (%zu tensors)\n", path, weight_recorder_count(recorder, "."));
    json_config_free(&config);
    return st;
}

static lcm_status synthesize(const char *config_dir, const char *out_dir, const char *tokenizer_dir,
                             st_dtype dtype) {
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
        st = synthesize_single(&folder, recorder, config_dir, out_dir, dtype);
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
        fprintf(stderr, "synthesizing %s (%s)...\n", component, cls);
        if ((st = record_component(&folder, component, cls)) != LCM_OK) goto done;
        char weights[PATH_MAX + 64];
        snprintf(weights, sizeof weights, "%s/%s.safetensors", path,
                 !strcmp(component, "text_encoder") ? "model" : "diffusion_pytorch_model");
        if ((st = weight_recorder_write(recorder, component, weights, dtype)) != LCM_OK) goto done;
        fprintf(stderr, "wrote %s (%zu tensors)\n", weights, weight_recorder_count(recorder, component));
    }
done:
    model_folder_close(&folder);
    weight_recorder_free(recorder);
    return st;
}

int cmd_synth(int argc, char **argv) {
    const char *config = NULL, *out = NULL, *dtype_name = "fp32", *tokenizer = NULL;
    const arg_spec specs[] = {
        {"config", ARG_STRING, &config, "folder of config files in the diffusers layout (model_index.json, */config.json), or a single-model folder (config.json, e.g. a TAESD)", false},
        {"out", ARG_STRING, &out, "folder to write the model to", false},
        {"dtype", ARG_STRING, &dtype_name, "weight dtype: fp32 (default), fp16 or bf16", false},
        {"tokenizer", ARG_STRING, &tokenizer, "folder with vocab.json + merges.txt when the config folder lacks them", false},
    };
    const char *positional[1];
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 0, &npositional,
                        "lcm synth --config DIR --out DIR [--dtype fp16] [--tokenizer DIR]");
    if (rc) return rc == 1 ? 0 : 2;
    if (!config || !out) {
        fprintf(stderr, "lcm synth: --config and --out are required\n");
        return 2;
    }
    st_dtype dtype;
    if (!strcmp(dtype_name, "fp32")) dtype = ST_F32;
    else if (!strcmp(dtype_name, "fp16")) dtype = ST_F16;
    else if (!strcmp(dtype_name, "bf16")) dtype = ST_BF16;
    else {
        fprintf(stderr, "lcm synth: --dtype '%s': expected fp32, fp16 or bf16\n", dtype_name);
        return 2;
    }
    lcm_status st = synthesize(config, out, tokenizer, dtype);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm synth: %s\n", lcm_last_error());
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    return 0;
}
