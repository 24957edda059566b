// Our int8 kernels (ops/int8_gemm.h): packing, input quantization, the VNNI and AVX2 register
// tiles and the plain-C reference they must equal bit for bit.
//
// A convolution is computed as a product of an implicit im2col matrix with the weights: output
// pixel p reads, for each tap (ky, kx), the in_padded contiguous bytes of input pixel
// (oy * stride + ky, ox * stride + kx) of the padded NHWC buffer, so no im2col copy is made. A
// linear layer is the same with one tap and one "pixel" per row.
//
// Float rounding: y = (float)acc * out_scale, then + bias, as two separate statements / intrinsics.
// The library is compiled as ISO C11, where GCC does not contract a multiply and an add into an
// FMA (-ffp-contract=off), and clang contracts only within one expression: keep them apart.
#include "ops/int8_gemm.h"

#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/error.h"
#include "ops/cpu.h"

#define BLOCK 16         // output channels per packed block (one zmm of int32)
#define GROUP_BYTES 64   // one k-group of a block: 16 channels x 4 inputs
#define MAX_TAPS 49      // kernels up to 7 x 7
#define VNNI_ROWS 6      // output pixels per VNNI tile
#define VNNI_BLOCKS 4    // 16-channel blocks per VNNI tile (24 accumulators)
#define AVX2_ROWS 4      // output pixels per AVX2 tile, one block (8 ymm accumulators)
#define AMX_ROWS 16      // output pixels per AMX tile (and k-groups per weight tile)

// ---- packing -----------------------------------------------------------------------------------

lcm_status int8_packed_init(int8_packed *p, const int8_shape *shape, const int8_t *weight,
                            const float *weight_scale, float input_scale, int32_t zero_point) {
    memset(p, 0, sizeof *p);
    int k = shape->kernel ? shape->kernel : 1;
    if (k > 7 || shape->in < 1 || shape->out < 1)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "int8 kernels: a %d -> %d layer with kernel %d (expected "
                        "kernel 0 (linear) to 7 and at least one channel)", shape->in, shape->out,
                        shape->kernel);
    p->shape = *shape;
    p->zero_point = zero_point;
    p->in_padded = (shape->in + 3) / 4 * 4;
    p->taps = k * k;
    p->blocks = (shape->out + BLOCK - 1) / BLOCK;
    int64_t groups = p->in_padded / 4, channels = (int64_t)p->blocks * BLOCK;
    size_t bytes = (size_t)p->blocks * (size_t)p->taps * (size_t)groups * GROUP_BYTES;
    p->weight = aligned_alloc(64, bytes);
    p->zp_times_sum = aligned_alloc(64, sizeof(int32_t) * (size_t)channels);
    p->avx2_offset = aligned_alloc(64, sizeof(int32_t) * (size_t)channels);
    p->out_scale = aligned_alloc(64, sizeof(float) * (size_t)channels);
    if (!p->weight || !p->zp_times_sum || !p->avx2_offset || !p->out_scale) {
        int8_packed_free(p);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "int8 kernels: out of memory packing %d -> %d weights",
                        shape->in, shape->out);
    }
    memset(p->weight, 0, bytes);
    int in = shape->in, taps = p->taps;
    #pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < channels; o++) {
        int32_t sum = 0;
        if (o < shape->out) {
            int8_t *block = p->weight + (o / BLOCK) * taps * groups * GROUP_BYTES + (o % BLOCK) * 4;
            const int8_t *src = weight + o * in * taps; // [in][k][k]
            for (int c = 0; c < in; c++)
                for (int t = 0; t < taps; t++) {
                    int8_t v = src[c * taps + t];
                    block[(t * groups + c / 4) * GROUP_BYTES + c % 4] = v;
                    sum += v;
                }
        }
        p->zp_times_sum[o] = zero_point * sum;
        p->avx2_offset[o] = (zero_point - 128) * sum;
        p->out_scale[o] = o < shape->out ? weight_scale[o] * input_scale : 0.0f;
    }
    return LCM_OK;
}

void int8_packed_free(int8_packed *p) {
    free(p->weight);
    free(p->zp_times_sum);
    free(p->avx2_offset);
    free(p->out_scale);
    p->weight = NULL;
    p->zp_times_sum = p->avx2_offset = NULL;
    p->out_scale = NULL;
}

void int8_packed_unpack(const int8_packed *p, int8_t *weight) {
    int64_t groups = p->in_padded / 4;
    int in = p->shape.in, taps = p->taps;
    for (int64_t o = 0; o < p->shape.out; o++) {
        const int8_t *block = p->weight + (o / BLOCK) * taps * groups * GROUP_BYTES + (o % BLOCK) * 4;
        for (int c = 0; c < in; c++)
            for (int t = 0; t < taps; t++)
                weight[(o * in + c) * taps + t] = block[(t * groups + c / 4) * GROUP_BYTES + c % 4];
    }
}

// ---- the input ---------------------------------------------------------------------------------

void int8_input_geometry(const int8_packed *p, int64_t n, int64_t h, int64_t w, int8_input *g) {
    const int8_shape *s = &p->shape;
    *g = (int8_input){.n = n, .h = h, .w = w, .padded_h = 1, .padded_w = 1, .out_h = 1, .out_w = 1};
    if (s->kernel == 0) return;
    g->padded_h = h + 2 * s->padding;
    g->padded_w = w + 2 * s->padding;
    g->out_h = (g->padded_h - s->kernel) / s->stride + 1;
    g->out_w = (g->padded_w - s->kernel) / s->stride + 1;
}

// Pixels past the last image that the AMX tiles read (and never use): see run_amx.
static int64_t amx_tail_pixels(const int8_packed *p, const int8_input *g) {
    int k = p->shape.kernel ? p->shape.kernel : 1;
    return 2 * AMX_ROWS + (k - 1) * (g->padded_w + 1);
}

int64_t int8_input_bytes(const int8_packed *p, const int8_input *g) {
    return (g->n * g->padded_h * g->padded_w + amx_tail_pixels(p, g)) * p->in_padded;
}

static inline uint8_t quantize_one(float x, float inverse, float zp) {
    float v = nearbyintf(x * inverse) + zp; // as fake_quantize_u8 (round half to even)
    return (uint8_t)(v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f);
}

// quantize_one over a contiguous run, 16 values per AVX-512 step (the same float operations:
// roundscale to nearest-even is nearbyintf).
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) static void
quantize_run_avx512(const float *src, uint8_t *dst, int64_t count, float inverse, float zp) {
    __m512 inv = _mm512_set1_ps(inverse), z = _mm512_set1_ps(zp), lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(src + i), inv),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, z), lo), hi);
        _mm_storeu_si128((__m128i *)(dst + i), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
    for (; i < count; i++) dst[i] = quantize_one(src[i], inverse, zp);
}

__attribute__((target("avx2,fma"))) static void quantize_run_avx2(const float *src, uint8_t *dst, int64_t count,
                                                                  float inverse, float zp) {
    __m256 inv = _mm256_set1_ps(inverse), z = _mm256_set1_ps(zp), lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(src + i), inv),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, z), lo), hi);
        __m256i q = _mm256_cvtps_epi32(v); // 8 x int32 in [0, 255]
        __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
        _mm_storel_epi64((__m128i *)(dst + i), _mm_packus_epi16(w, w));
    }
    for (; i < count; i++) dst[i] = quantize_one(src[i], inverse, zp);
}

static void quantize_run(const float *src, uint8_t *dst, int64_t count, float inverse, float zp) {
    if (cpu_has_avx512()) quantize_run_avx512(src, dst, count, inverse, zp);
    else if (cpu_has_avx2_fma()) quantize_run_avx2(src, dst, count, inverse, zp);
    else
        for (int64_t i = 0; i < count; i++) dst[i] = quantize_one(src[i], inverse, zp);
}

void int8_quantize_input(const int8_packed *p, const int8_input *g, const float *x, bool nchw,
                         float input_scale, uint8_t *buffer) {
    float inverse = 1.0f / input_scale, zp = (float)p->zero_point;
    int64_t cp = p->in_padded, in = p->shape.in, pad = p->shape.kernel ? p->shape.padding : 0;
    // padding pixels and channels hold the zero point: (zp - zp) * w adds nothing
    memset(buffer, (int)p->zero_point, (size_t)int8_input_bytes(p, g));
    int64_t lines = g->n * g->h; // one image row (linear: one row) per iteration
    #pragma omp parallel for schedule(static)
    for (int64_t line = 0; line < lines; line++) {
        int64_t b = line / g->h, y = line % g->h;
        uint8_t *dst = buffer + ((b * g->padded_h + y + pad) * g->padded_w + pad) * cp;
        if (nchw && p->shape.kernel) {
            for (int64_t c = 0; c < in; c++) {
                const float *src = x + ((b * in + c) * g->h + y) * g->w;
                for (int64_t i = 0; i < g->w; i++) dst[i * cp + c] = quantize_one(src[i], inverse, zp);
            }
        } else {
            const float *src = x + line * g->w * in;
            if (cp == in) quantize_run(src, dst, g->w * in, inverse, zp); // pixels back to back
            else
                for (int64_t i = 0; i < g->w; i++) quantize_run(src + i * in, dst + i * cp, in, inverse, zp);
        }
    }
}

// ---- shared by the tiles -----------------------------------------------------------------------

typedef struct run_plan {
    const int8_packed *p;
    const int8_input *g;
    const uint8_t *buffer;
    int64_t rows;                 // output pixels
    int64_t groups;               // k-groups of 4 per tap
    int64_t block_stride;         // bytes between packed blocks
    int64_t tap_offset[MAX_TAPS]; // bytes from a pixel's first tap to each tap
} run_plan;

static void plan_init(run_plan *plan, const int8_packed *p, const int8_input *g, const uint8_t *buffer) {
    plan->p = p;
    plan->g = g;
    plan->buffer = buffer;
    plan->rows = g->n * g->out_h * g->out_w;
    plan->groups = p->in_padded / 4;
    plan->block_stride = (int64_t)p->taps * plan->groups * GROUP_BYTES;
    int k = p->shape.kernel ? p->shape.kernel : 1;
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++) plan->tap_offset[ky * k + kx] = (ky * g->padded_w + kx) * p->in_padded;
}

// The first tap of output pixel `row` (rows past the end read the last one; never stored).
static inline const uint8_t *row_start(const run_plan *plan, int64_t row) {
    if (row >= plan->rows) row = plan->rows - 1;
    const int8_input *g = plan->g;
    int64_t per_image = g->out_h * g->out_w, b = row / per_image, rem = row % per_image;
    int64_t stride = plan->p->shape.kernel ? plan->p->shape.stride : 1;
    int64_t y = rem / g->out_w * stride, x = rem % g->out_w * stride;
    return plan->buffer + ((b * g->padded_h + y) * g->padded_w + x) * plan->p->in_padded;
}

static inline int32_t load_group(const uint8_t *a) {
    int32_t v;
    memcpy(&v, a, sizeof v);
    return v;
}

// ---- AVX-512 VNNI ------------------------------------------------------------------------------

#define VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

// Rows [row0, row0 + 6) x blocks [block0, block0 + nblocks), nblocks <= 4 (a constant per
// inlined copy, so the accumulators stay in registers).
VNNI_TARGET __attribute__((always_inline)) static inline void
vnni_tile(const run_plan *plan, int64_t row0, int block0, const int nblocks, const float *bias, float *y) {
    const int8_packed *p = plan->p;
    const uint8_t *rows[VNNI_ROWS];
    for (int r = 0; r < VNNI_ROWS; r++) rows[r] = row_start(plan, row0 + r);
    __m512i acc[VNNI_ROWS][VNNI_BLOCKS];
    #pragma GCC unroll 6
    for (int r = 0; r < VNNI_ROWS; r++)
        #pragma GCC unroll 4
        for (int c = 0; c < VNNI_BLOCKS; c++) acc[r][c] = _mm512_setzero_si512();
    const int8_t *w = p->weight + block0 * plan->block_stride;
    int64_t groups = plan->groups, bs = plan->block_stride;
    for (int t = 0; t < p->taps; t++) {
        int64_t off = plan->tap_offset[t];
        const uint8_t *a0 = rows[0] + off, *a1 = rows[1] + off, *a2 = rows[2] + off;
        const uint8_t *a3 = rows[3] + off, *a4 = rows[4] + off, *a5 = rows[5] + off;
        const int8_t *wt = w + t * groups * GROUP_BYTES;
        for (int64_t gi = 0; gi < groups; gi++, wt += GROUP_BYTES) {
            __m512i wv[VNNI_BLOCKS];
            #pragma GCC unroll 4
            for (int c = 0; c < nblocks; c++) wv[c] = _mm512_load_si512(wt + c * bs);
            __m512i x;
#define VNNI_ROW(r, a)                                                                             \
            x = _mm512_set1_epi32(load_group(a + 4 * gi));                                         \
            _Pragma("GCC unroll 4")                                                                \
            for (int c = 0; c < nblocks; c++) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], x, wv[c]);
            VNNI_ROW(0, a0) VNNI_ROW(1, a1) VNNI_ROW(2, a2) VNNI_ROW(3, a3) VNNI_ROW(4, a4) VNNI_ROW(5, a5)
#undef VNNI_ROW
        }
    }
    int out = p->shape.out;
    #pragma GCC unroll 4
    for (int c = 0; c < nblocks; c++) {
        int o0 = (block0 + c) * BLOCK;
        int lanes = out - o0 < BLOCK ? out - o0 : BLOCK;
        __mmask16 mask = (__mmask16)((1u << lanes) - 1);
        __m512i zp_sum = _mm512_load_si512(p->zp_times_sum + o0);
        __m512 scale = _mm512_load_ps(p->out_scale + o0);
        __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + o0) : _mm512_setzero_ps();
        for (int r = 0; r < VNNI_ROWS && row0 + r < plan->rows; r++) {
            __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][c], zp_sum));
            v = _mm512_mul_ps(v, scale);
            if (bias) v = _mm512_add_ps(v, b);
            _mm512_mask_storeu_ps(y + (row0 + r) * out + o0, mask, v);
        }
    }
}

// One tile of up to 4 blocks, the block count made a constant for each inlined copy. Not inlined
// into run_vnni: the OpenMP outlined loop body does not inherit a target attribute (clang then
// cannot compile AVX-512 intrinsics inlined into it), so the AVX-512 code stays in this function.
VNNI_TARGET __attribute__((noinline)) static void vnni_column_tile(const run_plan *plan, int64_t row0,
                                                                  int block0, const float *bias, float *y) {
    int nblocks = plan->p->blocks - block0;
    switch (nblocks >= VNNI_BLOCKS ? VNNI_BLOCKS : nblocks) {
    case 4: vnni_tile(plan, row0, block0, 4, bias, y); break;
    case 3: vnni_tile(plan, row0, block0, 3, bias, y); break;
    case 2: vnni_tile(plan, row0, block0, 2, bias, y); break;
    default: vnni_tile(plan, row0, block0, 1, bias, y); break;
    }
}

static void run_vnni(const run_plan *plan, const float *bias, float *y) {
    int64_t row_tiles = (plan->rows + VNNI_ROWS - 1) / VNNI_ROWS;
    int column_tiles = (plan->p->blocks + VNNI_BLOCKS - 1) / VNNI_BLOCKS;
    // column tiles outer: a thread's consecutive tiles share their weights (up to ~0.7 MB) in cache
    #pragma omp parallel for collapse(2) schedule(static)
    for (int ct = 0; ct < column_tiles; ct++)
        for (int64_t rt = 0; rt < row_tiles; rt++)
            vnni_column_tile(plan, rt * VNNI_ROWS, ct * VNNI_BLOCKS, bias, y);
}

// ---- AVX2 --------------------------------------------------------------------------------------

#define AVX2_TARGET __attribute__((target("avx2,fma")))

// Rows [row0, row0 + 4) x one block of 16 channels (two ymm per row).
AVX2_TARGET __attribute__((noinline)) static void avx2_tile(const run_plan *plan, int64_t row0, int block, const float *bias,
                                  float *y) {
    const int8_packed *p = plan->p;
    const uint8_t *rows[AVX2_ROWS];
    for (int r = 0; r < AVX2_ROWS; r++) rows[r] = row_start(plan, row0 + r);
    __m256i acc[AVX2_ROWS][2];
    for (int r = 0; r < AVX2_ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8((char)0x80);
    const int8_t *w = p->weight + block * plan->block_stride;
    int64_t groups = plan->groups;
    for (int t = 0; t < p->taps; t++) {
        int64_t off = plan->tap_offset[t];
        const uint8_t *a0 = rows[0] + off, *a1 = rows[1] + off, *a2 = rows[2] + off, *a3 = rows[3] + off;
        const int8_t *wt = w + t * groups * GROUP_BYTES;
        for (int64_t gi = 0; gi < groups; gi++, wt += GROUP_BYTES) {
            __m256i w0 = _mm256_load_si256((const __m256i *)wt), w1 = _mm256_load_si256((const __m256i *)(wt + 32));
            __m256i x, ax;
            // a = q - 128 (s8); |a| * sign(w, a) = a * w, pairs summed to at most 32512: exact
#define AVX2_ROW(r, a)                                                                             \
            x = _mm256_xor_si256(_mm256_set1_epi32(load_group(a + 4 * gi)), flip);                 \
            ax = _mm256_abs_epi8(x);                                                               \
            acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(                             \
                _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w0, x)), ones));                         \
            acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(                             \
                _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w1, x)), ones));
            AVX2_ROW(0, a0) AVX2_ROW(1, a1) AVX2_ROW(2, a2) AVX2_ROW(3, a3)
#undef AVX2_ROW
        }
    }
    int out = p->shape.out, o0 = block * BLOCK, lanes = out - o0 < BLOCK ? out - o0 : BLOCK;
    for (int r = 0; r < AVX2_ROWS && row0 + r < plan->rows; r++) {
        float v[BLOCK];
        for (int h = 0; h < 2; h++) {
            __m256i offset = _mm256_load_si256((const __m256i *)(p->avx2_offset + o0 + 8 * h));
            __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][h], offset));
            f = _mm256_mul_ps(f, _mm256_load_ps(p->out_scale + o0 + 8 * h));
            _mm256_storeu_ps(v + 8 * h, f);
        }
        float *dst = y + (row0 + r) * out + o0;
        if (bias)
            for (int i = 0; i < lanes; i++) {
                float with_bias = v[i] + bias[o0 + i];
                dst[i] = with_bias;
            }
        else
            memcpy(dst, v, sizeof(float) * (size_t)lanes);
    }
}

static void run_avx2(const run_plan *plan, const float *bias, float *y) {
    int64_t row_tiles = (plan->rows + AVX2_ROWS - 1) / AVX2_ROWS;
    int blocks = plan->p->blocks;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < blocks; b++)
        for (int64_t rt = 0; rt < row_tiles; rt++) avx2_tile(plan, rt * AVX2_ROWS, b, bias, y);
}

// ---- AMX ---------------------------------------------------------------------------------------
//
// tdpbusd multiplies a tile of 16 pixels x 64 input bytes (u8) by a tile of 16 k-groups x 16
// output channels x 4 (s8: exactly 16 consecutive groups of a block in the packed weights) into
// 16 x 16 int32 sums: 16,384 products per instruction. The pixels of one tile must sit at one
// stride from each other. For a stride-1 convolution with "same" padding that holds if the padded
// image is read as one long row: virtual pixel q = y * padded_w + x (x < padded_w) has its taps at
// q + ky * padded_w + kx for every q, so 16 consecutive virtual pixels are one strided load per
// tap and 64 channels; the virtual pixels in the padding columns (x >= out_w) are computed and
// dropped (2 / padded_w of the work), and the last tiles read past the image into the tail that
// int8_input_bytes adds. A linear layer is one image of one row of n pixels.

#define AMX_TARGET __attribute__((target("amx-tile,amx-int8")))
#define AMX_STEP_BYTES (AMX_ROWS * GROUP_BYTES) // one weight tile

// Linux keeps the 8 KiB tile state from a process until it asks for it.
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18
static bool amx_granted;
static pthread_once_t amx_once = PTHREAD_ONCE_INIT;
static void amx_ask(void) { amx_granted = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0; }

bool int8_amx_usable(void) {
    const cpu_features *f = cpu_features_get();
    if (!f->amx || !f->amx_enabled) return false; // hidden with AVX-512, off with LCM_AMX=0
    pthread_once(&amx_once, amx_ask);
    return amx_granted;
}

bool int8_amx_fits(const int8_packed *p) {
    const int8_shape *s = &p->shape;
    bool one_stride = s->kernel == 0 || (s->stride == 1 && 2 * s->padding == s->kernel - 1);
    return one_stride && p->in_padded % GROUP_BYTES == 0;
}

typedef struct tile_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t bytes_per_row[16];
    uint8_t rows[16];
} tile_config;

// Tiles 0-3: the sums of two pixel tiles x two blocks; 4-5: the pixel tiles; 6-7: the weights.
AMX_TARGET __attribute__((noinline)) static void amx_configure(void) {
    tile_config config;
    memset(&config, 0, sizeof config);
    config.palette = 1;
    for (int t = 0; t < 8; t++) {
        config.bytes_per_row[t] = GROUP_BYTES;
        config.rows[t] = AMX_ROWS;
    }
    // GCC's _tile_loadconfig tells the compiler it reads 8 bytes of the configuration, so the
    // stores to the rest could be dropped as dead: make them visible first.
    __asm__ volatile("" : : "r"(&config) : "memory");
    _tile_loadconfig(&config);
}

// The real output pixels among the 16 virtual ones from `first` of image b, one block: the same
// float operations as the VNNI tile's.
VNNI_TARGET static void amx_store(const int8_packed *p, const int8_input *g, int64_t wp, int64_t b,
                                  int64_t first, int block, const int32_t sums[AMX_ROWS][AMX_ROWS],
                                  const float *bias, float *y) {
    int out = p->shape.out, o0 = block * BLOCK, lanes = out - o0 < BLOCK ? out - o0 : BLOCK;
    int64_t out_w = p->shape.kernel ? g->out_w : g->n, out_h = p->shape.kernel ? g->out_h : 1;
    __mmask16 mask = (__mmask16)((1u << lanes) - 1);
    __m512i zp_sum = _mm512_load_si512(p->zp_times_sum + o0);
    __m512 scale = _mm512_load_ps(p->out_scale + o0);
    __m512 bias_v = bias ? _mm512_maskz_loadu_ps(mask, bias + o0) : _mm512_setzero_ps();
    int64_t oy = first / wp, ox = first % wp;
    for (int r = 0; r < AMX_ROWS; r++, ox++) {
        if (ox == wp) ox = 0, oy++;
        if (oy >= out_h) break;
        if (ox >= out_w) continue; // a padding column
        __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_load_si512(sums[r]), zp_sum));
        v = _mm512_mul_ps(v, scale);
        if (bias) v = _mm512_add_ps(v, bias_v);
        _mm512_mask_storeu_ps(y + ((b * out_h + oy) * out_w + ox) * out + o0, mask, v);
    }
}

// What run_amx's tasks share.
typedef struct amx_plan {
    const int8_packed *p;
    const int8_input *g;
    const uint8_t *buffer;
    const float *bias;
    float *y;
    int k;                  // kernel side (1 for linear)
    int64_t wp;             // virtual pixels per padded row
    int64_t pairs;          // pairs of pixel tiles per image
    int64_t image_bytes, chunks, block_bytes;
    int block_pairs;
} amx_plan;

// One task: a pair of pixel tiles x a pair of blocks (or one) of image b. A function of its own
// with the AMX target, called from a plain OpenMP loop: clang does not give an outlined loop body
// its function's target attribute.
AMX_TARGET __attribute__((noinline)) static void amx_task(const amx_plan *plan, int64_t task,
                                                        int32_t sums[4][AMX_ROWS][AMX_ROWS]) {
    const int8_packed *p = plan->p;
    int64_t pair = task % plan->pairs, b = task / plan->pairs / plan->block_pairs;
    int block = (int)(task / plan->pairs % plan->block_pairs) * 2;
    bool two_blocks = block + 1 < p->blocks;
    int64_t first = pair * 2 * AMX_ROWS, pixel_bytes = p->in_padded, wp = plan->wp;
    const uint8_t *image = plan->buffer + b * plan->image_bytes;
    const int8_t *w0 = p->weight + block * plan->block_bytes, *w1 = w0 + plan->block_bytes;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    int64_t step = 0;
    for (int ky = 0; ky < plan->k; ky++)
        for (int kx = 0; kx < plan->k; kx++) {
            const uint8_t *a = image + (first + ky * wp + kx) * pixel_bytes;
            for (int64_t c = 0; c < plan->chunks; c++, step++) {
                _tile_loadd(4, a + c * GROUP_BYTES, pixel_bytes);
                _tile_loadd(5, a + AMX_ROWS * pixel_bytes + c * GROUP_BYTES, pixel_bytes);
                _tile_loadd(6, w0 + step * AMX_STEP_BYTES, GROUP_BYTES);
                _tile_dpbusd(0, 4, 6);
                _tile_dpbusd(2, 5, 6);
                if (two_blocks) {
                    _tile_loadd(7, w1 + step * AMX_STEP_BYTES, GROUP_BYTES);
                    _tile_dpbusd(1, 4, 7);
                    _tile_dpbusd(3, 5, 7);
                }
            }
        }
    _tile_stored(0, sums[0], AMX_ROWS * 4);
    _tile_stored(2, sums[2], AMX_ROWS * 4);
    amx_store(p, plan->g, wp, b, first, block, sums[0], plan->bias, plan->y);
    amx_store(p, plan->g, wp, b, first + AMX_ROWS, block, sums[2], plan->bias, plan->y);
    if (two_blocks) {
        _tile_stored(1, sums[1], AMX_ROWS * 4);
        _tile_stored(3, sums[3], AMX_ROWS * 4);
        amx_store(p, plan->g, wp, b, first, block + 1, sums[1], plan->bias, plan->y);
        amx_store(p, plan->g, wp, b, first + AMX_ROWS, block + 1, sums[3], plan->bias, plan->y);
    }
}

AMX_TARGET __attribute__((noinline)) static void amx_release(void) { _tile_release(); }

static void run_amx(const int8_packed *p, const int8_input *g, const uint8_t *buffer, const float *bias,
                    float *y) {
    bool linear = p->shape.kernel == 0;
    amx_plan plan = {.p = p, .g = g, .buffer = buffer, .bias = bias, .y = y, .k = linear ? 1 : p->shape.kernel,
                     .wp = linear ? g->n : g->padded_w,
                     .image_bytes = g->padded_h * g->padded_w * p->in_padded,
                     .chunks = p->in_padded / GROUP_BYTES,
                     .block_bytes = (int64_t)p->taps * (p->in_padded / 4) * GROUP_BYTES,
                     .block_pairs = (p->blocks + 1) / 2};
    int64_t images = linear ? 1 : g->n, virtual_pixels = (linear ? 1 : g->out_h) * plan.wp;
    plan.pairs = (virtual_pixels + 2 * AMX_ROWS - 1) / (2 * AMX_ROWS);
    #pragma omp parallel
    {
        amx_configure();
        int32_t sums[4][AMX_ROWS][AMX_ROWS] __attribute__((aligned(64)));
        // pixel pairs inner: a thread's consecutive tasks share their weights (in L2)
        #pragma omp for schedule(static)
        for (int64_t task = 0; task < images * plan.block_pairs * plan.pairs; task++) amx_task(&plan, task, sums);
        amx_release();
    }
}

int8_isa int8_gemm_isa(const int8_packed *p, int8_isa asked) {
    if ((asked == INT8_ISA_AUTO || asked == INT8_ISA_AMX) && int8_amx_fits(p) && int8_amx_usable())
        return INT8_ISA_AMX;
    if (asked == INT8_ISA_AUTO || asked == INT8_ISA_AMX) return cpu_has_vnni() ? INT8_ISA_VNNI : INT8_ISA_AVX2;
    return asked;
}

void int8_gemm_run(const int8_packed *p, const int8_input *g, const uint8_t *buffer,
                   const float *bias, int8_isa isa, float *y) {
    run_plan plan;
    plan_init(&plan, p, g, buffer);
    if (plan.rows == 0) return;
    switch (int8_gemm_isa(p, isa)) {
    case INT8_ISA_AMX: run_amx(p, g, buffer, bias, y); break;
    case INT8_ISA_VNNI: run_vnni(&plan, bias, y); break;
    default: run_avx2(&plan, bias, y); break;
    }
}

// ---- the reference -----------------------------------------------------------------------------

void int8_reference_run(const int8_shape *s, int64_t n, int64_t h, int64_t w, const uint8_t *x,
                        int32_t zero_point, const int8_t *weight, const float *out_scale,
                        const float *bias, float *y) {
    int k = s->kernel ? s->kernel : 1, stride = s->kernel ? s->stride : 1, pad = s->kernel ? s->padding : 0;
    if (!s->kernel) h = w = 1;
    int64_t oh = (h + 2 * pad - k) / stride + 1, ow = (w + 2 * pad - k) / stride + 1;
    for (int64_t b = 0; b < n; b++)
        for (int64_t oy = 0; oy < oh; oy++)
            for (int64_t ox = 0; ox < ow; ox++)
                for (int o = 0; o < s->out; o++) {
                    int32_t acc = 0;
                    for (int c = 0; c < s->in; c++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int64_t iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue; // zero padding
                                int32_t q = x[((b * h + iy) * w + ix) * s->in + c];
                                acc += (q - zero_point) * weight[((o * s->in + c) * k + ky) * k + kx];
                            }
                    float v = (float)acc * out_scale[o];
                    if (bias) v = v + bias[o];
                    y[((b * oh + oy) * ow + ox) * s->out + o] = v;
                }
}
