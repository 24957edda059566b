// controlnet_aux's NormalBaeDetector around the NormalBae network (models/normalbae.h): the
// pre- and post-processing of `NormalBaeDetector.__call__`, step by step so tests can check each
// one against the golden, and normal_detector_run for the whole call.
//
//   1. HWC3: 1 channel -> grey replicated, 4 channels -> composited over white (float32, truncated)
//   2. resize_image(img, detect_resolution): k = res / min(H, W), sides round(side * k / 64) * 64
//      (round half to even), cv2.resize with LANCZOS4 when k > 1 else AREA
//   3. float32(u8) / 255, HWC -> [1, 3, H, W], (x - mean) / std with ImageNet mean/std
//   4. the network; the normal is out_res1[:, :3]
//   5. ((n + 1) * 0.5).clip(0, 1) * 255, clip, truncated to uint8 (not rounded)
//   6. cv2.resize(map, size of resize_image(<detect-resized input>, image_resolution), LINEAR)
// Images are interleaved HWC uint8 buffers.
#ifndef LCM_PREPROCESS_NORMAL_DETECTOR_H
#define LCM_PREPROCESS_NORMAL_DETECTOR_H

#include <stdint.h>

#include "core/tensor.h"
#include "lcm.h"
#include "models/normalbae.h"

// controlnet_aux defaults.
#define NORMAL_DETECT_RESOLUTION 512
#define NORMAL_IMAGE_RESOLUTION 512

// Step 1. *rgb is malloc'd h*w*3 (caller frees). channels must be 1, 3 or 4.
lcm_status hwc3_u8(const uint8_t *src, int h, int w, int channels, uint8_t **rgb);

// Step 2's output size; LCM_ERR_INVALID_ARGUMENT when a side would round to 0.
lcm_status detector_resize_size(int h, int w, int resolution, int *out_h, int *out_w);

// Step 2: *out malloc'd (caller frees), RGB.
lcm_status detector_resize_image(const uint8_t *rgb, int h, int w, int resolution, uint8_t **out,
                                 int *out_h, int *out_w);

// Step 3: RGB u8 -> [1, 3, h, w] normalised network input. scaled (optional) receives the
// intermediate float32(u8) / 255 tensor (caller frees).
tensor *normal_detector_input(const uint8_t *rgb, int h, int w, tensor **scaled);

// Step 5: channels 0..2 of a [1, >=3, H, W] prediction -> *u8 (malloc'd H*W*3). normal01
// (optional) receives the clipped [1, 3, H, W] map in [0, 1] (caller frees).
lcm_status normal_detector_to_u8(const tensor *prediction, uint8_t **u8, tensor **normal01);

// Steps 1-6. *map is malloc'd (*map_h x *map_w x 3), owned by the caller.
lcm_status normal_detector_run(const normalbae *net, const uint8_t *pixels, int h, int w,
                               int channels, int detect_resolution, int image_resolution,
                               uint8_t **map, int *map_h, int *map_w);

#endif
