#include "io/image_alpha.h"

#include <spng.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "io/image.h"

lcm_status image_read_png_keep_alpha(const char *path, uint8_t **pixels, int *width, int *height,
                                     int *channels) {
    *channels = 3;
    // The RGB reader validates the whole file (limits, truncation, CRCs) and gives its errors.
    LCM_TRY(image_read_png(path, pixels, width, height));
    FILE *f = fopen(path, "rb");
    spng_ctx *ctx = f ? spng_ctx_new(0) : NULL;
    struct spng_ihdr ihdr;
    size_t len = 0;
    uint8_t *rgba = NULL;
    int err = !ctx || spng_set_png_file(ctx, f) || spng_get_ihdr(ctx, &ihdr);
    if (!err && ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA) {
        err = spng_decoded_image_size(ctx, SPNG_FMT_RGBA8, &len) ||
              len != (size_t)*width * *height * 4 || !(rgba = malloc(len)) ||
              spng_decode_image(ctx, rgba, len, SPNG_FMT_RGBA8, 0);
    }
    spng_ctx_free(ctx);
    if (f) fclose(f);
    if (err) {
        free(rgba);
        free(*pixels);
        *pixels = NULL;
        return lcm_fail(LCM_ERR_FORMAT, "%s: cannot decode the PNG's alpha channel", path);
    }
    if (rgba) {
        free(*pixels);
        *pixels = rgba;
        *channels = 4;
    }
    return LCM_OK;
}
