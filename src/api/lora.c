// The LoRA part of the public API (include/lcm.h) that is not the fusing itself (adapt/lora.c):
// splitting the command-line spec FILE[:SCALE] that `lcm generate --lora` and the server take.
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "lcm.h"

lcm_status lcm_lora_spec_parse(const char *spec, size_t *path_length, float *scale) {
    size_t len = strlen(spec);
    *path_length = len;
    *scale = 1.0f;
    const char *colon = strrchr(spec, ':');
    if (colon && colon[1]) {
        char *end;
        errno = 0;
        double value = strtod(colon + 1, &end);
        // Only a complete, finite number is a scale; anything else is part of the path.
        if (*end == 0 && errno == 0 && isfinite((float)value) && !isspace((unsigned char)colon[1])) {
            *path_length = (size_t)(colon - spec);
            *scale = (float)value;
        }
    }
    if (*path_length == 0)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "LoRA '%s': expected FILE or FILE:SCALE", spec);
    return LCM_OK;
}
