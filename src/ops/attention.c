// Multi-head attention: the fused flash kernel (AVX-512 or AVX2 fp32, AVX512-BF16 bf16) and the
// sgemm-tile kernel.
// See src/ops/attention.h for what each does and how one is chosen.
//
// Flash kernel data flow for one head (d = head size, TILE = 64):
//   before the task loop, K and V of every head are packed once into tile-major copies:
//     fp32: kt[tile][d][64]          (keys of a tile side by side: a Q·Kᵀ row is 64/lanes vectors)
//           vp[tile*64 + j][dpad]    (dpad = d rounded up to the vector width, zero filled); not
//                                    packed when d is a multiple of it: P·V then reads V in place
//     bf16: kt[tile][d/2][64][2]     (pairs along d, the layout vdpbf16ps multiplies)
//           vp[tile][32][dpad][2]    (pairs along the keys)
//   task (b, h, query block q0..q0+63):
//     q  <- rows of Q times scale*log2(e) (so the softmax can use exp2)
//     for each key tile: s = q ktᵀ  [64 x 64] (with each row's maximum on the side);
//                        then per block of ROWS rows: m' = max(m, max s), p = exp2(s - m'),
//                        l = l 2^(m-m') + sum p, o = o 2^(m-m') + p vp (the rescale of o as
//                        P·V loads its accumulators)
//     out = o / l
// Rows and keys past the ends are zero padding whose scores are masked to -inf; with `causal`, key
// tiles past the block's last query are skipped and the rest masked per row.
#include "ops/attention.h"

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/cpu.h"
#include "ops/gemm.h"
#include "ops/ops.h"

// ---- kernel choice -----------------------------------------------------------------------------

bool attention_flash_available(lcm_precision precision) {
    if (precision == LCM_PRECISION_BF16) return cpu_has_avx512_bf16();
    return cpu_has_avx512() || cpu_has_avx2_fma();
}

// ---- sgemm tiles (portable) --------------------------------------------------------------------

#define GEMM_QUERY_BLOCK 256

// Softmax of each row of scores[rows, nk] in place; with `causal`, row r (query position
// first_query + r) only sees keys 0..first_query+r.
static void softmax_rows(float *scores, int64_t rows, int64_t nk, int64_t first_query, bool causal) {
    for (int64_t r = 0; r < rows; r++) {
        float *row = scores + r * nk;
        int64_t visible = causal ? first_query + r + 1 : nk;
        if (visible > nk) visible = nk;
        float max = -FLT_MAX;
        for (int64_t j = 0; j < visible; j++) max = row[j] > max ? row[j] : max;
        double sum = 0;
        for (int64_t j = 0; j < visible; j++) {
            row[j] = expf(row[j] - max);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int64_t j = 0; j < visible; j++) row[j] *= inv;
        for (int64_t j = visible; j < nk; j++) row[j] = 0.0f;
    }
}

static tensor *attention_gemm_tiles(const tensor *q, const tensor *k, const tensor *v, int heads,
                                    bool causal, tensor *out) {
    int64_t batch = q->shape[0], nq = q->shape[1], c = q->shape[2], nk = k->shape[1];
    int64_t d = c / heads;
    float scale = 1.0f / sqrtf((float)d);
    int64_t blocks = (nq + GEMM_QUERY_BLOCK - 1) / GEMM_QUERY_BLOCK;
    int64_t tasks = batch * heads * blocks;
    int failed = 0;
    #pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * GEMM_QUERY_BLOCK * (size_t)nk);
        if (!scores) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; task++) {
            if (!scores) continue;
            int64_t b = task / (heads * blocks), h = task / blocks % heads, blk = task % blocks;
            int64_t q0 = blk * GEMM_QUERY_BLOCK;
            int64_t rows = nq - q0 < GEMM_QUERY_BLOCK ? nq - q0 : GEMM_QUERY_BLOCK;
            const float *qh = q->data + (b * nq + q0) * c + h * d;
            const float *kh = k->data + b * nk * c + h * d;
            const float *vh = v->data + b * nk * c + h * d;
            float *oh = out->data + (b * nq + q0) * c + h * d;
            // scores = scale * q k^T ; out = softmax(scores) v
            gemm_f32(false, true, rows, nk, d, scale, qh, c, kh, c, 0.0f, scores, nk);
            softmax_rows(scores, rows, nk, q0, causal);
            gemm_f32(false, false, rows, d, nk, 1.0f, scores, nk, vh, c, 0.0f, oh, c);
        }
        free(scores);
    }
    if (failed) {
        tensor_free(out);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "attention: out of memory for the score buffer");
        return NULL;
    }
    return out;
}

// ---- flash kernel --------------------------------------------------------------------------------

#define TILE 64 // query rows per task and keys per tile
// Query rows per register block: set per instruction set below (at most 16). A task's rows are
// padded up to a multiple of it, so the per-thread tiles hold TILE + 16 rows (which also keeps
// every buffer a multiple of 64 bytes, as aligned_alloc requires).
#define ROW_CAPACITY (TILE + 16)

// The shapes of one attention call and of its packed buffers.
typedef struct flash_plan {
    int64_t batch, nq, nk, c, d, heads;
    bool causal, bf16;
    int64_t dpad;        // d rounded up to the vector width: 16 (AVX-512), 8 (AVX2); V and O rows
    int64_t dpairs;      // ceil(d / 2) (bf16 Q/K pairs)
    int64_t key_tiles;   // ceil(nk / 64)
    int64_t kt_head;     // elements of packed Kᵀ per head (floats or bf16 values)
    int64_t vp_head;     // elements of packed V per head
    bool v_in_place;     // fp32 with d == dpad: P·V reads V's rows where they are, unpacked
    int64_t v_stride;    // floats from one key's V row to the next: c in place, else dpad
    float q_scale;       // 1/sqrt(d) * log2(e)
} flash_plan;

// Per-thread scratch of one task.
typedef struct flash_scratch {
    float *q;      // fp32: [64][d]; bf16: [64][dpairs] uint32 pairs
    float *s;      // [64][64] scores, then probabilities
    uint16_t *p;   // bf16 probabilities [64][64]
    float *o;      // [64][dpad] output accumulator
    float *m, *l;  // [64] running max and sum
} flash_scratch;

static uint16_t bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u); // round to nearest, ties to even
    return (uint16_t)(u >> 16);
}

// Packs K and V of one (batch, head, key tile) into the layouts above.
static void pack_key_tile(const flash_plan *pl, const tensor *k, const tensor *v, int64_t b,
                          int64_t h, int64_t tile, void *kt_all, void *vp_all) {
    int64_t head = b * pl->heads + h, j0 = tile * TILE, d = pl->d, dpad = pl->dpad;
    int64_t keys = pl->nk - j0 < TILE ? pl->nk - j0 : TILE;
    const float *kh = k->data + (b * pl->nk + j0) * pl->c + h * d;
    const float *vh = v->data + (b * pl->nk + j0) * pl->c + h * d;
    if (!pl->bf16) {
        float *kt = (float *)kt_all + head * pl->kt_head + tile * d * TILE;
        memset(kt, 0, sizeof(float) * (size_t)(d * TILE));
        for (int64_t j = 0; j < keys; j++)
            for (int64_t e = 0; e < d; e++) kt[e * TILE + j] = kh[j * pl->c + e];
        if (pl->v_in_place) return;
        float *vp = (float *)vp_all + head * pl->vp_head + tile * TILE * dpad;
        memset(vp, 0, sizeof(float) * (size_t)(TILE * dpad));
        for (int64_t j = 0; j < keys; j++)
            for (int64_t e = 0; e < d; e++) vp[j * dpad + e] = vh[j * pl->c + e];
    } else {
        uint16_t *kt = (uint16_t *)kt_all + head * pl->kt_head + tile * pl->dpairs * TILE * 2;
        uint16_t *vp = (uint16_t *)vp_all + head * pl->vp_head + tile * TILE * dpad;
        memset(kt, 0, sizeof(uint16_t) * (size_t)(pl->dpairs * TILE * 2));
        memset(vp, 0, sizeof(uint16_t) * (size_t)(TILE * dpad));
        for (int64_t j = 0; j < keys; j++)
            for (int64_t e = 0; e < d; e++) {
                kt[((e / 2) * TILE + j) * 2 + e % 2] = bf16_round(kh[j * pl->c + e]);
                vp[((j / 2) * dpad + e) * 2 + j % 2] = bf16_round(vh[j * pl->c + e]);
            }
    }
}

// ---- the flash task, once per instruction set -------------------------------------------------------

// AVX-512 (+BF16): 16 lanes; the scores block is 4 rows x 64 keys, P·V 4 rows x 64 columns.
// gcc and clang spell "compile the functions below for this instruction set" differently; both
// give every function up to the matching pop the target attribute.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
#endif

// 2^x for x <= 0: x = n + f with |f| <= 1/2, 2^f by its Taylor polynomial of degree 6 (relative
// error ~2e-7), times 2^n by vscalefps. Inputs below -126 (and -inf, the mask) give 0.
static inline __m512 exp2_avx512(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-150.0f));
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(1.5403530393381606e-4f); // ln2^6 / 6!
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f)); // ln2^5 / 5!
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f)); // ln2^4 / 4!
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f)); // ln2^3 / 3!
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f)); // ln2^2 / 2!
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f)); // ln2
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    // Below 2^-126 the result is flushed to 0: denormal probabilities would only slow P·V down.
    __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-126.0f), _CMP_GE_OQ);
    return _mm512_maskz_scalef_ps(normal, p, n);
}

#define ROWS 4
#define FLASH_NAME(x) x##_avx512
#define FLASH_BF16 1
#define VEC 16
#define vf __m512
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VSET1 _mm512_set1_ps
#define VZERO _mm512_setzero_ps
#define VFMA _mm512_fmadd_ps
#define VADD _mm512_add_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VMAX _mm512_max_ps
#define VREDUCE_MAX _mm512_reduce_max_ps
#define VREDUCE_ADD _mm512_reduce_add_ps
#define VEXP2 exp2_avx512
#define VEXP2_CLAMPED exp2_avx512
#define VKEEP(v) __asm__("" : "+v"(v))
#define SCORE_VECS 4
#define PV_ROWS 4
#define PV_VECS 4
#include "ops/attention_flash.inc"
#undef FLASH_NAME
#undef FLASH_BF16
#undef VEC
#undef vf
#undef VLOAD
#undef VSTORE
#undef VSET1
#undef VZERO
#undef VFMA
#undef VADD
#undef VSUB
#undef VMUL
#undef VMAX
#undef VREDUCE_MAX
#undef VREDUCE_ADD
#undef VEXP2
#undef VEXP2_CLAMPED
#undef VKEEP
#undef SCORE_VECS
#undef PV_ROWS
#undef PV_VECS
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// AVX2 + FMA: 8 lanes and 16 registers, so smaller register blocks: scores 6 rows x 16 keys, P·V
// 2 rows x 40 columns (ROWS, PV_ROWS, PV_VECS below).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

// 2^x for -126 <= x <= 0, cheaper than the AVX-512 one (the softmax's exponentials are ~12% of
// the kernel's time at d = 40): n = round(x) by the 1.5 * 2^23 addition trick, which also leaves
// n in the low bits of t; 2^f for |f| <= 1/2 by a degree-5 minimax polynomial (relative error
// 9e-8, at most 1.7e-7 evaluated in fp32, as good as the degree-6 Taylor polynomial above; its
// Horner chain measured no slower than Estrin's order, which costs two more multiplications);
// 2^n added to the exponent bits. x is clamped at -126 first (where n = -126 comes with f >= 0,
// so the exponent sum stays in the normal range): inputs below -126, the -inf of masked keys
// included, give 2^-126; exp2_avx2 gives exact zeros.
static inline __m256 exp2_clamped_avx2(__m256 x) {
    const __m256 shifter = _mm256_set1_ps(12582912.0f); // 1.5 * 2^23
    x = _mm256_max_ps(x, _mm256_set1_ps(-126.0f));
    __m256 t = _mm256_add_ps(x, shifter);
    __m256 f = _mm256_sub_ps(x, _mm256_sub_ps(t, shifter));
    __m256 p = _mm256_set1_ps(1.3264723890822423e-3f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.6715128694187840e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5507337542503190e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022242080365913e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.9314697759149710e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    // t's bits are 0x4b400000 + n: shifted left by 23 only n << 23 is left.
    __m256i scaled = _mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(_mm256_castps_si256(t), 23));
    return _mm256_castsi256_ps(scaled);
}

// 2^x for x <= 0, 0 below -126 and for -inf.
static inline __m256 exp2_avx2(__m256 x) {
    __m256 normal = _mm256_cmp_ps(x, _mm256_set1_ps(-126.0f), _CMP_GE_OQ);
    return _mm256_and_ps(normal, exp2_clamped_avx2(x));
}

static inline float reduce_max_avx2(__m256 x) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float reduce_add_avx2(__m256 x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Scores 6 rows x 2 vectors: 12 accumulators keep both FMA pipes busy through their 4-cycle
// latency (4 rows gave 8, measured ~15% slower on Zen 3; 3 rows x 4 vectors needs 17 registers).
// P·V 2 rows x 5 vectors: d = 40 in one block, 80 in two, 10 accumulators, 7 loads per 10 FMAs
// (6 rows x 2 vectors left d = 40 a latency-bound 1-vector chunk).
#undef ROWS
#define ROWS 6
#define FLASH_NAME(x) x##_avx2
#define FLASH_BF16 0
#define VEC 8
#define vf __m256
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VSET1 _mm256_set1_ps
#define VZERO _mm256_setzero_ps
#define VFMA _mm256_fmadd_ps
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VMAX _mm256_max_ps
#define VREDUCE_MAX reduce_max_avx2
#define VREDUCE_ADD reduce_add_avx2
#define VEXP2 exp2_avx2
#define VEXP2_CLAMPED exp2_clamped_avx2
#define VKEEP(v) __asm__("" : "+x"(v))
#define SCORE_VECS 2
#define PV_ROWS 2
#define PV_VECS 5
#include "ops/attention_flash.inc"
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

static void scratch_free(flash_scratch *w) {
    free(w->q);
    free(w->s);
    free(w->p);
    free(w->o);
    free(w->m);
    free(w->l);
}

static bool scratch_alloc(const flash_plan *pl, flash_scratch *w) {
    // 64-byte multiples for aligned_alloc; the Q buffer fits either precision.
    size_t q_bytes = sizeof(float) * (size_t)(ROW_CAPACITY * (pl->d + 1));
    w->q = aligned_alloc(64, (q_bytes + 63) / 64 * 64);
    w->s = aligned_alloc(64, sizeof(float) * ROW_CAPACITY * TILE);
    w->p = aligned_alloc(64, sizeof(uint16_t) * ROW_CAPACITY * TILE);
    w->o = aligned_alloc(64, sizeof(float) * (size_t)(ROW_CAPACITY * pl->dpad));
    w->m = aligned_alloc(64, sizeof(float) * ROW_CAPACITY);
    w->l = aligned_alloc(64, sizeof(float) * ROW_CAPACITY);
    return w->q && w->s && w->p && w->o && w->m && w->l;
}

static tensor *attention_flash(const tensor *q, const tensor *k, const tensor *v, int heads,
                               bool causal, bool bf16, tensor *out) {
    flash_plan pl = {.batch = q->shape[0], .nq = q->shape[1], .nk = k->shape[1], .c = q->shape[2],
                     .heads = heads, .causal = causal, .bf16 = bf16};
    pl.d = pl.c / heads;
    bool wide = bf16 || cpu_has_avx512();
    // 8-lane rows on AVX2: d = 40 (the UNet's 64x64 attention) is then not padded to 48.
    pl.dpad = wide ? (pl.d + 15) / 16 * 16 : (pl.d + 7) / 8 * 8;
    pl.dpairs = (pl.d + 1) / 2;
    pl.key_tiles = (pl.nk + TILE - 1) / TILE;
    pl.kt_head = pl.key_tiles * TILE * (bf16 ? pl.dpairs * 2 : pl.d);
    pl.v_in_place = !bf16 && pl.d == pl.dpad;
    pl.vp_head = pl.v_in_place ? 0 : pl.key_tiles * TILE * pl.dpad;
    pl.v_stride = pl.v_in_place ? pl.c : pl.dpad;
    pl.q_scale = (float)(1.0 / sqrt((double)pl.d) * 1.4426950408889634);

    // Packed K and V in tensors, whose large buffers are reused from call to call (tensor.h)
    // instead of being faulted in afresh each time; bf16 values two to a float.
    int64_t per_float = bf16 ? 2 : 1, head_count = pl.batch * heads;
    tensor *kt_buffer = tensor_new2(1, (head_count * pl.kt_head + per_float) / per_float);
    tensor *vp_buffer = pl.v_in_place ? NULL : tensor_new2(1, (head_count * pl.vp_head + per_float) / per_float);
    if (!kt_buffer || (!pl.v_in_place && !vp_buffer)) {
        tensor_free(kt_buffer);
        tensor_free(vp_buffer);
        tensor_free(out);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "attention: out of memory packing K and V (%d heads, %lld keys)",
                 heads, (long long)pl.nk);
        return NULL;
    }
    void *kt = kt_buffer->data, *vp = pl.v_in_place ? v->data : vp_buffer->data;
    int64_t pack_jobs = head_count * pl.key_tiles;
    #pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < pack_jobs; job++)
        pack_key_tile(&pl, k, v, job / pl.key_tiles / heads, job / pl.key_tiles % heads,
                      job % pl.key_tiles, kt, vp);

    int64_t query_blocks = (pl.nq + TILE - 1) / TILE, tasks = head_count * query_blocks;
    int failed = 0;
    #pragma omp parallel
    {
        flash_scratch w;
        bool ready = scratch_alloc(&pl, &w);
        if (!ready) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; task++) {
            if (!ready) continue;
            int64_t head = task / query_blocks;
            if (wide)
                flash_task_avx512(&pl, q, kt, vp, &w, out, head / heads, head % heads,
                                  task % query_blocks * TILE);
            else
                flash_task_avx2(&pl, q, kt, vp, &w, out, head / heads, head % heads,
                                task % query_blocks * TILE);
        }
        scratch_free(&w);
    }
    tensor_free(kt_buffer);
    tensor_free(vp_buffer);
    if (failed) {
        tensor_free(out);
        lcm_fail(LCM_ERR_OUT_OF_MEMORY, "attention: out of memory for the per-thread tiles");
        return NULL;
    }
    return out;
}

// ---- entry points --------------------------------------------------------------------------------

static attention_kernel default_kernel = ATTENTION_AUTO;

// Largest head size for which ATTENTION_AUTO picks the flash kernel in fp32.
#define FLASH_MAX_HEAD_DIM_FP32 96

void attention_set_default_kernel(attention_kernel kernel) { default_kernel = kernel; }

tensor *attention_with_kernel(const tensor *q, const tensor *k, const tensor *v, int heads,
                              bool causal, lcm_precision precision, attention_kernel kernel) {
    if (!q || !k || !v) return NULL;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || heads <= 0 || q->shape[2] % heads ||
        k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] || k->shape[2] != q->shape[2] ||
        v->shape[2] != q->shape[2] || v->shape[1] != k->shape[1] || k->shape[1] == 0) {
        lcm_fail(LCM_ERR_INTERNAL, "attention: incompatible q/k/v shapes for %d heads", heads);
        return NULL;
    }
    if (precision != LCM_PRECISION_FP32 && precision != LCM_PRECISION_BF16) {
        lcm_fail(LCM_ERR_UNSUPPORTED, "attention: precision %d", (int)precision);
        return NULL;
    }
    if (kernel == ATTENTION_AUTO) kernel = default_kernel;
    if (kernel == ATTENTION_AUTO) {
        // fp32: the flash kernel wins at the UNet's small heads (d = 40, 80: its largest attention
        // layers), sgemm tiles at d = 160 and the VAE's d = 512 (`lcm bench --attention`,
        // BENCHMARKS.md). bf16 has only the flash kernel.
        bool small_heads = q->shape[2] / heads <= FLASH_MAX_HEAD_DIM_FP32;
        bool flash = attention_flash_available(precision) &&
                     (precision == LCM_PRECISION_BF16 || small_heads);
        kernel = flash ? ATTENTION_FLASH : ATTENTION_GEMM_TILES;
    }
    if (kernel == ATTENTION_FLASH && !attention_flash_available(precision)) {
        lcm_fail(LCM_ERR_UNSUPPORTED, "attention: this CPU lacks the %s instructions of the flash kernel",
                 precision == LCM_PRECISION_BF16 ? "AVX-512 BF16" : "AVX2/FMA");
        return NULL;
    }
    tensor *out = tensor_new3(q->shape[0], q->shape[1], q->shape[2]);
    if (!out) return NULL;
    if (q->shape[1] == 0) return out;
    if (kernel == ATTENTION_FLASH)
        return attention_flash(q, k, v, heads, causal, precision == LCM_PRECISION_BF16, out);
    return attention_gemm_tiles(q, k, v, heads, causal, out);
}

tensor *attention_ex(const tensor *q, const tensor *k, const tensor *v, int heads, bool causal,
                     lcm_precision precision) {
    return attention_with_kernel(q, k, v, heads, causal, precision, ATTENTION_AUTO);
}

tensor *attention(const tensor *q, const tensor *k, const tensor *v, int heads, bool causal) {
    return attention_ex(q, k, v, heads, causal, LCM_PRECISION_FP32);
}
