// The unpickler behind io/torch_pickle.c: a whitelist pickle machine that builds values (dicts,
// tuples, storages, tensors) and never executes anything; shared by the zip and legacy formats.
#ifndef LCM_IO_TORCH_UNPICKLE_H
#define LCM_IO_TORCH_UNPICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io/zip.h"
#include "lcm.h"

typedef enum value_kind {
    V_NONE,
    V_BOOL,
    V_INT,
    V_FLOAT,
    V_STRING,
    V_TUPLE,
    V_LIST,
    V_DICT, // items hold key, value, key, value, ...
    V_GLOBAL,
    V_STORAGE,
    V_TENSOR,
} value_kind;

// The globals a torch checkpoint may name; anything else is refused at the GLOBAL opcode.
typedef enum global_id {
    G_ORDERED_DICT,
    G_REBUILD_TENSOR_V2,
    G_REBUILD_PARAMETER,
    G_STORAGE_TYPE, // value->dtype says which
} global_id;

typedef struct value {
    value_kind kind;
    int64_t i;   // V_BOOL, V_INT; V_TENSOR: storage offset in elements
    double f;    // V_FLOAT
    char *s;     // V_STRING (NUL-terminated copy; len excludes the NUL)
    size_t len;
    struct value **items; // V_TUPLE, V_LIST, V_DICT
    size_t count, capacity;
    global_id global;  // V_GLOBAL
    st_dtype dtype;    // V_GLOBAL storage type, V_STORAGE, V_TENSOR
    const uint8_t *data; // V_STORAGE: first byte; V_TENSOR: first element
    uint64_t numel;    // V_STORAGE: elements; V_TENSOR: elements
    int ndim;          // V_TENSOR
    int64_t shape[ST_MAX_DIMS];
    struct value *storage; // V_TENSOR: its storage (legacy files fill the data in after the pickle)
} value;

typedef struct loaded_storage {
    char *key;
    value *storage;
} loaded_storage;

typedef struct unpickler {
    const char *label;
    const zip_archive *zip;
    const char *prefix; // archive top folder, with trailing '/'
    const uint8_t *start, *p, *end;
    value **all; // every value allocated, for freeing
    size_t all_count, all_capacity;
    value **stack;
    size_t depth, stack_capacity;
    size_t marks[TORCH_MAX_MARKS];
    size_t mark_count;
    value **memo;
    size_t memo_capacity, memo_entries; // memo_entries = len(memo) in Python terms
    loaded_storage *storages;
    size_t storage_count, storage_capacity;
    void **buffers; // inflated entries
    size_t buffer_count, buffer_capacity;
    bool legacy; // pre-1.6 format: storages follow the pickles, data resolved afterwards
} unpickler;

// Grows *array (of `item`-byte elements, *capacity of them) to hold `needed`; false when out of
// memory (the array is untouched then).
bool unpickle_grow(void **array, size_t *capacity, size_t needed, size_t item);

// Releases every value and buffer the unpickler holds (not the unpickler itself).
void unpickler_free(unpickler *u);

// The next n bytes of the pickle (borrowed), or LCM_ERR_FORMAT when it ends first.
lcm_status unpickle_take(unpickler *u, size_t n, const uint8_t **bytes);

// An n-byte little-endian number.
uint64_t unpickle_le(const uint8_t *b, int n);

// Runs the pickle from u->p to its STOP opcode; *result is the object it built (owned by u).
lcm_status unpickle_run(unpickler *u, value **result);

#endif
