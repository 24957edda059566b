// CLIP text encoder against transformers' CLIPTextModel: every model folder under the fixture root
// that has golden/text_encoder.safetensors is loaded and run on the stored input_ids; then the
// error paths (unsupported activation, bad weights, bad token ids).
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "testutil.h"
#include "models/clip_text.h"

#define ABS_TOL 1e-4
#define REL_TOL 1e-4

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

// ---- intermediate activations reported by the model ----------------------------------------

#define MAX_PROBES 256

typedef struct probe_log {
    int count;
    char *names[MAX_PROBES];
    tensor *values[MAX_PROBES];
} probe_log;

static void record_probe(void *user, const char *name, const tensor *value) {
    probe_log *log = user;
    if (log->count == MAX_PROBES) return;
    log->names[log->count] = strdup(name);
    log->values[log->count] = tensor_copy(value);
    log->count++;
}

static const tensor *find_probe(const probe_log *log, const char *name) {
    for (int i = 0; i < log->count; i++)
        if (!strcmp(log->names[i], name)) return log->values[i];
    return NULL;
}

static void probe_log_free(probe_log *log) {
    for (int i = 0; i < log->count; i++) {
        free(log->names[i]);
        tensor_free(log->values[i]);
    }
    log->count = 0;
}

// ---- comparisons -----------------------------------------------------------------------------

static bool same_shape(const tensor *got, const st_tensor *want) {
    if (!got || got->ndim != want->ndim) return false;
    for (int i = 0; i < got->ndim; i++)
        if (got->shape[i] != want->shape[i]) return false;
    return true;
}

// Compares `got` with golden tensor `name` and prints the max difference reached.
static void compare_with_golden(const char *label, const tensor *got, const st_file *golden,
                                const char *name) {
    const st_tensor *want_t = st_find(golden, name);
    if (!want_t) {
        CHECK(false, "%s: golden tensor '%s' missing", label, name);
        return;
    }
    char got_shape[64] = "(none)", want_shape[64];
    if (got) st_format_shape(got_shape, sizeof got_shape, got->ndim, got->shape);
    st_format_shape(want_shape, sizeof want_shape, want_t->ndim, want_t->shape);
    if (!same_shape(got, want_t)) {
        CHECK(false, "%s: %s has shape %s, golden %s", label, name, got_shape, want_shape);
        return;
    }
    float *want = malloc(sizeof(float) * (size_t)want_t->numel);
    CHECK_OK(st_read_f32(golden, want_t, want));
    double max_diff = 0;
    for (int64_t i = 0; i < want_t->numel; i++) {
        double d = (double)got->data[i] - (double)want[i];
        if (d < 0) d = -d;
        if (d > max_diff || d != d) max_diff = d;
    }
    char what[512];
    snprintf(what, sizeof what, "%s: %s", label, name);
    test_close(what, got->data, want, (size_t)want_t->numel, ABS_TOL, REL_TOL);
    fprintf(stderr, "  %-60s max |diff| %.3g (max |ref| %.3g)\n", what, max_diff,
            test_max_abs(want, (size_t)want_t->numel));
    free(want);
}

// Reads golden input_ids [B, N] (I64) as int32. Returns NULL on failure (already reported).
static int32_t *read_input_ids(const st_file *golden, int *batch, int *n_tokens) {
    const st_tensor *t = st_find(golden, "input_ids");
    if (!t || t->ndim != 2) {
        CHECK(false, "%s: input_ids missing or not 2-D", st_path(golden));
        return NULL;
    }
    int64_t *ids64 = malloc(sizeof *ids64 * (size_t)t->numel);
    int32_t *ids = malloc(sizeof *ids * (size_t)t->numel);
    CHECK_OK(st_read_i64(golden, t, ids64));
    for (int64_t i = 0; i < t->numel; i++) ids[i] = (int32_t)ids64[i];
    free(ids64);
    *batch = (int)t->shape[0];
    *n_tokens = (int)t->shape[1];
    return ids;
}

// ---- golden cases ------------------------------------------------------------------------------

static void run_golden_case(const char *model_dir, const char *golden_path) {
    fprintf(stderr, "%s\n", golden_path);
    model_folder folder;
    CHECK_OK(model_folder_open(model_dir, NULL, &folder));
    clip_text_model *model = NULL;
    CHECK_OK(clip_text_load(test_backend_for(LCM_PRECISION_FP32), &folder, "text_encoder", &model));
    st_file *golden = NULL;
    CHECK_OK(st_open(golden_path, &golden));
    if (!model || !golden) goto done;
    {
        int batch, n_tokens;
        int32_t *ids = read_input_ids(golden, &batch, &n_tokens);
        if (!ids) goto done;
        probe_log log = {0};
        tensor *last = NULL, *pooled = NULL;
        CHECK_OK(clip_text_forward_probed(model, ids, batch, n_tokens, record_probe, &log, &last,
                                          &pooled));
        compare_with_golden(model_dir, last, golden, "last_hidden_state");
        compare_with_golden(model_dir, pooled, golden, "pooler_output");
        // Every debug.NAME in the golden is the output of transformers module NAME.
        int debug_count = 0;
        for (size_t i = 0; i < st_count(golden); i++) {
            const char *name = st_at(golden, i)->name;
            if (strncmp(name, "debug.", 6) != 0) continue;
            const tensor *got = find_probe(&log, name + 6);
            CHECK(got != NULL, "%s: the model reports no activation named '%s'", model_dir,
                  name + 6);
            if (got) compare_with_golden(model_dir, got, golden, name);
            debug_count++;
        }
        fprintf(stderr, "  compared %d debug tensors\n", debug_count);
        tensor_free(last);
        tensor_free(pooled);
        probe_log_free(&log);
        free(ids);
    }
done:
    st_close(golden);
    clip_text_free(model);
    model_folder_close(&folder);
}

// Returns the number of golden cases found.
static int run_golden_cases(const char *root, char *first_model_dir, size_t size) {
    char **names;
    int count = test_list_files(root, "", "", &names), cases = 0;
    for (int i = 0; i < count; i++) {
        if (names[i][0] == '.') continue;
        char model_dir[4096], golden[4200];
        test_path(model_dir, sizeof model_dir, "%s/%s", root, names[i]);
        test_path(golden, sizeof golden, "%s/golden/text_encoder.safetensors", model_dir);
        if (!file_exists(golden)) continue;
        if (!cases) test_path(first_model_dir, size, "%s", model_dir);
        run_golden_case(model_dir, golden);
        cases++;
    }
    test_free_list(names, count);
    return cases;
}

// ---- error paths, on a scratch copy of a text encoder folder ------------------------------------

typedef struct scratch {
    char root[256], component[300], config[400], weights[400], index[400];
} scratch;

static void scratch_create(scratch *s) {
    snprintf(s->root, sizeof s->root, "/tmp/lcm_test_text_encoder_XXXXXX");
    if (!mkdtemp(s->root)) {
        perror("mkdtemp");
        exit(2);
    }
    snprintf(s->component, sizeof s->component, "%s/text_encoder", s->root);
    snprintf(s->config, sizeof s->config, "%s/config.json", s->component);
    snprintf(s->weights, sizeof s->weights, "%s/model.safetensors", s->component);
    snprintf(s->index, sizeof s->index, "%s/model_index.json", s->root);
    mkdir(s->component, 0700);
    FILE *f = fopen(s->index, "w");
    fputs("{\"_class_name\": \"LatentConsistencyModelPipeline\", "
          "\"text_encoder\": [\"transformers\", \"CLIPTextModel\"]}\n",
          f);
    fclose(f);
}

static void scratch_remove(scratch *s) {
    unlink(s->config);
    unlink(s->weights);
    rmdir(s->component);
    unlink(s->index);
    rmdir(s->root);
}

// Writes the source config with `field` replaced (string value if `text`, else number).
static void write_config(const scratch *s, const char *source_config, const char *field,
                         const char *text, double number) {
    char *json = NULL;
    size_t len;
    CHECK_OK(read_text_file(source_config, 1 << 20, &json, &len));
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (field) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, field);
        if (text)
            cJSON_AddStringToObject(root, field, text);
        else
            cJSON_AddNumberToObject(root, field, number);
    }
    char *out = cJSON_Print(root);
    FILE *f = fopen(s->config, "w");
    fputs(out, f);
    fclose(f);
    free(out);
    cJSON_Delete(root);
}

static void link_weights(const scratch *s, const char *source_weights) {
    unlink(s->weights);
    if (symlink(source_weights, s->weights) != 0) perror("symlink");
}

// Writes the first `keep` bytes of the source weights.
static void write_truncated_weights(const scratch *s, const char *source_weights, long keep) {
    unlink(s->weights);
    FILE *in = fopen(source_weights, "rb"), *out = fopen(s->weights, "wb");
    char buf[65536];
    long left = keep;
    while (left > 0) {
        size_t n = fread(buf, 1, left < (long)sizeof buf ? (size_t)left : sizeof buf, in);
        if (!n) break;
        fwrite(buf, 1, n, out);
        left -= (long)n;
    }
    fclose(in);
    fclose(out);
}

// Loads the scratch folder; returns the status and leaves the message in lcm_last_error().
static lcm_status load_scratch(const scratch *s, clip_text_model **model) {
    model_folder folder;
    lcm_status st = model_folder_open(s->root, NULL, &folder);
    if (st != LCM_OK) return st;
    lcm_clear_error();
    st = clip_text_load(test_backend_for(LCM_PRECISION_FP32), &folder, "text_encoder", model);
    model_folder_close(&folder);
    return st;
}

static void expect_load_failure(const scratch *s, lcm_status want, const char *needle1,
                                const char *needle2, const char *what) {
    static char sentinel;
    clip_text_model *model = (clip_text_model *)&sentinel; // must be reset to NULL on failure
    lcm_status st = load_scratch(s, &model);
    const char *msg = lcm_last_error();
    CHECK(st == want, "%s: got status '%s', want '%s' (%s)", what, lcm_status_name(st),
          lcm_status_name(want), msg);
    CHECK(model == NULL, "%s: *out not NULL after a failure", what);
    CHECK(strstr(msg, needle1) != NULL, "%s: message '%s' does not mention '%s'", what, msg,
          needle1);
    if (needle2)
        CHECK(strstr(msg, needle2) != NULL, "%s: message '%s' does not mention '%s'", what, msg,
              needle2);
    fprintf(stderr, "  %s -> %s\n", what, msg);
    if (st == LCM_OK) clip_text_free(model);
}

// Runs the golden input_ids through a model loaded from the scratch folder.
static void forward_golden(clip_text_model *model, const char *golden_path, tensor **last,
                           tensor **pooled, int32_t **ids_out, int *batch, int *n_tokens) {
    st_file *golden = NULL;
    CHECK_OK(st_open(golden_path, &golden));
    *ids_out = golden ? read_input_ids(golden, batch, n_tokens) : NULL;
    if (*ids_out) CHECK_OK(clip_text_forward(model, *ids_out, *batch, *n_tokens, last, pooled));
    st_close(golden);
}

static void test_error_paths(const char *model_dir) {
    char source_config[4096], source_weights[4096], golden_path[4096];
    test_path(source_config, sizeof source_config, "%s/text_encoder/config.json", model_dir);
    test_path(source_weights, sizeof source_weights, "%s/text_encoder/model.safetensors",
              model_dir);
    test_path(golden_path, sizeof golden_path, "%s/golden/text_encoder.safetensors", model_dir);
    char *abs_weights = realpath(source_weights, NULL);
    if (!abs_weights) {
        CHECK(false, "%s not found", source_weights);
        return;
    }
    scratch s;
    scratch_create(&s);

    // An activation transformers knows but this build does not.
    write_config(&s, source_config, "hidden_act", "relu6", 0);
    link_weights(&s, abs_weights);
    expect_load_failure(&s, LCM_ERR_UNSUPPORTED, "hidden_act", "relu6", "hidden_act relu6");

    // A config that disagrees with the weights' shapes.
    write_config(&s, source_config, "intermediate_size", NULL, 1000);
    expect_load_failure(&s, LCM_ERR_FORMAT, "mlp.fc1", "1000", "intermediate_size mismatch");

    // Heads that do not divide the width.
    write_config(&s, source_config, "num_attention_heads", NULL, 7);
    expect_load_failure(&s, LCM_ERR_UNSUPPORTED, "num_attention_heads", NULL, "7 heads");

    // Missing and truncated weights.
    write_config(&s, source_config, NULL, NULL, 0);
    unlink(s.weights);
    expect_load_failure(&s, LCM_ERR_IO, "model.safetensors", NULL, "missing weights");
    struct stat sb;
    stat(abs_weights, &sb);
    write_truncated_weights(&s, abs_weights, (long)sb.st_size / 2);
    expect_load_failure(&s, LCM_ERR_FORMAT, "model.safetensors", NULL, "truncated weights");
    write_truncated_weights(&s, abs_weights, 5);
    expect_load_failure(&s, LCM_ERR_FORMAT, "model.safetensors", NULL, "5-byte weights");

    // eos_token_id = 49407 (newer configs): the pooled token is the first <|endoftext|>, which for
    // tokenizer output is also the position of the largest id, so the golden pooler_output holds.
    write_config(&s, source_config, "eos_token_id", NULL, 49407);
    link_weights(&s, abs_weights);
    clip_text_model *model = NULL;
    CHECK_OK(load_scratch(&s, &model));
    if (model) {
        tensor *last = NULL, *pooled = NULL;
        int32_t *ids = NULL;
        int batch = 0, n_tokens = 0;
        forward_golden(model, golden_path, &last, &pooled, &ids, &batch, &n_tokens);
        st_file *golden = NULL;
        CHECK_OK(st_open(golden_path, &golden));
        if (golden && pooled)
            compare_with_golden("eos_token_id 49407", pooled, golden, "pooler_output");
        st_close(golden);

        // No eos token in the ids: transformers' argmax over an all-zero mask picks position 0.
        const clip_text_config *c = clip_text_get_config(model);
        int32_t plain[3] = {1, 2, 3};
        tensor *last3 = NULL, *pooled3 = NULL;
        CHECK_OK(clip_text_forward(model, plain, 1, 3, &last3, &pooled3));
        if (last3 && pooled3)
            CHECK(!memcmp(pooled3->data, last3->data, sizeof(float) * (size_t)c->hidden_size),
                  "pooled token without eos should be position 0");
        tensor_free(last3);
        tensor_free(pooled3);

        // Token ids outside the vocabulary and too many tokens are errors, not wild reads.
        int32_t bad_ids[2] = {c->vocab_size, -1};
        for (int i = 0; i < 2; i++) {
            int32_t prompt[3] = {0, 1, 2};
            prompt[i + 1] = bad_ids[i];
            tensor *l = NULL, *p = NULL;
            lcm_status st = clip_text_forward(model, prompt, 1, 3, &l, &p);
            CHECK(st == LCM_ERR_INVALID_ARGUMENT && !l && !p, "id %d: status '%s'", bad_ids[i],
                  lcm_status_name(st));
            tensor_free(l);
            tensor_free(p);
            CHECK(strstr(lcm_last_error(), "vocabulary") != NULL, "id message: %s",
                  lcm_last_error());
        }
        int n_long = c->max_position_embeddings + 1;
        int32_t *long_ids = calloc((size_t)n_long, sizeof *long_ids);
        tensor *l = NULL;
        CHECK(clip_text_forward(model, long_ids, 1, n_long, &l, NULL) == LCM_ERR_INVALID_ARGUMENT,
              "%d tokens should be rejected", n_long);
        CHECK(clip_text_forward(model, long_ids, 0, 1, &l, NULL) == LCM_ERR_INVALID_ARGUMENT,
              "batch 0 should be rejected");
        free(long_ids);

        // gelu instead of quick_gelu loads, runs and changes the result (the activation is used).
        clip_text_model *gelu_model = NULL;
        write_config(&s, source_config, "hidden_act", "gelu", 0);
        CHECK_OK(load_scratch(&s, &gelu_model));
        if (gelu_model && ids && last) {
            tensor *last_gelu = NULL;
            CHECK_OK(clip_text_forward(gelu_model, ids, batch, n_tokens, &last_gelu, NULL));
            if (last_gelu) {
                double diff = 0;
                for (int64_t i = 0; i < tensor_numel(last); i++) {
                    double d = last->data[i] - last_gelu->data[i];
                    diff = d * d > diff ? d * d : diff;
                }
                CHECK(diff > 0, "gelu and quick_gelu give identical outputs");
            }
            tensor_free(last_gelu);
        }
        clip_text_free(gelu_model);
        free(ids);
        tensor_free(last);
        tensor_free(pooled);
        clip_text_free(model);
    }
    scratch_remove(&s);
    free(abs_weights);
}

int main(void) {
    const char *root = test_fixtures();
    char first_model_dir[4096] = "";
    int cases = run_golden_cases(root, first_model_dir, sizeof first_model_dir);
    CHECK(cases > 0, "no model folder under %s has golden/text_encoder.safetensors", root);
    if (cases > 0) test_error_paths(first_model_dir);
    return test_finish();
}
