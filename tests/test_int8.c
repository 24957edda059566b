// 8-bit post-training quantization end to end (lcm quantize, src/tools/quantize_model.h): the
// fake-quantization arithmetic, I8 weights read back through the weight reader, a tiny LCM
// quantized with a few calibration prompts, its images against the float32 golden images
// (PSNR/SSIM, printed), the file sizes, quantization.json, and the CLI's errors on bad input.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/quantize_model.h"
#include "golden.h"
#include "io/image.h"
#include "io/model_folder.h"
#include "io/quantization_scheme.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "io/weights.h"
#include "lcm.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "ops/cpu.h"
#include "ops/int8_gemm.h"
#include "ops/kernel_family.h"
#include "ops/int8_layer.h"
#include "ops/layer_quant.h"
#include "ops/ops.h"
#include "testutil.h"

// Thresholds: issue 19's (int8 UNet >= 40 dB, int8 UNet + int8 VAE decoder >= 35 dB, SSIM >= 0.98
// vs the float32 golden images), tightened where the measurements leave room.
// Measured on tiny-lcm's three golden cases (2026-12-07, Xeon with VNNI; BENCHMARKS.md "int8 VAE
// decoder"): int8 UNet 44.76-46.27 dB, SSIM 0.9988-0.9992 (minmax, percentile, symmetric);
// int8 UNet + int8 decoder 40.34-43.33 dB, SSIM 0.9967-0.9983 (percentile on the int8 kernels,
// minmax on the reference path). The PSNR floors are the (4.4 and 5.3 dB below the worst
// case seen); the SSIM floors sit between the 0.98 and what was measured.
#define MIN_PSNR 40.0
#define MIN_PSNR_WITH_VAE 35.0
#define MIN_SSIM 0.99
#define MIN_SSIM_WITH_VAE 0.985
// Above this the images are the float32 ones: the quantization would not have run at all.
#define MAX_PSNR 80.0

static char tmpdir[] = "/tmp/lcm-int8-XXXXXX";

static void test_fake_quantize(void) {
    // scale 0.1, zero point 10: representable values are 0.1 * (q - 10), q in [0, 255].
    float x[] = {0.0f, 0.1f, 0.14f, 0.16f, -1.0f, -1.5f, 24.5f, 30.0f, 0.05f, 0.15f};
    float want[] = {0.0f, 0.1f, 0.1f, 0.2f, -1.0f, -1.0f, 24.5f, 24.5f, 0.0f, 0.2f};
    fake_quantize_u8(x, 10, 0.1f, 10);
    // 0.05 / 0.1 = 0.5 rounds to even (0); 0.15 / 0.1 = 1.4999999 in float, so 1 -> 0.1 or 2 -> 0.2
    // depending on float rounding of the division: accept either for that one.
    for (int i = 0; i < 9; i++)
        CHECK(fabsf(x[i] - want[i]) < 1e-5f, "fake_quantize_u8[%d] = %g, expected %g", i, x[i], want[i]);
    CHECK(fabsf(x[9] - 0.1f) < 1e-5f || fabsf(x[9] - 0.2f) < 1e-5f, "fake_quantize_u8(0.15) = %g", x[9]);
}

// Writes an I8 weight with scales through the quantizer's format and reads it back as float32.
static lcm_status fill_q(void *user, size_t index, float *out, int64_t numel) {
    const float *const *values = user;
    memcpy(out, values[index], sizeof(float) * (size_t)numel);
    return LCM_OK;
}

static void test_i8_weights_read_back(void) {
    float w[6] = {0.5f, -1.0f, 0.25f, 2.0f, 0.0f, -0.1f}, scales[2], q_float[6], dequantized[6];
    int8_t q[6];
    quantize_weights_s8(w, 2, 3, q, scales);
    dequantize_weights_s8(q, scales, 2, 3, dequantized);
    for (int i = 0; i < 6; i++) q_float[i] = q[i];
    const float *values[] = {q_float, scales};
    st_write_entry entries[] = {{"layer.weight", ST_I8, 2, {2, 3}}, {"layer.weight_scale", ST_F32, 1, {2}}};
    char path[256];
    test_path(path, sizeof path, "%s/i8.safetensors", tmpdir);
    CHECK_OK(st_write(path, entries, 2, fill_q, (void *)values, "pt"));
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open_file(path, &ws));
    float *got = NULL;
    if (ws) CHECK_OK(weight_set_load_f32(ws, "layer.weight", 2, (int64_t[]){2, 3}, &got));
    if (got) {
        CHECK(test_close("I8 weight read back", got, dequantized, 6, 0, 0), "I8 weight read back");
        CHECK(test_close("I8 weight vs float", got, w, 6, 2.0 / 127, 0), "I8 weight close to float");
    }
    free(got);
    weight_set_close(ws);

    // A weight without its scales is a format error naming the tensor.
    st_write_entry lonely[] = {{"layer.weight", ST_I8, 2, {2, 3}}};
    CHECK_OK(st_write(path, lonely, 1, fill_q, (void *)values, "pt"));
    ws = NULL;
    got = NULL;
    CHECK_OK(weight_set_open_file(path, &ws));
    if (ws) {
        lcm_status st = weight_set_load_f32(ws, "layer.weight", 2, (int64_t[]){2, 3}, &got);
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), "layer.weight_scale"),
              "I8 without scales: %s", lcm_last_error());
    }
    free(got);
    weight_set_close(ws);
}

// The int8 kernels against the reference int8 numerics (fake-quantized input, dequantized weights,
// float32 kernels) on one conv and one linear layer, on any CPU (the kernels are built directly):
// both see the same integers and differ by float rounding only. (Bit-for-bit checks of every int8
// kernel against the integer reference: test_int8_kernels.c.)
static void fill_random(float *x, int64_t n, unsigned seed, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = lo + (hi - lo) * (float)(seed >> 8) / 16777216.0f;
    }
}

static void check_layer(const char *what, int8_layer *fast, const tensor *x, tensor *(*reference)(const void *, const tensor *),
                        const void *layer, const float *bias, float input_scale, int32_t zero_point) {
    tensor *faked = tensor_copy(x);
    fake_quantize_u8(faked->data, tensor_numel(faked), input_scale, zero_point);
    tensor *want = reference(layer, faked), *got = int8_layer_forward(fast, x, bias);
    CHECK(want && got, "%s: %s", what, lcm_last_error());
    if (want && got) {
        tensor *want_plain = tensor_to_nchw(want), *got_plain = tensor_to_nchw(got);
        size_t n = (size_t)tensor_numel(want_plain);
        double scale = test_max_abs(want_plain->data, n);
        bool vnni = cpu_has_vnni();
        double tol = 1e-4 * scale;
        double diff = 0;
        for (size_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)got_plain->data[i] - want_plain->data[i]));
        fprintf(stderr, "int8 %s: kernel %s (%s): max |diff| vs reference %.3g (max |y| %.3g, tolerance %.3g)\n",
                what, int8_layer_impl(fast), vnni ? "VNNI" : "AVX2", diff, scale, tol);
        CHECK(test_close(what, got_plain->data, want_plain->data, n, tol, 0), "%s: int8 kernel vs reference", what);
        // oneDNN 2.6's AMX int8 kernels write outside their buffers (ops/int8_layer.c): never used.
        CHECK(!strstr(int8_layer_impl(fast), "amx"), "%s: int8 layer runs oneDNN's AMX kernel %s", what,
              int8_layer_impl(fast));
        tensor_free(want_plain);
        tensor_free(got_plain);
    }
    tensor_free(faked);
    tensor_free(want);
    tensor_free(got);
}

static tensor *conv_reference(const void *layer, const tensor *x) { return conv2d_forward(layer, x); }
static tensor *linear_reference(const void *layer, const tensor *x) { return linear_forward(layer, x); }

static void test_int8_kernels(void) {
    enum { IN = 24, OUT = 40, K = 3, H = 9, W = 7, ROWS = 13 };
    float input_scale, *w = malloc(sizeof(float) * OUT * IN * K * K), *bias = malloc(sizeof(float) * OUT);
    float *w_ref = malloc(sizeof(float) * OUT * IN * K * K), *scales = malloc(sizeof(float) * OUT);
    int8_t *q = malloc(OUT * IN * K * K);
    int32_t zero_point;
    activation_quant_params_u8(-1.5f, 2.5f, &input_scale, &zero_point);
    fill_random(w, OUT * IN * K * K, 3, -0.2f, 0.2f);
    fill_random(bias, OUT, 4, -1, 1);
    for (int pass = 0; pass < 2; pass++) { // conv 3x3 stride 2, then linear
        int64_t per_channel = pass == 0 ? IN * K * K : IN;
        quantize_weights_s8(w, OUT, per_channel, q, scales);
        dequantize_weights_s8(q, scales, OUT, per_channel, w_ref);
        int8_layer *fast = NULL;
        CHECK_OK(int8_layer_new(w_ref, IN, OUT, pass == 0 ? K : 0, 2, 1, input_scale, zero_point,
                                INT8_KERNEL_AUTO, &fast));
        tensor *x = pass == 0 ? tensor_new4(2, IN, H, W) : tensor_new3(1, ROWS, IN);
        fill_random(x->data, tensor_numel(x), 5, -2.0f, 3.0f); // some values clip
        if (pass == 0) {
            conv2d c = {.in = IN, .out = OUT, .kernel = K, .stride = 2, .padding = 1, .weight = w_ref, .bias = bias};
            if (fast) check_layer("conv 3x3/2", fast, x, conv_reference, &c, bias, input_scale, zero_point);
            tensor *nhwc = tensor_to_nhwc(x); // the same from a channels-last input
            if (fast) check_layer("conv 3x3/2 NHWC in", fast, nhwc, conv_reference, &c, bias, input_scale, zero_point);
            tensor_free(nhwc);
        } else {
            linear l = {.in = IN, .out = OUT, .weight = w_ref, .bias = bias};
            if (fast) check_layer("linear", fast, x, linear_reference, &l, bias, input_scale, zero_point);
        }
        tensor_free(x);
        int8_layer_free(fast);
    }
    free(w);
    free(w_ref);
    free(bias);
    free(scales);
    free(q);
}

static bool is_lcm_pipeline(const char *dir) {
    model_folder folder;
    if (model_folder_open(dir, NULL, &folder) != LCM_OK) return false;
    const char *cls = model_folder_pipeline_class(&folder);
    bool yes = cls && !strcmp(cls, "LatentConsistencyModelPipeline");
    model_folder_close(&folder);
    return yes;
}

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

static void check_scheme(const char *dir, const char *component, const char *method, const char *scheme) {
    char path[1200];
    test_path(path, sizeof path, "%s/%s/quantization.json", dir, component);
    FILE *fp = fopen(path, "r");
    CHECK(fp != NULL, "%s missing", path);
    if (!fp) return;
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = 0;
    cJSON *root = cJSON_Parse(text);
    CHECK(root != NULL, "%s does not parse", path);
    const cJSON *w = cJSON_GetObjectItem(root, "weights"), *a = cJSON_GetObjectItem(root, "activations");
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(root, "version")), "%s: version", path);
    CHECK(cJSON_IsString(cJSON_GetObjectItem(w, "dtype")) &&
              !strcmp(cJSON_GetObjectItem(w, "dtype")->valuestring, "s8"), "%s: weights.dtype", path);
    CHECK(cJSON_IsString(cJSON_GetObjectItem(a, "dtype")) &&
              !strcmp(cJSON_GetObjectItem(a, "dtype")->valuestring, "u8"), "%s: activations.dtype", path);
    CHECK(cJSON_IsString(cJSON_GetObjectItem(a, "method")) &&
              !strcmp(cJSON_GetObjectItem(a, "method")->valuestring, method), "%s: method", path);
    CHECK(cJSON_IsString(cJSON_GetObjectItem(a, "scheme")) &&
              !strcmp(cJSON_GetObjectItem(a, "scheme")->valuestring, scheme), "%s: scheme, expected %s", path, scheme);
    CHECK(cJSON_IsArray(cJSON_GetObjectItem(root, "fp32_layers")), "%s: fp32_layers", path);
    cJSON_Delete(root);
}

// Symmetric activations put every zero point at 128; asymmetric ones where each range puts it
// (post-SiLU inputs, which are almost all non-negative, near 0 or 1: not all 128).
static void check_zero_points(const char *dir, bool symmetric) {
    char path[1200];
    test_path(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    st_file *f = NULL;
    CHECK_OK(st_open(path, &f));
    int count = 0, at_128 = 0;
    for (size_t i = 0; f && i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        size_t n = strlen(t->name);
        if (n < 17 || strcmp(t->name + n - 17, ".input_zero_point") || t->dtype != ST_F32 || t->numel != 1) continue;
        float zp;
        memcpy(&zp, t->data, sizeof zp);
        count++;
        at_128 += zp == 128.0f;
    }
    st_close(f);
    fprintf(stderr, "%s: %d of %d input zero points at 128\n", path, at_128, count);
    CHECK(count > 0, "%s: no input zero point", path);
    if (symmetric) CHECK(at_128 == count, "symmetric activations: %d of %d zero points at 128", at_128, count);
    else CHECK(at_128 < count, "asymmetric activations: every zero point at 128");
}

// Generates every golden pipeline case with the quantized model; returns the worst PSNR/SSIM.
static void generate_cases(const char *qdir, const char *golden_dir, char **names, int n,
                           const char *label, double *worst_psnr, double *worst_ssim) {
    *worst_psnr = INFINITY;
    *worst_ssim = 1;
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    lcm_pipeline *p = NULL;
    CHECK_OK(lcm_pipeline_open(qdir, &options, &p));
    for (int i = 0; p && i < n; i++) {
        char path[1400], png[1400];
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        st_file *golden = NULL;
        CHECK_OK(st_open(path, &golden));
        if (!golden) continue;
        cJSON *info = golden_info(golden);
        lcm_request r;
        golden_request(info, &r);
        lcm_result *result = NULL;
        CHECK_OK(lcm_generate(p, &r, &result));
        test_path(png, sizeof png, "%.*s.png", (int)(strlen(path) - strlen(".safetensors")), path);
        lcm_image want = {0};
        CHECK_OK(lcm_image_read(png, &want));
        if (result && want.rgb) {
            double psnr, ssim;
            CHECK_OK(lcm_image_compare(&result->images[0], &want, &psnr, &ssim));
            const char *kernel = quantize_model_int8_kernel(test_backend_for(LCM_PRECISION_FP32));
            fprintf(stderr, "int8 %s (%s) %s: PSNR %.2f dB, SSIM %.4f vs the float32 golden image\n", label,
                    kernel, names[i], psnr, ssim);
            if (psnr < *worst_psnr) *worst_psnr = psnr;
            if (ssim < *worst_ssim) *worst_ssim = ssim;
        }
        lcm_image_release(&want);
        lcm_result_free(result);
        cJSON_Delete(info);
        st_close(golden);
    }
    lcm_pipeline_close(p);
}

static const char *prompts_text =
    "a red bicycle leaning against a brick wall\n"
    "\n"
    "a bowl of oranges on a wooden table, soft morning light\n"
    "a lighthouse on a rocky coast at dusk\n"
    "portrait of an old fisherman, detailed, film photo\n";

// The VAE decoder of an int8 folder runs on the int8 kernels: every layer but the ones kept in
// float32 (those with no input parameters), when the backend has the int8 kernels on.
static void check_vae_on_int8_kernels(const char *qdir, int kept) {
    const ops_backend *b = test_backend_for(LCM_PRECISION_FP32);
    model_folder folder;
    CHECK_OK(model_folder_open(qdir, NULL, &folder));
    vae_model *vae = NULL;
    CHECK_OK(vae_load(b, &folder, "vae", &vae));
    if (vae) {
        int layers = 0, on_int8 = vae_decoder_layers_on(vae, &kernel_family_int8, &layers);
        bool int8_expected = b->kernels == KERNELS_FAST && b->int8_kernels;
        fprintf(stderr, "int8 VAE decoder: %d of %d layers on the int8 kernels (%d kept in float32; int8 kernels %s)\n",
                on_int8, layers, kept, int8_expected ? "on" : "off");
        if (int8_expected)
            CHECK(on_int8 == layers - kept && on_int8 > 0, "int8 VAE decoder: %d of %d layers on the int8 kernels, "
                  "expected all but the %d kept in float32", on_int8, layers, kept);
        else
            CHECK(on_int8 == 0, "int8 kernels off, yet %d VAE layers on them", on_int8);
    }
    vae_free(vae);
    model_folder_close(&folder);
}

static int count_names(const char *const *names) {
    int n = 0;
    while (names[n]) n++;
    return n;
}

// The same int8 model gives bit-identical images with every int8 kernel this CPU runs (ours with
// VNNI, oneDNN's where VNNI is present, ours with AVX2 by hiding VNNI) and with 1 and 2 threads.
// LCM_TUNE=off: the float layers' kernels then do not depend on what a measurement found.
static void check_kernels_agree(const char *qdir, const char *golden_dir, const char *name) {
    char path[1400];
    test_path(path, sizeof path, "%s/%s", golden_dir, name);
    st_file *golden = NULL;
    CHECK_OK(st_open(path, &golden));
    if (!golden) return;
    cJSON *info = golden_info(golden);
    lcm_request r;
    golden_request(info, &r);
    struct {
        const char *kernel, *label;
        bool hide_vnni, hide_amx, needs_vnni, needs_amx;
    } runs[] = {{"ours", "ours AMX", false, false, true, true},
                {"ours", "ours VNNI", false, true, true, false},
                {"onednn", "oneDNN", false, true, true, false},
                {"ours", "ours AVX2", true, true, false, false}};
    setenv("LCM_TUNE", "off", 1);
    lcm_result *first = NULL;
    const char *first_label = "";
    int compared = 0;
    for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
        if ((runs[k].needs_vnni && !cpu_has_vnni()) || (runs[k].needs_amx && !int8_amx_usable())) continue;
        setenv("LCM_INT8_KERNELS", runs[k].kernel, 1);
        cpu_hide_vnni(runs[k].hide_vnni);
        if (!runs[k].hide_vnni) cpu_hide_amx(runs[k].hide_amx);
        for (int threads = 1; threads <= 2; threads++) {
            lcm_pipeline_options options;
            lcm_pipeline_options_init(&options);
            options.threads = threads;
            lcm_pipeline *p = NULL;
            lcm_result *result = NULL;
            CHECK_OK(lcm_pipeline_open(qdir, &options, &p));
            if (p) CHECK_OK(lcm_generate(p, &r, &result));
            lcm_pipeline_close(p);
            if (!result) continue;
            if (!first) {
                first = result;
                first_label = runs[k].label;
                continue;
            }
            const lcm_image *a = &first->images[0], *b = &result->images[0];
            bool same = a->width == b->width && a->height == b->height &&
                        !memcmp(a->rgb, b->rgb, (size_t)a->width * (size_t)a->height * 3);
            CHECK(same, "int8 %s: %s with %d thread(s) gives another image than %s with 1 thread", name,
                  runs[k].label, threads, first_label);
            compared++;
            lcm_result_free(result);
        }
        cpu_hide_vnni(false);
    }
    fprintf(stderr, "int8 %s: %d runs (int8 kernels x 1 and 2 threads) bit-identical to %s with 1 thread\n",
            name, compared, first_label);
    CHECK(compared >= 1, "int8 kernels: nothing compared");
    unsetenv("LCM_INT8_KERNELS");
    unsetenv("LCM_TUNE");
    lcm_result_free(first);
    cJSON_Delete(info);
    st_close(golden);
}

typedef struct quantize_config {
    const char *label, *method;
    bool compress_weights, vae, symmetric;
    const char *int8_kernels; // LCM_INT8_KERNELS while generating
} quantize_config;

static void quantize_case(const char *model, const char *golden_dir, char **names, int n,
                          const char *calibration) {
    // minmax through the reference int8 path, percentile through the int8 kernels (ours by default;
    // check_kernels_agree runs the others), so both run on
    // every CPU; --compress-weights exercises the 8-bit text encoder and VAE weights, --vae the int8
    // decoder (on both paths).
    const quantize_config configs[] = {
        {"minmax", "minmax", false, false, false, "0"},
        {"percentile", "percentile", true, false, false, "1"},
        {"percentile --vae", "percentile", false, true, false, "1"},
        {"minmax --vae", "minmax", false, true, false, "0"},
        {"percentile --activations symmetric", "percentile", false, false, true, "1"},
    };
    for (size_t m = 0; m < sizeof configs / sizeof configs[0]; m++) {
        const quantize_config *cfg = &configs[m];
        char qdir[512];
        test_path(qdir, sizeof qdir, "%s/q-%zu", tmpdir, m);
        quantize_model_options o;
        quantize_model_options_init(&o);
        o.model_dir = model;
        o.calibration_path = calibration;
        o.output_dir = qdir;
        o.samples = 4;
        o.steps = 2;
        o.method = !strcmp(cfg->method, "minmax") ? ACTIVATION_RANGE_MINMAX : ACTIVATION_RANGE_PERCENTILE;
        o.compress_weights = cfg->compress_weights;
        o.vae = cfg->vae;
        o.symmetric_activations = cfg->symmetric;
        o.quiet = true;
        lcm_status st = quantize_model(&o);
        CHECK(st == LCM_OK, "quantize %s (%s): %s", model, cfg->label, lcm_last_error());
        if (st != LCM_OK) continue;
        CHECK(quantize_model_is_int8(qdir), "%s: not recognised as int8", qdir);
        const char *scheme = cfg->symmetric ? "symmetric" : "asymmetric";
        check_scheme(qdir, "unet", cfg->method, scheme);
        if (cfg->vae) check_scheme(qdir, "vae", cfg->method, scheme);
        check_zero_points(qdir, cfg->symmetric);
        CHECK_OK(quantization_scheme_check_model(qdir));

        char a[1200], b[1200];
        test_path(a, sizeof a, "%s/unet/diffusion_pytorch_model.safetensors", model);
        test_path(b, sizeof b, "%s/unet/diffusion_pytorch_model.safetensors", qdir);
        double ratio = (double)file_size(b) / (double)file_size(a);
        fprintf(stderr, "int8 %s: UNet file %lld -> %lld bytes (%.3f of float32)\n", cfg->label,
                file_size(a), file_size(b), ratio);
        CHECK(ratio > 0 && ratio < 0.35, "UNet file is %.3f of float32, expected about a quarter", ratio);
        if (o.compress_weights || o.vae) {
            test_path(a, sizeof a, "%s/vae/diffusion_pytorch_model.safetensors", model);
            test_path(b, sizeof b, "%s/vae/diffusion_pytorch_model.safetensors", qdir);
            double vae_ratio = (double)file_size(b) / (double)file_size(a);
            fprintf(stderr, "int8 %s: VAE %.3f of float32\n", cfg->label, vae_ratio);
            // --vae alone leaves the encoder (about half the VAE) in float32
            double most = o.compress_weights ? 0.4 : 0.8;
            CHECK(vae_ratio > 0 && vae_ratio < most, "VAE file %.3f of float32 (expected < %.1f)", vae_ratio, most);
        }
        if (o.compress_weights) {
            test_path(a, sizeof a, "%s/text_encoder/model.safetensors", model);
            test_path(b, sizeof b, "%s/text_encoder/model.safetensors", qdir);
            double text_ratio = (double)file_size(b) / (double)file_size(a);
            fprintf(stderr, "int8 --compress-weights: text encoder %.3f of float32\n", text_ratio);
            CHECK(text_ratio > 0 && text_ratio < 0.4, "compressed text encoder %.3f of float32", text_ratio);
        }
        setenv("LCM_INT8_KERNELS", cfg->int8_kernels, 1);
        if (o.vae) check_vae_on_int8_kernels(qdir, count_names(quantize_vae_default_keep_fp32));
        double psnr, ssim;
        generate_cases(qdir, golden_dir, names, n, cfg->label, &psnr, &ssim);
        unsetenv("LCM_INT8_KERNELS");
        // the int8 UNet and int8 decoder through every int8 kernel
        if (o.vae && !strcmp(cfg->int8_kernels, "1")) check_kernels_agree(qdir, golden_dir, names[0]);
        double min_psnr = o.vae ? MIN_PSNR_WITH_VAE : MIN_PSNR, min_ssim = o.vae ? MIN_SSIM_WITH_VAE : MIN_SSIM;
        CHECK(psnr < MAX_PSNR, "int8 %s: PSNR %.2f dB: the images did not change at all", cfg->label, psnr);
        CHECK(psnr >= min_psnr && ssim >= min_ssim, "int8 %s: worst PSNR %.2f dB (min %.1f), SSIM %.4f (min %.3f)",
              cfg->label, psnr, min_psnr, ssim, min_ssim);
    }
}

// ---- damaged quantization.json -------------------------------------------------------------------

typedef enum damage_kind { DAMAGE_REMOVE, DAMAGE_TRUNCATE, DAMAGE_TEXT, DAMAGE_EDIT } damage_kind;

typedef struct scheme_damage {
    const char *what, *component; // "unet" or "vae"
    damage_kind kind;
    const char *text;                        // DAMAGE_TEXT
    void (*edit)(cJSON *root);               // DAMAGE_EDIT
    const char *expect;                      // in the message, beside the file's path
} scheme_damage;

static void set_item(cJSON *object, const char *field, cJSON *value) {
    if (cJSON_GetObjectItem(object, field)) cJSON_ReplaceItemInObject(object, field, value);
    else cJSON_AddItemToObject(object, field, value);
}
static void version_2(cJSON *r) { set_item(r, "version", cJSON_CreateNumber(2)); }
static void version_string(cJSON *r) { set_item(r, "version", cJSON_CreateString("1")); }
static void format_other(cJSON *r) { set_item(r, "format", cJSON_CreateString("onnx int8")); }
static void no_weights_only(cJSON *r) { cJSON_DeleteItemFromObject(r, "weights_only"); }
static void weights_only_string(cJSON *r) { set_item(r, "weights_only", cJSON_CreateString("no")); }
static void weights_dtype_number(cJSON *r) { set_item(cJSON_GetObjectItem(r, "weights"), "dtype", cJSON_CreateNumber(8)); }
static void no_weights(cJSON *r) { cJSON_DeleteItemFromObject(r, "weights"); }
static void no_activations(cJSON *r) { cJSON_DeleteItemFromObject(r, "activations"); }
static void activation_scheme_other(cJSON *r) {
    set_item(cJSON_GetObjectItem(r, "activations"), "scheme", cJSON_CreateString("logarithmic"));
}
static void model_number(cJSON *r) { set_item(r, "model", cJSON_CreateNumber(3)); }
static void fp32_layers_string(cJSON *r) { set_item(r, "fp32_layers", cJSON_CreateString("conv_in")); }
// Inconsistent with the weights: a layer stored in I8 listed as float32; activation parameters
// stored although the file says weight-only.
static void fp32_layers_quantized(cJSON *r) {
    cJSON_AddItemToArray(cJSON_GetObjectItem(r, "fp32_layers"), cJSON_CreateString("decoder.up_blocks.0"));
}
static void weights_only_true(cJSON *r) { set_item(r, "weights_only", cJSON_CreateTrue()); }

static const scheme_damage scheme_damages[] = {
    {"missing", "unet", DAMAGE_REMOVE, NULL, NULL, "missing"},
    {"missing", "vae", DAMAGE_REMOVE, NULL, NULL, "missing"},
    {"truncated", "unet", DAMAGE_TRUNCATE, NULL, NULL, "not valid JSON"},
    {"truncated", "vae", DAMAGE_TRUNCATE, NULL, NULL, "not valid JSON"},
    {"not JSON", "vae", DAMAGE_TEXT, "{not json", NULL, "not valid JSON"},
    {"not JSON", "text_encoder", DAMAGE_TEXT, "{not json", NULL, "not valid JSON"}, // every component
    {"a JSON array", "unet", DAMAGE_TEXT, "[1, 2]", NULL, "object"},
    {"empty", "vae", DAMAGE_TEXT, "", NULL, "JSON"},
    {"version 2", "vae", DAMAGE_EDIT, NULL, version_2, "'version'"},
    {"version a string", "unet", DAMAGE_EDIT, NULL, version_string, "'version'"},
    {"another format", "vae", DAMAGE_EDIT, NULL, format_other, "'format'"},
    {"no weights_only", "unet", DAMAGE_EDIT, NULL, no_weights_only, "'weights_only'"},
    {"weights_only a string", "vae", DAMAGE_EDIT, NULL, weights_only_string, "'weights_only'"},
    {"weights.dtype a number", "vae", DAMAGE_EDIT, NULL, weights_dtype_number, "'weights.dtype'"},
    {"no weights", "unet", DAMAGE_EDIT, NULL, no_weights, "'weights'"},
    {"no activations", "vae", DAMAGE_EDIT, NULL, no_activations, "'activations'"},
    {"unknown activation scheme", "unet", DAMAGE_EDIT, NULL, activation_scheme_other, "'activations.scheme'"},
    {"model a number", "vae", DAMAGE_EDIT, NULL, model_number, "'model'"},
    {"fp32_layers a string", "unet", DAMAGE_EDIT, NULL, fp32_layers_string, "'fp32_layers'"},
    {"fp32_layers names an int8 layer", "vae", DAMAGE_EDIT, NULL, fp32_layers_quantized, "decoder.up_blocks.0"},
    {"weights_only with activation parameters", "vae", DAMAGE_EDIT, NULL, weights_only_true, "weights_only"},
};

// Writes a new file (the copy's is unlinked first: cp may have hard-linked nothing, but be sure).
static void replace_file(const char *path, const char *bytes, size_t n) {
    unlink(path);
    test_write_file(path, bytes, n);
}

static void apply_damage(const char *json, const scheme_damage *d) {
    size_t size = 0;
    if (d->kind == DAMAGE_TEXT) { // also where lcm quantize wrote none (a text encoder's folder)
        replace_file(json, d->text, strlen(d->text));
        return;
    }
    char *text = test_read_file(json, &size);
    CHECK(text != NULL, "read %s", json);
    if (!text) return;
    if (d->kind == DAMAGE_REMOVE) CHECK(unlink(json) == 0, "remove %s", json);
    else if (d->kind == DAMAGE_TRUNCATE) replace_file(json, text, size / 2);
    else {
        cJSON *root = cJSON_Parse(text);
        CHECK(root != NULL, "%s does not parse", json);
        if (root) {
            d->edit(root);
            char *edited = cJSON_Print(root);
            if (edited) replace_file(json, edited, strlen(edited));
            free(edited);
            cJSON_Delete(root);
        }
    }
    free(text);
}

// A quantized folder (qdir: UNet and VAE in int8) with its quantization.json damaged in each way
// is refused when loaded, with a message naming the file and the field.
static void test_damaged_schemes(const char *qdir) {
    char bad[512], cmd[1600], out[4096], json[700];
    test_path(bad, sizeof bad, "%s/damaged", tmpdir);
    for (size_t i = 0; i < sizeof scheme_damages / sizeof *scheme_damages; i++) {
        const scheme_damage *d = &scheme_damages[i];
        test_path(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", bad, qdir, bad);
        CHECK(test_run(cmd, out, sizeof out) == 0, "%s: %s", cmd, out);
        test_path(json, sizeof json, "%s/%s/quantization.json", bad, d->component);
        apply_damage(json, d);
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        lcm_pipeline *p = NULL;
        lcm_status st = lcm_pipeline_open(bad, &options, &p);
        const char *message = lcm_last_error();
        fprintf(stderr, "quantization.json %s (%s/) -> %s: %s\n", d->what, d->component, lcm_status_name(st), message);
        CHECK(st == LCM_ERR_FORMAT && p == NULL && strstr(message, json) && strstr(message, d->expect),
              "%s/quantization.json %s: %s: '%s' (expected the path and '%s')", d->component, d->what,
              lcm_status_name(st), message, d->expect);
        lcm_pipeline_close(p);
        lcm_clear_error();
        // the check alone says the same
        st = quantization_scheme_check_model(bad);
        CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), d->expect), "quantization_scheme_check_model, %s/ %s: %s",
              d->component, d->what, lcm_last_error());
        lcm_clear_error();
    }
    test_path(cmd, sizeof cmd, "rm -rf '%s'", bad);
    CHECK(system(cmd) == 0, "%s", cmd);
}

// ---- nothing half-written -------------------------------------------------------------------------

// No OUTPUT and no OUTPUT.partial-* left in tmpdir.
static void check_nothing_written(const char *what, const char *output) {
    char cmd[1200], out[2048];
    CHECK(access(output, F_OK) != 0, "%s: %s exists", what, output);
    test_path(cmd, sizeof cmd, "ls -d '%s'.partial-* 2>/dev/null | wc -l", output);
    test_run(cmd, out, sizeof out);
    CHECK(atoi(out) == 0, "%s: %s partial folder(s) left beside %s", what, out, output);
}

static void test_atomic_output(const char *model, const char *calibration) {
    char output[512], cmd[4096], out[8192];
    test_path(output, sizeof output, "%s/atomic", tmpdir);
    // A calibration that fails at its first generation (more steps than the scheduler allows),
    // after the staging folder was made.
    test_path(cmd, sizeof cmd, "'%s' quantize --model '%s' --calibration '%s' --output '%s' --steps 999 --vae --quiet 2>&1",
              test_lcm_bin(), model, calibration, output);
    int rc = test_run(cmd, out, sizeof out);
    fprintf(stderr, "lcm quantize --steps 999 -> %d: %s", rc, out);
    CHECK(rc != 0 && strstr(out, "calibration"), "a failing calibration: exit %d: %s", rc, out);
    check_nothing_written("a failing calibration", output);
    // Interrupted by SIGINT / SIGTERM once the staging folder exists: exit 130, nothing left.
    const char *signals[] = {"INT", "TERM"};
    for (int i = 0; i < 2; i++) {
        test_path(cmd, sizeof cmd,
                  "'%s' quantize --model '%s' --calibration '%s' --output '%s' --samples 100000 --vae --quiet 2>&1 & pid=$!; "
                  "for i in $(seq 1 600); do ls -d '%s'.partial-* >/dev/null 2>&1 && break; sleep 0.1; done; "
                  "sleep 1; kill -%s $pid; wait $pid; echo \"exit $?\"",
                  test_lcm_bin(), model, calibration, output, output, signals[i]);
        rc = test_run(cmd, out, sizeof out);
        fprintf(stderr, "lcm quantize, SIG%s -> %s", signals[i], out);
        CHECK(rc == 0 && strstr(out, "exit 130") && strstr(out, "interrupted"), "SIG%s: %s", signals[i], out);
        check_nothing_written(signals[i], output);
    }
}

// The CLI refuses bad input with exit status 2 and a message naming what is wrong.
static void test_cli_errors(const char *model, const char *calibration) {
    char cmd[4096], out[4096], empty[512], qdir[512];
    test_path(empty, sizeof empty, "%s/empty.txt", tmpdir);
    FILE *fp = fopen(empty, "w");
    if (fp) fclose(fp);
    test_path(qdir, sizeof qdir, "%s/q-0", tmpdir);
    struct {
        const char *args, *expect;
    } cases[] = {
        {"--calibration /nonexistent/prompts.txt", "/nonexistent/prompts.txt"},
        {"--calibration EMPTY", "empty"},
        {"--calibration CAL --samples 0", "--samples 0"},
        {"--calibration CAL --method median", "median"},
        {"--calibration CAL --model QDIR", "already quantized"},
        {"--calibration CAL --model TMP", "no unet/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char args[2048] = "";
        const char *s = cases[i].args;
        // expand the placeholders
        while (*s) {
            if (!strncmp(s, "EMPTY", 5)) strcat(args, empty), s += 5;
            else if (!strncmp(s, "CAL", 3)) strcat(args, calibration), s += 3;
            else if (!strncmp(s, "QDIR", 4)) strcat(args, qdir), s += 4;
            else if (!strncmp(s, "TMP", 3)) strcat(args, tmpdir), s += 3;
            else strncat(args, s++, 1);
        }
        bool has_model = strstr(cases[i].args, "--model") != NULL;
        test_path(cmd, sizeof cmd, "'%s' quantize %s%s %s --output '%s/never' --quiet 2>&1", test_lcm_bin(),
                  has_model ? "" : "--model ", has_model ? "" : model, args, tmpdir);
        int rc = test_run(cmd, out, sizeof out);
        fprintf(stderr, "lcm quantize %s -> %d: %s", cases[i].args, rc, out);
        CHECK(rc == 2 && strstr(out, cases[i].expect), "lcm quantize %s: status %d, output '%s' (expected '%s')",
              cases[i].args, rc, out, cases[i].expect);
    }
    test_path(cmd, sizeof cmd, "%s/never", tmpdir);
    CHECK(access(cmd, F_OK) != 0, "a failed quantize left %s behind", cmd);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    test_fake_quantize();
    test_i8_weights_read_back();
    test_int8_kernels();

    char calibration[512];
    test_path(calibration, sizeof calibration, "%s/prompts.txt", tmpdir);
    FILE *fp = fopen(calibration, "w");
    CHECK(fp && fputs(prompts_text, fp) >= 0, "write %s", calibration);
    if (fp) fclose(fp);

    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    struct dirent *e;
    int models = 0;
    while (d && (e = readdir(d)) && models == 0) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], golden_dir[1100];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        if (!is_lcm_pipeline(dir)) continue;
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        char **names;
        int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
        if (n > 0) {
            quantize_case(dir, golden_dir, names, n, calibration);
            test_cli_errors(dir, calibration);
            char qdir[600];
            test_path(qdir, sizeof qdir, "%s/q-2", tmpdir); // UNet and VAE decoder in int8
            test_damaged_schemes(qdir);
            test_atomic_output(dir, calibration);
            models++;
        }
        test_free_list(names, n);
    }
    if (d) closedir(d);
    CHECK(models > 0, "no LCM pipeline with golden cases under %s", root);

    char cmd[600];
    test_path(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0, "%s", cmd);
    return test_finish();
}
