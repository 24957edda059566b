#include "io/torch_write.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"

#define ALIGN 64

typedef struct bytes {
    uint8_t *data;
    size_t len, cap;
    bool failed;
} bytes;

static void put(bytes *b, const void *p, size_t n) {
    if (b->failed) return;
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2 + 256;
        uint8_t *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}
static void put_byte(bytes *b, unsigned v) {
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}
static void put_le(bytes *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) put_byte(b, (unsigned)(v >> (8 * i)) & 0xFF);
}
static void put_text(bytes *b, const char *s) { put(b, s, strlen(s)); }

// ---- the pickle ---------------------------------------------------------------------------------

static void p_string(bytes *p, const char *s) {
    put_byte(p, 'X'); // BINUNICODE
    put_le(p, strlen(s), 4);
    put_text(p, s);
}

static void p_int(bytes *p, int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
        put_byte(p, 'J'); // BININT
        put_le(p, (uint64_t)v, 4);
    } else {
        put_byte(p, 0x8a); // LONG1, 8 bytes
        put_byte(p, 8);
        put_le(p, (uint64_t)v, 8);
    }
}

static void p_global(bytes *p, const char *module, const char *name) {
    put_byte(p, 'c');
    put_text(p, module);
    put_byte(p, '\n');
    put_text(p, name);
    put_byte(p, '\n');
}

static const char *storage_name(st_dtype dtype) {
    switch (dtype) {
    case ST_F32: return "FloatStorage";
    case ST_F16: return "HalfStorage";
    case ST_BF16: return "BFloat16Storage";
    case ST_F64: return "DoubleStorage";
    case ST_I64: return "LongStorage";
    case ST_I32: return "IntStorage";
    case ST_I16: return "ShortStorage";
    case ST_I8: return "CharStorage";
    case ST_U8: return "ByteStorage";
    case ST_BOOL: return "BoolStorage";
    default: return NULL;
    }
}

// name -> _rebuild_tensor_v2(('storage', TYPE, 'KEY', 'cpu', numel), 0, shape, stride, False,
// OrderedDict())
static void p_tensor(bytes *p, const st_tensor *t, size_t key) {
    char key_text[32];
    snprintf(key_text, sizeof key_text, "%zu", key);
    p_string(p, t->name);
    p_global(p, "torch._utils", "_rebuild_tensor_v2");
    put_byte(p, '(');
    put_byte(p, '(');
    p_string(p, "storage");
    p_global(p, "torch", storage_name(t->dtype));
    p_string(p, key_text);
    p_string(p, "cpu");
    p_int(p, t->numel);
    put_byte(p, 't');
    put_byte(p, 'Q'); // BINPERSID
    p_int(p, 0);
    put_byte(p, '(');
    for (int d = 0; d < t->ndim; d++) p_int(p, t->shape[d]);
    put_byte(p, 't');
    put_byte(p, '(');
    int64_t stride = 1, strides[ST_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        strides[d] = stride;
        stride *= t->shape[d] ? t->shape[d] : 1;
    }
    for (int d = 0; d < t->ndim; d++) p_int(p, strides[d]);
    put_byte(p, 't');
    put_byte(p, 0x89); // False: requires_grad
    p_global(p, "collections", "OrderedDict");
    put_byte(p, ')');
    put_byte(p, 'R');
    put_byte(p, 't');
    put_byte(p, 'R');
}

static void build_pickle(bytes *p, const st_file *src, bool wrap) {
    put_byte(p, 0x80);
    put_byte(p, 2);
    if (wrap) {
        put_byte(p, '}');
        put_byte(p, '(');
        p_string(p, "state_dict");
    }
    p_global(p, "collections", "OrderedDict");
    put_byte(p, ')');
    put_byte(p, 'R');
    // SETITEMS in batches of 1000, as Python's pickler does.
    for (size_t i = 0; i < st_count(src); i++) {
        if (i % 1000 == 0) put_byte(p, '(');
        p_tensor(p, st_at(src, i), i);
        if (i % 1000 == 999 || i + 1 == st_count(src)) put_byte(p, 'u');
    }
    if (wrap && st_metadata_count(src)) {
        p_string(p, "__metadata__");
        put_byte(p, '}');
        put_byte(p, '(');
        for (size_t i = 0; i < st_metadata_count(src); i++) {
            const char *key = st_metadata_key_at(src, i);
            p_string(p, key);
            p_string(p, st_metadata(src, key));
        }
        put_byte(p, 'u');
    }
    if (wrap) put_byte(p, 'u');
    put_byte(p, '.');
}

// ---- the zip ------------------------------------------------------------------------------------

typedef struct writer {
    FILE *fp;
    const char *path;
    uint64_t offset;
    bytes directory;
    uint64_t entries;
    lcm_status status;
} writer;

static void write_raw(writer *w, const void *data, size_t n) {
    if (w->status != LCM_OK || n == 0) return;
    if (fwrite(data, 1, n, w->fp) != n)
        w->status = lcm_fail(LCM_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    w->offset += n;
}

static uint32_t crc_of(const uint8_t *data, uint64_t n) {
    uLong crc = crc32(0L, Z_NULL, 0);
    while (n) {
        uInt chunk = n > 0x40000000u ? 0x40000000u : (uInt)n;
        crc = crc32(crc, data, chunk);
        data += chunk;
        n -= chunk;
    }
    return (uint32_t)crc;
}

// One stored entry: local header (with "FB" padding so the data starts on a 64-byte boundary, and a
// ZIP64 field when the size needs it), the data, and its central directory record.
static void add_entry(writer *w, const char *name, const void *data, uint64_t size) {
    if (w->status != LCM_OK) return;
    uint32_t crc = crc_of(data, size);
    size_t name_len = strlen(name);
    bool big = size >= 0xFFFFFFFFu;
    uint64_t header = w->offset;
    size_t fixed = 30 + name_len + (big ? 20 : 0);
    size_t pad = (ALIGN - (header + fixed + 4) % ALIGN) % ALIGN;
    bytes h = {0};
    put_le(&h, 0x04034b50, 4);
    put_le(&h, big ? 45 : 20, 2);
    put_le(&h, 0, 2);
    put_le(&h, 0, 2); // stored
    put_le(&h, 0, 4); // time, date
    put_le(&h, crc, 4);
    put_le(&h, big ? 0xFFFFFFFFu : size, 4);
    put_le(&h, big ? 0xFFFFFFFFu : size, 4);
    put_le(&h, name_len, 2);
    put_le(&h, (big ? 20 : 0) + 4 + pad, 2);
    put_text(&h, name);
    if (big) {
        put_le(&h, 0x0001, 2);
        put_le(&h, 16, 2);
        put_le(&h, size, 8);
        put_le(&h, size, 8);
    }
    put_le(&h, 0x4246, 2); // "FB": torch's alignment padding
    put_le(&h, pad, 2);
    for (size_t i = 0; i < pad; i++) put_byte(&h, 'Z');
    if (h.failed) {
        free(h.data);
        w->status = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", w->path);
        return;
    }
    write_raw(w, h.data, h.len);
    free(h.data);
    write_raw(w, data, (size_t)size);

    bool need64 = big || header >= 0xFFFFFFFFu;
    bytes *d = &w->directory;
    put_le(d, 0x02014b50, 4);
    put_le(d, need64 ? 45 : 20, 2);
    put_le(d, need64 ? 45 : 20, 2);
    put_le(d, 0, 2);
    put_le(d, 0, 2);
    put_le(d, 0, 4);
    put_le(d, crc, 4);
    put_le(d, big ? 0xFFFFFFFFu : size, 4);
    put_le(d, big ? 0xFFFFFFFFu : size, 4);
    put_le(d, name_len, 2);
    put_le(d, need64 ? 4 + (big ? 16 : 0) + (header >= 0xFFFFFFFFu ? 8 : 0) : 0, 2);
    put_le(d, 0, 2);
    put_le(d, 0, 2);
    put_le(d, 0, 2);
    put_le(d, 0, 4);
    put_le(d, header >= 0xFFFFFFFFu ? 0xFFFFFFFFu : header, 4);
    put_text(d, name);
    if (need64) {
        put_le(d, 0x0001, 2);
        put_le(d, (big ? 16 : 0) + (header >= 0xFFFFFFFFu ? 8 : 0), 2);
        if (big) {
            put_le(d, size, 8);
            put_le(d, size, 8);
        }
        if (header >= 0xFFFFFFFFu) put_le(d, header, 8);
    }
    w->entries++;
}

static void finish_zip(writer *w) {
    if (w->status != LCM_OK) return;
    if (w->directory.failed) {
        w->status = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", w->path);
        return;
    }
    uint64_t dir_offset = w->offset, dir_size = w->directory.len;
    write_raw(w, w->directory.data, w->directory.len);
    bool zip64 = w->entries >= 0xFFFF || dir_offset >= 0xFFFFFFFFu || dir_size >= 0xFFFFFFFFu;
    bytes e = {0};
    if (zip64) {
        uint64_t record = w->offset;
        put_le(&e, 0x06064b50, 4);
        put_le(&e, 44, 8);
        put_le(&e, 45, 2);
        put_le(&e, 45, 2);
        put_le(&e, 0, 4);
        put_le(&e, 0, 4);
        put_le(&e, w->entries, 8);
        put_le(&e, w->entries, 8);
        put_le(&e, dir_size, 8);
        put_le(&e, dir_offset, 8);
        put_le(&e, 0x07064b50, 4);
        put_le(&e, 0, 4);
        put_le(&e, record, 8);
        put_le(&e, 1, 4);
    }
    put_le(&e, 0x06054b50, 4);
    put_le(&e, 0, 2);
    put_le(&e, 0, 2);
    put_le(&e, zip64 ? 0xFFFF : w->entries, 2);
    put_le(&e, zip64 ? 0xFFFF : w->entries, 2);
    put_le(&e, zip64 ? 0xFFFFFFFFu : dir_size, 4);
    put_le(&e, zip64 ? 0xFFFFFFFFu : dir_offset, 4);
    put_le(&e, 0, 2);
    if (e.failed) w->status = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", w->path);
    else write_raw(w, e.data, e.len);
    free(e.data);
}

lcm_status torch_write_checkpoint(const char *path, const char *archive, const st_file *src,
                                  bool wrap_state_dict) {
    if (!archive[0] || strchr(archive, '/') || strlen(archive) > 200)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: archive name '%s' must be a plain name", path,
                        archive);
    for (size_t i = 0; i < st_count(src); i++)
        if (!storage_name(st_at(src, i)->dtype))
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, which torch cannot "
                            "store", st_path(src), st_at(src, i)->name,
                            st_dtype_name(st_at(src, i)->dtype));
    bytes pickle = {0};
    build_pickle(&pickle, src, wrap_state_dict);
    if (pickle.failed) {
        free(pickle.data);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    size_t tmp_len = strlen(path) + 16;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        free(pickle.data);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    snprintf(tmp, tmp_len, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    writer w = {.path = path, .status = LCM_OK};
    if (fd < 0 || !(w.fp = fdopen(fd, "wb"))) {
        if (fd >= 0) close(fd);
        lcm_status st = lcm_fail(LCM_ERR_IO, "%s: cannot create a temporary file: %s", path,
                                 strerror(errno));
        free(pickle.data);
        free(tmp);
        return st;
    }
    char name[300];
    snprintf(name, sizeof name, "%s/data.pkl", archive);
    add_entry(&w, name, pickle.data, pickle.len);
    snprintf(name, sizeof name, "%s/byteorder", archive);
    add_entry(&w, name, "little", 6);
    for (size_t i = 0; i < st_count(src); i++) {
        snprintf(name, sizeof name, "%s/data/%zu", archive, i);
        add_entry(&w, name, st_at(src, i)->data, st_at(src, i)->nbytes);
    }
    snprintf(name, sizeof name, "%s/version", archive);
    add_entry(&w, name, "3\n", 2);
    finish_zip(&w);
    free(pickle.data);
    free(w.directory.data);
    if (fflush(w.fp) != 0 || fsync(fileno(w.fp)) != 0) {
        if (w.status == LCM_OK)
            w.status = lcm_fail(LCM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    if (fclose(w.fp) != 0 && w.status == LCM_OK)
        w.status = lcm_fail(LCM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    if (w.status == LCM_OK && rename(tmp, path) != 0)
        w.status = lcm_fail(LCM_ERR_IO, "%s: cannot rename the temporary file: %s", path,
                            strerror(errno));
    if (w.status != LCM_OK) unlink(tmp);
    free(tmp);
    return w.status;
}
