// Direct NHWC convolution with a 12-pixel x 16-channel register tile (AVX-512, or two AVX2 halves:
// ops/fma_tile.h); see conv_direct.h. Winograd layers run in conv_winograd.c.
#include "ops/conv_direct_internal.h"

#include "ops/cpu.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

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
    lcm_status st = conv_winograd_prepare(d);
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

lcm_status conv_direct_run(const conv_direct *d, const float *x, int64_t n, int64_t h, int64_t w,
                           bool upsample_input, const conv_direct_epilogue *epilogue, float *y) {
    static const conv_direct_epilogue plain = {0};
    if (!epilogue) epilogue = &plain;
    if (d->winograd_weight) return conv_winograd_run(d, x, n, h, w, upsample_input ? 1 : 0, epilogue, y);
    if (d->winograd_transient && !(upsample_input && d->phase_weight) &&
        (h << upsample_input) * (w << upsample_input) >= WINOGRAD_TRANSIENT_MIN_PIXELS)
        return conv_winograd_transient_run(d, x, n, h, w, upsample_input ? 1 : 0, epilogue, y);
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
    conv_tile_fn *tile = conv_direct_tile_kernel();
    #pragma omp parallel
    {
        // The pointer tables of a task's tiles, its output pixels and its tiles' running sums.
        const float **rows = malloc(sizeof *rows * (size_t)(TASK_PIXELS * taps));
        int64_t *out_pixels = malloc(sizeof *out_pixels * TASK_PIXELS);
        float *sums = aligned_alloc(64, sizeof(float) * TASK_PIXELS * GROUP_CHANNELS); // [pixel][64]
        bool ready = conv_direct_scratch_ready(rows && out_pixels && sums, &failed);
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
                          m.in % 8 == 0 && m.out % TILE_CHANNELS == 0 && conv_winograd_wanted();
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
