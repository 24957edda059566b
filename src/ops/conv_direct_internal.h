// What the direct convolution's files share (ops/conv_direct.c: packing and the direct path,
// ops/conv_winograd.c: Winograd, ops/conv_tiles.c: the register tiles both run on). Not for other
// files: ops/conv_direct.h is the interface.
#ifndef LCM_OPS_CONV_DIRECT_INTERNAL_H
#define LCM_OPS_CONV_DIRECT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "ops/conv_direct.h"
#include "ops/fma_tile.h"

// Output pixels and channels of one register tile (ops/fma_tile.h).
#define TILE_PIXELS FMA_TILE_ROWS
#define TILE_CHANNELS FMA_TILE_COLUMNS
// Output pixels per task: a few tiles, so that 2 threads have thousands of tasks on large images
// while a task still reuses its pointer tables and weights. Fixed (not derived from the thread
// count or the instruction set).
#define TASK_PIXELS (8 * TILE_PIXELS)
// Flattened (tap, input channel) indices per slice of the sum: 128 x 4 blocks x 16 weights = 32
// KiB, most of the L1 data cache, while a task's register tiles go through them.
#define DEPTH_SLICE 128
// Output channel blocks of 16 that a register tile computes together (ops/fma_tile.h).
#define GROUP_BLOCKS FMA_MAX_BLOCKS
#define GROUP_CHANNELS (GROUP_BLOCKS * TILE_CHANNELS)
// Layers with at most DOT_CHANNELS outputs (the decoders' conv_out to RGB) would use 3 of the 16
// lanes of a channel tile. They sum along the input instead: 3 pixels x 3 channels of vectors
// running over the (tap, input channel) sum, added across their lanes at the end.
#define DOT_PIXELS 3
#define DOT_CHANNELS 3
_Static_assert(TILE_PIXELS % DOT_PIXELS == 0, "a tile's pixels go through the dot path in whole groups");

// Winograd for 3x3 stride-1 padding-1 layers of at most WINOGRAD_MAX_CHANNELS input and output
// channels (see the Winograd section below): measured 1.5-2.5x faster per layer. Its weights take
// 16/9 of the layer's (4x for the small layers on F(4x4, 3x3)), so it stops at 640 channels: every
// layer of the VAE and TAESD and the UNet's 320- and 640-channel ones (+98 MB over direct weights
// for the 640s, which run at 32x32 and 64x64 latents: measured 6-15% less UNet time), but not the
// UNet's 1280-channel ones: those would take about +1.3 GB, over the 4.6 GB fp32 target for a
// generation's peak, for the 8x8 and 16x16 latents where Winograd gains least.
#define WINOGRAD_MAX_CHANNELS 640
// F(2x2, 3x3) tiles per part of the transient run's input transform: a multiple of the register
// tile's 12 rows.
#define WINOGRAD_TASK_TILES 48
// Tasks a Winograd run with weights transformed at load makes at least (where the image allows),
// for 2 threads to share evenly.
#define WINOGRAD_MIN_TASKS 16
// Outputs of more bytes than this (the L3 cache of one Zen 3/4 chiplet) are written with
// non-temporal stores. sysconf's figure is no help: in these VMs it reports the host's 256 MiB.
#define WINOGRAD_STREAM_BYTES ((int64_t)32 << 20)
// Layers over WINOGRAD_MAX_CHANNELS run Winograd F(2x2, 3x3) on weights transformed during each
// call (winograd_transient_run) for outputs of at least this many pixels, and directly below:
// transforming the weights costs the same at any size, the saving grows with the pixels.
#define WINOGRAD_TRANSIENT_MIN_PIXELS 256
// Tiles per chunk of the transient run: 192 tiles' inputs at 2560 channels take 31 MB.
#define WINOGRAD_CHUNK_TILES 192
// F(4x4, 3x3) for layers of at most this many channels, F(2x2, 3x3) above (ops/conv_winograd.c).
#define WINOGRAD4_MAX_CHANNELS 256

struct conv_direct {
    int in, out, kernel, stride, padding;
    int blocks;    // output channel blocks of TILE_CHANNELS
    bool dot;      // out <= DOT_CHANNELS and in a multiple of 8: the dot-product path
    float *weight; // [blocks][kernel * kernel][in][TILE_CHANNELS], zero past `out`;
                   // with `dot`: [DOT_CHANNELS][kernel * kernel][in], zero past `out`
    float *bias;   // [blocks * TILE_CHANNELS], zero past `out` (and all zero without a bias)
    // conv_direct_prepare_upsampled: [4 phases][blocks][2 x 2 taps][in][TILE_CHANNELS], or NULL.
    float *phase_weight;
    // Winograd weights G g G^T: [blocks][positions][in][TILE_CHANNELS], or NULL. A layer with
    // them has no `weight`: they serve every call, upsampling ones too (where they do the same 16
    // products per 2x2 outputs as phase weights would).
    float *winograd_weight;
    int winograd_tile; // 2 or 4 outputs per side of a Winograd tile
    // A Winograd layer over WINOGRAD_MAX_CHANNELS: F(2x2, 3x3) on weights transformed during each
    // call (winograd_transient_run), on outputs of at least WINOGRAD_TRANSIENT_MIN_PIXELS.
    bool winograd_transient;
    bool borrowed; // weight, bias and winograd_weight belong to a packed-weight cache mapping
};

// A register tile's sums: tile[p][b][0..15] += sum over the flattened (tap, input channel) indices k
// in [k0, k1) of rows[p * taps + k / in][k % in] * weight[b * block_stride + k * 16 + 0..15], for
// the 12 pixels p of the tile and nb <= 4 blocks b of 16 output channels (pixel p's sums of block
// b at tile + p * row_stride + b * block_offset; with `from_zero` they start at 0 instead of at
// what `tile` holds). One implementation per instruction set, the same bits from each
// (ops/fma_tile.h); conv_direct_tile_kernel() picks one per run.
typedef void conv_tile_fn(const float *const *rows, int taps, int in, int64_t k0, int64_t k1,
                          const float *weight, int64_t block_stride, int nb, float *tile,
                          int64_t row_stride, int64_t block_offset, bool from_zero);

// The register-tile implementation for this CPU (ops/conv_tiles.c).
conv_tile_fn *conv_direct_tile_kernel(void);

// Inside a parallel region: whether this thread's scratch buffers were allocated. If not, the run
// is marked failed, and the thread still takes part in the work-sharing loop (skipping its tasks)
// so that every thread reaches the loop's barrier.
bool conv_direct_scratch_ready(bool allocated, int *failed);

// ---- Winograd (ops/conv_winograd.c) ----
// Whether layers packed now get Winograd weights (conv_direct_set_winograd).
bool conv_winograd_wanted(void);
// Packs d->winograd_weight (or marks d->winograd_transient) for a layer Winograd suits; does
// nothing for others.
lcm_status conv_winograd_prepare(conv_direct *d);
// conv_direct_run on Winograd weights transformed at load; `up` 1 when upsampling the input.
lcm_status conv_winograd_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w,
                             int up, const conv_direct_epilogue *e, float *y);
// conv_direct_run of a layer over WINOGRAD_MAX_CHANNELS, its weights transformed during the call.
lcm_status conv_winograd_transient_run(const conv_direct *d, const float *x, int64_t n, int64_t h,
                                       int64_t w, int up, const conv_direct_epilogue *e, float *y);

#endif
