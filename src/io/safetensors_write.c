#include "io/safetensors_write.h"

#include <cjson/cJSON.h>
#include <immintrin.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

// Round to nearest even, as torch's .half() does; the F16C instruction is part of the x86-64-v3
// baseline this project builds for. The target attribute lets Debug/sanitizer/fuzz builds (no -march)
// compile it too.
__attribute__((target("f16c"))) static uint16_t f32_to_f16(float f) {
    return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static int64_t entry_numel(const st_write_entry *e) {
    int64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
    return n;
}

static char *build_header(const st_write_entry *entries, size_t count,
                          const char *const *meta_keys, const char *const *meta_values,
                          size_t meta_count, uint64_t *header_len) {
    cJSON *root = cJSON_CreateObject();
    if (meta_count) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (size_t i = 0; i < meta_count; i++)
            cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < count; i++) {
        cJSON *t = cJSON_AddObjectToObject(root, entries[i].name);
        cJSON_AddStringToObject(t, "dtype", st_dtype_name(entries[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < entries[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)entries[i].shape[d]));
        uint64_t bytes = (uint64_t)entry_numel(&entries[i]) * st_dtype_size(entries[i].dtype);
        cJSON *offsets = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return NULL;
    // Pad with spaces to a multiple of 8 so the data area is aligned, as the reference writer does.
    size_t len = strlen(json), padded = (len + 7) / 8 * 8;
    char *out = realloc(json, padded + 1);
    if (!out) {
        free(json);
        return NULL;
    }
    memset(out + len, ' ', padded - len);
    out[padded] = '\0';
    *header_len = padded;
    return out;
}

lcm_status st_write(const char *path, const st_write_entry *entries, size_t count, st_fill_fn fill,
                    void *user_data, const char *metadata_format) {
    const char *key = "format";
    return st_write_metadata(path, entries, count, fill, user_data, &key, &metadata_format,
                             metadata_format ? 1 : 0);
}

lcm_status st_write_metadata(const char *path, const st_write_entry *entries, size_t count,
                             st_fill_fn fill, void *user_data, const char *const *meta_keys,
                             const char *const *meta_values, size_t meta_count) {
    for (size_t i = 0; i < count; i++)
        if (entries[i].dtype != ST_F32 && entries[i].dtype != ST_F16 && entries[i].dtype != ST_BF16 &&
            entries[i].dtype != ST_I8)
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: tensor '%s': can only write F32/F16/BF16/I8",
                            path, entries[i].name);
    uint64_t header_len;
    char *header = build_header(entries, count, meta_keys, meta_values, meta_count, &header_len);
    if (!header) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for the header", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        free(header);
        return lcm_fail(LCM_ERR_IO, "%s: cannot create a temporary file: %s", path, strerror(errno));
    }
    // mkstemp creates the file private to us; give it the permissions of an ordinary new file.
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    FILE *fp = fdopen(fd, "wb");
    lcm_status st = LCM_OK;
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (uint8_t)(header_len >> (8 * i));
    if (!fp || fwrite(len_bytes, 1, 8, fp) != 8 || fwrite(header, 1, header_len, fp) != header_len)
        st = lcm_fail(LCM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    free(header);
    float *values = NULL;
    void *converted = NULL;
    for (size_t i = 0; st == LCM_OK && i < count; i++) {
        int64_t n = entry_numel(&entries[i]);
        free(values);
        free(converted);
        values = malloc((size_t)(n ? n : 1) * sizeof(float));
        converted = malloc((size_t)(n ? n : 1) * 2);
        if (!values || !converted) {
            st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for tensor '%s'", path, entries[i].name);
            break;
        }
        if ((st = fill(user_data, i, values, n)) != LCM_OK) break;
        const void *data = values;
        size_t bytes = (size_t)n * 4;
        if (entries[i].dtype == ST_I8) {
            // the callback produced integers; anything outside [-128, 127] is a caller bug
            int8_t *q = converted;
            for (int64_t k = 0; k < n; k++) {
                float v = nearbyintf(values[k]);
                q[k] = (int8_t)(v < -128.0f ? -128.0f : v > 127.0f ? 127.0f : v);
            }
            data = converted;
            bytes = (size_t)n;
        } else if (entries[i].dtype != ST_F32) {
            uint16_t *half = converted;
            for (int64_t k = 0; k < n; k++)
                half[k] = entries[i].dtype == ST_F16 ? f32_to_f16(values[k]) : f32_to_bf16(values[k]);
            data = converted;
            bytes = (size_t)n * 2;
        }
        if (fwrite(data, 1, bytes, fp) != bytes)
            st = lcm_fail(LCM_ERR_IO, "%s: write failed (disk full?): %s", path, strerror(errno));
    }
    free(values);
    free(converted);
    if (fp && (fflush(fp) != 0 || fsync(fileno(fp)) != 0) && st == LCM_OK)
        st = lcm_fail(LCM_ERR_IO, "%s: write failed (disk full?): %s", path, strerror(errno));
    if (fp) fclose(fp);
    else close(fd);
    if (st == LCM_OK && rename(tmp, path) != 0)
        st = lcm_fail(LCM_ERR_IO, "%s: cannot move the finished file into place: %s", path, strerror(errno));
    if (st != LCM_OK) unlink(tmp);
    return st;
}
