// OpenCV's cv2.resize for 8-bit images (OpenCV 4.6, the version controlnet_aux's goldens were made
// with), re-implemented for the three interpolations the ControlNet preprocessors use:
//   CV_INTER_LINEAR   fixed-point bilinear (11-bit coefficients), half-pixel centres, clamped edges;
//                     an exact 2x downscale becomes INTER_AREA, as in OpenCV
//   CV_INTER_AREA     pixel-area averaging with float weights for downscales; integer factors take
//                     OpenCV's "fast" block-average path; upscales fall back to OpenCV's area-mode
//                     bilinear coefficients
//   CV_INTER_LANCZOS4 8x8 Lanczos window, fixed-point, edges replicated
// Pixels are interleaved HWC uint8 with `channels` per pixel. Results match OpenCV to within one
// level: OpenCV's SIMD and scalar code paths round some intermediate values differently.
#ifndef LCM_PREPROCESS_CV_RESIZE_H
#define LCM_PREPROCESS_CV_RESIZE_H

#include <stdint.h>

#include "lcm.h"

typedef enum cv_interpolation {
    CV_INTER_LINEAR,
    CV_INTER_AREA,
    CV_INTER_LANCZOS4,
} cv_interpolation;

// Resizes src (src_h x src_w x channels) into *dst (malloc'd, dst_h x dst_w x channels; the caller
// frees). Equal sizes copy.
lcm_status cv_resize_u8(const uint8_t *src, int src_h, int src_w, int channels, int dst_h,
                        int dst_w, cv_interpolation interpolation, uint8_t **dst);

#endif
