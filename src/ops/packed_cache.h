// The packed-weight cache: the packed form of every layer of a weight file (Winograd-transformed,
// blocked for oneDNN, converted to bf16, ...) kept on disk, so that the next run maps it instead
// of packing again, as OpenVINO's model cache does.
//
// One cache file per weight set, precision and kernel set-up, in the user's cache folder
// ($XDG_CACHE_HOME/lcm/packed, default ~/.cache/lcm/packed). Its name is a hash of:
//  - the weight files' identity: real path (a hub snapshot's file resolves to its content-
//    addressed blob), size, modification time, device and inode, plus what the opener adds
//    (a single-file checkpoint's component);
//  - the precision, the CPU and kernel set-up (backend_setup_key: kernel version, CPU, features,
//    oneDNN version, forced kernels, LCM_TUNE, LCM_WINOGRAD) and this format's version.
// So a changed file, CPU or library gets a new cache file, never a stale one. Inside, each layer's
// entry is keyed by its weight name, kernel and shape, and is used only when the loader asks for
// exactly that layer.
//
// Writing: a layer packed on a miss is appended to a temporary file right away; when the weight
// set closes, the index is written and the file renamed into place (atomic: readers see the old
// file or the whole new one). A write that fails (disk full, read-only folder) drops the
// temporary file with a one-line notice; loading never fails because of the cache.
// Reading: the file is mapped read-only and its header and index checked (magic, version, key,
// sizes, every offset inside the file, a checksum of the index); a file that fails any check is
// ignored with a one-line notice and rebuilt. Layers borrow their packed arrays from the mapping,
// which lives until the last layer using it is freed (packed_mapping_release).
//
// Size: after each write the folder is trimmed to LCM_CACHE_LIMIT bytes (default 20G; suffixes
// K, M, G), dropping the least recently used files first (a hit refreshes a file's time).
// LCM_CACHE=off, or the pipeline option, disables it; lcm cache list|clear manages it.
#ifndef LCM_OPS_PACKED_CACHE_H
#define LCM_OPS_PACKED_CACHE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/error.h"
#include "io/weights.h"
#include "lcm.h"

// What kind of packed layer an entry holds.
typedef enum packed_family {
    PACKED_CONV_DIRECT = 1, // conv_direct (direct and Winograd weights)
    PACKED_CONV_ONEDNN,     // dnnl_layer convolution
    PACKED_CONV_SGEMM,      // [out, k, k, in] weights for NHWC im2col + sgemm
    PACKED_LINEAR_DIRECT,   // linear_direct panels
    PACKED_LINEAR_ONEDNN,   // dnnl_layer matmul
    PACKED_LINEAR_SGEMM,    // the plain [out, in] weight
} packed_family;

#define PACKED_MAX_BLOBS 4
// Bytes of a family's description at most (a oneDNN memory descriptor is the largest).
#define PACKED_META_MAX 2048

// One array of a packed layer. In an entry read from the cache, `data` points into the mapping.
typedef struct packed_blob {
    const void *data;
    uint64_t bytes;
} packed_blob;

// A packed layer as the cache stores it: the family's small description (a POD struct the
// family defines and checks when importing) and its arrays.
typedef struct packed_entry {
    packed_family family;
    int32_t shape[5]; // in, out, kernel, stride, padding (kernel..padding 0 for linear layers)
    const void *meta; // meta_bytes bytes: meta_storage (export) or the cache's copy (find)
    uint32_t meta_bytes;
    packed_blob blobs[PACKED_MAX_BLOBS];
    int blob_count;
    _Alignas(16) unsigned char meta_storage[PACKED_META_MAX];
} packed_entry;

typedef struct ops_backend ops_backend; // ops/backend.h

typedef struct packed_cache packed_cache;
typedef struct packed_mapping packed_mapping;

// The cache of `ws` for layers packed with `b` (its precision and setup key, backend_setup_key; `b`
// is only read), opened on first use and attached to the weight set (it is committed and freed
// when the set closes; later calls return it whatever backend they pass). NULL when the set is not
// cacheable (weight_set_cache_identity), caching is off, or no cache folder can be used: the
// caller then packs as usual.
packed_cache *packed_cache_for(const weight_set *ws, const ops_backend *b);

// Finds the entry of layer `name` with this family and shape. On a hit fills *entry (pointers into
// the mapping) and returns the mapping with one reference taken for the caller, who keeps it as
// long as it uses the arrays and then calls packed_mapping_release. NULL on a miss.
packed_mapping *packed_cache_find(packed_cache *cache, const char *name, packed_family family,
                                  const int32_t shape[5], packed_entry *entry);

// Records the packed layer `name` (its arrays are copied into the cache file now). Errors are not
// returned: a cache that cannot be written is dropped with a one-line notice.
void packed_cache_add(packed_cache *cache, const char *name, const packed_entry *entry);

void packed_mapping_release(packed_mapping *mapping);

// The mapping the layers loaded from `ws` borrow from (one reference for the caller), or NULL when
// none did. A model keeps it to drop its weights' pages between uses (below).
packed_mapping *packed_cache_mapping(const weight_set *ws);

// Drops the mapping's pages from the process's memory (madvise MADV_DONTNEED): they stay in the
// page cache and come back on the next touch (minor faults, no disk read unless memory was
// short). A generation drops the UNet's before the VAE decode, so the two never count together.
void packed_mapping_drop_pages(const packed_mapping *mapping);

// For the fuzz harness (fuzz/fuzz_packed_cache.c): reads `size` bytes (64-byte aligned) as a cache
// file whose key is whatever its header says, and imports every entry the index accepts as a load
// would (each family's import checks it against its shape). Returns the number imported.
// `skip_check_sums` ignores the index's and blobs' check sums, so that mutated bytes reach the
// entry parsing and the imports behind them.
int packed_cache_check_bytes(const unsigned char *bytes, size_t size, bool skip_check_sums);

// Whether caching is on for this process (LCM_CACHE unset or not "off"/"0").
bool packed_cache_enabled(void);

// The folder holding the cache files; false when none can be named.
bool packed_cache_folder(char *buf, size_t size);

// Drops the least recently used cache files until the folder holds at most LCM_CACHE_LIMIT (default
// 20G); never `keep` (the file just written, even if alone over the limit: it is what this run
// uses). packed_cache.c calls it after writing a file.
void packed_cache_trim_folder(const char *keep);

// `lcm cache list`: one line per cache file (size, last use, name), then the total. Returns the
// number of files.
int packed_cache_list(FILE *out);
// `lcm cache clear`: deletes every cache file, left-over temporary files and the kernel tuning
// table; *freed receives the bytes freed. Fails only when no cache folder can be named.
lcm_status packed_cache_clear(int64_t *freed);

#endif
