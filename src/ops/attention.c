// Multi-head attention, one (batch, head, block of query rows) task at a time, so the score matrix
// held at once is at most ATTENTION_QUERY_BLOCK x Nk per thread instead of heads x Nq x Nk.
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "ops/gemm.h"
#include "ops/ops.h"

#define ATTENTION_QUERY_BLOCK 256

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

tensor *attention(const tensor *q, const tensor *k, const tensor *v, int heads, bool causal) {
    if (!q || !k || !v) return NULL;
    int64_t batch = q->shape[0], nq = q->shape[1], c = q->shape[2], nk = k->shape[1];
    if (c % heads || k->shape[2] != c || v->shape[2] != c || v->shape[1] != nk) {
        lcm_fail(LCM_ERR_INTERNAL, "attention: incompatible q/k/v shapes for %d heads", heads);
        return NULL;
    }
    int64_t d = c / heads;
    float scale = 1.0f / sqrtf((float)d);
    tensor *out = tensor_new3(batch, nq, c);
    if (!out) return NULL;
    int64_t blocks = (nq + ATTENTION_QUERY_BLOCK - 1) / ATTENTION_QUERY_BLOCK;
    int64_t tasks = batch * heads * blocks;
    int failed = 0;
    #pragma omp parallel
    {
        float *scores = malloc(sizeof(float) * ATTENTION_QUERY_BLOCK * (size_t)nk);
        if (!scores) {
            #pragma omp atomic write
            failed = 1;
        }
        #pragma omp for schedule(dynamic)
        for (int64_t task = 0; task < tasks; task++) {
            if (!scores) continue;
            int64_t b = task / (heads * blocks), h = task / blocks % heads, blk = task % blocks;
            int64_t q0 = blk * ATTENTION_QUERY_BLOCK;
            int64_t rows = nq - q0 < ATTENTION_QUERY_BLOCK ? nq - q0 : ATTENTION_QUERY_BLOCK;
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
