// ControlNetModel against the golden residuals: every folder under $LCM_FIXTURES whose config.json
// names a ControlNetModel is loaded, and each golden file in its golden/ folder holding
// `down_block_res_samples_0` is rerun from its stored inputs (sample, timestep,
// encoder_hidden_states, controlnet_cond, conditioning_scale). The control PNG named in the info
// must give the stored controlnet_cond (uint8 / 255). A ControlNet that does not fit a UNet
// (another fixture pipeline with different block widths) must be refused with a message naming it.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "io/image.h"
#include "io/model_folder.h"
#include "models/controlnet.h"
#include "models/unet.h"
#include "pipeline/control_image.h"
#include "testutil.h"

static tensor *golden_tensor(const st_file *file, const char *name) {
    const st_tensor *t = st_find(file, name);
    if (!t || t->ndim < 1 || t->ndim > TENSOR_MAX_DIMS) return NULL;
    tensor *out = tensor_new(t->ndim, t->shape);
    if (out && st_read_f32(file, t, out->data) != LCM_OK) tensor_replace(&out, NULL);
    return out;
}

// golden_compare, printing the max abs diff.
static void compare(const st_file *file, const char *name, const tensor *got, double rel_to_max) {
    int64_t n = 0;
    float *want = golden_f32(file, name, &n);
    if (want && got && tensor_numel(got) == n) {
        double max = 0;
        for (int64_t i = 0; i < n; i++) max = fmax(max, fabs((double)got->data[i] - want[i]));
        fprintf(stderr, "  %-28s max|diff| %.3g (max|ref| %.3g)\n", name, max, test_max_abs(want, (size_t)n));
    }
    free(want);
    golden_compare(file, name, got, 0, rel_to_max, true);
}

static void run_case(const controlnet_model *cn, const char *golden_dir, const char *path) {
    st_file *file;
    CHECK_OK(st_open(path, &file));
    if (!file) return;
    cJSON *info = golden_info(file);
    tensor *sample = golden_tensor(file, "sample"), *context = golden_tensor(file, "encoder_hidden_states");
    tensor *cond = golden_tensor(file, "controlnet_cond");
    const st_tensor *t = st_find(file, "timestep");
    int64_t timestep = 0;
    CHECK(t && t->numel == 1 && st_read_i64(file, t, &timestep) == LCM_OK, "%s: timestep", path);
    CHECK(sample && context && cond, "%s: sample, encoder_hidden_states or controlnet_cond missing", path);
    float scale = (float)golden_number(info, "conditioning_scale");

    // The control PNG, prepared as the pipeline does, is the stored controlnet_cond.
    char png[1400];
    test_path(png, sizeof png, "%s/%s", golden_dir, golden_string(info, "control_png"));
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    CHECK_OK(image_read_png(png, &rgb, &w, &h));
    if (rgb && cond) {
        tensor *prepared = NULL;
        CHECK_OK(control_image_prepare(rgb, w, h, w, h, 1, &prepared));
        if (prepared) compare(file, "controlnet_cond", prepared, 0);
        tensor_free(prepared);
    }
    free(rgb);

    int count = controlnet_get_config(cn)->unet.skip_count;
    tensor *down[UNET_MAX_SKIPS], *mid = NULL;
    if (sample && context && cond) {
        CHECK_OK(controlnet_forward(cn, sample, (float)timestep, context, cond, scale, down, &mid));
        if (mid) {
            for (int i = 0; i < count; i++) {
                char name[64];
                snprintf(name, sizeof name, "down_block_res_samples_%d", i);
                compare(file, name, down[i], 1e-4);
                tensor_free(down[i]);
            }
            compare(file, "mid_block_res_sample", mid, 1e-4);
            tensor_free(mid);
            char extra[64];
            snprintf(extra, sizeof extra, "down_block_res_samples_%d", count);
            CHECK(!st_find(file, extra), "%s: golden has more down residuals than %d", path, count);
        }
    }
    tensor_free(sample);
    tensor_free(context);
    tensor_free(cond);
    cJSON_Delete(info);
    st_close(file);
}

// A copy of the ControlNet folder in `tmp` whose config.json has `field` set to the JSON `value`
// (weights linked). Returns false when it cannot be made.
static bool variant_folder(const char *dir, const char *tmp, const char *field, const char *value) {
    char path[1200], cmd[4096];
    test_path(path, sizeof path, "%s/config.json", dir);
    json_config c;
    if (json_config_load(path, NULL, &c) != LCM_OK) return false;
    cJSON_ReplaceItemInObjectCaseSensitive(c.root, field, cJSON_Parse(value));
    char *text = cJSON_Print(c.root);
    json_config_free(&c);
    test_path(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && ln -s '%s'/diffusion_pytorch_model.safetensors '%s'/",
              tmp, tmp, dir, tmp);
    bool ok = text && test_run(cmd, NULL, 0) == 0;
    test_path(path, sizeof path, "%s/config.json", tmp);
    FILE *fp = ok ? fopen(path, "w") : NULL;
    if (fp) {
        fputs(text, fp);
        fclose(fp);
    }
    cJSON_free(text);
    return fp != NULL;
}

// controlnet_conditioning_channel_order "bgr": the same network fed the channel-reversed image
// gives the same residuals; global_pool_conditions true is refused naming the field.
static void check_config_variants(const char *dir, const char *golden_path) {
    char tmp[] = "/tmp/lcm-controlnet-XXXXXX";
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    char bgr_dir[1200], pool_dir[1200];
    test_path(bgr_dir, sizeof bgr_dir, "%s/bgr", tmp);
    test_path(pool_dir, sizeof pool_dir, "%s/pool", tmp);
    st_file *file = NULL;
    CHECK_OK(st_open(golden_path, &file));
    controlnet_model *bgr = NULL;
    if (file && variant_folder(dir, bgr_dir, "controlnet_conditioning_channel_order", "\"bgr\"")) {
        CHECK_OK(controlnet_load(test_backend_for(LCM_PRECISION_FP32), bgr_dir, NULL, false, &bgr));
        tensor *sample = golden_tensor(file, "sample"), *context = golden_tensor(file, "encoder_hidden_states");
        tensor *cond = golden_tensor(file, "controlnet_cond");
        cJSON *info = golden_info(file);
        int64_t timestep = 0;
        const st_tensor *t = st_find(file, "timestep");
        if (t) st_read_i64(file, t, &timestep);
        if (bgr && sample && context && cond) {
            // Reverse the channels of the stored RGB image; the BGR ControlNet reverses them back.
            tensor *reversed = tensor_copy(cond);
            int64_t c = cond->shape[1], plane = cond->shape[2] * cond->shape[3];
            for (int64_t k = 0; k < c; k++)
                memcpy(reversed->data + k * plane, cond->data + (c - 1 - k) * plane, sizeof(float) * plane);
            tensor *down[UNET_MAX_SKIPS], *mid = NULL;
            CHECK_OK(controlnet_forward(bgr, sample, (float)timestep, context, reversed,
                                        (float)golden_number(info, "conditioning_scale"), down, &mid));
            if (mid) {
                compare(file, "mid_block_res_sample", mid, 1e-4);
                compare(file, "down_block_res_samples_0", down[0], 1e-4);
                for (int i = 0; i < controlnet_get_config(bgr)->unet.skip_count; i++) tensor_free(down[i]);
                tensor_free(mid);
            }
            tensor_free(reversed);
        }
        tensor_free(sample);
        tensor_free(context);
        tensor_free(cond);
        cJSON_Delete(info);
        controlnet_free(bgr);
    }
    if (variant_folder(dir, pool_dir, "global_pool_conditions", "true")) {
        controlnet_model *pool = NULL;
        lcm_status st = controlnet_load(test_backend_for(LCM_PRECISION_FP32), pool_dir, NULL,
                                        false, &pool);
        CHECK(st == LCM_ERR_UNSUPPORTED && !pool && strstr(lcm_last_error(), "global_pool_conditions") &&
                  strstr(lcm_last_error(), pool_dir),
              "global_pool_conditions true: %s: %s", lcm_status_name(st), lcm_last_error());
        fprintf(stderr, "refused as expected: %s\n", lcm_last_error());
    }
    st_close(file);
    char cmd[1200];
    test_path(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    test_run(cmd, NULL, 0);
}

static bool is_controlnet(const char *dir) {
    char path[1200];
    test_path(path, sizeof path, "%s/config.json", dir);
    json_config c;
    if (json_config_load(path, NULL, &c) != LCM_OK) return false;
    const char *cls = NULL;
    bool yes = json_config_string(&c, "_class_name", &cls) == LCM_OK && !strcmp(cls, "ControlNetModel");
    json_config_free(&c);
    return yes;
}

// Every pipeline folder's UNet: the ControlNet must be accepted exactly when its skip channels match.
static int check_fits(const controlnet_model *cn, const char *cn_dir, const char *root) {
    DIR *d = opendir(root);
    struct dirent *e;
    int refused = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        model_folder folder;
        if (model_folder_open(dir, NULL, &folder) != LCM_OK) continue;
        json_config c;
        unet_config ucfg;
        bool parsed = folder.index.root && model_folder_load_config(&folder, "unet", "config.json", &c) == LCM_OK;
        if (parsed) {
            parsed = unet_config_parse(&c, "UNet2DConditionModel", false, &ucfg) == LCM_OK;
            json_config_free(&c);
        }
        model_folder_close(&folder);
        if (!parsed) continue;
        const unet_config *own = &controlnet_get_config(cn)->unet;
        int a[UNET_MAX_SKIPS], b[UNET_MAX_SKIPS];
        unet_skip_channels(own, a);
        unet_skip_channels(&ucfg, b);
        bool same = own->skip_count == ucfg.skip_count && own->in_channels == ucfg.in_channels &&
                    own->cross_attention_dim == ucfg.cross_attention_dim;
        for (int i = 0; same && i < own->skip_count; i++) same = a[i] == b[i];
        lcm_status st = controlnet_check_fits(cn, &ucfg, dir);
        if (same) {
            CHECK(st == LCM_OK, "ControlNet %s refused for %s: %s", cn_dir, dir, lcm_last_error());
        } else {
            CHECK(st == LCM_ERR_UNSUPPORTED && strstr(lcm_last_error(), cn_dir) && strstr(lcm_last_error(), dir),
                  "ControlNet %s vs %s: expected a refusal naming both, got %s: %s", cn_dir, dir,
                  lcm_status_name(st), lcm_last_error());
            fprintf(stderr, "refused as expected: %s\n", lcm_last_error());
            refused++;
        }
    }
    if (d) closedir(d);
    return refused;
}

int main(void) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    struct dirent *e;
    int cases = 0, refused = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], golden_dir[1100];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        if (!is_controlnet(dir)) continue;
        controlnet_model *cn = NULL;
        CHECK_OK(controlnet_load(test_backend_for(LCM_PRECISION_FP32), dir, NULL, false, &cn));
        if (!cn) continue;
        refused += check_fits(cn, dir, root);
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        char **names;
        int n = test_list_files(golden_dir, "", ".safetensors", &names);
        for (int i = 0; i < n; i++) {
            char path[1400];
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            st_file *f;
            if (st_open(path, &f) != LCM_OK) continue;
            bool stage = st_find(f, "down_block_res_samples_0") != NULL;
            st_close(f);
            if (!stage) continue;
            fprintf(stderr, "%s\n", path);
            run_case(cn, golden_dir, path);
            if (cases == 0) check_config_variants(dir, path);
            cases++;
        }
        test_free_list(names, n);
        controlnet_free(cn);
    }
    if (d) closedir(d);
    CHECK(cases > 0, "no ControlNet golden cases under %s", root);
    CHECK(refused > 0, "no fixture UNet to check a ControlNet mismatch against");

    // A folder that is not there: the error names it.
    controlnet_model *none = NULL;
    lcm_status st = controlnet_load(test_backend_for(LCM_PRECISION_FP32),
                                    "/nonexistent/controlnet", NULL, false, &none);
    CHECK(st != LCM_OK && !none && strstr(lcm_last_error(), "/nonexistent/controlnet"),
          "missing ControlNet folder: %s", lcm_last_error());
    return test_finish();
}
