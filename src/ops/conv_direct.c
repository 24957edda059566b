// Direct NHWC convolution with a 12-pixel x 16-channel register tile (AVX-512, or two AVX2 halves:
// ops/fma_tile.h); see conv_direct.h.
#include "ops/cpu.h"
#include "ops/conv_direct.h"
#include "ops/fma_tile.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

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

static lcm_status prepare_winograd(conv_direct *d);

bool conv_direct_available(void) { return cpu_has_avx2_fma(); }

lcm_status conv_direct_new(const float *weight, const float *bias, int in, int out, int kernel,
                           int stride, int padding, conv_direct **result) {
    *result = NULL;
    conv_direct *d = calloc(1, sizeof *d);
    if (!d) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing convolution weights");
    *d = (conv_direct){.in = in, .out = out, .kernel = kernel, .stride = stride,
                       .padding = padding, .blocks = (out + TILE_CHANNELS - 1) / TILE_CHANNELS,
                       .dot = out <= DOT_CHANNELS && in % 8 == 0};
    int64_t taps = (int64_t)kernel * kernel, padded = (int64_t)d->blocks * TILE_CHANNELS;
    int64_t weight_rows = d->dot ? DOT_CHANNELS : padded;
    size_t weight_bytes = sizeof(float) * (size_t)(weight_rows * taps * in);
    d->weight = aligned_alloc(64, (weight_bytes + 63) / 64 * 64);
    d->bias = calloc((size_t)padded, sizeof(float));
    if (!d->weight || !d->bias) {
        conv_direct_free(d);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing convolution weights");
    }
    float *dst = d->weight;
    for (int64_t o = 0; d->dot && o < DOT_CHANNELS; o++)
        for (int64_t t = 0; t < taps; t++)
            for (int64_t i = 0; i < in; i++) *dst++ = o < out ? weight[(o * in + i) * taps + t] : 0.0f;
    for (int64_t block = 0; block < d->blocks && !d->dot; block++)
        for (int64_t t = 0; t < taps; t++)
            for (int64_t i = 0; i < in; i++)
                for (int64_t j = 0; j < TILE_CHANNELS; j++) {
                    int64_t o = block * TILE_CHANNELS + j;
                    *dst++ = o < out ? weight[(o * in + i) * taps + t] : 0.0f;
                }
    if (bias) memcpy(d->bias, bias, sizeof(float) * (size_t)out);
    lcm_status st = prepare_winograd(d);
    if (st != LCM_OK) {
        conv_direct_free(d);
        return st;
    }
    *result = d;
    return LCM_OK;
}

void conv_direct_free(conv_direct *d) {
    if (!d) return;
    free(d->phase_weight);
    if (!d->borrowed) {
        free(d->winograd_weight);
        free(d->weight);
        free(d->bias);
    }
    free(d);
}


// A 3x3 convolution (stride 1, padding 1) of a nearest-upsampled image reads, for the output
// pixel (2a + py, 2b + px), only the 2 x 2 input pixels (a + py - 1 + r, b + px - 1 + c): along
// each axis the 3 taps fall on 2 input pixels, so the taps that share one are added beforehand.
// Row (or column) tap r of phase py gathers the kernel taps k with (py + k - 1) >> 1 == py - 1 + r.
static bool tap_in_phase(int phase, int r, int k) { return ((phase + k + 1) >> 1) - 1 == phase - 1 + r; }

lcm_status conv_direct_prepare_upsampled(conv_direct *d) {
    if (d->phase_weight || d->winograd_weight || d->winograd_transient || d->dot || d->kernel != 3 || d->stride != 1 || d->padding != 1) return LCM_OK;
    int64_t per_tap = (int64_t)d->in * TILE_CHANNELS, per_block = 4 * per_tap;
    size_t bytes = sizeof(float) * (size_t)(4 * d->blocks * per_block);
    float *pw = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!pw) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing upsampling weights");
    for (int phase = 0; phase < 4; phase++) {
        int py = phase >> 1, px = phase & 1;
        for (int64_t block = 0; block < d->blocks; block++)
            for (int r = 0; r < 2; r++)
                for (int c = 0; c < 2; c++) {
                    float *dst = pw + (phase * d->blocks + block) * per_block + (r * 2 + c) * per_tap;
                    memset(dst, 0, sizeof(float) * (size_t)per_tap);
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            if (!tap_in_phase(py, r, ky) || !tap_in_phase(px, c, kx)) continue;
                            const float *src = d->weight + (block * 9 + ky * 3 + kx) * per_tap;
                            for (int64_t i = 0; i < per_tap; i++) dst[i] += src[i];
                        }
                }
    }
    d->phase_weight = pw;
    return LCM_OK;
}

// A register tile's sums: tile[p][b][0..15] += sum over the flattened (tap, input channel) indices k
// in [k0, k1) of rows[p * taps + k / in][k % in] * weight[b * block_stride + k * 16 + 0..15], for
// the 12 pixels p of the tile and nb <= 4 blocks b of 16 output channels (pixel p's sums of block
// b at tile + p * row_stride + b * block_offset; with `from_zero` they start at 0 instead of at
// what `tile` holds). One implementation per instruction set, the same bits from each
// (ops/fma_tile.h); tile_kernel() picks one per run.
typedef void conv_tile_fn(const float *const *rows, int taps, int in, int64_t k0, int64_t k1,
                          const float *weight, int64_t block_stride, int nb, float *tile,
                          int64_t row_stride, int64_t block_offset, bool from_zero);

__attribute__((target("avx2,fma"), noinline)) static void
tile_avx2(const float *const *rows, int taps, int in, int64_t k0, int64_t k1, const float *weight,
          int64_t block_stride, int nb, float *tile, int64_t row_stride, int64_t block_offset,
          bool from_zero) {
    for (int b = 0; b < nb; b++)
        for (int half = 0; half < TILE_PIXELS / FMA_HALF_ROWS; half++) {
            const float *const *half_rows = rows + half * FMA_HALF_ROWS * taps;
            float *half_tile = tile + half * FMA_HALF_ROWS * row_stride + b * block_offset;
            fma_half_tile sums;
            if (from_zero) fma_half_zero(&sums);
            else fma_half_load(&sums, half_tile, row_stride);
            for (int64_t t = k0 / in; t * in < k1; t++) {
                int64_t first = k0 > t * in ? k0 - t * in : 0, end = k1 - t * in < in ? k1 - t * in : in;
                const float *a[FMA_HALF_ROWS];
                for (int p = 0; p < FMA_HALF_ROWS; p++) a[p] = half_rows[p * taps + t] + first;
                fma_half_add(&sums, a, weight + b * block_stride + (t * in + first) * TILE_CHANNELS, end - first);
            }
            fma_half_store(&sums, half_tile, row_stride);
        }
}

// tile_avx512 for a constant number of blocks.
__attribute__((target(FMA_AVX512), always_inline)) static inline void
tile_avx512_blocks(const int nb, const float *const *rows, int taps, int in, int64_t k0, int64_t k1,
                   const float *weight, int64_t block_stride, float *tile, int64_t row_stride,
                   int64_t block_offset, bool from_zero) {
    const int pass_rows = fma_wide_rows(nb);
    for (int r0 = 0; r0 < TILE_PIXELS; r0 += pass_rows) {
        float *pass_tile = tile + r0 * row_stride;
        fma_wide_tile sums;
        fma_wide_load(&sums, pass_rows, nb, from_zero ? NULL : pass_tile, row_stride, block_offset);
        for (int64_t t = k0 / in; t * in < k1; t++) {
            int64_t first = k0 > t * in ? k0 - t * in : 0, end = k1 - t * in < in ? k1 - t * in : in;
            const float *a[TILE_PIXELS];
            for (int p = 0; p < pass_rows; p++) a[p] = rows[(r0 + p) * taps + t] + first;
            fma_wide_add(&sums, pass_rows, nb, a, weight + (t * in + first) * TILE_CHANNELS, block_stride, end - first);
        }
        fma_wide_store(&sums, pass_rows, nb, pass_tile, row_stride, block_offset);
    }
}

__attribute__((target(FMA_AVX512), noinline)) static void
tile_avx512(const float *const *rows, int taps, int in, int64_t k0, int64_t k1, const float *weight,
            int64_t block_stride, int nb, float *tile, int64_t row_stride, int64_t block_offset,
            bool from_zero) {
    switch (nb) {
    case 1: tile_avx512_blocks(1, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    case 2: tile_avx512_blocks(2, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    case 3: tile_avx512_blocks(3, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    default: tile_avx512_blocks(4, rows, taps, in, k0, k1, weight, block_stride, tile, row_stride, block_offset, from_zero); break;
    }
}

static conv_tile_fn *tile_kernel(void) { return cpu_has_avx512() ? tile_avx512 : tile_avx2; }

// The dot-product path: sums[p * GROUP_CHANNELS + c] += sum over the `runs` runs t and i < length of
// rows[p * runs + t][i] * weight[c][t * length + i], for DOT_PIXELS pixels and DOT_CHANNELS
// channels (`depth` = runs * length weights per channel). `length` is a multiple of 8. Each value
// is added up lane by lane and then across the lanes, in an order fixed by the layer alone.
__attribute__((target("avx2,fma"))) static void
dot_3x3(const float *const *rows, int runs, int64_t length, const float *weight, int64_t depth,
        float *sums) {
    __m256 acc[DOT_PIXELS][DOT_CHANNELS];
    #pragma GCC unroll 3
    for (int p = 0; p < DOT_PIXELS; p++)
        #pragma GCC unroll 3
        for (int c = 0; c < DOT_CHANNELS; c++) acc[p][c] = _mm256_setzero_ps();
    for (int t = 0; t < runs; t++) {
        const float *x0 = rows[t], *x1 = rows[runs + t], *x2 = rows[2 * runs + t];
        const float *w = weight + t * length;
        for (int64_t i = 0; i < length; i += 8) {
            __m256 w0 = _mm256_load_ps(w + i), w1 = _mm256_load_ps(w + depth + i);
            __m256 w2 = _mm256_load_ps(w + 2 * depth + i), x;
            x = _mm256_loadu_ps(x0 + i);
            acc[0][0] = _mm256_fmadd_ps(x, w0, acc[0][0]);
            acc[0][1] = _mm256_fmadd_ps(x, w1, acc[0][1]);
            acc[0][2] = _mm256_fmadd_ps(x, w2, acc[0][2]);
            x = _mm256_loadu_ps(x1 + i);
            acc[1][0] = _mm256_fmadd_ps(x, w0, acc[1][0]);
            acc[1][1] = _mm256_fmadd_ps(x, w1, acc[1][1]);
            acc[1][2] = _mm256_fmadd_ps(x, w2, acc[1][2]);
            x = _mm256_loadu_ps(x2 + i);
            acc[2][0] = _mm256_fmadd_ps(x, w0, acc[2][0]);
            acc[2][1] = _mm256_fmadd_ps(x, w1, acc[2][1]);
            acc[2][2] = _mm256_fmadd_ps(x, w2, acc[2][2]);
        }
    }
    for (int p = 0; p < DOT_PIXELS; p++)
        for (int c = 0; c < DOT_CHANNELS; c++) {
            // lanes (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then 0+1
            __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[p][c]), _mm256_extractf128_ps(acc[p][c], 1));
            v = _mm_add_ps(v, _mm_movehl_ps(v, v));
            v = _mm_add_ss(v, _mm_shuffle_ps(v, v, 1));
            sums[p * GROUP_CHANNELS + c] += _mm_cvtss_f32(v);
        }
}

// The geometry of one run, shared by its tasks.
typedef struct run_shape {
    int64_t h, w;           // stored input size
    int64_t seen_h, seen_w; // the size the convolution sees (doubled when upsampling)
    int up;                 // 1 when upsampling: seen coordinate >> up = stored coordinate
    int64_t oh, ow;
    const float *zeros; // kernel * in zeros, where a tap (or a row run) falls into the padding
    // Upsampling with phase weights: 4 passes, one per output pixel parity (py, px), each over h x w
    // pixels with 2 x 2 taps. Otherwise 1 pass over oh x ow pixels with kernel x kernel taps.
    bool phases;
    int passes, taps;
    int64_t pass_pixels;
} run_shape;

// For pixel q of pass `pass`: rows[t] = where it finds its input vector for tap t, and the index
// of the output pixel it is (within its image).
static int64_t locate(const conv_direct *d, const run_shape *s, int pass, int64_t q, const float *x,
                      const float **rows) {
    if (s->phases) {
        int py = pass >> 1, px = pass & 1;
        int64_t a = q / s->w, b = q % s->w;
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 2; c++) {
                int64_t sy = a + py - 1 + r, sx = b + px - 1 + c;
                bool inside = sy >= 0 && sy < s->h && sx >= 0 && sx < s->w;
                rows[r * 2 + c] = inside ? x + (sy * s->w + sx) * d->in : s->zeros;
            }
        return (2 * a + py) * s->ow + 2 * b + px;
    }
    int64_t oy = q / s->ow, ox = q % s->ow;
    for (int ky = 0; ky < d->kernel; ky++) {
        int64_t iy = oy * d->stride - d->padding + ky;
        for (int kx = 0; kx < d->kernel; kx++) {
            int64_t ix = ox * d->stride - d->padding + kx;
            bool inside = iy >= 0 && iy < s->seen_h && ix >= 0 && ix < s->seen_w;
            rows[ky * d->kernel + kx] = inside ? x + ((iy >> s->up) * s->w + (ix >> s->up)) * d->in : s->zeros;
        }
    }
    return q;
}

// The pointer table of one tile (pixels first .. first + count - 1 of the pass) and the output
// pixel of each; pixels past `count` read zeros (their results are discarded).
static void fill_tile(const conv_direct *d, const run_shape *s, int pass, const float *x,
                      int64_t first, int count, const float **rows, int64_t *out_pixels) {
    for (int p = 0; p < TILE_PIXELS; p++) {
        const float **r = rows + p * s->taps;
        if (p < count) {
            out_pixels[p] = locate(d, s, pass, first + p, x, r);
            continue;
        }
        for (int t = 0; t < s->taps; t++) r[t] = s->zeros;
    }
}

// Row runs: with stride 1 and no upsampling, a pixel whose kernel columns all lie inside the image
// finds the taps of one kernel row side by side in NHWC memory, one run of kernel * in values. A
// tile of such pixels then sums over `kernel` runs instead of kernel^2 runs of `in` (longer inner
// loops for 64-channel layers), in the same order, so the values are the same to the bit.
// Returns false (table untouched) when a pixel of the tile touches the left or right padding.
static bool fill_row_runs(const conv_direct *d, const run_shape *s, const float *x, int64_t first,
                          int count, const float **rows, int64_t *out_pixels) {
    for (int p = 0; p < count; p++) {
        int64_t ox = (first + p) % s->ow;
        if (ox - d->padding < 0 || ox - d->padding + d->kernel > s->w) return false;
    }
    for (int p = 0; p < TILE_PIXELS; p++) {
        const float **r = rows + p * d->kernel;
        if (p >= count) {
            for (int ky = 0; ky < d->kernel; ky++) r[ky] = s->zeros;
            continue;
        }
        int64_t oy = (first + p) / s->ow, ox = (first + p) % s->ow;
        for (int ky = 0; ky < d->kernel; ky++) {
            int64_t iy = oy - d->padding + ky;
            r[ky] = iy >= 0 && iy < s->h ? x + (iy * s->w + ox - d->padding) * d->in : s->zeros;
        }
        out_pixels[p] = first + p;
    }
    return true;
}

// One block of the task's sums (pixel p's at sums + p * GROUP_CHANNELS) into y with the epilogue:
// `count` pixels (at out_pixels[p] of the image that starts at pixel `image_offset`), channels from
// `channel0`. ReLU as
// max(0, v), which like `v < 0 ? 0 : v` keeps NaN and -0.
__attribute__((target("avx2,fma"))) static void
store_tiles(const conv_direct *d, const float *sums, int count, int64_t channel0,
            const conv_direct_epilogue *e, const int64_t *out_pixels, int64_t image_offset, float *y) {
    int channels = d->out - channel0 < TILE_CHANNELS ? (int)(d->out - channel0) : TILE_CHANNELS;
    const __m256 zero = _mm256_setzero_ps();
    for (int p = 0; p < count; p++) {
        const float *src = sums + p * GROUP_CHANNELS;
        int64_t at = (image_offset + out_pixels[p]) * d->out + channel0;
        float *dst = y + at;
        const float *residual = e->residual ? e->residual + at : NULL;
        if (channels == TILE_CHANNELS) {
            __m256 lo = _mm256_load_ps(src), hi = _mm256_load_ps(src + 8);
            if (residual) {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(residual));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(residual + 8));
            }
            if (e->relu) {
                lo = _mm256_max_ps(zero, lo);
                hi = _mm256_max_ps(zero, hi);
            }
            _mm256_storeu_ps(dst, lo);
            _mm256_storeu_ps(dst + 8, hi);
            continue;
        }
        for (int j = 0; j < channels; j++) {
            float v = src[j];
            if (residual) v += residual[j];
            if (e->relu) v = v < 0.0f ? 0.0f : v;
            dst[j] = v;
        }
    }
}

// ---- Winograd F(2x2, 3x3) and F(4x4, 3x3) -------------------------------------------------------
//
// Per input/output channel pair, with d an a x a input block (a = m + 2) and g the 3x3 kernel, the
// m x m outputs are A^T [(G g G^T) . (B^T d B)] A (Lavin and Gray, 2015), the a^2 element-wise
// products summed over the input channels first: a^2 matrix products [tiles x in] x [in x out].
//   F(2x2, 3x3): 16 products per 4 outputs (36 directly); G g G^T takes 16/9 of the weight memory.
//     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
//     A^T = [1 1 1 0; 0 1 -1 -1]. Exact factors: values differ from the direct path by rounding.
//   F(4x4, 3x3): 36 products per 16 outputs (144 directly), 4x the weight memory, so only for
//     layers of at most WINOGRAD4_MAX_CHANNELS (TAESD's, the VAE's at 256 and 512 pixels: +60 MB);
//     its factors (up to 8 and 1/24) cost about one more decimal digit of rounding
//     (test_fast_kernels, the golden tests).
//     B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//            0 4 0 -5 0 1],
//     G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
//     A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
#define WINOGRAD4_MAX_CHANNELS 256

// LCM_WINOGRAD=0 (read once) or conv_direct_set_winograd(false) keep layers packed afterwards on
// the direct kernel, to compare the two.
static int winograd_setting = -1; // -1: not decided yet

void conv_direct_set_winograd(bool on) { winograd_setting = on; }

static int64_t stream_bytes = WINOGRAD_STREAM_BYTES;

void conv_direct_set_stream_bytes(int64_t bytes) { stream_bytes = bytes < 0 ? WINOGRAD_STREAM_BYTES : bytes; }

static bool winograd_wanted(void) {
    if (winograd_setting < 0) {
        const char *v = getenv("LCM_WINOGRAD");
        winograd_setting = !v || strcmp(v, "0");
    }
    return winograd_setting;
}

bool conv_direct_winograd_enabled(void) { return winograd_wanted(); }

static const double winograd_g2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
static const double winograd_g4[6][3] = {{1.0 / 4, 0, 0},
                                         {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                         {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                         {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                         {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                         {0, 0, 1}};

// u [a][a][16] = G g G^T of the 3x3 kernels g [3][3][16] of 16 output channels (G: a x 3), in
// double and then rounded. The channels are the innermost loop, so that it runs on vectors.
static void winograd_kernels(const double *G, int a, const double g[3][3][TILE_CHANNELS],
                             float u[36][TILE_CHANNELS]) {
    double t[6][3][TILE_CHANNELS]; // G g
    for (int i = 0; i < a; i++)
        for (int j = 0; j < 3; j++)
            for (int c = 0; c < TILE_CHANNELS; c++)
                t[i][j][c] = G[i * 3] * g[0][j][c] + G[i * 3 + 1] * g[1][j][c] + G[i * 3 + 2] * g[2][j][c];
    for (int i = 0; i < a; i++)
        for (int j = 0; j < a; j++)
            for (int c = 0; c < TILE_CHANNELS; c++)
                u[i * a + j][c] = (float)(t[i][0][c] * G[j * 3] + t[i][1][c] * G[j * 3 + 1] + t[i][2][c] * G[j * 3 + 2]);
}

static lcm_status prepare_winograd(conv_direct *d) {
    if (d->kernel != 3 || d->stride != 1 || d->padding != 1 || d->dot || d->in % 8 ||
        d->out % TILE_CHANNELS || !winograd_wanted())
        return LCM_OK;
    if (d->in > WINOGRAD_MAX_CHANNELS || d->out > WINOGRAD_MAX_CHANNELS) {
        d->winograd_transient = true;
        return LCM_OK;
    }
    int tile = d->in <= WINOGRAD4_MAX_CHANNELS && d->out <= WINOGRAD4_MAX_CHANNELS ? 4 : 2;
    int a = tile + 2, positions = a * a;
    const double *G = tile == 4 ? &winograd_g4[0][0] : &winograd_g2[0][0];
    int64_t per_position = (int64_t)d->in * TILE_CHANNELS;
    size_t bytes = sizeof(float) * (size_t)(d->blocks * positions * per_position);
    float *u = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!u) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing Winograd weights");
    // A large layer's kernels take a good part of a second: both threads share them.
    #pragma omp parallel for schedule(static)
    for (int64_t block = 0; block < d->blocks; block++)
        for (int64_t i = 0; i < d->in; i++) {
            double g[3][3][TILE_CHANNELS];
            for (int tap = 0; tap < 9; tap++)
                for (int c = 0; c < TILE_CHANNELS; c++)
                    g[tap / 3][tap % 3][c] = d->weight[((block * 9 + tap) * d->in + i) * TILE_CHANNELS + c];
            float transformed[36][TILE_CHANNELS];
            winograd_kernels(G, a, g, transformed);
            for (int position = 0; position < positions; position++)
                memcpy(u + ((block * positions + position) * d->in + i) * TILE_CHANNELS, transformed[position],
                       sizeof transformed[position]);
        }
    d->winograd_weight = u;
    d->winograd_tile = tile;
    free(d->weight);
    d->weight = NULL;
    return LCM_OK;
}

// B^T d (one axis of the input transform) on 8 channels.
__attribute__((target("avx2,fma"), always_inline)) static inline void input_axis2(const __m256 d[4], __m256 r[4]) {
    r[0] = _mm256_sub_ps(d[0], d[2]);
    r[1] = _mm256_add_ps(d[1], d[2]);
    r[2] = _mm256_sub_ps(d[2], d[1]);
    r[3] = _mm256_sub_ps(d[1], d[3]);
}

__attribute__((target("avx2,fma"), always_inline)) static inline void input_axis4(const __m256 d[6], __m256 r[6]) {
    const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f), two = _mm256_set1_ps(2.0f);
    __m256 d12 = _mm256_add_ps(d[1], d[2]), d34 = _mm256_add_ps(d[3], d[4]);
    __m256 d1m2 = _mm256_sub_ps(d[1], d[2]), d4m3 = _mm256_sub_ps(d[4], d[3]);
    __m256 d4m2 = _mm256_sub_ps(d[4], d[2]), d3m1 = _mm256_sub_ps(d[3], d[1]);
    r[0] = _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4]));
    r[1] = _mm256_fnmadd_ps(four, d12, d34);
    r[2] = _mm256_fmadd_ps(four, d1m2, d4m3);
    r[3] = _mm256_fmadd_ps(two, d3m1, d4m2);
    r[4] = _mm256_fnmadd_ps(two, d3m1, d4m2);
    r[5] = _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5]));
}

// A^T m (one axis of the output transform) on 8 channels.
__attribute__((target("avx2,fma"), always_inline)) static inline void output_axis2(const __m256 m[4], __m256 y[2]) {
    y[0] = _mm256_add_ps(_mm256_add_ps(m[0], m[1]), m[2]);
    y[1] = _mm256_sub_ps(_mm256_sub_ps(m[1], m[2]), m[3]);
}

__attribute__((target("avx2,fma"), always_inline)) static inline void output_axis4(const __m256 m[6], __m256 y[4]) {
    const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f), eight = _mm256_set1_ps(8.0f);
    __m256 m12 = _mm256_add_ps(m[1], m[2]), m1m2 = _mm256_sub_ps(m[1], m[2]);
    __m256 m34 = _mm256_add_ps(m[3], m[4]), m3m4 = _mm256_sub_ps(m[3], m[4]);
    y[0] = _mm256_add_ps(_mm256_add_ps(m[0], m12), m34);
    y[1] = _mm256_fmadd_ps(two, m3m4, m1m2);
    y[2] = _mm256_fmadd_ps(four, m34, m12);
    y[3] = _mm256_add_ps(_mm256_fmadd_ps(eight, m3m4, m1m2), m[5]);
}

// Inside a parallel region: whether this thread's scratch buffers were allocated. If not, the run
// is marked failed, and the thread still takes part in the work-sharing loop (skipping its tasks)
// so that every thread reaches the loop's barrier.
static bool scratch_ready(bool allocated, int *failed) {
    if (!allocated) {
        #pragma omp atomic write
        *failed = 1;
    }
    return allocated;
}

// The shape of one Winograd run.
typedef struct winograd_shape {
    int tile, a, positions; // m x m outputs from a x a inputs (a = m + 2), a^2 products
    int64_t h, w, oh, ow;   // stored input size, output size (doubled when upsampling)
    int up;                 // 1 when upsampling: seen coordinate >> up = stored coordinate
    int64_t tiles_w, tiles, task_tiles;
} winograd_shape;

// B^T d B of one tile's a x a input block on 8 channels (pixel (r, c) at at[r][c] + ch), position
// (r, c) stored at out + (r * a + c) * stride. `m` is a constant where this is inlined, so that
// the loops unroll and the block stays in registers and a few stack slots.
__attribute__((target("avx2,fma"), always_inline)) static inline void
input_tile(const int m, const float *const at[6][6], int64_t ch, float *out, int64_t stride) {
    const int a = m + 2;
    __m256 b[6][6];
    #pragma GCC unroll 6
    for (int c = 0; c < a; c++) { // B^T d, column by column
        __m256 column[6], transformed[6];
        #pragma GCC unroll 6
        for (int r = 0; r < a; r++) column[r] = _mm256_loadu_ps(at[r][c] + ch);
        if (m == 4) input_axis4(column, transformed);
        else input_axis2(column, transformed);
        #pragma GCC unroll 6
        for (int r = 0; r < a; r++) b[r][c] = transformed[r];
    }
    #pragma GCC unroll 6
    for (int r = 0; r < a; r++) { // (B^T d) B, row by row
        __m256 transformed[6];
        if (m == 4) input_axis4(b[r], transformed);
        else input_axis2(b[r], transformed);
        #pragma GCC unroll 6
        for (int c = 0; c < a; c++) _mm256_storeu_ps(out + (r * a + c) * stride, transformed[c]);
    }
}

// B^T d B of the a x a input blocks of `count` tiles (tiles first_tile.. in row-major order), into
// v [positions][task_tiles][in]; the rows up to the next multiple of TILE_PIXELS (which a register
// tile reads) are 0, the ones after that are not written.
__attribute__((target("avx2,fma"), always_inline)) static inline void
input_tiles(const int m, const conv_direct *d, const winograd_shape *ws, const float *x,
            int64_t first_tile, int count, const float *zeros, float *v) {
    const int a = m + 2;
    const int64_t in = d->in, stride = ws->task_tiles * in;
    const int filled = (count + TILE_PIXELS - 1) / TILE_PIXELS * TILE_PIXELS;
    for (int t = 0; t < filled; t++) {
        if (t >= count) {
            for (int position = 0; position < a * a; position++)
                memset(v + position * stride + t * in, 0, sizeof(float) * (size_t)in);
            continue;
        }
        int64_t ty = (first_tile + t) / ws->tiles_w, tx = (first_tile + t) % ws->tiles_w;
        const float *at[6][6]; // input pixel (m ty - 1 + r, m tx - 1 + c), `zeros` in the padding
        for (int r = 0; r < a; r++)
            for (int c = 0; c < a; c++) {
                int64_t iy = m * ty - 1 + r, ix = m * tx - 1 + c;
                bool inside = iy >= 0 && iy < ws->oh && ix >= 0 && ix < ws->ow;
                at[r][c] = inside ? x + ((iy >> ws->up) * ws->w + (ix >> ws->up)) * in : zeros;
            }
        for (int64_t ch = 0; ch < in; ch += 8) input_tile(m, at, ch, v + t * in + ch, stride);
    }
}

__attribute__((target("avx2,fma"))) static void
winograd_input(const conv_direct *d, const winograd_shape *ws, const float *x, int64_t first_tile,
               int count, const float *zeros, float *v) {
    if (ws->tile == 4) input_tiles(4, d, ws, x, first_tile, count, zeros, v);
    else input_tiles(2, d, ws, x, first_tile, count, zeros, v);
}

// A^T p A of one tile's products on 8 channels (position k at p + k * TILE_CHANNELS), plus the
// bias: the m x m outputs o[dy * m + dx]. `m` is a constant where this is inlined.
__attribute__((target("avx2,fma"), always_inline)) static inline void
output_tile(const int m, const float *p, __m256 bias, __m256 o[16]) {
    const int a = m + 2;
    __m256 s[4][6];
    #pragma GCC unroll 6
    for (int c = 0; c < a; c++) { // A^T p, column by column
        __m256 column[6], transformed[4];
        #pragma GCC unroll 6
        for (int r = 0; r < a; r++) column[r] = _mm256_load_ps(p + (r * a + c) * TILE_CHANNELS);
        if (m == 4) output_axis4(column, transformed);
        else output_axis2(column, transformed);
        #pragma GCC unroll 4
        for (int r = 0; r < m; r++) s[r][c] = transformed[r];
    }
    #pragma GCC unroll 4
    for (int r = 0; r < m; r++) { // (A^T p) A
        __m256 transformed[4];
        if (m == 4) output_axis4(s[r], transformed);
        else output_axis2(s[r], transformed);
        #pragma GCC unroll 4
        for (int c = 0; c < m; c++) o[r * m + c] = _mm256_add_ps(bias, transformed[c]);
    }
}

// The outputs of `count` tiles (tiles first_tile..) for `blocks` blocks of 16 channels from
// channel `first_channel` on, from their products p [blocks][count][positions][16] (`block_stride`
// floats from one block to the next), with the epilogue, into image b of y. A tile's blocks are
// done one after the other and each output pixel's 16 channels (one cache line) are stored
// together, so that the lines of a pixel are read and written in order.
__attribute__((target("avx2,fma"), always_inline)) static inline void
output_tiles(const int m, const winograd_shape *ws, const float *p, int64_t block_stride,
             int blocks, int64_t first_tile, int count, const float *bias,
             const conv_direct_epilogue *e, int64_t first_channel, int64_t out, int64_t b, float *y,
             bool stream) {
    const int a = m + 2;
    const __m256 zero = _mm256_setzero_ps();
    for (int t = 0; t < count; t++) {
        int64_t ty = (first_tile + t) / ws->tiles_w, tx = (first_tile + t) % ws->tiles_w;
        for (int k = 0; k < blocks; k++) {
            int64_t channel = first_channel + k * TILE_CHANNELS;
            const __m256 bias_lo = _mm256_loadu_ps(bias + channel), bias_hi = _mm256_loadu_ps(bias + channel + 8);
            __m256 lo[16], hi[16];
            output_tile(m, p + k * block_stride + t * a * a * TILE_CHANNELS, bias_lo, lo);
            output_tile(m, p + k * block_stride + t * a * a * TILE_CHANNELS + 8, bias_hi, hi);
            #pragma GCC unroll 4
            for (int dy = 0; dy < m; dy++)
                #pragma GCC unroll 4
                for (int dx = 0; dx < m; dx++) {
                    int64_t oy = m * ty + dy, ox = m * tx + dx;
                    if (oy >= ws->oh || ox >= ws->ow) continue;
                    int64_t at = ((b * ws->oh + oy) * ws->ow + ox) * out + channel;
                    __m256 value_lo = lo[dy * m + dx], value_hi = hi[dy * m + dx];
                    if (e->residual) {
                        value_lo = _mm256_add_ps(value_lo, _mm256_loadu_ps(e->residual + at));
                        value_hi = _mm256_add_ps(value_hi, _mm256_loadu_ps(e->residual + at + 8));
                    }
                    if (e->relu) {
                        value_lo = _mm256_max_ps(zero, value_lo);
                        value_hi = _mm256_max_ps(zero, value_hi);
                    }
                    if (stream) {
                        _mm256_stream_ps(y + at, value_lo);
                        _mm256_stream_ps(y + at + 8, value_hi);
                    } else {
                        _mm256_storeu_ps(y + at, value_lo);
                        _mm256_storeu_ps(y + at + 8, value_hi);
                    }
                }
        }
    }
}

__attribute__((target("avx2,fma"))) static void
winograd_output(const winograd_shape *ws, const float *p, int64_t block_stride, int blocks,
                int64_t first_tile, int count, const float *bias, const conv_direct_epilogue *e,
                int64_t first_channel, int64_t out, int64_t b, float *y, bool stream) {
    if (ws->tile == 4)
        output_tiles(4, ws, p, block_stride, blocks, first_tile, count, bias, e, first_channel, out, b, y, stream);
    else
        output_tiles(2, ws, p, block_stride, blocks, first_tile, count, bias, e, first_channel, out, b, y, stream);
}

// The products of `count` tiles' transformed inputs v [positions][task_tiles][in] with the
// transformed weights u [blocks][positions][in][16] of `blocks` (at most 4) output channel blocks,
// into p [blocks][task_tiles][positions][16]. The sums go in slices of the input channels whose
// weights (DEPTH_SLICE x 4 blocks x 16 floats, 32 KiB) stay in L1 while every register tile of the
// task goes through them; the slices add up in the same order as one pass would.
static void winograd_products(conv_tile_fn *tile, const winograd_shape *ws, int64_t in, const float *v,
                              int count, const float *u, int blocks, float *p) {
    const int64_t tt = ws->task_tiles, positions = ws->positions;
    const int64_t block_stride = tt * positions * TILE_CHANNELS;
    for (int position = 0; position < positions; position++)
        for (int64_t k0 = 0; k0 < in; k0 += DEPTH_SLICE) {
            int64_t k1 = k0 + DEPTH_SLICE < in ? k0 + DEPTH_SLICE : in;
            for (int t0 = 0; t0 < count; t0 += TILE_PIXELS) {
                const float *rows[TILE_PIXELS];
                for (int r = 0; r < TILE_PIXELS; r++) rows[r] = v + (position * tt + t0 + r) * in;
                tile(rows, 1, (int)in, k0, k1, u + position * in * TILE_CHANNELS, positions * in * TILE_CHANNELS,
                     blocks, p + (t0 * positions + position) * TILE_CHANNELS, positions * TILE_CHANNELS,
                     block_stride, k0 == 0);
            }
        }
}

// The Winograd path of conv_direct_run, on the weights transformed at load.
__attribute__((target("avx2,fma"))) static lcm_status
winograd_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w, int up,
             const conv_direct_epilogue *e, float *y) {
    winograd_shape ws = {.tile = d->winograd_tile, .h = h, .w = w, .up = up, .oh = h << up, .ow = w << up};
    ws.a = ws.tile + 2;
    ws.positions = ws.a * ws.a;
    ws.tiles_w = (ws.ow + ws.tile - 1) / ws.tile;
    ws.tiles = (ws.oh + ws.tile - 1) / ws.tile * ws.tiles_w;
    // Tiles per task: each transformed weight read from L2/L3 serves all of them, so as many as the
    // cap (4 register tiles' rows for F(4x4, 3x3) and its 36 positions, 8 for F(2x2, 3x3)) while
    // the image still makes WINOGRAD_MIN_TASKS tasks for the threads to share. Which tile lands in
    // which task does not change any sum.
    int64_t most = ws.tile == 4 ? 4 * TILE_PIXELS : 8 * TILE_PIXELS;
    ws.task_tiles = (n * ws.tiles / WINOGRAD_MIN_TASKS + TILE_PIXELS - 1) / TILE_PIXELS * TILE_PIXELS;
    if (ws.task_tiles < TILE_PIXELS) ws.task_tiles = TILE_PIXELS;
    if (ws.task_tiles > most) ws.task_tiles = most;
    const int64_t in = d->in, out = d->out, tt = ws.task_tiles, positions = ws.positions;
    const int64_t chunks = (ws.tiles + tt - 1) / tt, tasks = n * chunks;
    const int64_t group_stride = tt * positions * TILE_CHANNELS; // one block's products
    int failed = 0;
    conv_tile_fn *tile = tile_kernel();
    // An output larger than the last-level cache has left it by the time the next layer reads
    // its first pixels, so it bypasses the caches: no reads for ownership of its lines, and the
    // caches keep the input and the weights (measured: TAESD -15-20%, 2 threads).
    bool stream = (uintptr_t)y % 32 == 0 && (int64_t)sizeof(float) * n * ws.oh * ws.ow * out > stream_bytes;
    #pragma omp parallel
    {
        // One task's transformed inputs [positions][tt][in] and a group of channel blocks'
        // products [GROUP_BLOCKS][tt][positions][16] (a tile's products side by side for
        // the output transform).
        float *v = aligned_alloc(64, sizeof(float) * (size_t)(positions * tt * in));
        float *p = aligned_alloc(64, sizeof(float) * (size_t)(GROUP_BLOCKS * group_stride));
        float *zeros = calloc((size_t)in, sizeof(float)); // the padding's input vector
        bool ready = scratch_ready(v && p && zeros, &failed);
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            if (!ready) continue;
            int64_t b = task / chunks, first = task % chunks * tt;
            int count = ws.tiles - first < tt ? (int)(ws.tiles - first) : (int)tt;
            winograd_input(d, &ws, x + b * h * w * in, first, count, zeros, v);
            for (int64_t group = 0; group < d->blocks; group += GROUP_BLOCKS) {
                int blocks = d->blocks - group < GROUP_BLOCKS ? (int)(d->blocks - group) : GROUP_BLOCKS;
                winograd_products(tile, &ws, in, v, count,
                                  d->winograd_weight + group * positions * in * TILE_CHANNELS, blocks, p);
                winograd_output(&ws, p, group_stride, blocks, first, count, d->bias, e,
                                group * TILE_CHANNELS, out, b, y, stream);
            }
        }
        if (stream) _mm_sfence();
        free(v);
        free(p);
        free(zeros);
    }
    if (failed) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv: out of memory for its Winograd buffers");
    return LCM_OK;
}

// G g G^T of F(2x2, 3x3) for the 3x3 kernels of output channel block `block`, from the direct
// kernel's packed weights, into u [16 positions][in][16]. In float (the weights kept at load are
// transformed in double): both differ from the exact factors by rounding.
__attribute__((target("avx2,fma"))) static void winograd_weights_f2(const conv_direct *d, int64_t block, float *u) {
    const int64_t in = d->in;
    const __m256 half = _mm256_set1_ps(0.5f);
    for (int64_t i = 0; i < in; i++)
        for (int c = 0; c < TILE_CHANNELS; c += 8) {
            __m256 g[3][3], t[4][3];
            for (int tap = 0; tap < 9; tap++)
                g[tap / 3][tap % 3] = _mm256_loadu_ps(d->weight + ((block * 9 + tap) * in + i) * TILE_CHANNELS + c);
            for (int j = 0; j < 3; j++) { // G g, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
                __m256 outer = _mm256_add_ps(g[0][j], g[2][j]);
                t[0][j] = g[0][j];
                t[1][j] = _mm256_mul_ps(half, _mm256_add_ps(outer, g[1][j]));
                t[2][j] = _mm256_mul_ps(half, _mm256_sub_ps(outer, g[1][j]));
                t[3][j] = g[2][j];
            }
            for (int r = 0; r < 4; r++) { // (G g) G^T
                __m256 outer = _mm256_add_ps(t[r][0], t[r][2]);
                __m256 row[4] = {t[r][0], _mm256_mul_ps(half, _mm256_add_ps(outer, t[r][1])),
                                 _mm256_mul_ps(half, _mm256_sub_ps(outer, t[r][1])), t[r][2]};
                for (int col = 0; col < 4; col++)
                    _mm256_storeu_ps(u + ((r * 4 + col) * in + i) * TILE_CHANNELS + c, row[col]);
            }
        }
}

// Winograd F(2x2, 3x3) with the weights transformed during the call, for the large layers whose
// transformed weights are not kept (the UNet's 1280-channel ones: about +1.3 GB). The run is
// weight-stationary, so that each weight is transformed once per chunk of tiles rather than once
// per task: the inputs of a chunk of up to WINOGRAD_CHUNK_TILES tiles are transformed into one
// shared buffer, then each thread takes groups of 4 output channel blocks (what a register tile
// computes at once), transforms their weights (5.2 MB at 1280 input channels, read back from
// L2/L3 right away) and computes the products and outputs of the whole chunk for them. Memory: the
// chunk's inputs (31 MB at most, at 2560 input channels) and per thread one group's weights and
// products; nothing is kept.
__attribute__((target("avx2,fma"))) static lcm_status
winograd_transient_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w,
                       int up, const conv_direct_epilogue *e, float *y) {
    winograd_shape ws = {.tile = 2, .a = 4, .positions = 16, .h = h, .w = w, .up = up, .oh = h << up, .ow = w << up};
    ws.tiles_w = (ws.ow + 1) / 2;
    ws.tiles = (ws.oh + 1) / 2 * ws.tiles_w;
    // Chunks of equal size (a multiple of the register tile's rows), as few as the cap allows.
    const int64_t chunks = (ws.tiles + WINOGRAD_CHUNK_TILES - 1) / WINOGRAD_CHUNK_TILES;
    const int64_t per_chunk = ws.tiles / chunks + (ws.tiles % chunks != 0);
    ws.task_tiles = (per_chunk + TILE_PIXELS - 1) / TILE_PIXELS * TILE_PIXELS;
    const int64_t in = d->in, out = d->out, tt = ws.task_tiles, positions = ws.positions;
    float *v = aligned_alloc(64, sizeof(float) * (size_t)(positions * tt * in));
    if (!v) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv: out of memory for its Winograd buffers");
    int failed = 0;
    conv_tile_fn *tile = tile_kernel();
    bool stream = (uintptr_t)y % 32 == 0 && (int64_t)sizeof(float) * n * ws.oh * ws.ow * out > stream_bytes;
    const int64_t groups = (d->blocks + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
    const int64_t block_weights = positions * in * TILE_CHANNELS, block_products = tt * positions * TILE_CHANNELS;
    #pragma omp parallel
    {
        // One group of blocks' transformed weights and products.
        float *u = aligned_alloc(64, sizeof(float) * (size_t)(GROUP_BLOCKS * block_weights));
        float *p = aligned_alloc(64, sizeof(float) * (size_t)(GROUP_BLOCKS * block_products));
        float *zeros = calloc((size_t)in, sizeof(float));
        bool ready = scratch_ready(u && p && zeros, &failed);
        for (int64_t b = 0; b < n; b++)
            for (int64_t first = 0; first < ws.tiles; first += tt) {
                int count = ws.tiles - first < tt ? (int)(ws.tiles - first) : (int)tt;
                // The chunk's inputs, in parts of whole register tiles.
                #pragma omp for schedule(static)
                for (int64_t part = 0; part < count; part += WINOGRAD_TASK_TILES) {
                    if (!ready) continue;
                    int part_count = count - part < WINOGRAD_TASK_TILES ? (int)(count - part) : WINOGRAD_TASK_TILES;
                    winograd_input(d, &ws, x + b * h * w * in, first + part, part_count, zeros, v + part * in);
                }
                #pragma omp for schedule(static)
                for (int64_t group = 0; group < groups; group++) {
                    if (!ready) continue;
                    int64_t block = group * GROUP_BLOCKS;
                    int nb = d->blocks - block < GROUP_BLOCKS ? (int)(d->blocks - block) : GROUP_BLOCKS;
                    for (int k = 0; k < nb; k++) winograd_weights_f2(d, block + k, u + k * block_weights);
                    winograd_products(tile, &ws, in, v, count, u, nb, p);
                    winograd_output(&ws, p, block_products, nb, first, count, d->bias, e, block * TILE_CHANNELS,
                                    out, b, y, stream);
                }
            }
        if (stream) _mm_sfence();
        free(u);
        free(p);
        free(zeros);
    }
    free(v);
    if (failed) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv: out of memory for its Winograd buffers");
    return LCM_OK;
}

lcm_status conv_direct_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w,
                           bool upsample_input, const conv_direct_epilogue *epilogue, float *y) {
    static const conv_direct_epilogue plain = {0};
    if (!epilogue) epilogue = &plain;
    if (d->winograd_weight) return winograd_run(d, x, n, h, w, upsample_input ? 1 : 0, epilogue, y);
    if (d->winograd_transient && !(upsample_input && d->phase_weight) &&
        (h << upsample_input) * (w << upsample_input) >= WINOGRAD_TRANSIENT_MIN_PIXELS)
        return winograd_transient_run(d, x, n, h, w, upsample_input ? 1 : 0, epilogue, y);
    run_shape s = {.h = h, .w = w, .up = upsample_input ? 1 : 0};
    s.seen_h = h << s.up;
    s.seen_w = w << s.up;
    s.oh = (s.seen_h + 2 * d->padding - d->kernel) / d->stride + 1;
    s.ow = (s.seen_w + 2 * d->padding - d->kernel) / d->stride + 1;
    float *zeros = calloc((size_t)d->in * (size_t)d->kernel, sizeof(float)); // a row run of zeros
    if (!zeros) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv: out of memory");
    s.zeros = zeros;
    s.phases = upsample_input && d->phase_weight;
    s.passes = s.phases ? 4 : 1;
    s.taps = s.phases ? 4 : d->kernel * d->kernel;
    s.pass_pixels = s.phases ? h * w : s.oh * s.ow;
    int taps = s.taps;
    int64_t depth = (int64_t)taps * d->in; // the sum's length
    bool row_runs = !s.phases && !s.up && d->stride == 1 && d->kernel > 1;
    int64_t chunks = (s.pass_pixels + TASK_PIXELS - 1) / TASK_PIXELS;
    // Tasks in (image, pass, pixel chunk, group of channel blocks) order: a thread's consecutive
    // tasks share their input pixels; small images with many channels still split over the groups.
    int64_t groups = (d->blocks + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
    int64_t tasks = n * s.passes * chunks * groups;
    int failed = 0;
    conv_tile_fn *tile = tile_kernel();
    #pragma omp parallel
    {
        // The pointer tables of a task's tiles, its output pixels and its tiles' running sums.
        const float **rows = malloc(sizeof *rows * (size_t)(TASK_PIXELS * taps));
        int64_t *out_pixels = malloc(sizeof *out_pixels * TASK_PIXELS);
        float *sums = aligned_alloc(64, sizeof(float) * TASK_PIXELS * GROUP_CHANNELS); // [pixel][64]
        bool ready = scratch_ready(rows && out_pixels && sums, &failed);
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            if (!ready) continue;
            int64_t group = task % groups, chunk = task / groups % chunks;
            int pass = (int)(task / groups / chunks % s.passes);
            int64_t b = task / groups / chunks / s.passes;
            int64_t block = group * GROUP_BLOCKS;
            int nb = d->blocks - block < GROUP_BLOCKS ? (int)(d->blocks - block) : GROUP_BLOCKS;
            const float *xb = x + b * h * w * d->in;
            int64_t first = chunk * TASK_PIXELS;
            int count = s.pass_pixels - first < TASK_PIXELS ? (int)(s.pass_pixels - first) : TASK_PIXELS;
            int tiles = (count + TILE_PIXELS - 1) / TILE_PIXELS;
            const float *weight = s.phases ? d->phase_weight + (pass * d->blocks + block) * depth * TILE_CHANNELS
                                           : d->weight + block * depth * TILE_CHANNELS;
            bool runs[TASK_PIXELS / TILE_PIXELS];
            for (int t = 0; t < tiles; t++) {
                int tile_count = count - t * TILE_PIXELS < TILE_PIXELS ? count - t * TILE_PIXELS : TILE_PIXELS;
                const float **tile_rows = rows + t * TILE_PIXELS * taps;
                runs[t] = row_runs && fill_row_runs(d, &s, xb, first + t * TILE_PIXELS, tile_count,
                                                    tile_rows, out_pixels + t * TILE_PIXELS);
                if (!runs[t])
                    fill_tile(d, &s, pass, xb, first + t * TILE_PIXELS, tile_count, tile_rows,
                              out_pixels + t * TILE_PIXELS);
                for (int p = 0; p < TILE_PIXELS; p++)
                    memcpy(sums + (t * TILE_PIXELS + p) * GROUP_CHANNELS, d->bias + block * TILE_CHANNELS,
                           sizeof(float) * (size_t)(nb * TILE_CHANNELS));
            }
            // A few output channels: whole sums along the input (the weights, 3 x depth, stay in
            // the L1 cache).
            for (int t = 0; t < tiles && d->dot; t++)
                for (int p = 0; p < TILE_PIXELS; p += DOT_PIXELS) {
                    int runs_of = runs[t] ? d->kernel : taps;
                    dot_3x3(rows + t * TILE_PIXELS * taps + p * runs_of, runs_of, depth / runs_of, weight, depth,
                            sums + (t * TILE_PIXELS + p) * GROUP_CHANNELS);
                }
            // The sum in slices whose weights stay in the L1 cache while every tile of the task
            // goes through them; the slices add up in the same order as one pass would.
            for (int64_t k0 = 0; k0 < depth && !d->dot; k0 += DEPTH_SLICE) {
                int64_t k1 = k0 + DEPTH_SLICE < depth ? k0 + DEPTH_SLICE : depth;
                for (int t = 0; t < tiles; t++)
                    tile(rows + t * TILE_PIXELS * taps, runs[t] ? d->kernel : taps,
                         runs[t] ? d->kernel * d->in : d->in, k0, k1, weight, depth * TILE_CHANNELS, nb,
                         sums + t * TILE_PIXELS * GROUP_CHANNELS, GROUP_CHANNELS, TILE_CHANNELS, false);
            }
            for (int k = 0; k < nb; k++)
                store_tiles(d, sums + k * TILE_CHANNELS, count, (block + k) * TILE_CHANNELS, epilogue,
                            out_pixels, b * s.oh * s.ow, y);
        }
        free(rows);
        free(out_pixels);
        free(sums);
    }
    free(zeros);
    if (failed) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv: out of memory for its tables");
    return LCM_OK;
}

// ---- the packed-weight cache --------------------------------------------------------------------

// What the cache stores beside the arrays: everything conv_direct_new decided.
typedef struct conv_direct_meta {
    int32_t in, out, kernel, stride, padding, blocks, dot, winograd_tile, winograd_transient;
} conv_direct_meta;

static int64_t direct_weight_floats(const conv_direct *d) {
    return (int64_t)(d->dot ? DOT_CHANNELS : d->blocks * TILE_CHANNELS) * d->kernel * d->kernel * d->in;
}

static int64_t winograd_weight_floats(const conv_direct *d) {
    int a = d->winograd_tile + 2;
    return (int64_t)d->blocks * a * a * d->in * TILE_CHANNELS;
}

void conv_direct_export(const conv_direct *d, packed_entry *entry) {
    conv_direct_meta meta = {d->in, d->out, d->kernel, d->stride, d->padding, d->blocks, d->dot,
                             d->winograd_tile, d->winograd_transient};
    *entry = (packed_entry){.family = PACKED_CONV_DIRECT,
                            .shape = {d->in, d->out, d->kernel, d->stride, d->padding},
                            .meta_bytes = sizeof meta, .blob_count = 2};
    memcpy(entry->meta_storage, &meta, sizeof meta);
    entry->meta = entry->meta_storage;
    entry->blobs[0] = d->winograd_weight
                          ? (packed_blob){d->winograd_weight, sizeof(float) * (uint64_t)winograd_weight_floats(d)}
                          : (packed_blob){d->weight, sizeof(float) * (uint64_t)direct_weight_floats(d)};
    entry->blobs[1] = (packed_blob){d->bias, sizeof(float) * (uint64_t)d->blocks * TILE_CHANNELS};
}

lcm_status conv_direct_import(const packed_entry *entry, conv_direct **out) {
    *out = NULL;
    conv_direct_meta m;
    if (entry->family != PACKED_CONV_DIRECT || entry->meta_bytes != sizeof m || entry->blob_count != 2)
        return lcm_fail(LCM_ERR_FORMAT, "not a direct convolution entry");
    memcpy(&m, entry->meta, sizeof m);
    const int32_t *shape = entry->shape;
    // The same decisions conv_direct_new would make now (a setting that changed them, such as
    // LCM_WINOGRAD, makes the entry unusable rather than silently different).
    conv_direct probe = {.in = m.in, .out = m.out, .kernel = m.kernel, .stride = m.stride,
                         .padding = m.padding, .blocks = (m.out + TILE_CHANNELS - 1) / TILE_CHANNELS,
                         .dot = m.out <= DOT_CHANNELS && m.in % 8 == 0};
    bool winograd_shape = m.kernel == 3 && m.stride == 1 && m.padding == 1 && !probe.dot &&
                          m.in % 8 == 0 && m.out % TILE_CHANNELS == 0 && winograd_wanted();
    bool wide = m.in > WINOGRAD_MAX_CHANNELS || m.out > WINOGRAD_MAX_CHANNELS;
    int tile = !winograd_shape || wide ? 0
               : m.in <= WINOGRAD4_MAX_CHANNELS && m.out <= WINOGRAD4_MAX_CHANNELS ? 4 : 2;
    if (m.in != shape[0] || m.out != shape[1] || m.kernel != shape[2] || m.stride != shape[3] ||
        m.padding != shape[4] || m.in < 1 || m.out < 1 || m.kernel < 1 || m.blocks != probe.blocks ||
        m.dot != probe.dot || m.winograd_tile != tile || m.winograd_transient != (winograd_shape && wide))
        return lcm_fail(LCM_ERR_FORMAT, "direct convolution entry does not match the layer");
    probe.winograd_tile = tile;
    uint64_t weight_bytes = sizeof(float) * (uint64_t)(tile ? winograd_weight_floats(&probe)
                                                            : direct_weight_floats(&probe));
    if (entry->blobs[0].bytes != weight_bytes ||
        entry->blobs[1].bytes != sizeof(float) * (uint64_t)probe.blocks * TILE_CHANNELS ||
        (uintptr_t)entry->blobs[0].data % 64 || (uintptr_t)entry->blobs[1].data % 64)
        return lcm_fail(LCM_ERR_FORMAT, "direct convolution entry has arrays of the wrong size");
    conv_direct *d = malloc(sizeof *d);
    if (!d) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    *d = probe;
    d->winograd_transient = m.winograd_transient;
    d->borrowed = true;
    if (tile) d->winograd_weight = (float *)entry->blobs[0].data;
    else d->weight = (float *)entry->blobs[0].data;
    d->bias = (float *)entry->blobs[1].data;
    *out = d;
    return LCM_OK;
}
