#ifndef _GNU_SOURCE
#define _GNU_SOURCE // sched_getaffinity
#endif
#include "ops/cpu.h"

#include <cpuid.h>
#include <dnnl.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static cpu_features features, detected; // what our kernels may use; what features_read found
static pthread_once_t features_once = PTHREAD_ONCE_INIT;
static char feature_list[192];

// The brand string from cpuid leaves 0x80000002..4.
static void read_name(char name[64]) {
    unsigned regs[12] = {0};
    name[0] = 0;
    // clang's cpuid.h returns int here, gcc's unsigned.
    if ((unsigned)__get_cpuid_max(0x80000000u, NULL) < 0x80000004u) return;
    for (unsigned i = 0; i < 3; i++)
        __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
    memcpy(name, regs, 48);
    name[48] = 0;
    char *start = name;
    while (*start == ' ') start++;
    memmove(name, start, strlen(start) + 1);
    for (size_t n = strlen(name); n && name[n - 1] == ' '; n--) name[n - 1] = 0;
}

// AMX: cpuid leaf 7 EDX bits 22 (amx-bf16), 24 (amx-tile), 25 (amx-int8). The kernel must also
// let the process use the tile state, which oneDNN asks for itself; we only report the CPU's part.
static bool cpu_amx(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (d >> 22 & 1) && (d >> 24 & 1) && (d >> 25 & 1);
}

static void features_read(void) {
    __builtin_cpu_init();
    const char *v = getenv("LCM_NO_AVX512");
    bool disabled = v && *v && *v != '0';
    features.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    features.avx512_disabled = disabled && avx512;
    features.avx512 = avx512 && !disabled;
    features.avx512_bf16 = features.avx512 && __builtin_cpu_supports("avx512bf16");
    features.avx512_vnni = features.avx512 && __builtin_cpu_supports("avx512vnni");
    features.amx = features.avx512 && cpu_amx();
    read_name(features.name);
    detected = features;
    // oneDNN reads the CPU itself: cap the instruction sets its JIT may use, before its first
    // primitive or sgemm (every oneDNN user in ops/ reads the features first).
    // AMX: oneDNN 2.6.3's AMX int8 kernels corrupt the heap (ASan, test_int8: every run), so 8-bit
    // layers never pick them (ops/int8_layer.c). Its AMX bf16 kernels are on: they make a bf16
    // generation 1.5x faster here (BENCHMARKS.md), pass the kernel and pipeline tests under ASan,
    // and ran full-size cold and warm generations with every large tensor ending at a guard page
    // (LCM_TENSOR_GUARD=1: no read past a buffer). One cold bf16 generation in session 8 died in
    // oneDNN's primitive creation and was never reproduced (12 further runs): LCM_AMX=0 turns AMX
    // off should it come back.
    const char *amx = getenv("LCM_AMX");
    features.amx_enabled = features.amx && !(amx && *amx == '0');
    if (disabled) dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx2);
    else if (features.amx && !features.amx_enabled) dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx512_core_bf16);
    snprintf(feature_list, sizeof feature_list, "%s%s%s%s%s%s", features.avx2_fma ? "avx2 fma" : "sse",
             features.avx512 ? " avx512" : "", features.avx512_bf16 ? " avx512_bf16" : "",
             features.avx512_vnni ? " avx512_vnni" : "",
             features.amx ? (features.amx_enabled ? " amx" : " amx(off: LCM_AMX=0)") : "",
             features.avx512_disabled ? " (avx512 disabled by LCM_NO_AVX512)" : "");
}

const cpu_features *cpu_features_get(void) {
    pthread_once(&features_once, features_read);
    return &features;
}

void cpu_hide_avx512(bool hide) {
    cpu_features_get();
    features = detected;
    if (hide) features.avx512 = features.avx512_bf16 = features.avx512_vnni = features.amx = false;
}

void cpu_hide_vnni(bool hide) {
    cpu_features_get();
    features.avx512_vnni = !hide && detected.avx512_vnni && features.avx512;
    features.amx = !hide && detected.amx && features.avx512;
}

void cpu_hide_amx(bool hide) {
    cpu_features_get();
    features.amx = !hide && detected.amx && features.avx512;
}

bool cpu_has_avx2_fma(void) { return cpu_features_get()->avx2_fma; }
bool cpu_has_avx512(void) { return cpu_features_get()->avx512; }
bool cpu_has_avx512_bf16(void) { return cpu_features_get()->avx512_bf16; }
bool cpu_has_vnni(void) { return cpu_features_get()->avx512_vnni; }

const char *cpu_feature_list(void) {
    cpu_features_get();
    return feature_list;
}

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
