// libFuzzer harness for packed-weight cache files (ops/packed_cache.h): the header and index checks,
// then every entry the index accepts through its family's import (direct conv/linear, oneDNN with
// its memory descriptor, sgemm), as a load would; then again ignoring the check sums, which
// mutations would otherwise rarely get past. The input is copied to a 64-byte aligned buffer, as a
// mapping is page-aligned. Seeds: hand-made files of each family (one oneDNN conv entry taken
// from a tiny model's cache).
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ops/packed_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *aligned = aligned_alloc(64, (size + 63) / 64 * 64 + 64);
    if (!aligned) return 0;
    memcpy(aligned, data, size);
    (void)packed_cache_check_bytes(aligned, size, false); // as a load reads it
    (void)packed_cache_check_bytes(aligned, size, true);  // past the check sums, into the entries
    free(aligned);
    return 0;
}
