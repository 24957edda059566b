// Format sniffing and the one decoding entry point for images users give us; see image_format.h.
#include "io/image_format.h"

#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>

#include "core/error.h"
#include "io/image.h"
#include "io/image_jpeg.h"
#include "io/image_webp.h"
#include "io/json_config.h"

// Larger than any image we accept could reasonably be encoded (IMAGE_MAX_PIXELS at 3 bytes and
// some), so a huge file is refused before it is read.
#define IMAGE_FILE_MAX_BYTES ((size_t)256 << 20)

image_format image_sniff(const void *bytes, size_t size) {
    static const unsigned char png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const unsigned char *b = bytes;
    if (!b) return IMAGE_FORMAT_UNKNOWN;
    if (size >= 8 && !memcmp(b, png_signature, 8)) return IMAGE_FORMAT_PNG;
    if (size >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return IMAGE_FORMAT_JPEG;
    if (size >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return IMAGE_FORMAT_WEBP;
    return IMAGE_FORMAT_UNKNOWN;
}

// What an image we do not read is, for the error message ("" when not recognised).
static const char *other_format(const unsigned char *b, size_t size) {
    if (size >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) return " (it is a GIF)";
    if (size >= 2 && b[0] == 'B' && b[1] == 'M') return " (it looks like a BMP)";
    if (size >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4))) return " (it is a TIFF)";
    if (size >= 12 && !memcmp(b + 4, "ftyp", 4)) return " (it looks like HEIF/AVIF)";
    if (size >= 4 && !memcmp(b, "RIFF", 4)) return " (a RIFF file, but not WebP)";
    return "";
}

lcm_status image_decode_any(const void *bytes, size_t size, const char *label, uint8_t **rgb,
                            int *width, int *height) {
    *rgb = NULL;
    *width = *height = 0;
    switch (image_sniff(bytes, size)) {
    case IMAGE_FORMAT_PNG: return image_decode_png(bytes, size, label, rgb, width, height);
    case IMAGE_FORMAT_JPEG: return image_decode_jpeg(bytes, size, label, rgb, width, height);
    case IMAGE_FORMAT_WEBP: return image_decode_webp(bytes, size, label, rgb, width, height);
    case IMAGE_FORMAT_UNKNOWN: break;
    }
    if (!bytes || size == 0)
        return lcm_fail(LCM_ERR_FORMAT, "%s: empty; expected a PNG, JPEG or WebP image", label);
    return lcm_fail(LCM_ERR_FORMAT, "%s: not a PNG, JPEG or WebP image%s", label,
                    other_format(bytes, size));
}

lcm_status image_probe(const void *bytes, size_t size, const char *label, image_format *format,
                       int *width, int *height) {
    *width = *height = 0;
    *format = image_sniff(bytes, size);
    const unsigned char *b = bytes;
    switch (*format) {
    case IMAGE_FORMAT_PNG:
        // IHDR must be the first chunk: length 13, then width and height as big-endian u32.
        if (size < 24 || memcmp(b + 12, "IHDR", 4) != 0)
            return lcm_fail(LCM_ERR_FORMAT, "%s: PNG without an IHDR chunk first", label);
        uint32_t w = (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
        uint32_t h = (uint32_t)b[20] << 24 | (uint32_t)b[21] << 16 | (uint32_t)b[22] << 8 | b[23];
        if (w > 0x7fffffff || h > 0x7fffffff)
            return lcm_fail(LCM_ERR_FORMAT, "%s: PNG header declares %ux%u pixels", label, w, h);
        *width = (int)w;
        *height = (int)h;
        return LCM_OK;
    case IMAGE_FORMAT_JPEG: return image_jpeg_size(bytes, size, label, width, height);
    case IMAGE_FORMAT_WEBP:
        if (!WebPGetInfo(bytes, size, width, height))
            return lcm_fail(LCM_ERR_FORMAT, "%s: bad WebP header", label);
        return LCM_OK;
    case IMAGE_FORMAT_UNKNOWN: break;
    }
    uint8_t *none = NULL;
    return image_decode_any(bytes, size, label, &none, width, height); // its error, nothing decoded
}

lcm_status image_read_file(const char *path, uint8_t **rgb, int *width, int *height) {
    *rgb = NULL;
    *width = *height = 0;
    char *bytes = NULL;
    size_t len = 0;
    LCM_TRY(read_text_file(path, IMAGE_FILE_MAX_BYTES, &bytes, &len)); // the message names the file
    lcm_status st = image_decode_any(bytes, len, path, rgb, width, height);
    free(bytes);
    return st;
}
