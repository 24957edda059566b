// Read-only access to ZIP archives held in memory (the container of PyTorch's `torch.save` files).
//
// The archive is untrusted. zip_open_memory validates the whole central directory before anything
// reads an entry: the end-of-central-directory record (and its ZIP64 form, which torch writes for
// files over 4 GiB), every entry's name, sizes and local header, that each entry's data lies inside
// the file before the central directory, that no two entries overlap, and that names are unique.
// Only "stored" (method 0) and "deflate" (method 8) entries are accepted; encrypted entries,
// multi-disk archives and other methods are refused with a message naming the entry.
#ifndef LCM_IO_ZIP_H
#define LCM_IO_ZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

// Archives with more entries than this are refused (a real SD checkpoint has ~1200).
#define ZIP_MAX_ENTRIES 1000000

typedef struct zip_entry {
    const char *name;        // NUL-terminated copy, owned by the archive
    bool stored;             // method 0: `data` is the content itself
    const uint8_t *data;     // the (possibly compressed) bytes inside the archive memory
    uint64_t compressed_size;
    uint64_t size;           // uncompressed size
    uint32_t crc32;
} zip_entry;

typedef struct zip_archive zip_archive;

// Validates the archive in bytes[0..size) (borrowed: must outlive the archive). `label` names the
// source in errors. The caller owns *out (zip_close).
lcm_status zip_open_memory(const void *bytes, size_t size, const char *label, zip_archive **out);
void zip_close(zip_archive *zip);

size_t zip_count(const zip_archive *zip);
const zip_entry *zip_at(const zip_archive *zip, size_t index);
// NULL when absent.
const zip_entry *zip_find(const zip_archive *zip, const char *name);

// The entry's content: for stored entries a pointer into the archive (*copy = NULL); for deflated
// ones a malloc'd buffer of entry->size bytes that the caller frees (*copy == *content). The CRC-32
// is checked for deflated entries (stored ones are mapped lazily and not checksummed: a corrupt
// float is not a safety issue, and reading a multi-GB model twice would be).
lcm_status zip_read(const zip_archive *zip, const zip_entry *entry, const uint8_t **content,
                    uint8_t **copy);

#endif
