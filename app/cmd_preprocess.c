// `lcm preprocess KIND`: the ControlNet annotators that turn a photo into a control image.
//   lcm preprocess normal --weights scannet.pt --input photo.png --output normal.png
// runs controlnet_aux's NormalBaeDetector (the control image of control_v11p_sd15_normalbae).
// The weights may be the original torch checkpoint (read without executing its pickle) or a
// safetensors conversion.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/args.h"
#include "app/commands.h"
#include "lcm.h"

static const char *const usage_line =
    "lcm preprocess normal --weights FILE --input IMG.png --output MAP.png "
    "[--detect-resolution N] [--image-resolution N]";

// The same library calls as `lcm generate --control-preprocess normalbae`, so both give the same map.
static int run_normal(const char *weights, const char *input, const char *output, long detect,
                      long image_res) {
    lcm_image photo = {0}, map = {0};
    // RGBA inputs keep their alpha: the reference composites them over white (HWC3).
    lcm_status st = lcm_image_read_composited(input, &photo);
    int bad_input = st != LCM_OK;
    if (st == LCM_OK) st = lcm_preprocess_normal(weights, &photo, (int)detect, (int)image_res, &map);
    if (st == LCM_OK) st = lcm_write_png(output, &map, NULL);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm preprocess normal: %s\n", lcm_last_error());
        bad_input = bad_input || st == LCM_ERR_FORMAT || st == LCM_ERR_INVALID_ARGUMENT ||
                    st == LCM_ERR_UNSUPPORTED || st == LCM_ERR_IO;
    } else {
        fprintf(stderr, "lcm preprocess normal: wrote %s (%dx%d)\n", output, map.width, map.height);
    }
    lcm_image_release(&photo);
    lcm_image_release(&map);
    return st == LCM_OK ? 0 : bad_input ? 2 : 1;
}

int cmd_preprocess(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *output = NULL;
    long detect = LCM_NORMAL_DETECT_RESOLUTION, image_res = LCM_NORMAL_IMAGE_RESOLUTION;
    const arg_spec specs[] = {
        {"weights", ARG_STRING, &weights,
         "NormalBae weights: scannet.pt (torch checkpoint) or a .safetensors conversion", false},
        {"input", ARG_STRING, &input, "input image (PNG, JPEG or WebP)", false},
        {"output", ARG_STRING, &output, "where to write the control image (PNG)", false},
        {"detect-resolution", ARG_INT, &detect,
         "short side the network sees, rounded to multiples of 64 (default 512)", false},
        {"image-resolution", ARG_INT, &image_res,
         "short side of the written map, rounded to multiples of 64 (default 512)", false},
    };
    const char *positional[1];
    int npositional = 0;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 1,
                        &npositional, usage_line);
    if (rc) return rc == 1 ? 0 : 2;
    if (npositional != 1 || strcmp(positional[0], "normal")) {
        fprintf(stderr, "lcm preprocess: expected the kind 'normal' (the only one so far)\nusage: %s\n",
                usage_line);
        return 2;
    }
    if (!weights || !input || !output) {
        fprintf(stderr, "lcm preprocess normal: --weights, --input and --output are required\n"
                        "usage: %s\n", usage_line);
        return 2;
    }
    if (detect < 1 || detect > 8192 || image_res < 1 || image_res > 8192) {
        fprintf(stderr, "lcm preprocess normal: --detect-resolution and --image-resolution must be "
                        "in 1..8192\n");
        return 2;
    }
    return run_normal(weights, input, output, detect, image_res);
}
