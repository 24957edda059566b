// JPEG reading (src/io/image_jpeg.c) and format sniffing: images encoded here with libjpeg decode
// back to (nearly) the same pixels; grayscale comes out as R = G = B; a PNG file reads through the
// same entry point; damaged, truncated, oversized and non-image files are clear errors naming the
// file.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/image.h"
#include "io/image_format.h"
#include "io/image_jpeg.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-jpeg-XXXXXX";

// The call must fail with `want` and a message that contains `needle`.
static void expect_failure(lcm_status st, lcm_status want, const char *needle, const char *what) {
    CHECK(st == want && strstr(lcm_last_error(), needle) != NULL, "%s: got %s '%s', expected %s naming '%s'",
          what, lcm_status_name(st), lcm_last_error(), lcm_status_name(want), needle);
    fprintf(stderr, "%s -> %s\n", what, lcm_last_error());
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    enum { W = 48, H = 40 };
    static uint8_t rgb[W * H * 3], gray[W * H];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = rgb + ((size_t)y * W + x) * 3;
            p[0] = (uint8_t)(x * 5), p[1] = (uint8_t)(y * 6), p[2] = (uint8_t)(128 + x - y);
            gray[y * W + x] = (uint8_t)(x * 2 + y * 3);
        }

    // Colour, quality 100: within a few levels of the original everywhere.
    unsigned long size;
    unsigned char *jpeg = test_encode_jpeg(rgb, W, H, 3, 100, false, &size);
    char path[1200];
    test_path(path, sizeof path, "%s/colour.jpg", tmpdir);
    test_write_file(path, jpeg, size);
    uint8_t *got = NULL;
    int w = 0, h = 0;
    CHECK_OK(image_read_file(path, &got, &w, &h));
    CHECK(w == W && h == H, "decoded size %dx%d, expected %dx%d", w, h, W, H);
    if (got && w == W && h == H) {
        int worst = 0;
        for (size_t i = 0; i < sizeof rgb; i++) worst = abs((int)got[i] - rgb[i]) > worst ? abs((int)got[i] - rgb[i]) : worst;
        fprintf(stderr, "quality-100 colour JPEG: max |diff| %d levels\n", worst);
        CHECK(worst <= 8, "decoded colour JPEG differs by %d levels", worst);
    }
    free(got);

    // Truncated: the error names the file and says the data is damaged.
    char cut[1200];
    test_path(cut, sizeof cut, "%s/truncated.jpg", tmpdir);
    test_write_file(cut, jpeg, size / 2);
    expect_failure(image_read_file(cut, &got, &w, &h), LCM_ERR_FORMAT, cut, "truncated JPEG");
    CHECK(got == NULL && w == 0 && h == 0, "truncated JPEG returned pixels");

    // Corrupt entropy-coded data.
    unsigned char *bad = malloc(size);
    memcpy(bad, jpeg, size);
    for (unsigned long i = size / 2; i < size - 2; i++) bad[i] = (unsigned char)(i * 37);
    expect_failure(image_decode_jpeg(bad, size, "corrupt.jpg", &got, &w, &h), LCM_ERR_FORMAT,
                   "corrupt.jpg", "corrupt JPEG");

    // A frame header claiming 65500 x 65500 pixels: refused before any allocation.
    memcpy(bad, jpeg, size);
    for (unsigned long i = 2; i + 8 < size; i++)
        if (bad[i] == 0xFF && (bad[i + 1] == 0xC0 || bad[i + 1] == 0xC2)) {
            bad[i + 5] = 0xFF, bad[i + 6] = 0xDC, bad[i + 7] = 0xFF, bad[i + 8] = 0xDC;
            break;
        }
    expect_failure(image_decode_jpeg(bad, size, "huge.jpg", &got, &w, &h), LCM_ERR_FORMAT, "huge.jpg",
                   "oversized JPEG header");
    free(bad);
    free(jpeg);

    // Grayscale: R = G = B = the gray level.
    jpeg = test_encode_jpeg(gray, W, H, 1, 100, false, &size);
    CHECK_OK(image_decode_jpeg(jpeg, size, "gray.jpg", &got, &w, &h));
    if (got) {
        int worst = 0, unequal = 0;
        for (int i = 0; i < W * H; i++) {
            unequal += got[3 * i] != got[3 * i + 1] || got[3 * i] != got[3 * i + 2];
            int d = abs((int)got[3 * i] - gray[i]);
            worst = d > worst ? d : worst;
        }
        CHECK(unequal == 0 && worst <= 4, "grayscale JPEG: %d unequal pixels, max |diff| %d", unequal, worst);
    }
    free(got);
    free(jpeg);

    // A PNG goes through the same entry point, exactly.
    char png[1200];
    test_path(png, sizeof png, "%s/same.png", tmpdir);
    CHECK_OK(image_write_png(png, rgb, W, H, NULL, NULL, 0));
    CHECK_OK(image_read_file(png, &got, &w, &h));
    CHECK(got && w == W && h == H && !memcmp(got, rgb, sizeof rgb), "PNG through image_read_file differs");
    free(got);

    // Neither PNG nor JPEG; a missing file; an empty file.
    char text[1200], missing[1200], empty[1200];
    test_path(text, sizeof text, "%s/notes.txt", tmpdir);
    test_write_file(text, "hello, not an image", 19);
    expect_failure(image_read_file(text, &got, &w, &h), LCM_ERR_FORMAT, text, "text file");
    test_path(missing, sizeof missing, "%s/missing.jpg", tmpdir);
    expect_failure(image_read_file(missing, &got, &w, &h), LCM_ERR_IO, missing, "missing file");
    test_path(empty, sizeof empty, "%s/empty.jpg", tmpdir);
    test_write_file(empty, "", 0);
    expect_failure(image_read_file(empty, &got, &w, &h), LCM_ERR_FORMAT, empty, "empty file");
    // The public wrapper: zeroed image on failure.
    lcm_image img = {1, 1, NULL};
    CHECK(lcm_image_read(missing, &img) == LCM_ERR_IO && img.rgb == NULL && img.width == 0,
          "lcm_image_read on a missing file");

    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
