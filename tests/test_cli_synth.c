// `lcm synth` end to end on the tiny fixture model's configs: fp32, fp16 and bf16 folders are
// written; every tensor of a half-precision folder has that dtype in its safetensors header and the
// same values as the fp32 folder (same seed) up to the dtype's rounding; and the pipeline opens on
// the fp16 folder and generates an image. Bad --dtype values are a usage error naming the value.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define OUTPUT_CAP (1 << 16)

static char output[OUTPUT_CAP];

// The JSON header of a .safetensors file and the offset where its data starts; NULL on failure.
static cJSON *read_header(FILE *f, long *data_start) {
    unsigned char len_bytes[8];
    if (fread(len_bytes, 1, 8, f) != 8) return NULL;
    unsigned long long len = 0;
    for (int i = 7; i >= 0; i--) len = len << 8 | len_bytes[i];
    if (len > (1u << 28)) return NULL;
    char *text = malloc(len + 1);
    cJSON *root = NULL;
    if (text && fread(text, 1, len, f) == len) {
        text[len] = '\0';
        root = cJSON_Parse(text);
    }
    free(text);
    *data_start = 8 + (long)len;
    return root;
}

static float half_to_float(uint16_t h) {
    int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float magnitude = exponent == 0 ? ldexpf((float)mantissa, -24)
                                    : ldexpf((float)(mantissa | 0x400), exponent - 25);
    return (h & 0x8000) ? -magnitude : magnitude;
}

static float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// Reads tensor `name` of a safetensors file as floats (F32, F16 or BF16); *dtype receives the
// header's dtype. Returns the element count, or -1.
static long read_tensor(const char *path, const char *name, float **values, char *dtype, size_t cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    long start, count = -1;
    cJSON *root = read_header(f, &start);
    const cJSON *entry = root ? cJSON_GetObjectItem(root, name) : NULL;
    const cJSON *offsets = entry ? cJSON_GetObjectItem(entry, "data_offsets") : NULL;
    const char *type = entry ? cJSON_GetStringValue(cJSON_GetObjectItem(entry, "dtype")) : NULL;
    if (offsets && type && cJSON_GetArraySize(offsets) == 2) {
        snprintf(dtype, cap, "%s", type);
        long begin = (long)cJSON_GetArrayItem(offsets, 0)->valuedouble;
        long end = (long)cJSON_GetArrayItem(offsets, 1)->valuedouble;
        size_t width = !strcmp(type, "F32") ? 4 : 2;
        size_t bytes = (size_t)(end - begin);
        unsigned char *raw = malloc(bytes ? bytes : 1);
        *values = malloc(sizeof(float) * (bytes / width + 1));
        if (raw && *values && fseek(f, start + begin, SEEK_SET) == 0 && fread(raw, 1, bytes, f) == bytes) {
            count = (long)(bytes / width);
            for (long i = 0; i < count; i++) {
                uint16_t h = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
                if (width == 4) memcpy(&(*values)[i], raw + 4 * i, 4);
                else (*values)[i] = !strcmp(type, "F16") ? half_to_float(h) : bf16_to_float(h);
            }
        }
        free(raw);
    }
    cJSON_Delete(root);
    fclose(f);
    return count;
}

static double max_abs_diff(const float *a, const float *b, long n) {
    double worst = 0;
    for (long i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
    return worst;
}

// Every tensor of the file has dtype `want`.
static bool all_dtype(const char *path, const char *want, int *tensors) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    long start;
    cJSON *root = read_header(f, &start);
    fclose(f);
    bool ok = root != NULL;
    *tensors = 0;
    const cJSON *entry;
    cJSON_ArrayForEach(entry, root) {
        if (!strcmp(entry->string, "__metadata__")) continue;
        (*tensors)++;
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItem(entry, "dtype"));
        if (!type || strcmp(type, want)) ok = false;
    }
    cJSON_Delete(root);
    return ok;
}

static int synth(const char *config, const char *out, const char *dtype) {
    char cmd[8192];
    test_path(cmd, sizeof cmd, "'%s' synth --config '%s' --out '%s' --dtype %s 2>&1", test_lcm_bin(),
              config, out, dtype);
    return test_run(cmd, output, sizeof output);
}

int main(void) {
    char config[4096], tmp[] = "/tmp/test_cli_synth_XXXXXX", out32[4200], out16[4200], outbf[4200];
    test_path(config, sizeof config, "%s/tiny-lcm", test_fixtures());
    if (!mkdtemp(tmp)) return 2;
    test_path(out32, sizeof out32, "%s/fp32", tmp);
    test_path(out16, sizeof out16, "%s/fp16", tmp);
    test_path(outbf, sizeof outbf, "%s/bf16", tmp);
    CHECK(synth(config, out32, "fp32") == 0, "synth fp32: %s", output);
    CHECK(synth(config, out16, "fp16") == 0, "synth fp16: %s", output);
    CHECK(synth(config, outbf, "bf16") == 0, "synth bf16: %s", output);

    // Each weight file is all F16 / BF16 and matches the fp32 folder's values after rounding.
    static const char *const files[] = {"unet/diffusion_pytorch_model.safetensors",
                                        "vae/diffusion_pytorch_model.safetensors",
                                        "text_encoder/model.safetensors"};
    static const char *const probes[] = {"conv_in.weight", "decoder.conv_in.weight",
                                         "text_model.embeddings.token_embedding.weight"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char p32[8400], p16[8400], pbf[8400], dtype[16];
        test_path(p32, sizeof p32, "%s/%s", out32, files[i]);
        test_path(p16, sizeof p16, "%s/%s", out16, files[i]);
        test_path(pbf, sizeof pbf, "%s/%s", outbf, files[i]);
        int tensors = 0;
        CHECK(all_dtype(p16, "F16", &tensors) && tensors > 0, "%s: all %d tensors F16", p16, tensors);
        CHECK(all_dtype(pbf, "BF16", &tensors) && tensors > 0, "%s: all %d tensors BF16", pbf, tensors);
        float *want = NULL, *half = NULL, *brain = NULL;
        long n = read_tensor(p32, probes[i], &want, dtype, sizeof dtype);
        long n16 = read_tensor(p16, probes[i], &half, dtype, sizeof dtype);
        long nbf = read_tensor(pbf, probes[i], &brain, dtype, sizeof dtype);
        CHECK(n > 0 && n16 == n && nbf == n, "%s: %ld, %ld and %ld values", probes[i], n, n16, nbf);
        if (n > 0 && n16 == n && nbf == n) {
            // fp16 keeps 11 significant bits, bf16 8: relative errors up to 2^-11 and 2^-8.
            fprintf(stderr, "%s: max abs diff fp16 %.3g, bf16 %.3g (max |value| %.3g)\n", probes[i],
                    max_abs_diff(half, want, n), max_abs_diff(brain, want, n), test_max_abs(want, (size_t)n));
            CHECK(test_close("fp16 vs fp32", half, want, (size_t)n, 1e-7, 0x1p-11), "%s fp16", probes[i]);
            CHECK(test_close("bf16 vs fp32", brain, want, (size_t)n, 1e-30, 0x1p-8), "%s bf16", probes[i]);
        }
        free(want);
        free(half);
        free(brain);
    }

    // The fp16 folder loads (weights converted to fp32) and generates.
    lcm_pipeline *pipeline = NULL;
    CHECK_OK(lcm_pipeline_open(out16, NULL, &pipeline));
    if (pipeline) {
        lcm_request request;
        lcm_request_init(&request);
        request.prompt = "a cat";
        request.steps = 1;
        request.width = request.height = 64;
        lcm_result *result = NULL;
        CHECK_OK(lcm_generate(pipeline, &request, &result));
        CHECK(result && result->count == 1 && result->images[0].width == 64, "one 64x64 image");
        lcm_result_free(result);
        lcm_pipeline_close(pipeline);
    }

    // A dtype that does not exist is a usage error naming it.
    char bad[4200];
    test_path(bad, sizeof bad, "%s/bad", tmp);
    CHECK(synth(config, bad, "int4") == 2 && strstr(output, "int4"), "--dtype int4 rejected: %s", output);

    char cmd[4200];
    test_path(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    CHECK(test_run(cmd, output, sizeof output) == 0, "cleanup");
    return test_finish();
}
