// Run-time CPU feature checks: the Release build targets x86-64-v3 (AVX2), and the AVX-512 kernels
// are compiled per function and chosen only where the CPU has them.
#ifndef LCM_OPS_CPU_H
#define LCM_OPS_CPU_H

#include <stdbool.h>

bool cpu_has_avx512(void);      // AVX-512 F, BW, DQ, VL
bool cpu_has_avx512_bf16(void); // the above plus AVX512-BF16

// Physical cores available to this process (SMT siblings counted once), at least 1: from the
// CPU affinity mask and /sys/devices/system/cpu/cpuN/topology, else the online CPU count.
int cpu_physical_cores(void);

#endif
