// Direct NHWC convolution with a 6-pixel x 16-channel AVX2 register tile; see conv_direct.h.
#include "ops/conv_direct.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

// Output pixels and channels of one register tile: 6 x 2 accumulators of 8 floats, 2 weight
// vectors and 1 broadcast input value fill 15 of the 16 ymm registers.
#define TILE_PIXELS 6
#define TILE_CHANNELS 16
// Output pixels per task: a few tiles, so that 2 threads have thousands of tasks on large images
// while a task still reuses its pointer tables and weights. Fixed (not derived from the thread
// count) like everything that decides the order of the sums.
#define TASK_PIXELS (16 * TILE_PIXELS)
// Flattened (tap, input channel) indices per slice of the sum: 256 x 16 weights = 16 KiB, half
// of the L1 data cache.
#define DEPTH_SLICE 256

struct conv_direct {
    int in, out, kernel, stride, padding;
    int blocks;    // output channel blocks of TILE_CHANNELS
    float *weight; // [blocks][kernel * kernel][in][TILE_CHANNELS], zero past `out`
    float *bias;   // [blocks * TILE_CHANNELS], zero past `out` (and all zero without a bias)
};

bool conv_direct_available(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

lcm_status conv_direct_new(const float *weight, const float *bias, int in, int out, int kernel,
                           int stride, int padding, conv_direct **result) {
    *result = NULL;
    conv_direct *d = calloc(1, sizeof *d);
    if (!d) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing convolution weights");
    *d = (conv_direct){.in = in, .out = out, .kernel = kernel, .stride = stride,
                       .padding = padding, .blocks = (out + TILE_CHANNELS - 1) / TILE_CHANNELS};
    int64_t taps = (int64_t)kernel * kernel, padded = (int64_t)d->blocks * TILE_CHANNELS;
    size_t weight_bytes = sizeof(float) * (size_t)(padded * taps * in);
    d->weight = aligned_alloc(64, (weight_bytes + 63) / 64 * 64);
    d->bias = calloc((size_t)padded, sizeof(float));
    if (!d->weight || !d->bias) {
        conv_direct_free(d);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing convolution weights");
    }
    float *dst = d->weight;
    for (int64_t block = 0; block < d->blocks; block++)
        for (int64_t t = 0; t < taps; t++)
            for (int64_t i = 0; i < in; i++)
                for (int64_t j = 0; j < TILE_CHANNELS; j++) {
                    int64_t o = block * TILE_CHANNELS + j;
                    *dst++ = o < out ? weight[(o * in + i) * taps + t] : 0.0f;
                }
    if (bias) memcpy(d->bias, bias, sizeof(float) * (size_t)out);
    *result = d;
    return LCM_OK;
}

void conv_direct_free(conv_direct *d) {
    if (!d) return;
    free(d->weight);
    free(d->bias);
    free(d);
}

// tile[p][0..15] += sum over the flattened (tap, input channel) indices k in [k0, k1) of
// rows[p * taps + k / in][k % in] * weight[k][0..15], for the 6 pixels p of the tile.
__attribute__((target("avx2,fma"))) static void
tile_6x16(const float *const *rows, int taps, int in, int64_t k0, int64_t k1, const float *weight,
          float *tile) {
    __m256 c0l = _mm256_load_ps(tile + 0), c0h = _mm256_load_ps(tile + 8);
    __m256 c1l = _mm256_load_ps(tile + 16), c1h = _mm256_load_ps(tile + 24);
    __m256 c2l = _mm256_load_ps(tile + 32), c2h = _mm256_load_ps(tile + 40);
    __m256 c3l = _mm256_load_ps(tile + 48), c3h = _mm256_load_ps(tile + 56);
    __m256 c4l = _mm256_load_ps(tile + 64), c4h = _mm256_load_ps(tile + 72);
    __m256 c5l = _mm256_load_ps(tile + 80), c5h = _mm256_load_ps(tile + 88);
    for (int64_t t = k0 / in; t * in < k1; t++) {
        int64_t first = k0 > t * in ? k0 - t * in : 0, end = k1 - t * in < in ? k1 - t * in : in;
        const float *a0 = rows[t], *a1 = rows[taps + t], *a2 = rows[2 * taps + t];
        const float *a3 = rows[3 * taps + t], *a4 = rows[4 * taps + t], *a5 = rows[5 * taps + t];
        const float *w = weight + (t * in + first) * TILE_CHANNELS;
        #pragma GCC unroll 4
        for (int64_t i = first; i < end; i++, w += TILE_CHANNELS) {
            __m256 w_lo = _mm256_load_ps(w), w_hi = _mm256_load_ps(w + 8), x;
            x = _mm256_broadcast_ss(a0 + i);
            c0l = _mm256_fmadd_ps(x, w_lo, c0l);
            c0h = _mm256_fmadd_ps(x, w_hi, c0h);
            x = _mm256_broadcast_ss(a1 + i);
            c1l = _mm256_fmadd_ps(x, w_lo, c1l);
            c1h = _mm256_fmadd_ps(x, w_hi, c1h);
            x = _mm256_broadcast_ss(a2 + i);
            c2l = _mm256_fmadd_ps(x, w_lo, c2l);
            c2h = _mm256_fmadd_ps(x, w_hi, c2h);
            x = _mm256_broadcast_ss(a3 + i);
            c3l = _mm256_fmadd_ps(x, w_lo, c3l);
            c3h = _mm256_fmadd_ps(x, w_hi, c3h);
            x = _mm256_broadcast_ss(a4 + i);
            c4l = _mm256_fmadd_ps(x, w_lo, c4l);
            c4h = _mm256_fmadd_ps(x, w_hi, c4h);
            x = _mm256_broadcast_ss(a5 + i);
            c5l = _mm256_fmadd_ps(x, w_lo, c5l);
            c5h = _mm256_fmadd_ps(x, w_hi, c5h);
        }
    }
    _mm256_store_ps(tile + 0, c0l);
    _mm256_store_ps(tile + 8, c0h);
    _mm256_store_ps(tile + 16, c1l);
    _mm256_store_ps(tile + 24, c1h);
    _mm256_store_ps(tile + 32, c2l);
    _mm256_store_ps(tile + 40, c2h);
    _mm256_store_ps(tile + 48, c3l);
    _mm256_store_ps(tile + 56, c3h);
    _mm256_store_ps(tile + 64, c4l);
    _mm256_store_ps(tile + 72, c4h);
    _mm256_store_ps(tile + 80, c5l);
    _mm256_store_ps(tile + 88, c5h);
}

// The geometry of one run, shared by its tasks.
typedef struct run_shape {
    int64_t h, w;           // stored input size
    int64_t seen_h, seen_w; // the size the convolution sees (doubled when upsampling)
    int up;                 // 1 when upsampling: seen coordinate >> up = stored coordinate
    int64_t oh, ow;
    const float *zeros; // `in` zeros, where a tap falls into the padding
} run_shape;

// rows[p * taps + t] = where pixel `first + p` of image `x` finds its input vector for tap t.
// Pixels past `count` read zeros (their results are discarded).
static void fill_rows(const conv_direct *d, const run_shape *s, const float *x, int64_t first,
                      int count, const float **rows) {
    int taps = d->kernel * d->kernel;
    for (int p = 0; p < TILE_PIXELS; p++) {
        const float **r = rows + p * taps;
        if (p >= count) {
            for (int t = 0; t < taps; t++) r[t] = s->zeros;
            continue;
        }
        int64_t oy = (first + p) / s->ow, ox = (first + p) % s->ow;
        for (int ky = 0; ky < d->kernel; ky++) {
            int64_t iy = oy * d->stride - d->padding + ky;
            for (int kx = 0; kx < d->kernel; kx++) {
                int64_t ix = ox * d->stride - d->padding + kx;
                bool inside = iy >= 0 && iy < s->seen_h && ix >= 0 && ix < s->seen_w;
                r[ky * d->kernel + kx] =
                    inside ? x + ((iy >> s->up) * s->w + (ix >> s->up)) * d->in : s->zeros;
            }
        }
    }
}

// The task's sums into y with the epilogue: `count` pixels, channels from `channel0`. ReLU as
// max(0, v), which like `v < 0 ? 0 : v` keeps NaN and -0.
__attribute__((target("avx2,fma"))) static void
store_tiles(const conv_direct *d, const float *sums, int count, int64_t channel0,
            const conv_direct_epilogue *e, int64_t offset, float *y) {
    int channels = d->out - channel0 < TILE_CHANNELS ? (int)(d->out - channel0) : TILE_CHANNELS;
    const __m256 zero = _mm256_setzero_ps();
    for (int p = 0; p < count; p++) {
        const float *src = sums + p * TILE_CHANNELS;
        int64_t at = offset + (int64_t)p * d->out + channel0;
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

lcm_status conv_direct_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w,
                           bool upsample_input, const conv_direct_epilogue *epilogue, float *y) {
    static const conv_direct_epilogue plain = {0};
    if (!epilogue) epilogue = &plain;
    run_shape s = {.h = h, .w = w, .up = upsample_input ? 1 : 0};
    s.seen_h = h << s.up;
    s.seen_w = w << s.up;
    s.oh = (s.seen_h + 2 * d->padding - d->kernel) / d->stride + 1;
    s.ow = (s.seen_w + 2 * d->padding - d->kernel) / d->stride + 1;
    float *zeros = calloc((size_t)d->in, sizeof(float));
    if (!zeros) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv: out of memory");
    s.zeros = zeros;
    int taps = d->kernel * d->kernel;
    int64_t depth = (int64_t)taps * d->in; // the sum's length
    int64_t pixels = s.oh * s.ow;
    int64_t chunks = (pixels + TASK_PIXELS - 1) / TASK_PIXELS;
    // Tasks in (image, pixel chunk, channel block) order: a thread's consecutive tasks share their
    // input pixels; small images with many channels still split over the channel blocks.
    int64_t tasks = n * chunks * d->blocks;
    int failed = 0;
    #pragma omp parallel
    {
        // The pointer tables of a task's tiles, and its tiles' running sums.
        const float **rows = malloc(sizeof *rows * (size_t)(TASK_PIXELS * taps));
        float *sums = aligned_alloc(32, sizeof(float) * TASK_PIXELS * TILE_CHANNELS);
        if (!rows || !sums) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < tasks; task++) {
            if (!rows || !sums) continue;
            int64_t block = task % d->blocks, chunk = task / d->blocks % chunks;
            int64_t b = task / d->blocks / chunks;
            const float *xb = x + b * h * w * d->in;
            int64_t first = chunk * TASK_PIXELS;
            int count = pixels - first < TASK_PIXELS ? (int)(pixels - first) : TASK_PIXELS;
            int tiles = (count + TILE_PIXELS - 1) / TILE_PIXELS;
            const float *weight = d->weight + block * depth * TILE_CHANNELS;
            for (int t = 0; t < tiles; t++) {
                int tile_count = count - t * TILE_PIXELS < TILE_PIXELS ? count - t * TILE_PIXELS : TILE_PIXELS;
                fill_rows(d, &s, xb, first + t * TILE_PIXELS, tile_count, rows + t * TILE_PIXELS * taps);
                for (int p = 0; p < TILE_PIXELS; p++)
                    memcpy(sums + (t * TILE_PIXELS + p) * TILE_CHANNELS,
                           d->bias + block * TILE_CHANNELS, sizeof(float) * TILE_CHANNELS);
            }
            // The sum in slices whose weights stay in the L1 cache while every tile of the task
            // goes through them; the slices add up in the same order as one pass would.
            for (int64_t k0 = 0; k0 < depth; k0 += DEPTH_SLICE) {
                int64_t k1 = k0 + DEPTH_SLICE < depth ? k0 + DEPTH_SLICE : depth;
                for (int t = 0; t < tiles; t++)
                    tile_6x16(rows + t * TILE_PIXELS * taps, taps, d->in, k0, k1, weight,
                              sums + t * TILE_PIXELS * TILE_CHANNELS);
            }
            store_tiles(d, sums, count, block * TILE_CHANNELS, epilogue,
                        (b * pixels + first) * d->out, y);
        }
        free(rows);
        free(sums);
    }
    free(zeros);
    if (failed) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "conv: out of memory for its tables");
    return LCM_OK;
}
