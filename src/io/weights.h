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

// Opens one explicit .safetensors file as a weight set.
lcm_status weight_set_open_file(const char *path, weight_set **out);

void weight_set_close(weight_set *ws);

// NULL when absent. *file (optional) receives the shard that holds it. Borrowed from ws.
const st_tensor *weight_set_find(const weight_set *ws, const char *name, const st_file **file);

// Loads `name` as a malloc'd float32 array (caller frees), checking its shape (ndim < 0: any).
// Errors name the file, the tensor and both shapes.
lcm_status weight_set_load_f32(const weight_set *ws, const char *name, int ndim,
                               const int64_t *shape, float **out);

// Iterates every tensor of every shard (for `lcm info`): index from 0 to weight_set_count()-1.
size_t weight_set_count(const weight_set *ws);
const st_tensor *weight_set_at(const weight_set *ws, size_t index);

// The file (or index file) the weights came from, for messages. Borrowed from ws.
const char *weight_set_source(const weight_set *ws);

#endif
