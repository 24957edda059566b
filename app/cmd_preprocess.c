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
#include "core/error.h"
#include "io/image.h"
#include "io/image_alpha.h"
#include "io/weights.h"
#include "models/normalbae.h"
#include "preprocess/normal_detector.h"

static const char *const usage_line =
    "lcm preprocess normal --weights FILE --input IMG.png --output MAP.png "
    "[--detect-resolution N] [--image-resolution N]";

static int run_normal(const char *weights, const char *input, const char *output, long detect,
                      long image_res) {
    uint8_t *rgb = NULL, *map = NULL;
    int w = 0, h = 0, mh = 0, mw = 0, channels = 3;
    weight_set *ws = NULL;
    normalbae *net = NULL;
    // RGBA inputs keep their alpha: the reference composites them over white (HWC3).
    lcm_status st = image_read_png_keep_alpha(input, &rgb, &w, &h, &channels);
    int bad_input = st != LCM_OK;
    if (st == LCM_OK) st = weight_set_open_file(weights, &ws);
    if (st == LCM_OK) st = normalbae_load(ws, &net);
    weight_set_close(ws);
    if (st == LCM_OK)
        st = normal_detector_run(net, rgb, h, w, channels, (int)detect, (int)image_res, &map, &mh, &mw);
    if (st == LCM_OK) st = image_write_png(output, map, mw, mh, NULL, NULL, 0);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm preprocess normal: %s\n", lcm_last_error());
        bad_input = bad_input || st == LCM_ERR_FORMAT || st == LCM_ERR_INVALID_ARGUMENT ||
                    st == LCM_ERR_UNSUPPORTED || st == LCM_ERR_IO;
    } else {
        fprintf(stderr, "lcm preprocess normal: wrote %s (%dx%d)\n", output, mw, mh);
    }
    free(rgb);
    free(map);
    normalbae_free(net);
    return st == LCM_OK ? 0 : bad_input ? 2 : 1;
}

int cmd_preprocess(int argc, char **argv) {
    const char *weights = NULL, *input = NULL, *output = NULL;
    long detect = NORMAL_DETECT_RESOLUTION, image_res = NORMAL_IMAGE_RESOLUTION;
    const arg_spec specs[] = {
        {"weights", ARG_STRING, &weights,
         "NormalBae weights: scannet.pt (torch checkpoint) or a .safetensors conversion", false},
        {"input", ARG_STRING, &input, "input image (PNG)", false},
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
