// Writing safetensors files, streamed tensor by tensor so a multi-GB model never sits in memory
// twice. The file appears at `path` only when complete (temporary file + rename).
#ifndef LCM_IO_SAFETENSORS_WRITE_H
#define LCM_IO_SAFETENSORS_WRITE_H

#include "io/safetensors.h"

typedef struct st_write_entry {
    const char *name;
    st_dtype dtype; // F32, F16, BF16 or I8 (converted from the float32 the callback produces;
                    // for I8 the values are integers, rounded and clamped to [-128, 127])
    int ndim;
    int64_t shape[ST_MAX_DIMS];
} st_write_entry;

// Produces entry `index`'s values as float32 into out (numel floats).
typedef lcm_status (*st_fill_fn)(void *user_data, size_t index, float *out, int64_t numel);

// Writes the entries in the given order. `metadata_format` (may be NULL) becomes
// __metadata__.format ("pt" for files that PyTorch tools should accept).
lcm_status st_write(const char *path, const st_write_entry *entries, size_t count, st_fill_fn fill,
                    void *user_data, const char *metadata_format);

// Same, with any string key/value pairs in __metadata__ (lcm convert stores the model's configs
// there so a single file carries everything a pipeline needs).
lcm_status st_write_metadata(const char *path, const st_write_entry *entries, size_t count,
                             st_fill_fn fill, void *user_data, const char *const *meta_keys,
                             const char *const *meta_values, size_t meta_count);

#endif
