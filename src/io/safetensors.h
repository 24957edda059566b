// safetensors files: memory-mapped, validated, zero-copy.
//
// Format: u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
// then the raw little-endian data; offsets are relative to the end of the header.
//
// Files are untrusted: st_open checks everything a later read relies on (header bounds, JSON shape,
// dtypes, offsets inside the data area, size = numel * dtype size without overflow, no duplicate names,
// no overlapping tensors) and fails with a message naming the file and the tensor. After a successful
// open every st_tensor's data pointer and byte size are safe to use.
#ifndef LCM_IO_SAFETENSORS_H
#define LCM_IO_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

#define ST_MAX_DIMS 8

typedef enum st_dtype {
    ST_BOOL,
    ST_U8,
    ST_I8,
    ST_U16,
    ST_I16,
    ST_F16,
    ST_BF16,
    ST_U32,
    ST_I32,
    ST_F32,
    ST_U64,
    ST_I64,
    ST_F64,
    ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
    const char *name; // owned by the st_file
    st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const void *data; // inside the mapping; may be unaligned for the dtype
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

// Opens and validates `path`. On success *out is owned by the caller (st_close).
lcm_status st_open(const char *path, st_file **out);

// Same validation over bytes in memory (borrowed: must outlive the st_file). `label` names the
// source in error messages. Used by the fuzz harness and tests.
lcm_status st_open_memory(const void *bytes, size_t size, const char *label, st_file **out);

// An st_file over tensors that another container format located (io/torch_pickle.c), so that
// weight sets and loaders read both formats through one interface. Takes ownership, also on
// failure, of `tensors` (count entries, each name malloc'd; data pointers must stay valid while the
// file is open and nbytes must equal numel * dtype size), of `mapping` (munmap'd at close; NULL
// when none) and of `buffers` (n_buffers malloc'd blocks the data points into, freed at close).
// Fails, naming `label`, when two tensors have the same name.
lcm_status st_open_table(const char *label, st_tensor *tensors, size_t count, void *mapping,
                         size_t mapping_size, void **buffers, size_t n_buffers, st_file **out);

// Releases the mapping and everything st_find/st_at returned. NULL is allowed.
void st_close(st_file *file);

const char *st_path(const st_file *file);
size_t st_count(const st_file *file);
// Tensors in file order of their data offsets. Borrowed from `file`.
const st_tensor *st_at(const st_file *file, size_t index);
// NULL when absent. Borrowed from `file`.
const st_tensor *st_find(const st_file *file, const char *name);
// A `__metadata__` string value, or NULL. Borrowed from `file`.
const char *st_metadata(const st_file *file, const char *key);
// The metadata entries in file order: keys from 0 to st_metadata_count()-1. Borrowed.
size_t st_metadata_count(const st_file *file);
const char *st_metadata_key_at(const st_file *file, size_t index);
// Adds a metadata entry (copied) to a file made by st_open_table; an existing key is an error.
lcm_status st_table_add_metadata(st_file *file, const char *key, const char *value);

const char *st_dtype_name(st_dtype dtype);
size_t st_dtype_size(st_dtype dtype);

// Converts the tensor's elements to float32 into dst (numel floats, caller-owned). Accepts F32, F16,
// BF16, F64 and the integer types; anything else is an error naming the tensor.
lcm_status st_read_f32(const st_file *file, const st_tensor *t, float *dst);

// Converts integer (and bool) tensors to int64 into dst (numel values, caller-owned).
lcm_status st_read_i64(const st_file *file, const st_tensor *t, int64_t *dst);

// Finds `name`, checks its shape equals shape[0..ndim) (pass ndim < 0 to accept any shape), and
// returns a malloc'd float32 copy in *out (caller frees). Errors name file, tensor, and both shapes.
lcm_status st_load_f32(const st_file *file, const char *name, int ndim, const int64_t *shape,
                       float **out);

// Tells the kernel that the mapped pages lying wholly inside tensor t will not be needed soon, so
// they stop counting towards the process's memory (they are re-read from the file if touched
// again). Loaders call this after converting a tensor into their own copy, so a multi-GB model is
// never resident twice. A no-op for in-memory files.
void st_release_pages(const st_file *file, const st_tensor *t);

// Whether the tensors' data lies in a file mapping (st_open, or a table over a mapped file), so
// that st_release_mapping can drop it from memory and a reader re-reads it from the file.
bool st_mapped(const st_file *file);

// As st_release_pages, for every page of the file's mapping: pages lent out in place (see
// weight_set_map_f32) stay valid and come back from the file when next touched.
void st_release_mapping(const st_file *file);

// Formats a shape as "[1, 4, 8, 8]" into buf; returns buf.
char *st_format_shape(char *buf, size_t size, int ndim, const int64_t *shape);

// float16 / bfloat16 bit patterns to float32.
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);

#endif
