// libFuzzer harness for the image readers that take user files (init and control images): the
// input is decoded as JPEG and as PNG (both must fail cleanly or return a bounded image), and a
// decoded image goes through the canny preprocessor and a resize, as `lcm generate` would.
// Seeds (fuzz/corpus/fuzz_image/): an 8x6 PNG and JPEG written once with image_write_png and
// libjpeg from made-up pixels (no fixture data).
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "guarded_input.h"
#include "io/image.h"
#include "io/image_jpeg.h"
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
    guarded_input_free(&in);
    return 0;
}
