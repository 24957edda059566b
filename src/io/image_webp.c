// WebP decoding through libwebp's simple decoding API; see image_webp.h.
//
// WebPGetFeatures reads only the headers, so the size limits and the animation check come before
// any pixel buffer exists; WebPDecode then writes into a buffer we allocated and own (external
// memory) and says why it failed (most often: data cut short).
#include "io/image_webp.h"

#include <stdbool.h>
#include <stdlib.h>

#include <webp/decode.h>

#include "core/error.h"
#include "io/image.h"

// libwebp's status codes in words, for error messages.
static const char *webp_status_text(VP8StatusCode status) {
    switch (status) {
    case VP8_STATUS_OK: return "ok";
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "decoding suspended";
    case VP8_STATUS_USER_ABORT: return "decoding aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "data cut short";
    }
    return "unknown error";
}

static lcm_status decode(const void *webp, size_t size, const char *label, bool keep_alpha,
                         uint8_t **pixels, int *width, int *height, int *channels) {
    *pixels = NULL;
    *width = *height = 0;
    *channels = 3;
    if (!webp || size < 12) return lcm_fail(LCM_ERR_FORMAT, "%s: not a WebP image (too short)", label);
    WebPBitstreamFeatures features;
    VP8StatusCode status = WebPGetFeatures(webp, size, &features);
    if (status != VP8_STATUS_OK)
        return lcm_fail(LCM_ERR_FORMAT, "%s: bad WebP header: %s", label, webp_status_text(status));
    if (features.has_animation)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: animated WebP is not supported; expected a still image", label);
    int w = features.width, h = features.height;
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE ||
        (int64_t)w * h > IMAGE_MAX_PIXELS)
        return lcm_fail(LCM_ERR_FORMAT, "%s: WebP is %dx%d, expected 1..%d pixels a side and at most "
                        "%d in all", label, w, h, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    int n = keep_alpha && features.has_alpha ? 4 : 3;
    size_t stride = (size_t)w * n, bytes = stride * (size_t)h;
    uint8_t *out = malloc(bytes);
    if (!out) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for %dx%d pixels", label, w, h);
    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config)) {
        free(out);
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: libwebp version mismatch", label);
    }
    config.output.colorspace = n == 4 ? MODE_RGBA : MODE_RGB;
    config.output.is_external_memory = 1; // decode straight into our buffer
    config.output.u.RGBA.rgba = out;
    config.output.u.RGBA.stride = (int)stride;
    config.output.u.RGBA.size = bytes;
    status = WebPDecode(webp, size, &config);
    WebPFreeDecBuffer(&config.output); // frees nothing of ours (external memory)
    if (status != VP8_STATUS_OK) {
        free(out);
        return lcm_fail(LCM_ERR_FORMAT, "%s: bad WebP data: %s", label, webp_status_text(status));
    }
    *pixels = out;
    *width = w;
    *height = h;
    *channels = n;
    return LCM_OK;
}

lcm_status image_decode_webp(const void *webp, size_t size, const char *label, uint8_t **rgb,
                             int *width, int *height) {
    int channels = 3;
    return decode(webp, size, label, false, rgb, width, height, &channels);
}

lcm_status image_decode_webp_keep_alpha(const void *webp, size_t size, const char *label,
                                        uint8_t **pixels, int *width, int *height, int *channels) {
    return decode(webp, size, label, true, pixels, width, height, channels);
}
