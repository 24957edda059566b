// safetensors reader. The header is parsed with cJSON and every fact a later read depends on is
// checked here, once, so that the rest of the program can trust st_tensor.data/nbytes.
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file.h"

// Real headers are a few hundred KiB (a UNet has ~700 tensors); 100 MiB is the bound the reference
// Rust implementation uses, and keeps a hostile length from making us parse gigabytes of JSON.
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

struct st_file {
    char *path;
    void *mapping; // NULL when reading borrowed memory
    size_t mapping_size;
    const uint8_t *data; // start of the data area
    size_t data_size;
    st_tensor *tensors; // sorted by data offset
    size_t count;
    st_tensor **by_name; // sorted by name, for st_find
    char **metadata_keys, **metadata_values;
    size_t metadata_count;
    void **buffers; // st_open_table: malloc'd blocks the tensors point into
    size_t buffer_count;
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},     [ST_I8] = {"I8", 1},   [ST_U16] = {"U16", 2},
    [ST_I16] = {"I16", 2},   [ST_F16] = {"F16", 2},   [ST_BF16] = {"BF16", 2}, [ST_U32] = {"U32", 4},
    [ST_I32] = {"I32", 4},   [ST_F32] = {"F32", 4},   [ST_U64] = {"U64", 8}, [ST_I64] = {"I64", 8},
    [ST_F64] = {"F64", 8},
};

const char *st_dtype_name(st_dtype dtype) {
    return (unsigned)dtype < ST_DTYPE_COUNT ? dtype_info[dtype].name : "?";
}

size_t st_dtype_size(st_dtype dtype) {
    return (unsigned)dtype < ST_DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

char *st_format_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    if (n > 0) used = (size_t)n;
    for (int i = 0; i < ndim && used < size; i++) {
        n = snprintf(buf + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (n > 0) used += (size_t)n;
    }
    if (used < size) snprintf(buf + used, size - used, "]");
    return buf;
}

const char *st_path(const st_file *file) { return file->path; }
size_t st_count(const st_file *file) { return file->count; }
const st_tensor *st_at(const st_file *file, size_t index) {
    return index < file->count ? &file->tensors[index] : NULL;
}

static int compare_tensor_names(const void *a, const void *b) {
    return strcmp((*(st_tensor *const *)a)->name, (*(st_tensor *const *)b)->name);
}

const st_tensor *st_find(const st_file *file, const char *name) {
    size_t lo = 0, hi = file->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(file->by_name[mid]->name, name);
        if (c == 0) return file->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *st_metadata(const st_file *file, const char *key) {
    for (size_t i = 0; i < file->metadata_count; i++)
        if (!strcmp(file->metadata_keys[i], key)) return file->metadata_values[i];
    return NULL;
}

void st_close(st_file *file) {
    if (!file) return;
    for (size_t i = 0; i < file->count; i++) free((char *)file->tensors[i].name);
    for (size_t i = 0; i < file->metadata_count; i++) {
        free(file->metadata_keys[i]);
        free(file->metadata_values[i]);
    }
    free(file->metadata_keys);
    free(file->metadata_values);
    free(file->tensors);
    free(file->by_name);
    for (size_t i = 0; i < file->buffer_count; i++) free(file->buffers[i]);
    free(file->buffers);
    io_unmap_file(file->mapping, file->mapping_size);
    free(file->path);
    free(file);
}

// A JSON number that is a non-negative integer exactly representable in a double (<= 2^53).
static bool json_to_u64(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!(v >= 0 && v <= 9007199254740992.0) || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

static bool parse_dtype(const char *s, st_dtype *out) {
    for (int d = 0; d < ST_DTYPE_COUNT; d++)
        if (!strcmp(s, dtype_info[d].name)) {
            *out = (st_dtype)d;
            return true;
        }
    return false;
}

static int compare_tensor_offsets(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    const uint8_t *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    return x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

static lcm_status parse_metadata(st_file *f, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return lcm_fail(LCM_ERR_FORMAT, "%s: __metadata__ is not a JSON object", f->path);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->metadata_keys = calloc(n ? n : 1, sizeof(char *));
    f->metadata_values = calloc(n ? n : 1, sizeof(char *));
    if (!f->metadata_keys || !f->metadata_values)
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory reading metadata", f->path);
    const cJSON *item;
    cJSON_ArrayForEach(item, meta) {
        if (!cJSON_IsString(item))
            return lcm_fail(LCM_ERR_FORMAT, "%s: __metadata__[\"%s\"] is not a string", f->path,
                            item->string);
        f->metadata_keys[f->metadata_count] = strdup(item->string);
        f->metadata_values[f->metadata_count] = strdup(item->valuestring);
        f->metadata_count++;
        if (!f->metadata_keys[f->metadata_count - 1] || !f->metadata_values[f->metadata_count - 1])
            return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory reading metadata", f->path);
    }
    return LCM_OK;
}

static lcm_status parse_tensor(st_file *f, const cJSON *entry, st_tensor *t) {
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", f->path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype))
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s': missing string field 'dtype'", f->path, name);
    if (!parse_dtype(dtype->valuestring, &t->dtype))
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: tensor '%s': unknown dtype '%s' (expected F64, F32, F16, BF16, I64, I32, "
                        "I16, I8, U64, U32, U16, U8 or BOOL)",
                        f->path, name, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s': missing array field 'shape'", f->path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s': %d dimensions, at most %d supported",
                        f->path, name, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t dim;
        if (!json_to_u64(cJSON_GetArrayItem(shape, i), &dim))
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: tensor '%s': shape[%d] is not a non-negative integer", f->path, name,
                            i);
        if (dim && numel > UINT64_MAX / dim)
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s': element count overflows", f->path, name);
        numel *= dim;
        t->shape[i] = (int64_t)dim;
    }
    size_t esize = dtype_info[t->dtype].size;
    if (numel > (uint64_t)INT64_MAX / esize || numel * esize > SIZE_MAX)
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s': byte size overflows", f->path, name);
    uint64_t begin, end;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        !json_to_u64(cJSON_GetArrayItem(offsets, 0), &begin) ||
        !json_to_u64(cJSON_GetArrayItem(offsets, 1), &end))
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: tensor '%s': 'data_offsets' must be [begin, end] of non-negative integers",
                        f->path, name);
    if (begin > end)
        return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %llu > end %llu", f->path,
                        name, (unsigned long long)begin, (unsigned long long)end);
    if (end > f->data_size)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets end %llu is past the data area (%zu bytes; "
                        "file truncated?)",
                        f->path, name, (unsigned long long)end, f->data_size);
    if (end - begin != numel * esize) {
        char sbuf[160];
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: tensor '%s': %llu bytes in data_offsets, expected %llu for %s shape %s",
                        f->path, name, (unsigned long long)(end - begin),
                        (unsigned long long)(numel * esize), dtype_info[t->dtype].name,
                        st_format_shape(sbuf, sizeof sbuf, ndim, t->shape));
    }
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)(end - begin);
    t->data = f->data + begin;
    t->name = strdup(name);
    if (!t->name) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path);
    return LCM_OK;
}

// Parses and validates the header of f (f->data/data_size already set).
static lcm_status parse_header(st_file *f, const char *json, size_t json_len) {
    const char *json_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, json_len, &json_end, false);
    if (!root)
        return lcm_fail(LCM_ERR_FORMAT, "%s: header is not valid JSON (near byte %zu of the header)",
                        f->path, (size_t)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - json : 0));
    lcm_status status = LCM_OK;
    // Only padding may follow the JSON value (writers pad the header with spaces to 8 bytes).
    for (const char *p = json_end; p && p < json + json_len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            status = lcm_fail(LCM_ERR_FORMAT,
                              "%s: header has bytes after the JSON object (at byte %zu of the header)",
                              f->path, (size_t)(p - json));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        status = lcm_fail(LCM_ERR_FORMAT, "%s: header is not a JSON object", f->path);
        goto done;
    }
    size_t entries = (size_t)cJSON_GetArraySize(root);
    f->tensors = calloc(entries ? entries : 1, sizeof *f->tensors);
    f->by_name = calloc(entries ? entries : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name) {
        status = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory reading header", f->path);
        goto done;
    }
    const cJSON *entry;
    cJSON_ArrayForEach(entry, root) {
        if (!strcmp(entry->string, "__metadata__")) {
            if (f->metadata_keys) {
                status = lcm_fail(LCM_ERR_FORMAT, "%s: duplicate __metadata__", f->path);
                goto done;
            }
            if ((status = parse_metadata(f, entry)) != LCM_OK) goto done;
            continue;
        }
        if ((status = parse_tensor(f, entry, &f->tensors[f->count])) != LCM_OK) goto done;
        f->count++;
    }
    for (size_t i = 0; i < f->count; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, f->count, sizeof *f->by_name, compare_tensor_names);
    for (size_t i = 1; i < f->count; i++)
        if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name)) {
            status = lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", f->path,
                              f->by_name[i]->name);
            goto done;
        }
    // Sorting by offset moves the structs, so by_name is rebuilt afterwards.
    // Each non-empty tensor is compared with the previous non-empty one: an empty tensor sorted
    // between two overlapping ones must not hide the overlap.
    qsort(f->tensors, f->count, sizeof *f->tensors, compare_tensor_offsets);
    const st_tensor *previous = NULL;
    for (size_t i = 0; i < f->count; i++) {
        const st_tensor *b = &f->tensors[i];
        if (!b->nbytes) continue;
        if (previous && (const uint8_t *)previous->data + previous->nbytes > (const uint8_t *)b->data) {
            status = lcm_fail(LCM_ERR_FORMAT, "%s: tensors '%s' and '%s' overlap in the data area",
                              f->path, previous->name, b->name);
            goto done;
        }
        previous = b;
    }
    for (size_t i = 0; i < f->count; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, f->count, sizeof *f->by_name, compare_tensor_names);
done:
    cJSON_Delete(root);
    return status;
}

static lcm_status open_bytes(st_file *f, const uint8_t *bytes, size_t size) {
    if (size < 8)
        return lcm_fail(LCM_ERR_FORMAT, "%s: %zu bytes, too short for a safetensors file (needs an "
                        "8-byte header length)", f->path, size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | bytes[i];
    if (header_len < 2 || header_len > ST_MAX_HEADER_BYTES)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: header length %llu is out of range (expected 2..%u bytes); not a "
                        "safetensors file?",
                        f->path, (unsigned long long)header_len, ST_MAX_HEADER_BYTES);
    if (header_len > size - 8)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: header length %llu runs past the end of the file (%zu bytes); file "
                        "truncated?",
                        f->path, (unsigned long long)header_len, size);
    f->data = bytes + 8 + header_len;
    f->data_size = size - 8 - (size_t)header_len;
    return parse_header(f, (const char *)bytes + 8, (size_t)header_len);
}

static st_file *new_file(const char *label) {
    st_file *f = calloc(1, sizeof *f);
    if (f && !(f->path = strdup(label))) {
        free(f);
        f = NULL;
    }
    return f;
}

lcm_status st_open_memory(const void *bytes, size_t size, const char *label, st_file **out) {
    *out = NULL;
    st_file *f = new_file(label);
    if (!f) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    lcm_status status = open_bytes(f, bytes, size);
    if (status != LCM_OK) {
        st_close(f);
        return status;
    }
    *out = f;
    return LCM_OK;
}

lcm_status st_open(const char *path, st_file **out) {
    *out = NULL;
    int fd;
    long long file_size;
    LCM_TRY(io_open_regular(path, &fd, &file_size));
    size_t size = (size_t)file_size;
    st_file *f = new_file(path);
    if (!f) {
        close(fd);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    if (size > 0) {
        void *map;
        lcm_status mapped = io_map_file(fd, size, path, &map);
        if (mapped != LCM_OK) {
            close(fd);
            st_close(f);
            return mapped;
        }
        f->mapping = map;
        f->mapping_size = size;
    }
    close(fd);
    lcm_status status = open_bytes(f, f->mapping, size);
    if (status == LCM_OK) status = io_mapping_check(f->mapping); // shrank while the header was read
    if (status != LCM_OK) {
        st_close(f);
        return status;
    }
    *out = f;
    return LCM_OK;
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | mantissa << 13; // inf / nan
    } else if (exponent != 0) {
        bits = sign | (exponent + 112) << 23 | mantissa << 13;
    } else if (mantissa == 0) {
        bits = sign;
    } else { // subnormal half: normalise
        int shift = 0;
        while (!(mantissa & 0x400)) {
            mantissa <<= 1;
            shift++;
        }
        bits = sign | (uint32_t)(113 - shift) << 23 | (mantissa & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float st_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static lcm_status convert_i64(const st_file *file, const st_tensor *t, int64_t *dst);

static lcm_status convert_f32(const st_file *file, const st_tensor *t, float *dst) {
    const uint8_t *src = t->data;
    size_t n = (size_t)t->numel;
    switch (t->dtype) {
    case ST_F32: memcpy(dst, src, n * 4); return LCM_OK;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = st_f16_to_f32(h);
        }
        return LCM_OK;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = st_bf16_to_f32(h);
        }
        return LCM_OK;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, src + 8 * i, 8);
            dst[i] = (float)d;
        }
        return LCM_OK;
    default: break;
    }
    if (t->dtype == ST_U64)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: tensor '%s': cannot read U64 as float32",
                        file->path, t->name);
    int64_t *tmp = malloc(n ? n * sizeof *tmp : 1);
    if (!tmp) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", file->path);
    lcm_status st = convert_i64(file, t, tmp);
    for (size_t i = 0; st == LCM_OK && i < n; i++) dst[i] = (float)tmp[i];
    free(tmp);
    return st;
}

// A file that shrank under its mapping reads as zeros past its new end (io/file.h): the values
// just converted are then not the file's, and the read fails naming it.
lcm_status st_read_f32(const st_file *file, const st_tensor *t, float *dst) {
    LCM_TRY(convert_f32(file, t, dst));
    return io_mapping_check(file->mapping);
}

lcm_status st_read_i64(const st_file *file, const st_tensor *t, int64_t *dst) {
    LCM_TRY(convert_i64(file, t, dst));
    return io_mapping_check(file->mapping);
}

static lcm_status convert_i64(const st_file *file, const st_tensor *t, int64_t *dst) {
    // The dtype is checked before the loop so that an empty float tensor is refused like any other.
    if (t->dtype == ST_U64)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: tensor '%s': U64 values may not fit in int64",
                        file->path, t->name);
    if (t->dtype == ST_F16 || t->dtype == ST_BF16 || t->dtype == ST_F32 || t->dtype == ST_F64)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not an integer type",
                        file->path, t->name, dtype_info[t->dtype].name);
    const uint8_t *src = t->data;
    size_t n = (size_t)t->numel;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src + i * dtype_info[t->dtype].size;
        switch (t->dtype) {
        case ST_BOOL:
        case ST_U8: dst[i] = p[0]; break;
        case ST_I8: dst[i] = (int8_t)p[0]; break;
        case ST_U16: { uint16_t v; memcpy(&v, p, 2); dst[i] = v; break; }
        case ST_I16: { int16_t v; memcpy(&v, p, 2); dst[i] = v; break; }
        case ST_U32: { uint32_t v; memcpy(&v, p, 4); dst[i] = v; break; }
        case ST_I32: { int32_t v; memcpy(&v, p, 4); dst[i] = v; break; }
        case ST_I64: memcpy(&dst[i], p, 8); break;
        default:
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not an integer type",
                            file->path, t->name, dtype_info[t->dtype].name);
        }
    }
    return LCM_OK;
}

lcm_status st_load_f32(const st_file *file, const char *name, int ndim, const int64_t *shape,
                       float **out) {
    *out = NULL;
    const st_tensor *t = st_find(file, name);
    if (!t) return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' is missing", file->path, name);
    if (ndim >= 0) {
        bool same = t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
        if (!same) {
            char got[160], want[160];
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", file->path,
                            name, st_format_shape(got, sizeof got, t->ndim, t->shape),
                            st_format_shape(want, sizeof want, ndim, shape));
        }
    }
    float *buf = malloc(t->numel ? (size_t)t->numel * sizeof *buf : 1);
    if (!buf)
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory loading tensor '%s'", file->path,
                        name);
    lcm_status st = st_read_f32(file, t, buf);
    if (st != LCM_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    return LCM_OK;
}

void st_release_pages(const st_file *file, const st_tensor *t) {
    if (!file->mapping || t->nbytes == 0) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t begin = ((uintptr_t)t->data + page - 1) / page * page;
    uintptr_t end = ((uintptr_t)t->data + t->nbytes) / page * page;
    // A read-only private file mapping: dropped pages come back from the file if touched again.
    if (end > begin) madvise((void *)begin, end - begin, MADV_DONTNEED);
}

bool st_mapped(const st_file *file) { return file->mapping != NULL; }

void st_release_mapping(const st_file *file) {
    if (file->mapping && file->mapping_size)
        madvise(file->mapping, file->mapping_size, MADV_DONTNEED);
}

lcm_status st_open_table(const char *label, st_tensor *tensors, size_t count, void *mapping,
                         size_t mapping_size, void **buffers, size_t n_buffers, st_file **out) {
    *out = NULL;
    st_file *f = new_file(label);
    if (!f) {
        for (size_t i = 0; i < count; i++) free((char *)tensors[i].name);
        free(tensors);
        io_unmap_file(mapping, mapping_size);
        for (size_t i = 0; i < n_buffers; i++) free(buffers[i]);
        free(buffers);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    }
    f->tensors = tensors;
    f->count = count;
    f->mapping = mapping;
    f->mapping_size = mapping_size;
    f->buffers = buffers;
    f->buffer_count = n_buffers;
    f->by_name = malloc((count ? count : 1) * sizeof *f->by_name);
    if (!f->by_name) {
        st_close(f);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    }
    for (size_t i = 0; i < count; i++) f->by_name[i] = &f->tensors[i];
    qsort(f->by_name, count, sizeof *f->by_name, compare_tensor_names);
    for (size_t i = 1; i < count; i++)
        if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name)) {
            lcm_status st = lcm_fail(LCM_ERR_FORMAT, "%s: tensor name '%s' appears twice", label,
                                     f->by_name[i]->name);
            st_close(f);
            return st;
        }
    *out = f;
    return LCM_OK;
}

size_t st_metadata_count(const st_file *file) { return file->metadata_count; }

const char *st_metadata_key_at(const st_file *file, size_t index) {
    return index < file->metadata_count ? file->metadata_keys[index] : NULL;
}

lcm_status st_table_add_metadata(st_file *file, const char *key, const char *value) {
    if (st_metadata(file, key))
        return lcm_fail(LCM_ERR_FORMAT, "%s: metadata key '%s' appears twice", file->path, key);
    char **keys = realloc(file->metadata_keys, (file->metadata_count + 1) * sizeof *keys);
    if (keys) file->metadata_keys = keys;
    char **values = keys ? realloc(file->metadata_values, (file->metadata_count + 1) * sizeof *values)
                         : NULL;
    if (values) file->metadata_values = values;
    char *k = values ? strdup(key) : NULL, *v = k ? strdup(value) : NULL;
    if (!v) {
        free(k);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", file->path);
    }
    file->metadata_keys[file->metadata_count] = k;
    file->metadata_values[file->metadata_count] = v;
    file->metadata_count++;
    return LCM_OK;
}
