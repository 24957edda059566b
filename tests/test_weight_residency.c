// What keeps weights out of memory while they are not needed must not change a single number:
//  - weights used in place in their file's mapping instead of a loaded copy (weight_set_map_f32,
//    the text encoder, packed from the mapping, and its clip_text_release_pages) give exactly the
//    numbers of a copy, also after their pages were dropped and read back from the file;
//  - a VAE whose encoder is read back on first use (vae_load_encoder_on_demand) encodes exactly as
//    one loaded whole;
//  - a pipeline (which does both) makes the same image twice.
//
// Runs on every model folder under $LCM_FIXTURES with a text encoder golden
// (golden/text_encoder.safetensors), every folder with a vae/ component, and every
// LatentConsistencyModelPipeline folder with a golden/pipeline_*.safetensors case (the first one).
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/int8_quantize.h"
#include "core/error.h"
#include "golden.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "io/weights.h"
#include "models/vae.h"
#include "ops/ops.h"
#include "pipeline/pipeline.h"
#include "testutil.h"
#include "models/clip_text.h"

static bool file_exists(const char *path) { return access(path, F_OK) == 0; }

// A patch that changes nothing: attached, it makes every weight a loaded copy.
static lcm_status unchanged(void *user, const char *name, int ndim, const int64_t *shape,
                            float *values) {
    (void)user, (void)name, (void)ndim, (void)shape, (void)values;
    return LCM_OK;
}

static lcm_status attach_unchanged(void *user, const char *component, weight_set *ws) {
    (void)component;
    return weight_set_add_patch(ws, unchanged, user);
}

static bool same_bits(const char *what, const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] > b[i] ? (double)a[i] - b[i] : (double)b[i] - a[i];
        if (d > worst) worst = d;
    }
    bool same = memcmp(a, b, n * sizeof *a) == 0;
    fprintf(stderr, "  %s: max abs diff %g (%s)\n", what, worst, same ? "bit-identical" : "DIFFERENT");
    return same;
}

// Every F32 tensor of the text encoder's file maps in place to exactly its loaded values, before
// and after the pages are dropped; other shapes and a set with a patch map to NULL.
static void test_map_f32(const char *model_dir) {
    model_folder folder;
    CHECK_OK(model_folder_open(model_dir, NULL, &folder));
    weight_set *ws = NULL;
    CHECK_OK(model_folder_open_weights(&folder, "text_encoder", "model", &ws));
    if (!ws) {
        model_folder_close(&folder);
        return;
    }
    int mapped = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < weight_set_count(ws); i++) {
            const st_tensor *t = weight_set_at(ws, i);
            const float *in_place = weight_set_map_f32(ws, t->name, t->ndim, t->shape);
            if (t->dtype != ST_F32 || (uintptr_t)t->data % sizeof(float)) {
                CHECK(!in_place, "%s: '%s' (%s) mapped in place", model_dir, t->name,
                      st_dtype_name(t->dtype));
                continue;
            }
            CHECK(in_place != NULL, "%s: F32 tensor '%s' not mapped", model_dir, t->name);
            float *copy = NULL;
            CHECK_OK(weight_set_load_f32(ws, t->name, t->ndim, t->shape, &copy));
            if (in_place && copy)
                CHECK(!memcmp(in_place, copy, sizeof(float) * (size_t)t->numel),
                      "%s: '%s' in place differs from its copy (pass %d)", model_dir, t->name, pass);
            free(copy);
            int64_t other[ST_MAX_DIMS];
            memcpy(other, t->shape, sizeof other);
            other[0] += 1;
            CHECK(!weight_set_map_f32(ws, t->name, t->ndim, other), "'%s' mapped with a wrong shape",
                  t->name);
            CHECK(!weight_set_map_f32(ws, t->name, -1, t->shape), "'%s' mapped with any shape",
                  t->name);
            mapped += pass == 0;
        }
        weight_set_release_pages(ws); // the second pass reads them back from the file
    }
    fprintf(stderr, "  %d tensors mapped in place\n", mapped);
    CHECK(mapped > 0, "%s: the text encoder has no float32 tensor to map", model_dir);
    CHECK(!weight_set_map_f32(ws, "no such tensor", 1, (int64_t[]){1}), "a missing tensor mapped");
    CHECK_OK(weight_set_add_patch(ws, unchanged, NULL));
    const st_tensor *first = weight_set_at(ws, 0);
    CHECK(!weight_set_map_f32(ws, first->name, first->ndim, first->shape),
          "mapped in place although a patch is attached");
    weight_set_close(ws);
    model_folder_close(&folder);
}

static int32_t *golden_ids(const st_file *golden, int *batch, int *n_tokens) {
    const st_tensor *t = st_find(golden, "input_ids");
    CHECK(t && t->ndim == 2, "%s: input_ids missing or not 2-D", st_path(golden));
    if (!t || t->ndim != 2) return NULL;
    int64_t *ids64 = malloc(sizeof *ids64 * (size_t)t->numel);
    int32_t *ids = malloc(sizeof *ids * (size_t)t->numel);
    CHECK_OK(st_read_i64(golden, t, ids64));
    for (int64_t i = 0; i < t->numel; i++) ids[i] = (int32_t)ids64[i];
    free(ids64);
    *batch = (int)t->shape[0];
    *n_tokens = (int)t->shape[1];
    return ids;
}

// The text encoder with its weights in place equals the one with copies, bit for bit, before and
// after clip_text_release_pages, and matches the golden.
static void test_text_encoder(const char *model_dir, const char *golden_path) {
    model_folder folder;
    CHECK_OK(model_folder_open(model_dir, NULL, &folder));
    clip_text_model *in_place = NULL, *copies = NULL;
    CHECK_OK(clip_text_load(test_backend_for(LCM_PRECISION_FP32), &folder, "text_encoder",
                            &in_place));
    folder.weights_hook = attach_unchanged;
    CHECK_OK(clip_text_load(test_backend_for(LCM_PRECISION_FP32), &folder, "text_encoder",
                            &copies));
    st_file *golden = NULL;
    CHECK_OK(st_open(golden_path, &golden));
    int batch = 0, n_tokens = 0;
    int32_t *ids = golden ? golden_ids(golden, &batch, &n_tokens) : NULL;
    if (in_place && copies && ids) {
        tensor *want = NULL;
        CHECK_OK(clip_text_forward(copies, ids, batch, n_tokens, &want, NULL));
        int64_t numel = 0;
        float *reference = golden_f32(golden, "last_hidden_state", &numel);
        if (want && reference) {
            CHECK(numel == tensor_numel(want), "golden last_hidden_state has %lld values, got %lld",
                  (long long)numel, (long long)tensor_numel(want));
            if (numel == tensor_numel(want))
                CHECK(test_close("last_hidden_state (copies) vs golden", want->data, reference,
                                 (size_t)numel, 1e-4, 1e-4),
                      "%s: text encoder differs from the golden", model_dir);
        }
        free(reference);
        for (int round = 0; want && round < 3; round++) {
            tensor *got = NULL;
            CHECK_OK(clip_text_forward(in_place, ids, batch, n_tokens, &got, NULL));
            char what[64];
            snprintf(what, sizeof what, "in place vs copies, prompt %d", round + 1);
            if (got)
                CHECK(same_bits(what, got->data, want->data, (size_t)tensor_numel(want)),
                      "%s: text encoder in place differs from copies (prompt %d)", model_dir,
                      round + 1);
            tensor_free(got);
            clip_text_release_pages(in_place); // as the pipeline does after each prompt
        }
        tensor_free(want);
    }
    free(ids);
    st_close(golden);
    clip_text_free(in_place);
    clip_text_free(copies);
    model_folder_close(&folder);
}

// ---- a text encoder stored in 8 bits ---------------------------------------------------------

// The tensors of one safetensors file being written from a weight set: each entry's values come
// from the set's tensor `source[i]`, as float32 (F32 entries), as s8 integers (I8 entries, with
// is_scale false) or as the per-output-channel scales of those (is_scale).
typedef struct rewrite {
    const weight_set *ws;
    const char **source;
    bool *is_scale;
    st_write_entry *entries;
} rewrite;

static lcm_status fill_rewrite(void *user, size_t index, float *out, int64_t numel) {
    const rewrite *r = user;
    float *values = NULL;
    LCM_TRY(weight_set_load_f32(r->ws, r->source[index], -1, NULL, &values));
    const st_write_entry *e = &r->entries[index];
    if (e->dtype == ST_I8 || r->is_scale[index]) { // quantized as lcm quantize --compress-weights
        int64_t rows = e->dtype == ST_I8 ? e->shape[0] : numel, total = 0;
        const st_tensor *t = weight_set_find(r->ws, r->source[index], NULL);
        total = t ? t->numel : 0;
        int8_t *q = malloc((size_t)total);
        float *scales = malloc(sizeof *scales * (size_t)rows);
        if (q && scales && total % rows == 0) {
            quantize_weights_s8(values, rows, total / rows, q, scales);
            for (int64_t i = 0; i < numel; i++) out[i] = e->dtype == ST_I8 ? (float)q[i] : scales[i];
        }
        bool ok = q && scales && total % rows == 0;
        free(q);
        free(scales);
        free(values);
        return ok ? LCM_OK : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "rewrite %s", r->source[index]);
    }
    memcpy(out, values, sizeof *out * (size_t)numel);
    free(values);
    return LCM_OK;
}

// Writes dir/text_encoder/model.safetensors from `ws`: its 2-D ".weight" tensors in 8 bits with
// their NAME_scale beside them (quantize), or every tensor as float32 (then "_scale" tensors are
// left out: their values are already applied by the reader).
static lcm_status write_text_encoder(const weight_set *ws, const char *dir, bool quantize) {
    size_t n = weight_set_count(ws), count = 0;
    rewrite r = {.ws = ws, .source = calloc(2 * n, sizeof(char *)),
                 .is_scale = calloc(2 * n, sizeof(bool)), .entries = calloc(2 * n, sizeof(st_write_entry))};
    char **names = calloc(2 * n, sizeof(char *));
    lcm_status st = r.source && r.is_scale && r.entries && names ? LCM_OK : LCM_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; st == LCM_OK && i < n; i++) {
        const st_tensor *t = weight_set_at(ws, i);
        size_t len = strlen(t->name);
        if (len > 6 && !strcmp(t->name + len - 6, "_scale")) continue;
        bool to_8bit = quantize && t->ndim == 2 && len > 7 && !strcmp(t->name + len - 7, ".weight");
        r.entries[count] = (st_write_entry){.name = t->name, .dtype = to_8bit ? ST_I8 : ST_F32, .ndim = t->ndim};
        memcpy(r.entries[count].shape, t->shape, sizeof t->shape[0] * (size_t)t->ndim);
        r.source[count++] = t->name;
        if (!to_8bit) continue;
        if (!(names[count] = malloc(len + 7))) {
            st = LCM_ERR_OUT_OF_MEMORY;
            break;
        }
        snprintf(names[count], len + 7, "%s_scale", t->name);
        r.entries[count] = (st_write_entry){.name = names[count], .dtype = ST_F32, .ndim = 1, .shape = {t->shape[0]}};
        r.is_scale[count] = true;
        r.source[count++] = t->name;
    }
    char path[4200];
    test_path(path, sizeof path, "%s/text_encoder/model.safetensors", dir);
    if (st == LCM_OK) st = st_write(path, r.entries, count, fill_rewrite, &r, "pt");
    for (size_t i = 0; names && i < 2 * n; i++) free(names[i]);
    free(names);
    free(r.source);
    free(r.is_scale);
    free(r.entries);
    return st;
}

static void link_file(const char *from, const char *to) {
    CHECK(symlink(from, to) == 0, "cannot link %s to %s", to, from);
}

// A folder DIR/{model_index.json, text_encoder/config.json} linked to model_dir's.
static void make_text_encoder_folder(const char *model_dir, const char *dir) {
    char from[4200], to[4200];
    test_path(to, sizeof to, "%s/text_encoder", dir);
    CHECK(mkdir(dir, 0700) == 0 && mkdir(to, 0700) == 0, "cannot create %s", to);
    test_path(from, sizeof from, "%s/model_index.json", model_dir);
    test_path(to, sizeof to, "%s/model_index.json", dir);
    link_file(from, to);
    test_path(from, sizeof from, "%s/text_encoder/config.json", model_dir);
    test_path(to, sizeof to, "%s/text_encoder/config.json", dir);
    link_file(from, to);
}

// A text encoder stored in 8 bits (as `lcm quantize --compress-weights` writes it) keeps no
// float32 copies (clip_text_loads_weights_on_use) and computes, prompt after prompt and after its
// pages were dropped, exactly what the same weights dequantized into a float32 file compute.
static void test_text_encoder_8bit(const char *model_dir, const char *golden_path) {
    char tmp[] = "/tmp/lcm-residency-XXXXXX", q8_dir[4200], f32_dir[4200];
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    test_path(q8_dir, sizeof q8_dir, "%s/q8", tmp);
    test_path(f32_dir, sizeof f32_dir, "%s/f32", tmp);
    make_text_encoder_folder(model_dir, q8_dir);
    make_text_encoder_folder(model_dir, f32_dir);
    model_folder source, q8, f32;
    weight_set *ws = NULL;
    CHECK_OK(model_folder_open(model_dir, NULL, &source));
    CHECK_OK(model_folder_open_weights(&source, "text_encoder", "model", &ws));
    if (ws) CHECK_OK(write_text_encoder(ws, q8_dir, true));
    weight_set_close(ws);
    model_folder_close(&source);
    ws = NULL;
    CHECK_OK(model_folder_open(q8_dir, NULL, &q8));
    CHECK_OK(model_folder_open_weights(&q8, "text_encoder", "model", &ws));
    if (ws) CHECK_OK(write_text_encoder(ws, f32_dir, false)); // the dequantized values
    weight_set_close(ws);
    CHECK_OK(model_folder_open(f32_dir, NULL, &f32));

    clip_text_model *on_use = NULL, *in_place = NULL;
    CHECK_OK(clip_text_load(test_backend_for(LCM_PRECISION_FP32), &q8, "text_encoder", &on_use));
    CHECK_OK(clip_text_load(test_backend_for(LCM_PRECISION_FP32), &f32, "text_encoder", &in_place));
    st_file *golden = NULL;
    CHECK_OK(st_open(golden_path, &golden));
    int batch = 0, n_tokens = 0;
    int32_t *ids = golden ? golden_ids(golden, &batch, &n_tokens) : NULL;
    if (on_use && in_place && ids) {
        CHECK(clip_text_loads_weights_on_use(on_use), "%s: the 8-bit text encoder keeps float32 copies", q8_dir);
        CHECK(!clip_text_loads_weights_on_use(in_place), "%s: the float32 text encoder loads per use", f32_dir);
        CHECK(clip_text_param_count(on_use) == clip_text_param_count(in_place), "parameter counts %lld and %lld",
              (long long)clip_text_param_count(on_use), (long long)clip_text_param_count(in_place));
        tensor *want = NULL;
        CHECK_OK(clip_text_forward(in_place, ids, batch, n_tokens, &want, NULL));
        for (int round = 0; want && round < 2; round++) {
            tensor *got = NULL;
            CHECK_OK(clip_text_forward(on_use, ids, batch, n_tokens, &got, NULL));
            char what[80];
            snprintf(what, sizeof what, "8-bit on use vs its float32 values in place, prompt %d", round + 1);
            if (got)
                CHECK(same_bits(what, got->data, want->data, (size_t)tensor_numel(want)),
                      "%s: the 8-bit text encoder differs from its float32 values (prompt %d)", model_dir,
                      round + 1);
            tensor_free(got);
            clip_text_release_pages(on_use);
        }
        tensor_free(want);
    }
    free(ids);
    st_close(golden);
    clip_text_free(on_use);
    clip_text_free(in_place);
    model_folder_close(&q8);
    model_folder_close(&f32);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    CHECK(system(cmd) == 0, "cannot remove %s", tmp);
}

// vae_load_encoder_on_demand: the same parameter count and, twice, the same encoding as vae_load.
static void test_vae_encoder_on_demand(const char *model_dir) {
    model_folder folder;
    CHECK_OK(model_folder_open(model_dir, NULL, &folder));
    vae_model *whole = NULL, *on_demand = NULL;
    CHECK_OK(vae_load(test_backend_for(LCM_PRECISION_FP32), &folder, "vae", &whole));
    CHECK_OK(vae_load_encoder_on_demand(test_backend_for(LCM_PRECISION_FP32), &folder, "vae",
                                        &on_demand));
    if (whole && on_demand) {
        CHECK(vae_param_count(whole) == vae_param_count(on_demand), "parameter counts %lld and %lld",
              (long long)vae_param_count(whole), (long long)vae_param_count(on_demand));
        const vae_config *cfg = vae_get_config(whole);
        int side = 2 * cfg->downscale_factor;
        tensor *image = tensor_new4(1, cfg->in_channels, side, side);
        for (int64_t i = 0; image && i < tensor_numel(image); i++)
            image->data[i] = (float)((i * 53) % 97) / 48.0f - 1.0f;
        tensor *want_mean = NULL, *want_logvar = NULL;
        CHECK_OK(vae_encode(whole, image, &want_mean, &want_logvar));
        for (int round = 0; want_mean && round < 2; round++) {
            tensor *mean = NULL, *logvar = NULL;
            CHECK_OK(vae_encode(on_demand, image, &mean, &logvar));
            if (mean && logvar) {
                tensor *a = tensor_to_nchw(mean), *b = tensor_to_nchw(want_mean);
                tensor *c = tensor_to_nchw(logvar), *d = tensor_to_nchw(want_logvar);
                CHECK(same_bits(round ? "VAE mean, encoder on demand (second encode)"
                                      : "VAE mean, encoder on demand (first encode)",
                                a->data, b->data, (size_t)tensor_numel(b)) &&
                          same_bits("VAE logvar, encoder on demand", c->data, d->data,
                                    (size_t)tensor_numel(d)),
                      "%s: the on-demand encoder differs from the whole VAE", model_dir);
                tensor_free(a);
                tensor_free(b);
                tensor_free(c);
                tensor_free(d);
            }
            tensor_free(mean);
            tensor_free(logvar);
        }
        tensor_free(want_mean);
        tensor_free(want_logvar);
        tensor_free(image);
    }
    vae_free(whole);
    vae_free(on_demand);
    model_folder_close(&folder);
}

// One pipeline, the same request twice: the text encoder's pages are dropped after the first
// prompt and read back for the second; the images must be identical.
static int test_two_generations(const char *model_dir) {
    char golden_dir[4200];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", model_dir);
    char **names;
    int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
    if (n == 0) {
        test_free_list(names, n);
        return 0;
    }
    char path[4400];
    test_path(path, sizeof path, "%s/%s", golden_dir, names[0]);
    test_free_list(names, n);
    st_file *golden = NULL;
    CHECK_OK(st_open(path, &golden));
    cJSON *info = golden ? golden_info(golden) : NULL;
    lcm_pipeline *p = NULL;
    CHECK_OK(lcm_pipeline_open(model_dir, NULL, &p));
    if (info && p) {
        fprintf(stderr, "%s: the request of %s twice\n", model_dir, path);
        lcm_request r;
        golden_request(info, &r);
        lcm_result *first = NULL, *second = NULL;
        CHECK_OK(lcm_generate(p, &r, &first));
        CHECK_OK(lcm_generate(p, &r, &second));
        if (first && second) {
            CHECK(first->count == second->count && first->count > 0, "image counts %d and %d",
                  first->count, second->count);
            for (int i = 0; i < first->count && i < second->count; i++) {
                const lcm_image *a = &first->images[i], *b = &second->images[i];
                bool same = a->width == b->width && a->height == b->height &&
                            !memcmp(a->rgb, b->rgb, (size_t)a->width * a->height * 3);
                fprintf(stderr, "  image %d: %dx%d, %s\n", i, a->width, a->height,
                        same ? "identical" : "DIFFERENT");
                CHECK(same, "%s: the second generation's image %d differs from the first",
                      model_dir, i);
            }
        }
        lcm_result_free(first);
        lcm_result_free(second);
    }
    lcm_pipeline_close(p);
    cJSON_Delete(info);
    st_close(golden);
    return 1;
}

int main(void) {
    const char *root = test_fixtures();
    char **names;
    int count = test_list_files(root, "", "", &names);
    int encoder_cases = 0, vae_cases = 0, pipeline_cases = 0;
    for (int i = 0; i < count; i++) {
        if (names[i][0] == '.') continue;
        char model_dir[4096], golden[4200], index[4200];
        test_path(model_dir, sizeof model_dir, "%s/%s", root, names[i]);
        test_path(golden, sizeof golden, "%s/golden/text_encoder.safetensors", model_dir);
        if (file_exists(golden)) {
            fprintf(stderr, "%s\n", model_dir);
            test_map_f32(model_dir);
            test_text_encoder(model_dir, golden);
            test_text_encoder_8bit(model_dir, golden);
            encoder_cases++;
        }
        test_path(golden, sizeof golden, "%s/vae/config.json", model_dir);
        if (file_exists(golden)) {
            fprintf(stderr, "%s/vae\n", model_dir);
            test_vae_encoder_on_demand(model_dir);
            vae_cases++;
        }
        test_path(index, sizeof index, "%s/model_index.json", model_dir);
        if (!file_exists(index)) continue;
        model_folder folder;
        if (model_folder_open(model_dir, NULL, &folder) != LCM_OK) continue;
        const char *cls = model_folder_pipeline_class(&folder);
        bool lcm = cls && !strcmp(cls, "LatentConsistencyModelPipeline");
        model_folder_close(&folder);
        if (lcm) pipeline_cases += test_two_generations(model_dir);
    }
    test_free_list(names, count);
    CHECK(encoder_cases > 0, "no model folder under %s has golden/text_encoder.safetensors", root);
    CHECK(vae_cases > 0, "no model folder under %s has a vae/ component", root);
    CHECK(pipeline_cases > 0, "no LatentConsistencyModelPipeline folder under %s has a pipeline golden",
          root);
    return test_finish();
}
