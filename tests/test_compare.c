// Image agreement metrics (lcm_image_compare) and `lcm compare` end to end on the tiny LCM model.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/image.h"
#include "lcm.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-compare-XXXXXX";

static lcm_image make_image(int w, int h, int value) {
    lcm_image img = {w, h, malloc((size_t)w * h * 3)};
    memset(img.rgb, value, (size_t)w * h * 3);
    return img;
}

// Deterministic pseudo-random texture, so structure exists for SSIM to compare.
static void fill_texture(lcm_image *img, unsigned seed) {
    for (size_t i = 0; i < (size_t)img->width * img->height * 3; i++) {
        seed = seed * 1664525u + 1013904223u;
        img->rgb[i] = (uint8_t)(seed >> 24);
    }
}

static void test_metrics(void) {
    lcm_image a = make_image(40, 30, 0), b = make_image(40, 30, 0);
    fill_texture(&a, 1);
    memcpy(b.rgb, a.rgb, 40 * 30 * 3);
    double psnr, ssim;
    CHECK_OK(lcm_image_compare(&a, &b, &psnr, &ssim));
    CHECK(isinf(psnr) && psnr > 0 && fabs(ssim - 1.0) < 1e-12, "identical: psnr %g ssim %g", psnr, ssim);

    // Every value off by exactly 1: MSE 1, so PSNR = 20 log10(255).
    for (size_t i = 0; i < 40 * 30 * 3; i++) b.rgb[i] = a.rgb[i] < 255 ? a.rgb[i] + 1 : a.rgb[i] - 1;
    CHECK_OK(lcm_image_compare(&a, &b, &psnr, &ssim));
    CHECK(fabs(psnr - 20 * log10(255.0)) < 1e-9, "off by one: psnr %.6f", psnr);
    CHECK(ssim > 0.99 && ssim < 1.0, "off by one: ssim %.6f", ssim);

    // More noise, lower SSIM and PSNR; and both are symmetric.
    double psnr_small = psnr, ssim_small = ssim, psnr_back, ssim_back;
    unsigned seed = 7;
    for (size_t i = 0; i < 40 * 30 * 3; i++) {
        seed = seed * 1664525u + 1013904223u;
        int v = a.rgb[i] + (int)(seed >> 28) * 4 - 30;
        b.rgb[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    CHECK_OK(lcm_image_compare(&a, &b, &psnr, &ssim));
    CHECK_OK(lcm_image_compare(&b, &a, &psnr_back, &ssim_back));
    CHECK(psnr < psnr_small && ssim < ssim_small, "noise: psnr %g ssim %g", psnr, ssim);
    CHECK(psnr == psnr_back && fabs(ssim - ssim_back) < 1e-12, "symmetry %g/%g %g/%g", psnr,
          psnr_back, ssim, ssim_back);

    // Flat images: only the luminance term is left, (2 ma mb + C1) / (ma^2 + mb^2 + C1).
    lcm_image flat_a = make_image(16, 16, 100), flat_b = make_image(16, 16, 120);
    CHECK_OK(lcm_image_compare(&flat_a, &flat_b, &psnr, &ssim));
    double c1 = (0.01 * 255) * (0.01 * 255);
    double want = (2 * 100.0 * 120 + c1) / (100.0 * 100 + 120.0 * 120 + c1);
    CHECK(fabs(ssim - want) < 1e-9, "flat ssim %.9f, expected %.9f", ssim, want);
    CHECK(fabs(psnr - 20 * log10(255.0 / 20)) < 1e-9, "flat psnr %.6f", psnr);

    // Tiny images use a smaller window instead of failing.
    lcm_image tiny_a = make_image(3, 5, 10), tiny_b = make_image(3, 5, 10);
    CHECK_OK(lcm_image_compare(&tiny_a, &tiny_b, &psnr, &ssim));
    CHECK(fabs(ssim - 1.0) < 1e-12, "3x5 ssim %g", ssim);

    CHECK(lcm_image_compare(&a, &flat_a, &psnr, &ssim) == LCM_ERR_INVALID_ARGUMENT &&
              strstr(lcm_last_error(), "40x30"), "size mismatch: %s", lcm_last_error());
    lcm_image *images[] = {&a, &b, &flat_a, &flat_b, &tiny_a, &tiny_b};
    for (int i = 0; i < 6; i++) free(images[i]->rgb);
}

static bool same_pixels(const char *path_a, const char *path_b) {
    uint8_t *a = NULL, *b = NULL;
    int aw, ah, bw, bh;
    bool same = image_read_png(path_a, &a, &aw, &ah) == LCM_OK &&
                image_read_png(path_b, &b, &bw, &bh) == LCM_OK && aw == bw && ah == bh &&
                !memcmp(a, b, (size_t)aw * ah * 3);
    free(a);
    free(b);
    return same;
}

static void test_cli(void) {
    char model[1024], prompts[1200], cmd[16384], out[8192], report[1200], path[1300], want[1300];
    test_path(model, sizeof model, "%s/tiny-lcm", test_fixtures());
    test_path(prompts, sizeof prompts, "%s/prompts.txt", tmpdir);
    FILE *f = fopen(prompts, "w");
    fputs("# a comment\na lighthouse in a storm\n\nthree green apples\n", f);
    fclose(f);
    test_path(report, sizeof report, "%s/report", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' compare --model '%s' --model '%s' --prompts '%s' --seeds 3,11 "
             "--steps 2 --warmup 0 --output '%s' 2>&1", test_lcm_bin(), model, model, prompts, report);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "lcm compare exit %d:\n%s", rc, out);
    CHECK(strstr(out, "PSNR") && strstr(out, "inf / inf") && strstr(out, "1.0000 / 1.0000"),
          "same model twice must agree exactly:\n%s", out);
    CHECK(strstr(out, "UNet per step") && strstr(out, "peak RSS") && strstr(out, "size on disk"),
          "table rows missing:\n%s", out);

    // Each side's image is what `lcm generate` makes for that prompt and seed: case 3 is the second
    // prompt with the second seed.
    test_path(want, sizeof want, "%s/want.png", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt 'three green apples' --seed 11 "
             "--steps 2 --quiet --output '%s' 2>&1", test_lcm_bin(), model, want);
    CHECK(test_run(cmd, out, sizeof out) == 0, "lcm generate: %s", out);
    for (int side = 0; side < 2; side++) {
        test_path(path, sizeof path, "%s/%s/003.png", report, side ? "b" : "a");
        CHECK(same_pixels(path, want), "%s differs from lcm generate's image", path);
    }
    uint8_t *grid = NULL, *one = NULL;
    int gw = 0, gh = 0, w = 0, h = 0;
    test_path(path, sizeof path, "%s/grid.png", report);
    CHECK_OK(image_read_png(path, &grid, &gw, &gh));
    CHECK_OK(image_read_png(want, &one, &w, &h));
    CHECK(gw == 2 * w + 8 && gh == 4 * h + 3 * 8, "grid %dx%d for 4 cases of %dx%d", gw, gh, w, h);
    free(grid);
    free(one);
    test_path(path, sizeof path, "%s/index.html", report);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size > 500, "index.html missing or empty");

    // Usage errors exit 2 with a message.
    const char *bad[] = {
        "compare --model M --output R",                             // one model only
        "compare --model M --model M --seeds 1,x --output R",       // bad seed list
        "compare --model M --model M --prompts /nonexistent/p.txt --output R",
        "compare --model M --model M --precision-b fp8 --output R",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[1024];
        snprintf(args, sizeof args, "%s", bad[i]);
        char expanded[8192] = "";
        for (const char *c = args; *c; c++) {
            size_t len = strlen(expanded);
            if (*c == 'M' && (c[1] == ' ' || !c[1])) snprintf(expanded + len, sizeof expanded - len, "'%s'", model);
            else if (*c == 'R' && !c[1]) snprintf(expanded + len, sizeof expanded - len, "'%s/bad'", tmpdir);
            else expanded[len] = *c, expanded[len + 1] = '\0';
        }
        snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", test_lcm_bin(), expanded);
        rc = test_run(cmd, out, sizeof out);
        CHECK(rc == 2 && strstr(out, "lcm compare"), "'%s' -> exit %d: %s", bad[i], rc, out);
    }
    test_path(path, sizeof path, "%s/bad/index.html", tmpdir);
    CHECK(access(path, F_OK) != 0, "a failed compare left %s", path);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    test_metrics();
    test_cli();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
