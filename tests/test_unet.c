// UNet2DConditionModel against the golden data found under $LCM_FIXTURES:
//  - every */golden/unet*.safetensors: noise_pred (or noise_pred_base) of the unet in that model
//    folder from the stored sample/timestep/encoder_hidden_states[/timestep_cond], within
//    1e-4 * max|ref| (README section 8), plus every debug.* intermediate that is present;
//  - the same with the folder's fp16 weight variant, where there is one (looser tolerance);
//  - every golden file with `unet_with_residuals.noise_pred` (ControlNet residuals added to the
//    unet of the fixture folder whose unet matches that ControlNet's config);
//  - batch consistency and odd latent sizes (no reference: shapes, finiteness, per-row equality);
//  - config and weight errors: unsupported block types/fields name the field, a missing tensor is
//    named.
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core/tensor.h"
#include "io/json_config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "models/unet.h"
#include "testutil.h"

#define PATH_SIZE 4096

// ---- helpers ---------------------------------------------------------------------------------

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// A golden tensor as a float32 tensor (caller frees), or NULL when the file does not have it.
static tensor *golden(const st_file *file, const char *name) {
    const st_tensor *t = st_find(file, name);
    if (!t || t->ndim < 1 || t->ndim > TENSOR_MAX_DIMS) return NULL;
    tensor *out = tensor_new(t->ndim, t->shape);
    if (!out) return NULL;
    if (st_read_f32(file, t, out->data) != LCM_OK) {
        tensor_free(out);
        return NULL;
    }
    return out;
}

// Compares within abs_tol = rel_to_max * max|want|, printing the max abs diff either way.
static bool compare_plain(const char *what, const tensor *got, const tensor *want,
                          double rel_to_max);

// Both sides in plain NCHW order first: the fast kernels may return channels-last.
static bool compare(const char *what, const tensor *got, const tensor *want, double rel_to_max) {
    tensor *got_plain = tensor_to_nchw(got), *want_plain = tensor_to_nchw(want);
    bool ok = compare_plain(what, got_plain, want_plain, rel_to_max);
    tensor_free(got_plain);
    tensor_free(want_plain);
    return ok;
}

static bool compare_plain(const char *what, const tensor *got, const tensor *want,
                          double rel_to_max) {
    CHECK(got && want, "%s: missing tensor", what);
    if (!got || !want) return false;
    bool same_shape = got->ndim == want->ndim;
    for (int i = 0; same_shape && i < got->ndim; i++) same_shape = got->shape[i] == want->shape[i];
    CHECK(same_shape, "%s: shape differs from the reference", what);
    if (!same_shape) return false;
    size_t n = (size_t)tensor_numel(want);
    double scale = test_max_abs(want->data, n), max_diff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got->data[i] - want->data[i]);
        if (d > max_diff || isnan(d)) max_diff = d;
    }
    double tol = rel_to_max * scale;
    fprintf(stderr, "  %-40s max|diff| %.3g (%.3g of max|ref| %.3g; tolerance %.3g)\n", what,
            max_diff, scale > 0 ? max_diff / scale : 0.0, scale, tol);
    return test_close(what, got->data, want->data, n, tol, 0);
}

// ---- golden cases ----------------------------------------------------------------------------

typedef struct golden_case {
    tensor *sample, *context, *timestep_cond, *reference;
    float timestep;
} golden_case;

static void golden_case_free(golden_case *c) {
    tensor_free(c->sample);
    tensor_free(c->context);
    tensor_free(c->timestep_cond);
    tensor_free(c->reference);
}

// Reads the unet inputs of a golden file and the named reference output.
static bool golden_case_read(const st_file *file, const char *reference, golden_case *c) {
    *c = (golden_case){0};
    c->sample = golden(file, "sample");
    c->context = golden(file, "encoder_hidden_states");
    c->timestep_cond = golden(file, "timestep_cond");
    c->reference = golden(file, reference);
    const st_tensor *t = st_find(file, "timestep");
    int64_t step = 0;
    bool ok = t && t->numel == 1 && st_read_i64(file, t, &step) == LCM_OK;
    c->timestep = (float)step;
    ok = ok && c->sample && c->context && c->reference;
    CHECK(ok, "%s: sample, encoder_hidden_states, timestep or %s missing", st_path(file), reference);
    return ok;
}

typedef struct debug_ctx {
    const st_file *file;
    double rel_to_max;
    int compared;
} debug_ctx;

// Observer: compares an intermediate with debug.NAME when the golden file has it.
static void compare_debug(void *user, const char *name, const tensor *value) {
    debug_ctx *ctx = user;
    char key[128];
    snprintf(key, sizeof key, "debug.%s", name);
    tensor *want = golden(ctx->file, key);
    if (!want) return;
    compare(key, value, want, ctx->rel_to_max);
    ctx->compared++;
    tensor_free(want);
}

static void run_case(const unet_model *unet, const st_file *file, const char *reference,
                     double rel_to_max, bool with_debug, const char *label) {
    golden_case c;
    if (!golden_case_read(file, reference, &c)) {
        golden_case_free(&c);
        return;
    }
    fprintf(stderr, "%s: %s (timestep %g%s)\n", label, reference, c.timestep,
            c.timestep_cond ? ", timestep_cond" : "");
    debug_ctx ctx = {file, rel_to_max, 0};
    tensor *out = NULL;
    CHECK_OK(unet_forward_observed(unet, c.sample, c.timestep, c.context, c.timestep_cond, NULL,
                                   with_debug ? compare_debug : NULL, &ctx, &out));
    compare(reference, out, c.reference, rel_to_max);
    if (with_debug) fprintf(stderr, "  (%d debug tensors compared)\n", ctx.compared);
    tensor_free(out);
    golden_case_free(&c);
}

// The golden file's reference output name: noise_pred (LCM unet) or noise_pred_base (the plain
// unet of a LoRA case; the LoRA-fused predictions belong to the LoRA tests).
static const char *reference_name(const st_file *file) {
    if (st_find(file, "noise_pred")) return "noise_pred";
    if (st_find(file, "noise_pred_base")) return "noise_pred_base";
    return NULL;
}

// Every unet*.safetensors in FOLDER/golden, against FOLDER's unet (fp32, then the fp16 variant).
static int check_folder(const char *folder_path) {
    char golden_dir[PATH_SIZE], config[PATH_SIZE];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", folder_path);
    test_path(config, sizeof config, "%s/unet/config.json", folder_path);
    if (!is_dir(golden_dir) || !is_file(config)) return 0;
    char **names;
    int count = test_list_files(golden_dir, "unet", ".safetensors", &names), cases = 0;
    for (int variant = 0; variant < 2 && count > 0; variant++) {
        const char *variant_name = variant ? "fp16" : NULL;
        if (variant) {
            char fp16[PATH_SIZE];
            test_path(fp16, sizeof fp16, "%s/unet/diffusion_pytorch_model.fp16.safetensors",
                      folder_path);
            if (!is_file(fp16)) break;
        }
        model_folder folder;
        unet_model *unet = NULL;
        CHECK_OK(model_folder_open(folder_path, variant_name, &folder));
        CHECK_OK(unet_load(test_backend_for(LCM_PRECISION_FP32), &folder, "unet", &unet));
        model_folder_close(&folder);
        if (!unet) continue;
        for (int i = 0; i < count; i++) {
            char path[PATH_SIZE], label[PATH_SIZE + 16];
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            st_file *file = NULL;
            CHECK_OK(st_open(path, &file));
            const char *reference = file ? reference_name(file) : NULL;
            if (reference) {
                snprintf(label, sizeof label, "%s%s", path, variant ? " [fp16 weights]" : "");
                // fp16-rounded weights: measured ~1e-3 of max|ref| on the tiny models.
                run_case(unet, file, reference, variant ? 2e-2 : 1e-4, !variant, label);
                cases++;
            }
            st_close(file);
        }
        unet_free(unet);
    }
    test_free_list(names, count);
    return cases;
}

// ---- ControlNet residuals --------------------------------------------------------------------

// Whether the unet config has the layout a ControlNet config describes (ControlNetModel.from_unet
// copies these fields).
static bool controlnet_matches(const json_config *cn, const unet_config *u) {
    int64_t channels[UNET_MAX_BLOCKS], cross = 0, cond = 0;
    int n = 0;
    if (json_config_int_array(cn, "block_out_channels", 1, 65536, channels, UNET_MAX_BLOCKS, &n) !=
            LCM_OK ||
        n != u->num_blocks)
        return false;
    for (int i = 0; i < n; i++)
        if (channels[i] != u->block_out_channels[i]) return false;
    if (json_config_int_or(cn, "cross_attention_dim", 1280, 1, 65536, &cross) != LCM_OK ||
        json_config_int_or(cn, "time_cond_proj_dim", 0, 1, 65536, &cond) != LCM_OK)
        return false;
    return cross == u->cross_attention_dim && cond == u->time_cond_proj_dim;
}

static int check_residual_cases(const char *root, char **folders, int folder_count) {
    int cases = 0;
    for (int f = 0; f < folder_count; f++) {
        char golden_dir[PATH_SIZE], cn_config[PATH_SIZE];
        test_path(golden_dir, sizeof golden_dir, "%s/%s/golden", root, folders[f]);
        test_path(cn_config, sizeof cn_config, "%s/%s/config.json", root, folders[f]);
        if (!is_dir(golden_dir) || !is_file(cn_config)) continue;
        char **names;
        int count = test_list_files(golden_dir, "", ".safetensors", &names);
        for (int i = 0; i < count; i++) {
            char path[PATH_SIZE];
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            st_file *file = NULL;
            if (st_open(path, &file) != LCM_OK) continue;
            if (!st_find(file, "unet_with_residuals.noise_pred")) {
                st_close(file);
                continue;
            }
            // The base unet: the one fixture unet whose layout matches this ControlNet.
            json_config cn;
            CHECK_OK(json_config_load(cn_config, NULL, &cn));
            unet_model *unet = NULL;
            int matches = 0;
            for (int g = 0; g < folder_count && cn.root; g++) {
                char candidate[PATH_SIZE];
                test_path(candidate, sizeof candidate, "%s/%s/unet/config.json", root, folders[g]);
                if (!is_file(candidate)) continue;
                test_path(candidate, sizeof candidate, "%s/%s", root, folders[g]);
                model_folder folder;
                unet_model *u = NULL;
                if (model_folder_open(candidate, NULL, &folder) != LCM_OK) continue;
                if (unet_load(test_backend_for(LCM_PRECISION_FP32), &folder, "unet",
                              &u) == LCM_OK && controlnet_matches(&cn, unet_get_config(u))) {
                    matches++;
                    unet_free(unet);
                    unet = u;
                } else {
                    unet_free(u);
                }
                model_folder_close(&folder);
            }
            json_config_free(&cn);
            CHECK(matches == 1, "%s: %d fixture unets match the ControlNet config (need exactly 1)",
                  path, matches);
            golden_case c;
            if (unet && matches == 1 &&
                golden_case_read(file, "unet_with_residuals.noise_pred", &c)) {
                const unet_config *cfg = unet_get_config(unet);
                tensor *down[64] = {0};
                int down_count = 0;
                for (; down_count < 64; down_count++) {
                    char key[64];
                    snprintf(key, sizeof key, "down_block_res_samples_%d", down_count);
                    if (!(down[down_count] = golden(file, key))) break;
                }
                tensor *mid = golden(file, "mid_block_res_sample");
                CHECK(down_count == cfg->skip_count && mid,
                      "%s: %d down residuals (unet has %d skips)", path, down_count, cfg->skip_count);
                unet_residuals residuals = {(const tensor *const *)down, down_count, mid};
                tensor *out = NULL;
                fprintf(stderr, "%s: unet with %d+1 ControlNet residuals\n", path, down_count);
                CHECK_OK(unet_forward(unet, c.sample, c.timestep, c.context, c.timestep_cond,
                                      &residuals, &out));
                compare("unet_with_residuals.noise_pred", out, c.reference, 1e-4);
                tensor_free(out);

                // Wrong residual counts and shapes are argument errors, not crashes.
                residuals.down_count = down_count - 1;
                CHECK(unet_forward(unet, c.sample, c.timestep, c.context, NULL, &residuals, &out) ==
                          LCM_ERR_INVALID_ARGUMENT && !out,
                      "too few residuals must be rejected");
                residuals.down_count = down_count;
                residuals.mid = down[0];
                CHECK(unet_forward(unet, c.sample, c.timestep, c.context, NULL, &residuals, &out) ==
                          LCM_ERR_INVALID_ARGUMENT && !out && strstr(lcm_last_error(), "mid"),
                      "a wrong-shaped mid residual must be rejected: %s", lcm_last_error());
                for (int j = 0; j < down_count; j++) tensor_free(down[j]);
                tensor_free(mid);
                golden_case_free(&c);
                cases++;
            }
            unet_free(unet);
            st_close(file);
        }
        test_free_list(names, count);
    }
    return cases;
}

// ---- inputs without reference: batches and odd sizes ------------------------------------------

static float pseudo_random(uint32_t *state) {
    *state = *state * 1664525u + 1013904223u;
    return (float)((*state >> 8) & 0xFFFF) / 32768.0f - 1.0f;
}

static tensor *random_tensor(int ndim, const int64_t *shape, uint32_t seed) {
    tensor *t = tensor_new(ndim, shape);
    for (int64_t i = 0; t && i < tensor_numel(t); i++) t->data[i] = pseudo_random(&seed);
    return t;
}

// A batch of 2 must give, row by row, what two batch-1 calls give; latent sizes that are not
// multiples of 8 (down to 1x1) must run and keep their shape.
static void check_shapes_and_batches(const char *folder_path) {
    model_folder folder;
    unet_model *unet = NULL;
    CHECK_OK(model_folder_open(folder_path, NULL, &folder));
    CHECK_OK(unet_load(test_backend_for(LCM_PRECISION_FP32), &folder, "unet", &unet));
    model_folder_close(&folder);
    if (!unet) return;
    const unet_config *cfg = unet_get_config(unet);
    int cond_dim = cfg->time_cond_proj_dim;

    static const int sizes[][2] = {{1, 1}, {5, 7}, {9, 4}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int64_t h = sizes[s][0], w = sizes[s][1];
        tensor *sample = random_tensor(4, (int64_t[]){2, cfg->in_channels, h, w}, 1 + (uint32_t)s);
        tensor *context = random_tensor(3, (int64_t[]){2, 5, cfg->cross_attention_dim}, 7);
        tensor *cond = cond_dim ? random_tensor(2, (int64_t[]){2, cond_dim}, 9) : NULL;
        tensor *out = NULL;
        CHECK_OK(unet_forward(unet, sample, 321.0f, context, cond, NULL, &out));
        tensor_replace(&out, tensor_to_nchw(out));
        bool shape_ok = out && out->shape[0] == 2 && out->shape[1] == cfg->out_channels &&
                        out->shape[2] == h && out->shape[3] == w;
        CHECK(shape_ok, "%s: %lldx%lld latents keep their size", folder_path, (long long)h,
              (long long)w);
        bool finite = shape_ok;
        for (int64_t i = 0; finite && i < tensor_numel(out); i++) finite = isfinite(out->data[i]);
        CHECK(finite, "%lldx%lld: output is finite", (long long)h, (long long)w);

        // Row b of the batch vs a batch-1 call on row b alone.
        for (int b = 0; b < 2 && shape_ok; b++) {
            int64_t per_sample = tensor_numel(sample) / 2, per_context = tensor_numel(context) / 2;
            tensor *one_sample = tensor_from(4, (int64_t[]){1, cfg->in_channels, h, w},
                                             sample->data + b * per_sample);
            tensor *one_context = tensor_from(3, (int64_t[]){1, 5, cfg->cross_attention_dim},
                                              context->data + b * per_context);
            tensor *one_cond = cond ? tensor_from(2, (int64_t[]){1, cond_dim}, cond->data + b * cond_dim)
                                    : NULL;
            tensor *one = NULL;
            CHECK_OK(unet_forward(unet, one_sample, 321.0f, one_context, one_cond, NULL, &one));
            if (one) {
                tensor *row = tensor_from(4, one->shape, out->data + b * tensor_numel(one));
                char what[96];
                snprintf(what, sizeof what, "batch row %d at %lldx%lld", b, (long long)h,
                         (long long)w);
                // Batch size changes the blocking of every matrix product (and the attention
                // kernel's tiles), so rows differ by fp32 reassociation noise that the random
                // weights' mid block amplifies: the same scale as the golden tolerance.
                compare(what, row, one, 1e-4);
                tensor_free(row);
            }
            tensor_free(one);
            tensor_free(one_sample);
            tensor_free(one_context);
            tensor_free(one_cond);
        }
        tensor_free(out);
        tensor_free(sample);
        tensor_free(context);
        tensor_free(cond);
    }

    // Bad inputs are argument errors.
    tensor *sample = random_tensor(4, (int64_t[]){1, cfg->in_channels, 4, 4}, 3);
    tensor *context = random_tensor(3, (int64_t[]){1, 5, cfg->cross_attention_dim + 1}, 4);
    tensor *out = NULL;
    CHECK(unet_forward(unet, sample, 1.0f, context, NULL, NULL, &out) == LCM_ERR_INVALID_ARGUMENT &&
              !out,
          "wrong text embedding width is rejected");
    tensor_free(context);
    context = random_tensor(3, (int64_t[]){1, 5, cfg->cross_attention_dim}, 4);
    tensor *cond = random_tensor(2, (int64_t[]){1, cond_dim ? cond_dim + 1 : 4}, 5);
    CHECK(unet_forward(unet, sample, 1.0f, context, cond, NULL, &out) == LCM_ERR_INVALID_ARGUMENT &&
              !out,
          "a timestep_cond of the wrong size (or for a unet without cond_proj) is rejected: %s",
          lcm_last_error());
    CHECK(unet_forward(unet, sample, NAN, context, NULL, NULL, &out) == LCM_ERR_INVALID_ARGUMENT,
          "a NaN timestep is rejected");
    tensor_free(cond);
    tensor_free(sample);
    tensor_free(context);
    unet_free(unet);
}

// ---- config and weight errors ------------------------------------------------------------------

// Builds DIR/model_index.json + DIR/unet/{config.json (the source's, with `edit` applied),
// diffusion_pytorch_model.safetensors -> `weights` (a symlink)}.
typedef void (*config_edit)(cJSON *config);

static bool make_folder(const char *dir, const char *source_unet, const char *weights,
                        config_edit edit) {
    char path[PATH_SIZE];
    test_path(path, sizeof path, "%s/unet", dir);
    if (mkdir(dir, 0700) != 0 || mkdir(path, 0700) != 0) return false;
    test_path(path, sizeof path, "%s/model_index.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return false;
    fputs("{\"_class_name\": \"LatentConsistencyModelPipeline\", "
          "\"unet\": [\"diffusers\", \"UNet2DConditionModel\"]}\n", f);
    fclose(f);

    char source[PATH_SIZE];
    test_path(source, sizeof source, "%s/config.json", source_unet);
    char *text = NULL;
    size_t len = 0;
    if (read_text_file(source, 1 << 20, &text, &len) != LCM_OK) return false;
    cJSON *config = cJSON_Parse(text);
    free(text);
    if (!config) return false;
    if (edit) edit(config);
    char *edited = cJSON_Print(config);
    cJSON_Delete(config);
    test_path(path, sizeof path, "%s/unet/config.json", dir);
    f = fopen(path, "w");
    if (f) {
        fputs(edited, f);
        fclose(f);
    }
    cJSON_free(edited);
    test_path(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    return f && symlink(weights, path) == 0;
}

static void remove_folder(const char *dir) {
    static const char *const files[] = {"unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                                        "model_index.json"};
    char path[PATH_SIZE];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        test_path(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    test_path(path, sizeof path, "%s/unet", dir);
    rmdir(path);
    rmdir(dir);
}

static void edit_block_type(cJSON *c) {
    cJSON *types = cJSON_GetObjectItem(c, "down_block_types");
    cJSON_ReplaceItemInArray(types, 0, cJSON_CreateString("SimpleCrossAttnDownBlock2D"));
}
static void edit_up_block_type(cJSON *c) {
    cJSON *types = cJSON_GetObjectItem(c, "up_block_types");
    cJSON_ReplaceItemInArray(types, 1, cJSON_CreateString("AttnUpBlock2D"));
}
static void edit_mid_block(cJSON *c) {
    cJSON_ReplaceItemInObject(c, "mid_block_type", cJSON_CreateString("UNetMidBlock2DSimpleCrossAttn"));
}
static void edit_class_embed(cJSON *c) {
    cJSON_ReplaceItemInObject(c, "class_embed_type", cJSON_CreateString("timestep"));
}
static void edit_heads(cJSON *c) {
    cJSON_ReplaceItemInObject(c, "num_attention_heads", cJSON_CreateNumber(8));
}
static void edit_act(cJSON *c) { cJSON_ReplaceItemInObject(c, "act_fn", cJSON_CreateString("gelu")); }
static void edit_scale_shift(cJSON *c) {
    cJSON_ReplaceItemInObject(c, "resnet_time_scale_shift", cJSON_CreateString("scale_shift"));
}
static void edit_groups(cJSON *c) {
    cJSON_ReplaceItemInObject(c, "norm_num_groups", cJSON_CreateNumber(7));
}

// Writes `source` without tensor `drop` to `path`.
static bool write_without(const char *source, const char *drop, const char *path) {
    st_file *in = NULL;
    if (st_open(source, &in) != LCM_OK) return false;
    cJSON *header = cJSON_CreateObject();
    size_t offset = 0;
    for (size_t i = 0; i < st_count(in); i++) {
        const st_tensor *t = st_at(in, i);
        if (strcmp(t->name, drop) == 0) continue;
        cJSON *entry = cJSON_AddObjectToObject(header, t->name);
        cJSON_AddStringToObject(entry, "dtype", st_dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(entry, "shape");
        for (int d = 0; d < t->ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON *offsets = cJSON_AddArrayToObject(entry, "data_offsets");
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)(offset + t->nbytes)));
        offset += t->nbytes;
    }
    char *json = cJSON_PrintUnformatted(header);
    cJSON_Delete(header);
    size_t json_len = strlen(json), padded = (json_len + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    bool ok = f != NULL;
    if (f) {
        uint64_t n = padded;
        unsigned char len_bytes[8];
        for (int b = 0; b < 8; b++) len_bytes[b] = (unsigned char)(n >> (8 * b));
        ok = fwrite(len_bytes, 1, 8, f) == 8 && fwrite(json, 1, json_len, f) == json_len;
        for (size_t p = json_len; p < padded; p++) fputc(' ', f);
        for (size_t i = 0; ok && i < st_count(in); i++) {
            const st_tensor *t = st_at(in, i);
            if (strcmp(t->name, drop) != 0) ok = fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
        }
        ok = fclose(f) == 0 && ok;
    }
    cJSON_free(json);
    st_close(in);
    return ok;
}

static void expect_load_error(const char *dir, lcm_status want, const char *must_mention,
                              const char *must_mention_too) {
    model_folder folder;
    unet_model *unet = NULL;
    CHECK_OK(model_folder_open(dir, NULL, &folder));
    lcm_status st = unet_load(test_backend_for(LCM_PRECISION_FP32), &folder, "unet", &unet);
    model_folder_close(&folder);
    const char *msg = lcm_last_error();
    fprintf(stderr, "  expected error: %s\n", msg);
    CHECK(st == want && !unet, "expected %s, got %s: %s", lcm_status_name(want), lcm_status_name(st),
          msg);
    CHECK(strstr(msg, must_mention) != NULL, "message names '%s': %s", must_mention, msg);
    if (must_mention_too)
        CHECK(strstr(msg, must_mention_too) != NULL, "message names '%s': %s", must_mention_too, msg);
    unet_free(unet);
}

static void check_errors(const char *folder_path) {
    char source_unet[PATH_SIZE], weights[PATH_SIZE], tmp[PATH_SIZE], dir[PATH_SIZE];
    test_path(source_unet, sizeof source_unet, "%s/unet", folder_path);
    test_path(weights, sizeof weights, "%s/diffusion_pytorch_model.safetensors", source_unet);
    const char *base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    test_path(tmp, sizeof tmp, "%s/test_unet_XXXXXX", base);
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp %s", tmp);

    static const struct {
        config_edit edit;
        lcm_status status;
        const char *field, *value;
    } cases[] = {
        {edit_block_type, LCM_ERR_UNSUPPORTED, "down_block_types[0]", "SimpleCrossAttnDownBlock2D"},
        {edit_up_block_type, LCM_ERR_UNSUPPORTED, "up_block_types[1]", "AttnUpBlock2D"},
        {edit_mid_block, LCM_ERR_UNSUPPORTED, "mid_block_type", "UNetMidBlock2DSimpleCrossAttn"},
        {edit_class_embed, LCM_ERR_UNSUPPORTED, "class_embed_type", "timestep"},
        {edit_heads, LCM_ERR_UNSUPPORTED, "num_attention_heads", "8"},
        {edit_act, LCM_ERR_UNSUPPORTED, "act_fn", "gelu"},
        {edit_scale_shift, LCM_ERR_UNSUPPORTED, "resnet_time_scale_shift", "scale_shift"},
        {edit_groups, LCM_ERR_FORMAT, "norm_num_groups", "block_out_channels[0]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        test_path(dir, sizeof dir, "%s/case%zu", tmp, i);
        CHECK(make_folder(dir, source_unet, weights, cases[i].edit), "building %s", dir);
        expect_load_error(dir, cases[i].status, cases[i].field, cases[i].value);
        remove_folder(dir);
    }

    // A weights file without one tensor: the error names it.
    const char *dropped = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    char partial[PATH_SIZE];
    test_path(partial, sizeof partial, "%s/partial.safetensors", tmp);
    CHECK(write_without(weights, dropped, partial), "writing %s", partial);
    test_path(dir, sizeof dir, "%s/missing", tmp);
    CHECK(make_folder(dir, source_unet, partial, NULL), "building %s", dir);
    expect_load_error(dir, LCM_ERR_FORMAT, dropped, "missing");
    remove_folder(dir);
    unlink(partial);
    rmdir(tmp);
}

// The configs of the real full-size models (ROOT/configs/*/unet/config.json, no weights) must be
// accepted: loading them over the tiny weights must get past the config and fail on a tensor shape.
static void check_real_configs(const char *root, const char *tiny_folder) {
    char configs[PATH_SIZE], tiny_weights[PATH_SIZE], tmp[PATH_SIZE];
    test_path(configs, sizeof configs, "%s/configs", root);
    test_path(tiny_weights, sizeof tiny_weights, "%s/unet/diffusion_pytorch_model.safetensors",
              tiny_folder);
    DIR *d = opendir(configs);
    if (!d) return;
    const char *base = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    test_path(tmp, sizeof tmp, "%s/test_unet_XXXXXX", base);
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp %s", tmp);
    struct dirent *e;
    while ((e = readdir(d))) {
        char unet_dir[PATH_SIZE], config[PATH_SIZE], dir[PATH_SIZE];
        test_path(unet_dir, sizeof unet_dir, "%s/%s/unet", configs, e->d_name);
        test_path(config, sizeof config, "%s/config.json", unet_dir);
        if (e->d_name[0] == '.' || !is_file(config)) continue;
        test_path(dir, sizeof dir, "%s/real", tmp);
        CHECK(make_folder(dir, unet_dir, tiny_weights, NULL), "building %s", dir);
        model_folder folder;
        unet_model *unet = NULL;
        CHECK_OK(model_folder_open(dir, NULL, &folder));
        lcm_status st = unet_load(test_backend_for(LCM_PRECISION_FP32), &folder, "unet", &unet);
        model_folder_close(&folder);
        const char *msg = lcm_last_error();
        fprintf(stderr, "  %s: %s\n", config, msg);
        CHECK(st == LCM_ERR_FORMAT && strstr(msg, "config.json") == NULL && strstr(msg, "tensor"),
              "%s must be accepted (then fail on the tiny weights' shapes): %s", config, msg);
        unet_free(unet);
        remove_folder(dir);
    }
    closedir(d);
    rmdir(tmp);
}

// ---- main ------------------------------------------------------------------------------------

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    const char *root = test_fixtures();
    // The fixture folders (tiny-lcm, tiny-sd15, ...), sorted.
    char *folders[256];
    int folder_count = 0;
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    struct dirent *e;
    while (d && (e = readdir(d)) && folder_count < 256) {
        char path[PATH_SIZE];
        test_path(path, sizeof path, "%s/%s", root, e->d_name);
        if (e->d_name[0] != '.' && is_dir(path)) folders[folder_count++] = strdup(e->d_name);
    }
    if (d) closedir(d);
    qsort(folders, (size_t)folder_count, sizeof folders[0], compare_names);

    int cases = 0;
    const char *first_unet_folder = NULL;
    char first_path[PATH_SIZE] = "";
    for (int i = 0; i < folder_count; i++) {
        char path[PATH_SIZE];
        test_path(path, sizeof path, "%s/%s", root, folders[i]);
        int found = check_folder(path);
        if (found && !first_unet_folder) {
            snprintf(first_path, sizeof first_path, "%s", path);
            first_unet_folder = first_path;
        }
        if (found) check_shapes_and_batches(path);
        cases += found;
    }
    CHECK(cases > 0, "no */golden/unet*.safetensors with a unet folder under %s", root);
    int residual_cases = check_residual_cases(root, folders, folder_count);
    fprintf(stderr, "%d unet golden case(s), %d with ControlNet residuals\n", cases, residual_cases);
    if (first_unet_folder) {
        check_errors(first_unet_folder);
        check_real_configs(root, first_unet_folder);
    }
    for (int i = 0; i < folder_count; i++) free(folders[i]);
    return test_finish();
}
