// Generating images in the public API (include/lcm.h); the generation is pipeline/generate*.c.
#include "core/error.h"
#include "lcm.h"
#include "pipeline/pipeline.h"

void lcm_request_init(lcm_request *request) { generate_request_init(request); }

lcm_status lcm_generate(lcm_pipeline *pipeline, const lcm_request *request, lcm_result **out) {
    *out = NULL;
    if (!pipeline || !request) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_generate: NULL argument");
    return generate_images(pipeline, request, out);
}

void lcm_result_free(lcm_result *result) { generate_result_free(result); }
