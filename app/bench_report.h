// What `lcm bench` prints: the figures of one run as a table or as JSON (app/bench_report.c).
#ifndef LCM_APP_BENCH_REPORT_H
#define LCM_APP_BENCH_REPORT_H

#include <stdbool.h>

#include "lcm.h"

// Median, min and max of a stage's timings.
typedef struct bench_spread {
    double median, min, max;
} bench_spread;

// The median, min and max of n timings (1 <= n <= BENCH_MAX_RUNS).
#define BENCH_MAX_RUNS 100
bench_spread bench_spread_of(const double *times, int n);

typedef struct bench_report {
    const char *model, *precision, *attention_kernel;
    int width, height, steps, runs, threads;
    double guidance;
    int lora_count;
    bool controlnet;
    double peak_gflops;
    char peak_method[160];
    lcm_bench_plan plan; // which stages ran, their work, classifier-free guidance, the tiles
    bench_spread times[LCM_BENCH_STAGE_COUNT];
    double cpu_median[LCM_BENCH_STAGE_COUNT]; // CPU seconds of the process, all threads
    double peak_rss_bytes;
    double load_seconds, load_cpu_seconds; // lcm_pipeline_open: wall and this process's CPU time
    bool no_cache;
} bench_report;

void bench_print_text(const bench_report *r);
void bench_print_json(const bench_report *r);

// `lcm bench --kernels`: why each layer runs where it does, the decisions this run used.
void bench_print_kernels(void);

// `lcm bench --attention`: times and prints the attention kernels on SD1.5's shapes. Returns the
// exit code.
int bench_attention_report(int runs, bool json);

#endif
