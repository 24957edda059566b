// Canny edge detection, as OpenCV's cv2.Canny(image, low, high) with its defaults (3x3 Sobel,
// L1 gradient magnitude |dx| + |dy|), which is what controlnet_aux's CannyDetector calls to make
// the edge maps the canny ControlNets were trained on:
//
//   Sobel dx, dy per channel (border replicated); per pixel the channel with the largest magnitude
//   -> non-maximum suppression along the gradient direction (quantised to 0/45/90/135 degrees with
//   OpenCV's fixed-point tan(22.5) test) -> hysteresis: pixels above `high` seed edges that grow
//   through 8-connected pixels above `low`.
//
// Like cv2.Canny (and unlike textbook Canny) there is no Gaussian blur before the gradient;
// controlnet_aux does not blur either.
#ifndef LCM_PREPROCESS_CANNY_H
#define LCM_PREPROCESS_CANNY_H

#include <stdint.h>

#include "lcm.h"

// rgb: height rows of width*channels bytes (channels 1 or 3). edges: width*height bytes, 255 on an
// edge and 0 elsewhere (caller-allocated). Thresholds are floored to integers as OpenCV does and
// swapped when low > high. Errors: bad sizes or thresholds (LCM_ERR_INVALID_ARGUMENT).
lcm_status canny_edges(const uint8_t *pixels, int width, int height, int channels, double low,
                       double high, uint8_t *edges);

#endif
