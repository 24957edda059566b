// The canny preprocessor (src/preprocess/canny.c) on synthetic images whose edges are known:
//  - a filled rectangle gives exactly one closed outline (where OpenCV puts it);
//  - a flat image gives no edges; a step below the low threshold gives none, above the high one a
//    straight line;
//  - hysteresis: a weak edge survives only where it touches a strong one;
//  - colour: the strongest channel decides (an edge in blue only is found);
//  - bad arguments are errors; the public lcm_canny returns a 3-channel 0/255 image.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "preprocess/canny.h"
#include "testutil.h"

enum { W = 40, H = 32 };

static int count_edges(const uint8_t *e, int n) {
    int c = 0;
    for (int i = 0; i < n; i++) c += e[i] == 255;
    return c;
}

int main(void) {
    static uint8_t img[W * H], edges[W * H];

    // Filled rectangle x in [10, 29], y in [8, 23] at 200 on 0.
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) img[y * W + x] = (x >= 10 && x <= 29 && y >= 8 && y <= 23) ? 200 : 0;
    CHECK_OK(canny_edges(img, W, H, 1, 100, 200, edges));
    // The gradient is equally strong on both sides of the step; OpenCV's non-maximum test
    // (m > previous, m >= next) keeps the first of the two, so the outline runs on the outer pixels
    // at the left/top sides and the inner pixels at the right/bottom: x 9 and 29, y 7 and 23.
    int off_outline = 0, outline = 0, missing = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            bool within = x >= 9 && x <= 29 && y >= 7 && y <= 23;
            bool border = within && (x == 9 || x == 29 || y == 7 || y == 23);
            // At the corners the gradient is diagonal and the outline cuts the corner pixel.
            bool corner = (abs(x - 9) <= 1 || abs(x - 29) <= 1) && (abs(y - 7) <= 1 || abs(y - 23) <= 1);
            bool edge = edges[y * W + x] == 255;
            CHECK(edges[y * W + x] == 0 || edge, "edge map value %d is not 0/255", edges[y * W + x]);
            if (edge && !border && !corner) off_outline++;
            if (border && !corner) {
                outline++;
                missing += !edge;
            }
        }
    fprintf(stderr, "rectangle: %d edge pixels, %d off the outline, %d of %d outline pixels missing\n",
            count_edges(edges, W * H), off_outline, missing, outline);
    CHECK(count_edges(edges, W * H) >= outline && count_edges(edges, W * H) <= outline + 16,
          "rectangle: %d edge pixels for an outline of %d", count_edges(edges, W * H), outline);
    CHECK(off_outline == 0 && missing == 0, "rectangle outline: %d pixels off it, %d missing", off_outline, missing);
    // Flat image: nothing.
    memset(img, 90, sizeof img);
    CHECK_OK(canny_edges(img, W, H, 1, 100, 200, edges));
    CHECK(count_edges(edges, W * H) == 0, "flat image has %d edge pixels", count_edges(edges, W * H));

    // Vertical step of height s: Sobel magnitude 4*s at the step.
    for (int s = 20; s <= 60; s += 40) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) img[y * W + x] = x < 20 ? 50 : (uint8_t)(50 + s);
        CHECK_OK(canny_edges(img, W, H, 1, 100, 200, edges));
        int n = count_edges(edges, W * H);
        if (s == 20) {
            CHECK(n == 0, "step of 20 (magnitude 80 < low 100): %d edge pixels", n);
        } else {
            // magnitude 240 on both columns 19 and 20: the NMS keeps exactly one column, all rows.
            int col19 = 0, col20 = 0;
            for (int y = 0; y < H; y++) col19 += edges[y * W + 19] == 255, col20 += edges[y * W + 20] == 255;
            CHECK(n == H && (col19 == H || col20 == H), "step of 60: %d edge pixels (col19 %d, col20 %d)",
                  n, col19, col20);
        }
    }

    // Hysteresis: a vertical line of magnitude between the thresholds, with a strong part in the
    // top half only when `strong` -- the weak part survives only when connected.
    for (int strong = 0; strong <= 1; strong++) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int step = (strong && y < H / 2) ? 80 : 40; // magnitudes 320 (> 200) and 160 (100..200)
                img[y * W + x] = x < 20 ? 50 : (uint8_t)(50 + step);
            }
        CHECK_OK(canny_edges(img, W, H, 1, 100, 200, edges));
        int bottom = 0;
        for (int y = H / 2 + 2; y < H; y++)
            for (int x = 0; x < W; x++) bottom += edges[y * W + x] == 255;
        if (strong) CHECK(bottom >= H / 2 - 2, "weak edge connected to a strong one was dropped (%d)", bottom);
        else CHECK(count_edges(edges, W * H) == 0, "weak edge alone kept: %d pixels", count_edges(edges, W * H));
    }

    // Colour: an edge present only in the blue channel.
    static uint8_t rgb[W * H * 3];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = rgb + (y * W + x) * 3;
            p[0] = 30, p[1] = 30, p[2] = x < 20 ? 0 : 200;
        }
    CHECK_OK(canny_edges(rgb, W, H, 3, 100, 200, edges));
    CHECK(count_edges(edges, W * H) == H, "blue-only edge: %d pixels, expected %d", count_edges(edges, W * H), H);

    // Thresholds given high-to-low are swapped, as OpenCV does.
    static uint8_t swapped[W * H];
    CHECK_OK(canny_edges(rgb, W, H, 3, 200, 100, swapped));
    CHECK(!memcmp(edges, swapped, sizeof edges), "swapped thresholds give a different map");

    // Bad arguments.
    lcm_status st = canny_edges(rgb, W, H, 2, 100, 200, edges);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), "channels"), "2 channels: %s", lcm_last_error());
    st = canny_edges(rgb, W, H, 3, -1, 200, edges);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), "threshold"), "negative threshold: %s",
          lcm_last_error());

    // Public wrapper: RGB in, RGB out with equal channels.
    lcm_image in = {W, H, rgb}, out;
    CHECK_OK(lcm_canny(&in, 100, 200, &out));
    CHECK(out.width == W && out.height == H && out.rgb, "lcm_canny output %dx%d", out.width, out.height);
    if (out.rgb) {
        int bad = 0;
        for (int i = 0; i < W * H; i++)
            bad += out.rgb[3 * i] != edges[i] || out.rgb[3 * i + 1] != edges[i] || out.rgb[3 * i + 2] != edges[i];
        CHECK(bad == 0, "lcm_canny differs from canny_edges in %d pixels", bad);
    }
    lcm_image_release(&out);
    lcm_image empty = {0, 0, NULL};
    CHECK(lcm_canny(&empty, 100, 200, &out) == LCM_ERR_INVALID_ARGUMENT && out.rgb == NULL, "empty image accepted");
    return test_finish();
}
