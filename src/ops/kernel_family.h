// A kernel family: how one kind of kernel packs, runs, frees, exports and imports the weights of a
// convolution or linear layer. Each layer (ops.h: conv2d.impl, linear.impl) holds one family
// and that family's packed state, so the layer code never asks which kind of kernel it has.
//
// The families are listed in one table (ops/backend_families.c: backend_kernel_families); adding a family
// (an int8 kernel of our own, a GPU) means one file that defines its kernel_family and one entry
// in that table. The backend decides which family packs a layer (ops/backend.h); the family only
// does what it is told.
#ifndef LCM_OPS_KERNEL_FAMILY_H
#define LCM_OPS_KERNEL_FAMILY_H

#include <stdbool.h>
#include <stdint.h>

#include "ops/ops.h"
#include "ops/packed_cache.h"

typedef struct kernel_family {
    const char *name;            // "direct", "onednn", "sgemm" (as conv_kernel_name gives)
    conv_kernel conv_id;         // the conv_kernel that selects it
    linear_kernel linear_id;     // the linear_kernel that selects it
    // Its entries in the packed-weight cache (ops/packed_cache.h); 0 with NULL export/import: its
    // layers are not cached.
    packed_family conv_cache;
    packed_family linear_cache;

    // ---- convolutions --------------------------------------------------------------------------
    // Packs c->weight / c->bias (only read; the caller frees the plain weight) in `precision` into
    // a new state, owned by the caller (conv_free). Fails, with the error set, where the family
    // cannot run on this CPU or shape.
    lcm_status (*conv_pack)(const conv2d *c, lcm_precision precision, void **state);
    // x [N, in, H, W] in either layout -> [N, out, oh, ow] (NHWC), with `fusion` applied inside
    // when conv_fuses (else fusion is always {0}: the caller takes the steps one after another).
    tensor *(*conv_run)(const conv2d *c, const tensor *x, int64_t oh, int64_t ow,
                        const conv2d_fusion *fusion);
    bool conv_fuses;
    // NULL: nothing to prepare (ops.h: conv2d_prepare_upsampled).
    lcm_status (*conv_prepare_upsampled)(const conv2d *c);
    void (*conv_free)(void *state);
    // Describes the packed state for the cache (arrays borrowed from the state) / makes a state
    // whose arrays are borrowed from the cache entry's mapping (the layer keeps the mapping).
    void (*conv_export)(const conv2d *c, packed_entry *entry);
    lcm_status (*conv_import)(const conv2d *c, const packed_entry *entry, void **state);

    // ---- linear layers -------------------------------------------------------------------------
    // As conv_pack. `keeps_weight`: the family computes on the plain weight (l->weight stays, the
    // state may be NULL).
    lcm_status (*linear_pack)(const linear *l, lcm_precision precision, void **state);
    bool linear_keeps_weight;
    // y [rows, out] = x [rows, in] W^T + bias, as `items` products of rows / items rows each where
    // the family's rounding depends on the row count (so an image's result does not depend on what
    // else is in the batch).
    lcm_status (*linear_run)(const linear *l, const float *x, int64_t rows, int64_t items,
                             float *y);
    void (*linear_free)(void *state);
    void (*linear_export)(const linear *l, packed_entry *entry);
    // May set l->weight (borrowed from the mapping, weight_mapped) for a family that keeps it.
    lcm_status (*linear_import)(linear *l, const packed_entry *entry, void **state);

    // Whether a packed state would run a library's reference implementation (slow enough to be
    // refused when measuring, ops/backend.c). NULL: never.
    bool (*falls_to_reference)(const void *state);

    // ---- whole layers --------------------------------------------------------------------------
    // For a family that takes the layer's input as given and quantizes it itself (int8): the
    // layer's forward, before any fake quantization or observer; conv_run / linear_run are then
    // unused. NULL: the layer computes through conv_run / linear_run.
    tensor *(*forward)(const void *state, const tensor *x, const float *bias);
} kernel_family;

extern const kernel_family kernel_family_direct; // ops/kernel_direct.c
extern const kernel_family kernel_family_onednn; // ops/kernel_onednn.c
extern const kernel_family kernel_family_sgemm;  // ops/kernel_sgemm.c
extern const kernel_family kernel_family_int8;   // ops/kernel_int8.c

// The families in the order the packed-weight cache tries them; `count` set. Static storage.
const kernel_family *const *backend_kernel_families(int *count);
// The family a conv_kernel / linear_kernel names, or NULL (AUTO, or an unknown value).
const kernel_family *backend_conv_family(conv_kernel kernel);
const kernel_family *backend_linear_family(linear_kernel kernel);

// The plain-weight product the reference path and the sgemm family share (ops/linear.c).
void linear_plain_run(const linear *l, const float *x, int64_t rows, int64_t items, float *y);

#endif
