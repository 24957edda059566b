// Bilinear resizing with torch's align_corners=True rule (F.interpolate(x, size, mode="bilinear",
// align_corners=True)): output pixel d samples source position d * (in - 1) / (out - 1) (0 when
// out == 1), interpolating between the two neighbouring source pixels of each axis.
#ifndef LCM_OPS_INTERPOLATE_H
#define LCM_OPS_INTERPOLATE_H

#include "core/tensor.h"

// x [N, C, H, W] -> [N, C, out_h, out_w].
tensor *resize_bilinear_align_corners(const tensor *x, int64_t out_h, int64_t out_w);

#endif
