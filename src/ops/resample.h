// Resampling to an explicit output size (the fixed x2 case is upsample_nearest2x in ops.h).
#ifndef LCM_OPS_RESAMPLE_H
#define LCM_OPS_RESAMPLE_H

#include "core/tensor.h"

// Nearest-neighbour resize [N, C, H, W] -> [N, C, out_h, out_w] with torch's "nearest" rule
// (F.interpolate(x, size=(out_h, out_w), mode="nearest")): source index = min(floor(dst * (in/out)),
// in - 1) computed in float32, except that out == 2*in maps dst -> dst/2 exactly and out == in is the
// identity. The unet uses it when the latent size is not a multiple of 2^(number of upsamplers), so
// each upsampler must land exactly on the size of the skip connection it is concatenated with.
tensor *upsample_nearest(const tensor *x, int64_t out_h, int64_t out_w);

#endif
