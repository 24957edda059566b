#include "io/zip.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/error.h"

// Record signatures (little-endian "PK\x05\x06" etc.).
#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_END 0x06054b50u
#define SIG_END64 0x06064b50u
#define SIG_END64_LOCATOR 0x07064b50u

#define END_SIZE 22
#define END64_LOCATOR_SIZE 20
#define END64_SIZE 56
#define CENTRAL_SIZE 46
#define LOCAL_SIZE 30
#define MAX_COMMENT 65535
#define MAX_NAME 4096

struct zip_archive {
    char *label;
    const uint8_t *bytes;
    size_t size;
    zip_entry *entries;
    size_t count;
    zip_entry **by_name; // sorted by name for zip_find
};

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

void zip_close(zip_archive *zip) {
    if (!zip) return;
    for (size_t i = 0; i < zip->count; i++) free((char *)zip->entries[i].name);
    free(zip->entries);
    free(zip->by_name);
    free(zip->label);
    free(zip);
}

size_t zip_count(const zip_archive *zip) { return zip->count; }
const zip_entry *zip_at(const zip_archive *zip, size_t index) {
    return index < zip->count ? &zip->entries[index] : NULL;
}

static int compare_names(const void *a, const void *b) {
    return strcmp((*(zip_entry *const *)a)->name, (*(zip_entry *const *)b)->name);
}

const zip_entry *zip_find(const zip_archive *zip, const char *name) {
    size_t lo = 0, hi = zip->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(zip->by_name[mid]->name, name);
        if (c == 0) return zip->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

// The end-of-central-directory record is the last thing in the file, followed only by a comment
// of the length it states; scanning backwards for a signature whose comment length lands exactly on
// the end of the file rejects signatures that merely occur inside a comment.
static lcm_status find_end_record(const zip_archive *z, size_t *end_offset) {
    if (z->size < END_SIZE)
        return lcm_fail(LCM_ERR_FORMAT, "%s: %zu bytes, too short for a zip archive (file truncated?)",
                        z->label, z->size);
    size_t lowest = z->size - END_SIZE > MAX_COMMENT ? z->size - END_SIZE - MAX_COMMENT : 0;
    for (size_t pos = z->size - END_SIZE + 1; pos-- > lowest;) {
        const uint8_t *p = z->bytes + pos;
        if (rd32(p) == SIG_END && pos + END_SIZE + rd16(p + 20) == z->size) {
            *end_offset = pos;
            return LCM_OK;
        }
    }
    return lcm_fail(LCM_ERR_FORMAT,
                    "%s: no zip end-of-central-directory record (not a zip/torch.save file, or "
                    "truncated)", z->label);
}

typedef struct directory {
    uint64_t entries, offset, size;
} directory;

static lcm_status read_directory_location(const zip_archive *z, size_t end, directory *d) {
    const uint8_t *p = z->bytes + end;
    if (rd16(p + 4) != 0 || rd16(p + 6) != 0 || rd16(p + 8) != rd16(p + 10))
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                        z->label);
    d->entries = rd16(p + 10);
    d->size = rd32(p + 12);
    d->offset = rd32(p + 16);
    bool needs_zip64 = d->entries == 0xFFFF || d->size == 0xFFFFFFFFu || d->offset == 0xFFFFFFFFu;
    if (end >= END64_LOCATOR_SIZE && rd32(z->bytes + end - END64_LOCATOR_SIZE) == SIG_END64_LOCATOR) {
        const uint8_t *loc = z->bytes + end - END64_LOCATOR_SIZE;
        uint64_t rec = rd64(loc + 8);
        if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                            z->label);
        if (rec > end - END64_LOCATOR_SIZE || end - END64_LOCATOR_SIZE - rec < END64_SIZE ||
            rd32(z->bytes + rec) != SIG_END64)
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: ZIP64 end record offset %llu is out of range or has no signature",
                            z->label, (unsigned long long)rec);
        const uint8_t *r = z->bytes + rec;
        if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32))
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: multi-disk zip archives are not supported",
                            z->label);
        d->entries = rd64(r + 32);
        d->size = rd64(r + 40);
        d->offset = rd64(r + 48);
        end = (size_t)rec; // the directory must end before the ZIP64 record
    } else if (needs_zip64) {
        return lcm_fail(LCM_ERR_FORMAT, "%s: zip end record needs a ZIP64 record, which is missing",
                        z->label);
    }
    if (d->offset > end || d->size > end - d->offset)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: central directory (offset %llu, %llu bytes) lies outside the file "
                        "(truncated?)",
                        z->label, (unsigned long long)d->offset, (unsigned long long)d->size);
    if (d->entries > ZIP_MAX_ENTRIES || d->entries > d->size / CENTRAL_SIZE)
        return lcm_fail(LCM_ERR_FORMAT, "%s: zip claims %llu entries in a %llu-byte directory",
                        z->label, (unsigned long long)d->entries, (unsigned long long)d->size);
    return LCM_OK;
}

// ZIP64 extended information (extra field 0x0001): 8-byte values for those of uncompressed size,
// compressed size and local header offset that are 0xFFFFFFFF in the fixed record, in that order.
static lcm_status apply_zip64_extra(const zip_archive *z, const char *name, const uint8_t *extra,
                                    size_t extra_len, uint64_t *size, uint64_t *csize,
                                    uint64_t *offset) {
    uint64_t *fields[3] = {size, csize, offset};
    bool wanted[3] = {*size == 0xFFFFFFFFu, *csize == 0xFFFFFFFFu, *offset == 0xFFFFFFFFu};
    if (!wanted[0] && !wanted[1] && !wanted[2]) return LCM_OK;
    size_t pos = 0;
    while (pos + 4 <= extra_len) {
        uint16_t id = rd16(extra + pos), len = rd16(extra + pos + 2);
        if (len > extra_len - pos - 4) break;
        if (id == 0x0001) {
            const uint8_t *v = extra + pos + 4;
            size_t used = 0;
            for (int i = 0; i < 3; i++) {
                if (!wanted[i]) continue;
                if (used + 8 > len)
                    return lcm_fail(LCM_ERR_FORMAT, "%s: entry '%s': ZIP64 extra field too short",
                                    z->label, name);
                *fields[i] = rd64(v + used);
                used += 8;
            }
            return LCM_OK;
        }
        pos += 4 + (size_t)len;
    }
    return lcm_fail(LCM_ERR_FORMAT, "%s: entry '%s': sizes need a ZIP64 extra field, which is missing",
                    z->label, name);
}

typedef struct span {
    uint64_t header, end; // local header offset, end of the entry's data
    size_t index;
} span;

static int compare_spans(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->header < y->header ? -1 : x->header > y->header;
}

static lcm_status parse_entry(zip_archive *z, const directory *d, size_t *pos, zip_entry *e,
                              uint64_t *local_offset) {
    size_t dir_end = (size_t)(d->offset + d->size);
    if (dir_end - *pos < CENTRAL_SIZE || rd32(z->bytes + *pos) != SIG_CENTRAL)
        return lcm_fail(LCM_ERR_FORMAT, "%s: central directory entry %zu is truncated or has no "
                        "signature", z->label, z->count);
    const uint8_t *c = z->bytes + *pos;
    uint16_t flags = rd16(c + 8), method = rd16(c + 10);
    size_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
    if (dir_end - *pos - CENTRAL_SIZE < name_len + extra_len + comment_len)
        return lcm_fail(LCM_ERR_FORMAT, "%s: central directory entry %zu runs past the directory",
                        z->label, z->count);
    const char *raw_name = (const char *)c + CENTRAL_SIZE;
    if (name_len == 0 || name_len > MAX_NAME || memchr(raw_name, 0, name_len))
        return lcm_fail(LCM_ERR_FORMAT, "%s: central directory entry %zu has an invalid name",
                        z->label, z->count);
    char *name = malloc(name_len + 1);
    if (!name) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", z->label);
    memcpy(name, raw_name, name_len);
    name[name_len] = 0;
    e->name = name; // owned by the archive from here on (z->count is bumped by the caller)
    if (flags & 1)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: entry '%s' is encrypted", z->label, name);
    if (method != 0 && method != 8)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: entry '%s' uses compression method %u (only stored and deflate are "
                        "supported)", z->label, name, method);
    e->stored = method == 0;
    e->crc32 = rd32(c + 16);
    uint64_t csize = rd32(c + 20), size = rd32(c + 24), offset = rd32(c + 42);
    LCM_TRY(apply_zip64_extra(z, name, c + CENTRAL_SIZE + name_len, extra_len, &size, &csize,
                              &offset));
    if (e->stored && csize != size)
        return lcm_fail(LCM_ERR_FORMAT, "%s: stored entry '%s' has compressed size %llu != size %llu",
                        z->label, name, (unsigned long long)csize, (unsigned long long)size);
    // The local header repeats the name; its own extra field may differ in length (torch pads it
    // so that the data is 64-byte aligned).
    if (offset > d->offset || d->offset - offset < LOCAL_SIZE ||
        rd32(z->bytes + offset) != SIG_LOCAL)
        return lcm_fail(LCM_ERR_FORMAT, "%s: entry '%s': local header offset %llu is out of range "
                        "or has no signature", z->label, name, (unsigned long long)offset);
    const uint8_t *l = z->bytes + offset;
    uint64_t data_start = offset + LOCAL_SIZE + (uint64_t)rd16(l + 26) + rd16(l + 28);
    if (data_start > d->offset || csize > d->offset - data_start)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: entry '%s' (%llu bytes at offset %llu) runs past the start of the central "
                        "directory (file truncated or corrupt)",
                        z->label, name, (unsigned long long)csize, (unsigned long long)data_start);
    if (rd16(l + 26) != name_len || memcmp(l + LOCAL_SIZE, raw_name, name_len))
        return lcm_fail(LCM_ERR_FORMAT, "%s: entry '%s': local header names a different file",
                        z->label, name);
    e->data = z->bytes + data_start;
    e->compressed_size = csize;
    e->size = size;
    *local_offset = offset;
    *pos += CENTRAL_SIZE + name_len + extra_len + comment_len;
    return LCM_OK;
}

lcm_status zip_open_memory(const void *bytes, size_t size, const char *label, zip_archive **out) {
    *out = NULL;
    zip_archive *z = calloc(1, sizeof *z);
    if (!z || !(z->label = strdup(label))) {
        free(z);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    }
    z->bytes = bytes;
    z->size = size;
    lcm_status st;
    size_t end = 0;
    directory d = {0, 0, 0};
    uint64_t *local_offsets = NULL;
    if ((st = find_end_record(z, &end)) != LCM_OK) goto fail;
    if ((st = read_directory_location(z, end, &d)) != LCM_OK) goto fail;
    size_t n = (size_t)d.entries;
    z->entries = calloc(n ? n : 1, sizeof *z->entries);
    z->by_name = calloc(n ? n : 1, sizeof *z->by_name);
    local_offsets = calloc(n ? n : 1, sizeof *local_offsets);
    if (!z->entries || !z->by_name || !local_offsets) {
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu zip entries", label, n);
        goto fail;
    }
    size_t pos = (size_t)d.offset;
    for (size_t i = 0; i < n; i++) {
        st = parse_entry(z, &d, &pos, &z->entries[i], &local_offsets[i]);
        if (z->entries[i].name) z->count = i + 1;
        if (st != LCM_OK) goto fail;
    }
    // Overlap check: ordered by local header offset, each entry's header must start at or after
    // the end of the previous entry's data (so no byte belongs to two entries).
    span *spans = malloc((n ? n : 1) * sizeof *spans);
    if (!spans) {
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        spans[i].header = local_offsets[i];
        spans[i].end = (uint64_t)(z->entries[i].data - z->bytes) + z->entries[i].compressed_size;
        spans[i].index = i;
        z->by_name[i] = &z->entries[i];
    }
    qsort(spans, n, sizeof *spans, compare_spans);
    for (size_t i = 1; i < n; i++)
        if (spans[i].header < spans[i - 1].end) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: zip entries '%s' and '%s' overlap", label,
                          z->entries[spans[i - 1].index].name, z->entries[spans[i].index].name);
            free(spans);
            goto fail;
        }
    free(spans);
    qsort(z->by_name, n, sizeof *z->by_name, compare_names);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(z->by_name[i - 1]->name, z->by_name[i]->name)) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: zip entry name '%s' appears twice", label,
                          z->by_name[i]->name);
            goto fail;
        }
    free(local_offsets);
    *out = z;
    return LCM_OK;
fail:
    free(local_offsets);
    zip_close(z);
    return st;
}

lcm_status zip_read(const zip_archive *zip, const zip_entry *entry, const uint8_t **content,
                    uint8_t **copy) {
    *copy = NULL;
    *content = NULL;
    if (entry->stored) {
        *content = entry->data;
        return LCM_OK;
    }
    // Deflate never expands beyond ~1032:1; a larger claimed size is a lie meant to make us
    // allocate.
    if (entry->size / 1032 > entry->compressed_size + 1 || entry->size > SIZE_MAX - 1)
        return lcm_fail(LCM_ERR_FORMAT, "%s: entry '%s' claims %llu bytes from %llu compressed",
                        zip->label, entry->name, (unsigned long long)entry->size,
                        (unsigned long long)entry->compressed_size);
    uint8_t *buf = malloc(entry->size ? (size_t)entry->size : 1);
    if (!buf)
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory inflating '%s'", zip->label,
                        entry->name);
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK) {
        free(buf);
        return lcm_fail(LCM_ERR_INTERNAL, "%s: zlib init failed", zip->label);
    }
    // zlib counts in uInt; feed and drain in chunks so entries over 4 GiB work too.
    uint64_t in_left = entry->compressed_size, out_left = entry->size;
    s.next_in = (Bytef *)entry->data;
    s.next_out = buf;
    int rc = Z_OK;
    while (rc == Z_OK) {
        if (s.avail_in == 0 && in_left) {
            s.avail_in = in_left > 0x40000000u ? 0x40000000u : (uInt)in_left;
            in_left -= s.avail_in;
        }
        if (s.avail_out == 0 && out_left) {
            s.avail_out = out_left > 0x40000000u ? 0x40000000u : (uInt)out_left;
            out_left -= s.avail_out;
        }
        rc = inflate(&s, Z_NO_FLUSH);
        if (rc == Z_BUF_ERROR && (s.avail_in || in_left) && (s.avail_out || out_left)) rc = Z_OK;
    }
    bool complete = rc == Z_STREAM_END && s.avail_out == 0 && out_left == 0;
    inflateEnd(&s);
    if (!complete) {
        free(buf);
        return lcm_fail(LCM_ERR_FORMAT, "%s: entry '%s': deflate data is corrupt or does not "
                        "produce the stated %llu bytes", zip->label, entry->name,
                        (unsigned long long)entry->size);
    }
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t done = 0; done < entry->size;) {
        uInt chunk = entry->size - done > 0x40000000u ? 0x40000000u : (uInt)(entry->size - done);
        crc = crc32(crc, buf + done, chunk);
        done += chunk;
    }
    if ((uint32_t)crc != entry->crc32) {
        free(buf);
        return lcm_fail(LCM_ERR_FORMAT, "%s: entry '%s': CRC-32 mismatch", zip->label, entry->name);
    }
    *content = buf;
    *copy = buf;
    return LCM_OK;
}
