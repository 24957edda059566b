// A model component's weights: one safetensors file, or several shards listed by a
// `*.safetensors.index.json` ("weight_map": tensor name -> shard file), with the diffusers variant
// rule: `--variant fp16` picks `NAME.fp16.safetensors` and falls back to `NAME.safetensors`.
#ifndef LCM_IO_WEIGHTS_H
#define LCM_IO_WEIGHTS_H

#include "io/safetensors.h"
#include "lcm.h"

typedef struct weight_set weight_set;

// Opens the weights of the component in `dir` whose files are named `basename` (e.g.
// "diffusion_pytorch_model", "model"). `variant` may be NULL. The caller owns *out
// (weight_set_close).
lcm_status weight_set_open(const char *dir, const char *basename, const char *variant,
                           weight_set **out);

// Opens one explicit .safetensors file as a weight set; a .pt/.pth/.ckpt/.bin file is read as a
// PyTorch checkpoint (io/torch_pickle.h).
lcm_status weight_set_open_file(const char *path, weight_set **out);

// Single-file checkpoints in another naming scheme (the original Stable Diffusion layout): the
// loaders ask for diffusers names, and `rename` says under which name the file stores each one
// (it may look at `file` to choose between alternatives). Shapes that differ only by trailing 1s
// are accepted. `context` is malloc'd; the set owns it from this call on (freed even on failure).
typedef lcm_status (*weight_rename_fn)(const void *context, const st_file *file, const char *name,
                                       char *out, size_t size);
lcm_status weight_set_open_renamed(const char *path, weight_rename_fn rename, void *context,
                                   weight_set **out);

void weight_set_close(weight_set *ws);

// NULL when absent. *file (optional) receives the shard that holds it. Borrowed from ws.
const st_tensor *weight_set_find(const weight_set *ws, const char *name, const st_file **file);

// Loads `name` as a malloc'd float32 array (caller frees), checking its shape (ndim < 0: any).
// Errors name the file, the tensor and both shapes.
lcm_status weight_set_load_f32(const weight_set *ws, const char *name, int ndim,
                               const int64_t *shape, float **out);

// The float32 values of `name` in place, inside the file's mapping, when they are exactly what
// weight_set_load_f32 would return: an F32 tensor of the given shape (ndim >= 0), aligned for
// float, in a mapped file, with no patches attached to the set. NULL otherwise (also when the
// tensor is missing or has another shape): the caller then loads a copy, which reports any error.
// The values are read-only and borrowed: valid until weight_set_close. Unlike a copy, they need
// not stay in memory: weight_set_release_pages drops them, and they are read again from the file
// (usually from the page cache) when next touched. As with any mapping, the file must not be
// rewritten in place while the set is open (replacing it by a rename, as downloads do, is fine).
const float *weight_set_map_f32(const weight_set *ws, const char *name, int ndim,
                                const int64_t *shape);

// An 8-bit weight as stored (lcm quantize): *values points at the I8 values of `name` inside the
// file (borrowed, valid until weight_set_close; weight_set_release_tensor drops their pages) and
// *scales is a copy of its per-output-channel F32 `NAME_scale` (owned by the caller). Both NULL,
// with LCM_OK, where the tensor is not I8 or the set changes values on loading (patches, renames,
// a recorder): weight_set_load_f32 then gives the float values. A format error naming the tensor
// and what was expected where the shape differs or the scales are missing, of another type or
// size, negative or not finite.
lcm_status weight_set_map_i8(const weight_set *ws, const char *name, int ndim, const int64_t *shape,
                             const int8_t **values, float **scales);

// Drops the pages of one tensor's values from the process's memory (st_release_pages), after a
// caller that read them in place (weight_set_map_f32) has made what it needs of them. Nothing
// happens for a tensor that is missing or not mapped.
void weight_set_release_tensor(const weight_set *ws, const char *name);

// Drops every page of the set's file mappings from the process's memory (st_release_mapping), so
// that weights used in place stop counting towards it until they are next read.
void weight_set_release_pages(const weight_set *ws);

// A patch on the values of every weight the set loads (LoRA fusion): weight_set_load_f32 calls it
// with the tensor's name, its shape and the freshly converted float32 values, which it may change
// in place. Every model loader reads through weight_set_load_f32, so whatever packs, reorders or
// quantizes the weights afterwards sees the patched values. A failing patch fails the load. Any
// other function added here that hands out weight values must run the patches too. Patches are
// not thread-safe: load from one thread at a time.
typedef lcm_status (*weight_patch_fn)(void *user, const char *name, int ndim, const int64_t *shape,
                                      float *values);

#define WEIGHT_SET_MAX_PATCHES 4

// Adds a patch; patches run in the order they were added. `user` is borrowed and must outlive every
// later load from `ws`.
lcm_status weight_set_add_patch(weight_set *ws, weight_patch_fn patch, void *user);

// ---- the packed-weight cache (ops/packed_cache.h) -------------------------------------------
// The weight set only says who it is and carries the cache attached to it; the cache itself lives
// with the kernels whose packed forms it stores.

// Allows the packed-weight cache for this set (off by default: only the pipeline's loads use it).
// `note` (e.g. the component of a single-file checkpoint) becomes part of the set's identity.
lcm_status weight_set_allow_cache(weight_set *ws, const char *note);

// The identity the cache is keyed by: per shard its real path, size, modification time, device and
// inode, then the note. False (nothing written) when the set may not be cached: not allowed, no
// file behind it (synthetic), a file that cannot be stat'ed, or patches attached (a LoRA changes
// the values, and its bookkeeping needs every patched tensor to be read).
bool weight_set_cache_identity(const weight_set *ws, char *out, size_t size);

// One object the set carries for its cache: released (release(object)) when the set closes, before
// its files are. The set's only mutable state besides its pages, hence the const: loaders hold the
// set const. A second attach replaces (and releases) the first.
void weight_set_attach(const weight_set *ws, void *object, void (*release)(void *object));
void *weight_set_attachment(const weight_set *ws);

// Iterates every tensor of every shard (for `lcm info`): index from 0 to weight_set_count()-1.
size_t weight_set_count(const weight_set *ws);
const st_tensor *weight_set_at(const weight_set *ws, size_t index);

// The file (or index file) the weights came from, for messages. Borrowed from ws.
const char *weight_set_source(const weight_set *ws);

// ---- synthetic weights (lcm synth) ------------------------------------------------------------
// A weight set with no file behind it: every load returns deterministic pseudo-random values of
// the shape the loader asks for, and the recorder remembers (component, name, shape). Loading a
// model through it and then writing the recorded tensors produces a full-size random-weight model
// whose tensor names and shapes come from the model code itself, the one source of truth.

typedef struct weight_recorder weight_recorder;

lcm_status weight_recorder_new(uint64_t seed, weight_recorder **out);
void weight_recorder_free(weight_recorder *recorder);

// The weight set is owned by the caller (weight_set_close); `recorder` must outlive it.
lcm_status weight_set_open_synthetic(weight_recorder *recorder, const char *component,
                                     weight_set **out);

// Number of tensors recorded for `component`.
size_t weight_recorder_count(const weight_recorder *recorder, const char *component);

// Writes the tensors recorded for `component` to `path` (same values the loads returned), in
// `dtype` (ST_F32, ST_F16 or ST_BF16).
lcm_status weight_recorder_write(const weight_recorder *recorder, const char *component,
                                 const char *path, st_dtype dtype);

#endif
