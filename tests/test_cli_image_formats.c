// JPEG and WebP images through the `lcm` binary, end to end: wherever the CLI takes an image
// (generate --init-image, generate --control-image, preprocess normal --input), the same pixels
// given as PNG, as lossless WebP and as JPEG must give the same output image bit for bit. For JPEG
// "the same pixels" are the JPEG's decoded pixels, written to a PNG here (JPEG is lossy).
// Models and images are found by listing the fixture set (LCM, SD + ControlNet, NormalBae folders).
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <webp/encode.h>

#include "golden.h"
#include "io/image.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-cli-formats-XXXXXX";

// Writes `png`'s pixels as <stem>.webp (lossless), <stem>.jpg (quality 90) and <stem>-jpeg.png
// (the JPEG's decoded pixels).
static bool make_variants(const char *png, const char *stem) {
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    CHECK_OK(image_read_png(png, &rgb, &w, &h));
    if (!rgb) return false;
    char path[1200];
    uint8_t *webp = NULL;
    size_t size = WebPEncodeLosslessRGB(rgb, w, h, w * 3, &webp);
    CHECK(size > 0, "WebP encode of %s", png);
    test_path(path, sizeof path, "%s/%s.webp", tmpdir, stem);
    test_write_file(path, webp, size);
    WebPFree(webp);

    unsigned long jpeg_size = 0;
    unsigned char *jpeg = test_encode_jpeg(rgb, w, h, 3, 90, false, &jpeg_size);
    test_path(path, sizeof path, "%s/%s.jpg", tmpdir, stem);
    test_write_file(path, jpeg, jpeg_size);
    free(jpeg);
    free(rgb);

    lcm_image decoded = {0};
    CHECK_OK(lcm_image_read(path, &decoded));
    test_path(path, sizeof path, "%s/%s-jpeg.png", tmpdir, stem);
    if (decoded.rgb) CHECK_OK(image_write_png(path, decoded.rgb, decoded.width, decoded.height, NULL, NULL, 0));
    lcm_image_release(&decoded);
    return true;
}

// Runs `lcm <args>` where "%s" in `args_fmt` is the input image, writing `out`; true on exit 0.
static bool run(const char *args_fmt, const char *input, const char *out) {
    char args[8192], cmd[16384];
    snprintf(args, sizeof args, args_fmt, input, out);
    test_path(cmd, sizeof cmd, "'%s' %s 2>&1", test_lcm_bin(), args);
    char output[4096] = "";
    int rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 0, "exit %d: %s\n%s", rc, cmd, output);
    return rc == 0;
}

static bool same_pixels(const char *a, const char *b) {
    uint8_t *pa = NULL, *pb = NULL;
    int wa = 0, ha = 0, wb = 0, hb = 0;
    bool same = image_read_png(a, &pa, &wa, &ha) == LCM_OK && image_read_png(b, &pb, &wb, &hb) == LCM_OK &&
                wa == wb && ha == hb && !memcmp(pa, pb, (size_t)wa * ha * 3);
    free(pa);
    free(pb);
    return same;
}

// The command run on <stem>.png, <stem>.webp must write the same image; on <stem>.jpg the same as
// on <stem>-jpeg.png.
static void check_command(const char *what, const char *args_fmt, const char *stem) {
    char in[4][1200], out[4][1200];
    const char *suffix[4] = {".png", ".webp", ".jpg", "-jpeg.png"};
    bool ok[4];
    for (int i = 0; i < 4; i++) {
        test_path(in[i], sizeof in[i], "%s/%s%s", tmpdir, stem, suffix[i]);
        test_path(out[i], sizeof out[i], "%s/%s-out%d.png", tmpdir, stem, i);
        ok[i] = run(args_fmt, in[i], out[i]);
    }
    if (ok[0] && ok[1]) CHECK(same_pixels(out[0], out[1]), "%s: WebP input gives another image than PNG", what);
    if (ok[2] && ok[3]) CHECK(same_pixels(out[2], out[3]), "%s: JPEG input gives another image than its pixels as PNG", what);
    fprintf(stderr, "%s: PNG, WebP and JPEG inputs checked\n", what);
}

// Copies the first PNG named PREFIX*SUFFIX in `dir` to tmpdir/<stem>.png; false when none.
static bool pick_png(const char *dir, const char *prefix, const char *suffix, const char *stem) {
    char **names = NULL;
    if (access(dir, R_OK) != 0) return false;
    int n = test_list_files(dir, prefix, suffix, &names);
    bool found = n > 0;
    if (found) {
        char src[1400], dst[1200];
        test_path(src, sizeof src, "%s/%s", dir, names[0]);
        test_path(dst, sizeof dst, "%s/%s.png", tmpdir, stem);
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        CHECK_OK(image_read_png(src, &rgb, &w, &h));
        if (rgb) CHECK_OK(image_write_png(dst, rgb, w, h, NULL, NULL, 0));
        free(rgb);
        found = rgb != NULL && make_variants(dst, stem);
    }
    test_free_list(names, n);
    return found;
}

int main(void) {
    const char *root = test_fixtures();
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    char lcm_dir[1024] = "", sd_dir[1024] = "", cn_dir[1024] = "";
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], cls[128];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (!strcmp(cls, "LatentConsistencyModelPipeline") && !*lcm_dir) snprintf(lcm_dir, sizeof lcm_dir, "%s", dir);
        if (!strcmp(cls, "StableDiffusionPipeline") && !*sd_dir) snprintf(sd_dir, sizeof sd_dir, "%s", dir);
        if (!strcmp(cls, "ControlNetModel") && !*cn_dir) snprintf(cn_dir, sizeof cn_dir, "%s", dir);
    }
    if (d) closedir(d);
    CHECK(*lcm_dir, "no LCM model folder in %s", root);
    int checked = 0;

    // img2img: the init image (its size is the output size).
    char golden[1200], fmt[4096];
    if (*lcm_dir) {
        test_path(golden, sizeof golden, "%s/golden", lcm_dir);
        if (pick_png(golden, "", ".png", "init")) {
            test_path(fmt, sizeof fmt, "generate --quiet --model '%s' --init-image '%%s' --strength 0.6 --steps 2 "
                      "--seed 7 --output '%%s' -- 'a photo of a cat'", lcm_dir);
            check_command("generate --init-image", fmt, "init");
            checked++;
        }
    }
    // ControlNet: the control image, with and without the canny preprocessor.
    if (*sd_dir && *cn_dir && golden_controlnet_fits(cn_dir, sd_dir)) {
        test_path(golden, sizeof golden, "%s/golden", cn_dir);
        if (pick_png(golden, "control_", ".png", "control")) {
            test_path(fmt, sizeof fmt, "generate --quiet --model '%s' --controlnet '%s' --control-image '%%s' "
                      "--steps 1 --guidance 1 --seed 3 --width 64 --height 64 --output '%%s' -- 'a room'",
                      sd_dir, cn_dir);
            check_command("generate --control-image", fmt, "control");
            test_path(fmt, sizeof fmt, "generate --quiet --model '%s' --controlnet '%s' --control-image '%%s' "
                      "--control-preprocess canny --steps 1 --guidance 1 --seed 3 --width 64 --height 64 "
                      "--output '%%s' -- 'a room'", sd_dir, cn_dir);
            check_command("generate --control-image --control-preprocess canny", fmt, "control");
            checked++;
        }
    }
    // lcm preprocess normal: the photo.
    char weights[1200], normal_golden[1200];
    test_path(weights, sizeof weights, "%s/normalbae/scannet_tiny.pt", root);
    test_path(normal_golden, sizeof normal_golden, "%s/normalbae/golden", root);
    if (access(weights, R_OK) == 0 && pick_png(normal_golden, "input", ".png", "photo")) {
        test_path(fmt, sizeof fmt, "preprocess normal --weights '%s' --input '%%s' --output '%%s' "
                  "--detect-resolution 64 --image-resolution 64", weights);
        check_command("preprocess normal --input", fmt, "photo");
        checked++;
    }
    CHECK(checked > 0, "no command could be checked with the fixtures in %s", root);

    // An image the CLI cannot read: the message names the file and the formats accepted.
    if (*lcm_dir) {
        char gif[1200], cmd[8192], output[4096] = "";
        test_path(gif, sizeof gif, "%s/cat.webp", tmpdir); // a GIF, whatever its name says
        test_write_file(gif, "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14);
        test_path(cmd, sizeof cmd, "'%s' generate --quiet --model '%s' --init-image '%s' --output '%s/x.png' -- cat 2>&1",
                  test_lcm_bin(), lcm_dir, gif, tmpdir);
        int rc = test_run(cmd, output, sizeof output);
        CHECK(rc != 0 && strstr(output, gif) && strstr(output, "PNG, JPEG or WebP") && strstr(output, "GIF"),
              "a GIF named .webp: exit %d: %s", rc, output);
        fprintf(stderr, "GIF as init image -> exit %d: %s", rc, output);
    }

    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
