#include "preprocess/cv_resize.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define COEF_BITS 11
#define COEF_SCALE (1 << COEF_BITS)

static uint8_t saturate_u8(long v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }
static short saturate_s16(float v) {
    long r = lrintf(v);
    return (short)(r < -32768 ? -32768 : r > 32767 ? 32767 : r);
}

// OpenCV's interpolateLanczos4: sinc-windowed taps for offsets -3..4 around the floor position,
// normalised to sum 1.
static void lanczos4_coeffs(float x, float coeffs[8]) {
    static const double s45 = 0.70710678118654752440084436210485;
    static const double cs[8][2] = {{1, 0},  {-s45, -s45}, {0, 1},  {s45, -s45},
                                    {-1, 0}, {s45, s45},   {0, -1}, {-s45, s45}};
    if (x < 1.1920929e-07f) { // FLT_EPSILON: exactly on a source pixel
        for (int i = 0; i < 8; i++) coeffs[i] = 0;
        coeffs[3] = 1;
        return;
    }
    float sum = 0;
    double y0 = -(x + 3) * M_PI * 0.25, s0 = sin(y0), c0 = cos(y0);
    for (int i = 0; i < 8; i++) {
        double y = -(x + 3 - i) * M_PI * 0.25;
        coeffs[i] = (float)((cs[i][0] * s0 + cs[i][1] * c0) / (y * y));
        sum += coeffs[i];
    }
    sum = 1.f / sum;
    for (int i = 0; i < 8; i++) coeffs[i] *= sum;
}

// Per output index of one axis: the first source index of the kernel window and the fixed-point
// weights (ksize taps), as OpenCV's resizeGeneric_ sets them up.
static void axis_taps(int src, int dst, double inv_scale, int ksize, bool area_mode, bool lanczos,
                      int *first, short *weights) {
    double scale = 1.0 / inv_scale;
    for (int d = 0; d < dst; d++) {
        float f;
        int s;
        if (!area_mode) {
            f = (float)((d + 0.5) * scale - 0.5);
            s = (int)floorf(f);
            f -= (float)s;
        } else {
            s = (int)floor(d * scale);
            f = (float)((d + 1) - (s + 1) * inv_scale);
            f = f <= 0 ? 0.f : f - floorf(f);
        }
        float c[8];
        if (lanczos) {
            lanczos4_coeffs(f, c);
        } else {
            // Bilinear: the window must stay inside the image (OpenCV moves it, with f = 0).
            if (s < 0) f = 0, s = 0;
            if (s >= src - 1) f = 0, s = src - 1;
            c[0] = 1.f - f;
            c[1] = f;
        }
        first[d] = s - (ksize / 2 - 1);
        for (int k = 0; k < ksize; k++) weights[d * ksize + k] = saturate_s16(c[k] * COEF_SCALE);
    }
}

static int clamp_index(int i, int n) { return i < 0 ? 0 : i >= n ? n - 1 : i; }

// Separable fixed-point resize: a horizontal pass to int rows (pixel * 2^11), then vertical.
static lcm_status resize_separable(const uint8_t *src, int sh, int sw, int cn, int dh, int dw,
                                   cv_interpolation interpolation, uint8_t *dst) {
    bool lanczos = interpolation == CV_INTER_LANCZOS4;
    bool area_mode = interpolation == CV_INTER_AREA;
    int ksize = lanczos ? 8 : 2;
    int *xfirst = malloc(sizeof(int) * (size_t)dw), *yfirst = malloc(sizeof(int) * (size_t)dh);
    short *xw = malloc(sizeof(short) * (size_t)dw * ksize);
    short *yw = malloc(sizeof(short) * (size_t)dh * ksize);
    int *rows = malloc(sizeof(int) * (size_t)sh * dw * cn);
    if (!xfirst || !yfirst || !xw || !yw || !rows) {
        free(xfirst), free(yfirst), free(xw), free(yw), free(rows);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "resize: out of memory");
    }
    axis_taps(sw, dw, (double)dw / sw, ksize, area_mode, lanczos, xfirst, xw);
    axis_taps(sh, dh, (double)dh / sh, ksize, area_mode, lanczos, yfirst, yw);
    #pragma omp parallel for
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < dw; x++)
            for (int c = 0; c < cn; c++) {
                int v = 0;
                for (int k = 0; k < ksize; k++)
                    v += src[((size_t)y * sw + clamp_index(xfirst[x] + k, sw)) * cn + c] *
                         xw[x * ksize + k];
                rows[((size_t)y * dw + x) * cn + c] = v;
            }
    int row_len = dw * cn;
    #pragma omp parallel for
    for (int y = 0; y < dh; y++) {
        const short *b = yw + y * ksize;
        uint8_t *out = dst + (size_t)y * row_len;
        if (!lanczos) {
            // OpenCV's SIMD bilinear vertical pass (VResizeLinearVec_32s8u): values pre-shifted by
            // 4, high halves of 16-bit products, rounding shift by 2.
            const int *r0 = rows + (size_t)clamp_index(yfirst[y], sh) * row_len;
            const int *r1 = rows + (size_t)clamp_index(yfirst[y] + 1, sh) * row_len;
            for (int x = 0; x < row_len; x++) {
                int a = ((r0[x] >> 4) * b[0]) >> 16, c = ((r1[x] >> 4) * b[1]) >> 16;
                out[x] = saturate_u8((a + c + 2) >> 2);
            }
        } else {
            const int *r[8];
            for (int k = 0; k < 8; k++) r[k] = rows + (size_t)clamp_index(yfirst[y] + k, sh) * row_len;
            for (int x = 0; x < row_len; x++) {
                long v = 0;
                for (int k = 0; k < 8; k++) v += (long)r[k][x] * b[k];
                out[x] = saturate_u8((v + (1L << (2 * COEF_BITS - 1))) >> (2 * COEF_BITS));
            }
        }
    }
    free(xfirst), free(yfirst), free(xw), free(yw), free(rows);
    return LCM_OK;
}

typedef struct area_tap {
    int di, si;
    float alpha;
} area_tap;

// OpenCV's computeResizeAreaTab: for each destination cell, the source cells it covers with the
// covered fraction as weight (partial cells at both ends).
static int area_taps(int ssize, int dsize, double scale, area_tap *tab) {
    int k = 0;
    for (int dx = 0; dx < dsize; dx++) {
        double fsx1 = dx * scale, fsx2 = fsx1 + scale;
        double cell = scale < ssize - fsx1 ? scale : ssize - fsx1;
        int sx1 = (int)ceil(fsx1), sx2 = (int)floor(fsx2);
        if (sx2 > ssize - 1) sx2 = ssize - 1;
        if (sx1 > sx2) sx1 = sx2;
        if (sx1 - fsx1 > 1e-3) tab[k++] = (area_tap){dx, sx1 - 1, (float)((sx1 - fsx1) / cell)};
        for (int sx = sx1; sx < sx2; sx++) tab[k++] = (area_tap){dx, sx, (float)(1.0 / cell)};
        if (fsx2 - sx2 > 1e-3) {
            double part = fsx2 - sx2 < 1.0 ? fsx2 - sx2 : 1.0;
            tab[k++] = (area_tap){dx, sx2, (float)((part < cell ? part : cell) / cell)};
        }
    }
    return k;
}

static lcm_status resize_area(const uint8_t *src, int sh, int sw, int cn, int dh, int dw,
                              uint8_t *dst) {
    area_tap *xtab = malloc(sizeof(area_tap) * (size_t)(sw * 2 + 2));
    area_tap *ytab = malloc(sizeof(area_tap) * (size_t)(sh * 2 + 2));
    int *yofs = malloc(sizeof(int) * (size_t)(dh + 1));
    if (!xtab || !ytab || !yofs) {
        free(xtab), free(ytab), free(yofs);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "resize: out of memory");
    }
    int nx = area_taps(sw, dw, (double)sw / dw, xtab);
    int ny = area_taps(sh, dh, (double)sh / dh, ytab);
    // Taps are grouped by destination row: yofs[d] is the first tap of row d.
    for (int k = 0, d = 0; d <= dh; d++) {
        while (k < ny && ytab[k].di < d) k++;
        yofs[d] = k;
    }
    int row_len = dw * cn;
    lcm_status st = LCM_OK;
    #pragma omp parallel
    {
        float *buf = malloc(sizeof(float) * (size_t)row_len);
        float *sum = malloc(sizeof(float) * (size_t)row_len);
        if (!buf || !sum) {
            #pragma omp critical
            st = LCM_ERR_OUT_OF_MEMORY;
        } else {
            #pragma omp for
            for (int dy = 0; dy < dh; dy++) {
                for (int x = 0; x < row_len; x++) sum[x] = 0;
                for (int j = yofs[dy]; j < yofs[dy + 1]; j++) {
                    const uint8_t *s = src + (size_t)ytab[j].si * sw * cn;
                    for (int x = 0; x < row_len; x++) buf[x] = 0;
                    for (int k = 0; k < nx; k++)
                        for (int c = 0; c < cn; c++)
                            buf[xtab[k].di * cn + c] += s[xtab[k].si * cn + c] * xtab[k].alpha;
                    for (int x = 0; x < row_len; x++) sum[x] += ytab[j].alpha * buf[x];
                }
                uint8_t *out = dst + (size_t)dy * row_len;
                for (int x = 0; x < row_len; x++) out[x] = saturate_u8(lrintf(sum[x]));
            }
        }
        free(buf);
        free(sum);
    }
    free(xtab), free(ytab), free(yofs);
    return st == LCM_OK ? LCM_OK : lcm_fail(st, "resize: out of memory");
}

// Integer downscale factors: block averages (OpenCV's resizeAreaFast). 2x2 blocks use the SIMD
// rounding (sum + 2) >> 2, other sizes sum * (1 / area) rounded to nearest even.
static void resize_area_fast(const uint8_t *src, int sw, int cn, int dh, int dw, int fy, int fx,
                             uint8_t *dst) {
    float inv_area = 1.f / (float)(fx * fy);
    #pragma omp parallel for
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++)
            for (int c = 0; c < cn; c++) {
                int sum = 0;
                for (int j = 0; j < fy; j++)
                    for (int i = 0; i < fx; i++)
                        sum += src[((size_t)(y * fy + j) * sw + (x * fx + i)) * cn + c];
                dst[((size_t)y * dw + x) * cn + c] = fx == 2 && fy == 2
                                                          ? (uint8_t)((sum + 2) >> 2)
                                                          : saturate_u8(lrintf((float)sum * inv_area));
            }
}

lcm_status cv_resize_u8(const uint8_t *src, int src_h, int src_w, int channels, int dst_h,
                        int dst_w, cv_interpolation interpolation, uint8_t **dst) {
    *dst = NULL;
    if (src_h < 1 || src_w < 1 || dst_h < 1 || dst_w < 1 || channels < 1 || channels > 4 ||
        dst_h > 16384 || dst_w > 16384)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "resize: %dx%d -> %dx%d (%d channels) is out of "
                        "range", src_w, src_h, dst_w, dst_h, channels);
    uint8_t *out = malloc((size_t)dst_h * dst_w * channels);
    if (!out) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "resize: out of memory");
    lcm_status st = LCM_OK;
    bool integer_down = src_w % dst_w == 0 && src_h % dst_h == 0;
    int fx = src_w / dst_w, fy = src_h / dst_h;
    if (src_h == dst_h && src_w == dst_w) {
        memcpy(out, src, (size_t)dst_h * dst_w * channels);
    } else if (interpolation == CV_INTER_LINEAR && integer_down && fx == 2 && fy == 2) {
        resize_area_fast(src, src_w, channels, dst_h, dst_w, 2, 2, out);
    } else if (interpolation == CV_INTER_AREA && src_w >= dst_w && src_h >= dst_h) {
        if (integer_down) resize_area_fast(src, src_w, channels, dst_h, dst_w, fy, fx, out);
        else st = resize_area(src, src_h, src_w, channels, dst_h, dst_w, out);
    } else {
        st = resize_separable(src, src_h, src_w, channels, dst_h, dst_w, interpolation, out);
    }
    if (st != LCM_OK) {
        free(out);
        return st;
    }
    *dst = out;
    return LCM_OK;
}
