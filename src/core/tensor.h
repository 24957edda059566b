// Dense float32 tensors for the reference compute path.
//
// Layout is row-major with the shape's last axis fastest; images and latents are NCHW like the
// reference library. Ops allocate their outputs and return them; a NULL input (an earlier failure)
// makes every op return NULL without doing anything, so a forward pass reads as a straight line and
// checks for failure once at the end. tensor_free(NULL) is a no-op.
#ifndef LCM_CORE_TENSOR_H
#define LCM_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

#define TENSOR_MAX_DIMS 4

typedef struct tensor {
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    float *data; // owned by the tensor, 64-byte aligned
} tensor;

// Uninitialised tensor of the given shape; NULL (with the error set) when out of memory.
tensor *tensor_new(int ndim, const int64_t *shape);
tensor *tensor_new2(int64_t a, int64_t b);
tensor *tensor_new3(int64_t a, int64_t b, int64_t c);
tensor *tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w);
tensor *tensor_zeros(int ndim, const int64_t *shape);
// A copy of `data` (numel floats) with the given shape.
tensor *tensor_from(int ndim, const int64_t *shape, const float *data);
tensor *tensor_copy(const tensor *t);
void tensor_free(tensor *t);

int64_t tensor_numel(const tensor *t);

// Frees *t and replaces it with `next`: `tensor_replace(&h, conv2d_forward(&w->conv, h));` reads
// as "h becomes conv(h)" without a leak.
void tensor_replace(tensor **t, tensor *next);

#endif
