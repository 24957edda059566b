// A1111's hashes of the checkpoint and LoRA files an infotext names (pipeline/model_hashes.h). Each
// file is hashed once per process (core/file_hash.h remembers them).
#include "pipeline/model_hashes.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"
#include "core/file_hash.h"
#include "io/safetensors.h"

lcm_status model_hashes_of_file(const char *path, lcm_model_hashes *out) {
    memset(out, 0, sizeof *out);
    char legacy[65];
    LCM_TRY(file_sha256_remembered(path, 0, UINT64_MAX, out->sha256));
    LCM_TRY(file_sha256_remembered(path, 0x100000, 0x10000, legacy));
    memcpy(out->short_hash, out->sha256, 10);
    memcpy(out->legacy_hash, legacy, 8);
    return LCM_OK;
}

static bool is_safetensors_name(const char *path) {
    static const char suffix[] = ".safetensors";
    size_t n = strlen(path), m = sizeof suffix - 1;
    return n >= m && !strcasecmp(path + n - m, suffix);
}

lcm_status lora_file_hash(const char *path, char hex[65]) {
    hex[0] = '\0';
    if (!is_safetensors_name(path)) return file_sha256_remembered(path, 0, UINT64_MAX, hex);
    st_file *file = NULL;
    LCM_TRY(st_open(path, &file)); // validates the header (its length above all)
    const char *stored = st_metadata(file, "sshs_model_hash");
    bool has_stored = stored && stored[0];
    if (has_stored) snprintf(hex, 65, "%s", stored);
    st_close(file);
    if (has_stored) return LCM_OK;
    // The data start after the 8-byte little-endian header length and the header.
    unsigned char head[8];
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(head, 1, sizeof head, f) : 0;
    if (f) fclose(f);
    if (got != sizeof head) return lcm_fail(LCM_ERR_IO, "%s: cannot read the safetensors header length", path);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | head[i];
    return file_sha256_remembered(path, 8 + header_len, UINT64_MAX, hex);
}
