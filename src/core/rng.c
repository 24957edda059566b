// torch-compatible CPU normal generator: torch.manual_seed(seed); torch.randn(shape), bit for bit.
//
// Diffusers draws the initial latents (and the LCM scheduler's per-step noise) with torch.randn on
// a CPU generator, so reproducing an image from its seed means reproducing torch's exact stream.
// What torch 1.13 does (CPUGeneratorImpl, DistributionsHelper.h, cpu/DistributionTemplates.h):
//
//  1. The engine is the reference mt19937, seeded with init_genrand(seed & 0xffffffff): manual_seed
//     takes 64 bits but the engine keeps only the low 32 (seed 2^32+5 == seed 5). Seeding also
//     drops the cached normal of step 3.
//
//  2. Tensors with numel >= 16 (every latent and noise tensor) take the vectorised path:
//     - First ALL numel uniforms are drawn into the output, in order: u = (u32 & 0xFFFFFF) * 2^-24.
//     - Then each full chunk of 16 is transformed in place by Box-Muller, pairing slot j with
//       slot j+8 (j = 0..7): u1 = 1 - d[j] (so log never sees 0), u2 = d[j+8],
//       r = sqrt(-2 log u1), th = 2pi * u2, d[j] = r cos th, d[j+8] = r sin th. All float32.
//     - If numel % 16 != 0, 16 NEW uniforms are drawn into the LAST 16 slots (overwriting values
//       that were already transformed) and that window is transformed again. So the stream
//       advances by numel + 16 draws, and the tail values do not depend on the first pass.
//     - The stored value is fma(n, std, mean) with std = 1, mean = 0: n itself, except that -0
//       becomes +0.
//
//  3. Tensors with numel < 16 take the scalar path, one double normal per element (cast to
//     float): u1, u2 = two double uniforms, each from two u32 draws
//     ((hi << 32 | lo) & (2^53 - 1)) * 2^-53; r = sqrt(-2 log(1 - u2)), th = 2pi * u1; returns
//     r cos th and CACHES r sin th in the generator. The next scalar-path value, even in a later
//     randn call, is the cached one. Only this path reads or writes the cache.
//
//  4. The log/sin/cos of step 2 are not libm's. On x86 CPUs with AVX2 (what the reference
//     fixtures and most machines running torch 1.13 use) the kernel is normal_fill_16_AVX2, which
//     calls avx_mathfun.h's log256_ps and sincos256_ps: Julien Pommier's vectorisation of the
//     Cephes single-precision logf/sinf/cosf polynomials. torch builds those kernels with GCC,
//     -mfma and the default -ffp-contract=fast, so every multiply whose only use is an add was
//     fused into an FMA; cephes_logf and cephes_sincosf below reproduce the algorithm with fmaf at
//     exactly those places. Measured on the golden draws: this is bit-identical on every value;
//     correctly rounded libm matches only ~83% of values (max error ~5e-7), and Cephes without
//     the fusions ~99%. (torch builds whose kernel dispatch lands elsewhere use std::log/cos/sin
//     on floats instead, and their streams differ from this one in the last bits.)
//
// Compiler contraction: the code is written so that a compiler that contracts a*b+c on its own
// (clang's default, GCC in GNU mode) cannot change a result: the fused operations are explicit
// fmaf calls, and the remaining products either feed no addition or are exact.
#include "core/rng.h"

#include <float.h>
#include <math.h>
#include <string.h>

// ---------------------------------------------------------------------------------------------
// mt19937 (Matsumoto & Nishimura's reference generator; torch's MT19937RNGEngine.h is the same)

enum { MT_N = LCM_RNG_MT_WORDS, MT_M = 397 };
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER_BIT 0x80000000u
#define MT_LOWER_BITS 0x7fffffffu

void lcm_rng_seed(lcm_rng *rng, uint64_t seed) {
    rng->mt_state[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t i = 1; i < MT_N; i++) {
        uint32_t prev = rng->mt_state[i - 1];
        rng->mt_state[i] = 1812433253u * (prev ^ (prev >> 30)) + i;
    }
    rng->mt_next = MT_N; // the first draw regenerates the whole block
    rng->has_cached_normal = false;
    rng->cached_normal = 0.0;
}

// The "twist": refreshes all 624 words. Indices wrap, so words past N-M read already refreshed
// ones, exactly as the reference implementation's three loops do.
static void mt_regenerate(lcm_rng *rng) {
    uint32_t *s = rng->mt_state;
    for (int i = 0; i < MT_N; i++) {
        uint32_t y = (s[i] & MT_UPPER_BIT) | (s[(i + 1) % MT_N] & MT_LOWER_BITS);
        s[i] = s[(i + MT_M) % MT_N] ^ (y >> 1) ^ ((y & 1u) ? MT_MATRIX_A : 0u);
    }
    rng->mt_next = 0;
}

uint32_t lcm_rng_next_u32(lcm_rng *rng) {
    if (rng->mt_next >= MT_N) mt_regenerate(rng);
    uint32_t y = rng->mt_state[rng->mt_next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

float lcm_rng_uniform_f32(lcm_rng *rng) {
    return (float)(lcm_rng_next_u32(rng) & 0xffffffu) * 0x1p-24f; // exact: 24 bits fit a float
}

double lcm_rng_uniform_f64(lcm_rng *rng) {
    uint64_t hi = lcm_rng_next_u32(rng); // the first draw is the high word
    uint64_t lo = lcm_rng_next_u32(rng);
    return (double)(((hi << 32) | lo) & ((UINT64_C(1) << 53) - 1)) * 0x1p-53;
}

// ---------------------------------------------------------------------------------------------
// Cephes single-precision log and sincos, as avx_mathfun.h evaluates them (see note 4 on top).

static float bits_to_float(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint32_t float_to_bits(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

#define SIGN_BIT 0x80000000u

// Natural log for x > 0. Writes x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
// log x = e*ln2 + f - f^2/2 + f^3 P(f) with f = m - 1, ln2 split in two parts (q2 exact in
// products with small integers, q1 the remainder). The kernel only ever passes values in (0, 1].
static float cephes_logf(float x) {
    static const float sqrt_half = 0.707106781186547524f;
    static const float p[9] = {7.0376836292e-2f,  -1.1514610310e-1f, 1.1676998740e-1f,
                               -1.2420140846e-1f, 1.4249322787e-1f,  -1.6668057665e-1f,
                               2.0000714765e-1f,  -2.4999993993e-1f, 3.3333331174e-1f};
    static const float ln2_low = -2.12194440e-4f; // ln2 = ln2_high + ln2_low
    static const float ln2_high = 0.693359375f;

    if (x < FLT_MIN) x = FLT_MIN; // the kernel clamps subnormals away
    uint32_t bits = float_to_bits(x);
    // Mantissa with the exponent of 0.5, so m in [0.5, 1) and x = m * 2^(biased - 126).
    float m = bits_to_float((bits & ~0x7f800000u) | float_to_bits(0.5f));
    float exponent = (float)((int32_t)(bits >> 23) - 126);
    float f;
    if (m < sqrt_half) { // use 2m in [sqrt(1/2), 1) instead; f = 2m - 1 evaluated as (m - 1) + m
        exponent = exponent - 1.0f;
        f = (m - 1.0f) + m;
    } else {
        f = m - 1.0f;
    }

    float f2 = f * f;
    float poly = p[0];
    for (int i = 1; i < 9; i++) poly = fmaf(poly, f, p[i]); // Horner, fused
    poly = poly * f;
    float exponent_low = exponent * ln2_low;
    float y = fmaf(poly, f2, exponent_low); // f^3 P(f) + e*ln2_low, fused
    float half_f2 = f2 * 0.5f;              // exact
    y = y - half_f2;
    float exponent_high = exponent * ln2_high; // exact
    float result = f + y;
    return result + exponent_high;
}

// sin and cos of x for 0 <= |x| < 2^24 (the kernel passes [0, 2pi)). Reduces x by the nearest
// even multiple k of pi/4 (Cody-Waite, pi/4 in three parts), evaluates the sine and cosine
// polynomials on the remainder and picks/negates them by the octant.
static void cephes_sincosf(float x, float *sin_out, float *cos_out) {
    static const float four_over_pi = 1.27323954473516f;
    static const float pi4_a = 0.78515625f; // pi/4 = pi4_a + pi4_b + pi4_c
    static const float pi4_b = 2.4187564849853515625e-4f;
    static const float pi4_c = 3.77489497744594108e-8f;
    static const float sin_p[3] = {-1.9515295891e-4f, 8.3321608736e-3f, -1.6666654611e-1f};
    static const float cos_p[3] = {2.443315711809948e-5f, -1.388731625493765e-3f,
                                   4.166664568298827e-2f};

    uint32_t sin_sign = float_to_bits(x) & SIGN_BIT;
    x = fabsf(x);
    int octant = (int)(x * four_over_pi); // truncation, as cvttps
    octant = (octant + 1) & ~1;           // round up to even: remainder in [-pi/4, pi/4]
    float k = (float)octant;
    x = fmaf(k, -pi4_a, x); // each product fused with its subtraction, as GCC did
    x = fmaf(k, -pi4_b, x);
    x = fmaf(k, -pi4_c, x);

    if (octant & 4) sin_sign ^= SIGN_BIT;
    uint32_t cos_sign = ((octant - 2) & 4) ? 0u : SIGN_BIT;
    bool swapped = (octant & 2) != 0; // octants 2 and 6: sin and cos trade polynomials

    float z = x * x;
    // cos(r) = 1 - r^2/2 + r^4 C(r^2)
    float cos_poly = fmaf(cos_p[0], z, cos_p[1]);
    cos_poly = fmaf(cos_poly, z, cos_p[2]);
    cos_poly = cos_poly * z;
    float half_z = z * 0.5f; // exact
    cos_poly = fmaf(cos_poly, z, -half_z);
    cos_poly = cos_poly + 1.0f;
    // sin(r) = r + r^3 S(r^2)
    float sin_poly = fmaf(sin_p[0], z, sin_p[1]);
    sin_poly = fmaf(sin_poly, z, sin_p[2]);
    sin_poly = sin_poly * z;
    sin_poly = fmaf(sin_poly, x, x);

    float sin_abs = swapped ? cos_poly : sin_poly;
    float cos_abs = swapped ? sin_poly : cos_poly;
    *sin_out = bits_to_float(float_to_bits(sin_abs) ^ sin_sign);
    *cos_out = bits_to_float(float_to_bits(cos_abs) ^ cos_sign);
}

// ---------------------------------------------------------------------------------------------
// float32 randn

// float(2*pi) as torch's kernel rounds the double constant.
static const float TWO_PI_F = (float)(2.0 * 3.14159265358979323846);

// Box-Muller over one chunk of 16 uniforms in place: slot j pairs with slot j+8.
static void box_muller_16(float *d) {
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j]; // [0, 1) -> (0, 1] for the log
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float theta = TWO_PI_F * u2;
        float sin_theta, cos_theta;
        cephes_sincosf(theta, &sin_theta, &cos_theta);
        float n1 = radius * cos_theta;
        float n2 = radius * sin_theta;
        d[j] = n1 + 0.0f; // torch stores fma(n, std = 1, mean = 0): -0 becomes +0
        d[j + 8] = n2 + 0.0f;
    }
}

// One value of torch's scalar (double) normal_distribution, with its cached second value.
static double scalar_normal(lcm_rng *rng) {
    if (rng->has_cached_normal) {
        rng->has_cached_normal = false;
        return rng->cached_normal + 0.0; // (ret * std + mean) like the fresh value
    }
    double u1 = lcm_rng_uniform_f64(rng);
    double u2 = lcm_rng_uniform_f64(rng);
    double radius = sqrt(-2.0 * log(1.0 - u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    rng->cached_normal = radius * sin(theta);
    rng->has_cached_normal = true;
    double n = radius * cos(theta);
    return n + 0.0;
}

void lcm_rng_randn(lcm_rng *rng, float *out, size_t numel) {
    if (numel < 16) {
        for (size_t i = 0; i < numel; i++) out[i] = (float)scalar_normal(rng);
        return;
    }
    for (size_t i = 0; i < numel; i++) out[i] = lcm_rng_uniform_f32(rng);
    for (size_t i = 0; i + 16 <= numel; i += 16) box_muller_16(out + i);
    if (numel % 16 != 0) {
        float *tail = out + numel - 16; // overlaps the last full chunk: redrawn, not reused
        for (int i = 0; i < 16; i++) tail[i] = lcm_rng_uniform_f32(rng);
        box_muller_16(tail);
    }
}

// ---------------------------------------------------------------------------------------------
// float64 randn: the same structure with double uniforms and libm (torch's normal_fill<double>).

static void box_muller_16_f64(double *d) {
    for (int j = 0; j < 8; j++) {
        double u1 = 1.0 - d[j];
        double u2 = d[j + 8];
        double radius = sqrt(-2.0 * log(u1));
        double theta = 2.0 * 3.14159265358979323846 * u2;
        double n1 = radius * cos(theta);
        double n2 = radius * sin(theta);
        d[j] = n1 + 0.0;
        d[j + 8] = n2 + 0.0;
    }
}

void lcm_rng_randn_f64(lcm_rng *rng, double *out, size_t numel) {
    if (numel < 16) {
        for (size_t i = 0; i < numel; i++) out[i] = scalar_normal(rng);
        return;
    }
    for (size_t i = 0; i < numel; i++) out[i] = lcm_rng_uniform_f64(rng);
    for (size_t i = 0; i + 16 <= numel; i += 16) box_muller_16_f64(out + i);
    if (numel % 16 != 0) {
        double *tail = out + numel - 16;
        for (int i = 0; i < 16; i++) tail[i] = lcm_rng_uniform_f64(rng);
        box_muller_16_f64(tail);
    }
}
