// The packed-weight cache of the public API (lcm.h): listing and clearing it; the cache itself is
// ops/packed_cache.h.
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "lcm.h"
#include "ops/packed_cache.h"

char *lcm_cache_describe(void) {
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out) {
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    packed_cache_list(out);
    if (fclose(out) != 0) {
        free(text);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
        return NULL;
    }
    return text;
}

lcm_status lcm_cache_clear(uint64_t *freed_bytes) {
    int64_t freed;
    LCM_TRY(packed_cache_clear(&freed));
    if (freed_bytes) *freed_bytes = (uint64_t)freed;
    return LCM_OK;
}
