#include "preprocess/normal_detector.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "preprocess/cv_resize.h"

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
static const float imagenet_std[3] = {0.229f, 0.224f, 0.225f};

lcm_status hwc3_u8(const uint8_t *src, int h, int w, int channels, uint8_t **rgb) {
    *rgb = NULL;
    if (channels != 1 && channels != 3 && channels != 4)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "HWC3: %d channels (expected 1, 3 or 4)",
                        channels);
    size_t n = (size_t)h * w;
    uint8_t *out = malloc(n ? n * 3 : 1);
    if (!out) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "HWC3: out of memory");
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src + i * channels;
        for (int c = 0; c < 3; c++) {
            if (channels == 1) {
                out[i * 3 + c] = p[0];
            } else if (channels == 3) {
                out[i * 3 + c] = p[c];
            } else {
                // numpy float32: color * alpha + 255 * (1 - alpha), clip, astype(uint8) truncates.
                float alpha = (float)p[3] / 255.0f;
                float v = (float)p[c] * alpha + 255.0f * (1.0f - alpha);
                v = v < 0 ? 0 : v > 255 ? 255 : v;
                out[i * 3 + c] = (uint8_t)v;
            }
        }
    }
    *rgb = out;
    return LCM_OK;
}

lcm_status detector_resize_size(int h, int w, int resolution, int *out_h, int *out_w) {
    if (h < 1 || w < 1 || resolution < 1 || resolution > 16384)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "resize_image: %dx%d image, resolution %d", w, h,
                        resolution);
    double k = (double)resolution / (double)(h < w ? h : w);
    // np.round rounds half to even, like nearbyint in the default rounding mode.
    double rh = nearbyint((double)h * k / 64.0) * 64.0, rw = nearbyint((double)w * k / 64.0) * 64.0;
    if (rh < 64 || rw < 64 || rh > 16384 || rw > 16384)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "resize_image: a %dx%d image at resolution %d gives %.0fx%.0f; each side "
                        "must come out between 64 and 16384",
                        w, h, resolution, rw, rh);
    *out_h = (int)rh;
    *out_w = (int)rw;
    return LCM_OK;
}

lcm_status detector_resize_image(const uint8_t *rgb, int h, int w, int resolution, uint8_t **out,
                                 int *out_h, int *out_w) {
    *out = NULL;
    LCM_TRY(detector_resize_size(h, w, resolution, out_h, out_w));
    double k = (double)resolution / (double)(h < w ? h : w);
    return cv_resize_u8(rgb, h, w, 3, *out_h, *out_w, k > 1 ? CV_INTER_LANCZOS4 : CV_INTER_AREA,
                        out);
}

tensor *normal_detector_input(const uint8_t *rgb, int h, int w, tensor **scaled) {
    if (scaled) *scaled = NULL;
    tensor *x = tensor_new4(1, 3, h, w);
    tensor *s = scaled ? tensor_new4(1, 3, h, w) : NULL;
    if (!x || (scaled && !s)) {
        tensor_free(x);
        tensor_free(s);
        return NULL;
    }
    size_t plane = (size_t)h * w;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++) {
            float v = (float)rgb[i * 3 + c] / 255.0f;
            if (s) s->data[c * plane + i] = v;
            x->data[c * plane + i] = (v - imagenet_mean[c]) / imagenet_std[c];
        }
    if (scaled) *scaled = s;
    return x;
}

lcm_status normal_detector_to_u8(const tensor *prediction, uint8_t **u8, tensor **normal01) {
    *u8 = NULL;
    if (normal01) *normal01 = NULL;
    if (!prediction || prediction->ndim != 4 || prediction->shape[0] != 1 || prediction->shape[1] < 3)
        return lcm_fail(LCM_ERR_INTERNAL, "normal map: expected a [1, >=3, H, W] prediction");
    tensor *plain = prediction->layout == TENSOR_NCHW ? NULL : tensor_to_nchw(prediction);
    const tensor *p = plain ? plain : prediction;
    if (!p) return LCM_ERR_OUT_OF_MEMORY;
    int64_t h = p->shape[2], w = p->shape[3];
    size_t plane = (size_t)(h * w);
    uint8_t *out = malloc(plane * 3);
    tensor *n01 = normal01 ? tensor_new4(1, 3, h, w) : NULL;
    if (!out || (normal01 && !n01)) {
        free(out);
        tensor_free(n01);
        tensor_free(plain);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "normal map: out of memory");
    }
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++) {
            float v = (p->data[c * plane + i] + 1.0f) * 0.5f;
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            if (n01) n01->data[c * plane + i] = v;
            float scaled = v * 255.0f;
            scaled = scaled < 0.0f ? 0.0f : scaled > 255.0f ? 255.0f : scaled;
            out[i * 3 + c] = (uint8_t)scaled; // truncation, as numpy's astype(uint8)
        }
    tensor_free(plain);
    *u8 = out;
    if (normal01) *normal01 = n01;
    return LCM_OK;
}

lcm_status normal_detector_run(const normalbae *net, const uint8_t *pixels, int h, int w,
                               int channels, int detect_resolution, int image_resolution,
                               uint8_t **map, int *map_h, int *map_w) {
    *map = NULL;
    uint8_t *rgb = NULL, *resized = NULL, *normal = NULL;
    int rh = 0, rw = 0, oh = 0, ow = 0;
    tensor *x = NULL, *out = NULL;
    lcm_status st = hwc3_u8(pixels, h, w, channels, &rgb);
    if (st == LCM_OK) st = detector_resize_image(rgb, h, w, detect_resolution, &resized, &rh, &rw);
    // The output size comes from resizing the detect-resized input to image_resolution.
    if (st == LCM_OK) st = detector_resize_size(rh, rw, image_resolution, &oh, &ow);
    if (st == LCM_OK) {
        x = normal_detector_input(resized, rh, rw, NULL);
        out = normalbae_forward(net, x, NULL, NULL);
        if (!out) st = lcm_fail_context(LCM_ERR_INTERNAL, "NormalBae: ");
    }
    if (st == LCM_OK) st = normal_detector_to_u8(out, &normal, NULL);
    if (st == LCM_OK) st = cv_resize_u8(normal, rh, rw, 3, oh, ow, CV_INTER_LINEAR, map);
    if (st == LCM_OK) {
        *map_h = oh;
        *map_w = ow;
    }
    free(rgb);
    free(resized);
    free(normal);
    tensor_free(x);
    tensor_free(out);
    return st;
}
