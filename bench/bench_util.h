// Helpers shared by the benchmark programs under bench/ (each is one .c file and this header).
#ifndef LCM_BENCH_UTIL_H
#define LCM_BENCH_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

// Seconds on `clock`: CLOCK_MONOTONIC for wall time, CLOCK_PROCESS_CPUTIME_ID for the process's
// CPU time, which with one thread (OMP_NUM_THREADS=1) is the compute time even while other
// processes take turns on the core, so A/B comparisons hold on a busy machine.
static inline double bench_seconds(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int bench_compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Sorts v[0..n) ascending (for best and median times).
static inline void bench_sort(double *v, int n) { qsort(v, (size_t)n, sizeof *v, bench_compare_doubles); }

// n floats uniform in [-bound, bound) from a linear congruential sequence in *state (fixed
// inputs, so runs compare); NULL when out of memory.
static inline float *bench_random_floats(int64_t n, float bound, unsigned *state) {
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; v && i < n; i++) {
        *state = *state * 1664525u + 1013904223u;
        v[i] = bound * ((float)(*state >> 8) / 8388608.0f - 1.0f);
    }
    return v;
}

#endif
