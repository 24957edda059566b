// `lcm preprocess normal` end to end through the built binary: the golden input.png becomes
// detected_map.png (within one level; OpenCV's SIMD rounding), at the golden's resolutions and at
// its extra image_resolution; bad usage and bad weights exit with 2 and say why.
#include <cjson/cJSON.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "io/image.h"
#include "testutil.h"

static char output[1 << 14];
static char temp_dir[64];

// Max |a - b| over two images of the same size; -1 when the sizes differ.
static int max_diff(const uint8_t *a, int aw, int ah, const uint8_t *b, int bw, int bh, int *differ) {
    if (aw != bw || ah != bh) return -1;
    int m = 0;
    *differ = 0;
    for (size_t i = 0; i < (size_t)aw * ah * 3; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        *differ += d != 0;
        if (d > m) m = d;
    }
    return m;
}

static void run_case(const char *weights, const char *input, int detect, int image_res,
                     const uint8_t *want, int want_w, int want_h, const char *what) {
    char cmd[4096], out_path[256];
    test_path(out_path, sizeof out_path, "%s/map_%d_%d.png", temp_dir, detect, image_res);
    test_path(cmd, sizeof cmd,
              "'%s' preprocess normal --weights '%s' --input '%s' --output '%s' "
              "--detect-resolution %d --image-resolution %d 2>&1",
              test_lcm_bin(), weights, input, out_path, detect, image_res);
    int rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 0, "%s: exit %d: %s", what, rc, output);
    uint8_t *got = NULL;
    int w = 0, h = 0;
    if (rc == 0) CHECK_OK(image_read_png(out_path, &got, &w, &h));
    if (got) {
        int differ = 0, m = max_diff(got, w, h, want, want_w, want_h, &differ);
        fprintf(stderr, "%s: %dx%d, max |diff| %d, %d values differ\n", what, w, h, m, differ);
        CHECK(m >= 0 && m <= 1, "%s: map within one level of the golden (max %d, %dx%d vs %dx%d)",
              what, m, w, h, want_w, want_h);
    }
    free(got);
}

static bool write_rgba_png(const char *path, const uint8_t *rgba, int w, int h) {
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    FILE *f = fopen(path, "wb");
    struct spng_ihdr ihdr = {.width = (uint32_t)w, .height = (uint32_t)h, .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_TRUECOLOR_ALPHA};
    bool ok = ctx && f && !spng_set_png_file(ctx, f) && !spng_set_ihdr(ctx, &ihdr) &&
              !spng_encode_image(ctx, rgba, (size_t)w * h * 4, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    spng_ctx_free(ctx);
    if (f) ok = fclose(f) == 0 && ok;
    return ok;
}

static uint8_t *run_to_buffer(const char *weights, const char *input, int res, int *w, int *h) {
    char cmd[4096], out_path[256];
    test_path(out_path, sizeof out_path, "%s/alpha_out.png", temp_dir);
    test_path(cmd, sizeof cmd,
              "'%s' preprocess normal --weights '%s' --input '%s' --output '%s' "
              "--detect-resolution %d --image-resolution %d 2>&1",
              test_lcm_bin(), weights, input, out_path, res, res);
    int rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 0, "run on %s: exit %d: %s", input, rc, output);
    uint8_t *px = NULL;
    if (rc == 0) CHECK_OK(image_read_png(out_path, &px, w, h));
    return px;
}

// An RGBA input must give exactly the map of the same image composited over white beforehand
// (controlnet_aux's HWC3), and not the map of its colours with alpha dropped.
static void check_alpha(const char *weights, const uint8_t *rgb, int w, int h, int res) {
    size_t n = (size_t)w * h;
    uint8_t *rgba = malloc(n * 4), *over_white = malloc(n * 3);
    for (size_t i = 0; i < n; i++) {
        uint8_t a = (uint8_t)(i * 7 % 256);
        for (int c = 0; c < 3; c++) {
            rgba[i * 4 + c] = rgb[i * 3 + c];
            float alpha = (float)a / 255.0f;
            over_white[i * 3 + c] = (uint8_t)((float)rgb[i * 3 + c] * alpha + 255.0f * (1.0f - alpha));
        }
        rgba[i * 4 + 3] = a;
    }
    char rgba_path[256], white_path[256], plain_path[256];
    test_path(rgba_path, sizeof rgba_path, "%s/rgba.png", temp_dir);
    test_path(white_path, sizeof white_path, "%s/over_white.png", temp_dir);
    test_path(plain_path, sizeof plain_path, "%s/plain.png", temp_dir);
    CHECK(write_rgba_png(rgba_path, rgba, w, h), "wrote an RGBA PNG");
    CHECK_OK(image_write_png(white_path, over_white, w, h, NULL, NULL, 0));
    CHECK_OK(image_write_png(plain_path, rgb, w, h, NULL, NULL, 0));
    int w1, h1, w2, h2, w3, h3;
    uint8_t *a = run_to_buffer(weights, rgba_path, res, &w1, &h1);
    uint8_t *b = run_to_buffer(weights, white_path, res, &w2, &h2);
    uint8_t *c = run_to_buffer(weights, plain_path, res, &w3, &h3);
    if (a && b && c) {
        size_t bytes = (size_t)w1 * h1 * 3;
        CHECK(w1 == w2 && h1 == h2 && !memcmp(a, b, bytes),
              "RGBA input gives the map of the image composited over white");
        CHECK(memcmp(a, c, bytes) != 0, "RGBA input does not give the map of its bare colours");
    }
    free(a), free(b), free(c), free(rgba), free(over_white);
}

static void expect_usage_error(const char *args, const char *needle) {
    char cmd[4096];
    test_path(cmd, sizeof cmd, "'%s' preprocess %s 2>&1", test_lcm_bin(), args);
    int rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 2 && strstr(output, needle), "'lcm preprocess %s' exits 2 mentioning '%s' (got %d: %s)",
          args, needle, rc, output);
}

int main(void) {
    char dir[1024], path[1024], weights[1024], input[1024];
    test_path(dir, sizeof dir, "%s/normalbae", test_fixtures());
    test_path(path, sizeof path, "%s/golden/normalbae.safetensors", dir);
    test_path(weights, sizeof weights, "%s/scannet_tiny.pt", dir);
    test_path(input, sizeof input, "%s/golden/input.png", dir);
    snprintf(temp_dir, sizeof temp_dir, "/tmp/lcm_test_preprocess_XXXXXX");
    if (!mkdtemp(temp_dir)) return 2;
    st_file *golden = NULL;
    CHECK_OK(st_open(path, &golden));
    if (golden) {
        cJSON *info = golden_info(golden);
        int detect = (int)golden_number(info, "detect_resolution");
        int image_res = (int)golden_number(info, "image_resolution");
        // The PNG the CLI reads must be the golden's input array.
        uint8_t *png = NULL;
        int w, h;
        CHECK_OK(image_read_png(input, &png, &w, &h));
        const st_tensor *rgb = st_find(golden, "input.rgb_u8");
        CHECK(png && rgb && rgb->nbytes == (size_t)w * h * 3 && !memcmp(png, rgb->data, rgb->nbytes),
              "input.png decodes to input.rgb_u8");
        if (png) check_alpha(weights, png, w, h, detect);
        free(png);
        uint8_t *map = NULL;
        test_path(path, sizeof path, "%s/golden/detected_map.png", dir);
        CHECK_OK(image_read_png(path, &map, &w, &h));
        if (map) run_case(weights, input, detect, image_res, map, w, h, "detected_map.png");
        free(map);
        const cJSON *extra = cJSON_GetObjectItem(info, "extra_image_resolution");
        char name[128];
        if (cJSON_IsNumber(extra)) {
            snprintf(name, sizeof name, "extra.image_resolution_%d.detected_map_u8", extra->valueint);
            const st_tensor *t = st_find(golden, name);
            CHECK(t && t->ndim == 3, "golden %s", name);
            if (t)
                run_case(weights, input, detect, extra->valueint, t->data, (int)t->shape[1],
                         (int)t->shape[0], name);
        }
        cJSON_Delete(info);
        st_close(golden);
    }
    expect_usage_error("edges --weights a --input b --output c", "normal");
    expect_usage_error("normal --input b --output c", "--weights");
    char args[4096];
    // Weights that are not a checkpoint: a text file named .pt.
    char fake[256];
    test_path(fake, sizeof fake, "%s/fake.pt", temp_dir);
    FILE *f = fopen(fake, "w");
    if (f) {
        fputs("not a checkpoint\n", f);
        fclose(f);
    }
    test_path(args, sizeof args, "normal --weights '%s' --input '%s' --output '%s/x.png'", fake,
              input, temp_dir);
    expect_usage_error(args, "fake.pt");
    test_path(args, sizeof args, "normal --weights '%s' --input '%s/missing.png' --output '%s/x.png'",
              weights, temp_dir, temp_dir);
    expect_usage_error(args, "missing.png");
    char cleanup[256];
    test_path(cleanup, sizeof cleanup, "rm -rf '%s'", temp_dir);
    test_run(cleanup, output, sizeof output);
    return test_finish();
}
