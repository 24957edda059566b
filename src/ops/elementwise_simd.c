#include "ops/elementwise_simd.h"

#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

#include "ops/cpu.h"

#define AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))

// e^x: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 Taylor polynomial, 2^n by exponent
// bits. Inputs are clamped to [-87, 88] so 2^n stays a normal float.
AVX512 static inline __m512 exp_avx512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

AVX512 static void silu_avx512(float *x, int64_t count) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_storeu_ps(x + i, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
    if (i < count) {
        __mmask16 m = (__mmask16)((1u << (count - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
}

// erf(x) = sign(x) (1 - (a1 t + ... + a5 t^5) e^(-x^2)), t = 1 / (1 + p |x|).
AVX512 static inline __m512 erf_avx512(__m512 x) {
    __m512 ax = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(ax, _mm512_set1_ps(0.3275911f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(1.061405429f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
    p = _mm512_mul_ps(p, t);
    __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(ax, ax)));
    __m512 y = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
    // copy the sign of x
    __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
    return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

AVX512 static inline __m512 gelu_mul_vector(__m512 h, __m512 g) {
    __m512 cdf = _mm512_fmadd_ps(erf_avx512(_mm512_mul_ps(g, _mm512_set1_ps(0.70710678118654752f))),
                                 _mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
    return _mm512_mul_ps(h, _mm512_mul_ps(g, cdf));
}

AVX512 static void gelu_mul_avx512(const float *hidden, const float *gate, float *out,
                                   int64_t count) {
    int64_t i = 0;
    for (; i + 16 <= count; i += 16)
        _mm512_storeu_ps(out + i, gelu_mul_vector(_mm512_loadu_ps(hidden + i),
                                                  _mm512_loadu_ps(gate + i)));
    if (i < count) {
        __mmask16 m = (__mmask16)((1u << (count - i)) - 1u);
        _mm512_mask_storeu_ps(out + i, m,
                              gelu_mul_vector(_mm512_maskz_loadu_ps(m, hidden + i),
                                              _mm512_maskz_loadu_ps(m, gate + i)));
    }
}

void silu_span(float *x, int64_t count) {
    if (cpu_has_avx512()) {
        silu_avx512(x, count);
        return;
    }
    for (int64_t i = 0; i < count; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
}

void gelu_mul_span(const float *hidden, const float *gate, float *out, int64_t count) {
    if (cpu_has_avx512()) {
        gelu_mul_avx512(hidden, gate, out, count);
        return;
    }
    for (int64_t i = 0; i < count; i++)
        out[i] = hidden[i] * (0.5f * gate[i] * (1.0f + erff(gate[i] * (float)M_SQRT1_2)));
}
