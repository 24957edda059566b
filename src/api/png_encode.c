// lcm_png_encode: a PNG in memory (src/io/image.h), e.g. for a server's base64 responses.
#include "io/image.h"
#include "lcm.h"

_Static_assert(LCM_IMAGE_MAX_SIDE == IMAGE_MAX_SIDE, "lcm.h's image side limit is the readers'");

lcm_status lcm_png_encode(const lcm_image *image, const char *parameters, void **png, size_t *size) {
    const char *key = "parameters";
    return image_encode_png(image->rgb, image->width, image->height, parameters ? &key : NULL,
                            parameters ? &parameters : NULL, parameters ? 1 : 0, png, size);
}
