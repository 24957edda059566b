// Canny edge detection; see canny.h. Follows OpenCV 4's canny.cpp step for step (its map values:
// 0 = may be an edge, 1 = not an edge, 2 = edge).
#include "preprocess/canny.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

// OpenCV's fixed-point tan(22.5 degrees).
#define CANNY_SHIFT 15
#define TAN_22_5 ((int)(0.4142135623730950488016887242097 * (1 << CANNY_SHIFT) + 0.5))

static int clamp_index(int i, int n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

// 3x3 Sobel derivatives of one channel at (x, y), borders replicated (cv::BORDER_REPLICATE).
static void sobel(const uint8_t *p, int width, int height, int channels, int channel, int x, int y,
                  int *dx, int *dy) {
    int v[3][3];
    for (int j = -1; j <= 1; j++)
        for (int i = -1; i <= 1; i++)
            v[j + 1][i + 1] = p[((size_t)clamp_index(y + j, height) * width + clamp_index(x + i, width)) *
                                    channels + channel];
    *dx = (v[0][2] - v[0][0]) + 2 * (v[1][2] - v[1][0]) + (v[2][2] - v[2][0]);
    *dy = (v[2][0] - v[0][0]) + 2 * (v[2][1] - v[0][1]) + (v[2][2] - v[0][2]);
}

lcm_status canny_edges(const uint8_t *pixels, int width, int height, int channels, double low_thresh,
                       double high_thresh, uint8_t *edges) {
    if (!pixels || !edges || width < 1 || height < 1 || (channels != 1 && channels != 3))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "canny: %dx%d image with %d channels, expected a "
                        "non-empty 1- or 3-channel image", width, height, channels);
    if (!isfinite(low_thresh) || !isfinite(high_thresh) || low_thresh < 0 || high_thresh < 0 ||
        low_thresh > 1e6 || high_thresh > 1e6)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "canny: thresholds %g / %g, expected 0..1e6",
                        low_thresh, high_thresh);
    if (low_thresh > high_thresh) {
        double t = low_thresh;
        low_thresh = high_thresh;
        high_thresh = t;
    }
    int low = (int)floor(low_thresh), high = (int)floor(high_thresh);

    // Gradients with a zero border of one pixel around the magnitudes, as OpenCV's row buffers.
    size_t w2 = (size_t)width + 2, h2 = (size_t)height + 2;
    int *mag = calloc(w2 * h2, sizeof *mag);
    int *gx = malloc((size_t)width * height * sizeof *gx), *gy = malloc((size_t)width * height * sizeof *gy);
    uint8_t *map = malloc(w2 * h2);
    size_t stack_cap = (size_t)width * height;
    uint8_t **stack = malloc(stack_cap * sizeof *stack);
    if (!mag || !gx || !gy || !map || !stack) {
        free(mag), free(gx), free(gy), free(map), free(stack);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "canny: out of memory for %dx%d", width, height);
    }
    #pragma omp parallel for
    for (int y = 0; y < height; y++) {
        for (int x = 0; x < width; x++) {
            int best = -1, bdx = 0, bdy = 0;
            for (int c = 0; c < channels; c++) {
                int dx, dy;
                sobel(pixels, width, height, channels, c, x, y, &dx, &dy);
                int m = abs(dx) + abs(dy);
                if (m > best) best = m, bdx = dx, bdy = dy; // first channel wins ties, as OpenCV
            }
            mag[(size_t)(y + 1) * w2 + x + 1] = best;
            gx[(size_t)y * width + x] = bdx;
            gy[(size_t)y * width + x] = bdy;
        }
    }

    // Non-maximum suppression: a pixel above `low` stays a candidate when it is a maximum along its
    // gradient direction; candidates above `high` are edges right away.
    memset(map, 1, w2 * h2);
    size_t top = 0;
    for (int y = 0; y < height; y++) {
        const int *m_prev = mag + (size_t)y * w2 + 1, *m_row = m_prev + w2, *m_next = m_row + w2;
        uint8_t *map_row = map + (size_t)(y + 1) * w2 + 1;
        for (int x = 0; x < width; x++) {
            int m = m_row[x];
            if (m <= low) continue;
            int xs = gx[(size_t)y * width + x], ys = gy[(size_t)y * width + x];
            int ax = abs(xs), ay = abs(ys) << CANNY_SHIFT;
            int tg22x = ax * TAN_22_5;
            bool is_max;
            if (ay < tg22x) {
                is_max = m > m_row[x - 1] && m >= m_row[x + 1]; // gradient near horizontal
            } else {
                int tg67x = tg22x + (ax << (CANNY_SHIFT + 1));
                if (ay > tg67x) {
                    is_max = m > m_prev[x] && m >= m_next[x]; // near vertical
                } else {
                    int s = (xs ^ ys) < 0 ? -1 : 1; // diagonal
                    is_max = m > m_prev[x - s] && m > m_next[x + s];
                }
            }
            if (!is_max) continue;
            if (m > high) {
                map_row[x] = 2;
                stack[top++] = &map_row[x];
            } else {
                map_row[x] = 0;
            }
        }
    }

    // Hysteresis: grow the edges through 8-connected candidates. Each pixel is pushed at most once
    // (it becomes 2 when pushed), so the stack never exceeds width * height.
    const ptrdiff_t step = (ptrdiff_t)w2;
    const ptrdiff_t around[8] = {-step - 1, -step, -step + 1, -1, 1, step - 1, step, step + 1};
    while (top > 0) {
        uint8_t *p = stack[--top];
        for (int k = 0; k < 8; k++) {
            uint8_t *q = p + around[k];
            if (*q == 0) {
                *q = 2;
                stack[top++] = q;
            }
        }
    }
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            edges[(size_t)y * width + x] = map[(size_t)(y + 1) * w2 + x + 1] == 2 ? 255 : 0;
    free(mag), free(gx), free(gy), free(map), free(stack);
    return LCM_OK;
}
