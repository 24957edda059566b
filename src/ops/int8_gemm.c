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
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/cpu.h"

#define BLOCK 16         // output channels per packed block (one zmm of int32)
#define GROUP_BYTES 64   // one k-group of a block: 16 channels x 4 inputs
#define MAX_TAPS 49      // kernels up to 7 x 7
#define VNNI_ROWS 6      // output pixels per VNNI tile
#define VNNI_BLOCKS 4    // 16-channel blocks per VNNI tile (24 accumulators)
#define AVX2_ROWS 4      // output pixels per AVX2 tile, one block (8 ymm accumulators)

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

int64_t int8_input_bytes(const int8_packed *p, const int8_input *g) {
    return g->n * g->padded_h * g->padded_w * p->in_padded;
}

static inline uint8_t quantize_one(float x, float inverse, float zp) {
    float v = nearbyintf(x * inverse) + zp; // as fake_quantize_u8 (round half to even)
    return (uint8_t)(v > 0.0f ? (v < 255.0f ? v : 255.0f) : 0.0f);
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
            for (int64_t i = 0; i < g->w; i++)
                for (int64_t c = 0; c < in; c++) dst[i * cp + c] = quantize_one(src[i * in + c], inverse, zp);
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

void int8_gemm_run(const int8_packed *p, const int8_input *g, const uint8_t *buffer,
                   const float *bias, int8_isa isa, float *y) {
    run_plan plan;
    plan_init(&plan, p, g, buffer);
    if (plan.rows == 0) return;
    if (isa == INT8_ISA_AUTO) isa = cpu_has_vnni() ? INT8_ISA_VNNI : INT8_ISA_AVX2;
    if (isa == INT8_ISA_VNNI) run_vnni(&plan, bias, y);
    else run_avx2(&plan, bias, y);
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
