// ControlNet control-image preprocessing in the public API (include/lcm.h): the canny edge map and
// the NormalBae detector behind `lcm preprocess`, `lcm generate --control-preprocess` and
// `lcm serve --control-weights`. The annotators themselves are preprocess/canny.c and
// preprocess/normal_detector.c (with the network in models/normalbae.c).
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/weights.h"
#include "lcm.h"
#include "models/normalbae.h"
#include "ops/backend.h"
#include "preprocess/canny.h"
#include "preprocess/normal_detector.h"

lcm_status lcm_canny(const lcm_image *image, double low_threshold, double high_threshold,
                     lcm_image *edges) {
    if (!edges) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_canny: NULL output");
    memset(edges, 0, sizeof *edges);
    if (!image || !image->rgb || image->width < 1 || image->height < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_canny: empty input image");
    size_t pixels = (size_t)image->width * image->height;
    uint8_t *map = malloc(pixels), *rgb = malloc(pixels * 3);
    if (!map || !rgb) {
        free(map);
        free(rgb);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "lcm_canny: out of memory");
    }
    lcm_status st = canny_edges(image->rgb, image->width, image->height, 3, low_threshold,
                                high_threshold, map);
    if (st == LCM_OK) {
        // controlnet_aux's HWC3: the one-channel map on all three channels.
        for (size_t i = 0; i < pixels; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = map[i];
        edges->width = image->width;
        edges->height = image->height;
        edges->rgb = rgb;
        rgb = NULL;
    }
    free(map);
    free(rgb);
    return st;
}

struct lcm_normal_detector {
    normalbae *net;
};

lcm_status lcm_normal_detector_open(const char *weights_path, lcm_normal_detector **out) {
    if (!out) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_normal_detector_open: NULL output");
    *out = NULL;
    if (!weights_path)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_normal_detector_open: NULL weights path");
    lcm_normal_detector *detector = calloc(1, sizeof *detector);
    if (!detector) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "NormalBae: out of memory");
    weight_set *weights = NULL;
    // The file's own errors name it already.
    lcm_status st = weight_set_open_file(weights_path, &weights);
    if (st == LCM_OK) {
        // The detector runs in fp32 on the kernels the environment asks for (its own backend: the
        // C API opens it apart from any pipeline).
        ops_backend backend = ops_backend_from_environment(LCM_PRECISION_FP32);
        st = normalbae_load(&backend, weights, &detector->net);
        // The loader's errors name tensors; say which file they came from.
        if (st != LCM_OK) lcm_fail_context(st, "NormalBae weights %s: ", weights_path);
    }
    weight_set_close(weights);
    if (st != LCM_OK) {
        free(detector);
        return st;
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
