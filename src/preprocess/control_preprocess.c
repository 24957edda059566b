// The control-image preprocessing entry points of the public API (include/lcm.h): the NormalBae
// detector behind `lcm preprocess normal`, `lcm generate --control-preprocess normalbae` and
// `lcm serve --control-weights`, and the photo reader they share.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/image_alpha.h"
#include "io/weights.h"
#include "lcm.h"
#include "models/normalbae.h"
#include "preprocess/normal_detector.h"

struct lcm_normal_detector {
    normalbae *net;
};

// True when the file starts with the PNG signature (a missing or short file is left to the reader
// that gives the error).
static bool looks_like_png(const char *path) {
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t head[8];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return n == sizeof head && memcmp(head, signature, sizeof signature) == 0;
}

lcm_status lcm_image_read_composited(const char *path, lcm_image *image) {
    if (!image) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_read_composited: NULL image");
    memset(image, 0, sizeof *image);
    if (!path) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_read_composited: NULL path");
    if (!looks_like_png(path)) return lcm_image_read(path, image); // JPEG has no alpha
    uint8_t *pixels = NULL, *rgb = NULL;
    int width = 0, height = 0, channels = 3;
    LCM_TRY(image_read_png_keep_alpha(path, &pixels, &width, &height, &channels));
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
    if (st == LCM_OK) st = normalbae_load(weights, &detector->net);
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
