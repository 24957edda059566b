// Images in the public API (include/lcm.h): reading and decoding init/control images, the photo an
// annotator sees (alpha composited over white), writing PNGs and comparing two images. The formats
// themselves are io/image*.c; the metrics core/image_metrics.c.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/image_metrics.h"
#include "io/image.h"
#include "io/image_alpha.h"
#include "io/image_format.h"
#include "io/image_webp.h"
#include "io/json_config.h"
#include "lcm.h"
#include "preprocess/normal_detector.h"

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

lcm_status lcm_write_png(const char *path, const lcm_image *image, const char *parameters) {
    if (!path || !image || !image->rgb)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_write_png: NULL argument");
    const char *keys[] = {"parameters"};
    const char *values[] = {parameters};
    return image_write_png(path, image->rgb, image->width, image->height, keys, values,
                           parameters ? 1 : 0);
}

lcm_status lcm_image_compare(const lcm_image *a, const lcm_image *b, double *psnr, double *ssim) {
    if (!a || !b || !a->rgb || !b->rgb || !psnr || !ssim)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_image_compare: NULL argument");
    if (a->width != b->width || a->height != b->height || a->width < 1 || a->height < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "lcm_image_compare: sizes %dx%d and %dx%d differ (or are empty)", a->width,
                        a->height, b->width, b->height);
    *psnr = image_psnr(a->rgb, b->rgb, a->width, a->height);
    *ssim = image_ssim(a->rgb, b->rgb, a->width, a->height);
    return isnan(*ssim) ? LCM_ERR_OUT_OF_MEMORY : LCM_OK;
}
