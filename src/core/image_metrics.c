#include "core/image_metrics.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"

double image_psnr(const uint8_t *a, const uint8_t *b, int width, int height) {
    size_t n = (size_t)width * (size_t)height * 3;
    double squared = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        squared += d * d;
    }
    if (squared == 0.0) return INFINITY;
    return 10.0 * log10(255.0 * 255.0 / (squared / (double)n));
}

// Separable Gaussian weighting: `window` taps of exp(-x^2 / 2 sigma^2), normalised to sum 1.
static void gaussian_taps(double *taps, int window, double sigma) {
    double sum = 0.0;
    for (int i = 0; i < window; i++) {
        double x = i - (window - 1) / 2.0;
        taps[i] = exp(-x * x / (2.0 * sigma * sigma));
        sum += taps[i];
    }
    for (int i = 0; i < window; i++) taps[i] /= sum;
}

// Weighted means of x, y, x^2, y^2 and xy under the window at every valid position of one
// channel: first along rows into `rows` (5 planes of height x out_w), then down the columns.
static double channel_ssim(const uint8_t *a, const uint8_t *b, int width, int height, int channel,
                           const double *taps, int window, double *rows) {
    const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
    int out_w = width - window + 1, out_h = height - window + 1;
    size_t plane = (size_t)height * (size_t)out_w;
    for (int y = 0; y < height; y++) {
        for (int x = 0; x < out_w; x++) {
            double m[5] = {0, 0, 0, 0, 0};
            for (int k = 0; k < window; k++) {
                size_t at = ((size_t)y * width + x + k) * 3 + channel;
                double va = a[at], vb = b[at], t = taps[k];
                m[0] += t * va;
                m[1] += t * vb;
                m[2] += t * va * va;
                m[3] += t * vb * vb;
                m[4] += t * va * vb;
            }
            for (int s = 0; s < 5; s++) rows[s * plane + (size_t)y * out_w + x] = m[s];
        }
    }
    double total = 0.0;
    for (int y = 0; y < out_h; y++) {
        for (int x = 0; x < out_w; x++) {
            double m[5] = {0, 0, 0, 0, 0};
            for (int k = 0; k < window; k++)
                for (int s = 0; s < 5; s++) m[s] += taps[k] * rows[s * plane + (size_t)(y + k) * out_w + x];
            double mean_a = m[0], mean_b = m[1];
            double var_a = m[2] - mean_a * mean_a, var_b = m[3] - mean_b * mean_b;
            double covariance = m[4] - mean_a * mean_b;
            total += ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) /
                     ((mean_a * mean_a + mean_b * mean_b + c1) * (var_a + var_b + c2));
        }
    }
    return total / ((double)out_w * out_h);
}

double image_ssim(const uint8_t *a, const uint8_t *b, int width, int height) {
    int window = 11;
    int smaller = width < height ? width : height;
    if (smaller < window) window = smaller % 2 ? smaller : smaller - 1;
    if (window < 1) window = 1;
    double taps[11];
    gaussian_taps(taps, window, 1.5);
    size_t plane = (size_t)height * (size_t)(width - window + 1);
    double *rows = malloc(5 * plane * sizeof *rows);
    if (!rows) {
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory computing SSIM of a %dx%d image", width, height);
        return NAN;
    }
    double sum = 0.0;
    for (int channel = 0; channel < 3; channel++)
        sum += channel_ssim(a, b, width, height, channel, taps, window, rows);
    free(rows);
    return sum / 3.0;
}
