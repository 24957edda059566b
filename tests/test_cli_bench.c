// `lcm bench` end to end on the tiny fixture model (one run, small size, small peak matmul): the
// JSON output has every stage with consistent numbers (positive FLOPs, times and CPU times, min <= median <=
// max, GFLOP/s = FLOPs / median, end-to-end FLOPs = text + steps x UNet + VAE), a measured peak and
// a peak RSS; the table output names every stage. Speed itself is not checked. Bad options exit 2
// with a message naming them; bf16 either runs or is refused cleanly as unsupported. SD1.5 with a
// LoRA and a ControlNet under classifier-free guidance: the UNet step counts the ControlNet and a
// batch of 2 (more than twice the plain UNet step), and end to end encodes two prompts.
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "testutil.h"

#define OUTPUT_CAP (1 << 16)

static char output[OUTPUT_CAP];

static const char *const stages[] = {"text_encoding", "unet_step", "vae_decode", "end_to_end"};
enum { STAGES = sizeof stages / sizeof stages[0] };

static int bench(const char *model, const char *extra, bool merge_stderr) {
    char cmd[8192];
    test_path(cmd, sizeof cmd, "'%s' bench --model '%s' --size 64x64 --steps 2 --runs 1 --peak-size 128 %s %s",
              test_lcm_bin(), model, extra, merge_stderr ? "2>&1" : "2>/dev/null");
    return test_run(cmd, output, sizeof output);
}

static double number(const cJSON *object, const char *name) {
    const cJSON *item = cJSON_GetObjectItem(object, name);
    return cJSON_IsNumber(item) ? item->valuedouble : NAN;
}

// The report's stages; returns the UNet step's GFLOP (NAN when missing). `texts`: prompts encoded
// per generation (2 under classifier-free guidance).
static double check_json_report(const char *what, int texts) {
    cJSON *root = cJSON_Parse(output);
    CHECK(root != NULL, "%s: output is JSON: %.200s", what, output);
    if (!root) return NAN;
    CHECK(number(root, "peak_gflops") > 0, "%s: peak_gflops %g > 0", what, number(root, "peak_gflops"));
    CHECK(number(root, "peak_rss_bytes") > 1e6, "%s: peak_rss_bytes %g", what, number(root, "peak_rss_bytes"));
    CHECK(number(root, "load_s") > 0, "%s: load_s %g > 0", what, number(root, "load_s"));
    CHECK(number(root, "width") == 64 && number(root, "height") == 64 && number(root, "steps") == 2,
          "%s: size and steps echoed", what);
    const cJSON *list = cJSON_GetObjectItem(root, "stages");
    double gflop[STAGES];
    for (int i = 0; i < STAGES; i++) {
        const cJSON *s = cJSON_GetObjectItem(list, stages[i]);
        CHECK(s != NULL, "%s: stage %s present", what, stages[i]);
        gflop[i] = number(s, "gflop");
        double median = number(s, "median_s"), lo = number(s, "min_s"), hi = number(s, "max_s");
        double rate = number(s, "gflops"), ratio = number(s, "ratio_to_peak");
        fprintf(stderr, "%s: %-14s %.4f GFLOP, median %.4f s, %.3f GFLOP/s, %.4f of peak\n", what,
                stages[i], gflop[i], median, rate, ratio);
        CHECK(gflop[i] > 0 && median > 0 && lo > 0 && lo <= median && median <= hi,
              "%s: %s: gflop %g, min %g <= median %g <= max %g", what, stages[i], gflop[i], lo, median, hi);
        CHECK(number(s, "median_cpu_s") > 0, "%s: %s: median_cpu_s %g > 0", what, stages[i], number(s, "median_cpu_s"));
        CHECK(fabs(rate - gflop[i] / median) <= 1e-3 * rate + 1e-6, "%s: %s: GFLOP/s %g = %g / %g", what,
              stages[i], rate, gflop[i], median);
        CHECK(fabs(ratio - rate / number(root, "peak_gflops")) <= 1e-3 * ratio + 1e-6,
              "%s: %s: ratio to peak %g", what, stages[i], ratio);
    }
    // The UNet does most of the denoising work at every size; the text encoder's is fixed.
    double sum = texts * gflop[0] + 2 * gflop[1] + gflop[2];
    CHECK(fabs(gflop[3] - sum) <= 1e-3 * sum, "%s: end to end %g GFLOP = %d text + 2 unet + vae = %g", what,
          gflop[3], texts, sum);
    cJSON_Delete(root);
    return gflop[1];
}

static bool json_flag(const char *name) {
    cJSON *root = cJSON_Parse(output);
    bool value = root && cJSON_IsTrue(cJSON_GetObjectItem(root, name));
    cJSON_Delete(root);
    return value;
}

// SD1.5 + LCM-LoRA + ControlNet, the peers benchmark's --controlnet variant (bench/peers).
static void check_controlnet(void) {
    char sd15[4096], controlnet[4096], extra[16384];
    test_path(sd15, sizeof sd15, "%s/tiny-sd15", test_fixtures());
    test_path(controlnet, sizeof controlnet, "%s/tiny-controlnet", test_fixtures());
    CHECK(bench(sd15, "--json --guidance 1", false) == 0, "plain SD1.5 without guidance exits 0");
    double plain = check_json_report("sd15, guidance 1", 1);
    CHECK(!json_flag("classifier_free_guidance") && !json_flag("controlnet"), "plain run: no CFG, no ControlNet");
    test_path(extra, sizeof extra,
              "--json --guidance 8.5 --lora '%s/tiny-sd15/loras/lcm-lora-kohya/pytorch_lora_weights.safetensors' "
              "--controlnet '%s' --control-image '%s/golden/control_64x64.png'",
              test_fixtures(), controlnet, controlnet);
    CHECK(bench(sd15, extra, false) == 0, "lcm bench --lora --controlnet exits 0");
    double steered = check_json_report("sd15 + LoRA + ControlNet, guidance 8.5", 2);
    CHECK(json_flag("classifier_free_guidance") && json_flag("controlnet"), "CFG and ControlNet reported: %.300s",
          output);
    CHECK(steered > 2 * plain, "ControlNet + UNet on a batch of 2: %g GFLOP > 2 x %g", steered, plain);
    test_path(extra, sizeof extra, "--controlnet '%s'", controlnet);
    CHECK(bench(sd15, extra, true) == 2 && strstr(output, "--control-image"), "--controlnet alone: %s", output);
    test_path(extra, sizeof extra, "--controlnet '%s' --control-image /nonexistent.png", controlnet);
    CHECK(bench(sd15, extra, true) == 2 && strstr(output, "/nonexistent.png"), "missing control image: %s", output);
}

int main(void) {
    char model[4096];
    test_path(model, sizeof model, "%s/tiny-lcm", test_fixtures());

    CHECK(bench(model, "--json", false) == 0, "lcm bench --json exits 0");
    check_json_report("fp32", 1);

    CHECK(bench(model, "--attention-kernel gemm --threads 1", false) == 0, "table output exits 0: %s", output);
    for (int i = 0; i < STAGES; i++) CHECK(strstr(output, stages[i]) != NULL, "table names %s", stages[i]);
    CHECK(strstr(output, "peak RSS") && strstr(output, "GFLOP/s") && strstr(output, "1 threads"),
          "table has the peak, rates and thread count: %s", output);

    // bf16 is either implemented (then the same report) or refused as unsupported, cleanly.
    int rc = bench(model, "--precision bf16 --json", true);
    if (rc == 0) {
        check_json_report("bf16", 1);
    } else {
        fprintf(stderr, "bf16: %s", output);
        CHECK(rc == 2 && strstr(output, "precision"), "bf16 refused with exit 2 naming precision: %s", output);
    }

    // --taesd: the three decoders side by side, each with its own FLOPs.
    char taesd[4096];
    test_path(taesd, sizeof taesd, "%s/tiny-taesd", test_fixtures());
    char extra[4200];
    test_path(extra, sizeof extra, "--json --taesd '%s'", taesd);
    CHECK(bench(model, extra, false) == 0, "lcm bench --taesd exits 0");
    check_json_report("fp32 with --taesd", 1);
    cJSON *root = cJSON_Parse(output);
    const cJSON *list = root ? cJSON_GetObjectItem(root, "stages") : NULL;
    const cJSON *vae = cJSON_GetObjectItem(list, "vae_decode");
    const cJSON *tiled = cJSON_GetObjectItem(list, "vae_decode_tiled");
    const cJSON *tiny = cJSON_GetObjectItem(list, "taesd_decode");
    CHECK(tiled && tiny, "--taesd adds vae_decode_tiled and taesd_decode: %.300s", output);
    if (vae && tiled && tiny) {
        fprintf(stderr, "decoders: VAE %.4f GFLOP %.4f s, tiled %.4f GFLOP %.4f s, TAESD %.4f GFLOP %.4f s\n",
                number(vae, "gflop"), number(vae, "median_s"), number(tiled, "gflop"),
                number(tiled, "median_s"), number(tiny, "gflop"), number(tiny, "median_s"));
        // overlapping tiles decode more pixels than the image has
        CHECK(number(tiled, "gflop") > number(vae, "gflop"), "tiled decode counts its overlaps");
        CHECK(number(tiny, "gflop") > 0 && number(tiny, "median_s") > 0, "TAESD row measured");
    }
    cJSON_Delete(root);
    CHECK(bench(model, "--taesd /nonexistent-taesd", true) == 2 && strstr(output, "/nonexistent-taesd"),
          "missing TAESD folder named: %s", output);

    check_controlnet();

    CHECK(bench(model, "--precision fp8", true) == 2 && strstr(output, "fp8"), "--precision fp8: %s", output);
    CHECK(bench(model, "--size 64", true) == 2 && strstr(output, "--size"), "--size 64: %s", output);
    CHECK(bench(model, "--runs 0", true) == 2 && strstr(output, "--runs"), "--runs 0: %s", output);
    CHECK(bench(model, "--attention-kernel magic", true) == 2 && strstr(output, "magic"), "kernel: %s", output);
    CHECK(bench("/nonexistent-model", "", true) == 2 && strstr(output, "/nonexistent-model"),
          "missing model folder named: %s", output);
    return test_finish();
}
