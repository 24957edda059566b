// AutoencoderKL golden tests: decode and encode against diffusers, intermediate activations, the
// image post/pre-processing, the decode stage of every pipeline golden, and config/weight errors.
//
// Cases are discovered: every fixture folder F with an AutoencoderKL in F/vae is used with
//   F/golden/vae.safetensors          decode latents_scaled, encode enc.image_preprocessed
//   F/golden/vae_tiled.safetensors    the caseK.image_untiled references (plain decode, odd sizes)
//   F/golden/pipeline_*, img2img_*    decode of the last denoised latents (+ encode for img2img)
#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "golden.h"
#include "io/json_config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "models/vae.h"
#include "testutil.h"

// ---- helpers -----------------------------------------------------------------------------------

// A golden float tensor as a `tensor` (NULL with a failed check when absent or not 1..4-D).
static tensor *golden_tensor(const st_file *g, const char *name) {
    const st_tensor *t = st_find(g, name);
    CHECK(t != NULL, "%s: golden tensor '%s' is missing", st_path(g), name);
    if (!t) return NULL;
    CHECK(t->ndim >= 1 && t->ndim <= TENSOR_MAX_DIMS, "%s: '%s' has %d dims", st_path(g), name,
          t->ndim);
    if (t->ndim < 1 || t->ndim > TENSOR_MAX_DIMS) return NULL;
    tensor *x = tensor_new(t->ndim, t->shape);
    if (!x) return NULL;
    CHECK_OK(st_read_f32(g, t, x->data));
    return x;
}

static bool same_shape(const tensor *a, const st_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

// Compares got with the golden `name`: |diff| <= rel_to_max * max|ref| (+ abs_tol); prints the max
// difference reached.
static void compare_plain(const char *label, const tensor *got, const st_file *g,
                          const char *name, double rel_to_max, double abs_tol);

// In plain NCHW order first: the fast kernels may return channels-last.
static void compare(const char *label, const tensor *got, const st_file *g, const char *name,
                    double rel_to_max, double abs_tol) {
    tensor *plain = tensor_to_nchw(got);
    compare_plain(label, plain, g, name, rel_to_max, abs_tol);
    tensor_free(plain);
}

static void compare_plain(const char *label, const tensor *got, const st_file *g,
                          const char *name, double rel_to_max, double abs_tol) {
    tensor *want = golden_tensor(g, name);
    if (!got || !want) {
        CHECK(got != NULL, "%s %s: nothing computed", label, name);
        tensor_free(want);
        return;
    }
    bool shape_ok = same_shape(got, st_find(g, name));
    CHECK(shape_ok, "%s %s: shape mismatch", label, name);
    if (shape_ok) {
        size_t n = (size_t)tensor_numel(want);
        double scale = test_max_abs(want->data, n), max_diff = 0;
        for (size_t i = 0; i < n; i++)
            max_diff = fmax(max_diff, fabs((double)got->data[i] - want->data[i]));
        double tol = rel_to_max * scale + abs_tol;
        fprintf(stderr, "  %-40s %-36s max|diff| %.3g (tol %.3g, max|ref| %.3g)\n", label, name,
                max_diff, tol, scale);
        char what[256];
        snprintf(what, sizeof what, "%s %s", label, name);
        test_close(what, got->data, want->data, n, tol, 0.0);
    }
    tensor_free(want);
}

// uint8 images: every value within 1 of the reference, at most 0.5% of them different.
static void compare_uint8(const char *label, const uint8_t *got, const uint8_t *want, size_t n) {
    size_t differ = 0;
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)want[i]);
        if (d) differ++;
        if (d > worst) worst = d;
    }
    fprintf(stderr, "  %-40s uint8: %zu of %zu values differ, max %d\n", label, differ, n, worst);
    CHECK(worst <= 1, "%s: uint8 values differ by up to %d", label, worst);
    CHECK(differ * 200 <= n, "%s: %zu of %zu uint8 values differ (> 0.5%%)", label, differ, n);
}

// The golden U8 tensor `name` with `numel` values (NULL with a failed check otherwise). Borrowed.
static const uint8_t *golden_u8(const st_file *g, const char *name, int64_t numel) {
    const st_tensor *t = st_find(g, name);
    CHECK(t && t->dtype == ST_U8 && t->numel == numel, "%s: '%s' missing or not %lld uint8 values",
          st_path(g), name, (long long)numel);
    return t && t->dtype == ST_U8 && t->numel == numel ? t->data : NULL;
}

// Postprocessing of `image` against the golden NHWC float and uint8 images.
static void check_postprocess(const char *label, const tensor *image, const st_file *g,
                              const char *float_name, const char *uint8_name, double rel_to_max) {
    if (!image) return;
    int64_t n = image->shape[0], c = image->shape[1], h = image->shape[2], w = image->shape[3];
    tensor *nhwc = tensor_new4(n, h, w, c);
    if (!nhwc) return;
    vae_image_to_float_nhwc(image, nhwc->data);
    compare(label, nhwc, g, float_name, rel_to_max, 0.0);
    tensor_free(nhwc);

    const uint8_t *want = golden_u8(g, uint8_name, n * h * w * c);
    uint8_t *rgb = malloc((size_t)(h * w * 3));
    for (int64_t b = 0; want && rgb && b < n; b++) {
        CHECK_OK(vae_image_to_rgb8(image, (int)b, rgb));
        char what[256];
        snprintf(what, sizeof what, "%s %s[%lld]", label, uint8_name, (long long)b);
        compare_uint8(what, rgb, want + b * h * w * 3, (size_t)(h * w * 3));
    }
    free(rgb);
}

// The postprocessing must be exactly the reference's arithmetic: applied to the reference's own
// decoded image it reproduces the reference float and uint8 images bit for bit.
static void check_postprocess_exact(const char *label, const st_file *g, const char *image_name,
                                    const char *float_name, const char *uint8_name) {
    tensor *image = golden_tensor(g, image_name);
    if (!image || image->ndim != 4) {
        tensor_free(image);
        return;
    }
    int64_t n = image->shape[0], hw = image->shape[2] * image->shape[3];
    tensor *want = golden_tensor(g, float_name);
    float *nhwc = malloc(sizeof(float) * (size_t)tensor_numel(image));
    uint8_t *rgb = malloc((size_t)(hw * 3));
    const uint8_t *want_u8 = golden_u8(g, uint8_name, tensor_numel(image));
    if (want && nhwc && tensor_numel(want) == tensor_numel(image)) {
        vae_image_to_float_nhwc(image, nhwc);
        int64_t mismatches = 0;
        for (int64_t i = 0; i < tensor_numel(want); i++) mismatches += nhwc[i] != want->data[i];
        fprintf(stderr, "  %-40s %-36s %lld values differ (exact check)\n", label, float_name,
                (long long)mismatches);
        CHECK(mismatches == 0, "%s: %lld postprocessed floats differ from the reference's", label,
              (long long)mismatches);
    }
    for (int64_t b = 0; rgb && want_u8 && b < n; b++) {
        CHECK_OK(vae_image_to_rgb8(image, (int)b, rgb));
        int64_t mismatches = 0;
        for (int64_t i = 0; i < hw * 3; i++) mismatches += rgb[i] != want_u8[b * hw * 3 + i];
        fprintf(stderr, "  %-40s %-36s %lld values differ (exact check)\n", label, uint8_name,
                (long long)mismatches);
        CHECK(mismatches == 0, "%s: %lld uint8 values differ from round(reference float * 255)",
              label, (long long)mismatches);
    }
    free(rgb);
    free(nhwc);
    tensor_free(want);
    tensor_free(image);
}

// The preprocessing must reproduce the reference exactly: uint8 [H, W, 3] -> [1, 3, H, W].
static void check_preprocess(const char *label, const st_file *g, const char *uint8_name,
                             const char *image_name) {
    const st_tensor *u8 = st_find(g, uint8_name);
    CHECK(u8 && u8->dtype == ST_U8 && u8->ndim == 3 && u8->shape[2] == 3,
          "%s: '%s' missing or not [H, W, 3] uint8", label, uint8_name);
    if (!u8 || u8->dtype != ST_U8 || u8->ndim != 3 || u8->shape[2] != 3) return;
    tensor *got = vae_rgb8_to_image(u8->data, (int)u8->shape[1], (int)u8->shape[0]);
    tensor *want = golden_tensor(g, image_name);
    CHECK(got && want && tensor_numel(got) == tensor_numel(want), "%s: preprocess sizes", label);
    if (got && want && tensor_numel(got) == tensor_numel(want)) {
        int64_t mismatches = 0;
        for (int64_t i = 0; i < tensor_numel(want); i++)
            mismatches += got->data[i] != want->data[i];
        fprintf(stderr, "  %-40s %-36s %lld of %lld values differ\n", label, image_name,
                (long long)mismatches, (long long)tensor_numel(want));
        CHECK(mismatches == 0, "%s: vae_rgb8_to_image(%s) differs from %s in %lld values", label,
              uint8_name, image_name, (long long)mismatches);
    }
    tensor_free(got);
    tensor_free(want);
}

// ---- intermediate activations ------------------------------------------------------------------

// Every golden `prefix`NAME tensor must have been produced as tap NAME, and match.
static void compare_taps(const char *label, const golden_taps *t, const st_file *g, const char *prefix) {
    int compared = 0;
    for (size_t i = 0; i < st_count(g); i++) {
        const char *name = st_at(g, i)->name;
        if (strncmp(name, prefix, strlen(prefix)) != 0) continue;
        const tensor *got = golden_taps_find(t, name + strlen(prefix));
        CHECK(got != NULL, "%s: no intermediate '%s' was produced for golden '%s'", label,
              name + strlen(prefix), name);
        if (got) compare(label, got, g, name, 1e-4, 0.0);
        compared++;
    }
    fprintf(stderr, "  %-40s %d %s* intermediates compared\n", label, compared, prefix);
}

// ---- golden cases ------------------------------------------------------------------------------

static void test_vae_golden(const vae_model *vae, const char *path) {
    st_file *g = NULL;
    CHECK_OK(st_open(path, &g));
    if (!g) return;
    fprintf(stderr, "%s\n", path);

    // decode
    tensor *latents = golden_tensor(g, "latents_scaled");
    golden_taps t = {0};
    tensor *image = NULL;
    CHECK_OK(vae_decode_tapped(vae, latents, golden_taps_record, &t, &image));
    compare("decode", image, g, "image", 1e-4, 0.0);
    compare_taps("decode", &t, g, "debug.dec.");
    check_postprocess("decode", image, g, "image_postprocessed", "image_uint8", 1e-4);
    check_postprocess_exact("postprocess(reference image)", g, "image", "image_postprocessed",
                            "image_uint8");
    golden_taps_free(&t);

    // A batch of two decodes each item as on its own (GroupNorm and attention stay per image).
    if (latents && image) {
        int64_t n = tensor_numel(latents);
        tensor *batch = tensor_new4(2, latents->shape[1], latents->shape[2], latents->shape[3]);
        tensor *half = tensor_copy(latents), *half_image = NULL, *batch_image = NULL;
        for (int64_t i = 0; batch && half && i < n; i++) {
            half->data[i] = 0.5f * latents->data[i];
            batch->data[i] = latents->data[i];
            batch->data[n + i] = half->data[i];
        }
        CHECK_OK(vae_decode(vae, half, &half_image));
        CHECK_OK(vae_decode(vae, batch, &batch_image));
        if (half_image && batch_image) {
            int64_t m = tensor_numel(image);
            double scale = test_max_abs(image->data, (size_t)m);
            test_close("batch item 0", batch_image->data, image->data, (size_t)m, 1e-5 * scale, 0);
            test_close("batch item 1", batch_image->data + m, half_image->data, (size_t)m,
                       1e-5 * scale, 0);
            uint8_t *rgb0 = malloc((size_t)m), *rgb1 = malloc((size_t)m);
            CHECK_OK(vae_image_to_rgb8(half_image, 0, rgb0));
            CHECK_OK(vae_image_to_rgb8(batch_image, 1, rgb1));
            compare_uint8("batch item 1 rgb8", rgb1, rgb0, (size_t)m);
            free(rgb0);
            free(rgb1);
        }
        tensor_free(batch_image);
        tensor_free(half_image);
        tensor_free(half);
        tensor_free(batch);
    }
    tensor_free(image);
    tensor_free(latents);

    // encode
    check_preprocess("preprocess", g, "enc.image_uint8", "enc.image_preprocessed");
    tensor *pixels = golden_tensor(g, "enc.image_preprocessed");
    tensor *mean = NULL, *logvar = NULL;
    CHECK_OK(vae_encode_tapped(vae, pixels, golden_taps_record, &t, &mean, &logvar));
    compare("encode", mean, g, "enc.mean", 1e-4, 0.0);
    compare("encode", logvar, g, "enc.logvar", 1e-4, 0.0);
    tensor *std = vae_logvar_to_std(logvar);
    compare("encode", std, g, "enc.std", 1e-4, 0.0);
    compare("encode", golden_taps_find(&t, "quant_conv"), g, "enc.parameters", 1e-4, 0.0);
    compare_taps("encode", &t, g, "debug.enc.");
    golden_taps_free(&t);
    tensor_free(std);
    tensor_free(mean);
    tensor_free(logvar);
    tensor_free(pixels);
    st_close(g);
}

// vae_tiled.safetensors also stores every case decoded WITHOUT tiling: a plain decode at larger and
// odd latent sizes.
static int test_untiled_references(const vae_model *vae, const char *path) {
    st_file *g = NULL;
    CHECK_OK(st_open(path, &g));
    if (!g) return 0;
    fprintf(stderr, "%s\n", path);
    int cases = 0;
    for (int k = 0;; k++) {
        char latents_name[64], image_name[64], label[64];
        snprintf(latents_name, sizeof latents_name, "case%d.latents_scaled", k);
        snprintf(image_name, sizeof image_name, "case%d.image_untiled", k);
        if (!st_find(g, latents_name) || !st_find(g, image_name)) break;
        snprintf(label, sizeof label, "untiled decode case%d", k);
        tensor *latents = golden_tensor(g, latents_name), *image = NULL;
        CHECK_OK(vae_decode(vae, latents, &image));
        compare(label, image, g, image_name, 1e-4, 0.0);
        tensor_free(image);
        tensor_free(latents);
        cases++;
    }
    CHECK(cases > 0, "%s: no caseK.latents_scaled / caseK.image_untiled pairs", path);
    st_close(g);
    return cases;
}

// The decode stage of a whole-pipeline golden: the last denoised latents / scaling_factor.
static void test_pipeline_decode(const vae_model *vae, const char *path) {
    st_file *g = NULL;
    CHECK_OK(st_open(path, &g));
    if (!g) return;
    fprintf(stderr, "%s\n", path);
    // LCM pipelines decode the last stepN.denoised; StableDiffusionPipeline the final latents,
    // which equal it at the last LCM step.
    char name[64] = "";
    for (int step = 0;; step++) {
        char denoised[64], latents_out[64];
        snprintf(denoised, sizeof denoised, "step%d.denoised", step);
        snprintf(latents_out, sizeof latents_out, "step%d.latents_out", step);
        if (st_find(g, denoised))
            snprintf(name, sizeof name, "%s", denoised);
        else if (st_find(g, latents_out))
            snprintf(name, sizeof name, "%s", latents_out);
        else
            break;
    }
    CHECK(name[0] != '\0', "%s: no stepN.denoised or stepN.latents_out", path);
    if (name[0]) {
        fprintf(stderr, "  decoding %s / scaling_factor\n", name);
        tensor *latents = golden_tensor(g, name), *image = NULL;
        float scaling = vae_get_config(vae)->scaling_factor;
        for (int64_t i = 0; latents && i < tensor_numel(latents); i++)
            latents->data[i] = latents->data[i] / scaling;
        CHECK_OK(vae_decode(vae, latents, &image));
        compare("pipeline decode", image, g, "image_decoded", 1e-4, 0.0);
        check_postprocess("pipeline decode", image, g, "image_float", "image_uint8", 1e-4);
        check_postprocess_exact("postprocess(reference image)", g, "image_decoded", "image_float",
                                "image_uint8");
        tensor_free(image);
        tensor_free(latents);
    }

    // img2img goldens also hold the encode of the init image.
    if (st_find(g, "init_image_uint8") && st_find(g, "image_preprocessed")) {
        check_preprocess("img2img preprocess", g, "init_image_uint8", "image_preprocessed");
        tensor *pixels = golden_tensor(g, "image_preprocessed"), *mean = NULL, *logvar = NULL;
        CHECK_OK(vae_encode(vae, pixels, &mean, &logvar));
        compare("img2img encode", mean, g, "enc.mean", 1e-4, 0.0);
        compare("img2img encode", logvar, g, "enc.logvar", 1e-4, 0.0);
        tensor_free(mean);
        tensor_free(logvar);
        tensor_free(pixels);
    }
    st_close(g);
}

static bool is_autoencoder_kl(const char *model_dir) {
    char path[PATH_MAX];
    test_path(path, sizeof path, "%s/vae/config.json", model_dir);
    if (access(path, F_OK) != 0) return false;
    json_config c;
    if (json_config_load(path, NULL, &c) != LCM_OK) return false;
    const char *cls = NULL;
    bool yes = json_config_string_or(&c, "_class_name", "", &cls) == LCM_OK &&
               strcmp(cls, "AutoencoderKL") == 0;
    json_config_free(&c);
    return yes;
}

// Runs every golden of one fixture folder; returns the number of cases run.
static int test_fixture_folder(const char *model_dir) {
    char golden_dir[PATH_MAX], path[PATH_MAX * 2];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", model_dir);
    struct stat sb;
    if (stat(golden_dir, &sb) != 0 || !is_autoencoder_kl(model_dir)) return 0;

    model_folder folder;
    CHECK_OK(model_folder_open(model_dir, NULL, &folder));
    vae_model *vae = NULL;
    CHECK_OK(vae_load(test_backend_for(LCM_PRECISION_FP32), &folder, "vae", &vae));
    model_folder_close(&folder);
    if (!vae) return 0;
    const vae_config *cfg = vae_get_config(vae);
    fprintf(stderr, "%s/vae: %d blocks, downscale %d, %lld parameters\n", model_dir,
            cfg->block_count, cfg->downscale_factor, (long long)vae_param_count(vae));
    CHECK(vae_param_count(vae) > 0, "parameter count");

    int cases = 0;
    char **names = NULL;
    int count = test_list_files(golden_dir, "vae", ".safetensors", &names);
    for (int i = 0; i < count; i++) {
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        if (strcmp(names[i], "vae.safetensors") == 0) {
            test_vae_golden(vae, path);
            cases++;
        } else if (strcmp(names[i], "vae_tiled.safetensors") == 0) {
            cases += test_untiled_references(vae, path);
        }
    }
    test_free_list(names, count);
    const char *prefixes[] = {"pipeline_", "img2img_"};
    for (int p = 0; p < 2; p++) {
        count = test_list_files(golden_dir, prefixes[p], ".safetensors", &names);
        for (int i = 0; i < count; i++) {
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            test_pipeline_decode(vae, path);
            cases++;
        }
        test_free_list(names, count);
    }
    vae_free(vae);
    return cases;
}

// ---- config and weight errors ------------------------------------------------------------------

// A safetensors writer for the tests: every tensor of `src` as F32, renamed by `rename` (NULL
// drops the tensor); 2-D attention projections optionally stored as [C, C, 1, 1] convs.
typedef const char *(*rename_fn)(const char *name, char *buf, size_t size, bool *as_conv);

static bool write_safetensors(const st_file *src, const char *path, rename_fn rename) {
    cJSON *header = cJSON_CreateObject();
    size_t offset = 0, n = st_count(src);
    float **data = calloc(n, sizeof *data);
    bool ok = header && data;
    for (size_t i = 0; ok && i < n; i++) {
        const st_tensor *t = st_at(src, i);
        char buf[256];
        bool as_conv = false;
        const char *name = rename(t->name, buf, sizeof buf, &as_conv);
        if (!name) continue;
        data[i] = malloc(sizeof(float) * (size_t)t->numel);
        ok = data[i] && st_read_f32(src, t, data[i]) == LCM_OK;
        cJSON *entry = cJSON_AddObjectToObject(header, name);
        cJSON_AddStringToObject(entry, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(entry, "shape");
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        if (as_conv && t->ndim == 2) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber(1));
            cJSON_AddItemToArray(shape, cJSON_CreateNumber(1));
        }
        cJSON *offsets = cJSON_AddArrayToObject(entry, "data_offsets");
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset));
        offset += sizeof(float) * (size_t)t->numel;
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset));
    }
    char *json = ok ? cJSON_PrintUnformatted(header) : NULL;
    FILE *f = json ? fopen(path, "wb") : NULL;
    if (f) {
        size_t len = strlen(json), padded = (len + 7) / 8 * 8;
        uint64_t header_len = padded;
        fwrite(&header_len, 8, 1, f);
        fwrite(json, 1, len, f);
        for (size_t i = len; i < padded; i++) fputc(' ', f);
        for (size_t i = 0; i < n; i++)
            if (data[i]) fwrite(data[i], sizeof(float), (size_t)st_at(src, i)->numel, f);
        ok = fclose(f) == 0;
    } else {
        ok = false;
    }
    for (size_t i = 0; data && i < n; i++) free(data[i]);
    free(data);
    free(json);
    cJSON_Delete(header);
    return ok;
}

static const char *replace_part(const char *name, const char *from, const char *to, char *buf,
                                size_t size) {
    const char *at = strstr(name, from);
    if (!at) return name;
    snprintf(buf, size, "%.*s%s%s", (int)(at - name), name, to, at + strlen(from));
    return buf;
}

// Pre-0.14 diffusers attention names; the encoder's stored as 1x1 convs, the decoder's as linears.
static const char *old_attention_names(const char *name, char *buf, size_t size, bool *as_conv) {
    static const char *parts[][2] = {{".to_q.", ".query."},
                                     {".to_k.", ".key."},
                                     {".to_v.", ".value."},
                                     {".to_out.0.", ".proj_attn."}};
    for (int i = 0; i < 4; i++)
        if (strstr(name, parts[i][0])) {
            *as_conv = strncmp(name, "encoder.", 8) == 0 && strstr(name, ".weight") != NULL;
            return replace_part(name, parts[i][0], parts[i][1], buf, size);
        }
    return name;
}

static const char *drop_decoder_conv_out_bias(const char *name, char *buf, size_t size,
                                              bool *as_conv) {
    (void)buf, (void)size, (void)as_conv;
    return strcmp(name, "decoder.conv_out.bias") == 0 ? NULL : name;
}

typedef struct scratch {
    char root[PATH_MAX], vae_dir[PATH_MAX], config[PATH_MAX * 2], weights[PATH_MAX * 2];
    char index[PATH_MAX * 2];
} scratch;

static bool write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fputs(text, f);
    return fclose(f) == 0;
}

// Writes `cfg` as the scratch folder's vae/config.json and tries to load it.
static lcm_status load_with_config(const scratch *s, cJSON *cfg, vae_model **vae) {
    char *text = cJSON_Print(cfg);
    bool ok = text && write_text(s->config, text);
    free(text);
    CHECK(ok, "writing %s", s->config);
    model_folder folder;
    lcm_status st = model_folder_open(s->root, NULL, &folder);
    if (st == LCM_OK) {
        st = vae_load(test_backend_for(LCM_PRECISION_FP32), &folder, "vae", vae);
        model_folder_close(&folder);
    }
    return st;
}

static void expect_config_error(const scratch *s, const cJSON *original, const char *field,
                                int index, cJSON *value, lcm_status expected,
                                const char *message_part) {
    cJSON *cfg = cJSON_Duplicate(original, 1);
    if (index < 0) {
        cJSON_ReplaceItemInObjectCaseSensitive(cfg, field, value);
    } else {
        cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(cfg, field), index, value);
    }
    vae_model *vae = NULL;
    lcm_status st = load_with_config(s, cfg, &vae);
    const char *msg = lcm_last_error();
    fprintf(stderr, "  config %s -> %s: %s\n", field, lcm_status_name(st), msg);
    CHECK(st == expected && vae == NULL, "config %s: got %s, want %s", field, lcm_status_name(st),
          lcm_status_name(expected));
    CHECK(strstr(msg, field) && strstr(msg, message_part) && strstr(msg, "vae/config.json"),
          "config %s: message should name the file, field and value: %s", field, msg);
    vae_free(vae);
    cJSON_Delete(cfg);
}

static void test_errors(const char *model_dir, const char *golden_path) {
    scratch s;
    test_path(s.root, sizeof s.root, "/tmp/lcm_test_vae_XXXXXX");
    CHECK(mkdtemp(s.root) != NULL, "mkdtemp");
    test_path(s.vae_dir, sizeof s.vae_dir, "%s/vae", s.root);
    test_path(s.config, sizeof s.config, "%s/config.json", s.vae_dir);
    test_path(s.weights, sizeof s.weights, "%s/diffusion_pytorch_model.safetensors", s.vae_dir);
    test_path(s.index, sizeof s.index, "%s/model_index.json", s.root);
    CHECK(mkdir(s.vae_dir, 0755) == 0, "mkdir %s", s.vae_dir);
    CHECK(write_text(s.index, "{\"_class_name\": \"LatentConsistencyModelPipeline\", "
                              "\"vae\": [\"diffusers\", \"AutoencoderKL\"]}\n"),
          "writing model_index.json");
    char original_weights[PATH_MAX], original_config[PATH_MAX];
    test_path(original_weights, sizeof original_weights,
              "%s/vae/diffusion_pytorch_model.safetensors", model_dir);
    test_path(original_config, sizeof original_config, "%s/vae/config.json", model_dir);
    CHECK(symlink(original_weights, s.weights) == 0, "symlink %s", s.weights);

    char *text = NULL;
    size_t len = 0;
    CHECK_OK(read_text_file(original_config, 1 << 20, &text, &len));
    cJSON *original = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(original != NULL, "parsing %s", original_config);
    if (original) {
        // The unchanged copy loads.
        vae_model *vae = NULL;
        CHECK_OK(load_with_config(&s, original, &vae));
        vae_free(vae);

        expect_config_error(&s, original, "up_block_types", 0,
                            cJSON_CreateString("AttnUpDecoderBlock2D"), LCM_ERR_UNSUPPORTED,
                            "AttnUpDecoderBlock2D");
        expect_config_error(&s, original, "down_block_types", 1, cJSON_CreateString("DownBlock2D"),
                            LCM_ERR_UNSUPPORTED, "DownBlock2D");
        expect_config_error(&s, original, "act_fn", -1, cJSON_CreateString("gelu"),
                            LCM_ERR_UNSUPPORTED, "gelu");
        expect_config_error(&s, original, "_class_name", -1, cJSON_CreateString("AutoencoderTiny"),
                            LCM_ERR_UNSUPPORTED, "AutoencoderTiny");
        expect_config_error(&s, original, "norm_num_groups", -1, cJSON_CreateNumber(7),
                            LCM_ERR_FORMAT, "7");
        expect_config_error(&s, original, "layers_per_block", -1, cJSON_CreateString("two"),
                            LCM_ERR_FORMAT, "layers_per_block");
        // One block fewer than the block types.
        cJSON *channels =
            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(original, "block_out_channels"), 1);
        cJSON_DeleteItemFromArray(channels, 0);
        expect_config_error(&s, original, "block_out_channels", -1, channels, LCM_ERR_FORMAT,
                            "entries");

        // Weights with the old attention names (some stored as 1x1 convs) decode identically.
        st_file *weights = NULL, *golden = NULL;
        CHECK_OK(st_open(original_weights, &weights));
        CHECK_OK(st_open(golden_path, &golden));
        unlink(s.weights);
        if (weights && golden) {
            CHECK(write_safetensors(weights, s.weights, old_attention_names), "writing old names");
            CHECK_OK(load_with_config(&s, original, &vae));
            tensor *latents = golden_tensor(golden, "latents_scaled"), *image = NULL;
            CHECK_OK(vae_decode(vae, latents, &image));
            compare("old attention names decode", image, golden, "image", 1e-4, 0.0);
            tensor *pixels = golden_tensor(golden, "enc.image_preprocessed"), *mean = NULL,
                   *logvar = NULL;
            CHECK_OK(vae_encode(vae, pixels, &mean, &logvar));
            compare("old attention names encode", mean, golden, "enc.mean", 1e-4, 0.0);
            tensor_free(mean);
            tensor_free(logvar);
            tensor_free(pixels);
            tensor_free(image);
            tensor_free(latents);
            vae_free(vae);
            vae = NULL;

            // A missing tensor is an error naming it.
            unlink(s.weights);
            CHECK(write_safetensors(weights, s.weights, drop_decoder_conv_out_bias),
                  "writing weights without a tensor");
            lcm_status st = load_with_config(&s, original, &vae);
            fprintf(stderr, "  missing tensor -> %s: %s\n", lcm_status_name(st), lcm_last_error());
            CHECK(st != LCM_OK && vae == NULL && strstr(lcm_last_error(), "decoder.conv_out.bias"),
                  "a missing tensor must fail naming it: %s", lcm_last_error());
            vae_free(vae);
        }
        st_close(weights);
        st_close(golden);
        cJSON_Delete(original);
    }

    // Wrong input shapes are argument errors, not crashes.
    model_folder folder;
    vae_model *vae = NULL;
    CHECK_OK(model_folder_open(model_dir, NULL, &folder));
    CHECK_OK(vae_load(test_backend_for(LCM_PRECISION_FP32), &folder, "vae", &vae));
    model_folder_close(&folder);
    if (vae) {
        tensor *wrong = tensor_zeros(4, (int64_t[]){1, 3, 4, 4}), *image = NULL, *mean = NULL,
               *logvar = NULL;
        CHECK(vae_decode(vae, wrong, &image) == LCM_ERR_INVALID_ARGUMENT && !image,
              "decode of 3-channel latents must fail");
        tensor *tiny = tensor_zeros(4, (int64_t[]){1, 3, 2, 2});
        CHECK(vae_encode(vae, tiny, &mean, &logvar) == LCM_ERR_INVALID_ARGUMENT && !mean,
              "encode of a 2x2 image must fail");
        CHECK(vae_image_to_rgb8(wrong, 1, (uint8_t[48]){0}) == LCM_ERR_INVALID_ARGUMENT,
              "rgb8 index out of range must fail");
        CHECK(vae_rgb8_to_image((uint8_t[3]){0}, 0, 1) == NULL, "0-wide image must fail");
        tensor_free(tiny);
        tensor_free(wrong);
        vae_free(vae);
    }

    unlink(s.weights);
    unlink(s.config);
    unlink(s.index);
    rmdir(s.vae_dir);
    CHECK(rmdir(s.root) == 0, "cleaning up %s", s.root);
}

int main(void) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    char **dirs = NULL;
    int n_dirs = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        dirs = realloc(dirs, sizeof *dirs * (size_t)(n_dirs + 1));
        dirs[n_dirs++] = strdup(e->d_name);
    }
    if (d) closedir(d);

    int cases = 0;
    bool errors_tested = false;
    for (int i = 0; i < n_dirs; i++) {
        char model_dir[PATH_MAX], golden[PATH_MAX * 2];
        test_path(model_dir, sizeof model_dir, "%s/%s", root, dirs[i]);
        cases += test_fixture_folder(model_dir);
        test_path(golden, sizeof golden, "%s/golden/vae.safetensors", model_dir);
        if (!errors_tested && access(golden, F_OK) == 0 && is_autoencoder_kl(model_dir)) {
            test_errors(model_dir, golden);
            errors_tested = true;
        }
        free(dirs[i]);
    }
    free(dirs);
    fprintf(stderr, "%d VAE golden cases\n", cases);
    CHECK(cases > 0, "no VAE golden cases found under %s", root);
    CHECK(errors_tested, "no folder with golden/vae.safetensors for the error tests under %s",
          root);
    return test_finish();
}
