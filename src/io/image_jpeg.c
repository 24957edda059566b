// JPEG decoding through libjpeg-turbo; see image_jpeg.h.
//
// libjpeg reports fatal errors through error_exit, which must not return: we longjmp back to the
// decoder with the library's message. Warnings (corrupt data, premature end of file) are turned
// into errors too, so a damaged file never yields a half-grey image silently.
#include "io/image_jpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "core/error.h"
#include "io/image.h"

typedef struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int warnings;
} jpeg_failure;

static void on_error(j_common_ptr cinfo) {
    jpeg_failure *f = (jpeg_failure *)cinfo->err;
    f->mgr.format_message(cinfo, f->message);
    longjmp(f->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    jpeg_failure *f = (jpeg_failure *)cinfo->err;
    if (level < 0 && f->warnings++ == 0) f->mgr.format_message(cinfo, f->message);
}

// Everything the decoder touches after setjmp lives here (not in locals), so longjmp cannot leave
// it in an indeterminate state.
typedef struct jpeg_decode {
    struct jpeg_decompress_struct cinfo;
    jpeg_failure failure;
    uint8_t *pixels;
} jpeg_decode;

lcm_status image_decode_jpeg(const void *jpeg, size_t size, const char *label, uint8_t **rgb,
                             int *width, int *height) {
    *rgb = NULL;
    *width = *height = 0;
    if (!jpeg || size < 4) return lcm_fail(LCM_ERR_FORMAT, "%s: not a JPEG file (too short)", label);
    if (size > (size_t)0x7fffffff) return lcm_fail(LCM_ERR_FORMAT, "%s: JPEG file too large", label);
    jpeg_decode *d = calloc(1, sizeof *d);
    if (!d) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    d->cinfo.err = jpeg_std_error(&d->failure.mgr);
    d->failure.mgr.error_exit = on_error;
    d->failure.mgr.emit_message = on_message;
    lcm_status st = LCM_OK;
    if (setjmp(d->failure.jump)) {
        st = lcm_fail(LCM_ERR_FORMAT, "%s: bad JPEG data: %s", label, d->failure.message);
        goto done;
    }
    jpeg_create_decompress(&d->cinfo);
    jpeg_mem_src(&d->cinfo, (const unsigned char *)jpeg, (unsigned long)size);
    jpeg_read_header(&d->cinfo, TRUE);
    unsigned w = d->cinfo.image_width, h = d->cinfo.image_height;
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE ||
        (uint64_t)w * h > IMAGE_MAX_PIXELS) {
        st = lcm_fail(LCM_ERR_FORMAT, "%s: JPEG is %ux%u, expected 1..%d pixels a side and at most "
                      "%d in all", label, w, h, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
        goto done;
    }
    if (d->cinfo.jpeg_color_space == JCS_CMYK || d->cinfo.jpeg_color_space == JCS_YCCK) {
        st = lcm_fail(LCM_ERR_UNSUPPORTED, "%s: CMYK JPEGs are not supported; save it as RGB", label);
        goto done;
    }
    d->cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&d->cinfo);
    if (d->cinfo.output_components != 3) {
        st = lcm_fail(LCM_ERR_UNSUPPORTED, "%s: JPEG decodes to %d components, expected RGB", label,
                      d->cinfo.output_components);
        goto done;
    }
    d->pixels = malloc((size_t)w * h * 3);
    if (!d->pixels) {
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for %ux%u pixels", label, w, h);
        goto done;
    }
    while (d->cinfo.output_scanline < h) {
        JSAMPROW row = d->pixels + (size_t)d->cinfo.output_scanline * w * 3;
        jpeg_read_scanlines(&d->cinfo, &row, 1);
    }
    jpeg_finish_decompress(&d->cinfo);
    if (d->failure.warnings) {
        st = lcm_fail(LCM_ERR_FORMAT, "%s: damaged JPEG data: %s", label, d->failure.message);
        goto done;
    }
    *rgb = d->pixels;
    d->pixels = NULL;
    *width = (int)w;
    *height = (int)h;
done:
    jpeg_destroy_decompress(&d->cinfo);
    free(d->pixels);
    free(d);
    return st;
}

lcm_status image_jpeg_size(const void *jpeg, size_t size, const char *label, int *width, int *height) {
    *width = *height = 0;
    if (!jpeg || size < 4) return lcm_fail(LCM_ERR_FORMAT, "%s: not a JPEG file (too short)", label);
    if (size > (size_t)0x7fffffff) return lcm_fail(LCM_ERR_FORMAT, "%s: JPEG file too large", label);
    jpeg_decode *d = calloc(1, sizeof *d);
    if (!d) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    d->cinfo.err = jpeg_std_error(&d->failure.mgr);
    d->failure.mgr.error_exit = on_error;
    d->failure.mgr.emit_message = on_message;
    lcm_status st = LCM_OK;
    if (setjmp(d->failure.jump)) {
        st = lcm_fail(LCM_ERR_FORMAT, "%s: bad JPEG data: %s", label, d->failure.message);
    } else {
        jpeg_create_decompress(&d->cinfo);
        jpeg_mem_src(&d->cinfo, (const unsigned char *)jpeg, (unsigned long)size);
        jpeg_read_header(&d->cinfo, TRUE);
        *width = (int)d->cinfo.image_width;
        *height = (int)d->cinfo.image_height;
    }
    jpeg_destroy_decompress(&d->cinfo);
    free(d);
    return st;
}
