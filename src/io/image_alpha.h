// PNG reading that keeps an RGBA image's alpha channel, for annotators that, like controlnet_aux's
// HWC3, composite transparent pixels over white instead of dropping alpha (image.h's readers
// return RGB only, as PIL's convert("RGB") does).
#ifndef LCM_IO_IMAGE_ALPHA_H
#define LCM_IO_IMAGE_ALPHA_H

#include <stdint.h>

#include "lcm.h"

// Reads `path`: for a PNG of colour type RGBA (8 or 16 bit; 16-bit samples reduced to their high
// byte) *channels = 4 and *pixels holds RGBA; for every other PNG *channels = 3 and *pixels is
// image_read_png's RGB. *pixels is malloc'd, owned by the caller. Errors name the file.
lcm_status image_read_png_keep_alpha(const char *path, uint8_t **pixels, int *width, int *height,
                                     int *channels);

#endif
