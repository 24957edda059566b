#include "ops/cpu.h"

#include <stdatomic.h>
#include <stdlib.h>

// LCM_NO_AVX512=1 forces the AVX2 fallbacks (to test them on an AVX-512 machine).
static bool avx512_disabled(void) {
    const char *v = getenv("LCM_NO_AVX512");
    return v && *v && *v != '0';
}

// 0: not checked yet, 1: no, 2: yes. Checked once: the kernels ask per span.
static atomic_int has_avx512, has_avx512_bf16;

static bool cached(atomic_int *flag, bool (*probe)(void)) {
    int v = atomic_load_explicit(flag, memory_order_relaxed);
    if (!v) {
        v = probe() ? 2 : 1;
        atomic_store_explicit(flag, v, memory_order_relaxed);
    }
    return v == 2;
}

static bool probe_avx512(void) {
    return !avx512_disabled() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
}

static bool probe_avx512_bf16(void) {
    return probe_avx512() && __builtin_cpu_supports("avx512bf16");
}

bool cpu_has_avx512(void) { return cached(&has_avx512, probe_avx512); }
bool cpu_has_avx512_bf16(void) { return cached(&has_avx512_bf16, probe_avx512_bf16); }
