// The `lcm serve` page in headless Chromium (tests/browser/serve_page.mjs, playwright-core): type a
// prompt, press Enter, see the progress and the image, the seed written back, cancel a second run,
// reuse the seed, random again, restore a result's settings from the history, img2img from a JPEG
// (written here from a fixture PNG) with its thumbnail, phone-sized layout. Screenshots go to
// build/artifacts/serve.png, serve-history.png, serve-img2img.png and serve-phone.png.
// Then the ControlNet controls (tests/browser/serve_control.mjs) against a server with --controlnet,
// --lora and --control-weights: upload a photo, generate, the image and its normal map appear side
// by side (build/artifacts/serve-controlnet.png).
//
// Needs node, Debian's chromium and `npm ci` in tests/browser (.ci/run installs all three). When
// one is missing locally the test says which and is skipped (exit 77), never passed silently.
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>


#include "control_fixtures.h"
#include "io/image.h"
#include "serve_process.h"
#include "testutil.h"

// Writes the first PNG of `dir` as a quality-90 JPEG at `jpeg`; false when there is none.
static bool write_jpeg_from_fixture(const char *dir, const char *jpeg) {
    char **names = NULL, png[1400];
    int n = test_list_files(dir, "", ".png", &names);
    if (n > 0) test_path(png, sizeof png, "%s/%s", dir, names[0]);
    test_free_list(names, n);
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    if (n <= 0 || image_read_png(png, &rgb, &w, &h) != LCM_OK) return false;
    unsigned long size = 0;
    unsigned char *bytes = test_encode_jpeg(rgb, w, h, 3, 90, false, &size);
    test_write_file(jpeg, bytes, size);
    free(bytes);
    free(rgb);
    return true;
}

int main(void) {
    const char *root = test_fixtures();
    const char *chromium = getenv("CHROMIUM") ? getenv("CHROMIUM") : "/usr/bin/chromium";
    char playwright[1200];
    test_path(playwright, sizeof playwright, "%s/tests/browser/node_modules/playwright-core/package.json",
              test_source_dir());
    const char *missing = test_run("command -v node >/dev/null 2>&1", NULL, 0) != 0 ? "node"
                          : access(chromium, X_OK) != 0                              ? chromium
                          : access(playwright, R_OK) != 0                            ? playwright
                                                                                     : NULL;
    if (missing) {
        printf("SKIPPED: %s is not installed (apt-get install nodejs npm chromium; cd tests/browser && npm ci)\n",
               missing);
        return 77;
    }

    char model[1024], artifacts[1200], cmd[4096], output[16384];
    test_path(model, sizeof model, "%s/tiny-lcm", root);
    test_path(artifacts, sizeof artifacts, "%s/artifacts", test_build_dir());
    mkdir(artifacts, 0755);
    char golden[1100], init_jpeg[1300];
    test_path(golden, sizeof golden, "%s/golden", model);
    test_path(init_jpeg, sizeof init_jpeg, "%s/init.jpg", artifacts);
    CHECK(write_jpeg_from_fixture(golden, init_jpeg), "no fixture PNG in %s to make the JPEG init image from", golden);
    server_process server;
    // A short pause after each step, so that the progress and Cancel are seen on any machine.
    if (server_start(&server, model, "--threads 2 --step-delay-ms 150")) {
        snprintf(cmd, sizeof cmd, "cd '%s/tests/browser' && CHROMIUM='%s' node serve_page.mjs '%s/' '%s' '%s' 2>&1",
                 test_source_dir(), chromium, server.base, artifacts, init_jpeg);
        int rc = test_run(cmd, output, sizeof output);
        fputs(output, stderr);
        CHECK(rc == 0, "%s exited %d", cmd, rc);
        char shot[1300];
        test_path(shot, sizeof shot, "%s/serve.png", artifacts);
        CHECK(access(shot, R_OK) == 0, "no screenshot at %s", shot);
        server_stop(&server);
    }

    static control_fixtures fx;
    if (control_fixtures_find(root, &fx)) {
        char extra[4096];
        test_path(extra, sizeof extra, "--threads 2 --controlnet '%s' %s%s%s --control-weights '%s'", fx.controlnet,
                  fx.lora[0] ? "--lora '" : "", fx.lora, fx.lora[0] ? "'" : "", fx.weights[0]);
        if (server_start(&server, fx.model, extra)) {
            snprintf(cmd, sizeof cmd, "cd '%s/tests/browser' && CHROMIUM='%s' node serve_control.mjs '%s/' '%s' '%s' 2>&1",
                     test_source_dir(), chromium, server.base, artifacts, fx.photo);
            int rc = test_run(cmd, output, sizeof output);
            fputs(output, stderr);
            CHECK(rc == 0, "%s exited %d", cmd, rc);
            server_stop(&server);
        }
    }
    return test_finish();
}
