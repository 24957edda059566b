// The infotext functions of the public API (include/lcm.h): arguments checked here, the text built
// and read in pipeline/infotext.c; the PNG chunk it lives in is io/image.c's.
#include <stddef.h>

#include "core/error.h"
#include "io/image.h"
#include "lcm.h"
#include "pipeline/infotext.h"

lcm_status lcm_infotext_new(const char *prompt, const char *negative_prompt, lcm_infotext **out) {
    if (!out) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_infotext_new: NULL output");
    return infotext_new(prompt, negative_prompt, out);
}

lcm_status lcm_infotext_set(lcm_infotext *info, const char *key, const char *value) {
    if (!info || !key || !value) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_infotext_set: NULL argument");
    return infotext_set(info, key, value);
}

const char *lcm_infotext_get(const lcm_infotext *info, const char *key) { return infotext_get(info, key); }

lcm_status lcm_infotext_format(const lcm_infotext *info, char **text) {
    if (!text) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_infotext_format: NULL output");
    *text = NULL;
    if (!info) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_infotext_format: NULL infotext");
    return infotext_format(info, text);
}

lcm_status lcm_infotext_parse(const char *text, lcm_infotext **out) {
    if (!out) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_infotext_parse: NULL output");
    *out = NULL;
    if (!text) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_infotext_parse: NULL text");
    return infotext_parse(text, out);
}

void lcm_infotext_free(lcm_infotext *info) { infotext_free(info); }

lcm_status lcm_pipeline_infotext(lcm_pipeline *pipeline, const lcm_request *request, int index,
                                 int width, int height, const char *model_name, lcm_infotext **out) {
    if (!out) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_pipeline_infotext: NULL output");
    *out = NULL;
    if (!pipeline || !request)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_pipeline_infotext: NULL argument");
    return pipeline_infotext(pipeline, request, index, width, height, model_name, out);
}

lcm_status lcm_png_read_parameters(const void *png, size_t size, const char *label, char **text) {
    if (!text) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_png_read_parameters: NULL output");
    *text = NULL;
    return image_png_text(png, size, label ? label : "PNG", "parameters", text);
}

// The project's version, which CMake passes to the library's sources.
const char *lcm_version(void) { return LCM_VERSION_STRING; }
