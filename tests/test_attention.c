// The attention kernels (src/ops/attention.h) against a plain double-precision reference.
//
// Shapes are chosen to hit the kernels' edges: query and key counts that are not multiples of the
// 64-row/64-key tiles (and smaller than one tile), head sizes that are not multiples of 16 (or of 2,
// for the bf16 pairs), several heads and batches, causal masks across tile boundaries, and the
// UNet's cross-attention (77 keys). fp32 kernels must agree to 1e-5 of the largest output; bf16
// (inputs rounded to 8 mantissa bits) to 2e-2. Each comparison prints its max abs diff.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/attention.h"
#include "ops/ops.h"
#include "testutil.h"

static tensor *random_tokens(int64_t b, int64_t n, int64_t c, float range) {
    tensor *t = tensor_new3(b, n, c);
    if (!t) exit(2);
    for (int64_t i = 0; i < b * n * c; i++) t->data[i] = test_uniform(-range, range);
    return t;
}

// softmax(q kᵀ / sqrt(d)) v per (batch, head), in double.
static float *reference(const tensor *q, const tensor *k, const tensor *v, int heads, bool causal) {
    int64_t batch = q->shape[0], nq = q->shape[1], c = q->shape[2], nk = k->shape[1], d = c / heads;
    float *out = calloc((size_t)(batch * nq * c), sizeof(float));
    double *w = malloc(sizeof(double) * (size_t)nk);
    if (!out || !w) exit(2);
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < nq; i++) {
                const float *qi = q->data + (b * nq + i) * c + h * d;
                int64_t visible = causal && i + 1 < nk ? i + 1 : nk;
                double max = -INFINITY, sum = 0;
                for (int64_t j = 0; j < visible; j++) {
                    const float *kj = k->data + (b * nk + j) * c + h * d;
                    double dot = 0;
                    for (int64_t e = 0; e < d; e++) dot += (double)qi[e] * kj[e];
                    w[j] = dot / sqrt((double)d);
                    if (w[j] > max) max = w[j];
                }
                for (int64_t j = 0; j < visible; j++) sum += (w[j] = exp(w[j] - max));
                for (int64_t e = 0; e < d; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < visible; j++) acc += w[j] * v->data[(b * nk + j) * c + h * d + e];
                    out[(b * nq + i) * c + h * d + e] = (float)(acc / sum);
                }
            }
    free(w);
    return out;
}

typedef struct shape_case {
    int64_t batch, nq, nk;
    int heads, d;
    bool causal;
    float range; // inputs uniform in [-range, range): larger values give peakier softmaxes
} shape_case;

static void check_case(const shape_case *sc) {
    int64_t c = (int64_t)sc->heads * sc->d;
    tensor *q = random_tokens(sc->batch, sc->nq, c, sc->range);
    tensor *k = random_tokens(sc->batch, sc->nk, c, sc->range);
    tensor *v = random_tokens(sc->batch, sc->nk, c, 1.0f);
    float *want = reference(q, k, v, sc->heads, sc->causal);
    size_t n = (size_t)(sc->batch * sc->nq * c);
    double scale = test_max_abs(want, n);
    char what[160];

    static const struct {
        attention_kernel kernel;
        lcm_precision precision;
        const char *name;
        double tol;
    } variants[] = {
        {ATTENTION_GEMM_TILES, LCM_PRECISION_FP32, "gemm-tiles fp32", 1e-5},
        {ATTENTION_FLASH, LCM_PRECISION_FP32, "flash fp32", 1e-5},
        {ATTENTION_FLASH, LCM_PRECISION_BF16, "flash bf16", 2e-2},
        {ATTENTION_AUTO, LCM_PRECISION_FP32, "auto fp32", 1e-5},
    };
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        snprintf(what, sizeof what, "%s B=%lld Nq=%lld Nk=%lld heads=%d d=%d%s", variants[i].name,
                 (long long)sc->batch, (long long)sc->nq, (long long)sc->nk, sc->heads, sc->d,
                 sc->causal ? " causal" : "");
        if (variants[i].kernel == ATTENTION_FLASH && !attention_flash_available(variants[i].precision)) {
            tensor *none = attention_with_kernel(q, k, v, sc->heads, sc->causal, variants[i].precision,
                                                 variants[i].kernel);
            CHECK(!none && strstr(lcm_last_error(), "instructions"), "%s: refused on this CPU: %s", what,
                  lcm_last_error());
            fprintf(stderr, "%s: skipped (CPU lacks the instructions)\n", what);
            continue;
        }
        tensor *got = attention_with_kernel(q, k, v, sc->heads, sc->causal, variants[i].precision,
                                            variants[i].kernel);
        CHECK(got != NULL, "%s: %s", what, lcm_last_error());
        if (got) {
            double worst = 0;
            for (size_t e = 0; e < n; e++) worst = fmax(worst, fabs((double)got->data[e] - want[e]));
            fprintf(stderr, "%s: max abs diff %.3g (scale %.3g)\n", what, worst, scale);
            CHECK(test_close(what, got->data, want, n, variants[i].tol * scale, 0), "%s", what);
        }
        tensor_free(got);
    }
    free(want);
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
}

// attention() is the fp32 entry point and must equal attention_ex(..., FP32) exactly.
static void check_entry_points(void) {
    tensor *q = random_tokens(1, 70, 48, 1.0f), *k = random_tokens(1, 33, 48, 1.0f),
           *v = random_tokens(1, 33, 48, 1.0f);
    tensor *a = attention(q, k, v, 2, false), *b = attention_ex(q, k, v, 2, false, LCM_PRECISION_FP32);
    CHECK(a && b && !memcmp(a->data, b->data, sizeof(float) * 70 * 48), "attention() == attention_ex(fp32)");
    tensor_free(a);
    tensor_free(b);
    // Bad shapes are an error, not a crash; a NULL input propagates.
    tensor *bad = attention(q, k, v, 5, false);
    CHECK(!bad && strstr(lcm_last_error(), "attention"), "48 channels over 5 heads rejected: %s",
          lcm_last_error());
    CHECK(attention(NULL, k, v, 2, false) == NULL, "NULL input gives NULL");
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
}

// Each batch row is computed on its own: a batch-2 call equals two batch-1 calls bit for bit.
static void check_batch_rows(void) {
    int64_t nq = 35, nk = 35, c = 64;
    tensor *q = random_tokens(2, nq, c, 2.0f), *k = random_tokens(2, nk, c, 2.0f),
           *v = random_tokens(2, nk, c, 1.0f);
    tensor *both = attention(q, k, v, 4, false);
    for (int b = 0; b < 2 && both; b++) {
        tensor *qb = tensor_from(3, (int64_t[]){1, nq, c}, q->data + b * nq * c);
        tensor *kb = tensor_from(3, (int64_t[]){1, nk, c}, k->data + b * nk * c);
        tensor *vb = tensor_from(3, (int64_t[]){1, nk, c}, v->data + b * nk * c);
        tensor *one = attention(qb, kb, vb, 4, false);
        CHECK(one && !memcmp(one->data, both->data + b * nq * c, sizeof(float) * (size_t)(nq * c)),
              "batch row %d equals a batch-1 call", b);
        tensor_free(one);
        tensor_free(qb);
        tensor_free(kb);
        tensor_free(vb);
    }
    CHECK(both != NULL, "batch-2 attention");
    tensor_free(both);
    tensor_free(q);
    tensor_free(k);
    tensor_free(v);
}

int main(void) {
    static const shape_case cases[] = {
        {1, 1, 1, 1, 1, false, 1.0f},
        {1, 5, 3, 1, 7, false, 2.0f},
        {2, 37, 70, 3, 13, false, 2.0f},   // below and across one tile, odd d
        {1, 130, 77, 2, 40, false, 2.0f},  // cross-attention keys, UNet's d = 40
        {2, 77, 77, 2, 24, true, 2.0f},    // CLIP-style causal, crossing a key tile
        {1, 200, 200, 1, 33, true, 3.0f},  // causal over several tiles, peaky softmax
        {1, 129, 65, 2, 80, false, 1.0f},  // d = 80: five vectors of the output row
        {1, 66, 130, 1, 161, false, 1.0f}, // d > 64: several output column chunks, odd
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);
    check_entry_points();
    check_batch_rows();
    return test_finish();
}
