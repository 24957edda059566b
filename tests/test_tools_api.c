// The public API the lcm tools are built on (the end of include/lcm.h), through lcm.h alone where
// it can be: lcm_tokenize against a sample of the golden token ids, lcm_png_encode read back, lcm_model_describe
// as JSON, the synthesized-model writer's errors, the quantization queries, the system queries and
// the bench's stage names and refusals.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "tokenizer_cases.h"

static void check_tokenize(const char *root) {
    char dir[4096], cases_path[4096];
    test_path(dir, sizeof dir, "%s/tiny-lcm/tokenizer", root);
    test_path(cases_path, sizeof cases_path, "%s/tokenizer_cases.jsonl", root);
    tokenizer_case *cases = NULL;
    int n = tokenizer_cases_read(cases_path, &cases);
    CHECK(n > 0, "tokenizer cases read: %d", n);
    // A sample (every tenth case): each call opens the tokenizer, which test_tokenizer.c covers whole.
    int matched = 0, sampled = 0;
    for (int i = 0; i < n; i += 10) {
        sampled++;
        int32_t ids[LCM_TOKEN_COUNT];
        int untruncated = -1;
        lcm_status st = lcm_tokenize(dir, cases[i].prompt, cases[i].prompt_len, ids, &untruncated);
        if (st == LCM_OK && !memcmp(ids, cases[i].input_ids, sizeof ids) && untruncated == cases[i].n_untruncated)
            matched++;
        else
            CHECK(false, "case at line %d: %s", cases[i].line, st == LCM_OK ? "ids differ" : lcm_last_error());
    }
    CHECK(sampled > 0 && matched == sampled, "lcm_tokenize matches %d of %d sampled golden cases", matched, sampled);
    tokenizer_cases_free(cases, n);
    int32_t ids[LCM_TOKEN_COUNT];
    CHECK(lcm_tokenize("/nonexistent-tokenizer", "a cat", 5, ids, NULL) != LCM_OK &&
              strstr(lcm_last_error(), "/nonexistent-tokenizer"),
          "a missing tokenizer folder is named: %s", lcm_last_error());
}

static void check_png_encode(void) {
    enum { W = 7, H = 5 };
    uint8_t rgb[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 37 + 11);
    lcm_image image = {W, H, rgb};
    const char *parameters = "a red fox\nSteps: 4, Sampler: LCM, Seed: 7";
    for (int with_text = 0; with_text < 2; with_text++) {
        void *png = NULL;
        size_t size = 0;
        CHECK_OK(lcm_png_encode(&image, with_text ? parameters : NULL, &png, &size));
        lcm_image back = {0};
        CHECK_OK(lcm_image_decode(png, size, "encoded", &back));
        CHECK(back.width == W && back.height == H && back.rgb && !memcmp(back.rgb, rgb, sizeof rgb),
              "the pixels read back equal (text %d)", with_text);
        char *text = NULL;
        CHECK_OK(lcm_png_read_parameters(png, size, "encoded", &text));
        if (with_text) CHECK(text && !strcmp(text, parameters), "the parameters read back: %s", text ? text : "(none)");
        else CHECK(text == NULL, "no parameters chunk without parameters");
        free(text);
        lcm_image_release(&back);
        free(png);
    }
}

static void check_describe(const char *root) {
    char model[4096];
    test_path(model, sizeof model, "%s/tiny-lcm", root);
    char *json = NULL;
    CHECK_OK(lcm_model_describe(model, NULL, &json));
    cJSON *doc = json ? cJSON_Parse(json) : NULL;
    CHECK(doc != NULL, "lcm_model_describe returns JSON");
    const cJSON *components = cJSON_GetObjectItem(doc, "components");
    CHECK(cJSON_IsArray(components) && cJSON_GetArraySize(components) > 0, "it lists components");
    const cJSON *component;
    int with_weights = 0;
    cJSON_ArrayForEach(component, components) {
        const cJSON *weights = cJSON_GetObjectItem(component, "weights");
        if (weights && cJSON_GetNumberValue(cJSON_GetObjectItem(weights, "parameters")) > 0) with_weights++;
    }
    CHECK(with_weights > 0, "some component has weights with parameters");
    cJSON_Delete(doc);
    free(json);
    json = NULL;
    CHECK(lcm_model_describe("/nonexistent-model", NULL, &json) != LCM_OK && json == NULL &&
              strstr(lcm_last_error(), "/nonexistent-model"),
          "a missing folder is named: %s", lcm_last_error());
}

static void check_tools_refusals(const char *root) {
    CHECK(lcm_synth_model("/nonexistent-config", "/tmp/lcm-never-written", NULL, LCM_WEIGHT_FP32, NULL, NULL) != LCM_OK &&
              strstr(lcm_last_error(), "/nonexistent-config"),
          "synth names a missing config folder: %s", lcm_last_error());
    CHECK(lcm_synth_model("/nonexistent-config", "/tmp/lcm-never-written", NULL, (lcm_weight_dtype)9, NULL, NULL) ==
              LCM_ERR_INVALID_ARGUMENT,
          "synth refuses an unknown dtype");
    char model[4096];
    test_path(model, sizeof model, "%s/tiny-lcm", root);
    CHECK(lcm_model_quantization(model) == LCM_QUANTIZED_NONE, "a float model is not quantized");
    CHECK(lcm_controlnet_quantization("/nonexistent-controlnet") == LCM_QUANTIZED_NONE, "nor is a missing folder");
    CHECK(lcm_int8_kernels() && lcm_int8_kernels()[0], "the int8 kernels are named");
    lcm_quantize_options options;
    lcm_quantize_options_init(&options);
    CHECK(options.steps == 4 && options.method == LCM_ACTIVATION_RANGE_PERCENTILE && options.percentile == 99.99,
          "quantize defaults");
}

static void check_system(void) {
    lcm_system_info info;
    lcm_system_info_get(&info);
    CHECK(info.cpu_name && info.cpu_features && info.kernel_tuning_file, "system info strings are set");
    char *decisions = lcm_kernel_decisions();
    CHECK(decisions != NULL, "kernel decisions listed");
    free(decisions);
    int threads = lcm_compute_threads(0);
    CHECK(threads >= 1, "threads in effect: %d", threads);
    CHECK(lcm_compute_threads(1) == 1, "threads set to 1");
    lcm_compute_threads(threads);
    for (int s = 0; s < LCM_BENCH_STAGE_COUNT; s++)
        for (int t = 0; t < s; t++)
            CHECK(strcmp(lcm_bench_stage_name(s), lcm_bench_stage_name(t)) != 0, "stage names differ");
    CHECK(!strcmp(lcm_bench_stage_name(LCM_BENCH_STAGE_COUNT), "unknown"), "out-of-range stage");
    CHECK(lcm_bench_attention_shape_count() > 0, "attention shapes");
    lcm_attention_timing timing;
    CHECK(lcm_bench_attention(-1, 1, &timing) == LCM_ERR_INVALID_ARGUMENT, "attention shape -1 refused");
    double gflops = 0;
    char method[160] = "";
    gflops = lcm_bench_peak(LCM_PRECISION_FP32, 64, method, sizeof method);
    CHECK(gflops > 0 && isfinite(gflops) && strstr(method, "64x64x64"), "peak on 64^3: %g (%s)", gflops, method);
}

int main(void) {
    const char *root = test_fixtures();
    check_tokenize(root);
    check_png_encode();
    check_describe(root);
    check_tools_refusals(root);
    check_system();
    return test_finish();
}
