// A CPU random generator that reproduces PyTorch's bit for bit.
//
// `lcm_rng_seed(rng, s)` followed by `lcm_rng_randn(rng, out, n)` gives exactly the float32
// values of `torch.manual_seed(s); torch.randn(n)` (torch 1.13, CPU, AVX2 kernel), so the same seed
// gives the same latents, hence the same image, as diffusers. Successive calls continue the stream
// the way successive torch.randn calls on one generator do. See rng.c for the algorithm and its
// quirks.
//
// The generator is a plain value: caller-allocated, no heap, copyable (a copy forks the stream).
// It is not thread-safe; give each thread its own or serialise the calls.
#ifndef LCM_CORE_RNG_H
#define LCM_CORE_RNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LCM_RNG_MT_WORDS 624

typedef struct lcm_rng {
    uint32_t mt_state[LCM_RNG_MT_WORDS]; // mt19937 state words
    uint32_t mt_next;                    // index of the next state word to temper; 624 = regenerate
    bool has_cached_normal;              // the small-tensor path caches the second Box-Muller value
    double cached_normal;
} lcm_rng;

// == torch.manual_seed(seed): mt19937 seeded with the low 32 bits; also drops the cached normal.
void lcm_rng_seed(lcm_rng *rng, uint64_t seed);

// == torch.randn(numel) in float32: fills out[0..numel) and advances the generator.
void lcm_rng_randn(lcm_rng *rng, float *out, size_t numel);

// == torch.randn(numel, dtype=torch.float64) (a different algorithm path; the pipelines use the
// float32 one). Exactness relies on the C library's double log/sin/cos, as torch's does.
void lcm_rng_randn_f64(lcm_rng *rng, double *out, size_t numel);

// The next raw mt19937 output (one step of the stream).
uint32_t lcm_rng_next_u32(lcm_rng *rng);

// torch's float32 uniform (one u32 draw, 24 random bits), in [0, 1).
float lcm_rng_uniform_f32(lcm_rng *rng);

// torch's float64 uniform (two u32 draws, 53 random bits), in [0, 1).
double lcm_rng_uniform_f64(lcm_rng *rng);

#endif
