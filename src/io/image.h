// PNG images in and out, through libspng.
//
// Pixels are always 8-bit RGB, row-major, 3 bytes per pixel, no row padding. PNG files are
// untrusted input: dimensions are bounded (IMAGE_MAX_SIDE per side, IMAGE_MAX_PIXELS in all) so a
// hostile header cannot ask for an unbounded allocation, and every error names the file.
#ifndef LCM_IO_IMAGE_H
#define LCM_IO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

#define IMAGE_MAX_SIDE 16384
#define IMAGE_MAX_PIXELS (64 * 1024 * 1024)

// Encodes an RGB8 image as PNG into a malloc'd buffer (*png, *size; the caller frees *png).
// text_keys/text_values: n_text metadata entries (e.g. the A1111 "parameters" key), written as tEXt
// chunks, or as uncompressed iTXt (UTF-8) when a value is not plain ASCII, as PIL does. Keys must
// be 1..79 printable Latin-1 characters without leading, trailing or double spaces. All borrowed.
lcm_status image_encode_png(const uint8_t *rgb, int width, int height,
                            const char *const *text_keys, const char *const *text_values,
                            int n_text, void **png, size_t *size);

// Writes the PNG to `path` atomically: the bytes go to `path.tmp-XXXXXX` in the same folder, are
// fsync'ed, then renamed over `path`, so a reader never sees a partial file at `path` (and an
// existing file there is replaced only once the new one is complete).
lcm_status image_write_png(const char *path, const uint8_t *rgb, int width, int height,
                           const char *const *text_keys, const char *const *text_values,
                           int n_text);

// Decodes a PNG of any colour type and bit depth to RGB8 (alpha dropped, 16-bit samples reduced to
// their high byte, no gamma correction, as PIL's convert("RGB") does). Data cut short anywhere up
// to the IEND chunk is an error. *rgb is malloc'd (width*height*3 bytes), owned by the caller.
// `label` names the source in errors. `png` is borrowed.
lcm_status image_decode_png(const void *png, size_t size, const char *label, uint8_t **rgb,
                            int *width, int *height);

// The text of the PNG's tEXt/zTXt/iTXt chunk named `key` (the last one when repeated): *value is
// malloc'd (caller frees), or NULL when there is none. The whole PNG is validated as by
// image_decode_png (errors name `label`). `png` and `key` are borrowed.
lcm_status image_png_text(const void *png, size_t size, const char *label, const char *key,
                          char **value);

// Reads and decodes the PNG file at `path` (see image_decode_png).
lcm_status image_read_png(const char *path, uint8_t **rgb, int *width, int *height);

#endif
