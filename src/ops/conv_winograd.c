// Winograd F(2x2, 3x3) and F(4x4, 3x3) for the direct convolution's 3x3 stride-1 layers
// (ops/conv_direct.h says which layers); on the register tiles of ops/conv_tiles.c.
#include "ops/conv_direct_internal.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

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

// conv_direct_set_winograd(false) (what LCM_WINOGRAD=0 makes ops_backend_from_environment do) keeps
// layers packed afterwards on the direct kernel, to compare the two.
static bool winograd_setting = true;

void conv_direct_set_winograd(bool on) { winograd_setting = on; }

static int64_t stream_bytes = WINOGRAD_STREAM_BYTES;

void conv_direct_set_stream_bytes(int64_t bytes) { stream_bytes = bytes < 0 ? WINOGRAD_STREAM_BYTES : bytes; }

bool conv_winograd_wanted(void) {
    return winograd_setting;
}

bool conv_direct_winograd_enabled(void) { return conv_winograd_wanted(); }

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

lcm_status conv_winograd_prepare(conv_direct *d) {
    if (d->kernel != 3 || d->stride != 1 || d->padding != 1 || d->dot || d->in % 8 ||
        d->out % TILE_CHANNELS || !conv_winograd_wanted())
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
__attribute__((target("avx2,fma"))) lcm_status
conv_winograd_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w, int up,
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
    conv_tile_fn *tile = conv_direct_tile_kernel();
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
        bool ready = conv_direct_scratch_ready(v && p && zeros, &failed);
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
__attribute__((target("avx2,fma"))) lcm_status
conv_winograd_transient_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w,
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
    conv_tile_fn *tile = conv_direct_tile_kernel();
    bool stream = (uintptr_t)y % 32 == 0 && (int64_t)sizeof(float) * n * ws.oh * ws.ow * out > stream_bytes;
    const int64_t groups = (d->blocks + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
    const int64_t block_weights = positions * in * TILE_CHANNELS, block_products = tt * positions * TILE_CHANNELS;
    #pragma omp parallel
    {
        // One group of blocks' transformed weights and products.
        float *u = aligned_alloc(64, sizeof(float) * (size_t)(GROUP_BLOCKS * block_weights));
        float *p = aligned_alloc(64, sizeof(float) * (size_t)(GROUP_BLOCKS * block_products));
        float *zeros = calloc((size_t)in, sizeof(float));
        bool ready = conv_direct_scratch_ready(u && p && zeros, &failed);
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
