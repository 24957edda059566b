// `lcm generate` with the decode options: --taesd (regenerating each TAESD whole-pipeline golden
// and comparing the PNG), --preview-dir (one PNG per step, the last = the TAESD final image),
// --vae-tiling and --memory-budget (a forced-tiled run works; bad values exit 2).
//
// Cases: every folder F under $LCM_FIXTURES with an AutoencoderTiny config.json and
// F/golden/pipeline_*.safetensors (+ .png), run on the first LatentConsistencyModelPipeline folder.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "io/image.h"
#include "io/json_config.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-cli-decode-XXXXXX";

static bool is_class(const char *dir, const char *file, const char *cls) {
    char path[PATH_MAX * 2];
    test_path(path, sizeof path, "%s/%s", dir, file);
    json_config c;
    if (access(path, F_OK) != 0 || json_config_load(path, NULL, &c) != LCM_OK) return false;
    const char *name = NULL;
    bool yes = json_config_string_or(&c, "_class_name", "", &name) == LCM_OK && !strcmp(name, cls);
    json_config_free(&c);
    return yes;
}

// uint8 images within 1 per value, at most 0.5% differing; `exact` demands equality.
static void compare_png(const char *got_path, const char *want_path, bool exact) {
    uint8_t *got = NULL, *want = NULL;
    int gw = 0, gh = 0, ww = 0, wh = 0;
    CHECK_OK(image_read_png(got_path, &got, &gw, &gh));
    CHECK_OK(image_read_png(want_path, &want, &ww, &wh));
    CHECK(got && want && gw == ww && gh == wh, "%s: size %dx%d, expected %dx%d", got_path, gw, gh, ww, wh);
    if (got && want && gw == ww && gh == wh) {
        size_t n = (size_t)gw * gh * 3, differ = 0, worse = 0;
        for (size_t i = 0; i < n; i++) {
            int d = abs((int)got[i] - (int)want[i]);
            differ += d != 0;
            worse += d > 1;
        }
        fprintf(stderr, "  %s vs %s: %zu of %zu values differ, %zu by more than 1\n", got_path,
                want_path, differ, n, worse);
        if (exact) CHECK(differ == 0, "%s must equal %s", got_path, want_path);
        else CHECK(worse == 0 && differ * 200 <= n, "%s: %zu differ, %zu by more than 1", got_path, differ, worse);
    }
    free(got);
    free(want);
}

static int run(const char *args, char *out, size_t cap) {
    char cmd[8192];
    test_path(cmd, sizeof cmd, "'%s' generate %s 2>&1", test_lcm_bin(), args);
    int rc = test_run(cmd, out, cap);
    fprintf(stderr, "$ lcm generate %s -> %d\n", args, rc);
    return rc;
}

static int taesd_cases(const char *root, const char *pipeline) {
    DIR *d = opendir(root);
    struct dirent *e;
    int cases = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[PATH_MAX], golden_dir[PATH_MAX * 2];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        if (!is_class(dir, "config.json", "AutoencoderTiny")) continue;
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        char **names = NULL;
        int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
        for (int i = 0; i < n; i++) {
            char path[PATH_MAX * 3], png[PATH_MAX * 3], out_png[PATH_MAX], previews[PATH_MAX];
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            test_path(png, sizeof png, "%.*s.png", (int)(strlen(path) - strlen(".safetensors")), path);
            st_file *g = NULL;
            CHECK_OK(st_open(path, &g));
            if (!g) continue;
            cJSON *info = golden_info(g);
            int steps = (int)golden_number(info, "steps");
            test_path(out_png, sizeof out_png, "%s/taesd-%d.png", tmpdir, i);
            test_path(previews, sizeof previews, "%s/previews-%d", tmpdir, i);
            char args[8192], out[4096];
            test_path(args, sizeof args,
                     "--model '%s' --taesd '%s' --prompt '%s' --seed %.0f --steps %d --guidance %g "
                     "--width %.0f --height %.0f --preview-dir '%s' --output '%s' --quiet",
                     pipeline, dir, golden_string(info, "prompt"), golden_number(info, "seed"), steps,
                     golden_number(info, "guidance"), golden_number(info, "w"),
                     golden_number(info, "h"), previews, out_png);
            int rc = run(args, out, sizeof out);
            CHECK(rc == 0, "lcm generate --taesd exited %d: %s", rc, out);
            if (rc == 0) compare_png(out_png, png, false);
            for (int k = 1; k <= steps; k++) {
                char step[PATH_MAX * 2];
                test_path(step, sizeof step, "%s/step-%d.png", previews, k);
                CHECK(access(step, F_OK) == 0, "preview %s missing", step);
                if (k == steps && rc == 0) compare_png(step, out_png, true);
                unlink(step);
            }
            char extra[PATH_MAX * 2];
            test_path(extra, sizeof extra, "%s/step-%d.png", previews, steps + 1);
            CHECK(access(extra, F_OK) != 0, "more previews than steps");
            rmdir(previews);
            unlink(out_png);
            cJSON_Delete(info);
            st_close(g);
            cases++;
        }
        test_free_list(names, n);
    }
    if (d) closedir(d);
    return cases;
}

static void option_errors(const char *pipeline) {
    char args[4096], out[4096], png[PATH_MAX];
    test_path(png, sizeof png, "%s/bad.png", tmpdir);
    const char *bad[] = {"--vae-tiling sometimes", "--memory-budget lots", "--memory-budget 2X",
                         "--taesd /nonexistent-taesd"};
    const char *names[] = {"--vae-tiling", "--memory-budget", "--memory-budget", "/nonexistent-taesd"};
    for (int k = 0; k < 4; k++) {
        test_path(args, sizeof args, "--model '%s' --prompt x --seed 1 --steps 1 --width 64 --height 64 "
                 "%s --output '%s' --quiet", pipeline, bad[k], png);
        int rc = run(args, out, sizeof out);
        CHECK(rc == 2 && strstr(out, names[k]), "'%s' must exit 2 naming %s: %d %s", bad[k], names[k],
              rc, out);
        CHECK(access(png, F_OK) != 0, "no image after an error");
    }
    // Tiling forced on at 2 tiles per side, and AUTO with a tiny budget: both produce the image.
    const char *ok[] = {"--vae-tiling on", "--vae-tiling auto --memory-budget 1M", "--vae-tiling off"};
    uint8_t *images[3] = {0};
    for (int k = 0; k < 3; k++) {
        test_path(args, sizeof args, "--model '%s' --prompt x --seed 1 --steps 1 --width 128 --height 96 "
                 "%s --output '%s' --quiet", pipeline, ok[k], png);
        int rc = run(args, out, sizeof out);
        CHECK(rc == 0, "'%s' must work: %s", ok[k], out);
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        if (rc == 0) CHECK_OK(image_read_png(png, &rgb, &w, &h));
        CHECK(w == 128 && h == 96, "'%s': image %dx%d", ok[k], w, h);
        images[k] = w == 128 && h == 96 ? rgb : NULL;
        if (!images[k]) free(rgb);
        unlink(png);
    }
    // Tiling changes the image (GroupNorm and attention see one tile); AUTO under 1M tiles.
    size_t n = 128 * 96 * 3;
    if (images[0] && images[1] && images[2]) {
        CHECK(!memcmp(images[0], images[1], n), "auto with a 1M budget must tile like on");
        CHECK(memcmp(images[0], images[2], n) != 0, "tiled and untiled images should differ");
    }
    for (int k = 0; k < 3; k++) free(images[k]);
}

int main(void) {
    const char *root = test_fixtures();
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    char pipeline[PATH_MAX] = "";
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && !pipeline[0] && (e = readdir(d))) {
        char dir[PATH_MAX];
        if (e->d_name[0] == '.') continue;
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        if (is_class(dir, "model_index.json", "LatentConsistencyModelPipeline"))
            snprintf(pipeline, sizeof pipeline, "%s", dir);
    }
    if (d) closedir(d);
    CHECK(pipeline[0], "no LCM pipeline folder under %s", root);
    if (pipeline[0]) {
        int cases = taesd_cases(root, pipeline);
        CHECK(cases > 0, "no TAESD pipeline goldens under %s", root);
        option_errors(pipeline);
    }
    CHECK(rmdir(tmpdir) == 0, "cleaning up %s", tmpdir);
    return test_finish();
}
