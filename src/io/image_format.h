// Reading an image whatever its format: PNG, JPEG or WebP, told apart by the first bytes of the
// data (never by a file name, which a browser upload or a renamed file may get wrong).
#ifndef LCM_IO_IMAGE_FORMAT_H
#define LCM_IO_IMAGE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

typedef enum image_format {
    IMAGE_FORMAT_UNKNOWN = 0,
    IMAGE_FORMAT_PNG,
    IMAGE_FORMAT_JPEG,
    IMAGE_FORMAT_WEBP,
} image_format;

// The format the bytes start with (PNG signature, JPEG SOI marker, RIFF....WEBP header).
image_format image_sniff(const void *bytes, size_t size);

// Decodes PNG, JPEG or WebP data to RGB8 (see image_decode_png / _jpeg / _webp). Data in none of
// these formats is LCM_ERR_FORMAT with a message naming `label`, the formats accepted and, when
// recognisable (GIF, BMP, TIFF, ...), what it is instead. *rgb is malloc'd, owned by the caller.
lcm_status image_decode_any(const void *bytes, size_t size, const char *label, uint8_t **rgb,
                            int *width, int *height);

// The image's format and size from its headers only (nothing decoded, nothing allocated beyond the
// JPEG reader's state), so a server can refuse an oversized upload before decoding it. Data in
// no accepted format is an error as in image_decode_any.
lcm_status image_probe(const void *bytes, size_t size, const char *label, image_format *format,
                       int *width, int *height);

// Reads and decodes the file at `path` (see image_decode_any; errors name the file).
lcm_status image_read_file(const char *path, uint8_t **rgb, int *width, int *height);

#endif
