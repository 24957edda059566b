// LCMScheduler against diffusers 0.26.3 golden data.
//
// Discovered from $LCM_FIXTURES (nothing about the cases is hard-coded):
//  * every */golden/scheduler.safetensors: alphas_cumprod (bit-exactness reported), final_alpha_cumprod,
//    c_skip_all_t / c_out_all_t, every timesteps_N[_strength_0pS], and every step case (tensors named
//    CASE.step_index: step_mid, step_last, ...), with the model folder's own scheduler config;
//  * every */golden/pipeline_*.safetensors and img2img_*.safetensors: the timesteps for the info's
//    steps (and strength), and each stored step replayed through lcm_scheduler_step;
//  * every */golden/lcm_scheduler_config.json: the from_config conversion of that folder's scheduler
//    config, field by field;
// plus config and request validation and the schedules the fixtures do not use.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "pipeline/scheduler_config.h"
#include "sched/lcm_scheduler.h"
#include "testutil.h"

// ---------------------------------------------------------------------------------------------
// Helpers

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool dir_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

// Sorted names of the sub-folders of `dir` (malloc'd; test_free_list).
static int list_subdirs(const char *dir, char ***names) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "FATAL: cannot list '%s'\n", dir);
        exit(2);
    }
    int count = 0;
    char **list = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        test_path(path, sizeof path, "%s/%s", dir, e->d_name);
        if (!dir_exists(path)) continue;
        char **grown = realloc(list, sizeof *list * (size_t)(count + 1));
        if (!grown) exit(2);
        list = grown;
        list[count++] = strdup(e->d_name);
    }
    closedir(d);
    for (int i = 1; i < count; i++) // insertion sort: a handful of names
        for (int j = i; j > 0 && strcmp(list[j - 1], list[j]) > 0; j--) {
            char *t = list[j];
            list[j] = list[j - 1];
            list[j - 1] = t;
        }
    *names = list;
    return count;
}

static const st_tensor *must_find(st_file *f, const char *name) {
    const st_tensor *t = st_find(f, name);
    CHECK(t != NULL, "%s: tensor '%s' missing", st_path(f), name);
    return t;
}

// float32 copy of a tensor (NULL and a failed check when absent).
static float *load_f32(st_file *f, const char *name, size_t *numel) {
    const st_tensor *t = must_find(f, name);
    if (!t) return NULL;
    float *data = NULL;
    CHECK_OK(st_load_f32(f, name, -1, NULL, &data));
    if (numel) *numel = (size_t)t->numel;
    return data;
}

static int64_t *load_i64(st_file *f, const char *name, size_t *numel) {
    const st_tensor *t = must_find(f, name);
    if (!t) return NULL;
    int64_t *data = malloc(sizeof *data * (size_t)(t->numel ? t->numel : 1));
    CHECK_OK(st_read_i64(f, t, data));
    if (numel) *numel = (size_t)t->numel;
    return data;
}

static int64_t load_i64_scalar(st_file *f, const char *name) {
    size_t n = 0;
    int64_t *v = load_i64(f, name, &n);
    int64_t r = v && n == 1 ? v[0] : -999999;
    CHECK(n == 1, "%s: '%s' should hold one value", st_path(f), name);
    free(v);
    return r;
}

static float load_f32_scalar(st_file *f, const char *name) {
    size_t n = 0;
    float *v = load_f32(f, name, &n);
    float r = v && n == 1 ? v[0] : NAN;
    CHECK(n == 1, "%s: '%s' should hold one value", st_path(f), name);
    free(v);
    return r;
}

static size_t count_bit_mismatches(const float *a, const float *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) bad++;
    return bad;
}

// Largest distance in units in the last place (float32) between got[i] and want[i].
static int64_t max_ulp_diff(const float *got, const float *want, size_t n) {
    int64_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t a, b;
        memcpy(&a, &got[i], 4);
        memcpy(&b, &want[i], 4);
        // Map the sign-magnitude bit patterns onto a monotonic integer line.
        int64_t la = a < 0 ? (int64_t)INT32_MIN - a : a, lb = b < 0 ? (int64_t)INT32_MIN - b : b;
        int64_t d = la > lb ? la - lb : lb - la;
        if (d > worst) worst = d;
    }
    return worst;
}

// Compares with the README tolerance for scheduler outputs, abs 1e-5 * max|ref|, and prints the
// achieved difference and how many values are bit-identical.
static void check_step_tensor(const char *what, const float *got, const float *want, size_t n) {
    double scale = test_max_abs(want, n);
    double max_diff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > max_diff || isnan(d)) max_diff = d;
    }
    test_close(what, got, want, n, 1e-5 * (scale > 0 ? scale : 1), 0);
    fprintf(stderr, "  %-58s max|diff| %.3g (max|ref| %.3g), %zu/%zu bit-exact\n", what, max_diff,
            scale, n - count_bit_mismatches(got, want, n), n);
}

static void check_timesteps(const char *what, const lcm_scheduler *s, const int64_t *want,
                            size_t n) {
    int got_n = lcm_scheduler_num_steps(s);
    const int64_t *got = lcm_scheduler_timesteps(s);
    bool same = got_n == (int)n;
    for (size_t i = 0; same && i < n; i++) same = got[i] == want[i];
    char got_text[512] = "", want_text[512] = "";
    for (int i = 0; i < got_n && strlen(got_text) < 480; i++)
        snprintf(got_text + strlen(got_text), sizeof got_text - strlen(got_text), "%lld ",
                 (long long)got[i]);
    for (size_t i = 0; i < n && strlen(want_text) < 480; i++)
        snprintf(want_text + strlen(want_text), sizeof want_text - strlen(want_text), "%lld ",
                 (long long)want[i]);
    CHECK(same, "%s: timesteps [%s], want [%s]", what, got_text, want_text);
    fprintf(stderr, "  %-58s [%s] %s\n", what, want_text, same ? "exact" : "DIFFERENT");
}

static lcm_status load_scheduler(const char *config_path, lcm_scheduler **out) {
    json_config json;
    LCM_TRY(json_config_load(config_path, NULL, &json));
    lcm_scheduler_config config;
    lcm_status st = scheduler_config_read(&json, &config);
    json_config_free(&json);
    if (st != LCM_OK) return st;
    st = lcm_scheduler_new(&config, out);
    lcm_scheduler_config_free(&config);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Config: every field of a reference JSON (what diffusers' config holds) against the parsed struct

static const char *beta_schedule_name(lcm_beta_schedule b) {
    switch (b) {
    case LCM_BETA_LINEAR: return "linear";
    case LCM_BETA_SCALED_LINEAR: return "scaled_linear";
    case LCM_BETA_SQUAREDCOS_CAP_V2: return "squaredcos_cap_v2";
    }
    return "?";
}

static const char *prediction_type_name(lcm_prediction_type p) {
    switch (p) {
    case LCM_PREDICT_EPSILON: return "epsilon";
    case LCM_PREDICT_SAMPLE: return "sample";
    case LCM_PREDICT_V_PREDICTION: return "v_prediction";
    }
    return "?";
}

// Checks one reference field; returns false when the field is not one the struct models.
static bool check_config_field(const char *what, const lcm_scheduler_config *c, const cJSON *item) {
    const char *name = item->string;
    double number = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    bool truth = cJSON_IsTrue(item);
    const char *text = cJSON_IsString(item) ? item->valuestring : NULL;
#define CHECK_NUMBER(field)                                                                        \
    if (strcmp(name, #field) == 0) {                                                               \
        CHECK(cJSON_IsNumber(item) && (double)c->field == number, "%s: %s = %.17g, want %.17g",    \
              what, name, (double)c->field, number);                                               \
        return true;                                                                               \
    }
#define CHECK_BOOL(field)                                                                          \
    if (strcmp(name, #field) == 0) {                                                               \
        CHECK(cJSON_IsBool(item) && c->field == truth, "%s: %s = %d, want %s", what, name,         \
              (int)c->field, cJSON_IsBool(item) ? (truth ? "true" : "false") : "a bool");          \
        return true;                                                                               \
    }
#define CHECK_STRING(field, value)                                                                 \
    if (strcmp(name, #field) == 0) {                                                               \
        CHECK(text && strcmp(value, text) == 0, "%s: %s = \"%s\", want \"%s\"", what, name, value, \
              text ? text : "(not a string)");                                                     \
        return true;                                                                               \
    }
    CHECK_NUMBER(num_train_timesteps)
    CHECK_NUMBER(beta_start)
    CHECK_NUMBER(beta_end)
    CHECK_STRING(beta_schedule, beta_schedule_name(c->beta_schedule))
    CHECK_NUMBER(original_inference_steps)
    CHECK_BOOL(clip_sample)
    CHECK_NUMBER(clip_sample_range)
    CHECK_BOOL(set_alpha_to_one)
    CHECK_NUMBER(steps_offset)
    CHECK_STRING(prediction_type, prediction_type_name(c->prediction_type))
    CHECK_BOOL(thresholding)
    CHECK_NUMBER(dynamic_thresholding_ratio)
    CHECK_NUMBER(sample_max_value)
    CHECK_STRING(timestep_spacing, c->timestep_spacing)
    CHECK_NUMBER(timestep_scaling)
    CHECK_BOOL(rescale_betas_zero_snr)
#undef CHECK_NUMBER
#undef CHECK_BOOL
#undef CHECK_STRING
    if (strcmp(name, "trained_betas") == 0) {
        if (cJSON_IsNull(item)) {
            CHECK(c->trained_betas == NULL, "%s: trained_betas should be null", what);
        } else {
            bool same = cJSON_IsArray(item) && c->trained_betas &&
                        cJSON_GetArraySize(item) == (int)c->num_train_timesteps;
            for (int i = 0; same && i < cJSON_GetArraySize(item); i++)
                same = c->trained_betas[i] == (float)cJSON_GetArrayItem(item, i)->valuedouble;
            CHECK(same, "%s: trained_betas differ", what);
        }
        return true;
    }
    return false;
}

static void check_config_against(const char *what, const lcm_scheduler_config *c,
                                 const cJSON *reference) {
    int checked = 0;
    char skipped[1024] = "";
    const cJSON *item;
    cJSON_ArrayForEach(item, reference) {
        if (strcmp(item->string, "_class_name") == 0 || strcmp(item->string, "_diffusers_version") == 0)
            continue;
        if (check_config_field(what, c, item)) {
            checked++;
        } else if (strlen(skipped) + strlen(item->string) + 3 < sizeof skipped) {
            snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped), "%s%s",
                     skipped[0] ? ", " : "", item->string);
        }
    }
    CHECK(checked >= 10, "%s: only %d modelled fields in the reference", what, checked);
    fprintf(stderr, "  %s: %d fields checked; not modelled, skipped: %s\n", what, checked,
            skipped[0] ? skipped : "(none)");
}

// */golden/lcm_scheduler_config.json = LCMScheduler.from_config(that folder's scheduler config).
static void test_from_config_goldens(const char *root) {
    char **models;
    int n_models = list_subdirs(root, &models);
    int found = 0;
    for (int m = 0; m < n_models; m++) {
        char golden[4096], source[4096];
        test_path(golden, sizeof golden, "%s/%s/golden/lcm_scheduler_config.json", root, models[m]);
        if (!file_exists(golden)) continue;
        found++;
        test_path(source, sizeof source, "%s/%s/scheduler/scheduler_config.json", root, models[m]);
        fprintf(stderr, "from_config: %s/scheduler/scheduler_config.json\n", models[m]);
        json_config source_json, golden_json;
        CHECK_OK(json_config_load(source, NULL, &source_json));
        CHECK_OK(json_config_load(golden, NULL, &golden_json));
        lcm_scheduler_config config;
        CHECK_OK(scheduler_config_read(&source_json, &config));
        if (golden_json.root) check_config_against(golden, &config, golden_json.root);
        lcm_scheduler_config_free(&config);
        json_config_free(&source_json);
        json_config_free(&golden_json);
    }
    CHECK(found > 0, "no */golden/lcm_scheduler_config.json under %s", root);
    test_free_list(models, n_models);
}

// ---------------------------------------------------------------------------------------------
// scheduler.safetensors

// "timesteps_4" -> 4, 1.0; "timesteps_4_strength_0p5" -> 4, 0.5.
static bool parse_timesteps_name(const char *name, int *steps, double *strength) {
    if (strncmp(name, "timesteps_", 10) != 0) return false;
    char *end;
    long n = strtol(name + 10, &end, 10);
    if (end == name + 10 || n < 1) return false;
    *steps = (int)n;
    *strength = 1.0;
    if (*end == '\0') return true;
    if (strncmp(end, "_strength_", 10) != 0) return false;
    char number[64];
    snprintf(number, sizeof number, "%s", end + 10);
    for (char *p = number; *p; p++)
        if (*p == 'p') *p = '.';
    char *number_end;
    *strength = strtod(number, &number_end);
    return number_end != number && *number_end == '\0';
}

static void test_scheduler_step_case(st_file *f, lcm_scheduler *s, const char *prefix) {
    char name[256], what[512];
    fprintf(stderr, "  step case '%s'\n", prefix);
    test_path(name, sizeof name, "%s.timesteps", prefix);
    size_t n_timesteps = 0;
    int64_t *timesteps = load_i64(f, name, &n_timesteps);
    if (!timesteps) return;
    CHECK_OK(lcm_scheduler_set_timesteps(s, (int)n_timesteps, 1.0, NULL, 0));
    test_path(what, sizeof what, "%s %s", st_path(f), name);
    check_timesteps(what, s, timesteps, n_timesteps);
    free(timesteps);

    test_path(name, sizeof name, "%s.step_index", prefix);
    int step_index = (int)load_i64_scalar(f, name);
    lcm_step_info info;
    CHECK_OK(lcm_scheduler_step_info(s, step_index, &info));
    test_path(name, sizeof name, "%s.timestep", prefix);
    CHECK(info.timestep == load_i64_scalar(f, name), "%s: timestep %lld", prefix,
          (long long)info.timestep);
    test_path(name, sizeof name, "%s.prev_timestep", prefix);
    CHECK(info.prev_timestep == load_i64_scalar(f, name), "%s: prev_timestep %lld", prefix,
          (long long)info.prev_timestep);
    struct {
        const char *field;
        float got;
    } scalars[] = {{"alpha_prod_t", info.alpha_prod_t},
                   {"alpha_prod_t_prev", info.alpha_prod_t_prev},
                   {"c_skip", info.c_skip},
                   {"c_out", info.c_out}};
    for (size_t k = 0; k < sizeof scalars / sizeof scalars[0]; k++) {
        test_path(name, sizeof name, "%s.%s", prefix, scalars[k].field);
        float want = load_f32_scalar(f, name);
        test_path(what, sizeof what, "%s (%.9g, want %.9g)", name, scalars[k].got, want);
        // alpha products are exact table entries; the scalings may differ by the float32-vs-double
        // rounding explained at the c_skip_all_t check.
        int64_t ulps = max_ulp_diff(&scalars[k].got, &want, 1);
        int64_t allowed = strncmp(scalars[k].field, "alpha", 5) == 0 ? 0 : 2;
        CHECK(ulps <= allowed, "%s: %lld ulp off (allowed %lld)", what, (long long)ulps,
              (long long)allowed);
        fprintf(stderr, "  %-58s %lld ulp\n", what, (long long)ulps);
    }

    size_t numel = 0, n_sample = 0, n_noise = 0, n_denoised = 0, n_prev = 0;
    test_path(name, sizeof name, "%s.model_output", prefix);
    float *model_output = load_f32(f, name, &numel);
    test_path(name, sizeof name, "%s.sample", prefix);
    float *sample = load_f32(f, name, &n_sample);
    test_path(name, sizeof name, "%s.noise", prefix);
    float *noise = load_f32(f, name, &n_noise);
    test_path(name, sizeof name, "%s.denoised", prefix);
    float *want_denoised = load_f32(f, name, &n_denoised);
    test_path(name, sizeof name, "%s.prev_sample", prefix);
    float *want_prev = load_f32(f, name, &n_prev);
    CHECK(n_sample == numel && n_denoised == numel && n_prev == numel, "%s: sizes differ", prefix);
    bool has_noise = n_noise == numel && numel > 0;
    CHECK(has_noise == lcm_scheduler_needs_noise(s, step_index),
          "%s: stored noise present = %d but needs_noise(%d) = %d", prefix, has_noise, step_index,
          lcm_scheduler_needs_noise(s, step_index));
    float *denoised = malloc(sizeof(float) * (numel ? numel : 1));
    float *prev = malloc(sizeof(float) * (numel ? numel : 1));
    if (model_output && sample && want_denoised && want_prev && n_sample == numel &&
        n_denoised == numel && n_prev == numel) {
        CHECK_OK(lcm_scheduler_step(s, step_index, model_output, sample, has_noise ? noise : NULL,
                                    numel, denoised, prev));
        test_path(what, sizeof what, "%s.denoised", prefix);
        check_step_tensor(what, denoised, want_denoised, numel);
        test_path(what, sizeof what, "%s.prev_sample", prefix);
        check_step_tensor(what, prev, want_prev, numel);
    }
    free(denoised);
    free(prev);
    free(model_output);
    free(sample);
    free(noise);
    free(want_denoised);
    free(want_prev);
}

static void test_scheduler_golden(const char *path, const char *config_path) {
    fprintf(stderr, "%s (config %s)\n", path, config_path);
    st_file *f = NULL;
    CHECK_OK(st_open(path, &f));
    lcm_scheduler *s = NULL;
    CHECK_OK(load_scheduler(config_path, &s));
    if (!f || !s) {
        st_close(f);
        lcm_scheduler_free(s);
        return;
    }
    const int64_t n_train = lcm_scheduler_num_train_timesteps(s);

    // The info metadata records the config diffusers ran with: it must be what we parsed.
    const char *info_text = st_metadata(f, "info");
    cJSON *info = info_text ? cJSON_Parse(info_text) : NULL;
    const cJSON *info_config = cJSON_GetObjectItemCaseSensitive(info, "config");
    if (cJSON_IsObject(info_config)) {
        json_config json;
        lcm_scheduler_config parsed;
        CHECK_OK(json_config_load(config_path, NULL, &json));
        CHECK_OK(scheduler_config_read(&json, &parsed));
        check_config_against("info.config", &parsed, info_config);
        lcm_scheduler_config_free(&parsed);
        json_config_free(&json);
    }
    cJSON_Delete(info);

    // The noise schedule: the goal is bit equality.
    size_t n = 0;
    float *want = load_f32(f, "alphas_cumprod", &n);
    if (want) {
        CHECK(n == (size_t)n_train, "alphas_cumprod has %zu values, scheduler %lld", n,
              (long long)n_train);
        float *got = malloc(sizeof *got * n);
        for (size_t t = 0; t < n; t++) got[t] = lcm_scheduler_alpha_cumprod(s, (int64_t)t);
        size_t bad = count_bit_mismatches(got, want, n);
        CHECK(bad == 0, "alphas_cumprod: %zu of %zu values not bit-identical", bad, n);
        test_close("alphas_cumprod", got, want, n, 0, 0);
        fprintf(stderr, "  alphas_cumprod: %zu/%zu bit-exact\n", n - bad, n);
        free(got);
        free(want);
    }
    float final_want = load_f32_scalar(f, "final_alpha_cumprod");
    float final_got = lcm_scheduler_final_alpha_cumprod(s);
    CHECK(final_got == final_want, "final_alpha_cumprod %.9g, want %.9g", final_got, final_want);

    // c_skip / c_out for every training timestep. The golden values were computed from Python int
    // timesteps (double math, then float32); the pipelines pass tensor timesteps, which makes the
    // same formulas float32 ops, as lcm_scheduler_scalings does: a few values differ by 1 ulp.
    size_t n_skip = 0, n_out = 0;
    float *want_skip = load_f32(f, "c_skip_all_t", &n_skip);
    float *want_out = load_f32(f, "c_out_all_t", &n_out);
    if (want_skip && want_out && n_skip == (size_t)n_train && n_out == (size_t)n_train) {
        float *skip = malloc(sizeof *skip * n_skip), *out = malloc(sizeof *out * n_out);
        for (int64_t t = 0; t < n_train; t++) lcm_scheduler_scalings(s, t, &skip[t], &out[t]);
        int64_t ulp_skip = max_ulp_diff(skip, want_skip, n_skip);
        int64_t ulp_out = max_ulp_diff(out, want_out, n_out);
        // Three float32 roundings (square, sum, reciprocal or sqrt) against one: at most 2 ulp.
        CHECK(ulp_skip <= 2, "c_skip_all_t: up to %lld ulp from the golden", (long long)ulp_skip);
        CHECK(ulp_out <= 2, "c_out_all_t: up to %lld ulp from the golden", (long long)ulp_out);
        fprintf(stderr,
                "  c_skip_all_t: %zu/%zu bit-exact (max %lld ulp); c_out_all_t: %zu/%zu bit-exact "
                "(max %lld ulp)\n",
                n_skip - count_bit_mismatches(skip, want_skip, n_skip), n_skip,
                (long long)ulp_skip, n_out - count_bit_mismatches(out, want_out, n_out), n_out,
                (long long)ulp_out);
        free(skip);
        free(out);
    } else {
        CHECK(false, "c_skip_all_t / c_out_all_t missing or not %lld values", (long long)n_train);
    }
    free(want_skip);
    free(want_out);

    // timesteps_N and timesteps_N_strength_0pS.
    int n_cases = 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        int steps;
        double strength;
        if (!parse_timesteps_name(t->name, &steps, &strength)) continue;
        n_cases++;
        size_t count;
        int64_t *timesteps = load_i64(f, t->name, &count);
        CHECK_OK(lcm_scheduler_set_timesteps(s, steps, strength, NULL, 0));
        char what[256];
        snprintf(what, sizeof what, "%s (steps %d, strength %g)", t->name, steps, strength);
        check_timesteps(what, s, timesteps, count);
        free(timesteps);
    }
    CHECK(n_cases > 0, "%s: no timesteps_N tensors", path);

    // Step cases: every CASE.step_index.
    int n_steps = 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const char *name = st_at(f, i)->name;
        const char *dot = strrchr(name, '.');
        if (!dot || strcmp(dot, ".step_index") != 0) continue;
        char prefix[256];
        snprintf(prefix, sizeof prefix, "%.*s", (int)(dot - name), name);
        test_scheduler_step_case(f, s, prefix);
        n_steps++;
    }
    CHECK(n_steps > 0, "%s: no step cases", path);
    lcm_scheduler_free(s);
    st_close(f);
}

// ---------------------------------------------------------------------------------------------
// Pipeline goldens: the timesteps and every recorded step

// The scheduler config a golden file was made with: its model folder's own, else (tiny-controlnet,
// tiny-taesd reuse another folder's pipeline) the one model folder with a scheduler config whose
// name the file's note mentions.
static bool scheduler_config_for(const char *root, const char *model, const char *note, char *out,
                                 size_t size) {
    test_path(out, size, "%s/%s/scheduler/scheduler_config.json", root, model);
    if (file_exists(out)) return true;
    char **models;
    int n_models = list_subdirs(root, &models), matches = 0;
    for (int m = 0; m < n_models; m++) {
        char candidate[4096];
        test_path(candidate, sizeof candidate, "%s/%s/scheduler/scheduler_config.json", root,
                  models[m]);
        if (!file_exists(candidate) || !note) continue;
        // A whole-name mention: "tiny-lcm" must not match inside "tiny-lcm-xl".
        bool mentioned = false;
        size_t len = strlen(models[m]);
        for (const char *at = strstr(note, models[m]); at && !mentioned;
             at = strstr(at + 1, models[m])) {
            char after = at[len];
            mentioned = !(after == '-' || after == '_' || isalnum((unsigned char)after));
        }
        if (mentioned && matches++ == 0) test_path(out, size, "%s", candidate);
    }
    test_free_list(models, n_models);
    return matches == 1;
}

static char *step_name(char *buf, size_t size, int step, const char *field) {
    snprintf(buf, size, "step%d.%s", step, field);
    return buf;
}

static void test_pipeline_golden(const char *root, const char *model, const char *file) {
    char path[4096], config_path[4096], name[128], what[512];
    test_path(path, sizeof path, "%s/%s/golden/%s", root, model, file);
    st_file *f = NULL;
    CHECK_OK(st_open(path, &f));
    if (!f) return;
    const char *info_text = st_metadata(f, "info");
    CHECK(info_text != NULL, "%s: no info metadata", path);
    json_config info = {0};
    if (info_text) CHECK_OK(json_config_parse(info_text, strlen(info_text), path, &info));
    int64_t steps = 0;
    double strength = 1.0;
    const char *note = NULL;
    if (info.root) {
        CHECK_OK(json_config_int(&info, "steps", 1, 1000, &steps));
        CHECK_OK(json_config_float_or(&info, "strength", 1.0, 0.0, 1.0, &strength));
        CHECK_OK(json_config_string_or(&info, "note", "", &note));
    }
    bool have_config = scheduler_config_for(root, model, note, config_path, sizeof config_path);
    CHECK(have_config, "%s: cannot tell which scheduler config made it", path);
    fprintf(stderr, "%s/%s (steps %lld, strength %g, config %s)\n", model, file, (long long)steps,
            strength, config_path);
    lcm_scheduler *s = NULL;
    if (have_config && steps > 0) CHECK_OK(load_scheduler(config_path, &s));
    if (!s) goto done;

    CHECK_OK(lcm_scheduler_set_timesteps(s, (int)steps, strength, NULL, 0));
    size_t n_timesteps;
    int64_t *timesteps = load_i64(f, "timesteps", &n_timesteps);
    if (timesteps) check_timesteps("timesteps", s, timesteps, n_timesteps);
    free(timesteps);

    // img2img starts from add_noise(init latents, noise, timesteps[0]).
    if (st_find(f, "add_noise.noise") && st_find(f, "init_latents_scaled") &&
        lcm_scheduler_num_steps(s) > 0) {
        size_t n_init = 0, n_noise = 0, n_start = 0;
        float *init = load_f32(f, "init_latents_scaled", &n_init);
        float *noise = load_f32(f, "add_noise.noise", &n_noise);
        float *want = load_f32(f, step_name(name, sizeof name, 0, "latents_in"), &n_start);
        if (init && noise && want && n_init == n_noise && n_init == n_start) {
            float *got = malloc(sizeof *got * n_init);
            CHECK_OK(lcm_scheduler_add_noise(s, lcm_scheduler_timesteps(s)[0], init, noise, n_init,
                                             got));
            check_step_tensor("add_noise(init_latents_scaled) = step0.latents_in", got, want,
                              n_init);
            free(got);
        } else {
            CHECK(false, "%s: add_noise tensors missing or of different sizes", path);
        }
        free(init);
        free(noise);
        free(want);
    }

    int n_steps = lcm_scheduler_num_steps(s);
    CHECK(!st_find(f, step_name(name, sizeof name, n_steps, "latents_out")),
          "%s: more steps stored than the %d scheduled", path, n_steps);
    for (int i = 0; i < n_steps; i++) {
        size_t numel = 0, n_sample = 0, n_model = 0, n_noise = 0, n_denoised = 0;
        float *want_latents = load_f32(f, step_name(name, sizeof name, i, "latents_out"), &numel);
        // Sample: the latents (with CFG the unet input is [latents, latents]; the first copy).
        const char *sample_name = st_find(f, step_name(name, sizeof name, i, "latents_in"))
                                      ? "latents_in"
                                      : "unet_latent_input";
        float *sample = load_f32(f, step_name(name, sizeof name, i, sample_name), &n_sample);
        // Model output: the (guided) noise prediction the scheduler was given.
        const char *model_name = "unet_output";
        if (st_find(f, step_name(name, sizeof name, i, "noise_pred"))) model_name = "noise_pred";
        else if (st_find(f, step_name(name, sizeof name, i, "noise_pred_guided")))
            model_name = "noise_pred_guided";
        float *model_output = load_f32(f, step_name(name, sizeof name, i, model_name), &n_model);
        float *noise = NULL;
        if (st_find(f, step_name(name, sizeof name, i, "scheduler_noise")))
            noise = load_f32(f, name, &n_noise);
        CHECK((noise != NULL) == lcm_scheduler_needs_noise(s, i),
              "%s step %d: stored scheduler noise %s, but needs_noise says %d", path, i,
              noise ? "present" : "absent", lcm_scheduler_needs_noise(s, i));
        float *want_denoised = NULL;
        if (st_find(f, step_name(name, sizeof name, i, "denoised")))
            want_denoised = load_f32(f, name, &n_denoised);
        bool sizes_ok = want_latents && sample && model_output && n_sample >= numel &&
                        n_model == numel && (!noise || n_noise == numel) &&
                        (!want_denoised || n_denoised == numel);
        CHECK(sizes_ok, "%s step %d: tensors missing or of unexpected sizes", path, i);
        if (sizes_ok) {
            float *denoised = malloc(sizeof(float) * numel), *latents = malloc(sizeof(float) * numel);
            CHECK_OK(lcm_scheduler_step(s, i, model_output, sample, noise, numel, denoised, latents));
            if (want_denoised) {
                snprintf(what, sizeof what, "%s step%d.denoised (t=%lld)", file, i,
                         (long long)lcm_scheduler_timesteps(s)[i]);
                check_step_tensor(what, denoised, want_denoised, numel);
            }
            snprintf(what, sizeof what, "%s step%d.latents_out (%s, %s)", file, i, sample_name,
                     model_name);
            check_step_tensor(what, latents, want_latents, numel);
            free(denoised);
            free(latents);
        }
        free(want_latents);
        free(sample);
        free(model_output);
        free(noise);
        free(want_denoised);
    }
done:
    lcm_scheduler_free(s);
    json_config_free(&info);
    st_close(f);
}

static void test_goldens(const char *root) {
    char **models;
    int n_models = list_subdirs(root, &models);
    int n_scheduler = 0, n_pipeline = 0;
    for (int m = 0; m < n_models; m++) {
        char golden_dir[4096];
        test_path(golden_dir, sizeof golden_dir, "%s/%s/golden", root, models[m]);
        if (!dir_exists(golden_dir)) continue;
        char **files;
        int n = test_list_files(golden_dir, "scheduler", ".safetensors", &files);
        for (int i = 0; i < n; i++) {
            char path[4096], config[4096];
            test_path(path, sizeof path, "%s/%s", golden_dir, files[i]);
            test_path(config, sizeof config, "%s/%s/scheduler/scheduler_config.json", root,
                      models[m]);
            test_scheduler_golden(path, config);
            n_scheduler++;
        }
        test_free_list(files, n);
        const char *prefixes[] = {"pipeline_", "img2img_"};
        for (int p = 0; p < 2; p++) {
            n = test_list_files(golden_dir, prefixes[p], ".safetensors", &files);
            for (int i = 0; i < n; i++) test_pipeline_golden(root, models[m], files[i]);
            n_pipeline += n;
            test_free_list(files, n);
        }
    }
    CHECK(n_scheduler > 0, "no */golden/scheduler*.safetensors under %s", root);
    CHECK(n_pipeline > 0, "no */golden/pipeline_*/img2img_* goldens under %s", root);
    fprintf(stderr, "%d scheduler goldens, %d pipeline goldens\n", n_scheduler, n_pipeline);
    test_free_list(models, n_models);
}

// ---------------------------------------------------------------------------------------------
// Validation and the paths the goldens do not cover

static lcm_status load_config_text(const char *text, lcm_scheduler_config *out) {
    json_config json;
    LCM_TRY(json_config_parse(text, strlen(text), "scheduler/scheduler_config.json", &json));
    lcm_status st = scheduler_config_read(&json, out);
    json_config_free(&json);
    return st;
}

static void expect_config_error(const char *text, lcm_status want, const char *mention) {
    lcm_scheduler_config c;
    lcm_status st = load_config_text(text, &c);
    CHECK(st == want, "config %s: got %s, want %s", text, lcm_status_name(st),
          lcm_status_name(want));
    CHECK(strstr(lcm_last_error(), mention) != NULL, "config %s: message '%s' should mention '%s'",
          text, lcm_last_error(), mention);
    if (st == LCM_OK) lcm_scheduler_config_free(&c);
}

static void test_config_validation(void) {
    lcm_scheduler_config c, d;
    CHECK_OK(lcm_scheduler_config_default(&d));
    CHECK_OK(load_config_text("{}", &c));
    CHECK(memcmp(&c, &d, sizeof c) == 0, "an empty config should give LCMScheduler's defaults");
    lcm_scheduler_config_free(&c);
    CHECK(d.num_train_timesteps == 1000 && d.original_inference_steps == 50 && d.set_alpha_to_one &&
              d.timestep_scaling == 10.0 && d.beta_schedule == LCM_BETA_SCALED_LINEAR,
          "defaults");

    expect_config_error("{\"beta_schedule\": \"sigmoid\"}", LCM_ERR_UNSUPPORTED, "sigmoid");
    expect_config_error("{\"beta_schedule\": \"sigmoid\"}", LCM_ERR_UNSUPPORTED, "beta_schedule");
    expect_config_error("{\"prediction_type\": \"flow\"}", LCM_ERR_UNSUPPORTED, "prediction_type");
    expect_config_error("{\"thresholding\": true}", LCM_ERR_UNSUPPORTED, "thresholding");
    expect_config_error("{\"num_train_timesteps\": \"1000\"}", LCM_ERR_FORMAT, "num_train_timesteps");
    expect_config_error("{\"original_inference_steps\": 0}", LCM_ERR_FORMAT,
                        "original_inference_steps");
    expect_config_error("{\"clip_sample\": 1}", LCM_ERR_FORMAT, "clip_sample");
    expect_config_error("{\"num_train_timesteps\": 3, \"trained_betas\": [0.1, 0.2]}",
                        LCM_ERR_FORMAT, "trained_betas");
    expect_config_error("{\"num_train_timesteps\": 2, \"trained_betas\": [0.1, \"x\"]}",
                        LCM_ERR_FORMAT, "trained_betas[1]");
    // Unknown fields (PNDM's, DDIM's, ...) are ignored, as from_config does.
    CHECK_OK(load_config_text("{\"skip_prk_steps\": true, \"_class_name\": \"PNDMScheduler\", "
                              "\"timestep_spacing\": \"trailing\", \"steps_offset\": 1}",
                              &c));
    CHECK(strcmp(c.timestep_spacing, "trailing") == 0 && c.steps_offset == 1, "kept fields");
    lcm_scheduler_config_free(&c);
}

static void test_request_validation(void) {
    lcm_scheduler_config c;
    lcm_scheduler_config_default(&c);
    lcm_scheduler *s = NULL;
    CHECK_OK(lcm_scheduler_new(&c, &s));
    if (!s) return;
    float x[4] = {0.5f, -1, 2, 0}, out[4], noise[4] = {0.1f, 0.2f, 0.3f, 0.4f};

    // Before set_timesteps there is nothing to step.
    CHECK(lcm_scheduler_num_steps(s) == 0, "no steps before set_timesteps");
    CHECK(lcm_scheduler_step(s, 0, x, x, NULL, 4, out, out) == LCM_ERR_INVALID_ARGUMENT,
          "step before set_timesteps");

    struct {
        int steps;
        double strength;
        const char *mention;
    } bad[] = {{0, 1.0, "num_inference_steps = 0"},  {-3, 1.0, "num_inference_steps"},
               {51, 1.0, "original_inference_steps"}, {1001, 1.0, "num_train_timesteps"},
               {4, 0.0, "strength"},                  {4, 1.5, "strength"},
               {4, NAN, "strength"},                  {30, 0.5, "strength"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        lcm_status st = lcm_scheduler_set_timesteps(s, bad[i].steps, bad[i].strength, NULL, 0);
        CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), bad[i].mention),
              "set_timesteps(%d, %g): %s '%s' (want invalid argument mentioning '%s')",
              bad[i].steps, bad[i].strength, lcm_status_name(st), lcm_last_error(),
              bad[i].mention);
    }
    // 50 steps is the whole distillation schedule; 25 of the 25 left at strength 0.5 too.
    CHECK_OK(lcm_scheduler_set_timesteps(s, 50, 1.0, NULL, 0));
    CHECK(lcm_scheduler_timesteps(s)[49] == 19, "50 steps end at 19");
    CHECK_OK(lcm_scheduler_set_timesteps(s, 25, 0.5, NULL, 0));
    CHECK(lcm_scheduler_timesteps(s)[0] == 499, "strength 0.5 starts at 499");
    // int(50 * 0.7) is 35 in double (34 with float32 0.7f): the 1-step timestep shows which.
    CHECK_OK(lcm_scheduler_set_timesteps(s, 1, 0.7, NULL, 0));
    CHECK(lcm_scheduler_timesteps(s)[0] == 699, "strength 0.7 -> %lld, want 699",
          (long long)lcm_scheduler_timesteps(s)[0]);

    // Custom timesteps.
    const int64_t standard4[] = {999, 759, 499, 259};
    CHECK_OK(lcm_scheduler_set_timesteps(s, 0, 1.0, standard4, 4));
    check_timesteps("custom [999 759 499 259]", s, standard4, 4);
    CHECK(!lcm_scheduler_needs_noise(s, 3) && lcm_scheduler_needs_noise(s, 2), "custom noise rule");
    CHECK_OK(lcm_scheduler_set_timesteps(s, 0, 0.5, standard4, 4));
    check_timesteps("custom [999 759 499 259], strength 0.5", s, standard4 + 2, 2);
    // diffusers keeps num_inference_steps = 4 there, so its last step still draws noise.
    CHECK(lcm_scheduler_needs_noise(s, 1), "custom + strength: diffusers draws noise at the end");
    const int64_t ascending[] = {259, 499}, too_big[] = {1000, 10}, negative[] = {10, -1};
    CHECK(lcm_scheduler_set_timesteps(s, 0, 1.0, ascending, 2) == LCM_ERR_INVALID_ARGUMENT &&
              strstr(lcm_last_error(), "descending"),
          "ascending custom timesteps: %s", lcm_last_error());
    CHECK(lcm_scheduler_set_timesteps(s, 0, 1.0, too_big, 2) == LCM_ERR_INVALID_ARGUMENT,
          "custom timestep 1000");
    CHECK(lcm_scheduler_set_timesteps(s, 0, 1.0, negative, 2) == LCM_ERR_INVALID_ARGUMENT,
          "custom timestep -1");
    CHECK(lcm_scheduler_set_timesteps(s, 0, 1.0, standard4, 0) == LCM_ERR_INVALID_ARGUMENT,
          "empty custom timesteps");
    CHECK(lcm_scheduler_set_timesteps(s, 3, 1.0, standard4, 4) == LCM_ERR_INVALID_ARGUMENT,
          "steps and a different number of custom timesteps");
    CHECK(lcm_scheduler_set_timesteps(s, 0, 0.2, standard4, 4) == LCM_ERR_INVALID_ARGUMENT,
          "strength that keeps no custom timestep");
    // A failed request keeps the previous schedule.
    CHECK(lcm_scheduler_num_steps(s) == 2 && lcm_scheduler_timesteps(s)[0] == 499,
          "failed set_timesteps must keep the old steps");

    // Step arguments: the noise must come exactly when needed; step_index in range.
    CHECK_OK(lcm_scheduler_set_timesteps(s, 2, 1.0, NULL, 0));
    CHECK(lcm_scheduler_step(s, 0, x, x, NULL, 4, out, out) == LCM_ERR_INVALID_ARGUMENT,
          "missing noise");
    CHECK(lcm_scheduler_step(s, 1, x, x, noise, 4, out, out) == LCM_ERR_INVALID_ARGUMENT,
          "noise at the last step");
    CHECK(lcm_scheduler_step(s, 2, x, x, NULL, 4, out, out) == LCM_ERR_INVALID_ARGUMENT,
          "step_index past the end");
    CHECK(lcm_scheduler_step(s, -1, x, x, NULL, 4, out, out) == LCM_ERR_INVALID_ARGUMENT,
          "negative step_index");
    CHECK(!lcm_scheduler_needs_noise(s, 5) && !lcm_scheduler_needs_noise(s, -1),
          "needs_noise out of range");
    // In place (prev_sample == sample) equals out of place.
    float separate[4], denoised[4], in_place[4];
    memcpy(in_place, x, sizeof x);
    CHECK_OK(lcm_scheduler_step(s, 0, x, x, noise, 4, denoised, separate));
    CHECK_OK(lcm_scheduler_step(s, 0, x, in_place, noise, 4, NULL, in_place));
    CHECK(memcmp(separate, in_place, sizeof separate) == 0, "in-place step");
    CHECK(lcm_scheduler_add_noise(s, 1000, x, noise, 4, out) == LCM_ERR_INVALID_ARGUMENT,
          "add_noise at t = 1000");
    CHECK(isnan(lcm_scheduler_alpha_cumprod(s, -1)) && isnan(lcm_scheduler_alpha_cumprod(s, 1000)),
          "alpha_cumprod out of range is NaN");
    lcm_scheduler_free(s);
}

// Schedules and options the goldens do not exercise, checked against their definitions.
static void test_other_schedules(void) {
    // trained_betas: betas given as JSON numbers become float32 and their products the
    // alphas_cumprod; close to the built-in scaled_linear schedule they approximate.
    lcm_scheduler_config base;
    lcm_scheduler_config_default(&base);
    lcm_scheduler *reference = NULL;
    CHECK_OK(lcm_scheduler_new(&base, &reference));
    if (reference) {
        int64_t n = lcm_scheduler_num_train_timesteps(reference);
        cJSON *config = cJSON_CreateObject();
        cJSON *betas = cJSON_AddArrayToObject(config, "trained_betas");
        double start = sqrt(0.00085), end = sqrt(0.012);
        for (int64_t i = 0; i < n; i++) {
            double v = start + (end - start) * (double)i / (double)(n - 1);
            cJSON_AddItemToArray(betas, cJSON_CreateNumber((double)(float)(v * v)));
        }
        char *text = cJSON_PrintUnformatted(config);
        lcm_scheduler_config c;
        lcm_scheduler *s = NULL;
        CHECK_OK(load_config_text(text, &c));
        CHECK(c.trained_betas != NULL, "trained_betas parsed");
        CHECK_OK(lcm_scheduler_new(&c, &s));
        if (s && c.trained_betas) {
            // Independent float32 products of the given betas (double accumulation).
            double acc = 1.0;
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                acc *= (double)(1.0f - c.trained_betas[i]);
                if (lcm_scheduler_alpha_cumprod(s, i) != (float)acc) bad++;
            }
            CHECK(bad == 0, "trained_betas: %d alphas_cumprod values differ from the products", bad);
            double max_rel = 0;
            for (int64_t i = 0; i < n; i++) {
                double a = lcm_scheduler_alpha_cumprod(s, i), b = lcm_scheduler_alpha_cumprod(reference, i);
                max_rel = fmax(max_rel, fabs(a - b) / b);
            }
            CHECK(max_rel < 1e-5, "trained_betas close to scaled_linear: %g", max_rel);
        }
        lcm_scheduler_free(s);
        lcm_scheduler_config_free(&c);
        cJSON_free(text);
        cJSON_Delete(config);
    }
    lcm_scheduler_free(reference);

    // linear: betas from beta_start to beta_end, so alphas_cumprod[0] = 1 - beta_start exactly.
    {
        lcm_scheduler_config c;
        lcm_scheduler *s = NULL;
        CHECK_OK(load_config_text("{\"beta_schedule\": \"linear\", \"beta_start\": 0.0001, "
                                  "\"beta_end\": 0.02}",
                                  &c));
        CHECK_OK(lcm_scheduler_new(&c, &s));
        if (s) {
            CHECK(lcm_scheduler_alpha_cumprod(s, 0) == 1.0f - (float)0.0001, "linear a[0]");
            float a998 = lcm_scheduler_alpha_cumprod(s, 998), a999 = lcm_scheduler_alpha_cumprod(s, 999);
            CHECK(fabs(a999 / a998 - (1 - 0.02)) < 1e-6, "linear last beta %g", 1 - a999 / a998);
            // Continuous formula: prod(1 - b_i) with b linear, within float32 accumulation error.
            double acc = 1;
            for (int i = 0; i < 1000; i++) acc *= 1 - (0.0001 + (0.02 - 0.0001) * i / 999.0);
            CHECK(fabs(a999 - acc) / acc < 1e-4, "linear alphas_cumprod[999] %g vs %g", a999, acc);
        }
        lcm_scheduler_free(s);
        lcm_scheduler_config_free(&c);
    }
    // squaredcos_cap_v2: alphas_cumprod follows cos((t/N + 0.008)/1.008 * pi/2)^2 / cos(...0...)^2.
    {
        lcm_scheduler_config c;
        lcm_scheduler *s = NULL;
        CHECK_OK(load_config_text("{\"beta_schedule\": \"squaredcos_cap_v2\"}", &c));
        CHECK_OK(lcm_scheduler_new(&c, &s));
        if (s) {
            double worst = 0;
            double f0 = pow(cos(0.008 / 1.008 * M_PI / 2), 2);
            for (int t = 0; t < 990; t++) { // the last betas hit the 0.999 cap
                double want = pow(cos(((t + 1) / 1000.0 + 0.008) / 1.008 * M_PI / 2), 2) / f0;
                worst = fmax(worst, fabs(lcm_scheduler_alpha_cumprod(s, t) - want));
            }
            CHECK(worst < 1e-5, "squaredcos_cap_v2 alphas_cumprod off by %g", worst);
            fprintf(stderr, "squaredcos_cap_v2 vs closed form: max |diff| %.3g\n", worst);
        }
        lcm_scheduler_free(s);
        lcm_scheduler_config_free(&c);
    }
    // rescale_betas_zero_snr: the last alphas_cumprod becomes 0, the first stays.
    {
        lcm_scheduler_config c;
        lcm_scheduler *s = NULL, *plain = NULL;
        CHECK_OK(load_config_text("{\"rescale_betas_zero_snr\": true}", &c));
        CHECK_OK(lcm_scheduler_new(&c, &s));
        c.rescale_betas_zero_snr = false;
        CHECK_OK(lcm_scheduler_new(&c, &plain));
        if (s && plain) {
            CHECK(lcm_scheduler_alpha_cumprod(s, 999) == 0.0f, "zero terminal SNR: %g",
                  lcm_scheduler_alpha_cumprod(s, 999));
            CHECK(fabs(lcm_scheduler_alpha_cumprod(s, 0) - lcm_scheduler_alpha_cumprod(plain, 0)) < 1e-6,
                  "zero SNR keeps alphas_cumprod[0]");
            // sqrt(alphas_cumprod) is an affine map of the original: check at the midpoint.
            double s0 = sqrt(lcm_scheduler_alpha_cumprod(plain, 0)),
                   sT = sqrt(lcm_scheduler_alpha_cumprod(plain, 999)),
                   sm = sqrt(lcm_scheduler_alpha_cumprod(plain, 500));
            double want = pow((sm - sT) * s0 / (s0 - sT), 2);
            CHECK(fabs(lcm_scheduler_alpha_cumprod(s, 500) - want) < 1e-5, "zero SNR midpoint");
        }
        lcm_scheduler_free(s);
        lcm_scheduler_free(plain);
        lcm_scheduler_config_free(&c);
    }
    // prediction types and clipping on a single value at t = 999 (last of one step: no noise).
    {
        const char *configs[] = {"{\"prediction_type\": \"sample\"}",
                                 "{\"prediction_type\": \"v_prediction\"}",
                                 "{\"clip_sample\": true, \"clip_sample_range\": 0.5}"};
        for (int k = 0; k < 3; k++) {
            lcm_scheduler_config c;
            lcm_scheduler *s = NULL;
            CHECK_OK(load_config_text(configs[k], &c));
            CHECK_OK(lcm_scheduler_new(&c, &s));
            if (!s) {
                lcm_scheduler_config_free(&c);
                continue;
            }
            CHECK_OK(lcm_scheduler_set_timesteps(s, 1, 1.0, NULL, 0));
            lcm_step_info info;
            CHECK_OK(lcm_scheduler_step_info(s, 0, &info));
            float model = 0.75f, x = -0.3f, denoised, prev;
            CHECK_OK(lcm_scheduler_step(s, 0, &model, &x, NULL, 1, &denoised, &prev));
            double a = info.alpha_prod_t, x0;
            if (k == 0) x0 = model;
            else if (k == 1) x0 = sqrt(a) * x - sqrt(1 - a) * model;
            else x0 = fmin(0.5, fmax(-0.5, (x - sqrt(1 - a) * model) / sqrt(a)));
            double want = info.c_out * x0 + info.c_skip * x;
            CHECK(fabs(denoised - want) < 1e-5 * fmax(1, fabs(want)) && prev == denoised,
                  "%s: denoised %g, want %g", configs[k], denoised, want);
            lcm_scheduler_free(s);
            lcm_scheduler_config_free(&c);
        }
    }
}

int main(void) {
    const char *root = test_fixtures();
    test_config_validation();
    test_request_validation();
    test_from_config_goldens(root);
    test_goldens(root);
    test_other_schedules();
    return test_finish();
}
