// LoRA adapters (src/adapt/lora.c) against the golden data under $LCM_FIXTURES:
//  - every FOLDER/golden/unet_lora*.safetensors, with every adapter file found under
//    FOLDER/loras/*/ (kohya, diffusers and PEFT keys) at every scale the golden file stores
//    (`noise_pred_lora_fused_scale_S`): the stored fused weights (`fused_weight_scale_S.NAME`) and
//    the fused UNet's noise prediction, within 1e-4 * max|ref| (README section 8); the number of
//    modules applied equals the golden info's `lora_target_modules`;
//  - all adapter files of a folder fuse to the same UNet (every weight compared), scale 0 leaves
//    every weight bit-identical, two adapters at S/2 each give the fused weights of scale S;
//  - hand-made adapters: the formula W + s * (alpha/rank) * up @ down checked in double, dotted
//    and text-encoder keys through the whole pipeline, and clear errors (naming file and key) for
//    keys that match nothing, rank mismatches, a missing up, a non-scalar alpha, a 3x3 up kernel,
//    shapes that do not fit the model, non-LoRA tensors, ambiguous kohya names;
//  - `lcm_lora_spec_parse` and `lcm generate --lora FILE[:SCALE] / --lora-lenient`.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapt/lora.h"
#include "golden.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "io/weights.h"
#include "models/unet.h"
#include "pipeline/pipeline.h"
#include "testutil.h"

#define PATH_SIZE 4096
#define MAX_LORA_FILES 16
#define MAX_SCALES 8

static char tmpdir[] = "/tmp/lcm-test-lora-XXXXXX";

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// ---- helpers ---------------------------------------------------------------------------------

static lora_set *open_adapters(const lcm_lora *loras, int count, bool lenient) {
    lora_set *set = NULL;
    CHECK_OK(lora_set_open(loras, count, lenient, &set));
    return set;
}

static lora_set *open_adapter(const char *path, float scale) {
    lcm_lora lora = {path, scale};
    return open_adapters(&lora, 1, false);
}

// The unet weights of a folder, with `set` attached (NULL: plain).
static weight_set *open_unet_weights(const char *folder_path, lora_set *set) {
    char dir[PATH_SIZE];
    test_path(dir, sizeof dir, "%s/unet", folder_path);
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open(dir, "diffusion_pytorch_model", NULL, &ws));
    if (ws && set) CHECK_OK(lora_set_attach(set, "unet", ws));
    return ws;
}

static float *load_weight(const weight_set *ws, const st_tensor *t) {
    float *values = NULL;
    CHECK_OK(weight_set_load_f32(ws, t->name, t->ndim, t->shape, &values));
    return values;
}

static bool ends_with_text(const char *s, const char *ending) {
    size_t n = strlen(s), m = strlen(ending);
    return n >= m && !strcmp(s + n - m, ending);
}

static bool is_matrix_weight(const st_tensor *t) {
    size_t len = strlen(t->name);
    return (t->ndim == 2 || t->ndim == 4) && len > 7 && !strcmp(t->name + len - 7, ".weight");
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || isnan(d)) m = d;
    }
    return m;
}

// A golden tensor as a float32 tensor (caller frees), or NULL when absent.
static tensor *golden_tensor(const st_file *file, const char *name) {
    const st_tensor *t = st_find(file, name);
    if (!t || t->ndim < 1 || t->ndim > TENSOR_MAX_DIMS) return NULL;
    tensor *out = tensor_new(t->ndim, t->shape);
    if (out && st_read_f32(file, t, out->data) != LCM_OK) {
        tensor_free(out);
        return NULL;
    }
    return out;
}

// ---- golden cases ----------------------------------------------------------------------------

typedef struct lora_case {
    const char *folder;
    char lora_files[MAX_LORA_FILES][PATH_SIZE];
    int lora_count;
    const st_file *golden;
    float scales[MAX_SCALES];
    char scale_names[MAX_SCALES][32]; // the S of `noise_pred_lora_fused_scale_S`, as written
    int scale_count;
    int target_modules; // len(info.lora_target_modules), -1 when the info has no such list
} lora_case;

#define NOISE_PRED_PREFIX "noise_pred_lora_fused_scale_"

static void find_scales(lora_case *c) {
    for (size_t i = 0; i < st_count(c->golden) && c->scale_count < MAX_SCALES; i++) {
        const char *name = st_at(c->golden, i)->name;
        if (strncmp(name, NOISE_PRED_PREFIX, strlen(NOISE_PRED_PREFIX))) continue;
        const char *s = name + strlen(NOISE_PRED_PREFIX);
        char *end;
        double v = strtod(s, &end);
        CHECK(*end == 0 && end != s, "%s: cannot read the scale of '%s'", st_path(c->golden), name);
        snprintf(c->scale_names[c->scale_count], sizeof c->scale_names[0], "%s", s);
        c->scales[c->scale_count++] = (float)v;
    }
    CHECK(c->scale_count > 0, "%s: no %sS tensors", st_path(c->golden), NOISE_PRED_PREFIX);
}

// Every fused_weight_scale_S.NAME of the golden file against NAME.weight loaded with the adapter.
static void check_fused_weights(const lora_case *c, const char *lora_path, int s) {
    char prefix[64];
    snprintf(prefix, sizeof prefix, "fused_weight_scale_%s.", c->scale_names[s]);
    lora_set *set = open_adapter(lora_path, c->scales[s]);
    weight_set *ws = set ? open_unet_weights(c->folder, set) : NULL;
    int compared = 0;
    for (size_t i = 0; ws && i < st_count(c->golden); i++) {
        const st_tensor *want = st_at(c->golden, i);
        if (strncmp(want->name, prefix, strlen(prefix))) continue;
        char name[512];
        snprintf(name, sizeof name, "%s.weight", want->name + strlen(prefix));
        float *got = NULL, *ref = malloc((size_t)want->numel * sizeof *ref);
        CHECK_OK(weight_set_load_f32(ws, name, want->ndim, want->shape, &got));
        CHECK_OK(st_read_f32(c->golden, want, ref));
        if (got) {
            double scale = test_max_abs(ref, (size_t)want->numel);
            fprintf(stderr, "    %-70s max|diff| %.3g (max|ref| %.3g)\n", want->name,
                    max_abs_diff(got, ref, (size_t)want->numel), scale);
            test_close(want->name, got, ref, (size_t)want->numel, 1e-4 * scale, 0);
        }
        free(got);
        free(ref);
        compared++;
    }
    CHECK(compared > 0, "%s: no %s* tensors", st_path(c->golden), prefix);
    weight_set_close(ws);
    lora_set_free(set);
}

static lcm_status attach_hook(void *set, const char *component, weight_set *weights) {
    return lora_set_attach(set, component, weights);
}

// The whole fused UNet: noise_pred_lora_fused_scale_S from the golden inputs.
static void check_fused_unet(const lora_case *c, const char *lora_path, int s) {
    lora_set *set = open_adapter(lora_path, c->scales[s]);
    if (!set) return;
    model_folder folder;
    unet_model *unet = NULL;
    CHECK_OK(model_folder_open(c->folder, NULL, &folder));
    folder.weights_hook = attach_hook;
    folder.weights_hook_user = set;
    CHECK_OK(unet_load(test_backend_for(LCM_PRECISION_FP32), &folder, "unet", &unet));
    model_folder_close(&folder);
    CHECK_OK(lora_set_finish(set));
    lora_stats stats;
    lora_set_stats(set, 0, &stats);
    st_file *adapter = NULL;
    CHECK_OK(st_open(lora_path, &adapter));
    fprintf(stderr, "  %s\n", lora_set_report(set));
    if (c->target_modules >= 0)
        CHECK(stats.applied_modules == c->target_modules && stats.unet_modules == c->target_modules,
              "%s: %d modules applied, golden info lists %d targets", lora_path, stats.applied_modules,
              c->target_modules);
    CHECK(adapter && stats.applied_tensors == (int)st_count(adapter) && stats.unmatched_keys == 0,
          "%s: %d of %zu tensors applied", lora_path, stats.applied_tensors,
          adapter ? st_count(adapter) : 0);
    st_close(adapter);

    char reference[128];
    snprintf(reference, sizeof reference, NOISE_PRED_PREFIX "%s", c->scale_names[s]);
    tensor *sample = golden_tensor(c->golden, "sample");
    tensor *context = golden_tensor(c->golden, "encoder_hidden_states");
    tensor *cond = golden_tensor(c->golden, "timestep_cond");
    const st_tensor *ts = st_find(c->golden, "timestep");
    int64_t timestep = 0;
    CHECK(sample && context && ts && ts->numel == 1 && st_read_i64(c->golden, ts, &timestep) == LCM_OK,
          "%s: sample, encoder_hidden_states or timestep missing", st_path(c->golden));
    tensor *out = NULL;
    if (unet && sample && context)
        CHECK_OK(unet_forward(unet, sample, (float)timestep, context, cond, NULL, &out));
    if (out) CHECK(golden_compare(c->golden, reference, out, 0, 1e-4, true), "%s", reference);
    if (out) {
        int64_t n;
        float *want = golden_f32(c->golden, reference, &n);
        fprintf(stderr, "    %-70s max|diff| %.3g\n", reference,
                want ? max_abs_diff(out->data, want, (size_t)n) : NAN);
        free(want);
    }
    tensor_free(out);
    tensor_free(sample);
    tensor_free(context);
    tensor_free(cond);
    unet_free(unet);
    lora_set_free(set);
}

// Every adapter file fuses to the same unet as the first one (every 2-D/4-D weight), and scale 0
// leaves every weight bit-identical.
static void check_formats_agree(const lora_case *c) {
    float scale = c->scales[0];
    weight_set *plain = open_unet_weights(c->folder, NULL);
    lora_set *sets[MAX_LORA_FILES] = {0};
    weight_set *fused[MAX_LORA_FILES] = {0};
    lora_set *zero = open_adapter(c->lora_files[0], 0.0f);
    weight_set *unchanged = zero ? open_unet_weights(c->folder, zero) : NULL;
    for (int f = 0; f < c->lora_count; f++) {
        sets[f] = open_adapter(c->lora_files[f], scale);
        fused[f] = sets[f] ? open_unet_weights(c->folder, sets[f]) : NULL;
    }
    double worst[MAX_LORA_FILES] = {0};
    int weights = 0, changed = 0;
    bool zero_same = true;
    for (size_t i = 0; plain && i < weight_set_count(plain); i++) {
        const st_tensor *t = weight_set_at(plain, i);
        if (!is_matrix_weight(t)) continue;
        weights++;
        float *base = load_weight(plain, t);
        float *first = fused[0] ? load_weight(fused[0], t) : NULL;
        float *same = unchanged ? load_weight(unchanged, t) : NULL;
        size_t n = (size_t)t->numel;
        if (base && same && memcmp(base, same, n * sizeof *base)) zero_same = false;
        if (base && first && memcmp(base, first, n * sizeof *base)) changed++;
        for (int f = 1; f < c->lora_count; f++) {
            float *other = fused[f] ? load_weight(fused[f], t) : NULL;
            if (first && other) {
                double d = max_abs_diff(other, first, n), ref = test_max_abs(first, n);
                if (d > worst[f]) worst[f] = d;
                CHECK(d <= 1e-4 * ref, "%s: %s differs from %s by %.3g", t->name, c->lora_files[f],
                      c->lora_files[0], d);
            }
            free(other);
        }
        free(base);
        free(first);
        free(same);
    }
    for (int f = 1; f < c->lora_count; f++)
        fprintf(stderr, "  %s vs %s: max|diff| %.3g over %d weights (scale %g)\n", c->lora_files[f],
                c->lora_files[0], worst[f], weights, (double)scale);
    CHECK(zero_same, "%s at scale 0 changed some weight", c->lora_files[0]);
    CHECK(c->target_modules < 0 || changed == c->target_modules,
          "%s at scale %g changed %d weights, golden info lists %d targets", c->lora_files[0],
          (double)scale, changed, c->target_modules);
    fprintf(stderr, "  scale 0: all %d weights bit-identical: %s; scale %g changed %d weights\n",
            weights, zero_same ? "yes" : "NO", (double)scale, changed);
    weight_set_close(unchanged);
    lora_set_free(zero);
    for (int f = 0; f < c->lora_count; f++) {
        weight_set_close(fused[f]);
        lora_set_free(sets[f]);
    }
    weight_set_close(plain);
}

// Two adapters at S/2 each (first and last file) give the golden fused weights of scale S.
static void check_two_adapters_add(const lora_case *c) {
    int s = 0;
    for (int i = 1; i < c->scale_count; i++)
        if (fabsf(c->scales[i]) > fabsf(c->scales[s])) s = i;
    float half = c->scales[s] / 2;
    lcm_lora pair[2] = {{c->lora_files[0], half}, {c->lora_files[c->lora_count - 1], half}};
    lora_set *set = open_adapters(pair, 2, false);
    weight_set *ws = set ? open_unet_weights(c->folder, set) : NULL;
    char prefix[64];
    snprintf(prefix, sizeof prefix, "fused_weight_scale_%s.", c->scale_names[s]);
    int compared = 0;
    for (size_t i = 0; ws && i < st_count(c->golden); i++) {
        const st_tensor *want = st_at(c->golden, i);
        if (strncmp(want->name, prefix, strlen(prefix))) continue;
        char name[512];
        snprintf(name, sizeof name, "%s.weight", want->name + strlen(prefix));
        float *got = NULL, *ref = malloc((size_t)want->numel * sizeof *ref);
        CHECK_OK(weight_set_load_f32(ws, name, want->ndim, want->shape, &got));
        CHECK_OK(st_read_f32(c->golden, want, ref));
        if (got) {
            double scale = test_max_abs(ref, (size_t)want->numel);
            double d = max_abs_diff(got, ref, (size_t)want->numel);
            CHECK(d <= 1e-4 * scale, "two adapters at %g: %s off by %.3g", (double)half, name, d);
            if (!compared)
                fprintf(stderr, "  two adapters at scale %g each vs fused scale %s: %s max|diff| %.3g\n",
                        (double)half, c->scale_names[s], name, d);
        }
        free(got);
        free(ref);
        compared++;
    }
    CHECK(compared > 0, "%s: no %s* tensors", st_path(c->golden), prefix);
    weight_set_close(ws);
    lora_set_free(set);
}

static int list_lora_files(const char *folder, lora_case *c) {
    char loras[PATH_SIZE];
    test_path(loras, sizeof loras, "%s/loras", folder);
    DIR *d = opendir(loras);
    if (!d) return 0;
    char subdirs[MAX_LORA_FILES][256];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_LORA_FILES) {
        char path[PATH_SIZE];
        if (e->d_name[0] == '.') continue;
        test_path(path, sizeof path, "%s/%s", loras, e->d_name);
        if (is_dir(path)) snprintf(subdirs[n++], sizeof subdirs[0], "%s", e->d_name);
    }
    closedir(d);
    qsort(subdirs, (size_t)n, sizeof subdirs[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < n; i++) {
        char dir[PATH_SIZE], **names;
        test_path(dir, sizeof dir, "%s/%s", loras, subdirs[i]);
        int count = test_list_files(dir, "", ".safetensors", &names);
        for (int k = 0; k < count && c->lora_count < MAX_LORA_FILES; k++)
            test_path(c->lora_files[c->lora_count++], PATH_SIZE, "%s/%s", dir, names[k]);
        test_free_list(names, count);
    }
    return c->lora_count;
}

static int check_folder(const char *folder) {
    char golden_dir[PATH_SIZE];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", folder);
    if (!is_dir(golden_dir)) return 0;
    char **names;
    int count = test_list_files(golden_dir, "unet_lora", ".safetensors", &names), cases = 0;
    for (int g = 0; g < count; g++) {
        static lora_case c;
        memset(&c, 0, sizeof c);
        c.folder = folder;
        CHECK(list_lora_files(folder, &c) > 0, "%s: golden %s but no adapter under loras/*/", folder,
              names[g]);
        char path[PATH_SIZE];
        test_path(path, sizeof path, "%s/%s", golden_dir, names[g]);
        st_file *golden = NULL;
        CHECK_OK(st_open(path, &golden));
        if (!golden || c.lora_count == 0) {
            st_close(golden);
            continue;
        }
        c.golden = golden;
        cJSON *info = golden_info(golden);
        const cJSON *targets = cJSON_GetObjectItemCaseSensitive(info, "lora_target_modules");
        c.target_modules = cJSON_IsArray(targets) ? cJSON_GetArraySize(targets) : -1;
        cJSON_Delete(info);
        find_scales(&c);
        for (int f = 0; f < c.lora_count; f++) {
            for (int s = 0; s < c.scale_count; s++) {
                fprintf(stderr, "%s with %s at scale %s\n", path, c.lora_files[f], c.scale_names[s]);
                check_fused_weights(&c, c.lora_files[f], s);
                check_fused_unet(&c, c.lora_files[f], s);
                cases++;
            }
        }
        check_formats_agree(&c);
        check_two_adapters_add(&c);
        st_close(golden);
    }
    test_free_list(names, count);
    return cases;
}

// ---- hand-made adapters ----------------------------------------------------------------------

typedef struct fake_tensor {
    const char *name;
    int ndim;
    int64_t shape[4];
    float value; // NAN: a deterministic pattern; else every element = value
} fake_tensor;

static lcm_status fill_fake(void *user, size_t index, float *out, int64_t numel) {
    const fake_tensor *t = (const fake_tensor *)user + index;
    for (int64_t i = 0; i < numel; i++)
        out[i] = isnan(t->value) ? (float)((i * 7 + (int64_t)index * 3) % 11 - 5) / 16.0f : t->value;
    return LCM_OK;
}

// Writes the tensors to tmpdir/NAME; returns the path (static buffer per call site is not
// needed: the caller copies).
// The dtype write_adapter stores (the fake values are exact in F16 and BF16 too).
static st_dtype adapter_dtype = ST_F32;

static void write_adapter(char *path, size_t size, const char *name, const fake_tensor *tensors,
                          int count) {
    test_path(path, size, "%s/%s", tmpdir, name);
    st_write_entry entries[16];
    for (int i = 0; i < count; i++) {
        entries[i] = (st_write_entry){.name = tensors[i].name, .dtype = adapter_dtype, .ndim = tensors[i].ndim};
        memcpy(entries[i].shape, tensors[i].shape, sizeof tensors[i].shape);
    }
    CHECK_OK(st_write(path, entries, (size_t)count, fill_fake, (void *)tensors, "pt"));
}

// Opening must fail with `status` and a message naming every string in `needles`.
static void expect_open_error(const char *path, lcm_status status, const char *const *needles) {
    lcm_lora lora = {path, 1.0f};
    lora_set *set = NULL;
    lcm_status st = lora_set_open(&lora, 1, false, &set);
    const char *msg = lcm_last_error();
    CHECK(st == status && !set, "%s: got %s, expected %s (%s)", path, lcm_status_name(st),
          lcm_status_name(status), msg);
    for (int i = 0; needles[i]; i++)
        CHECK(strstr(msg, needles[i]) != NULL, "error for %s does not name '%s': %s", path, needles[i],
              msg);
    fprintf(stderr, "  expected error: %s\n", msg);
    lora_set_free(set);
}

// The first weight of `ws` with the given number of dimensions whose name starts with `prefix`.
static const st_tensor *pick_weight(const weight_set *ws, int ndim, const char *prefix) {
    for (size_t i = 0; i < weight_set_count(ws); i++) {
        const st_tensor *t = weight_set_at(ws, i);
        if (t->ndim == ndim && is_matrix_weight(t) && !strncmp(t->name, prefix, strlen(prefix)))
            return t;
    }
    return NULL;
}

// The first 2-D weight of `ws` whose name ends with `ending`.
static const st_tensor *pick_weight_ending(const weight_set *ws, const char *ending) {
    for (size_t i = 0; i < weight_set_count(ws); i++) {
        const st_tensor *t = weight_set_at(ws, i);
        if (t->ndim == 2 && ends_with_text(t->name, ending)) return t;
    }
    return NULL;
}

static void kohya_name(char *buf, size_t size, const char *prefix, const char *weight,
                       const char *suffix) {
    size_t len = strlen(weight) - strlen(".weight");
    snprintf(buf, size, "%s%.*s%s", prefix, (int)len, weight, suffix);
    for (char *c = buf + strlen(prefix); c < buf + strlen(prefix) + len; c++)
        if (*c == '.') *c = '_';
}

// A linear weight of the unet of `folder`: formula, errors, lenient mode.
static void check_handmade(const char *folder) {
    weight_set *plain = open_unet_weights(folder, NULL);
    if (!plain) return;
    const st_tensor *lin = pick_weight(plain, 2, "");
    const st_tensor *conv = pick_weight(plain, 4, "");
    CHECK(lin && conv, "%s: unet has no linear or conv weight", folder);
    if (!lin || !conv) {
        weight_set_close(plain);
        return;
    }
    int64_t out = lin->shape[0], in = lin->shape[1];
    const int rank = 3;
    char down[512], up[512], alpha[512], path[PATH_SIZE];
    kohya_name(down, sizeof down, "lora_unet_", lin->name, ".lora_down.weight");
    kohya_name(up, sizeof up, "lora_unet_", lin->name, ".lora_up.weight");
    kohya_name(alpha, sizeof alpha, "lora_unet_", lin->name, ".alpha");
    char stem[512];
    kohya_name(stem, sizeof stem, "lora_unet_", lin->name, "");

    // The formula, in double: W + s * (alpha / rank) * up @ down, from F32, F16 and BF16 files.
    const st_dtype dtypes[] = {ST_F32, ST_F16, ST_BF16};
    for (int dt = 0; dt < 3; dt++) {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN}, {up, 2, {out, rank}, NAN}, {alpha, 0, {0}, 6.0f}};
        adapter_dtype = dtypes[dt];
        write_adapter(path, sizeof path, "good.safetensors", t, 3);
        adapter_dtype = ST_F32;
        const float scale = 0.75f;
        lora_set *set = open_adapter(path, scale);
        weight_set *ws = set ? open_unet_weights(folder, set) : NULL;
        float *got = ws ? load_weight(ws, lin) : NULL, *base = load_weight(plain, lin);
        float *d = malloc((size_t)(rank * in) * sizeof *d), *u = malloc((size_t)(out * rank) * sizeof *u);
        fill_fake(t, 0, d, rank * in);
        fill_fake(t, 1, u, out * rank);
        float *want = malloc((size_t)(out * in) * sizeof *want);
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) {
                double acc = 0;
                for (int r = 0; r < rank; r++) acc += (double)u[o * rank + r] * d[r * in + i];
                want[o * in + i] = (float)(base[o * in + i] + scale * (6.0 / rank) * acc);
            }
        // A load that accepts any shape is patched the same way (the stored shape is used).
        float *any = NULL;
        if (ws) CHECK_OK(weight_set_load_f32(ws, lin->name, -1, NULL, &any));
        CHECK(got && any && !memcmp(got, any, (size_t)(out * in) * sizeof *got),
              "load with ndim -1 differs from the shaped load");
        free(any);
        if (got) {
            fprintf(stderr, "  formula on %s (%s adapter): max|diff| %.3g\n", lin->name,
                    st_dtype_name(dtypes[dt]), max_abs_diff(got, want, (size_t)(out * in)));
            test_close("W + s*(alpha/rank)*up@down", got, want, (size_t)(out * in), 1e-6, 1e-6);
        }
        weight_set_close(ws);
        if (set) {
            CHECK_OK(lora_set_finish(set));
            lora_stats stats;
            lora_set_stats(set, 0, &stats);
            CHECK(stats.applied_modules == 1 && stats.applied_tensors == 3, "stats %d modules %d tensors",
                  stats.applied_modules, stats.applied_tensors);
            CHECK(strstr(lora_set_report(set), "3 tensors applied to 1 modules") != NULL, "report: %s",
                  lora_set_report(set));
        }
        lora_set_free(set);
        free(got), free(base), free(d), free(u), free(want);
    }

    // Keys that match nothing: an error naming them after loading, or a warning when lenient.
    {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN},
                           {up, 2, {out, rank}, NAN},
                           {"lora_unet_no_such_block_proj.lora_down.weight", 2, {rank, in}, NAN},
                           {"lora_unet_no_such_block_proj.lora_up.weight", 2, {out, rank}, NAN}};
        write_adapter(path, sizeof path, "nomatch.safetensors", t, 4);
        for (int lenient = 0; lenient < 2; lenient++) {
            lcm_lora lora = {path, 1.0f};
            lora_set *set = open_adapters(&lora, 1, lenient);
            weight_set *ws = set ? open_unet_weights(folder, set) : NULL;
            float *w = ws ? load_weight(ws, lin) : NULL;
            free(w);
            weight_set_close(ws);
            if (!set) continue;
            lcm_status st = lora_set_finish(set);
            if (!lenient) {
                CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), "lora_unet_no_such_block_proj") &&
                          strstr(lcm_last_error(), path),
                      "unmatched key: %s: %s", lcm_status_name(st), lcm_last_error());
                fprintf(stderr, "  expected error: %s\n", lcm_last_error());
            } else {
                lora_stats stats;
                CHECK_OK(st);
                lora_set_stats(set, 0, &stats);
                CHECK(stats.applied_modules == 1 && stats.unmatched_keys == 2,
                      "lenient: %d applied, %d unmatched", stats.applied_modules, stats.unmatched_keys);
                CHECK(strstr(lora_set_report(set), "2 tensors applied to 1 modules") &&
                          strstr(lora_set_report(set), "2 unmatched keys skipped"),
                      "lenient report: %s", lora_set_report(set));
            }
            lora_set_free(set);
        }
    }

    // Malformed files: each error names the file and the offending key.
    {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN}, {up, 2, {out, rank + 1}, NAN}};
        write_adapter(path, sizeof path, "rank.safetensors", t, 2);
        expect_open_error(path, LCM_ERR_FORMAT, (const char *[]){path, stem, "rank", NULL});
    }
    {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN}, {alpha, 0, {0}, 1.0f}};
        write_adapter(path, sizeof path, "noup.safetensors", t, 2);
        expect_open_error(path, LCM_ERR_FORMAT, (const char *[]){path, stem, "no up", NULL});
    }
    {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN}, {up, 2, {out, rank}, NAN}, {alpha, 1, {2}, 1.0f}};
        write_adapter(path, sizeof path, "alpha.safetensors", t, 3);
        expect_open_error(path, LCM_ERR_FORMAT, (const char *[]){path, alpha, "scalar", NULL});
    }
    {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN}, {up, 2, {out, rank}, NAN},
                           {"lora_unet_orphan.alpha", 0, {0}, 1.0f}};
        write_adapter(path, sizeof path, "orphan.safetensors", t, 3);
        expect_open_error(path, LCM_ERR_FORMAT, (const char *[]){path, "lora_unet_orphan", "only an alpha", NULL});
    }
    {
        fake_tensor t[] = {{down, 4, {rank, in, 1, 1}, NAN}, {up, 4, {out, rank, 3, 3}, NAN}};
        write_adapter(path, sizeof path, "upkernel.safetensors", t, 2);
        expect_open_error(path, LCM_ERR_UNSUPPORTED, (const char *[]){path, up, "1x1", NULL});
    }
    {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN}, {up, 2, {out, rank}, NAN},
                           {"lora_unet_x.hada_w1_a", 2, {2, 2}, NAN}};
        write_adapter(path, sizeof path, "loha.safetensors", t, 3);
        expect_open_error(path, LCM_ERR_FORMAT, (const char *[]){path, "lora_unet_x.hada_w1_a", NULL});
        lcm_lora lora = {path, 1.0f};
        lora_set *set = open_adapters(&lora, 1, true); // lenient: a warning, the rest applies
        lora_set_free(set);
    }
    {
        fake_tensor t[] = {{"something_else", 1, {4}, 1.0f}};
        write_adapter(path, sizeof path, "empty.safetensors", t, 1);
        expect_open_error(path, LCM_ERR_FORMAT, (const char *[]){path, "no LoRA tensors", NULL});
    }
    {
        const char *missing = "/nonexistent/adapter.safetensors";
        expect_open_error(missing, LCM_ERR_IO, (const char *[]){missing, NULL});
    }
    // Shapes that do not fit the model fail the load, naming key and weight.
    {
        fake_tensor t[] = {{down, 2, {rank, in}, NAN}, {up, 2, {out + 1, rank}, NAN}};
        write_adapter(path, sizeof path, "misfit.safetensors", t, 2);
        lora_set *set = open_adapter(path, 1.0f);
        weight_set *ws = set ? open_unet_weights(folder, set) : NULL;
        float *w = NULL;
        lcm_status st = ws ? weight_set_load_f32(ws, lin->name, lin->ndim, lin->shape, &w) : LCM_OK;
        CHECK(st == LCM_ERR_FORMAT && !w && strstr(lcm_last_error(), stem) &&
                  strstr(lcm_last_error(), lin->name),
              "misfit: %s: %s", lcm_status_name(st), lcm_last_error());
        fprintf(stderr, "  expected error: %s\n", lcm_last_error());
        free(w);
        weight_set_close(ws);
        lora_set_free(set);
    }
    // A conv weight with a 4-D down of another kernel size does not fit either.
    {
        char cdown[512], cup[512];
        kohya_name(cdown, sizeof cdown, "lora_unet_", conv->name, ".lora_down.weight");
        kohya_name(cup, sizeof cup, "lora_unet_", conv->name, ".lora_up.weight");
        int64_t k = conv->shape[2] == 1 ? 3 : 1;
        fake_tensor t[] = {{cdown, 4, {rank, conv->shape[1], k, k}, NAN},
                           {cup, 4, {conv->shape[0], rank, 1, 1}, NAN}};
        write_adapter(path, sizeof path, "kernel.safetensors", t, 2);
        lora_set *set = open_adapter(path, 1.0f);
        weight_set *ws = set ? open_unet_weights(folder, set) : NULL;
        float *w = NULL;
        lcm_status st = ws ? weight_set_load_f32(ws, conv->name, conv->ndim, conv->shape, &w) : LCM_OK;
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), conv->name), "conv kernel: %s: %s",
              lcm_status_name(st), lcm_last_error());
        free(w);
        weight_set_close(ws);
        lora_set_free(set);
    }
    weight_set_close(plain);
}

// A kohya name that two weights map to is ambiguous (synthetic weights: any names).
static void check_ambiguous(void) {
    char path[PATH_SIZE];
    fake_tensor t[] = {{"lora_unet_a_b_c.lora_down.weight", 2, {1, 4}, NAN},
                       {"lora_unet_a_b_c.lora_up.weight", 2, {4, 1}, NAN}};
    write_adapter(path, sizeof path, "ambiguous.safetensors", t, 2);
    lora_set *set = open_adapter(path, 1.0f);
    weight_recorder *rec = NULL;
    weight_set *ws = NULL;
    CHECK_OK(weight_recorder_new(1, &rec));
    if (rec) CHECK_OK(weight_set_open_synthetic(rec, "unet", &ws));
    if (set && ws) {
        CHECK_OK(lora_set_attach(set, "unet", ws));
        float *w = NULL;
        CHECK_OK(weight_set_load_f32(ws, "a.b_c.weight", 2, (int64_t[]){4, 4}, &w));
        free(w);
        w = NULL;
        lcm_status st = weight_set_load_f32(ws, "a_b.c.weight", 2, (int64_t[]){4, 4}, &w);
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), "ambiguous") &&
                  strstr(lcm_last_error(), "a.b_c.weight") && strstr(lcm_last_error(), "a_b.c.weight"),
              "ambiguous kohya name: %s: %s", lcm_status_name(st), lcm_last_error());
        free(w);
    }
    weight_set_close(ws);
    weight_recorder_free(rec);
    lora_set_free(set);
}

// Dotted (diffusers/PEFT) keys for the unet and the text encoder, through the whole pipeline.
static void check_pipeline_components(const char *folder) {
    char te_dir[PATH_SIZE];
    test_path(te_dir, sizeof te_dir, "%s/text_encoder", folder);
    weight_set *te = NULL, *unet = open_unet_weights(folder, NULL);
    CHECK_OK(weight_set_open(te_dir, "model", NULL, &te));
    const st_tensor *tw = te ? pick_weight(te, 2, "text_model.encoder.") : NULL;
    const st_tensor *uw = unet ? pick_weight(unet, 2, "") : NULL;
    CHECK(tw && uw, "%s: no text encoder / unet linear weight", folder);
    if (tw && uw) {
        char te_down[512], te_up[512], u_down[512], u_up[512], kte_down[512], kte_up[512], path[PATH_SIZE];
        size_t tl = strlen(tw->name) - 7, ul = strlen(uw->name) - 7;
        snprintf(te_down, sizeof te_down, "text_encoder.%.*s.lora_linear_layer.down.weight", (int)tl, tw->name);
        snprintf(te_up, sizeof te_up, "text_encoder.%.*s.lora_linear_layer.up.weight", (int)tl, tw->name);
        snprintf(u_down, sizeof u_down, "base_model.model.%.*s.lora_A.weight", (int)ul, uw->name);
        snprintf(u_up, sizeof u_up, "base_model.model.%.*s.lora_B.weight", (int)ul, uw->name);
        kohya_name(kte_down, sizeof kte_down, "lora_te_", tw->name, ".lora_down.weight");
        kohya_name(kte_up, sizeof kte_up, "lora_te_", tw->name, ".lora_up.weight");
        fake_tensor t[] = {{te_down, 2, {2, tw->shape[1]}, NAN}, {te_up, 2, {tw->shape[0], 2}, NAN},
                           {u_down, 2, {2, uw->shape[1]}, NAN}, {u_up, 2, {uw->shape[0], 2}, NAN}};
        write_adapter(path, sizeof path, "dotted.safetensors", t, 4);
        char kpath[PATH_SIZE];
        fake_tensor k[] = {{kte_down, 2, {2, tw->shape[1]}, NAN}, {kte_up, 2, {tw->shape[0], 2}, NAN}};
        write_adapter(kpath, sizeof kpath, "kohya_te.safetensors", k, 2);
        lcm_lora loras[2] = {{path, 0.5f}, {kpath, 1.0f}};
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        options.loras = loras;
        options.lora_count = 2;
        lcm_pipeline *p = NULL;
        CHECK_OK(lcm_pipeline_open(folder, &options, &p));
        if (p) {
            fprintf(stderr, "  pipeline report:\n%s\n", lcm_pipeline_lora_report(p));
            lora_stats s0, s1;
            lora_set_stats(p->loras, 0, &s0);
            lora_set_stats(p->loras, 1, &s1);
            CHECK(s0.unet_modules == 1 && s0.text_encoder_modules == 1 && s0.applied_tensors == 4,
                  "dotted: unet %d te %d tensors %d", s0.unet_modules, s0.text_encoder_modules,
                  s0.applied_tensors);
            CHECK(s1.text_encoder_modules == 1 && s1.unet_modules == 0, "kohya te: unet %d te %d",
                  s1.unet_modules, s1.text_encoder_modules);
            CHECK(strstr(lcm_pipeline_lora_report(p), "(scale 0.5)") != NULL, "report: %s",
                  lcm_pipeline_lora_report(p));
        }
        lcm_pipeline_close(p);
    }
    // diffusers' attention-processor format: to_q_lora / to_out_lora of the unet's processors and
    // of the text encoder's attention (-> q_proj / out_proj).
    const st_tensor *uq = unet ? pick_weight_ending(unet, ".to_q.weight") : NULL;
    const st_tensor *uo = unet ? pick_weight_ending(unet, ".to_out.0.weight") : NULL;
    const st_tensor *tq = te ? pick_weight_ending(te, ".self_attn.q_proj.weight") : NULL;
    const st_tensor *to = te ? pick_weight_ending(te, ".self_attn.out_proj.weight") : NULL;
    CHECK(uq && uo && tq && to, "%s: no attention projections found", folder);
    if (uq && uo && tq && to) {
        char names[8][512], path[PATH_SIZE];
        size_t lq = strlen(uq->name) - strlen(".to_q.weight"), lo = strlen(uo->name) - strlen(".to_out.0.weight");
        size_t tl = strlen(tq->name) - strlen(".q_proj.weight"), tol = strlen(to->name) - strlen(".out_proj.weight");
        snprintf(names[0], 512, "unet.%.*s.processor.to_q_lora.down.weight", (int)lq, uq->name);
        snprintf(names[1], 512, "unet.%.*s.processor.to_q_lora.up.weight", (int)lq, uq->name);
        snprintf(names[2], 512, "unet.%.*s.processor.to_out_lora.down.weight", (int)lo, uo->name);
        snprintf(names[3], 512, "unet.%.*s.processor.to_out_lora.up.weight", (int)lo, uo->name);
        snprintf(names[4], 512, "text_encoder.%.*s.to_q_lora.down.weight", (int)tl, tq->name);
        snprintf(names[5], 512, "text_encoder.%.*s.to_q_lora.up.weight", (int)tl, tq->name);
        snprintf(names[6], 512, "text_encoder.%.*s.to_out_lora.down.weight", (int)tol, to->name);
        snprintf(names[7], 512, "text_encoder.%.*s.to_out_lora.up.weight", (int)tol, to->name);
        const st_tensor *w[4] = {uq, uo, tq, to};
        fake_tensor t[8];
        for (int i = 0; i < 4; i++) {
            t[2 * i] = (fake_tensor){names[2 * i], 2, {2, w[i]->shape[1]}, NAN};
            t[2 * i + 1] = (fake_tensor){names[2 * i + 1], 2, {w[i]->shape[0], 2}, NAN};
        }
        write_adapter(path, sizeof path, "legacy.safetensors", t, 8);
        lcm_lora lora = {path, 1.0f};
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        options.loras = &lora;
        options.lora_count = 1;
        lcm_pipeline *p = NULL;
        CHECK_OK(lcm_pipeline_open(folder, &options, &p));
        if (p) {
            lora_stats s;
            lora_set_stats(p->loras, 0, &s);
            CHECK(s.unet_modules == 2 && s.text_encoder_modules == 2 && s.applied_tensors == 8,
                  "legacy format: unet %d te %d tensors %d", s.unet_modules, s.text_encoder_modules,
                  s.applied_tensors);
            fprintf(stderr, "  legacy format: %s\n", lcm_pipeline_lora_report(p));
        }
        lcm_pipeline_close(p);
    }
    weight_set_close(te);
    weight_set_close(unet);
}

// ---- spec parsing and the CLI ----------------------------------------------------------------

static void check_spec(const char *spec, lcm_status want_status, size_t want_length, float want_scale) {
    size_t length = 0;
    float scale = 0;
    lcm_status st = lcm_lora_spec_parse(spec, &length, &scale);
    CHECK(st == want_status && (st != LCM_OK || (length == want_length && scale == want_scale)),
          "spec '%s': %s length %zu scale %g, expected %s %zu %g", spec, lcm_status_name(st), length,
          (double)scale, lcm_status_name(want_status), want_length, (double)want_scale);
}

static void check_spec_parsing(void) {
    check_spec("a.safetensors", LCM_OK, 13, 1.0f);
    check_spec("a.safetensors:0.5", LCM_OK, 13, 0.5f);
    check_spec("a.safetensors:-1.25", LCM_OK, 13, -1.25f);
    check_spec("a.safetensors:2", LCM_OK, 13, 2.0f);
    check_spec("dir:x/a.safetensors", LCM_OK, 19, 1.0f);
    check_spec("dir:1/a.safetensors:0.25", LCM_OK, 19, 0.25f);
    check_spec("/m/lora:2", LCM_OK, 7, 2.0f);
    check_spec("a.safetensors:", LCM_OK, 14, 1.0f);
    check_spec("a.safetensors:abc", LCM_OK, 17, 1.0f);
    check_spec("a.safetensors:0.5x", LCM_OK, 18, 1.0f);
    check_spec("a.safetensors: 1", LCM_OK, 16, 1.0f);
    check_spec("a.safetensors:inf", LCM_OK, 17, 1.0f);
    check_spec("a.safetensors:nan", LCM_OK, 17, 1.0f);
    check_spec("a.safetensors:1e999", LCM_OK, 19, 1.0f);
    check_spec(":0.5", LCM_ERR_INVALID_ARGUMENT, 0, 0);
    check_spec("", LCM_ERR_INVALID_ARGUMENT, 0, 0);
}

// Runs `lcm generate` on `folder` (64x64, 1 step) with extra options; returns the exit status and
// the combined stdout+stderr in out.
static int run_generate(const char *folder, const char *const *lora_args, const char *extra, char *out,
                        size_t cap) {
    char cmd[4 * PATH_SIZE], png[PATH_SIZE];
    test_path(png, sizeof png, "%s/out.png", tmpdir);
    snprintf(cmd, sizeof cmd, "%s generate --model ", test_lcm_bin());
    test_append_quoted(cmd, sizeof cmd, folder);
    strncat(cmd, " --prompt 'a cat' --steps 1 --guidance 1 --width 64 --height 64 --seed 1 --output ",
            sizeof cmd - strlen(cmd) - 1);
    test_append_quoted(cmd, sizeof cmd, png);
    for (int i = 0; lora_args[i]; i++) {
        strncat(cmd, " --lora ", sizeof cmd - strlen(cmd) - 1);
        test_append_quoted(cmd, sizeof cmd, lora_args[i]);
    }
    strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
    strncat(cmd, extra, sizeof cmd - strlen(cmd) - 1);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    return test_run(cmd, out, cap);
}

static void check_cli(const char *folder, const char *adapter) {
    // A copy of the adapter under a name with ':' in it.
    char colon_dir[PATH_SIZE], colon_path[PATH_SIZE], cmd[3 * PATH_SIZE], out[8192];
    test_path(colon_dir, sizeof colon_dir, "%s/a:1", tmpdir);
    test_path(colon_path, sizeof colon_path, "%s/lora:2.safetensors", colon_dir);
    CHECK(mkdir(colon_dir, 0700) == 0, "mkdir %s", colon_dir);
    snprintf(cmd, sizeof cmd, "cp ");
    test_append_quoted(cmd, sizeof cmd, adapter);
    strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
    test_append_quoted(cmd, sizeof cmd, colon_path);
    CHECK(test_run(cmd, NULL, 0) == 0, "%s", cmd);

    char with_scale[PATH_SIZE + 16];
    snprintf(with_scale, sizeof with_scale, "%s:0.5", colon_path);
    int rc = run_generate(folder, (const char *[]){with_scale, NULL}, "", out, sizeof out);
    char want[PATH_SIZE + 32];
    snprintf(want, sizeof want, "%s (scale 0.5): ", colon_path);
    CHECK(rc == 0 && strstr(out, want) && strstr(out, "tensors applied to"),
          "--lora PATH:0.5: rc %d, output:\n%s", rc, out);
    fprintf(stderr, "  cli: %s", out);

    rc = run_generate(folder, (const char *[]){colon_path, adapter, NULL}, "--quiet", out, sizeof out);
    CHECK(rc == 0, "--lora PATH --lora PATH: rc %d, output:\n%s", rc, out);

    char bad[PATH_SIZE + 16];
    snprintf(bad, sizeof bad, "%s:abc", adapter);
    rc = run_generate(folder, (const char *[]){bad, NULL}, "", out, sizeof out);
    CHECK(rc == 2 && strstr(out, bad), "--lora PATH:abc: rc %d, output:\n%s", rc, out);

    rc = run_generate(folder, (const char *[]){":0.5", NULL}, "", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "':0.5'") && strstr(out, "FILE:SCALE"), "--lora :0.5: rc %d, output:\n%s",
          rc, out);

    char nomatch[PATH_SIZE];
    test_path(nomatch, sizeof nomatch, "%s/nomatch.safetensors", tmpdir);
    rc = run_generate(folder, (const char *[]){nomatch, NULL}, "", out, sizeof out);
    CHECK(rc == 2 && strstr(out, "lora_unet_no_such_block_proj") && strstr(out, "--lora-lenient"),
          "--lora NOMATCH: rc %d, output:\n%s", rc, out);
    fprintf(stderr, "  cli: %s", out);
    rc = run_generate(folder, (const char *[]){nomatch, NULL}, "--lora-lenient", out, sizeof out);
    CHECK(rc == 0 && strstr(out, "warning") && strstr(out, "lora_unet_no_such_block_proj"),
          "--lora NOMATCH --lora-lenient: rc %d, output:\n%s", rc, out);

    snprintf(cmd, sizeof cmd, "rm -rf ");
    test_append_quoted(cmd, sizeof cmd, colon_dir);
    test_run(cmd, NULL, 0);
}

// A single-file checkpoint (`lcm convert`, original SD key names read through a renaming weight
// set) takes the same adapter: same modules applied, same image as the folder.
static void check_checkpoint(const char *folder, const char *adapter) {
    char checkpoint[PATH_SIZE], cmd[3 * PATH_SIZE];
    test_path(checkpoint, sizeof checkpoint, "%s/checkpoint.safetensors", tmpdir);
    snprintf(cmd, sizeof cmd, "%s convert --model ", test_lcm_bin());
    test_append_quoted(cmd, sizeof cmd, folder);
    strncat(cmd, " --output ", sizeof cmd - strlen(cmd) - 1);
    test_append_quoted(cmd, sizeof cmd, checkpoint);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    char out[4096];
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "%s: rc %d: %s", cmd, rc, out);
    if (rc != 0) return;
    const char *models[2] = {folder, checkpoint};
    lcm_result *results[2] = {NULL, NULL};
    int modules[2] = {-1, -2};
    for (int i = 0; i < 2; i++) {
        lcm_lora lora = {adapter, 0.8f};
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        options.loras = &lora;
        options.lora_count = 1;
        lcm_pipeline *p = NULL;
        CHECK_OK(lcm_pipeline_open(models[i], &options, &p));
        if (!p) continue;
        lora_stats stats;
        lora_set_stats(p->loras, 0, &stats);
        modules[i] = stats.applied_modules;
        lcm_request request;
        lcm_request_init(&request);
        request.prompt = "a cat";
        request.seed = 3;
        request.steps = 2;
        request.guidance_scale = 1.0f;
        request.width = request.height = 64;
        CHECK_OK(lcm_generate(p, &request, &results[i]));
        lcm_pipeline_close(p);
    }
    CHECK(modules[0] == modules[1], "folder: %d modules applied, checkpoint: %d", modules[0], modules[1]);
    if (results[0] && results[1]) {
        const lcm_image *a = &results[0]->images[0], *b = &results[1]->images[0];
        size_t n = (size_t)a->width * a->height * 3, differ = 0;
        for (size_t k = 0; k < n; k++) differ += a->rgb[k] != b->rgb[k];
        CHECK(a->width == b->width && a->height == b->height && differ == 0,
              "LoRA on the checkpoint: %zu of %zu bytes differ from the folder's image", differ, n);
        fprintf(stderr, "  single-file checkpoint + LoRA: %d modules, %zu of %zu image bytes differ from the folder\n",
                modules[1], differ, n);
    }
    lcm_result_free(results[0]);
    lcm_result_free(results[1]);
}

int main(void) {
    const char *root = test_fixtures();
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    check_spec_parsing();
    check_ambiguous();

    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    int cases = 0;
    struct dirent *e;
    char folders[64][256];
    int nfolders = 0;
    while (d && (e = readdir(d)) && nfolders < 64)
        if (e->d_name[0] != '.') snprintf(folders[nfolders++], sizeof folders[0], "%s", e->d_name);
    if (d) closedir(d);
    qsort(folders, (size_t)nfolders, sizeof folders[0], (int (*)(const void *, const void *))strcmp);
    for (int i = 0; i < nfolders; i++) {
        char folder[PATH_SIZE], loras[PATH_SIZE];
        test_path(folder, sizeof folder, "%s/%s", root, folders[i]);
        test_path(loras, sizeof loras, "%s/loras", folder);
        if (!is_dir(loras)) continue;
        int n = check_folder(folder);
        cases += n;
        if (n == 0) continue;
        check_handmade(folder);
        check_pipeline_components(folder);
        lora_case c = {0};
        list_lora_files(folder, &c);
        check_cli(folder, c.lora_files[0]);
        check_checkpoint(folder, c.lora_files[0]);
    }
    CHECK(cases > 0, "no LoRA golden cases (FOLDER/golden/unet_lora*.safetensors + FOLDER/loras/*/) under %s",
          root);
    fprintf(stderr, "%d LoRA golden cases\n", cases);

    char cmd[PATH_SIZE];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
