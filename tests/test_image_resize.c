// Pillow-compatible Lanczos resize (src/io/image_resize.c): same size is a copy; a constant image
// stays constant at every scale; one-axis resizes leave the other axis alone; a horizontal ramp
// stays monotone and within its range; a known two-pixel case matches Pillow's numbers worked out
// by hand; bad sizes are errors.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image_resize.h"
#include "testutil.h"

int main(void) {
    enum { W = 37, H = 23 };
    static uint8_t img[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) img[i] = (uint8_t)(i * 7 + i / 5);
    uint8_t *out = NULL;
    CHECK_OK(image_resize_lanczos(img, W, H, W, H, &out));
    CHECK(out && !memcmp(out, img, sizeof img), "same-size resize is not a copy");
    free(out);

    const int sizes[][2] = {{64, 40}, {16, 9}, {37, 50}, {80, 23}, {1, 1}, {5, 100}};
    memset(img, 173, sizeof img);
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int ow = sizes[s][0], oh = sizes[s][1];
        CHECK_OK(image_resize_lanczos(img, W, H, ow, oh, &out));
        int off = 0;
        for (int i = 0; out && i < ow * oh * 3; i++) off += out[i] != 173;
        CHECK(out && off == 0, "constant image resized to %dx%d: %d values changed", ow, oh, off);
        free(out);
    }

    // A horizontal ramp, only widened: every row equal, values monotone, within [0, 255].
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < 3; c++) img[(y * W + x) * 3 + c] = (uint8_t)(x * 6);
    int ow = 90;
    CHECK_OK(image_resize_lanczos(img, W, H, ow, H, &out));
    if (out) {
        int rows_differ = 0, backwards = 0;
        for (int y = 1; y < H; y++) rows_differ += memcmp(out, out + (size_t)y * ow * 3, (size_t)ow * 3) != 0;
        for (int x = 1; x < ow; x++) backwards += out[x * 3] + 1 < out[(x - 1) * 3];
        fprintf(stderr, "ramp 37 -> 90: first %d, last %d\n", out[0], out[(ow - 1) * 3]);
        CHECK(rows_differ == 0 && backwards == 0, "ramp: %d rows differ, %d steps backwards", rows_differ, backwards);
        CHECK(out[0] <= 2 && out[(ow - 1) * 3] >= 214, "ramp ends %d..%d, expected about 0..216", out[0],
              out[(ow - 1) * 3]);
    }
    free(out);

    // Two pixels [0, 255] -> 1 pixel: centre 1.0, support 6, both taps lanczos(+-0.5/2) equal, so
    // weights 1/2 each -> (255 * 2^21 + 2^21) >> 22 = 128.
    uint8_t two[6] = {0, 0, 0, 255, 255, 255};
    CHECK_OK(image_resize_lanczos(two, 2, 1, 1, 1, &out));
    CHECK(out && out[0] == 128 && out[1] == 128 && out[2] == 128, "2 -> 1 pixel gives %d", out ? out[0] : -1);
    free(out);

    lcm_status st = image_resize_lanczos(img, W, H, 0, 10, &out);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT && out == NULL, "zero width accepted");
    st = image_resize_lanczos(img, W, H, 100000, 10, &out);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT && out == NULL && strstr(lcm_last_error(), "100000"), "huge width: %s",
          lcm_last_error());
    return test_finish();
}
