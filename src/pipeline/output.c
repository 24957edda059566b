// Writing results for the public API.
#include "core/error.h"
#include "io/image.h"
#include "lcm.h"

lcm_status lcm_write_png(const char *path, const lcm_image *image, const char *parameters) {
    if (!path || !image || !image->rgb)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_write_png: NULL argument");
    const char *keys[] = {"parameters"};
    const char *values[] = {parameters};
    return image_write_png(path, image->rgb, image->width, image->height, keys, values,
                           parameters ? 1 : 0);
}
