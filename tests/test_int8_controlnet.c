// 8-bit quantization of a ControlNet (lcm quantize --controlnet, src/tools/quantize_model.h): a
// ControlNet that fits an SD1.5 folder of the fixtures is calibrated with the base model, the LoRA
// its golden cases fuse and their control images, written as a ControlNet folder, and every golden
// ControlNet case is generated with it and compared with the float32 golden image (PSNR/SSIM,
// printed); also the weight-only mode, the file sizes, quantization.json, and the errors on bad
// input (the ControlNet's and the UNet's that test_int8 does not cover).
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
#include "io/json_config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "lcm.h"
#include "models/controlnet.h"
#include "testutil.h"

// Thresholds: what was measured on tiny-controlnet + tiny-sd15 + LCM-LoRA (the two golden cases,
// both int8 paths; BENCHMARKS.md "int8 ControlNet") minus a margin of about 7 dB.
// Measured int8 (default fp32 layers, percentile 99.99): PSNR 54.9-57.5 dB, SSIM 0.9998-0.9999.
// Measured 8-bit weights only: PSNR 56.9-61.6 dB, SSIM 0.9999-1.0000.
#define MIN_PSNR_INT8 48.0
#define MIN_SSIM_INT8 0.999
#define MIN_PSNR_WEIGHTS 50.0
#define MIN_SSIM_WEIGHTS 0.999
// Above this the images are the float32 ones: the quantized layers would not have run at all.
#define MAX_PSNR 80.0

static char tmpdir[] = "/tmp/lcm-int8-cn-XXXXXX";

static const char *prompts_text =
    "a red bicycle leaning against a brick wall\n"
    "\n"
    "a bowl of oranges on a wooden table, soft morning light\n"
    "a lighthouse on a rocky coast at dusk\n";

// The fixtures of one ControlNet case set: the base model, its LoRA, the ControlNet, its golden
// pipeline cases and the control images they name.
typedef struct cn_fixtures {
    char model[1024], controlnet[1024];
    char lora[1400];
    float lora_scale;
    bool has_lora;
    char golden_dir[1100];
    char **names; // golden pipeline_*.safetensors of the ControlNet
    int count;
    char controls[8][1400];
    const char *control_list[8];
    int control_count;
} cn_fixtures;

// The LoRA the model's own golden notes name: "load_lora_weights(DIR)", "fuse_lora(lora_scale=S)".
static void find_lora(cn_fixtures *f) {
    char golden_dir[1100];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", f->model);
    char **names;
    int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
    for (int i = 0; i < n && !f->has_lora; i++) {
        char path[1400];
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        st_file *file;
        if (st_open(path, &file) != LCM_OK) continue;
        cJSON *info = golden_info(file);
        const cJSON *note = cJSON_GetObjectItemCaseSensitive(info, "note");
        const char *a = cJSON_IsString(note) ? strstr(note->valuestring, "load_lora_weights(") : NULL;
        const char *b = a ? strchr(a, ')') : NULL;
        if (a && b) {
            a += strlen("load_lora_weights(");
            char dir[1200];
            test_path(dir, sizeof dir, "%s/%.*s", f->model, (int)(b - a), a);
            const char *s = strstr(note->valuestring, "fuse_lora(lora_scale=");
            f->lora_scale = s ? strtof(s + strlen("fuse_lora(lora_scale="), NULL) : 1.0f;
            char **files;
            int m = test_list_files(dir, "", ".safetensors", &files);
            if (m >= 1) {
                test_path(f->lora, sizeof f->lora, "%s/%s", dir, files[0]);
                f->has_lora = true;
            }
            test_free_list(files, m);
        }
        cJSON_Delete(info);
        st_close(file);
    }
    test_free_list(names, n);
}

// The control images the golden cases name, once each.
static void find_controls(cn_fixtures *f) {
    for (int i = 0; i < f->count; i++) {
        char path[1400];
        test_path(path, sizeof path, "%s/%s", f->golden_dir, f->names[i]);
        st_file *file;
        CHECK_OK(st_open(path, &file));
        if (!file) continue;
        cJSON *info = golden_info(file);
        char control[1400];
        test_path(control, sizeof control, "%s/%s", f->golden_dir, golden_string(info, "control_png"));
        bool seen = false;
        for (int j = 0; j < f->control_count; j++) seen = seen || !strcmp(f->controls[j], control);
        if (!seen && f->control_count < 8) {
            test_path(f->controls[f->control_count], sizeof f->controls[0], "%s", control);
            f->control_list[f->control_count] = f->controls[f->control_count];
            f->control_count++;
        }
        cJSON_Delete(info);
        st_close(file);
    }
}

// The first ControlNet folder with golden pipeline cases that fits an SD1.5 folder.
static bool find_fixtures(const char *root, cn_fixtures *f) {
    memset(f, 0, sizeof *f);
    char sd[8][1024], cn[8][1024];
    int sd_count = 0, cn_count = 0;
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], cls[128];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (!strcmp(cls, "StableDiffusionPipeline") && sd_count < 8) test_path(sd[sd_count++], 1024, "%s", dir);
        if (!strcmp(cls, "ControlNetModel") && cn_count < 8) test_path(cn[cn_count++], 1024, "%s", dir);
    }
    if (d) closedir(d);
    for (int i = 0; i < cn_count && !f->model[0]; i++) {
        test_path(f->golden_dir, sizeof f->golden_dir, "%s/golden", cn[i]);
        f->count = test_list_files(f->golden_dir, "pipeline_", ".safetensors", &f->names);
        for (int j = 0; j < sd_count && f->count > 0 && !f->model[0]; j++)
            if (golden_controlnet_fits(cn[i], sd[j])) {
                test_path(f->model, sizeof f->model, "%s", sd[j]);
                test_path(f->controlnet, sizeof f->controlnet, "%s", cn[i]);
            }
        if (!f->model[0]) {
            test_free_list(f->names, f->count);
            f->names = NULL;
            f->count = 0;
        }
    }
    CHECK(f->model[0], "no ControlNet with golden pipeline cases fitting an SD1.5 folder under %s", root);
    if (!f->model[0]) return false;
    find_lora(f);
    find_controls(f);
    CHECK(f->control_count > 0, "%s: the golden cases name no control image", f->golden_dir);
    fprintf(stderr, "ControlNet %s on %s, LoRA %s (scale %g), %d golden cases, %d control images\n",
            f->controlnet, f->model, f->has_lora ? f->lora : "none", f->lora_scale, f->count, f->control_count);
    return f->control_count > 0;
}

// Generates every golden case with ControlNet folder `cn_dir`; the worst PSNR/SSIM vs the golden
// images.
static void generate_cases(const cn_fixtures *f, const char *cn_dir, const char *label, double *worst_psnr,
                           double *worst_ssim) {
    *worst_psnr = INFINITY;
    *worst_ssim = 1;
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    lcm_lora adapter = {f->lora, f->lora_scale};
    if (f->has_lora) {
        options.loras = &adapter;
        options.lora_count = 1;
    }
    options.controlnet = cn_dir;
    lcm_pipeline *p = NULL;
    CHECK_OK(lcm_pipeline_open(f->model, &options, &p));
    for (int i = 0; p && i < f->count; i++) {
        char path[1400], png[1400];
        test_path(path, sizeof path, "%s/%s", f->golden_dir, f->names[i]);
        st_file *golden = NULL;
        CHECK_OK(st_open(path, &golden));
        if (!golden) continue;
        cJSON *info = golden_info(golden);
        lcm_request r;
        golden_request(info, &r);
        const cJSON *negative = cJSON_GetObjectItemCaseSensitive(info, "negative");
        if (cJSON_IsString(negative)) r.negative_prompt = negative->valuestring;
        r.control_scale = (float)golden_number(info, "scale");
        char control_path[1400];
        test_path(control_path, sizeof control_path, "%s/%s", f->golden_dir, golden_string(info, "control_png"));
        lcm_image control = {0}, want = {0};
        CHECK_OK(lcm_image_read(control_path, &control));
        r.control_image = &control;
        lcm_result *result = NULL;
        CHECK_OK(lcm_generate(p, &r, &result));
        test_path(png, sizeof png, "%.*s.png", (int)(strlen(path) - strlen(".safetensors")), path);
        CHECK_OK(lcm_image_read(png, &want));
        if (result && want.rgb) {
            double psnr, ssim;
            CHECK_OK(lcm_image_compare(&result->images[0], &want, &psnr, &ssim));
            fprintf(stderr, "ControlNet %s %s: PSNR %.2f dB, SSIM %.4f vs the float32 golden image\n", label,
                    f->names[i], psnr, ssim);
            if (psnr < *worst_psnr) *worst_psnr = psnr;
            if (ssim < *worst_ssim) *worst_ssim = ssim;
        }
        lcm_image_release(&want);
        lcm_image_release(&control);
        lcm_result_free(result);
        cJSON_Delete(info);
        st_close(golden);
    }
    lcm_pipeline_close(p);
}

static long long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
}

static double weights_ratio(const char *original, const char *quantized) {
    char a[1200], b[1200];
    test_path(a, sizeof a, "%s/diffusion_pytorch_model.safetensors", original);
    test_path(b, sizeof b, "%s/diffusion_pytorch_model.safetensors", quantized);
    return (double)file_size(b) / (double)file_size(a);
}

// quantization.json says what was done.
static void check_scheme(const char *dir, bool weights_only) {
    char path[1200];
    test_path(path, sizeof path, "%s/quantization.json", dir);
    json_config c;
    CHECK_OK(json_config_load(path, NULL, &c));
    if (!c.root) return;
    const char *model = NULL;
    bool flag = !weights_only;
    CHECK(json_config_string(&c, "model", &model) == LCM_OK && !strcmp(model, "ControlNetModel"),
          "%s: model", path);
    CHECK(json_config_bool_or(&c, "weights_only", !weights_only, &flag) == LCM_OK && flag == weights_only,
          "%s: weights_only", path);
    CHECK(json_config_has(&c, "activations") == !weights_only, "%s: activations", path);
    CHECK(json_config_has(&c, "fp32_layers") == !weights_only, "%s: fp32_layers", path);
    json_config_free(&c);
    CHECK(quantize_controlnet_kind(dir) == (weights_only ? QUANTIZED_WEIGHTS_ONLY : QUANTIZED_INT8),
          "%s: quantize_controlnet_kind", dir);
}

// The layers of the default float32 list (and those below them) are stored as F32 without input
// parameters; the other conv/linear weights as I8 with them.
static void check_layers(const char *dir) {
    char path[1200], name[600];
    test_path(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    st_file *file = NULL;
    CHECK_OK(st_open(path, &file));
    int kept = 0, quantized = 0;
    for (size_t i = 0; file && i < st_count(file); i++) {
        const st_tensor *t = st_at(file, i);
        size_t n = strlen(t->name);
        if ((t->ndim != 2 && t->ndim != 4) || n < 8 || strcmp(t->name + n - 7, ".weight")) continue;
        bool keep = false;
        for (const char *const *k = quantize_controlnet_default_keep_fp32; *k; k++) {
            size_t m = strlen(*k);
            keep = keep || (!strncmp(t->name, *k, m) && t->name[m] == '.');
        }
        test_path(name, sizeof name, "%.*s.input_scale", (int)(n - 7), t->name);
        bool has_input = st_find(file, name) != NULL;
        if (keep) {
            kept++;
            CHECK(t->dtype == ST_F32 && !has_input, "%s: '%s' should stay float32", path, t->name);
        } else {
            quantized++;
            CHECK(t->dtype == ST_I8 && has_input, "%s: '%s' should be I8 with '%s'", path, t->name, name);
        }
    }
    fprintf(stderr, "int8 ControlNet: %d conv/linear weights in int8, %d kept in float32\n", quantized, kept);
    CHECK(kept > 0 && quantized > kept, "%s: %d quantized, %d kept", path, quantized, kept);
    st_close(file);
}

static lcm_status quantize(const cn_fixtures *f, const char *calibration, const char *out, bool weights_only,
                           const char *const *keep) {
    lcm_lora adapter = {f->lora, f->lora_scale};
    quantize_model_options o;
    quantize_model_options_init(&o);
    o.controlnet_dir = f->controlnet;
    o.output_dir = out;
    o.quiet = true;
    o.keep_fp32 = keep;
    o.weights_only = weights_only;
    if (!weights_only) {
        o.model_dir = f->model;
        o.calibration_path = calibration;
        o.control_images = f->control_list;
        o.control_image_count = f->control_count;
        o.loras = f->has_lora ? &adapter : NULL;
        o.lora_count = f->has_lora ? 1 : 0;
        o.samples = 3;
    }
    return quantize_model(&o);
}

static void test_int8(const cn_fixtures *f, const char *calibration) {
    double psnr, ssim;
    generate_cases(f, f->controlnet, "float32", &psnr, &ssim); // for scale: our float32 vs the goldens

    char qdir[512];
    test_path(qdir, sizeof qdir, "%s/cn-int8", tmpdir);
    lcm_status st = quantize(f, calibration, qdir, false, NULL);
    CHECK(st == LCM_OK, "quantize %s: %s", f->controlnet, lcm_last_error());
    if (st != LCM_OK) return;
    check_scheme(qdir, false);
    check_layers(qdir);
    double ratio = weights_ratio(f->controlnet, qdir);
    fprintf(stderr, "int8 ControlNet: weights file %.3f of float32\n", ratio);
    CHECK(ratio > 0 && ratio < 0.35, "int8 ControlNet file is %.3f of float32, expected about a quarter", ratio);
    // the reference int8 path, then the int8 kernels (ours by default, exact on every CPU)
    for (int kernels = 0; kernels < 2; kernels++) {
        setenv("LCM_INT8_KERNELS", kernels ? "1" : "0", 1);
        char label[160];
        snprintf(label, sizeof label, "int8 (%s)",
                 quantize_model_int8_kernel(test_backend_for(LCM_PRECISION_FP32)));
        generate_cases(f, qdir, label, &psnr, &ssim);
        unsetenv("LCM_INT8_KERNELS");
        CHECK(psnr < MAX_PSNR, "%s: PSNR %.2f dB: the images did not change at all", label, psnr);
        CHECK(psnr >= MIN_PSNR_INT8 && ssim >= MIN_SSIM_INT8, "%s: worst PSNR %.2f dB (min %.1f), SSIM %.4f (min %.2f)",
              label, psnr, MIN_PSNR_INT8, ssim, MIN_SSIM_INT8);
    }

    char wdir[512];
    test_path(wdir, sizeof wdir, "%s/cn-weights", tmpdir);
    st = quantize(f, NULL, wdir, true, NULL);
    CHECK(st == LCM_OK, "quantize --weights-only %s: %s", f->controlnet, lcm_last_error());
    if (st != LCM_OK) return;
    check_scheme(wdir, true);
    ratio = weights_ratio(f->controlnet, wdir);
    fprintf(stderr, "8-bit-weight ControlNet: weights file %.3f of float32\n", ratio);
    CHECK(ratio > 0 && ratio < 0.35, "8-bit-weight ControlNet file is %.3f of float32", ratio);
    generate_cases(f, wdir, "8-bit weights", &psnr, &ssim);
    CHECK(psnr < MAX_PSNR, "8-bit weights: PSNR %.2f dB: the images did not change at all", psnr);
    CHECK(psnr >= MIN_PSNR_WEIGHTS && ssim >= MIN_SSIM_WEIGHTS,
          "8-bit weights: worst PSNR %.2f dB (min %.1f), SSIM %.4f (min %.2f)", psnr, MIN_PSNR_WEIGHTS, ssim,
          MIN_SSIM_WEIGHTS);
}

// Runs `lcm quantize ARGS` (placeholders expanded) and checks the exit status 2 and the message.
static void expect_cli_error(const cn_fixtures *f, const char *calibration, const char *args, const char *expect) {
    char empty[512], cn8[512], never[512], exists[512], unet[1200];
    test_path(unet, sizeof unet, "%s/unet", f->model);
    test_path(empty, sizeof empty, "%s/empty.txt", tmpdir);
    test_path(cn8, sizeof cn8, "%s/cn-int8", tmpdir);
    test_path(never, sizeof never, "%s/never", tmpdir);
    test_path(exists, sizeof exists, "%s/exists", tmpdir);
    struct {
        const char *key, *value;
    } words[] = {{"MODEL", f->model}, {"CN8", cn8},       {"CN", f->controlnet}, {"CAL", calibration},
                 {"EMPTY", empty},    {"NEVER", never},   {"EXISTS", exists},    {"CONTROL", f->controls[0]},
                 {"TMP", tmpdir},     {"UNET", unet}};
    char cmd[8192], out[4096];
    test_path(cmd, sizeof cmd, "%s", "");
    test_append_quoted(cmd, sizeof cmd, test_lcm_bin());
    strcat(cmd, " quantize --quiet");
    // split on spaces; replace whole-word placeholders
    char copy[1024], *save = NULL;
    test_path(copy, sizeof copy, "%s", args);
    for (char *word = strtok_r(copy, " ", &save); word; word = strtok_r(NULL, " ", &save)) {
        const char *value = word;
        for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
            if (!strcmp(word, words[i].key)) value = words[i].value;
        strcat(cmd, " ");
        test_append_quoted(cmd, sizeof cmd, value);
    }
    strcat(cmd, " 2>&1");
    int rc = test_run(cmd, out, sizeof out);
    fprintf(stderr, "lcm quantize %s -> %d: %s", args, rc, out);
    CHECK(rc == 2 && strstr(out, expect), "lcm quantize %s: status %d, output '%s' (expected '%s')", args, rc,
          out, expect);
}

// lcm generate loads the quantized folder like any ControlNet and says that it runs int8.
static void test_cli_generate(const cn_fixtures *f) {
    char cmd[8192], out[4096], text[1600], cn8[512];
    test_path(cn8, sizeof cn8, "%s/cn-int8", tmpdir);
    test_path(cmd, sizeof cmd, "%s", "");
    test_append_quoted(cmd, sizeof cmd, test_lcm_bin());
    const char *args[] = {"generate", "--model", f->model, "--controlnet", cn8, "--control-image", f->controls[0],
                          "--prompt", "a house", "--steps", "2", "--guidance", "1", "--output", NULL, NULL, NULL};
    char png[600];
    test_path(png, sizeof png, "%s/cli.png", tmpdir);
    args[14] = png;
    if (f->has_lora) {
        test_path(text, sizeof text, "%s:%g", f->lora, f->lora_scale);
        args[15] = "--lora";
        args[16] = text;
    }
    for (size_t i = 0; i < sizeof args / sizeof args[0] && args[i]; i++) {
        strcat(cmd, " ");
        test_append_quoted(cmd, sizeof cmd, args[i]);
    }
    strcat(cmd, " 2>&1");
    int rc = test_run(cmd, out, sizeof out);
    fprintf(stderr, "lcm generate --controlnet (int8) -> %d: %s", rc, out);
    CHECK(rc == 0 && strstr(out, "int8 ControlNet"), "lcm generate with the int8 ControlNet: status %d, '%s'", rc, out);
    CHECK(file_size(png) > 0, "%s not written", png);
}

static void test_errors(const cn_fixtures *f, const char *calibration) {
    char path[600];
    test_path(path, sizeof path, "%s/empty.txt", tmpdir);
    FILE *fp = fopen(path, "w");
    if (fp) fclose(fp);
    test_path(path, sizeof path, "%s/exists", tmpdir);
    CHECK(mkdir(path, 0777) == 0, "mkdir %s", path);
    struct {
        const char *args, *expect;
    } cases[] = {
        // the ControlNet
        {"--controlnet CN --model MODEL --control-image CONTROL --calibration /nonexistent/prompts.txt --output NEVER",
         "/nonexistent/prompts.txt"},
        {"--controlnet CN --model MODEL --control-image CONTROL --calibration EMPTY --output NEVER", "empty"},
        {"--controlnet CN --model MODEL --control-image CONTROL --calibration TMP --output NEVER",
         "cannot read the calibration prompts"},
        {"--controlnet CN8 --model MODEL --control-image CONTROL --calibration CAL --output NEVER", "already quantized"},
        {"--controlnet CN8 --weights-only --output NEVER", "already quantized"},
        {"--controlnet UNET --model MODEL --control-image CONTROL --calibration CAL --output NEVER",
         "not a ControlNet"},
        {"--controlnet MODEL --model MODEL --control-image CONTROL --calibration CAL --output NEVER",
         "not a ControlNet"},
        {"--controlnet TMP --weights-only --output NEVER", "not a ControlNet"},
        {"--controlnet CN --model MODEL --control-image /nonexistent/control.png --calibration CAL --output NEVER",
         "/nonexistent/control.png"},
        {"--controlnet CN --model MODEL --control-image CONTROL --calibration CAL --output EXISTS", "already exists"},
        {"--controlnet CN --weights-only --output EXISTS", "already exists"},
        {"--controlnet CN --model TMP --control-image CONTROL --calibration CAL --output NEVER", "no unet/"},
        {"--controlnet CN --model MODEL --calibration CAL --output NEVER", "--control-image"},
        {"--controlnet CN --model MODEL --control-image CONTROL --calibration CAL --guidance -3 --output NEVER",
         "--guidance"},
        {"--controlnet CN --weights-only --model MODEL --output NEVER", "--weights-only"},
        {"--model MODEL --calibration CAL --control-image CONTROL --output NEVER", "--controlnet"},
        {"--model MODEL --calibration CAL --weights-only --output NEVER", "--controlnet"},
        // the UNet cases test_int8 does not cover
        {"--model MODEL --calibration CAL --output EXISTS", "already exists"},
        {"--model MODEL --calibration TMP --output NEVER", "cannot read the calibration prompts"},
        {"--model CN --calibration CAL --output NEVER", "no unet/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_cli_error(f, calibration, cases[i].args, cases[i].expect);
    // a file that is not an image: the message names it
    expect_cli_error(f, calibration, "--controlnet CN --model MODEL --control-image CAL --calibration CAL --output NEVER",
                     strrchr(calibration, '/') + 1);
    test_path(path, sizeof path, "%s/never", tmpdir);
    CHECK(access(path, F_OK) != 0, "a failed quantize left %s behind", path);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    char calibration[512];
    test_path(calibration, sizeof calibration, "%s/prompts.txt", tmpdir);
    FILE *fp = fopen(calibration, "w");
    CHECK(fp && fputs(prompts_text, fp) >= 0, "write %s", calibration);
    if (fp) fclose(fp);

    cn_fixtures f;
    if (find_fixtures(test_fixtures(), &f)) {
        test_int8(&f, calibration);
        test_cli_generate(&f);
        test_errors(&f, calibration);
    }
    test_free_list(f.names, f.count);

    char cmd[600];
    test_path(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    CHECK(system(cmd) == 0, "%s", cmd);
    return test_finish();
}
