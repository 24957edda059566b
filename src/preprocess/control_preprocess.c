// The control-image preprocessing entry points of the public API (include/lcm.h): the NormalBae
// detector behind `lcm preprocess normal`, `lcm generate --control-preprocess normalbae` and
// `lcm serve --control-weights`, and the photo reader they share.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/image_alpha.h"
#include "io/image_format.h"
#include "io/image_webp.h"
#include "io/json_config.h"
#include "io/weights.h"
#include "lcm.h"
#include "models/normalbae.h"
#include "ops/backend.h"
#include "preprocess/normal_detector.h"

struct lcm_normal_detector {
    normalbae *net;
};

// Reads the file and decodes it keeping an alpha channel where the format has one (RGBA PNG, WebP
// with alpha): *channels is 3 or 4. *pixels is malloc'd, owned by the caller.
static lcm_status read_keep_alpha(const char *path, uint8_t **pixels, int *width, int *height,
                                  int *channels) {
    *channels = 3;
    char *bytes = NULL;
    size_t size = 0;
    LCM_TRY(read_text_file(path, (size_t)256 << 20, &bytes, &size));
    lcm_status st;
    switch (image_sniff(bytes, size)) {
    case IMAGE_FORMAT_PNG:
        st = image_read_png_keep_alpha(path, pixels, width, height, channels);
        break;
    case IMAGE_FORMAT_WEBP:
        st = image_decode_webp_keep_alpha(bytes, size, path, pixels, width, height, channels);
        break;
    default: // JPEG has no alpha; anything else gets image_decode_any's error
        st = image_decode_any(bytes, size, path, pixels, width, height);
        break;
    }
    free(bytes);
    return st;
}

lcm_status lcm_image_read_composited(const char *path, lcm_image *image) {
    if (!image) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_read_composited: NULL image");
    memset(image, 0, sizeof *image);
    if (!path) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_read_composited: NULL path");
    uint8_t *pixels = NULL, *rgb = NULL;
    int width = 0, height = 0, channels = 3;
    LCM_TRY(read_keep_alpha(path, &pixels, &width, &height, &channels));
    if (channels == 3) {
        rgb = pixels;
    } else {
        lcm_status st = hwc3_u8(pixels, height, width, channels, &rgb);
        free(pixels);
        if (st != LCM_OK) return lcm_fail_context(st, "%s: ", path);
    }
    image->width = width;
    image->height = height;
    image->rgb = rgb;
    return LCM_OK;
}

lcm_status lcm_normal_detector_open(const char *weights_path, lcm_normal_detector **out) {
    if (!out) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_normal_detector_open: NULL output");
    *out = NULL;
    if (!weights_path)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_normal_detector_open: NULL weights path");
    lcm_normal_detector *detector = calloc(1, sizeof *detector);
    if (!detector) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "NormalBae: out of memory");
    weight_set *weights = NULL;
    lcm_status st = weight_set_open_file(weights_path, &weights);
    // The detector runs in fp32 on the kernels the environment asks for (its own backend: the C
    // API opens it apart from any pipeline).
    ops_backend backend = ops_backend_from_environment(LCM_PRECISION_FP32);
    if (st == LCM_OK) st = normalbae_load(&backend, weights, &detector->net);
    weight_set_close(weights);
    if (st != LCM_OK) {
        free(detector);
        // Errors from the loaders name tensors; say which file they came from.
        return strstr(lcm_last_error(), weights_path)
                   ? st
                   : lcm_fail_context(st, "NormalBae weights %s: ", weights_path);
    }
    *out = detector;
    return LCM_OK;
}

void lcm_normal_detector_close(lcm_normal_detector *detector) {
    if (!detector) return;
    normalbae_free(detector->net);
    free(detector);
}

lcm_status lcm_normal_detector_run(const lcm_normal_detector *detector, const lcm_image *image,
                                   int detect_resolution, int image_resolution, lcm_image *map) {
    if (!map) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_normal_detector_run: NULL output");
    memset(map, 0, sizeof *map);
    if (!detector) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_normal_detector_run: NULL detector");
    if (!image || !image->rgb || image->width < 1 || image->height < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "NormalBae: empty input image");
    if (detect_resolution < 1 || detect_resolution > 8192 || image_resolution < 1 ||
        image_resolution > 8192)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "NormalBae: detect resolution %d, image resolution %d: expected 1..8192",
                        detect_resolution, image_resolution);
    uint8_t *rgb = NULL;
    int width = 0, height = 0;
    LCM_TRY(normal_detector_run(detector->net, image->rgb, image->height, image->width, 3,
                                detect_resolution, image_resolution, &rgb, &height, &width));
    map->width = width;
    map->height = height;
    map->rgb = rgb;
    return LCM_OK;
}

lcm_status lcm_preprocess_normal(const char *weights_path, const lcm_image *image,
                                 int detect_resolution, int image_resolution, lcm_image *map) {
    if (map) memset(map, 0, sizeof *map);
    lcm_normal_detector *detector = NULL;
    LCM_TRY(lcm_normal_detector_open(weights_path, &detector));
    lcm_status st = lcm_normal_detector_run(detector, image, detect_resolution, image_resolution, map);
    lcm_normal_detector_close(detector);
    return st;
}
