// Dense float32 tensors for the reference compute path.
//
// The shape is always the logical one of the reference library ([N, C, H, W] for images and
// latents). The data is row-major with the last axis fastest, except that a 4-D tensor may be
// stored channels-last (`layout == TENSOR_NHWC`, data order [N, H, W, C]) when the fast kernels
// produce it. Ops accept either layout; code that reads `data` of a 4-D activation directly must
// first call tensor_to_nchw() (or check `layout`). Ops allocate their outputs and return them; a NULL input (an earlier failure)
// makes every op return NULL without doing anything, so a forward pass reads as a straight line and
// checks for failure once at the end. tensor_free(NULL) is a no-op.
#ifndef LCM_CORE_TENSOR_H
#define LCM_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

#define TENSOR_MAX_DIMS 4

typedef enum tensor_layout {
    TENSOR_NCHW = 0, // plain row-major in shape order (every tensor of ndim != 4 too)
    TENSOR_NHWC = 1, // 4-D only: data order [N, H, W, C] for shape [N, C, H, W]
} tensor_layout;

typedef struct tensor {
    int ndim;
    tensor_layout layout;
    int64_t shape[TENSOR_MAX_DIMS];
    float *data; // owned by the tensor, 64-byte aligned
    size_t capacity; // bytes behind `data` (tensor_new's allocation; set only by tensor.c)
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
// [a; b] along the batch axis: a new plain tensor. a and b are plain with equal trailing shapes;
// NULL when out of memory.
tensor *tensor_concat_batch(const tensor *a, const tensor *b);
void tensor_free(tensor *t);

// A new tensor with the same shape and values stored in plain (NCHW) order: a copy when `t` is
// already plain. NULL in, NULL out.
tensor *tensor_to_nchw(const tensor *t);
// The same in channels-last order (4-D only; other ranks are copied unchanged).
tensor *tensor_to_nhwc(const tensor *t);

int64_t tensor_numel(const tensor *t);

// Large tensor buffers (>= 1 MiB) freed by tensor_free are kept for later tensors, so that a
// forward pass that frees and allocates activations layer after layer does not pay for returning
// pages to the kernel and faulting fresh zeroed ones back in. A kept buffer serves a tensor of the
// same size; buffers of 4 MiB and more are mappings of whole huge pages, and a tensor of a new size
// gets the pages of kept ones moved into it (mremap, no copy), so a decoder that follows another
// with different sizes (TAESD after the UNet) reuses their pages too. The bytes kept plus the bytes
// of large tensors alive never exceed the most that were ever alive at once (older kept buffers
// are released to make room), so the peak resident memory is not raised. Thread-safe. A new
// tensor's values are unspecified (tensor_zeros for zeros).
//
// Returns every kept buffer to the system (end of a generation, an idle server).
void tensor_release_cached(void);

// The bookkeeping of that rule, for tests: bytes kept, bytes of large tensors alive, most alive,
// and the bytes of mappings that the cache had to take fresh from the system.
typedef struct tensor_cache_counts {
    size_t kept, live, most_live, fresh;
} tensor_cache_counts;
tensor_cache_counts tensor_cache_stats(void);

// Frees *t and replaces it with `next`: `tensor_replace(&h, conv2d_forward(&w->conv, h));` reads
// as "h becomes conv(h)" without a leak.
void tensor_replace(tensor **t, tensor *next);

#endif
