// Images that condition a generation (ControlNet control images), prepared as diffusers'
// StableDiffusionControlNetPipeline.prepare_image does: VaeImageProcessor(do_convert_rgb=True,
// do_normalize=False).preprocess, i.e. uint8 / 255 in float32, NCHW, no [-1, 1] mapping, then one
// copy per UNet batch row (the batch images, twice with classifier-free guidance).
#ifndef LCM_PIPELINE_CONTROL_IMAGE_H
#define LCM_PIPELINE_CONTROL_IMAGE_H

#include <stdint.h>

#include "core/tensor.h"
#include "lcm.h"

// rgb: height rows of width*3 bytes; an image of another size than target_width x target_height is
// resized first as diffusers does (Pillow's Lanczos, io/image_resize.h).
// *out [repeat, 3, target_height, target_width] is owned by the caller.
lcm_status control_image_prepare(const uint8_t *rgb, int width, int height, int target_width,
                                 int target_height, int repeat, tensor **out);

#endif
