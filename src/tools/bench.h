// `lcm bench`: the stages of a generation timed one by one on a loaded pipeline, the machine's
// measured peak, and the attention kernels on SD1.5's shapes (public face: lcm_bench_* in lcm.h).
//
// A stage is timed as a generation runs it: the text encoder with its weights read back (its pages
// are released after each use, as generate_run does), one denoising step's networks (the
// ControlNet's residuals, then the UNet, on the step's batch: two rows under classifier-free
// guidance), the VAE decode, and with a TAESD the tiled VAE decode and the TAESD decode of the same
// latents. The whole lcm_generate (the end-to-end stage) is run by src/api/bench.c, since a tool
// may not call the public API. Each stage's FLOPs are counted from the model configs
// (tools/flops.h).
#ifndef LCM_TOOLS_BENCH_H
#define LCM_TOOLS_BENCH_H

#include "lcm.h"

// Wall-clock and this process's CPU seconds (all threads: unlike wall time it does not count the
// time other processes held the cores on a shared machine).
double bench_seconds_now(void);
double bench_cpu_seconds_now(void);

// Fills x[0..n) with uniform values in [-1, 1) from a fixed sequence (the same inputs every run).
void bench_fill_pseudo_random(float *x, int64_t n, uint32_t seed);

// lcm_bench_open with the end-to-end run's request already made (lcm_request_init + the options):
// `request` is copied and kept for bench_end_to_end_request; what it points to is borrowed.
lcm_status bench_open(lcm_pipeline *pipeline, const lcm_bench_options *options, const lcm_request *request,
                      lcm_bench **out, lcm_bench_plan *plan);

// Runs one stage other than LCM_BENCH_END_TO_END once (lcm_bench_run).
lcm_status bench_run_stage(lcm_bench *bench, lcm_bench_stage stage, double *wall_seconds, double *cpu_seconds);

// What the end-to-end stage generates with, and on which pipeline (both owned by the bench).
const lcm_request *bench_end_to_end_request(const lcm_bench *bench);
lcm_pipeline *bench_pipeline(const lcm_bench *bench);

void bench_close(lcm_bench *bench);

// lcm_bench_peak.
double bench_peak(lcm_precision precision, int size, char *method, size_t method_size);

// lcm_bench_attention_shape_count, lcm_bench_attention_kernel_name, lcm_bench_attention.
int bench_attention_shape_count(void);
const char *bench_attention_kernel_name(int index);
lcm_status bench_attention(int index, int runs, lcm_attention_timing *out);

#endif
