// How close two RGB8 images are: PSNR and SSIM, the figures `lcm compare` and the precision tests
// report when an optimized pipeline (bf16, int8) is checked against the exact fp32 one.
#ifndef LCM_CORE_IMAGE_METRICS_H
#define LCM_CORE_IMAGE_METRICS_H

#include <stdint.h>

#include "lcm.h"

// Peak signal-to-noise ratio over all width*height*3 values, peak 255, in dB; +INFINITY when the
// images are identical. Both images are width x height RGB8, borrowed.
double image_psnr(const uint8_t *a, const uint8_t *b, int width, int height);

// Mean structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004): an 11x11 Gaussian window
// (sigma 1.5), K1 = 0.01, K2 = 0.03, dynamic range 255, computed per RGB channel over the
// positions where the window fits inside the image, then averaged over positions and channels.
// 1.0 for identical images. Images smaller than the window use the largest odd window that fits.
// Returns NaN only when an allocation fails (the error is set).
double image_ssim(const uint8_t *a, const uint8_t *b, int width, int height);

#endif
