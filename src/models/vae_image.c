// Conversions between the VAE's [-1, 1] images and 8-bit RGB pixels, as diffusers'
// VaeImageProcessor and numpy compute them (vae.h).
#include <math.h>
#include <stdint.h>

#include "core/error.h"
#include "models/vae.h"

// The "denormalize" step of VaeImageProcessor, in float32 like torch.
static inline float denormalize(float x) {
    float v = x / 2.0f + 0.5f;
    return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
}

void vae_image_to_float_nhwc(const tensor *image, float *out_nhwc) {
    int64_t n = image->shape[0], c = image->shape[1], h = image->shape[2], w = image->shape[3];
    if (image->layout == TENSOR_NHWC) {
        for (int64_t i = 0; i < n * h * w * c; i++) out_nhwc[i] = denormalize(image->data[i]);
        return;
    }
    for (int64_t b = 0; b < n; b++)
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t i = 0; i < h * w; i++)
                out_nhwc[(b * h * w + i) * c + ch] =
                    denormalize(image->data[(b * c + ch) * h * w + i]);
}

lcm_status vae_image_to_rgb8(const tensor *image, int index, uint8_t *rgb) {
    if (!image || image->ndim != 4 || image->shape[1] != 3 || index < 0 || index >= image->shape[0])
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "vae_image_to_rgb8: expected a [N, 3, H, W] image and 0 <= index < N");
    int64_t hw = image->shape[2] * image->shape[3];
    const float *planes = image->data + (int64_t)index * 3 * hw;
    // where channel ch of pixel i is: planes (NCHW) or interleaved (NHWC)
    int64_t channel_step = image->layout == TENSOR_NHWC ? 1 : hw;
    int64_t pixel_step = image->layout == TENSOR_NHWC ? 3 : 1;
    for (int64_t i = 0; i < hw; i++)
        for (int ch = 0; ch < 3; ch++) {
            // numpy: (x * 255).round() in float32; rintf rounds half to even like np.round.
            float v = rintf(denormalize(planes[ch * channel_step + i * pixel_step]) * 255.0f);
            rgb[i * 3 + ch] = v >= 0.0f && v <= 255.0f ? (uint8_t)v : 0; // NaN -> 0, never UB
        }
    return LCM_OK;
}

tensor *vae_rgb8_to_image(const uint8_t *rgb, int width, int height) {
    if (!rgb || width < 1 || height < 1) {
        lcm_fail(LCM_ERR_INVALID_ARGUMENT, "vae_rgb8_to_image: bad image size %dx%d", width,
                 height);
        return NULL;
    }
    int64_t hw = (int64_t)width * height;
    tensor *image = tensor_new4(1, 3, height, width);
    if (!image) return NULL;
    for (int64_t i = 0; i < hw; i++)
        for (int ch = 0; ch < 3; ch++) {
            // numpy: uint8 -> float32 / 255, then torch: 2 * x - 1, all in float32.
            float unit = (float)rgb[i * 3 + ch] / 255.0f;
            image->data[ch * hw + i] = 2.0f * unit - 1.0f;
        }
    return image;
}
