// Bilinear resizing with torch's align_corners=True rule (F.interpolate(x, size, mode="bilinear",
// align_corners=True)): output pixel d samples source position d * (in - 1) / (out - 1) (0 when
// out == 1), interpolating between the two neighbouring source pixels of each axis.
#ifndef LCM_OPS_INTERPOLATE_H
#define LCM_OPS_INTERPOLATE_H

#include "core/tensor.h"

// x [N, C, H, W] -> [N, C, out_h, out_w].
tensor *resize_bilinear_align_corners(const tensor *x, int64_t out_h, int64_t out_w);

// Only output rows [y0, y1) of that resize: [N, C, y1 - y0, out_w], identical to the same rows of
// the full result (for callers that process a large output in bands).
tensor *resize_bilinear_align_corners_rows(const tensor *x, int64_t out_h, int64_t out_w,
                                           int64_t y0, int64_t y1);

#endif
