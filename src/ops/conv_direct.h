// Direct NHWC convolution for CPUs with AVX2 + FMA, with AVX-512 register tiles where the CPU has
// them (the backend, ops/backend.h, times it against oneDNN per layer shape).
//
// im2col + sgemm copies every input value k*k times into a column buffer, and the sgemm then packs
// that buffer and the weights again on every call: for 64-channel layers (TAESD) the copies cost
// about as much as the arithmetic. Here the weights are packed once at load into blocks of 16
// output channels, and a 12-pixel x 16-channel register tile reads the input pixels in place
// through a table of pointers (one per pixel and tap; padding points at zeros, a 2x nearest
// upsample of the input is a different pointer), so nothing is copied.
//
// Each output value is summed by one thread in a fixed order (bias, then taps, then input
// channels), so results do not depend on the number of threads, nor on whether the AVX-512 or the
// AVX2 tile ran (LCM_NO_AVX512=1).
#ifndef LCM_OPS_CONV_DIRECT_H
#define LCM_OPS_CONV_DIRECT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "ops/packed_cache.h"

typedef struct conv_direct conv_direct;

// Whether this CPU runs the kernel (AVX2 and FMA).
bool conv_direct_available(void);

// Packs `weight` [out, in, kernel, kernel] and `bias` [out] (NULL: none); both are copied, the
// caller keeps its arrays. *result is owned by the caller (conv_direct_free).
lcm_status conv_direct_new(const float *weight, const float *bias, int in, int out, int kernel,
                           int stride, int padding, conv_direct **result);
void conv_direct_free(conv_direct *d);

// The packed form, for the packed-weight cache: entry->blobs borrow d's arrays. Upsampling weights
// (conv_direct_prepare_upsampled) are not part of it: they are made again after an import.
void conv_direct_export(const conv_direct *d, packed_entry *entry);
// A layer computing on entry's arrays in place (borrowed: they must outlive *out, and are not
// freed by conv_direct_free). LCM_ERR_FORMAT when the entry is not a valid packing of a layer of
// entry->shape on this build (sizes, alignment, settings).
lcm_status conv_direct_import(const packed_entry *entry, conv_direct **out);

// For a layer that always runs on a 2x nearest-upsampled input (Upsample2D's conv): packs a second
// set of weights with which conv_direct_run(upsample_input = true) computes each output pixel from
// the 2 x 2 input pixels it depends on instead of 3 x 3 upsampled ones: 4/9 of the arithmetic, the
// same values up to float rounding (taps landing on one pixel are summed first). Needs a 3x3 kernel
// with stride 1 and padding 1 (does nothing otherwise); costs 16/9 of the layer's weight memory.
lcm_status conv_direct_prepare_upsampled(conv_direct *d);

// Layers of 3x3, stride 1, padding 1, at most 640 input and output channels, a multiple of 8
// inputs and of 16 outputs are packed for Winograd instead: F(4x4, 3x3) up to 256 channels (36
// instead of 144 products per 4x4 outputs, 4x the layer's weight memory), F(2x2, 3x3) above (16
// instead of 36 per 2x2, 16/9 of the memory). Wider such layers keep their direct weights and run
// F(2x2, 3x3) on weights transformed during each call for outputs of at least 256 pixels. Both
// upsampling or not (prepare_upsampled then does nothing). conv_direct_set_winograd(false) keeps
// layers packed afterwards on the direct kernel, to compare the two; ops_backend_from_environment
// makes that call for LCM_WINOGRAD=0 (and the opposite for any other value), being the one reader
// of the kernels' environment variables. Process-wide; not thread-safe.
void conv_direct_set_winograd(bool on);
// Whether layers packed now get Winograd weights (the setting above).
bool conv_direct_winograd_enabled(void);

// Winograd outputs of more than `bytes` (default, or bytes < 0: 32 MiB, the L3 cache of one Zen
// chiplet) are written with non-temporal stores: the next layer would not find them in the cache
// anyway, and the stores then need no reads for ownership. Tests set 0 to cover that path. Not
// thread-safe.
void conv_direct_set_stream_bytes(int64_t bytes);

// What conv_direct_run does with each finished value: + residual, then ReLU.
typedef struct conv_direct_epilogue {
    const float *residual; // NHWC [n, oh, ow, out], or NULL
    bool relu;
} conv_direct_epilogue;

// y [n, oh, ow, out] = conv(x) for x NHWC [n, h, w, in]; with `upsample_input` the convolution
// sees x nearest-upsampled to [2h, 2w]. oh and ow follow from the layer and the seen size.
// Returns LCM_ERR_OUT_OF_MEMORY when its small per-thread tables cannot be allocated.
lcm_status conv_direct_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w,
                           bool upsample_input, const conv_direct_epilogue *epilogue, float *y);

#endif
