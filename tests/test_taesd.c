// TAESD (AutoencoderTiny) golden tests: decode and encode against diffusers with the intermediate
// activations, the decode stage of whole-pipeline goldens, and config errors.
//
// Cases are discovered: every fixture folder F whose F/config.json is an AutoencoderTiny and that
// has F/golden is used with
//   F/golden/taesd*.safetensors     decK.latents -> decK.image (K from info.decode_cases),
//                                   enc.image_preprocessed -> enc.latents, debug.* taps
//   F/golden/pipeline_*.safetensors decoder_input -> image_decoded
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
#include "io/image.h"
#include "io/json_config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "models/taesd.h"
#include "models/vae.h"
#include "testutil.h"

static tensor *golden_tensor(const st_file *g, const char *name) {
    const st_tensor *t = st_find(g, name);
    CHECK(t != NULL, "%s: golden tensor '%s' is missing", st_path(g), name);
    if (!t || t->ndim < 1 || t->ndim > TENSOR_MAX_DIMS) return NULL;
    tensor *x = tensor_new(t->ndim, t->shape);
    if (x) CHECK_OK(st_read_f32(g, t, x->data));
    return x;
}

// |got - want| <= 1e-4 * max|want| (fixtures README section 8), shapes equal; prints the max diff.
static void compare(const char *label, const tensor *got, const st_file *g, const char *name) {
    tensor *want = golden_tensor(g, name);
    CHECK(got != NULL, "%s %s: nothing computed", label, name);
    if (got && want) {
        bool same = got->ndim == want->ndim;
        for (int i = 0; same && i < got->ndim; i++) same = got->shape[i] == want->shape[i];
        CHECK(same, "%s %s: shape differs from the golden one", label, name);
        if (same) {
            size_t n = (size_t)tensor_numel(want);
            double scale = test_max_abs(want->data, n), max_diff = 0;
            for (size_t i = 0; i < n; i++)
                max_diff = fmax(max_diff, fabs((double)got->data[i] - want->data[i]));
            fprintf(stderr, "  %-28s %-34s max|diff| %.3g (tol %.3g)\n", label, name, max_diff,
                    1e-4 * scale);
            char what[256];
            snprintf(what, sizeof what, "%s %s", label, name);
            test_close(what, got->data, want->data, n, 1e-4 * scale, 0.0);
        }
    }
    tensor_free(want);
}

// ---- taps ------------------------------------------------------------------------------------

// Every golden tensor PREFIX.NAME must have been produced as tap NAME, and match.
static int compare_taps(const char *label, const golden_taps *t, const st_file *g, const char *prefix) {
    int compared = 0;
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < st_count(g); i++) {
        const char *name = st_at(g, i)->name;
        if (strncmp(name, prefix, plen) != 0) continue;
        const tensor *got = golden_taps_find(t, name + plen);
        CHECK(got != NULL, "%s: no intermediate '%s' for golden '%s'", label, name + plen, name);
        if (got) compare(label, got, g, name);
        compared++;
    }
    return compared;
}

// ---- golden cases ----------------------------------------------------------------------------

static int test_stage_golden(const taesd_model *m, const char *path, const char *golden_dir) {
    st_file *g = NULL;
    CHECK_OK(st_open(path, &g));
    if (!g) return 0;
    fprintf(stderr, "%s\n", path);
    cJSON *info = golden_info(g);
    int cases = 0;
    const cJSON *decode_cases = cJSON_GetObjectItemCaseSensitive(info, "decode_cases");
    int count = cJSON_GetArraySize(decode_cases);
    for (int k = 0; k < count; k++) {
        char latents_name[64], image_name[64], label[64], prefix[64];
        snprintf(latents_name, sizeof latents_name, "dec%d.latents", k);
        snprintf(image_name, sizeof image_name, "dec%d.image", k);
        snprintf(label, sizeof label, "decode case %d", k);
        snprintf(prefix, sizeof prefix, "debug.dec%d.", k);
        tensor *latents = golden_tensor(g, latents_name), *image = NULL;
        golden_taps t = {0};
        CHECK_OK(taesd_decode_tapped(m, latents, golden_taps_record, &t, &image));
        compare(label, image, g, image_name);
        int taps_compared = compare_taps(label, &t, g, prefix);
        fprintf(stderr, "  %s: %d intermediates compared\n", label, taps_compared);
        // The untapped call gives the same result.
        tensor *again = NULL;
        CHECK_OK(taesd_decode(m, latents, &again));
        CHECK(image && again && !memcmp(image->data, again->data,
                                        sizeof(float) * (size_t)tensor_numel(image)),
              "%s: decode with and without taps differ", label);
        tensor_free(again);
        golden_taps_free(&t);
        tensor_free(image);
        tensor_free(latents);
        cases++;
    }
    CHECK(count > 0, "%s: info.decode_cases lists no case", path);

    if (st_find(g, "enc.latents")) {
        tensor *pixels = golden_tensor(g, "enc.image_preprocessed"), *latents = NULL;
        // The stored preprocessing comes from the PNG named in the info.
        const char *png = golden_string(info, "encode_png");
        char png_path[PATH_MAX * 2];
        test_path(png_path, sizeof png_path, "%s/%s", golden_dir, png);
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        CHECK_OK(image_read_png(png_path, &rgb, &w, &h));
        tensor *from_png = rgb ? vae_rgb8_to_image(rgb, w, h) : NULL;
        CHECK(from_png && pixels && tensor_numel(from_png) == tensor_numel(pixels) &&
                  !memcmp(from_png->data, pixels->data, sizeof(float) * (size_t)tensor_numel(pixels)),
              "%s: preprocessing %s differs from enc.image_preprocessed", path, png);
        free(rgb);
        tensor_free(from_png);
        golden_taps t = {0};
        CHECK_OK(taesd_encode_tapped(m, pixels, golden_taps_record, &t, &latents));
        compare("encode", latents, g, "enc.latents");
        int taps_compared = compare_taps("encode", &t, g, "debug.enc.");
        fprintf(stderr, "  encode: %d intermediates compared\n", taps_compared);
        golden_taps_free(&t);
        tensor_free(latents);
        tensor_free(pixels);
        cases++;
    }
    cJSON_Delete(info);
    st_close(g);
    return cases;
}

// A whole-pipeline golden with TAESD as the VAE: the decode stage alone.
static int test_pipeline_decode(const taesd_model *m, const char *path) {
    st_file *g = NULL;
    CHECK_OK(st_open(path, &g));
    if (!g) return 0;
    int cases = 0;
    if (st_find(g, "decoder_input") && st_find(g, "image_decoded")) {
        fprintf(stderr, "%s\n", path);
        tensor *latents = golden_tensor(g, "decoder_input"), *image = NULL;
        CHECK_OK(taesd_decode(m, latents, &image));
        compare("pipeline decode", image, g, "image_decoded");
        tensor_free(image);
        tensor_free(latents);
        cases = 1;
    }
    st_close(g);
    return cases;
}

static bool is_autoencoder_tiny(const char *model_dir) {
    char path[PATH_MAX];
    test_path(path, sizeof path, "%s/config.json", model_dir);
    json_config c;
    if (access(path, F_OK) != 0 || json_config_load(path, NULL, &c) != LCM_OK) return false;
    const char *cls = NULL;
    bool yes = json_config_string_or(&c, "_class_name", "", &cls) == LCM_OK &&
               strcmp(cls, "AutoencoderTiny") == 0;
    json_config_free(&c);
    return yes;
}

static int test_fixture_folder(const char *model_dir) {
    char golden_dir[PATH_MAX], path[PATH_MAX * 2];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", model_dir);
    struct stat sb;
    if (stat(golden_dir, &sb) != 0 || !is_autoencoder_tiny(model_dir)) return 0;
    taesd_model *m = NULL;
    CHECK_OK(taesd_load_dir(test_backend_for(LCM_PRECISION_FP32), model_dir, &m));
    if (!m) return 0;
    const taesd_config *cfg = taesd_get_config(m);
    fprintf(stderr, "%s: C = %d, %d stages, downscale %d, %lld parameters\n", model_dir,
            cfg->channels, cfg->stage_count, cfg->downscale_factor,
            (long long)taesd_param_count(m));
    int cases = 0;
    char **names = NULL;
    int count = test_list_files(golden_dir, "taesd", ".safetensors", &names);
    for (int i = 0; i < count; i++) {
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        cases += test_stage_golden(m, path, golden_dir);
    }
    test_free_list(names, count);
    count = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
    for (int i = 0; i < count; i++) {
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        cases += test_pipeline_decode(m, path);
    }
    test_free_list(names, count);
    taesd_free(m);
    return cases;
}

// ---- errors ----------------------------------------------------------------------------------

static bool write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fputs(text, f);
    return fclose(f) == 0;
}

// Loads the scratch folder with `original` changed at `field` (value consumed).
static void expect_config_error(const char *dir, const char *config_path, const cJSON *original,
                                const char *field, int index, cJSON *value, lcm_status expected,
                                const char *message_part) {
    cJSON *cfg = cJSON_Duplicate(original, 1);
    if (index < 0)
        cJSON_ReplaceItemInObjectCaseSensitive(cfg, field, value);
    else
        cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(cfg, field), index, value);
    char *text = cJSON_Print(cfg);
    CHECK(text && write_text(config_path, text), "writing %s", config_path);
    free(text);
    taesd_model *m = NULL;
    lcm_status st = taesd_load_dir(test_backend_for(LCM_PRECISION_FP32), dir, &m);
    const char *msg = lcm_last_error();
    fprintf(stderr, "  config %s -> %s: %s\n", field, lcm_status_name(st), msg);
    CHECK(st == expected && m == NULL, "config %s: got %s, want %s", field, lcm_status_name(st),
          lcm_status_name(expected));
    CHECK(strstr(msg, field) && strstr(msg, message_part) && strstr(msg, "config.json"),
          "config %s: the message should name the file, field and value: %s", field, msg);
    taesd_free(m);
    cJSON_Delete(cfg);
}

static void test_errors(const char *model_dir) {
    char root[PATH_MAX], config_path[PATH_MAX * 2], weights[PATH_MAX * 2], original_path[PATH_MAX * 2];
    char original_weights[PATH_MAX * 2];
    test_path(root, sizeof root, "/tmp/lcm_test_taesd_XXXXXX");
    CHECK(mkdtemp(root) != NULL, "mkdtemp");
    test_path(config_path, sizeof config_path, "%s/config.json", root);
    test_path(weights, sizeof weights, "%s/diffusion_pytorch_model.safetensors", root);
    test_path(original_path, sizeof original_path, "%s/config.json", model_dir);
    test_path(original_weights, sizeof original_weights, "%s/diffusion_pytorch_model.safetensors",
              model_dir);
    CHECK(symlink(original_weights, weights) == 0, "symlink %s", weights);
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(read_text_file(original_path, 1 << 20, &text, &len));
    cJSON *original = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (original) {
        expect_config_error(root, config_path, original, "act_fn", -1, cJSON_CreateString("silu"),
                            LCM_ERR_UNSUPPORTED, "silu");
        expect_config_error(root, config_path, original, "upsampling_scaling_factor", -1,
                            cJSON_CreateNumber(3), LCM_ERR_UNSUPPORTED, "3");
        expect_config_error(root, config_path, original, "_class_name", -1,
                            cJSON_CreateString("AutoencoderKL"), LCM_ERR_UNSUPPORTED,
                            "AutoencoderKL");
        expect_config_error(root, config_path, original, "decoder_block_out_channels", 2,
                            cJSON_CreateNumber(48), LCM_ERR_UNSUPPORTED, "48");
        expect_config_error(root, config_path, original, "latent_channels", -1,
                            cJSON_CreateString("four"), LCM_ERR_FORMAT, "latent_channels");
        cJSON *blocks =
            cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(original, "num_decoder_blocks"), 1);
        cJSON_DeleteItemFromArray(blocks, 0);
        expect_config_error(root, config_path, original, "num_decoder_blocks", -1, blocks,
                            LCM_ERR_UNSUPPORTED, "num_decoder_blocks");
        // More blocks than the weights hold: the missing tensor is named.
        char *bigger = NULL;
        cJSON *cfg = cJSON_Duplicate(original, 1);
        cJSON_ReplaceItemInArray(cJSON_GetObjectItemCaseSensitive(cfg, "num_decoder_blocks"), 3,
                                 cJSON_CreateNumber(2));
        bigger = cJSON_Print(cfg);
        CHECK(bigger && write_text(config_path, bigger), "writing %s", config_path);
        taesd_model *m = NULL;
        lcm_status st = taesd_load_dir(test_backend_for(LCM_PRECISION_FP32), root, &m);
        fprintf(stderr, "  extra block -> %s: %s\n", lcm_status_name(st), lcm_last_error());
        CHECK(st != LCM_OK && !m && strstr(lcm_last_error(), "decoder.layers."),
              "a missing weight must be an error naming it: %s", lcm_last_error());
        free(bigger);
        cJSON_Delete(cfg);
        cJSON_Delete(original);
    }
    unlink(weights);
    unlink(config_path);
    CHECK(rmdir(root) == 0, "cleaning up %s", root);

    // Wrong input shapes are argument errors.
    taesd_model *m = NULL;
    CHECK_OK(taesd_load_dir(test_backend_for(LCM_PRECISION_FP32), model_dir, &m));
    if (m) {
        tensor *wrong = tensor_zeros(4, (int64_t[]){1, 3, 4, 4}), *out = NULL;
        CHECK(taesd_decode(m, wrong, &out) == LCM_ERR_INVALID_ARGUMENT && !out,
              "decode of 3-channel latents must fail");
        tensor *latents = tensor_zeros(4, (int64_t[]){1, 4, 4, 4});
        CHECK(taesd_encode(m, latents, &out) == LCM_ERR_INVALID_ARGUMENT && !out,
              "encode of a 4-channel image must fail");
        tensor_free(latents);
        tensor_free(wrong);
        taesd_free(m);
    }
}

int main(void) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    int cases = 0;
    bool errors_tested = false;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char model_dir[PATH_MAX];
        test_path(model_dir, sizeof model_dir, "%s/%s", root, e->d_name);
        int n = test_fixture_folder(model_dir);
        cases += n;
        if (n > 0 && !errors_tested) {
            test_errors(model_dir);
            errors_tested = true;
        }
    }
    if (d) closedir(d);
    fprintf(stderr, "%d TAESD golden cases\n", cases);
    CHECK(cases > 0, "no TAESD golden cases found under %s", root);
    return test_finish();
}
