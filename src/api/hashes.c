// A1111's file hashes in the public API (include/lcm.h); computed in pipeline/model_hashes.c.
#include <string.h>

#include "core/error.h"
#include "lcm.h"
#include "pipeline/model_hashes.h"

lcm_status lcm_model_hashes_of_file(const char *path, lcm_model_hashes *out) {
    if (!out) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_model_hashes_of_file: NULL output");
    memset(out, 0, sizeof *out);
    if (!path) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_model_hashes_of_file: NULL path");
    return model_hashes_of_file(path, out);
}

lcm_status lcm_lora_hash(const char *path, char hex[65]) {
    if (!path || !hex) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "lcm_lora_hash: NULL argument");
    return lora_file_hash(path, hex);
}
