// JSON config getters and model folders against hostile configs.
//
// Every failure must be LCM_ERR_FORMAT (LCM_ERR_IO when the file cannot be read) with a message
// that names the file's label and the field, so a user can find the line to fix.
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/json_config.h"
#include "io/model_folder.h"
#include "testutil.h"

#define LABEL "unet/config.json"

static char temp_root[] = "/tmp/lcm_test_json_config_XXXXXX";

static bool contains(const char *haystack, const char *needle) {
    return needle == NULL || strstr(haystack, needle) != NULL;
}

static void write_text(const char *path, const char *text) {
    FILE *fp = fopen(path, "wb");
    if (!fp || fputs(text, fp) < 0 || fclose(fp) != 0) {
        fprintf(stderr, "FATAL: cannot write %s\n", path);
        exit(2);
    }
}

static void make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "FATAL: cannot create %s\n", path);
        exit(2);
    }
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

// Checks a failed call: status, and the message holds the label and up to two details.
static void expect_fail(const char *what, lcm_status got, lcm_status want, const char *label,
                        const char *detail1, const char *detail2) {
    const char *msg = lcm_last_error();
    CHECK(got == want, "%s: got '%s', want '%s' (%s)", what, lcm_status_name(got),
          lcm_status_name(want), msg);
    CHECK(contains(msg, label) && contains(msg, detail1) && contains(msg, detail2),
          "%s: message must name '%s', '%s', '%s': %s", what, label, detail1 ? detail1 : "",
          detail2 ? detail2 : "", msg);
}

static void expect_parse_fail(const char *text, size_t len, const char *why) {
    json_config c;
    lcm_clear_error();
    lcm_status st = json_config_parse(text, len, LABEL, &c);
    expect_fail(why, st, LCM_ERR_FORMAT, LABEL, NULL, NULL);
    CHECK(c.root == NULL && c.label == NULL, "%s: failed parse leaves nothing to free", why);
    json_config_free(&c); // must be harmless
}

static void test_bad_documents(void) {
    const char *bad[] = {"[1, 2]", "\"a string\"", "42", "null", "true", "", "   ",
                         "{\"a\": 1", "{\"a\": }", "{\"a\" 1}", "{'a': 1}", "{\"a\": 1,}", "{}}",
                         "{\"a\": NaN}", "{\"a\": 0x10}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) expect_parse_fail(bad[i], strlen(bad[i]), bad[i]);
    // Truncation in the middle of a valid document: the length, not the NUL, bounds the parse.
    const char *whole = "{\"in_channels\": 4, \"block_out_channels\": [32, 64]}";
    for (size_t len = 0; len < strlen(whole); len += 7) expect_parse_fail(whole, len, "truncated");
    // A NUL inside the text ends nothing early but is not JSON either.
    expect_parse_fail("{\"a\": 1}\0junk", 13, "embedded NUL");
}

// The config every getter test reads.
static const char *config_text =
    "{\"i\": 3, \"neg\": -5, \"zero\": 0, \"f\": 1.5, \"frac\": 2.5, \"big\": 1e30,"
    " \"i63\": 9223372036854775807, \"i63neg\": -9223372036854775808, \"exp\": 1e3,"
    " \"s\": \"silu\", \"b\": true, \"bf\": false, \"n\": null, \"obj\": {\"x\": 1},"
    " \"arr\": [32, 64, 128], \"arr2\": [1, 2], \"empty\": [], \"arr_bad\": [1, \"2\", 3],"
    " \"arr_frac\": [1, 2.5], \"arr_null\": [1, null], \"arr_nested\": [[1], [2]],"
    " \"sarr\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\"], \"sarr_bad\": [\"a\", 2],"
    " \"sarr_null\": [null], \"numstr\": \"4\", \"boolnum\": 1}";

static void test_getters(void) {
    json_config c;
    CHECK_OK(json_config_parse(config_text, strlen(config_text), LABEL, &c));
    if (!c.root) return;
    int64_t v = 0, arr[8];
    double d = 0;
    bool b = false;
    const char *s = NULL, *strings[8];
    int count = 0;

    // Integers.
    CHECK_OK(json_config_int(&c, "i", 0, 10, &v));
    CHECK(v == 3, "i = %lld", (long long)v);
    CHECK_OK(json_config_int(&c, "neg", -10, 10, &v));
    CHECK(v == -5, "neg");
    CHECK_OK(json_config_int(&c, "exp", 0, 10000, &v));
    CHECK(v == 1000, "1e3 is the integer 1000");
    CHECK_OK(json_config_int(&c, "i63neg", INT64_MIN, INT64_MAX, &v));
    CHECK(v == INT64_MIN, "-2^63 is exactly INT64_MIN");
    expect_fail("int missing", json_config_int(&c, "absent", 0, 10, &v), LCM_ERR_FORMAT, LABEL,
                "'absent'", NULL);
    expect_fail("int null = missing", json_config_int(&c, "n", 0, 10, &v), LCM_ERR_FORMAT, LABEL,
                "'n'", NULL);
    expect_fail("int from string", json_config_int(&c, "numstr", 0, 10, &v), LCM_ERR_FORMAT, LABEL,
                "numstr", "string");
    expect_fail("int from bool", json_config_int(&c, "b", 0, 10, &v), LCM_ERR_FORMAT, LABEL, "b =",
                NULL);
    expect_fail("int from array", json_config_int(&c, "arr", 0, 10, &v), LCM_ERR_FORMAT, LABEL,
                "arr", NULL);
    expect_fail("int fractional", json_config_int(&c, "frac", 0, 10, &v), LCM_ERR_FORMAT, LABEL,
                "frac", "2.5");
    expect_fail("int above range", json_config_int(&c, "i", 4, 10, &v), LCM_ERR_FORMAT, LABEL, "i = 3",
                "4..10");
    expect_fail("int below range", json_config_int(&c, "neg", 0, 10, &v), LCM_ERR_FORMAT, LABEL,
                "neg", "0..10");
    expect_fail("int 1e30", json_config_int(&c, "big", INT64_MIN, INT64_MAX, &v), LCM_ERR_FORMAT,
                LABEL, "big", NULL);
    // 9223372036854775807 parses to the double 2^63, which is not an int64.
    expect_fail("int 2^63", json_config_int(&c, "i63", INT64_MIN, INT64_MAX, &v), LCM_ERR_FORMAT,
                LABEL, "i63", NULL);
    CHECK_OK(json_config_int_or(&c, "absent", 77, 0, 100, &v));
    CHECK(v == 77, "int_or default when absent");
    v = 0;
    CHECK_OK(json_config_int_or(&c, "n", 78, 0, 100, &v));
    CHECK(v == 78, "int_or default when null");
    // The fallback is trusted (it is the caller's), only present values are range checked.
    CHECK_OK(json_config_int_or(&c, "i", 78, 0, 100, &v));
    CHECK(v == 3, "int_or present");
    expect_fail("int_or wrong type", json_config_int_or(&c, "s", 1, 0, 10, &v), LCM_ERR_FORMAT, LABEL,
                "s =", NULL);
    expect_fail("int_or out of range", json_config_int_or(&c, "i", 1, 5, 10, &v), LCM_ERR_FORMAT,
                LABEL, "i = 3", NULL);

    // Floats.
    CHECK_OK(json_config_float(&c, "f", 0, 2, &d));
    CHECK(d == 1.5, "f");
    CHECK_OK(json_config_float(&c, "i", 0, 10, &d));
    CHECK(d == 3.0, "an integer is a valid float");
    expect_fail("float missing", json_config_float(&c, "absent", 0, 1, &d), LCM_ERR_FORMAT, LABEL,
                "'absent'", NULL);
    expect_fail("float from string", json_config_float(&c, "s", 0, 1, &d), LCM_ERR_FORMAT, LABEL,
                "'s'", NULL);
    expect_fail("float out of range", json_config_float(&c, "big", 0, 1e10, &d), LCM_ERR_FORMAT,
                LABEL, "'big'", NULL);
    CHECK_OK(json_config_float_or(&c, "n", 0.25, 0, 1, &d));
    CHECK(d == 0.25, "float_or default when null");
    CHECK_OK(json_config_float_or(&c, "absent", 0.5, 0, 1, &d));
    CHECK(d == 0.5, "float_or default when absent");
    expect_fail("float_or wrong type", json_config_float_or(&c, "arr", 0, 0, 1, &d), LCM_ERR_FORMAT,
                LABEL, "'arr'", NULL);

    // Booleans.
    CHECK_OK(json_config_bool_or(&c, "b", false, &b));
    CHECK(b, "b true");
    CHECK_OK(json_config_bool_or(&c, "bf", true, &b));
    CHECK(!b, "bf false");
    CHECK_OK(json_config_bool_or(&c, "n", true, &b));
    CHECK(b, "bool_or default when null");
    CHECK_OK(json_config_bool_or(&c, "absent", false, &b));
    CHECK(!b, "bool_or default when absent");
    expect_fail("bool from number", json_config_bool_or(&c, "boolnum", false, &b), LCM_ERR_FORMAT,
                LABEL, "'boolnum'", NULL);
    expect_fail("bool from string", json_config_bool_or(&c, "s", false, &b), LCM_ERR_FORMAT, LABEL,
                "'s'", NULL);

    // Strings.
    CHECK_OK(json_config_string(&c, "s", &s));
    CHECK(s && !strcmp(s, "silu"), "s");
    expect_fail("string missing", json_config_string(&c, "absent", &s), LCM_ERR_FORMAT, LABEL,
                "'absent'", NULL);
    expect_fail("string null", json_config_string(&c, "n", &s), LCM_ERR_FORMAT, LABEL, "'n'", NULL);
    expect_fail("string from number", json_config_string(&c, "i", &s), LCM_ERR_FORMAT, LABEL, "'i'",
                NULL);
    expect_fail("string from object", json_config_string(&c, "obj", &s), LCM_ERR_FORMAT, LABEL,
                "'obj'", NULL);
    CHECK_OK(json_config_string_or(&c, "n", "gelu", &s));
    CHECK(s && !strcmp(s, "gelu"), "string_or default when null");
    CHECK_OK(json_config_string_or(&c, "absent", "gelu", &s));
    CHECK(s && !strcmp(s, "gelu"), "string_or default when absent");
    expect_fail("string_or wrong type", json_config_string_or(&c, "b", "x", &s), LCM_ERR_FORMAT,
                LABEL, "'b'", NULL);

    // Integer arrays.
    CHECK_OK(json_config_int_array(&c, "arr", 1, 1024, arr, 8, &count));
    CHECK(count == 3 && arr[0] == 32 && arr[2] == 128, "arr");
    expect_fail("int_array missing", json_config_int_array(&c, "absent", 0, 9, arr, 8, &count),
                LCM_ERR_FORMAT, LABEL, "'absent'", NULL);
    expect_fail("int_array from number", json_config_int_array(&c, "i", 0, 9, arr, 8, &count),
                LCM_ERR_FORMAT, LABEL, "'i'", NULL);
    expect_fail("int_array empty", json_config_int_array(&c, "empty", 0, 9, arr, 8, &count),
                LCM_ERR_FORMAT, LABEL, "'empty'", NULL);
    expect_fail("int_array too long", json_config_int_array(&c, "arr", 0, 1024, arr, 2, &count),
                LCM_ERR_FORMAT, LABEL, "'arr'", "3 entries");
    expect_fail("int_array string entry", json_config_int_array(&c, "arr_bad", 0, 9, arr, 8, &count),
                LCM_ERR_FORMAT, LABEL, "arr_bad[1]", NULL);
    expect_fail("int_array fractional entry",
                json_config_int_array(&c, "arr_frac", 0, 9, arr, 8, &count), LCM_ERR_FORMAT, LABEL,
                "arr_frac[1]", "2.5");
    expect_fail("int_array null entry", json_config_int_array(&c, "arr_null", 0, 9, arr, 8, &count),
                LCM_ERR_FORMAT, LABEL, "arr_null[1]", NULL);
    expect_fail("int_array nested", json_config_int_array(&c, "arr_nested", 0, 9, arr, 8, &count),
                LCM_ERR_FORMAT, LABEL, "arr_nested[0]", NULL);
    expect_fail("int_array out of range", json_config_int_array(&c, "arr", 1, 64, arr, 8, &count),
                LCM_ERR_FORMAT, LABEL, "arr[2] = 128", "1..64");

    // String arrays.
    CHECK_OK(json_config_string_array(&c, "sarr", strings, 8, &count));
    CHECK(count == 2 && !strcmp(strings[1], "DownBlock2D"), "sarr");
    expect_fail("string_array non-string",
                json_config_string_array(&c, "sarr_bad", strings, 8, &count), LCM_ERR_FORMAT, LABEL,
                "sarr_bad[1]", NULL);
    expect_fail("string_array null entry",
                json_config_string_array(&c, "sarr_null", strings, 8, &count), LCM_ERR_FORMAT, LABEL,
                "sarr_null[0]", NULL);
    expect_fail("string_array of numbers", json_config_string_array(&c, "arr", strings, 8, &count),
                LCM_ERR_FORMAT, LABEL, "arr[0]", NULL);
    expect_fail("string_array from string", json_config_string_array(&c, "s", strings, 8, &count),
                LCM_ERR_FORMAT, LABEL, "'s'", NULL);
    expect_fail("string_array too long", json_config_string_array(&c, "sarr", strings, 1, &count),
                LCM_ERR_FORMAT, LABEL, "'sarr'", NULL);

    // Integer or array (attention_head_dim).
    CHECK_OK(json_config_int_or_array(&c, "i", 1, 10, arr, 4));
    CHECK(arr[0] == 3 && arr[3] == 3, "a single value is repeated");
    CHECK_OK(json_config_int_or_array(&c, "arr", 1, 1024, arr, 3));
    CHECK(arr[0] == 32 && arr[1] == 64 && arr[2] == 128, "an array of the right length");
    expect_fail("int_or_array too few", json_config_int_or_array(&c, "arr2", 0, 9, arr, 3),
                LCM_ERR_FORMAT, LABEL, "'arr2'", "expected 3");
    expect_fail("int_or_array too many", json_config_int_or_array(&c, "arr", 0, 1024, arr, 2),
                LCM_ERR_FORMAT, LABEL, "'arr'", NULL);
    expect_fail("int_or_array missing", json_config_int_or_array(&c, "absent", 0, 9, arr, 2),
                LCM_ERR_FORMAT, LABEL, "'absent'", NULL);
    expect_fail("int_or_array null", json_config_int_or_array(&c, "n", 0, 9, arr, 2), LCM_ERR_FORMAT,
                LABEL, "'n'", NULL);
    expect_fail("int_or_array string", json_config_int_or_array(&c, "s", 0, 9, arr, 2),
                LCM_ERR_FORMAT, LABEL, "'s'", NULL);
    expect_fail("int_or_array fractional", json_config_int_or_array(&c, "frac", 0, 9, arr, 2),
                LCM_ERR_FORMAT, LABEL, "frac", "2.5");
    expect_fail("int_or_array bad entry", json_config_int_or_array(&c, "arr_bad", 0, 9, arr, 3),
                LCM_ERR_FORMAT, LABEL, "arr_bad[1]", NULL);

    CHECK(json_config_has(&c, "i") && !json_config_has(&c, "n") && !json_config_has(&c, "absent"),
          "json_config_has: null counts as absent");
    // Field names are case sensitive, like diffusers' config keys.
    CHECK(!json_config_has(&c, "I"), "field names are case sensitive");
    json_config_free(&c);
    json_config_free(&c); // twice is harmless
    json_config_free(NULL);
}

static void test_files(void) {
    char path[512], text_dir[512];
    json_config c;
    test_path(path, sizeof path, "%s/missing.json", temp_root);
    expect_fail("nonexistent file", json_config_load(path, NULL, &c), LCM_ERR_IO, path, NULL, NULL);
    CHECK(c.root == NULL && c.label == NULL, "failed load leaves nothing to free");

    test_path(text_dir, sizeof text_dir, "%s/a_folder.json", temp_root);
    make_dir(text_dir);
    expect_fail("folder", json_config_load(text_dir, NULL, &c), LCM_ERR_IO, text_dir, NULL, NULL);

    // Past the bound: a sparse 16 MiB + 1 file costs no disk and must not be read at all.
    test_path(path, sizeof path, "%s/huge.json", temp_root);
    FILE *fp = fopen(path, "wb");
    CHECK(fp && ftruncate(fileno(fp), 16 * 1024 * 1024 + 1) == 0, "making a sparse file");
    if (fp) fclose(fp);
    expect_fail("file over the bound", json_config_load(path, "big/config.json", &c), LCM_ERR_FORMAT,
                path, "larger", NULL);
    char *text = NULL;
    size_t len = 0;
    expect_fail("read_text_file over its bound", read_text_file(path, 100, &text, &len),
                LCM_ERR_FORMAT, path, NULL, NULL);
    CHECK(text == NULL, "no buffer on failure");

    // A bad file is named by the label the caller gave.
    test_path(path, sizeof path, "%s/bad.json", temp_root);
    write_text(path, "{\"sample_size\": 64,");
    expect_fail("truncated file", json_config_load(path, "vae/config.json", &c), LCM_ERR_FORMAT,
                "vae/config.json", NULL, NULL);
    write_text(path, "[\"not\", \"an\", \"object\"]");
    expect_fail("array file", json_config_load(path, NULL, &c), LCM_ERR_FORMAT, path, "object", NULL);

    write_text(path, "{\"sample_size\": 64}\n");
    CHECK_OK(json_config_load(path, "vae/config.json", &c));
    int64_t v = 0;
    CHECK_OK(json_config_int(&c, "sample_size", 1, 4096, &v));
    CHECK(v == 64 && !strcmp(c.label, "vae/config.json"), "loaded value and label");
    expect_fail("getter names the load label", json_config_int(&c, "in_channels", 1, 8, &v),
                LCM_ERR_FORMAT, "vae/config.json", "'in_channels'", NULL);
    json_config_free(&c);

    CHECK_OK(read_text_file(path, 100, &text, &len));
    CHECK(text && len == 20 && text[len] == '\0', "read_text_file NUL-terminates");
    free(text);
}

static void expect_folder_fail(const char *dir, lcm_status want, const char *detail) {
    model_folder folder;
    lcm_status st = model_folder_open(dir, "fp16", &folder);
    expect_fail(dir, st, want, dir, detail, NULL);
    CHECK(folder.root == NULL && folder.variant == NULL && folder.index.root == NULL,
          "%s: failed open leaves nothing to free", dir);
    model_folder_close(&folder);
}

static void test_model_folders(void) {
    char dir[512], path[600];
    test_path(dir, sizeof dir, "%s/no_such_model", temp_root);
    expect_folder_fail(dir, LCM_ERR_IO, "no such folder");

    test_path(path, sizeof path, "%s/plain_file", temp_root);
    write_text(path, "{}");
    expect_folder_fail(path, LCM_ERR_IO, "not a folder");

    test_path(dir, sizeof dir, "%s/empty_model", temp_root);
    make_dir(dir);
    expect_folder_fail(dir, LCM_ERR_IO, "model_index.json");

    test_path(dir, sizeof dir, "%s/broken_index", temp_root);
    make_dir(dir);
    test_path(path, sizeof path, "%s/model_index.json", dir);
    write_text(path, "{\"_class_name\": \"LatentConsistencyModelPipeline\", \"unet\": [");
    expect_folder_fail(dir, LCM_ERR_FORMAT, "model_index.json");
    write_text(path, "[\"diffusers\"]");
    expect_folder_fail(dir, LCM_ERR_FORMAT, "model_index.json");
    write_text(path, "");
    expect_folder_fail(dir, LCM_ERR_FORMAT, "model_index.json");

    // A well-formed pipeline folder with odd component entries: only [library, class] pairs count.
    write_text(path, "{\"_class_name\": \"LatentConsistencyModelPipeline\", \"unet\": [\"diffusers\","
                     " \"UNet2DConditionModel\"], \"safety_checker\": [null, null], \"vae\": \"x\","
                     " \"text_encoder\": [\"transformers\", \"CLIPTextModel\", 3]}");
    model_folder folder;
    CHECK_OK(model_folder_open(dir, "fp16", &folder));
    if (folder.root) {
        const char *cls = NULL;
        CHECK(folder.variant && !strcmp(folder.variant, "fp16"), "variant kept");
        CHECK(model_folder_pipeline_class(&folder) &&
                  !strcmp(model_folder_pipeline_class(&folder), "LatentConsistencyModelPipeline"),
              "pipeline class");
        CHECK(model_folder_has_component(&folder, "unet", &cls) && cls &&
                  !strcmp(cls, "UNet2DConditionModel"),
              "unet listed");
        CHECK(!model_folder_has_component(&folder, "safety_checker", NULL), "null component");
        CHECK(!model_folder_has_component(&folder, "vae", NULL), "string component entry");
        CHECK(!model_folder_has_component(&folder, "text_encoder", NULL), "3-entry component");
        CHECK(!model_folder_has_component(&folder, "controlnet", NULL), "absent component");
        // The component folder itself is missing.
        json_config c;
        expect_fail("missing component folder",
                    model_folder_load_config(&folder, "unet", "config.json", &c), LCM_ERR_IO, dir,
                    "'unet'", NULL);
        weight_set *ws = NULL;
        expect_fail("missing component weights",
                    model_folder_open_weights(&folder, "unet", "diffusion_pytorch_model", &ws),
                    LCM_ERR_IO, dir, "'unet'", NULL);
        CHECK(ws == NULL, "no weight set on failure");
        // A component folder with a broken config: the message says folder and component/file.
        char unet[600], config[700];
        test_path(unet, sizeof unet, "%s/unet", dir);
        make_dir(unet);
        test_path(config, sizeof config, "%s/config.json", unet);
        write_text(config, "{\"in_channels\": \"four\"}");
        CHECK_OK(model_folder_load_config(&folder, "unet", "config.json", &c));
        int64_t v;
        expect_fail("component config getter", json_config_int(&c, "in_channels", 1, 16, &v),
                    LCM_ERR_FORMAT, "unet/config.json", "in_channels", NULL);
        json_config_free(&c);
        write_text(config, "{\"in_channels\": 4");
        expect_fail("component config broken",
                    model_folder_load_config(&folder, "unet", "config.json", &c), LCM_ERR_FORMAT, dir,
                    "unet/config.json", NULL);
        expect_fail("component without weights",
                    model_folder_open_weights(&folder, "unet", "diffusion_pytorch_model", &ws),
                    LCM_ERR_IO, unet, "diffusion_pytorch_model.fp16.safetensors",
                    "diffusion_pytorch_model.safetensors");
    }
    model_folder_close(&folder);
    model_folder_close(&folder); // twice is harmless

    // A single-model folder: config.json at the root, no model_index.json.
    test_path(dir, sizeof dir, "%s/single", temp_root);
    make_dir(dir);
    test_path(path, sizeof path, "%s/config.json", dir);
    write_text(path, "{\"_class_name\": \"AutoencoderTiny\"}");
    CHECK_OK(model_folder_open(dir, NULL, &folder));
    CHECK(folder.root && folder.index.root == NULL && folder.variant == NULL &&
              model_folder_pipeline_class(&folder) == NULL &&
              !model_folder_has_component(&folder, "unet", NULL),
          "single-model folder");
    model_folder_close(&folder);
}

// Every model folder of the fixture set (a subfolder with model_index.json or config.json) opens.
static void test_fixture_folders(void) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    if (!d) return;
    int opened = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char dir[512], index[600], config[600];
        if (e->d_name[0] == '.') continue;
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        test_path(index, sizeof index, "%s/model_index.json", dir);
        test_path(config, sizeof config, "%s/config.json", dir);
        if (access(index, F_OK) != 0 && access(config, F_OK) != 0) continue;
        model_folder folder;
        CHECK_OK(model_folder_open(dir, "fp16", &folder));
        opened += folder.root != NULL;
        model_folder_close(&folder);
    }
    closedir(d);
    CHECK(opened > 0, "no model folder found under %s", root);
    fprintf(stderr, "opened %d fixture model folders\n", opened);
}

int main(void) {
    if (!mkdtemp(temp_root)) {
        fprintf(stderr, "FATAL: mkdtemp failed\n");
        return 2;
    }
    test_bad_documents();
    test_getters();
    test_files();
    test_model_folders();
    test_fixture_folders();
    nftw(temp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish();
}
