// The reference ControlNet workflow in one command:
//   lcm generate --control-image PHOTO --control-preprocess normalbae --control-weights W ...
// gives the same pixels as `lcm preprocess normal` followed by `lcm generate --control-image MAP`,
// writes the same normal map with --control-output, is deterministic and the same for both
// weight formats (.safetensors and the torch .pt); missing or bad weights exit 2 naming the file.
// Small detect/image resolutions keep it fast; the defaults are controlnet_aux's (512).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control_fixtures.h"
#include "lcm.h"
#include "testutil.h"

#define RESOLUTION 64 // the photo's short side for the network and for the map

static char output[1 << 15];
static char tmpdir[] = "/tmp/lcm-control-normal-XXXXXX";
static control_fixtures fx;

// The generation options every run shares (model, LoRA, ControlNet, prompt, seed).
static void common_args(char *buf, size_t size) {
    test_path(buf, size, "generate --model '%s' --controlnet '%s' %s%s%s --prompt 'a house in the woods' --seed 11 "
              "--steps 2 --guidance 1 --quiet",
              fx.model, fx.controlnet, fx.lora[0] ? "--lora '" : "", fx.lora, fx.lora[0] ? "'" : "");
}

static int run(const char *args) {
    char cmd[16384];
    test_path(cmd, sizeof cmd, "'%s' %s 2>&1", test_lcm_bin(), args);
    return test_run(cmd, output, sizeof output);
}

// Pixels equal (PNG metadata may differ: the infotext names the preprocessor).
static void check_same_pixels(const char *a_path, const char *b_path, const char *what) {
    lcm_image a, b;
    bool ok = lcm_image_read(a_path, &a) == LCM_OK && lcm_image_read(b_path, &b) == LCM_OK;
    CHECK(ok, "%s: reading %s and %s: %s", what, a_path, b_path, lcm_last_error());
    if (ok) {
        bool same = a.width == b.width && a.height == b.height &&
                    !memcmp(a.rgb, b.rgb, (size_t)a.width * a.height * 3);
        size_t differ = 0;
        if (a.width == b.width && a.height == b.height)
            for (size_t i = 0; i < (size_t)a.width * a.height * 3; i++) differ += a.rgb[i] != b.rgb[i];
        fprintf(stderr, "%s: %dx%d vs %dx%d, %zu values differ\n", what, a.width, a.height, b.width,
                b.height, differ);
        CHECK(same, "%s: %s and %s differ", what, a_path, b_path);
        lcm_image_release(&b);
    }
    lcm_image_release(&a);
}

static void expect_failure(const char *args, const char *needle, const char *what) {
    int rc = run(args);
    CHECK(rc == 2, "%s: exit %d (expected 2): %s", what, rc, output);
    CHECK(strstr(output, needle) != NULL, "%s: message does not name '%s': %s", what, needle, output);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    if (!control_fixtures_find(test_fixtures(), &fx)) return test_finish();
    fprintf(stderr, "model %s, ControlNet %s, LoRA %s\n", fx.model, fx.controlnet, fx.lora[0] ? fx.lora : "(none)");
    char common[8192], args[16384], map[256], one_command[256], two_commands[256], written_map[256];
    common_args(common, sizeof common);

    // The two-command workflow: photo -> map, map -> image.
    test_path(map, sizeof map, "%s/map.png", tmpdir);
    test_path(args, sizeof args,
              "preprocess normal --weights '%s' --input '%s' --output '%s' --detect-resolution %d "
              "--image-resolution %d",
              fx.weights[0], fx.photo, map, RESOLUTION, RESOLUTION);
    int rc = run(args);
    CHECK(rc == 0, "lcm preprocess normal: exit %d: %s", rc, output);
    test_path(two_commands, sizeof two_commands, "%s/two.png", tmpdir);
    test_path(args, sizeof args, "%s --control-image '%s' --output '%s'", common, map, two_commands);
    rc = run(args);
    CHECK(rc == 0, "generate from the map: exit %d: %s", rc, output);

    // The same in one command, once per weights file (each run must give the same pixels).
    for (int w = 0; w < fx.weights_count; w++) {
        test_path(one_command, sizeof one_command, "%s/one_%d.png", tmpdir, w);
        test_path(written_map, sizeof written_map, "%s/one_map_%d.png", tmpdir, w);
        test_path(args, sizeof args,
                  "%s --control-image '%s' --control-preprocess normalbae --control-weights '%s' "
                  "--detect-resolution %d --image-resolution %d --control-output '%s' --output '%s'",
                  common, fx.photo, fx.weights[w], RESOLUTION, RESOLUTION, written_map, one_command);
        rc = run(args);
        CHECK(rc == 0, "one command with %s: exit %d: %s", fx.weights[w], rc, output);
        if (rc != 0) continue;
        check_same_pixels(map, written_map, "--control-output map vs lcm preprocess normal");
        check_same_pixels(two_commands, one_command, "one command vs two commands");
    }

    // The library entry point the CLI and the server share gives the same map, loaded once and
    // run twice; bad arguments are refused with a message.
    lcm_image photo = {0}, from_library = {0}, again = {0}, from_cli = {0};
    lcm_normal_detector *detector = NULL;
    CHECK_OK(lcm_image_read_composited(fx.photo, &photo));
    CHECK_OK(lcm_normal_detector_open(fx.weights[0], &detector));
    CHECK_OK(lcm_normal_detector_run(detector, &photo, RESOLUTION, RESOLUTION, &from_library));
    CHECK_OK(lcm_normal_detector_run(detector, &photo, RESOLUTION, RESOLUTION, &again));
    CHECK_OK(lcm_image_read(map, &from_cli));
    size_t bytes = (size_t)from_cli.width * from_cli.height * 3;
    CHECK(from_library.rgb && again.rgb && from_cli.rgb && from_library.width == from_cli.width &&
              from_library.height == from_cli.height && !memcmp(from_library.rgb, from_cli.rgb, bytes) &&
              !memcmp(again.rgb, from_cli.rgb, bytes),
          "lcm_normal_detector_run's map differs from lcm preprocess normal's");
    lcm_image none = {0};
    CHECK(lcm_normal_detector_run(detector, &photo, 0, RESOLUTION, &none) == LCM_ERR_INVALID_ARGUMENT &&
              strstr(lcm_last_error(), "resolution") && !none.rgb,
          "detect resolution 0: %s", lcm_last_error());
    lcm_image nothing = {0};
    CHECK(lcm_normal_detector_run(detector, &none, RESOLUTION, RESOLUTION, &nothing) == LCM_ERR_INVALID_ARGUMENT &&
              !nothing.rgb,
          "empty image: %s", lcm_last_error());
    lcm_normal_detector_close(detector);
    detector = NULL;
    char no_file[256];
    test_path(no_file, sizeof no_file, "%s/absent.safetensors", tmpdir);
    CHECK(lcm_normal_detector_open(no_file, &detector) != LCM_OK && !detector && strstr(lcm_last_error(), no_file),
          "missing weights: %s", lcm_last_error());
    CHECK(lcm_preprocess_normal(no_file, &photo, RESOLUTION, RESOLUTION, &none) != LCM_OK && !none.rgb,
          "lcm_preprocess_normal with missing weights");
    lcm_image_release(&photo);
    lcm_image_release(&from_library);
    lcm_image_release(&again);
    lcm_image_release(&from_cli);

    // Errors: no weights, weights that are not there, weights that are not NormalBae.
    char missing[256], not_weights[256];
    test_path(missing, sizeof missing, "%s/no-such-scannet.pt", tmpdir);
    test_path(not_weights, sizeof not_weights, "%s/not-weights.pt", tmpdir);
    FILE *f = fopen(not_weights, "w");
    if (f) {
        fputs("this is not a checkpoint\n", f);
        fclose(f);
    }
    char out_path[256];
    test_path(out_path, sizeof out_path, "%s/never.png", tmpdir);
    test_path(args, sizeof args, "%s --control-image '%s' --control-preprocess normalbae --output '%s'", common,
              fx.photo, out_path);
    expect_failure(args, "--control-weights", "normalbae without weights");
    test_path(args, sizeof args,
              "%s --control-image '%s' --control-preprocess normalbae --control-weights '%s' --output '%s'",
              common, fx.photo, missing, out_path);
    expect_failure(args, missing, "missing weights file");
    test_path(args, sizeof args,
              "%s --control-image '%s' --control-preprocess normalbae --control-weights '%s' --output '%s'",
              common, fx.photo, not_weights, out_path);
    expect_failure(args, not_weights, "weights file that is not a checkpoint");
    char controlnet_weights[1200];
    test_path(controlnet_weights, sizeof controlnet_weights, "%s/diffusion_pytorch_model.safetensors",
              fx.controlnet);
    test_path(args, sizeof args,
              "%s --control-image '%s' --control-preprocess normalbae --control-weights '%s' --output '%s'",
              common, fx.photo, controlnet_weights, out_path);
    expect_failure(args, "NormalBae", "ControlNet weights given as NormalBae weights");
    test_path(args, sizeof args, "%s --control-image '%s' --control-weights '%s' --output '%s'", common, fx.photo,
              fx.weights[0], out_path);
    expect_failure(args, "--control-preprocess normalbae", "weights without the preprocessor");
    CHECK(access(out_path, F_OK) != 0, "a failed run wrote %s", out_path);

    char cleanup[512];
    test_path(cleanup, sizeof cleanup, "rm -rf '%s'", tmpdir);
    if (system(cleanup) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
