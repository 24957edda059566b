// `lcm info` end to end: every model folder under the fixture root is described with exit 0, and
// the parameter count printed for each component equals the element count summed here, straight
// from the safetensors headers (without the library's reader). Then the fp16 variant rule and the
// error exits (missing folder, missing component, malformed config).
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define OUTPUT_CAP (1 << 20)

static char output[OUTPUT_CAP];

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int run_info(const char *dir, const char *extra) {
    char cmd[8192];
    test_path(cmd, sizeof cmd, "'%s' info --model '%s' %s 2>&1", test_lcm_bin(), dir, extra);
    return test_run(cmd, output, sizeof output);
}

// Sum of the element counts of every tensor in a .safetensors file, read from its JSON header
// (8-byte little-endian length + JSON). -1 if the file cannot be read.
static long long count_elements(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char len_bytes[8];
    long long total = -1;
    if (fread(len_bytes, 1, 8, f) == 8) {
        unsigned long long len = 0;
        for (int i = 7; i >= 0; i--) len = len << 8 | len_bytes[i];
        char *header = len < (1u << 30) ? malloc(len + 1) : NULL;
        if (header && fread(header, 1, len, f) == len) {
            header[len] = '\0';
            cJSON *root = cJSON_Parse(header);
            const cJSON *entry;
            total = root ? 0 : -1;
            cJSON_ArrayForEach(entry, root) {
                if (!strcmp(entry->string, "__metadata__")) continue;
                long long numel = 1;
                const cJSON *dim;
                cJSON_ArrayForEach(dim, cJSON_GetObjectItem(entry, "shape")) numel *=
                    (long long)dim->valuedouble;
                total += numel;
            }
            cJSON_Delete(root);
        }
        free(header);
    }
    fclose(f);
    return total;
}

// The section of component `name` in the text output ("name: Class ..." up to the blank line),
// copied into buf. False when absent.
static bool find_section(const char *text, const char *name, char *buf, size_t size) {
    char header[256];
    snprintf(header, sizeof header, "\n%s: ", name);
    const char *start = strstr(text, header);
    if (!start) return false;
    start++;
    const char *end = strstr(start, "\n\n");
    size_t len = end ? (size_t)(end - start) : strlen(start);
    if (len >= size) len = size - 1;
    memcpy(buf, start, len);
    buf[len] = '\0';
    return true;
}

static long long section_number(const char *section, const char *key) {
    char needle[128];
    snprintf(needle, sizeof needle, "\n  %s: ", key);
    const char *p = strstr(section, needle);
    return p ? strtoll(p + strlen(needle), NULL, 10) : -1;
}

static bool section_has_line(const char *section, const char *line) {
    size_t len = strlen(line);
    for (const char *p = section; (p = strstr(p, line)) != NULL; p++)
        if ((p == section || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0')) return true;
    return false;
}

// Checks one component: the printed weights file and parameter count. `relative` is the weights
// file the variant rule should pick, relative to the model folder.
static void check_component(const char *dir, const char *name, const char *relative,
                            const char *want_dtype) {
    char section[16384], path[8192], line[1024];
    if (!find_section(output, name, section, sizeof section)) {
        CHECK(false, "%s: no section for component '%s' in:\n%s", dir, name, output);
        return;
    }
    test_path(path, sizeof path, "%s/%s", dir, relative);
    long long want = count_elements(path), got = section_number(section, "parameters");
    CHECK(want > 0, "%s: cannot read the header of %s", dir, path);
    CHECK(got == want, "%s: %s parameters printed %lld, header sum %lld", dir, name, got, want);
    snprintf(line, sizeof line, "  weights: %s", relative);
    CHECK(section_has_line(section, line), "%s: %s section lacks '%s':\n%s", dir, name, line,
          section);
    if (want_dtype) {
        snprintf(line, sizeof line, "  dtype: %s", want_dtype);
        CHECK(section_has_line(section, line), "%s: %s section lacks '%s':\n%s", dir, name, line,
              section);
    }
    fprintf(stderr, "  %-14s %-50s %lld parameters\n", name, relative, got);
}

// The weights file of a component folder ("" if none): the variant's file when asked and present.
static void component_weights(const char *dir, const char *component, const char *variant,
                              char *relative, size_t size) {
    static const char *const basenames[] = {"diffusion_pytorch_model", "model"};
    relative[0] = '\0';
    for (int with_variant = variant ? 1 : 0; with_variant >= 0 && !relative[0]; with_variant--)
        for (int b = 0; b < 2 && !relative[0]; b++) {
            char candidate[1024], path[8192];
            snprintf(candidate, sizeof candidate, "%s%s%s%s%s.safetensors", component,
                     component[0] ? "/" : "", basenames[b], with_variant ? "." : "",
                     with_variant ? variant : "");
            test_path(path, sizeof path, "%s/%s", dir, candidate);
            if (file_exists(path)) snprintf(relative, size, "%s", candidate);
        }
}

// A single-model folder with an unusual weights name: its only .safetensors file.
static void only_safetensors(const char *dir, char *relative, size_t size) {
    char **names;
    int n = test_list_files(dir, "", ".safetensors", &names);
    if (n == 1) snprintf(relative, size, "%s", names[0]);
    test_free_list(names, n);
}

// Checks the --json output against the text output's numbers.
static void check_json(const char *dir, const char *variant) {
    char extra[256];
    snprintf(extra, sizeof extra, "--json %s%s", variant ? "--variant " : "",
             variant ? variant : "");
    char *text_output = strdup(output);
    int rc = run_info(dir, extra);
    CHECK(rc == 0, "%s: info --json exit %d", dir, rc);
    cJSON *doc = cJSON_Parse(output);
    CHECK(doc != NULL, "%s: --json output is not JSON:\n%s", dir, output);
    const cJSON *component;
    int compared = 0;
    cJSON_ArrayForEach(component, cJSON_GetObjectItem(doc, "components")) {
        const cJSON *weights = cJSON_GetObjectItem(component, "weights");
        if (!weights) continue;
        char section[16384];
        const char *name = cJSON_GetObjectItem(component, "name")->valuestring;
        long long text_params = find_section(text_output, name, section, sizeof section)
                                    ? section_number(section, "parameters")
                                    : -1;
        long long json_params = (long long)cJSON_GetObjectItem(weights, "parameters")->valuedouble;
        CHECK(text_params == json_params, "%s: %s: json parameters %lld, text %lld", dir, name,
              json_params, text_params);
        compared++;
    }
    CHECK(compared > 0, "%s: --json lists no weights", dir);
    cJSON_Delete(doc);
    free(text_output);
}

// Runs `lcm info` on one folder and checks every component with weights. Returns the number of
// components whose variant file was used (when variant != NULL).
static int check_folder(const char *dir, const char *variant) {
    char extra[128] = "";
    if (variant) snprintf(extra, sizeof extra, "--variant %s", variant);
    int rc = run_info(dir, extra);
    fprintf(stderr, "%s%s%s: exit %d\n", dir, variant ? " --variant " : "", variant ? variant : "",
            rc);
    CHECK(rc == 0, "%s: lcm info exit %d:\n%s", dir, rc, output);
    if (rc != 0) return 0;

    char index_path[8192], relative[1024];
    test_path(index_path, sizeof index_path, "%s/model_index.json", dir);
    int variant_files = 0, checked = 0;
    if (!file_exists(index_path)) { // single-model folder
        component_weights(dir, "", variant, relative, sizeof relative);
        if (!relative[0]) only_safetensors(dir, relative, sizeof relative);
        CHECK(relative[0] != '\0', "%s: test found no weights file", dir);
        if (relative[0]) check_component(dir, "model", relative, NULL);
        checked++;
    } else {
        char *text = NULL;
        FILE *f = fopen(index_path, "rb");
        if (f) {
            text = calloc(1, 1 << 20);
            if (fread(text, 1, (1 << 20) - 1, f) == 0) text[0] = '\0';
            fclose(f);
        }
        cJSON *index = text ? cJSON_Parse(text) : NULL;
        free(text);
        CHECK(index != NULL, "%s: cannot parse model_index.json", dir);
        const cJSON *entry;
        cJSON_ArrayForEach(entry, index) {
            if (entry->string[0] == '_' || !cJSON_IsArray(entry) ||
                !cJSON_IsString(cJSON_GetArrayItem(entry, 1)))
                continue;
            component_weights(dir, entry->string, variant, relative, sizeof relative);
            if (!relative[0]) continue; // scheduler, tokenizer
            bool is_variant = variant && strstr(relative, ".fp16.") != NULL;
            // An fp16 variant file holds float16 weights; the plain files here are float32.
            check_component(dir, entry->string, relative, is_variant ? "F16" : NULL);
            variant_files += is_variant;
            checked++;
        }
        cJSON_Delete(index);
    }
    CHECK(checked > 0, "%s: no component with weights was checked", dir);
    check_json(dir, variant);
    return variant_files;
}

// ---- failures ----------------------------------------------------------------------------------

static void expect_exit_2(const char *dir, const char *needle, const char *what) {
    int rc = run_info(dir, "");
    CHECK(rc == 2, "%s: exit %d, want 2:\n%s", what, rc, output);
    CHECK(strstr(output, needle) != NULL, "%s: message does not mention '%s':\n%s", what, needle,
          output);
    fprintf(stderr, "  %s -> exit %d: %s", what, rc, output);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static void test_failures(void) {
    expect_exit_2("/nonexistent/lcm-model", "/nonexistent/lcm-model", "nonexistent folder");

    char root[] = "/tmp/lcm_test_cli_info_XXXXXX";
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        exit(2);
    }
    char index[256], unet_dir[256], unet_config[256];
    test_path(index, sizeof index, "%s/model_index.json", root);
    test_path(unet_dir, sizeof unet_dir, "%s/unet", root);
    test_path(unet_config, sizeof unet_config, "%s/config.json", unet_dir);

    expect_exit_2(root, "model_index.json", "folder without model_index.json");

    write_file(index, "{\"_class_name\": \"LatentConsistencyModelPipeline\", "
                      "\"unet\": [\"diffusers\", \"UNet2DConditionModel\"]}");
    expect_exit_2(root, "unet", "missing component folder");

    mkdir(unet_dir, 0700);
    write_file(unet_config, "{\"block_out_channels\": [32, 64], \"layers_per_block\": \"two\"}");
    expect_exit_2(root, "layers_per_block", "malformed config field");

    write_file(unet_config, "{\"block_out_channels\": [32, 64");
    expect_exit_2(root, "unet/config.json", "config that is not JSON");

    write_file(unet_config, "{\"block_out_channels\": [32, 64]}");
    expect_exit_2(root, "diffusion_pytorch_model", "missing weights");

    write_file(index, "[1, 2]");
    expect_exit_2(root, "model_index.json", "model_index.json not an object");

    unlink(unet_config);
    rmdir(unet_dir);
    unlink(index);
    rmdir(root);

    char cmd[4096];
    test_path(cmd, sizeof cmd, "'%s' info 2>&1", test_lcm_bin());
    int rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 2 && strstr(output, "--model"), "info without --model: exit %d: %s", rc, output);
}

int main(void) {
    const char *root = test_fixtures();
    char **names;
    int count = test_list_files(root, "", "", &names), folders = 0, fp16_components = 0;
    for (int i = 0; i < count; i++) {
        if (names[i][0] == '.') continue;
        char dir[4096], index[4200], config[4200];
        test_path(dir, sizeof dir, "%s/%s", root, names[i]);
        test_path(index, sizeof index, "%s/model_index.json", dir);
        test_path(config, sizeof config, "%s/config.json", dir);
        if (!file_exists(index) && !file_exists(config)) continue;
        check_folder(dir, NULL);
        folders++;
        if (file_exists(index)) fp16_components += check_folder(dir, "fp16");
    }
    test_free_list(names, count);
    CHECK(folders > 0, "no model folder (model_index.json or config.json) under %s", root);
    CHECK(fp16_components > 0, "no component with an .fp16.safetensors file under %s", root);
    test_failures();
    return test_finish();
}
