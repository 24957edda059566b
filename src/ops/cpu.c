#ifndef _GNU_SOURCE
#define _GNU_SOURCE // sched_getaffinity
#endif
#include "ops/cpu.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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

// "package:core" of a CPU from sysfs, or -1 when unknown.
static long core_key(int cpu) {
    char path[128];
    long package = -1, core = -1;
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
    FILE *f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &package) != 1) package = -1;
        fclose(f);
    }
    snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
    f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%ld", &core) != 1) core = -1;
        fclose(f);
    }
    return package < 0 || core < 0 ? -1 : package * 65536 + core;
}

int cpu_physical_cores(void) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int fallback = online > 0 ? (int)online : 1;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return fallback;
    fallback = CPU_COUNT(&allowed) > 0 ? CPU_COUNT(&allowed) : fallback;
    long keys[CPU_SETSIZE];
    int cores = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed)) continue;
        long key = core_key(cpu);
        if (key < 0) return fallback;
        bool seen = false;
        for (int i = 0; i < cores && !seen; i++) seen = keys[i] == key;
        if (!seen) keys[cores++] = key;
    }
    return cores > 0 ? cores : fallback;
}
