// libFuzzer harness for the image readers that take user files and uploads (init and control
// images): the input is decoded as JPEG, as PNG, as WebP (RGB, and RGBA as the annotators read it)
// and through the sniffing entry point with its header probe; each must fail cleanly or return a
// bounded image, and a decoded image goes through the canny preprocessor and a resize, as
// `lcm generate` would.
// Seeds (fuzz/corpus/fuzz_image/): an 8x6 PNG and JPEG written once with image_write_png and
// libjpeg, a lossy WebP and a lossless RGBA WebP written once with libwebp, all from made-up
// pixels (no fixture data).
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "guarded_input.h"
#include "io/image.h"
#include "io/image_format.h"
#include "io/image_jpeg.h"
#include "io/image_webp.h"
#include "io/image_resize.h"
#include "preprocess/canny.h"

static void use_image(uint8_t *rgb, int width, int height) {
    if ((int64_t)width * height > 4096 * 4096) abort(); // beyond what the readers should allow here
    if ((int64_t)width * height <= 256 * 256) {
        uint8_t *edges = malloc((size_t)width * height), *resized = NULL;
        if (edges && canny_edges(rgb, width, height, 3, 100, 200, edges) != LCM_OK) abort();
        if (image_resize_lanczos(rgb, width, height, 16, 24, &resized) != LCM_OK) abort();
        free(edges);
        free(resized);
    }
    free(rgb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    guarded_input in;
    if (guarded_input_make(&in, data, size) != 0) return 0;
    uint8_t *rgb = NULL;
    int width = 0, height = 0;
    if (image_decode_jpeg(in.bytes, size, "fuzz.jpg", &rgb, &width, &height) == LCM_OK) {
        if (!rgb || width < 1 || height < 1) abort();
        use_image(rgb, width, height);
    } else if (rgb) {
        abort(); // a failure must not hand out pixels
    }
    rgb = NULL;
    if (image_decode_png(in.bytes, size, "fuzz.png", &rgb, &width, &height) == LCM_OK) {
        if (!rgb || width < 1 || height < 1) abort();
        use_image(rgb, width, height);
    }
    rgb = NULL;
    if (image_decode_webp(in.bytes, size, "fuzz.webp", &rgb, &width, &height) == LCM_OK) {
        if (!rgb || width < 1 || height < 1) abort();
        use_image(rgb, width, height);
    } else if (rgb) {
        abort();
    }
    int channels = 0;
    rgb = NULL;
    if (image_decode_webp_keep_alpha(in.bytes, size, "fuzz.webp", &rgb, &width, &height, &channels) == LCM_OK) {
        if (!rgb || width < 1 || height < 1 || (channels != 3 && channels != 4)) abort();
        free(rgb);
    } else if (rgb) {
        abort();
    }
    // The upload path: header probe, then the decoder the bytes name; a decode that succeeds must
    // agree with the probe's size.
    image_format format;
    int probe_w = 0, probe_h = 0;
    bool probed = image_probe(in.bytes, size, "fuzz upload", &format, &probe_w, &probe_h) == LCM_OK;
    rgb = NULL;
    if (image_decode_any(in.bytes, size, "fuzz upload", &rgb, &width, &height) == LCM_OK) {
        if (!rgb || !probed || width != probe_w || height != probe_h) abort();
        free(rgb);
    } else if (rgb) {
        abort();
    }
    guarded_input_free(&in);
    return 0;
}
