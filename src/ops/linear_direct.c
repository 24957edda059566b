// Linear layers with a 12-row x 16-column register tile (AVX-512, or two AVX2 halves:
// ops/fma_tile.h) on weights packed at load; see linear_direct.h.
#include "ops/cpu.h"
#include "ops/linear_direct.h"
#include "ops/fma_tile.h"

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

// Rows and columns of one register tile (ops/fma_tile.h).
#define TILE_ROWS FMA_TILE_ROWS
#define TILE_COLUMNS FMA_TILE_COLUMNS
// Inputs per slice of the sum: a tile's 12 input rows (12 x 512 floats = 24 KiB) stay in the L1
// cache while the tile goes through a group of column blocks, whose weights (4 x 32 KiB per slice)
// stream from the L2 cache. Fewer, longer slices also reload the tile's sums less often.
#define DEPTH_SLICE 512
#define GROUP_BLOCKS FMA_MAX_BLOCKS // one register tile call; row_1x64 covers one group too
// A task: TASK_ROWS rows x up to MAX_TASK_BLOCKS column blocks, slice by slice, group by group.
// Its input rows (96 x 512 floats = 192 KiB per slice) stay in the L2 cache while the groups go
// through them, so wide layers read their input once per task. Tasks are made narrower (down to
// one group) until there are at least MIN_TASKS, for 2 threads to share evenly. None of this
// decides the order of any sum. (A/B builds on the UNet shapes, one thread: tiles going through
// blocks beat blocks going through tiles by 1-5%; 256/384-input slices, 192-row tasks, input rows
// packed into panels and software prefetch of the next group's weights made no clear difference.)
#define TASK_ROWS (8 * TILE_ROWS)
#define MAX_TASK_BLOCKS 32
#define MIN_TASKS 16

struct linear_direct {
    int in, out;
    int blocks;    // output column blocks of TILE_COLUMNS
    float *weight; // [blocks][in][TILE_COLUMNS], zero past `out`
    float *bias;   // [blocks * TILE_COLUMNS], zero past `out` (and all zero without a bias)
    bool borrowed; // weight and bias belong to a packed-weight cache mapping
};

bool linear_direct_available(void) { return cpu_has_avx2_fma(); }

lcm_status linear_direct_new(const float *weight, const float *bias, int in, int out,
                             linear_direct **result) {
    *result = NULL;
    linear_direct *d = calloc(1, sizeof *d);
    if (!d) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing linear weights");
    *d = (linear_direct){.in = in, .out = out, .blocks = (out + TILE_COLUMNS - 1) / TILE_COLUMNS};
    int64_t padded = (int64_t)d->blocks * TILE_COLUMNS;
    size_t weight_bytes = sizeof(float) * (size_t)(padded * in);
    d->weight = aligned_alloc(64, weight_bytes ? (weight_bytes + 63) / 64 * 64 : 64);
    d->bias = aligned_alloc(64, (sizeof(float) * (size_t)padded + 63) / 64 * 64);
    if (!d->weight || !d->bias) {
        linear_direct_free(d);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing linear weights");
    }
    float *dst = d->weight;
    for (int64_t block = 0; block < d->blocks; block++)
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < TILE_COLUMNS; j++) {
                int64_t o = block * TILE_COLUMNS + j;
                *dst++ = o < out ? weight[o * in + i] : 0.0f;
            }
    for (int64_t o = 0; o < padded; o++) d->bias[o] = bias && o < out ? bias[o] : 0.0f;
    *result = d;
    return LCM_OK;
}

void linear_direct_free(linear_direct *d) {
    if (!d) return;
    if (!d->borrowed) {
        free(d->weight);
        free(d->bias);
    }
    free(d);
}

void linear_direct_export(const linear_direct *d, packed_entry *entry) {
    int64_t padded = (int64_t)d->blocks * TILE_COLUMNS;
    *entry = (packed_entry){.family = PACKED_LINEAR_DIRECT, .shape = {d->in, d->out},
                            .blob_count = 2};
    entry->meta = entry->meta_storage;
    entry->blobs[0] = (packed_blob){d->weight, sizeof(float) * (uint64_t)(padded * d->in)};
    entry->blobs[1] = (packed_blob){d->bias, sizeof(float) * (uint64_t)padded};
}

lcm_status linear_direct_import(const packed_entry *entry, linear_direct **out) {
    *out = NULL;
    int in = entry->shape[0], out_features = entry->shape[1];
    int blocks = (out_features + TILE_COLUMNS - 1) / TILE_COLUMNS;
    uint64_t padded = (uint64_t)blocks * TILE_COLUMNS;
    if (entry->family != PACKED_LINEAR_DIRECT || entry->blob_count != 2 || in < 1 || out_features < 1 ||
        entry->blobs[0].bytes != sizeof(float) * padded * (uint64_t)in ||
        entry->blobs[1].bytes != sizeof(float) * padded || (uintptr_t)entry->blobs[0].data % 64 ||
        (uintptr_t)entry->blobs[1].data % 64)
        return lcm_fail(LCM_ERR_FORMAT, "linear entry does not match the layer");
    linear_direct *d = malloc(sizeof *d);
    if (!d) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    *d = (linear_direct){.in = in, .out = out_features, .blocks = blocks, .borrowed = true,
                         .weight = (float *)entry->blobs[0].data, .bias = (float *)entry->blobs[1].data};
    *out = d;
    return LCM_OK;
}

// c[r][b][0..15] = start[r][b][0..15] + sum over i in [k0, k1) of rows[r][i] *
// weight[b * block_stride + i * 16 + 0..15], the terms added one by one in order of i, for the 12
// rows r of the tile and nb <= 4 column blocks b (block b's columns 16 b floats further along a
// row). `start` rows are start_stride apart (0: one row for all, the bias), `c` rows ldc apart;
// start may be c. One implementation per instruction set, the same bits from each
// (ops/fma_tile.h).
typedef void linear_tile_fn(const float *const *rows, int64_t k0, int64_t k1, const float *weight,
                            int64_t block_stride, int nb, const float *start, int64_t start_stride,
                            float *c, int64_t ldc);

__attribute__((target("avx2,fma"))) static void
tile_avx2(const float *const *rows, int64_t k0, int64_t k1, const float *weight, int64_t block_stride,
          int nb, const float *start, int64_t start_stride, float *c, int64_t ldc) {
    for (int b = 0; b < nb; b++)
        for (int r0 = 0; r0 < TILE_ROWS; r0 += FMA_HALF_ROWS) {
            fma_half_tile sums;
            fma_half_load(&sums, start + r0 * start_stride + b * TILE_COLUMNS, start_stride);
            const float *a[FMA_HALF_ROWS];
            for (int r = 0; r < FMA_HALF_ROWS; r++) a[r] = rows[r0 + r] + k0;
            fma_half_add(&sums, a, weight + b * block_stride + k0 * TILE_COLUMNS, k1 - k0);
            fma_half_store(&sums, c + r0 * ldc + b * TILE_COLUMNS, ldc);
        }
}

// tile_avx512 for a constant number of blocks.
__attribute__((target(FMA_AVX512), always_inline)) static inline void
tile_avx512_blocks(const int nb, const float *const *rows, int64_t k0, int64_t k1, const float *weight,
                   int64_t block_stride, const float *start, int64_t start_stride, float *c, int64_t ldc) {
    const int pass_rows = fma_wide_rows(nb);
    for (int r0 = 0; r0 < TILE_ROWS; r0 += pass_rows) {
        fma_wide_tile sums;
        fma_wide_load(&sums, pass_rows, nb, start + r0 * start_stride, start_stride, TILE_COLUMNS);
        const float *a[TILE_ROWS];
        for (int r = 0; r < pass_rows; r++) a[r] = rows[r0 + r] + k0;
        fma_wide_add(&sums, pass_rows, nb, a, weight + k0 * TILE_COLUMNS, block_stride, k1 - k0);
        fma_wide_store(&sums, pass_rows, nb, c + r0 * ldc, ldc, TILE_COLUMNS);
    }
}

__attribute__((target(FMA_AVX512))) static void
tile_avx512(const float *const *rows, int64_t k0, int64_t k1, const float *weight, int64_t block_stride,
            int nb, const float *start, int64_t start_stride, float *c, int64_t ldc) {
    switch (nb) {
    case 1: tile_avx512_blocks(1, rows, k0, k1, weight, block_stride, start, start_stride, c, ldc); break;
    case 2: tile_avx512_blocks(2, rows, k0, k1, weight, block_stride, start, start_stride, c, ldc); break;
    case 3: tile_avx512_blocks(3, rows, k0, k1, weight, block_stride, start, start_stride, c, ldc); break;
    default: tile_avx512_blocks(4, rows, k0, k1, weight, block_stride, start, start_stride, c, ldc); break;
    }
}

// One slice [k0, k1) of the sums of a tile: rows first .. first + count - 1 of x, column blocks
// block0 .. block0 + nb - 1. The first slice starts from the bias, later ones from what y holds. A
// tile that is cut by the last row or the last column goes through a 12 x 64 scratch copy; its
// missing rows repeat row `first` and their results are dropped.
static void tile_slice(linear_tile_fn *tile, const linear_direct *d, const float *x, int64_t first,
                       int count, int64_t block0, int nb, int64_t k0, int64_t k1, float *y) {
    const float *rows[TILE_ROWS];
    for (int r = 0; r < TILE_ROWS; r++) rows[r] = x + (first + (r < count ? r : 0)) * d->in;
    const int64_t block_stride = (int64_t)d->in * TILE_COLUMNS;
    const float *weight = d->weight + block0 * block_stride;
    int64_t column0 = block0 * TILE_COLUMNS;
    int columns = d->out - column0 < nb * TILE_COLUMNS ? (int)(d->out - column0) : nb * TILE_COLUMNS;
    float *c = y + first * d->out + column0;
    const float *bias = d->bias + column0;
    if (count == TILE_ROWS && columns == nb * TILE_COLUMNS) {
        if (k0 == 0) tile(rows, k0, k1, weight, block_stride, nb, bias, 0, c, d->out);
        else tile(rows, k0, k1, weight, block_stride, nb, c, d->out, c, d->out);
        return;
    }
    enum { SCRATCH_COLUMNS = 4 * TILE_COLUMNS };
    _Static_assert(SCRATCH_COLUMNS == FMA_MAX_BLOCKS * FMA_TILE_COLUMNS, "a group fits the scratch rows");
    float scratch[TILE_ROWS * SCRATCH_COLUMNS];
    for (int r = 0; r < TILE_ROWS; r++)
        for (int j = 0; j < nb * TILE_COLUMNS; j++)
            scratch[r * SCRATCH_COLUMNS + j] = k0 > 0 && r < count && j < columns ? c[r * d->out + j] : bias[j];
    tile(rows, k0, k1, weight, block_stride, nb, scratch, SCRATCH_COLUMNS, scratch, SCRATCH_COLUMNS);
    for (int r = 0; r < count; r++)
        memcpy(c + r * d->out, scratch + r * SCRATCH_COLUMNS, sizeof(float) * (size_t)columns);
}

// The same sums for one row and GROUP_BLOCKS = 4 column blocks (64 columns, all inside the layer)
// at once: a 12-row tile holding 1 or 2 rows (the time embedding, a batch of 2 one-row inputs)
// would waste most of its multiply-adds, and one block alone has too few independent sums to hide
// the latency of each. The same terms in the same order, so the same bits as the 12-row tile.
__attribute__((target("avx2,fma"))) static void
row_1x64(const linear_direct *d, const float *x_row, int64_t block, int64_t k0, int64_t k1,
         float *y_row) {
    int64_t column0 = block * TILE_COLUMNS, block_size = (int64_t)d->in * TILE_COLUMNS;
    const float *start = k0 == 0 ? d->bias + column0 : y_row + column0;
    __m256 s[8];
    for (int j = 0; j < 8; j++) s[j] = _mm256_loadu_ps(start + 8 * j);
    const float *w = d->weight + block * block_size + k0 * TILE_COLUMNS;
    for (int64_t i = k0; i < k1; i++, w += TILE_COLUMNS) {
        __m256 x = _mm256_broadcast_ss(x_row + i);
        s[0] = _mm256_fmadd_ps(x, _mm256_load_ps(w), s[0]);
        s[1] = _mm256_fmadd_ps(x, _mm256_load_ps(w + 8), s[1]);
        s[2] = _mm256_fmadd_ps(x, _mm256_load_ps(w + block_size), s[2]);
        s[3] = _mm256_fmadd_ps(x, _mm256_load_ps(w + block_size + 8), s[3]);
        s[4] = _mm256_fmadd_ps(x, _mm256_load_ps(w + 2 * block_size), s[4]);
        s[5] = _mm256_fmadd_ps(x, _mm256_load_ps(w + 2 * block_size + 8), s[5]);
        s[6] = _mm256_fmadd_ps(x, _mm256_load_ps(w + 3 * block_size), s[6]);
        s[7] = _mm256_fmadd_ps(x, _mm256_load_ps(w + 3 * block_size + 8), s[7]);
    }
    for (int j = 0; j < 8; j++) _mm256_storeu_ps(y_row + column0 + 8 * j, s[j]);
}

void linear_direct_run(const linear_direct *d, const float *x, int64_t rows, float *y) {
    if (rows <= 0 || d->out <= 0) return;
    int64_t chunks = (rows + TASK_ROWS - 1) / TASK_ROWS;
    int64_t task_blocks = d->blocks * chunks / MIN_TASKS / GROUP_BLOCKS * GROUP_BLOCKS;
    if (task_blocks < GROUP_BLOCKS) task_blocks = GROUP_BLOCKS;
    if (task_blocks > MAX_TASK_BLOCKS) task_blocks = MAX_TASK_BLOCKS;
    int64_t column_tasks = (d->blocks + task_blocks - 1) / task_blocks;
    int64_t tasks = chunks * column_tasks;
    linear_tile_fn *tile = cpu_has_avx512() ? tile_avx512 : tile_avx2;
    // Tasks in (row chunk, columns) order: a thread's consecutive tasks share their rows.
    #pragma omp parallel for schedule(static) if (!omp_in_parallel() && tasks > 1)
    for (int64_t task = 0; task < tasks; task++) {
        int64_t chunk = task / column_tasks, columns = task % column_tasks;
        int64_t first = chunk * TASK_ROWS;
        int64_t count = rows - first < TASK_ROWS ? rows - first : TASK_ROWS;
        int64_t task_block0 = columns * task_blocks;
        int64_t task_block1 = task_block0 + task_blocks < d->blocks ? task_block0 + task_blocks : d->blocks;
        // At least one slice, so that a layer with no inputs still writes its bias.
        for (int64_t k0 = 0; k0 == 0 || k0 < d->in; k0 += DEPTH_SLICE) {
            int64_t k1 = k0 + DEPTH_SLICE < d->in ? k0 + DEPTH_SLICE : d->in;
            for (int64_t block0 = task_block0; block0 < task_block1; block0 += GROUP_BLOCKS) {
                int64_t block1 = block0 + GROUP_BLOCKS < task_block1 ? block0 + GROUP_BLOCKS : task_block1;
                bool whole_group = block1 - block0 == GROUP_BLOCKS && block1 * TILE_COLUMNS <= d->out;
                for (int64_t t = 0; t < count; t += TILE_ROWS) {
                    int tile_rows = count - t < TILE_ROWS ? (int)(count - t) : TILE_ROWS;
                    if (tile_rows <= 2 && whole_group) {
                        for (int64_t r = first + t; r < first + t + tile_rows; r++)
                            row_1x64(d, x + r * d->in, block0, k0, k1, y + r * d->out);
                        continue;
                    }
                    tile_slice(tile, d, x, first + t, tile_rows, block0, (int)(block1 - block0), k0, k1, y);
                }
            }
        }
    }
}
