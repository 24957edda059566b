// Control image preparation; see control_image.h.
#include "pipeline/control_image.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/image_resize.h"

lcm_status control_image_prepare(const uint8_t *rgb, int width, int height, int target_width,
                                 int target_height, int repeat, tensor **out) {
    *out = NULL;
    if (!rgb || width < 1 || height < 1 || repeat < 1)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "control image: empty image or batch");
    uint8_t *resized = NULL;
    if (width != target_width || height != target_height) {
        LCM_TRY(image_resize_lanczos(rgb, width, height, target_width, target_height, &resized));
        rgb = resized;
    }
    tensor *t = tensor_new4(repeat, 3, target_height, target_width);
    if (!t) {
        free(resized);
        return LCM_ERR_OUT_OF_MEMORY;
    }
    int64_t plane = (int64_t)target_width * target_height;
    for (int64_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) t->data[c * plane + i] = (float)rgb[i * 3 + c] / 255.0f;
    free(resized);
    for (int b = 1; b < repeat; b++) memcpy(t->data + b * 3 * plane, t->data, sizeof(float) * 3 * plane);
    *out = t;
    return LCM_OK;
}
