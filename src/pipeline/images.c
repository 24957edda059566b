// Image helpers of the public API: reading init/control images and the canny preprocessor.
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/image_format.h"
#include "lcm.h"
#include "preprocess/canny.h"

lcm_status lcm_image_read(const char *path, lcm_image *image) {
    if (!image) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_read: NULL image");
    memset(image, 0, sizeof *image);
    if (!path) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_read: NULL path");
    return image_read_file(path, &image->rgb, &image->width, &image->height);
}

lcm_status lcm_image_decode(const void *bytes, size_t size, const char *label, lcm_image *image) {
    if (!image) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_decode: NULL image");
    memset(image, 0, sizeof *image);
    return image_decode_any(bytes, size, label ? label : "image", &image->rgb, &image->width,
                            &image->height);
}

lcm_status lcm_image_probe(const void *bytes, size_t size, const char *label, int *width, int *height) {
    if (!width || !height) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_probe: NULL output");
    image_format format;
    return image_probe(bytes, size, label ? label : "image", &format, width, height);
}

void lcm_image_release(lcm_image *image) {
    if (!image) return;
    free(image->rgb);
    memset(image, 0, sizeof *image);
}

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
