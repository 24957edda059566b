// WebP images in, through libwebp (Debian's libwebp-dev).
//
// Like the PNG and JPEG readers (image.h, image_jpeg.h): pixels come out as 8-bit RGB (or RGBA when
// asked), row-major, no row padding; WebP data is untrusted input, so the size in the header is
// checked against IMAGE_MAX_SIDE / IMAGE_MAX_PIXELS before anything is allocated, and every error
// names the source.
#ifndef LCM_IO_IMAGE_WEBP_H
#define LCM_IO_IMAGE_WEBP_H

#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

// Decodes a still WebP image (lossy VP8 or lossless VP8L, with or without alpha) to RGB8: alpha
// is dropped, as PIL's convert("RGB") does. Animated WebP is refused (LCM_ERR_UNSUPPORTED), data
// cut short or corrupt is LCM_ERR_FORMAT. *rgb is malloc'd (width*height*3 bytes), owned by the
// caller. `label` names the source in errors; `webp` is borrowed.
lcm_status image_decode_webp(const void *webp, size_t size, const char *label, uint8_t **rgb,
                             int *width, int *height);

// Like image_decode_webp, but an image with an alpha channel comes out as RGBA (*channels = 4);
// without alpha *channels = 3 and *pixels is RGB. For the annotators that composite alpha over
// white (image_alpha.h).
lcm_status image_decode_webp_keep_alpha(const void *webp, size_t size, const char *label,
                                        uint8_t **pixels, int *width, int *height, int *channels);

#endif
