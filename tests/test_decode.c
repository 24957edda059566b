// The pipeline's decode choices (pipeline/decode.h): TAESD as the VAE against the whole-pipeline
// goldens, per-step previews, the tiling choice (OFF / ON / AUTO with a budget) and the memory
// estimates.
//
// Cases are discovered: every folder F under $LCM_FIXTURES with an AutoencoderTiny config.json and
// F/golden/pipeline_*.safetensors is run on the LCM pipeline folder its note names
// ("from_pretrained(NAME)"; else the first LatentConsistencyModelPipeline folder) with TAESD = F.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "io/json_config.h"
#include "io/model_folder.h"
#include "pipeline/decode.h"
#include "pipeline/pipeline.h"
#include "testutil.h"

// ---- helpers -------------------------------------------------------------------------------------

static bool is_class(const char *dir, const char *file, const char *cls) {
    char path[PATH_MAX * 2];
    test_path(path, sizeof path, "%s/%s", dir, file);
    json_config c;
    if (access(path, F_OK) != 0 || json_config_load(path, NULL, &c) != LCM_OK) return false;
    const char *name = NULL;
    bool yes = json_config_string_or(&c, "_class_name", "", &name) == LCM_OK && !strcmp(name, cls);
    json_config_free(&c);
    return yes;
}

// The first LatentConsistencyModelPipeline folder under root (into buf); false if none.
static bool find_lcm_pipeline(const char *root, const char *preferred, char *buf, size_t size) {
    if (preferred) {
        test_path(buf, size, "%s/%s", root, preferred);
        if (is_class(buf, "model_index.json", "LatentConsistencyModelPipeline")) return true;
    }
    DIR *d = opendir(root);
    struct dirent *e;
    bool found = false;
    while (d && !found && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        test_path(buf, size, "%s/%s", root, e->d_name);
        found = is_class(buf, "model_index.json", "LatentConsistencyModelPipeline");
    }
    if (d) closedir(d);
    return found;
}

typedef struct previews {
    int calls, last_step, total_steps, width, height;
    bool sizes_ok, order_ok;
    uint8_t *last; // copy of the last preview of image 0
    size_t last_size;
} previews;

static void on_preview(void *user, int steps_done, int total_steps, int index,
                       const lcm_image *preview) {
    previews *s = user;
    s->calls++;
    if (steps_done < s->last_step || steps_done > total_steps || index != 0) s->order_ok = false;
    s->last_step = steps_done;
    s->total_steps = total_steps;
    if (!preview || !preview->rgb || preview->width != s->width || preview->height != s->height)
        s->sizes_ok = false;
    if (!preview || !preview->rgb) return;
    size_t size = (size_t)preview->width * preview->height * 3;
    free(s->last);
    s->last = malloc(size);
    if (s->last) memcpy(s->last, preview->rgb, size);
    s->last_size = size;
}

typedef struct trace_state {
    const st_file *golden;
    int compared;
    tensor *last_denoised;
} trace_state;

static void on_trace(void *user, const char *name, const tensor *value) {
    trace_state *s = user;
    if (strstr(name, ".denoised")) {
        tensor_free(s->last_denoised);
        s->last_denoised = tensor_copy(value);
    }
    if (!s->golden || !st_find(s->golden, name)) return;
    // Same tolerances as test_pipeline.c: the guidance embedding's fp32 sin/cos propagates.
    double abs_tol = 0, rel = 1e-3;
    if (!strcmp(name, "prompt_embeds")) abs_tol = 1e-4, rel = 1e-4;
    else if (!strcmp(name, "timestep_cond")) abs_tol = 2e-3, rel = 0;
    else if (!strcmp(name, "initial_latents") || strstr(name, "scheduler_noise")) abs_tol = 2e-6, rel = 0;
    else if (!strcmp(name, "image_decoded")) abs_tol = 4e-3, rel = 0;
    golden_compare(s->golden, name, value, abs_tol, rel, true);
    s->compared++;
}

// image_float abs 2e-3 and mean 1e-4; uint8 within 1 with at most 0.5% differing (README 8).
static void check_images(const st_file *golden, const tensor *image, const char *label) {
    int64_t n = image->shape[0], h = image->shape[2], w = image->shape[3];
    size_t count = (size_t)(n * h * w * 3);
    float *got = malloc(count * sizeof(float));
    uint8_t *got_u8 = malloc(count);
    vae_image_to_float_nhwc(image, got);
    for (int64_t b = 0; b < n; b++) CHECK_OK(vae_image_to_rgb8(image, (int)b, got_u8 + b * h * w * 3));
    int64_t numel = 0;
    float *want = golden_f32(golden, "image_float", &numel);
    CHECK(want && (size_t)numel == count, "%s: image_float missing or wrong size", label);
    if (want && (size_t)numel == count) {
        double max_diff = 0, mean = 0;
        for (size_t i = 0; i < count; i++) {
            double d = fabs((double)got[i] - want[i]);
            max_diff = fmax(max_diff, d);
            mean += d;
        }
        mean /= (double)count;
        fprintf(stderr, "  %s image_float max|diff| %.3g (tol 2e-3), mean %.3g (tol 1e-4)\n", label,
                max_diff, mean);
        test_close("image_float", got, want, count, 2e-3, 0);
        CHECK(mean <= 1e-4, "%s: image_float mean abs diff %.3g > 1e-4", label, mean);
    }
    free(want);
    const st_tensor *t = st_find(golden, "image_uint8");
    CHECK(t && (size_t)t->numel == count, "%s: image_uint8 missing or wrong size", label);
    if (t && (size_t)t->numel == count) {
        const uint8_t *ref = t->data;
        size_t differ = 0, worse = 0;
        for (size_t i = 0; i < count; i++) {
            int d = abs((int)got_u8[i] - (int)ref[i]);
            differ += d != 0;
            worse += d > 1;
        }
        fprintf(stderr, "  %s uint8: %zu of %zu differ, %zu by more than 1\n", label, differ, count,
                worse);
        CHECK(worse == 0 && differ * 200 <= count, "%s: uint8 image: %zu differ, %zu by more than 1",
              label, differ, worse);
    }
    free(got);
    free(got_u8);
}

// ---- TAESD pipeline goldens + TAESD previews ----------------------------------------------------

static void run_taesd_case(lcm_pipeline *p, const char *path) {
    st_file *golden = NULL;
    CHECK_OK(st_open(path, &golden));
    if (!golden) return;
    fprintf(stderr, "%s\n", path);
    cJSON *info = golden_info(golden);
    lcm_request r;
    golden_request(info, &r);
    previews pv = {.width = r.width, .height = r.height, .sizes_ok = true, .order_ok = true};
    r.preview = on_preview;
    r.preview_user_data = &pv;
    trace_state state = {.golden = golden};
    tensor *image = NULL;
    CHECK_OK(generate_run(p, &r, on_trace, &state, &image));
    fprintf(stderr, "  %d intermediates compared\n", state.compared);
    CHECK(state.compared >= 5, "%s: only %d intermediates compared", path, state.compared);
    // decoder_input == the last denoised latents (TAESD's scaling_factor is 1).
    if (state.last_denoised)
        golden_compare(golden, "decoder_input", state.last_denoised, 0, 1e-3, true);
    if (image) check_images(golden, image, "taesd pipeline");

    // Previews: one per step (batch 1), TAESD-decoded at full size, the last = the final image.
    fprintf(stderr, "  previews: %d calls for %d steps, last %d/%d\n", pv.calls, r.steps,
            pv.last_step, pv.total_steps);
    CHECK(pv.calls == r.steps && pv.last_step == r.steps && pv.total_steps == r.steps && pv.order_ok,
          "%s: %d previews for %d steps", path, pv.calls, r.steps);
    CHECK(pv.sizes_ok, "%s: TAESD previews must be %dx%d", path, r.width, r.height);
    if (image && pv.last) {
        uint8_t *rgb = malloc(pv.last_size);
        CHECK_OK(vae_image_to_rgb8(image, 0, rgb));
        CHECK(!memcmp(rgb, pv.last, pv.last_size),
              "%s: the last TAESD preview differs from the TAESD decode of the final latents", path);
        free(rgb);
    }
    free(pv.last);
    tensor_free(state.last_denoised);
    tensor_free(image);
    cJSON_Delete(info);
    st_close(golden);
}

// The LCM pipeline folder named by the golden's note ("from_pretrained(NAME)"), else any.
static bool base_pipeline_for(const char *root, const char *golden_path, char *buf, size_t size) {
    st_file *g = NULL;
    char name[256] = "";
    if (st_open(golden_path, &g) == LCM_OK) {
        cJSON *info = golden_info(g);
        const cJSON *note = cJSON_GetObjectItemCaseSensitive(info, "note");
        const char *at = cJSON_IsString(note) ? strstr(note->valuestring, "from_pretrained(") : NULL;
        if (at) sscanf(at, "from_pretrained(%255[^)])", name);
        cJSON_Delete(info);
        st_close(g);
    }
    return find_lcm_pipeline(root, name[0] ? name : NULL, buf, size);
}

static int test_taesd_pipelines(const char *root) {
    DIR *d = opendir(root);
    struct dirent *e;
    int cases = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[PATH_MAX], golden_dir[PATH_MAX * 2], path[PATH_MAX * 3], base[PATH_MAX];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        if (!is_class(dir, "config.json", "AutoencoderTiny")) continue;
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        char **names = NULL;
        int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
        for (int i = 0; i < n; i++) {
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            CHECK(base_pipeline_for(root, path, base, sizeof base), "%s: no LCM pipeline folder", path);
            lcm_pipeline_options options;
            lcm_pipeline_options_init(&options);
            options.taesd = dir;
            lcm_pipeline *p = NULL;
            CHECK_OK(lcm_pipeline_open(base, &options, &p));
            if (p) {
                decode_plan plan;
                CHECK_OK(decode_choose(p, 1, 8, 8, &plan));
                CHECK(plan.method == DECODE_TAESD, "a pipeline with TAESD decodes with it");
                run_taesd_case(p, path);
                cases++;
            }
            lcm_pipeline_close(p);
        }
        test_free_list(names, n);
    }
    if (d) closedir(d);
    return cases;
}

// ---- VAE pipeline: projection previews and tiling choices ------------------------------------

static void test_projection_previews(lcm_pipeline *p) {
    lcm_request r;
    lcm_request_init(&r);
    r.prompt = "a red house";
    r.steps = 2;
    r.batch = 2;
    r.width = 64;
    r.height = 48;
    int factor = vae_get_config(p->vae)->downscale_factor;
    previews pv = {.width = r.width / factor, .height = r.height / factor, .sizes_ok = true,
                   .order_ok = true};
    r.preview = on_preview;
    r.preview_user_data = &pv;
    trace_state state = {0};
    tensor *image = NULL;
    CHECK_OK(generate_run(p, &r, on_trace, &state, &image));
    fprintf(stderr, "projection previews: %d calls for %d steps x batch %d, %dx%d\n", pv.calls,
            r.steps, r.batch, pv.width, pv.height);
    CHECK(pv.calls == r.steps * r.batch, "%d preview calls, expected %d", pv.calls, r.steps * r.batch);
    CHECK(pv.sizes_ok, "projection previews must be at latent size %dx%d", pv.width, pv.height);
    // The last call is image 1 of the last step: the projection of those latents.
    lcm_image want = {0};
    if (state.last_denoised) CHECK_OK(latent_rgb_preview(state.last_denoised, 1, &want));
    CHECK(want.rgb && pv.last && !memcmp(want.rgb, pv.last, pv.last_size),
          "the last preview must be the projection of the final latents of image 1");
    free(want.rgb);
    free(pv.last);
    tensor_free(state.last_denoised);
    tensor_free(image);

    // The projection itself: zero latents are mid grey; a strong channel 4 is yellow-ish dark blue.
    tensor *z = tensor_zeros(4, (int64_t[]){1, 4, 2, 3});
    lcm_image grey = {0};
    CHECK_OK(latent_rgb_preview(z, 0, &grey));
    CHECK(grey.width == 3 && grey.height == 2 && grey.rgb && grey.rgb[0] == 128 && grey.rgb[17] == 128,
          "zero latents must preview as mid grey");
    free(grey.rgb);
    CHECK(latent_rgb_preview(z, 1, &grey) == LCM_ERR_INVALID_ARGUMENT, "index out of range must fail");
    tensor_free(z);
}

static void test_tiling_choices(const char *dir) {
    const int modes[] = {LCM_VAE_TILING_OFF, LCM_VAE_TILING_ON, LCM_VAE_TILING_AUTO, LCM_VAE_TILING_AUTO};
    const uint64_t budgets[] = {0, 0, 1, UINT64_MAX / 2};
    const decode_method expected_big[] = {DECODE_VAE, DECODE_VAE_TILED, DECODE_VAE_TILED, DECODE_VAE};
    for (int k = 0; k < 4; k++) {
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        options.vae_tiling = (lcm_vae_tiling)modes[k];
        options.memory_budget = budgets[k];
        lcm_pipeline *p = NULL;
        CHECK_OK(lcm_pipeline_open(dir, &options, &p));
        if (!p) continue;
        vae_tiling t;
        CHECK_OK(vae_tiling_defaults(vae_get_config(p->vae), &t));
        // Latents one tile wide are never tiled; 1.5 tiles tall are, when tiling is chosen.
        int64_t small = t.tile_latent_min_size, big = t.tile_latent_min_size * 3 / 2;
        decode_plan plan;
        CHECK_OK(decode_choose(p, 1, small, small, &plan));
        CHECK(plan.method == DECODE_VAE, "mode %d: %lldx%lld latents fit one tile", modes[k],
              (long long)small, (long long)small);
        CHECK_OK(decode_choose(p, 1, big, small, &plan));
        fprintf(stderr, "tiling mode %d budget %llu: %lldx%lld latents -> method %d, tile %d px, "
                "estimate %.3g MB\n", modes[k], (unsigned long long)budgets[k], (long long)big,
                (long long)small, plan.method, plan.tiling.tile_sample_min_size, plan.working_bytes / 1e6);
        CHECK(plan.method == expected_big[k], "mode %d budget %llu: method %d, expected %d", modes[k],
              (unsigned long long)budgets[k], plan.method, expected_big[k]);
        if (plan.method == DECODE_VAE_TILED) {
            // The pipeline's tiled decode is vae_decode_tiled of denoised / scaling_factor.
            tensor *denoised = tensor_new4(1, vae_get_config(p->vae)->latent_channels, big, small);
            for (int64_t i = 0; i < tensor_numel(denoised); i++)
                denoised->data[i] = (float)sin((double)i * 0.37) * 0.8f;
            tensor *got = NULL, *scaled = tensor_copy(denoised), *want = NULL;
            for (int64_t i = 0; i < tensor_numel(scaled); i++)
                scaled->data[i] /= vae_get_config(p->vae)->scaling_factor;
            CHECK_OK(pipeline_decode(p, denoised, &got));
            CHECK_OK(vae_decode_tiled(p->vae, scaled, &plan.tiling, NULL, NULL, &want));
            CHECK(got && want && tensor_numel(got) == tensor_numel(want) &&
                      !memcmp(got->data, want->data, sizeof(float) * (size_t)tensor_numel(want)),
                  "pipeline_decode with tiling must equal vae_decode_tiled");
            CHECK(got && got->shape[2] == big * 8 && got->shape[3] == small * 8, "tiled image size");
            tensor_free(got);
            tensor_free(want);
            tensor_free(scaled);
            tensor_free(denoised);
        }
        lcm_pipeline_close(p);
    }
    // A bad enum value is rejected.
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    options.vae_tiling = (lcm_vae_tiling)7;
    lcm_pipeline *p = NULL;
    CHECK(lcm_pipeline_open(dir, &options, &p) == LCM_ERR_INVALID_ARGUMENT && !p &&
              strstr(lcm_last_error(), "vae_tiling"),
          "vae_tiling 7 must be rejected naming the field: %s", lcm_last_error());
    // A TAESD folder that is not one is an error naming it.
    options.vae_tiling = LCM_VAE_TILING_AUTO;
    options.taesd = dir;
    CHECK(lcm_pipeline_open(dir, &options, &p) != LCM_OK && !p && strstr(lcm_last_error(), dir),
          "a pipeline folder as TAESD must fail naming it: %s", lcm_last_error());
}

// ---- memory estimates on the real VAE config ----------------------------------------------------

static void test_estimates(const char *root) {
    char configs[PATH_MAX], dir[PATH_MAX * 2];
    test_path(configs, sizeof configs, "%s/configs", root);
    DIR *d = opendir(configs);
    struct dirent *e;
    int tested = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        test_path(dir, sizeof dir, "%s/%s", configs, e->d_name);
        if (!is_class(dir, "model_index.json", "LatentConsistencyModelPipeline") ||
            !is_class(dir, "vae/config.json", "AutoencoderKL"))
            continue;
        // Load just the config through a synthetic weight set (no weight files needed).
        model_folder folder;
        weight_recorder *rec = NULL;
        CHECK_OK(weight_recorder_new(1, &rec));
        CHECK_OK(model_folder_open(dir, NULL, &folder));
        folder.synthetic = rec;
        vae_model *vae = NULL;
        CHECK_OK(vae_load(test_backend_for(LCM_PRECISION_FP32), &folder, "vae", &vae));
        model_folder_close(&folder);
        if (vae) {
            const vae_config *cfg = vae_get_config(vae);
            vae_tiling t;
            CHECK_OK(vae_tiling_defaults(cfg, &t));
            double e512 = decode_vae_working_bytes(cfg, 1, 64, 64);
            double e1024 = decode_vae_working_bytes(cfg, 1, 128, 128);
            double tiled1024 = decode_vae_tiled_working_bytes(cfg, &t, 1, 128, 128);
            fprintf(stderr, "%s: untiled decode estimate 512px %.2f GB, 1024px %.2f GB; tiled (%d px "
                    "tiles) 1024px %.2f GB\n", dir, e512 / 1e9, e1024 / 1e9, t.tile_sample_min_size,
                    tiled1024 / 1e9);
            CHECK(e1024 > 3.5 * e512 && e1024 < 4.5 * e512, "the estimate grows with the pixels");
            CHECK(tiled1024 < e1024, "tiles must need less memory than the whole image");
            tested++;
        }
        vae_free(vae);
        weight_recorder_free(rec);
    }
    if (d) closedir(d);
    fprintf(stderr, "%d real VAE configs estimated\n", tested);
}

int main(void) {
    const char *root = test_fixtures();
    int cases = test_taesd_pipelines(root);
    fprintf(stderr, "%d TAESD pipeline golden cases\n", cases);
    CHECK(cases > 0, "no TAESD pipeline goldens under %s", root);
    char dir[PATH_MAX];
    CHECK(find_lcm_pipeline(root, NULL, dir, sizeof dir), "no LCM pipeline folder under %s", root);
    lcm_pipeline *p = NULL;
    CHECK_OK(lcm_pipeline_open(dir, NULL, &p));
    if (p) test_projection_previews(p);
    lcm_pipeline_close(p);
    test_tiling_choices(dir);
    test_estimates(root);
    return test_finish();
}
