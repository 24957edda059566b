// Resizing 8-bit RGB images exactly as Pillow's Image.resize(size, Image.LANCZOS) does, which is
// what diffusers' VaeImageProcessor.resize uses (config resample "lanczos") when an init or control
// image is not the size of the generation.
//
// Pillow's algorithm (libImaging/Resample.c): separable, horizontal pass first, then vertical, each
// pass only when that side changes; per output pixel a Lanczos-3 window scaled by the
// downscale factor, weights normalised to sum 1 in double, then rounded to 22-bit fixed point;
// accumulation in int from 2^21 (rounding), result shifted down and clamped to 0..255. The
// intermediate image is 8-bit, as in Pillow.
#ifndef LCM_IO_IMAGE_RESIZE_H
#define LCM_IO_IMAGE_RESIZE_H

#include <stdint.h>

#include "lcm.h"

// rgb: height rows of width*3 bytes -> *out (out_width*out_height*3 bytes, malloc'd, owned by the
// caller). Sizes must be 1..IMAGE_MAX_SIDE.
lcm_status image_resize_lanczos(const uint8_t *rgb, int width, int height, int out_width,
                                int out_height, uint8_t **out);

#endif
