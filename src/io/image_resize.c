// Pillow-exact Lanczos resize; see image_resize.h.
#include "io/image_resize.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/image.h"

#define PRECISION_BITS (32 - 8 - 2)
#define LANCZOS_SUPPORT 3.0

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}

static double lanczos(double x) {
    return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
}

// The taps of one axis: for output index i, `count[i]` weights starting at input index first[i],
// stored at weights[i * ksize ...] in fixed point.
typedef struct taps {
    int ksize;
    int *first, *count;
    int32_t *weights;
} taps;

static void taps_free(taps *t) {
    free(t->first);
    free(t->count);
    free(t->weights);
}

static bool taps_compute(int in_size, int out_size, taps *t) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = LANCZOS_SUPPORT * filterscale;
    t->ksize = (int)ceil(support) * 2 + 1;
    t->first = malloc(sizeof(int) * out_size);
    t->count = malloc(sizeof(int) * out_size);
    t->weights = calloc((size_t)out_size * t->ksize, sizeof(int32_t));
    double *k = malloc(sizeof(double) * t->ksize);
    if (!t->first || !t->count || !t->weights || !k) {
        free(k);
        return false;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double w = lanczos((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++) {
            if (ww != 0.0) k[x] /= ww;
            t->weights[(size_t)xx * t->ksize + x] =
                (int32_t)(k[x] < 0 ? -0.5 + k[x] * (1 << PRECISION_BITS) : 0.5 + k[x] * (1 << PRECISION_BITS));
        }
        t->first[xx] = xmin;
        t->count[xx] = xmax;
    }
    free(k);
    return true;
}

static uint8_t clip8(int32_t sum) {
    int32_t v = sum >> PRECISION_BITS; // arithmetic shift, as Pillow's lookup table index
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

// The horizontal pass: every row of `in` (in_w x h) -> `out` (out_w x h).
static void resample_horizontal(const uint8_t *in, int in_w, int h, uint8_t *out, int out_w, const taps *t) {
    #pragma omp parallel for
    for (int y = 0; y < h; y++)
        for (int xx = 0; xx < out_w; xx++) {
            const int32_t *k = t->weights + (size_t)xx * t->ksize;
            int32_t s[3] = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1)};
            const uint8_t *p = in + ((size_t)y * in_w + t->first[xx]) * 3;
            for (int x = 0; x < t->count[xx]; x++)
                for (int c = 0; c < 3; c++) s[c] += p[x * 3 + c] * k[x];
            uint8_t *o = out + ((size_t)y * out_w + xx) * 3;
            for (int c = 0; c < 3; c++) o[c] = clip8(s[c]);
        }
}

// The vertical pass: `in` (w x its height) -> `out` (w x out_h).
static void resample_vertical(const uint8_t *in, int w, uint8_t *out, int out_h, const taps *t) {
    size_t row = (size_t)w * 3;
    #pragma omp parallel for
    for (int yy = 0; yy < out_h; yy++) {
        const int32_t *k = t->weights + (size_t)yy * t->ksize;
        for (size_t i = 0; i < row; i++) {
            int32_t s = 1 << (PRECISION_BITS - 1);
            const uint8_t *p = in + (size_t)t->first[yy] * row + i;
            for (int y = 0; y < t->count[yy]; y++) s += p[y * row] * k[y];
            out[(size_t)yy * row + i] = clip8(s);
        }
    }
}

lcm_status image_resize_lanczos(const uint8_t *rgb, int width, int height, int out_width,
                                int out_height, uint8_t **out) {
    *out = NULL;
    if (!rgb || width < 1 || height < 1 || out_width < 1 || out_height < 1 || width > IMAGE_MAX_SIDE ||
        height > IMAGE_MAX_SIDE || out_width > IMAGE_MAX_SIDE || out_height > IMAGE_MAX_SIDE)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "resize %dx%d -> %dx%d: sides must be 1..%d", width,
                        height, out_width, out_height, IMAGE_MAX_SIDE);
    taps horizontal = {0}, vertical = {0};
    uint8_t *middle = NULL, *result = malloc((size_t)out_width * out_height * 3);
    bool ok = result != NULL;
    bool need_h = out_width != width, need_v = out_height != height;
    if (ok && need_h) ok = taps_compute(width, out_width, &horizontal);
    if (ok && need_v) ok = taps_compute(height, out_height, &vertical);
    if (ok && need_h && need_v) ok = (middle = malloc((size_t)out_width * height * 3)) != NULL;
    if (ok) {
        if (need_h && need_v) {
            resample_horizontal(rgb, width, height, middle, out_width, &horizontal);
            resample_vertical(middle, out_width, result, out_height, &vertical);
        } else if (need_h) {
            resample_horizontal(rgb, width, height, result, out_width, &horizontal);
        } else if (need_v) {
            resample_vertical(rgb, width, result, out_height, &vertical);
        } else {
            memcpy(result, rgb, (size_t)width * height * 3);
        }
    }
    taps_free(&horizontal);
    taps_free(&vertical);
    free(middle);
    if (!ok) {
        free(result);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "resize %dx%d -> %dx%d: out of memory", width, height,
                        out_width, out_height);
    }
    *out = result;
    return LCM_OK;
}
