// The packed-weight cache; see packed_cache.h.
#include "ops/packed_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/sha256.h"
#include "core/user_cache.h"
#include "io/file.h"
#include "ops/backend.h"
#include "ops/conv_direct.h"
#include "ops/dnnl_layer.h"
#include "ops/linear_direct.h"

// Bumped whenever the file layout or what an entry means changes.
#define PACKED_FORMAT_VERSION 1
#define PACKED_MAGIC "LCMPACK\n"
// The header sits alone in the first page; blobs start after it, each 64-byte aligned (what the
// kernels' aligned loads need: the mapping itself is page-aligned).
#define DATA_START 4096
#define BLOB_ALIGN 64
// Hostile or damaged files: bounds on what an index may claim.
#define MAX_ENTRIES 100000
#define MAX_NAME_BYTES 1024
#define MAX_META_BYTES 4096
// Bytes at each end of a blob that its check sum covers: enough to notice a blob that was never
// written (zeros after a crash of the machine) without reading gigabytes at every load.
#define CHECK_BYTES 4096

typedef struct file_header {
    char magic[8];
    uint32_t version;
    uint32_t entry_count;
    uint64_t index_offset, index_bytes, file_bytes;
    uint64_t index_checksum;
    uint8_t key[32];
} file_header;

// One entry of the index, followed by its name and its meta bytes, padded to 8 bytes.
typedef struct index_record {
    uint32_t name_bytes, meta_bytes;
    int32_t family, blob_count;
    int32_t shape[5];
    int32_t reserved;
    uint64_t blob_offset[PACKED_MAX_BLOBS], blob_bytes[PACKED_MAX_BLOBS], blob_check[PACKED_MAX_BLOBS];
} index_record;

struct packed_mapping {
    void *base;
    size_t size;
    atomic_int refs;
};

// An entry of the file that was read, or one written by this process.
typedef struct cache_entry {
    char *name; // owned
    packed_family family;
    int32_t shape[5];
    void *meta; // owned copy
    uint32_t meta_bytes;
    int blob_count;
    uint64_t blob_offset[PACKED_MAX_BLOBS], blob_bytes[PACKED_MAX_BLOBS], blob_check[PACKED_MAX_BLOBS];
    bool from_file; // in the mapping (else in the file being written)
    bool used;      // handed to a layer by packed_cache_find
    bool replaced;  // a newer entry of the same layer was written
} cache_entry;

struct packed_cache {
    char path[PATH_MAX];
    uint8_t key[32];
    packed_mapping *mapping; // the file read, or NULL
    cache_entry *entries;
    size_t count, capacity;
    // Writing: a temporary file beside `path`, opened on the first miss.
    int fd;
    char temp_path[PATH_MAX + 16];
    uint64_t write_offset;
    bool write_failed;
    int misses;
};

// A cache attached to a weight set that cannot be used (no folder, caching off): attached so that
// the set is asked only once.
static char unusable_marker;

// ---- small helpers -----------------------------------------------------------------------------

static uint64_t fnv1a(uint64_t h, const void *data, size_t size) {
    const unsigned char *p = data;
    for (size_t i = 0; i < size; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}
#define FNV_START 1469598103934665603ull

static uint64_t blob_check(const void *data, uint64_t bytes) {
    uint64_t head = bytes < CHECK_BYTES ? bytes : CHECK_BYTES;
    uint64_t h = fnv1a(FNV_START, data, head);
    if (bytes > head) {
        uint64_t tail = bytes - head < CHECK_BYTES ? bytes - head : CHECK_BYTES;
        h = fnv1a(h, (const char *)data + bytes - tail, tail);
    }
    return fnv1a(h, &bytes, sizeof bytes);
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

bool packed_cache_enabled(void) {
    const char *v = getenv("LCM_CACHE");
    return !(v && (!strcmp(v, "off") || !strcmp(v, "0")));
}

static void notice(const packed_cache *c, const char *what) {
    fprintf(stderr, "lcm: packed-weight cache %s: %s\n", c->path, what);
}

void packed_mapping_release(packed_mapping *m) {
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    io_unmap_file(m->base, m->size);
    free(m);
}

packed_mapping *packed_cache_mapping(const weight_set *ws) {
    void *attached = weight_set_attachment(ws);
    if (!attached || attached == &unusable_marker) return NULL;
    packed_cache *c = attached;
    bool used = false;
    for (size_t i = 0; i < c->count && !used; i++) used = c->entries[i].from_file && c->entries[i].used;
    if (!c->mapping || !used) return NULL;
    atomic_fetch_add(&c->mapping->refs, 1);
    return c->mapping;
}

void packed_mapping_drop_pages(const packed_mapping *m) {
    if (m) madvise(m->base, m->size, MADV_DONTNEED);
}

static void free_entries(packed_cache *c) {
    for (size_t i = 0; i < c->count; i++) {
        free(c->entries[i].name);
        free(c->entries[i].meta);
    }
    free(c->entries);
    c->entries = NULL;
    c->count = c->capacity = 0;
}

static cache_entry *new_entry(packed_cache *c) {
    if (c->count == c->capacity) {
        size_t capacity = c->capacity ? 2 * c->capacity : 256;
        cache_entry *grown = realloc(c->entries, capacity * sizeof *grown);
        if (!grown) return NULL;
        c->entries = grown;
        c->capacity = capacity;
    }
    cache_entry *e = &c->entries[c->count++];
    memset(e, 0, sizeof *e);
    return e;
}

// ---- reading -----------------------------------------------------------------------------------

// Checks the file's header and index and fills c->entries; false (with *why) on anything wrong.
// Whether a file of `size` bytes may have the header h (the index's bounds included).
static bool header_valid(const packed_cache *c, const file_header *h, size_t size, const char **why) {
    if (size < DATA_START) return (*why = "shorter than its header"), false;
    if (memcmp(h->magic, PACKED_MAGIC, 8)) return (*why = "not a cache file"), false;
    if (h->version != PACKED_FORMAT_VERSION) return (*why = "written by another version"), false;
    if (memcmp(h->key, c->key, sizeof h->key)) return (*why = "made for other weights or settings"), false;
    if (h->file_bytes != size) return (*why = "truncated or extended"), false;
    if (h->entry_count > MAX_ENTRIES || h->index_offset < DATA_START || h->index_offset > size ||
        h->index_bytes > size - h->index_offset)
        return (*why = "index out of bounds"), false;
    return true;
}

// The entries of the index h points at (`index`: its h.index_bytes bytes) into c.
static bool read_entries(packed_cache *c, const file_header *header, const unsigned char *index,
                         bool skip_check_sums, const char **why) {
    file_header h = *header;
    if (!skip_check_sums && fnv1a(FNV_START, index, h.index_bytes) != h.index_checksum)
        return (*why = "index damaged (check sum)"), false;
    uint64_t at = 0;
    for (uint32_t i = 0; i < h.entry_count; i++) {
        index_record r;
        if (h.index_bytes - at < sizeof r) return (*why = "index cut short"), false;
        memcpy(&r, index + at, sizeof r);
        at += sizeof r;
        if (r.name_bytes == 0 || r.name_bytes > MAX_NAME_BYTES || r.meta_bytes > MAX_META_BYTES ||
            r.blob_count < 0 || r.blob_count > PACKED_MAX_BLOBS || r.family < PACKED_CONV_DIRECT ||
            r.family > PACKED_LINEAR_SGEMM)
            return (*why = "bad index entry"), false;
        uint64_t tail = align_up((uint64_t)r.name_bytes + r.meta_bytes, 8);
        if (h.index_bytes - at < tail) return (*why = "index cut short"), false;
        cache_entry *e = new_entry(c);
        if (!e) return (*why = "out of memory"), false;
        e->name = malloc(r.name_bytes + 1);
        e->meta = malloc(r.meta_bytes ? r.meta_bytes : 1);
        if (!e->name || !e->meta) return (*why = "out of memory"), false;
        memcpy(e->name, index + at, r.name_bytes);
        e->name[r.name_bytes] = 0;
        if (strlen(e->name) != r.name_bytes) return (*why = "bad layer name"), false;
        memcpy(e->meta, index + at + r.name_bytes, r.meta_bytes);
        at += tail;
        e->family = (packed_family)r.family;
        memcpy(e->shape, r.shape, sizeof e->shape);
        e->meta_bytes = r.meta_bytes;
        e->blob_count = r.blob_count;
        e->from_file = true;
        for (int b = 0; b < r.blob_count; b++) {
            if (r.blob_offset[b] < DATA_START || r.blob_offset[b] % BLOB_ALIGN ||
                r.blob_offset[b] > h.index_offset || r.blob_bytes[b] > h.index_offset - r.blob_offset[b])
                return (*why = "blob out of bounds"), false;
            e->blob_offset[b] = r.blob_offset[b];
            e->blob_bytes[b] = r.blob_bytes[b];
            e->blob_check[b] = r.blob_check[b];
        }
    }
    return true;
}

// The index of a whole cache file held in memory (`base`, `size` bytes).
static bool read_index(packed_cache *c, const unsigned char *base, size_t size, bool skip_check_sums,
                       const char **why) {
    file_header h;
    if (size < sizeof h) return (*why = "shorter than its header"), false;
    memcpy(&h, base, sizeof h);
    return header_valid(c, &h, size, why) && read_entries(c, &h, base + h.index_offset, skip_check_sums, why);
}

// The index of the open file fd of `size` bytes, read with pread rather than through the mapping:
// a file cut short meanwhile then gives a short read, and the cache is packed again, where a read
// through the mapping would fault and spoil the loading pipeline's weights (io/file.h).
static bool read_index_from_file(packed_cache *c, int fd, size_t size, const char **why) {
    file_header h;
    if (size < DATA_START || pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h)
        return (*why = "shorter than its header"), false;
    if (!header_valid(c, &h, size, why)) return false;
    unsigned char *index = malloc(h.index_bytes ? h.index_bytes : 1);
    if (!index) return (*why = "out of memory"), false;
    size_t got = 0;
    while (got < h.index_bytes) {
        ssize_t n = pread(fd, index + got, h.index_bytes - got, (off_t)(h.index_offset + got));
        if (n <= 0 && !(n < 0 && errno == EINTR)) break;
        if (n > 0) got += (size_t)n;
    }
    bool ok = got == h.index_bytes ? read_entries(c, &h, index, false, why)
                                   : ((*why = "got shorter while its index was read"), false);
    free(index);
    return ok;
}

static void open_existing(packed_cache *c) {
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return; // not written yet
    struct stat sb;
    const char *why = NULL;
    void *base = NULL;
    if (fstat(fd, &sb) != 0 || sb.st_size < DATA_START) why = "shorter than its header";
    else if (!read_index_from_file(c, fd, (size_t)sb.st_size, &why)) free_entries(c);
    // Mapped like the weight files (io/file.h): the layers read their arrays from it during every
    // generation, and a cache file cut short meanwhile (lcm cache clear does not, but a user's
    // truncate or a full disk's repair may) must fail the generation, not kill the process.
    else if (io_map_file(fd, (size_t)sb.st_size, c->path, &base) != LCM_OK) {
        error_clear();
        free_entries(c);
        why = "cannot be mapped";
    }
    close(fd);
    if (why) {
        char line[160];
        snprintf(line, sizeof line, "%s; packing the weights again", why);
        notice(c, line);
        io_unmap_file(base, (size_t)sb.st_size);
        return;
    }
    c->mapping = calloc(1, sizeof *c->mapping);
    if (!c->mapping) {
        io_unmap_file(base, (size_t)sb.st_size);
        free_entries(c);
        return;
    }
    c->mapping->base = base;
    c->mapping->size = (size_t)sb.st_size;
    atomic_init(&c->mapping->refs, 1);
    utimensat(AT_FDCWD, c->path, NULL, 0); // least recently used goes first when trimming
    if (getenv("LCM_VERBOSE")) fprintf(stderr, "lcm: packed-weight cache %s: %zu layers\n", c->path, c->count);
}

packed_mapping *packed_cache_find(packed_cache *c, const char *name, packed_family family,
                                  const int32_t shape[5], packed_entry *entry) {
    if (!c || !c->mapping) return NULL;
    for (size_t i = 0; i < c->count; i++) {
        cache_entry *e = &c->entries[i];
        if (!e->from_file || e->replaced || e->family != family || strcmp(e->name, name) ||
            memcmp(e->shape, shape, sizeof e->shape))
            continue;
        *entry = (packed_entry){.family = e->family, .meta = e->meta, .meta_bytes = e->meta_bytes,
                                .blob_count = e->blob_count};
        memcpy(entry->shape, e->shape, sizeof entry->shape);
        const unsigned char *base = c->mapping->base;
        for (int b = 0; b < e->blob_count; b++) {
            entry->blobs[b] = (packed_blob){base + e->blob_offset[b], e->blob_bytes[b]};
            if (blob_check(entry->blobs[b].data, e->blob_bytes[b]) != e->blob_check[b]) {
                notice(c, "a layer's weights are damaged; packing it again");
                e->replaced = true;
                return NULL;
            }
        }
        atomic_fetch_add(&c->mapping->refs, 1);
        e->used = true;
        return c->mapping;
    }
    return NULL;
}

// Imports one entry as the loaders do (ops/weights_load.c), then frees what it made.
static bool import_once(const packed_entry *e) {
    if (e->family == PACKED_CONV_DIRECT) {
        conv_direct *d;
        if (conv_direct_import(e, &d) != LCM_OK) return false;
        conv_direct_free(d);
    } else if (e->family == PACKED_LINEAR_DIRECT) {
        linear_direct *d;
        if (linear_direct_import(e, &d) != LCM_OK) return false;
        linear_direct_free(d);
    } else if (e->family == PACKED_CONV_ONEDNN || e->family == PACKED_LINEAR_ONEDNN) {
        bool ok = false;
        for (int bias = 0; bias < 2; bias++) {
            dnnl_layer *l;
            if (dnnl_layer_import(e, e->family == PACKED_CONV_ONEDNN, bias, &l) != LCM_OK) continue;
            dnnl_layer_free(l);
            ok = true;
        }
        return ok;
    }
    return true; // the sgemm families are one array, checked by size in weights_load.c
}

int packed_cache_check_bytes(const unsigned char *bytes, size_t size, bool skip_check_sums) {
    packed_cache c = {.fd = -1};
    if (size >= sizeof(file_header)) memcpy(c.key, ((const file_header *)(const void *)bytes)->key, sizeof c.key);
    const char *why = NULL;
    int imported = 0;
    if (read_index(&c, bytes, size, skip_check_sums, &why)) {
        for (size_t i = 0; i < c.count; i++) {
            const cache_entry *e = &c.entries[i];
            packed_entry entry = {.family = e->family, .meta = e->meta, .meta_bytes = e->meta_bytes,
                                  .blob_count = e->blob_count};
            memcpy(entry.shape, e->shape, sizeof entry.shape);
            bool intact = true;
            for (int b = 0; b < e->blob_count; b++) {
                entry.blobs[b] = (packed_blob){bytes + e->blob_offset[b], e->blob_bytes[b]};
                intact = intact && (skip_check_sums ||
                                    blob_check(entry.blobs[b].data, e->blob_bytes[b]) == e->blob_check[b]);
            }
            if (intact && import_once(&entry)) imported++;
        }
    }
    error_clear();
    free_entries(&c);
    return imported;
}

// ---- writing -----------------------------------------------------------------------------------

static void abandon_write(packed_cache *c, const char *why) {
    if (c->write_failed) return;
    char line[300];
    snprintf(line, sizeof line, "not written (%s)", why);
    notice(c, line);
    c->write_failed = true;
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
        unlink(c->temp_path);
    }
}

static bool write_at(packed_cache *c, uint64_t offset, const void *data, uint64_t bytes) {
    const char *p = data;
    while (bytes) {
        size_t chunk = bytes > ((size_t)1 << 30) ? ((size_t)1 << 30) : (size_t)bytes;
        ssize_t n = pwrite(c->fd, p, chunk, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            abandon_write(c, n < 0 ? strerror(errno) : "short write");
            return false;
        }
        p += n;
        offset += (uint64_t)n;
        bytes -= (uint64_t)n;
    }
    return true;
}

static bool start_writing(packed_cache *c) {
    if (c->fd >= 0) return true;
    if (c->write_failed) return false;
    snprintf(c->temp_path, sizeof c->temp_path, "%s.XXXXXX", c->path);
    c->fd = mkstemp(c->temp_path);
    if (c->fd < 0) {
        abandon_write(c, strerror(errno));
        return false;
    }
    c->write_offset = DATA_START;
    return true;
}

// Appends one blob (64-byte aligned) to the file being written; its offset, or 0 on failure.
static uint64_t append_blob(packed_cache *c, const void *data, uint64_t bytes) {
    uint64_t offset = align_up(c->write_offset, BLOB_ALIGN);
    if (!write_at(c, offset, data, bytes)) return 0;
    c->write_offset = offset + bytes;
    return offset;
}

static bool add_entry(packed_cache *c, const char *name, const packed_entry *in, const uint64_t *offsets,
                      const uint64_t *checks) {
    cache_entry *e = new_entry(c);
    if (!e) return false;
    e->name = strdup(name);
    e->meta = malloc(in->meta_bytes ? in->meta_bytes : 1);
    if (!e->name || !e->meta) {
        free(e->name);
        free(e->meta);
        c->count--;
        return false;
    }
    memcpy(e->meta, in->meta, in->meta_bytes);
    e->meta_bytes = in->meta_bytes;
    e->family = in->family;
    memcpy(e->shape, in->shape, sizeof e->shape);
    e->blob_count = in->blob_count;
    for (int b = 0; b < in->blob_count; b++) {
        e->blob_offset[b] = offsets[b];
        e->blob_bytes[b] = in->blobs[b].bytes;
        e->blob_check[b] = checks[b];
    }
    return true;
}

void packed_cache_add(packed_cache *c, const char *name, const packed_entry *entry) {
    if (!c || c->write_failed) return;
    if (strlen(name) > MAX_NAME_BYTES || entry->meta_bytes > MAX_META_BYTES ||
        entry->blob_count > PACKED_MAX_BLOBS)
        return;
    c->misses++;
    if (!start_writing(c)) return;
    uint64_t offsets[PACKED_MAX_BLOBS] = {0}, checks[PACKED_MAX_BLOBS] = {0};
    for (int b = 0; b < entry->blob_count; b++) {
        checks[b] = blob_check(entry->blobs[b].data, entry->blobs[b].bytes);
        if (!(offsets[b] = append_blob(c, entry->blobs[b].data, entry->blobs[b].bytes))) return;
    }
    // A layer read from the file and packed again (its entry was damaged, or did not fit) is
    // superseded by the new entry.
    for (size_t i = 0; i < c->count; i++)
        if (c->entries[i].from_file && !strcmp(c->entries[i].name, name)) c->entries[i].replaced = true;
    if (!add_entry(c, name, entry, offsets, checks)) abandon_write(c, "out of memory");
}

// Copies the entries of the file read that are still valid into the file being written, so that a
// run that loads part of a model (the VAE decoder without its encoder) keeps the rest.
static void carry_over(packed_cache *c, size_t old_count) {
    const unsigned char *base = c->mapping ? c->mapping->base : NULL;
    for (size_t i = 0; i < old_count && !c->write_failed; i++) {
        cache_entry *e = &c->entries[i];
        if (!e->from_file || e->replaced) continue;
        for (int b = 0; b < e->blob_count; b++) {
            uint64_t offset = append_blob(c, base + e->blob_offset[b], e->blob_bytes[b]);
            if (!offset) return;
            e->blob_offset[b] = offset;
        }
        e->from_file = false;
    }
}

static void commit(packed_cache *c) {
    if (c->fd < 0 || c->write_failed) return;
    // A file read that got shorter meanwhile read zeros (io/file.h): its entries are not carried
    // into the new file, whose check sums (a blob's ends only) could miss zeros in the middle.
    if (c->mapping && io_mapping_check(c->mapping->base) != LCM_OK) {
        error_clear();
        abandon_write(c, "the cache file read got shorter while in use");
        return;
    }
    carry_over(c, c->count);
    if (c->mapping && io_mapping_check(c->mapping->base) != LCM_OK) {
        error_clear();
        abandon_write(c, "the cache file read got shorter while in use");
    }
    if (c->write_failed) return;
    // The index, then the header: the file is complete before it gets its name.
    size_t index_capacity = 0;
    for (size_t i = 0; i < c->count; i++)
        if (!c->entries[i].from_file && !c->entries[i].replaced)
            index_capacity += sizeof(index_record) + align_up(strlen(c->entries[i].name) + c->entries[i].meta_bytes, 8);
    unsigned char *index = calloc(1, index_capacity ? index_capacity : 1);
    if (!index) {
        abandon_write(c, "out of memory");
        return;
    }
    size_t at = 0;
    uint32_t written = 0;
    for (size_t i = 0; i < c->count; i++) {
        const cache_entry *e = &c->entries[i];
        if (e->from_file || e->replaced) continue;
        index_record r = {.name_bytes = (uint32_t)strlen(e->name), .meta_bytes = e->meta_bytes,
                          .family = e->family, .blob_count = e->blob_count};
        memcpy(r.shape, e->shape, sizeof r.shape);
        memcpy(r.blob_offset, e->blob_offset, sizeof r.blob_offset);
        memcpy(r.blob_bytes, e->blob_bytes, sizeof r.blob_bytes);
        memcpy(r.blob_check, e->blob_check, sizeof r.blob_check);
        memcpy(index + at, &r, sizeof r);
        at += sizeof r;
        memcpy(index + at, e->name, r.name_bytes);
        memcpy(index + at + r.name_bytes, e->meta, e->meta_bytes);
        at += align_up((uint64_t)r.name_bytes + r.meta_bytes, 8);
        written++;
    }
    file_header h = {.version = PACKED_FORMAT_VERSION, .entry_count = written,
                     .index_offset = align_up(c->write_offset, 8), .index_bytes = at,
                     .index_checksum = fnv1a(FNV_START, index, at)};
    memcpy(h.magic, PACKED_MAGIC, 8);
    memcpy(h.key, c->key, sizeof h.key);
    h.file_bytes = h.index_offset + at;
    bool ok = write_at(c, h.index_offset, index, at) && write_at(c, 0, &h, sizeof h);
    free(index);
    if (!ok) return;
    if (close(c->fd) != 0) {
        c->fd = -1;
        abandon_write(c, strerror(errno));
        unlink(c->temp_path);
        return;
    }
    c->fd = -1;
    if (rename(c->temp_path, c->path) != 0) {
        abandon_write(c, strerror(errno));
        unlink(c->temp_path);
        return;
    }
    if (getenv("LCM_VERBOSE"))
        fprintf(stderr, "lcm: packed-weight cache %s: wrote %u layers (%d packed by this run)\n",
                c->path, written, c->misses);
    packed_cache_trim_folder(c->path);
}

static void cache_release(void *object) {
    packed_cache *c = object;
    if (!c) return;
    if (c->misses) commit(c);
    if (c->fd >= 0) {
        close(c->fd);
        unlink(c->temp_path);
    }
    packed_mapping_release(c->mapping);
    free_entries(c);
    free(c);
}


packed_cache *packed_cache_for(const weight_set *ws, const ops_backend *b) {
    void *attached = weight_set_attachment(ws);
    if (attached == &unusable_marker) return NULL;
    if (attached) return attached;
    char identity[8192], setup[2048], folder[PATH_MAX];
    if (!packed_cache_enabled() || !weight_set_cache_identity(ws, identity, sizeof identity) ||
        !packed_cache_folder(folder, sizeof folder) || !make_folders(folder)) {
        weight_set_attach(ws, &unusable_marker, NULL);
        return NULL;
    }
    packed_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fd = -1;
    backend_setup_key(b, setup, sizeof setup);
    sha256_ctx sha;
    sha256_init(&sha);
    char head[64];
    snprintf(head, sizeof head, "lcm packed weights %d %s\n", PACKED_FORMAT_VERSION,
             b->precision == LCM_PRECISION_BF16 ? "bf16" : "fp32");
    sha256_update(&sha, head, strlen(head));
    sha256_update(&sha, setup, strlen(setup));
    sha256_update(&sha, identity, strlen(identity));
    sha256_final(&sha, c->key);
    char hex[65];
    sha256_hex(c->key, hex);
    hex[24] = 0;
    if (snprintf(c->path, sizeof c->path, "%s/packed-%s.bin", folder, hex) >= (int)sizeof c->path) {
        free(c);
        weight_set_attach(ws, &unusable_marker, NULL);
        return NULL;
    }
    open_existing(c);
    weight_set_attach(ws, c, cache_release);
    return c;
}
