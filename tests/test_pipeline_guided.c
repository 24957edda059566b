// End-to-end golden tests of the pipelines beyond plain LCM text-to-image, from the seed alone:
//  - img2img: every `golden/img2img_*.safetensors` of an LCM pipeline folder (init image = the
//    stored init_image_uint8, strength from the info);
//  - SD1.5 + LCM-LoRA with classifier-free guidance: every `golden/pipeline_*.safetensors` of a
//    StableDiffusionPipeline folder; the LoRA file and scale are the ones its `note` names
//    (`load_lora_weights(DIR)`, `fuse_lora(lora_scale=S)`);
//  - ControlNet: every `golden/pipeline_*.safetensors` of a ControlNetModel folder, run on the
//    StableDiffusionPipeline folder whose UNet the ControlNet fits, with that folder's LoRA, the
//    control PNG named in the info and its conditioning scale.
// Every intermediate the pipeline traces is compared with the stored one; the final image with the
// README section 8 tolerances.
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
#include "models/vae.h"
#include "pipeline/pipeline.h"
#include "testutil.h"

typedef struct trace_state {
    const st_file *golden;
    int compared;
} trace_state;

static void on_trace(void *user, const char *name, const tensor *value) {
    trace_state *s = user;
    if (!st_find(s->golden, name)) return;
    double abs_tol = 0, rel = 1e-3;
    if (!strcmp(name, "prompt_embeds") || !strcmp(name, "negative_prompt_embeds")) abs_tol = 1e-4, rel = 1e-4;
    else if (!strcmp(name, "timestep_cond")) abs_tol = 2e-3, rel = 0;
    else if (!strcmp(name, "initial_latents") || strstr(name, "noise") == name + strlen(name) - 5 ||
             strstr(name, "scheduler_noise") || !strcmp(name, "enc.sample_noise") || !strcmp(name, "add_noise.noise"))
        abs_tol = 2e-6, rel = 0;
    else if (!strcmp(name, "controlnet_cond") || !strcmp(name, "image_preprocessed")) abs_tol = 0, rel = 0;
    else if (!strncmp(name, "enc.", 4) || !strcmp(name, "init_latents_scaled")) abs_tol = 0, rel = 1e-4;
    else if (!strcmp(name, "image_decoded")) abs_tol = 4e-3, rel = 0;
    int64_t n = 0;
    float *want = golden_f32(s->golden, name, &n);
    if (want && tensor_numel(value) == n) {
        double max = 0;
        for (int64_t i = 0; i < n; i++) max = fmax(max, fabs((double)value->data[i] - want[i]));
        fprintf(stderr, "  %-28s max|diff| %.3g (max|ref| %.3g)\n", name, max, test_max_abs(want, (size_t)n));
    }
    free(want);
    golden_compare(s->golden, name, value, abs_tol, rel, true);
    s->compared++;
}

static void check_images(const st_file *golden, const tensor *image) {
    int64_t n = image->shape[0], h = image->shape[2], w = image->shape[3];
    size_t count = (size_t)(n * h * w * 3);
    float *got_float = malloc(count * sizeof(float));
    uint8_t *got_u8 = malloc(count);
    vae_image_to_float_nhwc(image, got_float);
    for (int64_t b = 0; b < n; b++) CHECK_OK(vae_image_to_rgb8(image, (int)b, got_u8 + b * h * w * 3));
    int64_t numel;
    float *want = golden_f32(golden, "image_float", &numel);
    CHECK(want && (size_t)numel == count, "%s: image_float missing or wrong size", st_path(golden));
    if (want && (size_t)numel == count) {
        double mean = 0, max = 0;
        for (size_t i = 0; i < count; i++) {
            double d = fabs((double)got_float[i] - want[i]);
            mean += d;
            max = fmax(max, d);
        }
        mean /= (double)count;
        fprintf(stderr, "  image_float: max|diff| %.3g, mean %.3g\n", max, mean);
        test_close("image_float", got_float, want, count, 2e-3, 0);
        CHECK(mean <= 1e-4, "%s: image_float mean abs diff %.3g > 1e-4", st_path(golden), mean);
    }
    free(want);
    const st_tensor *t = st_find(golden, "image_uint8");
    CHECK(t && (size_t)t->numel == count, "%s: image_uint8 missing or wrong size", st_path(golden));
    if (t && (size_t)t->numel == count) {
        const uint8_t *ref = t->data;
        size_t differ = 0, worse = 0;
        for (size_t i = 0; i < count; i++) {
            int d = abs((int)got_u8[i] - (int)ref[i]);
            differ += d != 0;
            worse += d > 1;
        }
        fprintf(stderr, "  uint8 values differing: %zu of %zu (limit %zu), off by more than 1: %zu\n",
                differ, count, count / 200, worse);
        CHECK(worse == 0 && differ * 200 <= count, "%s: uint8 image: %zu differ, %zu by more than 1",
              st_path(golden), differ, worse);
    }
    free(got_float);
    free(got_u8);
}

// The LoRA a golden note names: "load_lora_weights(DIR)" (relative to the pipeline folder) and
// "fuse_lora(lora_scale=S)". Returns false when the note names none.
static bool lora_from_note(const char *note, const char *model_dir, char *path, size_t size, float *scale) {
    const char *a = strstr(note, "load_lora_weights(");
    if (!a) return false;
    a += strlen("load_lora_weights(");
    const char *b = strchr(a, ')');
    if (!b) return false;
    char dir[1024];
    test_path(dir, sizeof dir, "%s/%.*s", model_dir, (int)(b - a), a);
    char **names;
    int n = test_list_files(dir, "", ".safetensors", &names);
    CHECK(n == 1, "%s: expected one .safetensors LoRA file, found %d", dir, n);
    if (n >= 1) test_path(path, size, "%s/%s", dir, names[0]);
    test_free_list(names, n);
    const char *s = strstr(note, "fuse_lora(lora_scale=");
    *scale = s ? strtof(s + strlen("fuse_lora(lora_scale="), NULL) : 1.0f;
    return n >= 1;
}

// Opens the pipeline with the LoRA (when given) and the ControlNet (when given).
static lcm_pipeline *open_pipeline(const char *model_dir, const char *lora, float lora_scale,
                                   const char *controlnet) {
    lcm_pipeline_options o;
    lcm_pipeline_options_init(&o);
    lcm_lora adapter = {lora, lora_scale};
    if (lora) {
        o.loras = &adapter;
        o.lora_count = 1;
    }
    o.controlnet = controlnet;
    lcm_pipeline *p = NULL;
    lcm_status st = lcm_pipeline_open(model_dir, &o, &p);
    CHECK(st == LCM_OK, "opening %s: %s", model_dir, lcm_last_error());
    return p;
}

static void run_case(lcm_pipeline *p, const char *path, const char *golden_dir) {
    st_file *golden;
    CHECK_OK(st_open(path, &golden));
    if (!golden) return;
    fprintf(stderr, "%s\n", path);
    cJSON *info = golden_info(golden);
    lcm_request r;
    golden_request(info, &r);
    const cJSON *negative = cJSON_GetObjectItemCaseSensitive(info, "negative");
    if (cJSON_IsString(negative)) r.negative_prompt = negative->valuestring;
    lcm_image init = {0}, control = {0};
    if (cJSON_GetObjectItemCaseSensitive(info, "strength")) {
        r.strength = (float)golden_number(info, "strength");
        const st_tensor *t = st_find(golden, "init_image_uint8");
        CHECK(t && t->ndim == 3 && t->shape[2] == 3, "%s: init_image_uint8 missing", path);
        if (t) {
            init = (lcm_image){(int)t->shape[1], (int)t->shape[0], (uint8_t *)t->data};
            r.init_image = &init;
        }
    }
    uint8_t *control_rgb = NULL;
    if (cJSON_GetObjectItemCaseSensitive(info, "control_png")) {
        char png[1400];
        test_path(png, sizeof png, "%s/%s", golden_dir, golden_string(info, "control_png"));
        CHECK_OK(image_read_png(png, &control_rgb, &control.width, &control.height));
        control.rgb = control_rgb;
        r.control_image = &control;
        r.control_scale = (float)golden_number(info, "scale");
    }
    trace_state state = {.golden = golden};
    tensor *image = NULL;
    CHECK_OK(generate_run(p, &r, on_trace, &state, &image));
    CHECK(state.compared >= 10, "%s: only %d intermediates compared", path, state.compared);
    if (image) check_images(golden, image);
    fprintf(stderr, "%s: %d intermediates compared\n", path, state.compared);
    tensor_free(image);
    free(control_rgb);
    cJSON_Delete(info);
    st_close(golden);
}

// The LoRA named by the first golden note of a StableDiffusionPipeline folder.
static bool folder_lora(const char *dir, char *lora, size_t size, float *scale) {
    char golden_dir[1100];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
    char **names;
    int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
    bool found = false;
    for (int i = 0; i < n && !found; i++) {
        char path[1400];
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        st_file *f;
        if (st_open(path, &f) != LCM_OK) continue;
        cJSON *info = golden_info(f);
        const cJSON *note = cJSON_GetObjectItemCaseSensitive(info, "note");
        if (cJSON_IsString(note)) found = lora_from_note(note->valuestring, dir, lora, size, scale);
        cJSON_Delete(info);
        st_close(f);
    }
    test_free_list(names, n);
    return found;
}

// Request checks that need no generation: the negative-prompt guidance rule, and the combinations
// that are refused.
static void check_requests(const char *sd_dir, const char *lcm_dir) {
    lcm_pipeline *sd = open_pipeline(sd_dir, NULL, 1, NULL), *lcm = lcm_dir ? open_pipeline(lcm_dir, NULL, 1, NULL) : NULL;
    if (!sd) return;
    lcm_request r, resolved;
    lcm_request_init(&r);
    r.guidance_scale = 0.5f;
    r.negative_prompt = "blurry";
    CHECK_OK(generate_request_check(sd, &r, &resolved));
    CHECK(resolved.guidance_scale == 1.5f, "guidance 0.5 with a negative prompt resolved to %g, expected 1.5",
          resolved.guidance_scale);
    r.negative_prompt = NULL;
    CHECK_OK(generate_request_check(sd, &r, &resolved));
    CHECK(resolved.guidance_scale == 0.5f, "guidance 0.5 without a negative prompt became %g", resolved.guidance_scale);
    uint8_t pixel[3 * 64 * 64] = {0};
    lcm_image img = {64, 64, pixel};
    r.control_image = &img;
    lcm_status st = generate_request_check(sd, &r, &resolved);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), "ControlNet"),
          "control image without a ControlNet: %s", lcm_last_error());
    r.control_image = NULL;
    r.init_image = &img;
    r.strength = 0;
    st = generate_request_check(sd, &r, &resolved);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), "strength"), "strength 0: %s", lcm_last_error());
    r.strength = 0.5f;
    img.width = 70, img.height = 50; // default size: rounded down to multiples of 8
    r.width = r.height = 0;
    CHECK_OK(generate_request_check(sd, &r, &resolved));
    CHECK(resolved.width == 64 && resolved.height == 48, "init image 70x50 gives %dx%d, expected 64x48",
          resolved.width, resolved.height);
    if (lcm) {
        lcm_request_init(&r);
        r.negative_prompt = "blurry";
        st = generate_request_check(lcm, &r, &resolved);
        CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), "negative prompt"),
              "negative prompt on an LCM UNet: %s", lcm_last_error());
    }
    lcm_pipeline_close(sd);
    lcm_pipeline_close(lcm);
}

// Every option at once, with images of odd sizes: img2img + classifier-free guidance + ControlNet,
// init and control images resized. No golden exists for the combination: the run must succeed,
// give the requested size and finite values, and be reproducible.
static void check_combined(const char *sd_dir, const char *cn_dir) {
    lcm_pipeline *p = open_pipeline(sd_dir, NULL, 1, cn_dir);
    if (!p) return;
    enum { IW = 70, IH = 50, CW = 33, CH = 41 };
    static uint8_t init_rgb[IW * IH * 3], control_rgb[CW * CH * 3];
    for (int i = 0; i < IW * IH * 3; i++) init_rgb[i] = (uint8_t)(i * 31 + i / 7);
    for (int i = 0; i < CW * CH * 3; i++) control_rgb[i] = (i / 3) % CW < CW / 2 ? 0 : 255;
    lcm_image init = {IW, IH, init_rgb}, control = {CW, CH, control_rgb};
    lcm_request r;
    lcm_request_init(&r);
    r.prompt = "a fox";
    r.negative_prompt = "blurry";
    r.guidance_scale = 2.0f;
    r.steps = 2;
    r.seed = 5;
    r.batch = 2;
    r.init_image = &init;
    r.strength = 0.7f;
    r.control_image = &control;
    r.control_scale = 0.8f;
    tensor *a = NULL, *b = NULL;
    CHECK_OK(generate_run(p, &r, NULL, NULL, &a));
    CHECK_OK(generate_run(p, &r, NULL, NULL, &b));
    if (a && b) {
        CHECK(a->ndim == 4 && a->shape[0] == 2 && a->shape[1] == 3 && a->shape[2] == 48 && a->shape[3] == 64,
              "combined run gave [%lld, %lld, %lld, %lld], expected [2, 3, 48, 64]", (long long)a->shape[0],
              (long long)a->shape[1], (long long)a->shape[2], (long long)a->shape[3]);
        int64_t n = tensor_numel(a);
        int bad = 0;
        for (int64_t i = 0; i < n; i++) bad += !isfinite(a->data[i]);
        CHECK(bad == 0, "combined run: %d non-finite values", bad);
        CHECK(tensor_numel(b) == n && !memcmp(a->data, b->data, sizeof(float) * (size_t)n),
              "combined run is not reproducible");
        fprintf(stderr, "combined img2img + CFG + ControlNet run (batch 2, resized inputs): ok\n");
    }
    tensor_free(a);
    tensor_free(b);
    lcm_pipeline_close(p);
}

static int run_folder_cases(const char *model_dir, const char *golden_dir, const char *prefix,
                            const char *lora, float lora_scale, const char *controlnet) {
    char **names;
    int n = test_list_files(golden_dir, prefix, ".safetensors", &names);
    int cases = 0;
    if (n > 0) {
        lcm_pipeline *p = open_pipeline(model_dir, lora, lora_scale, controlnet);
        for (int i = 0; p && i < n; i++) {
            char path[1400];
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            run_case(p, path, golden_dir);
            cases++;
        }
        lcm_pipeline_close(p);
    }
    test_free_list(names, n);
    return cases;
}

int main(void) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    struct dirent *e;
    int img2img = 0, sd15 = 0, controlnet = 0;
    char sd_dirs[8][1024], lcm_dir[1024] = "";
    int sd_count = 0;
    char cn_dirs[8][1024];
    int cn_count = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], golden_dir[1100], cls[128];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        golden_folder_class(dir, cls, sizeof cls);
        if (!strcmp(cls, "LatentConsistencyModelPipeline")) {
            img2img += run_folder_cases(dir, golden_dir, "img2img_", NULL, 1, NULL);
            snprintf(lcm_dir, sizeof lcm_dir, "%s", dir);
        } else if (!strcmp(cls, "StableDiffusionPipeline") && sd_count < 8) {
            snprintf(sd_dirs[sd_count++], sizeof sd_dirs[0], "%s", dir);
        } else if (!strcmp(cls, "ControlNetModel") && cn_count < 8) {
            snprintf(cn_dirs[cn_count++], sizeof cn_dirs[0], "%s", dir);
        }
    }
    if (d) closedir(d);
    for (int i = 0; i < sd_count; i++) {
        char golden_dir[1100], lora[1400] = "";
        float scale = 1;
        test_path(golden_dir, sizeof golden_dir, "%s/golden", sd_dirs[i]);
        bool has_lora = folder_lora(sd_dirs[i], lora, sizeof lora, &scale);
        sd15 += run_folder_cases(sd_dirs[i], golden_dir, "pipeline_", has_lora ? lora : NULL, scale, NULL);
    }
    for (int c = 0; c < cn_count; c++) {
        controlnet_model *cn = NULL;
        CHECK_OK(controlnet_load(test_backend_for(LCM_PRECISION_FP32), cn_dirs[c], NULL, false,
                                 &cn));
        if (!cn) continue;
        char golden_dir[1100];
        test_path(golden_dir, sizeof golden_dir, "%s/golden", cn_dirs[c]);
        for (int i = 0; i < sd_count; i++) {
            model_folder folder;
            json_config cfg;
            unet_config ucfg;
            bool fits = false;
            if (model_folder_open(sd_dirs[i], NULL, &folder) == LCM_OK) {
                if (model_folder_load_config(&folder, "unet", "config.json", &cfg) == LCM_OK) {
                    fits = unet_config_parse(&cfg, "UNet2DConditionModel", false, &ucfg) == LCM_OK &&
                           controlnet_check_fits(cn, &ucfg, sd_dirs[i]) == LCM_OK;
                    json_config_free(&cfg);
                }
                model_folder_close(&folder);
            }
            if (!fits) continue;
            char lora[1400] = "";
            float scale = 1;
            bool has_lora = folder_lora(sd_dirs[i], lora, sizeof lora, &scale);
            controlnet += run_folder_cases(sd_dirs[i], golden_dir, "pipeline_", has_lora ? lora : NULL,
                                           scale, cn_dirs[c]);
            check_combined(sd_dirs[i], cn_dirs[c]);
            break;
        }
        controlnet_free(cn);
    }
    if (sd_count > 0) check_requests(sd_dirs[0], lcm_dir[0] ? lcm_dir : NULL);
    fprintf(stderr, "cases: img2img %d, SD1.5 %d, ControlNet %d\n", img2img, sd15, controlnet);
    CHECK(img2img > 0, "no img2img golden cases under %s", root);
    CHECK(sd15 > 0, "no StableDiffusionPipeline golden cases under %s", root);
    CHECK(controlnet > 0, "no ControlNet pipeline golden cases under %s", root);
    return test_finish();
}
