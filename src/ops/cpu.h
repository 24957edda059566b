// What this CPU can run: the one place that reads cpuid. The Release build targets x86-64-v3
// (AVX2), and the AVX-512, AVX512-BF16 and VNNI kernels are compiled per function and chosen only
// where the CPU has them. Every kernel family asks here, so one override reaches all of them:
// LCM_NO_AVX512=1 in the environment hides AVX-512 (and with it AVX512-BF16, VNNI and AMX) from
// our kernels and from oneDNN (cpu_limit_onednn_isa), to run the AVX2 paths on an AVX-512 machine.
#ifndef LCM_OPS_CPU_H
#define LCM_OPS_CPU_H

#include <stdbool.h>

typedef struct cpu_features {
    bool avx2_fma;    // AVX2 + FMA: the direct convolution and linear kernels, fp32 flash attention
    bool avx512;      // AVX-512 F, BW, DQ, VL
    bool avx512_bf16; // the above plus AVX512-BF16 (vdpbf16ps)
    bool avx512_vnni; // the above plus AVX512-VNNI (vpdpbusd)
    bool amx;         // AMX tiles with bf16 and int8 (oneDNN's avx512_core_amx kernels)
    bool amx_enabled; // oneDNN may use them for bf16 (on unless LCM_AMX=0; int8 layers never do, see cpu.c)
    bool avx512_disabled; // LCM_NO_AVX512 hid the AVX-512 features above
    char name[64];    // the processor's brand string ("AMD EPYC 9R14 96-Core Processor")
} cpu_features;

// Read once per process; the same pointer every time.
const cpu_features *cpu_features_get(void);

bool cpu_has_avx2_fma(void);
bool cpu_has_avx512(void);      // AVX-512 F, BW, DQ, VL
bool cpu_has_avx512_bf16(void); // the above plus AVX512-BF16
bool cpu_has_vnni(void);        // the above plus AVX512-VNNI

// For tests: hides AVX-512 (and AVX512-BF16, VNNI, AMX) from our own kernels' choices from now on
// (true), or shows what was detected again (false), so that one process can compare a kernel's
// AVX-512 and AVX2 paths. oneDNN keeps the limit set at start. Not thread-safe; no effect on a CPU
// without AVX-512.
void cpu_hide_avx512(bool hide);

// For tests: hides VNNI and AMX (true) or shows them again where they are not otherwise hidden
// (false), so that one process can compare the int8 kernels' VNNI or AMX paths with the AVX2 one
// with everything else the same. Not thread-safe.
void cpu_hide_vnni(bool hide);
// For tests: hides AMX alone (true) or shows it again (false), to compare the int8 kernels' AMX
// and VNNI paths. Not thread-safe.
void cpu_hide_amx(bool hide);

// "avx2 fma avx512 avx512_bf16 avx512_vnni amx" (what is present), for `lcm info` and the tuning
// cache's key. Static storage.
const char *cpu_feature_list(void);

// Physical cores available to this process (SMT siblings counted once), at least 1: from the
// CPU affinity mask and /sys/devices/system/cpu/cpuN/topology, else the online CPU count.
int cpu_physical_cores(void);

#endif
