// JPEG images in (through libjpeg-turbo); image_format.h reads any supported format.
//
// Like the PNG reader (image.h): pixels come out as 8-bit RGB, row-major, 3 bytes per pixel;
// JPEG files are untrusted input, so dimensions are bounded by IMAGE_MAX_SIDE / IMAGE_MAX_PIXELS
// before anything is allocated, and every error names the file.
#ifndef LCM_IO_IMAGE_JPEG_H
#define LCM_IO_IMAGE_JPEG_H

#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

// Decodes a baseline or progressive JPEG (grayscale or YCbCr; CMYK is refused) to RGB8 with
// libjpeg's defaults (islow IDCT, fancy upsampling), as PIL's Image.open(...).convert("RGB").
// A file cut short or with corrupt data is an error (libjpeg would only warn and pad with grey).
// *rgb is malloc'd (width*height*3 bytes), owned by the caller. `label` names the source in errors.
lcm_status image_decode_jpeg(const void *jpeg, size_t size, const char *label, uint8_t **rgb,
                             int *width, int *height);

// Reads only the JPEG's headers: its width and height (up to 65535 a side, before any limit
// check). Damaged headers are LCM_ERR_FORMAT naming `label`.
lcm_status image_jpeg_size(const void *jpeg, size_t size, const char *label, int *width, int *height);

#endif
