// Which kernel each convolution and linear layer runs: the one place that decides.
//
// A layer's kernel family (ops.h: conv_kernel, linear_kernel) is chosen when the layer is packed at
// load, from its shape, the precision asked for and the CPU (ops/cpu.h), and for linear layers
// the row count when the architecture fixes it (linear_load_rows). Never from the image size or
// the model's configured sample size: the same weights must give the same bits whichever file
// or config they come from. How:
//  - a forced kernel (LCM_CONV_KERNEL / LCM_LINEAR_KERNEL = direct|sgemm|onednn, or
//    backend_force_*) wins;
//  - else the tuning table: each distinct shape is timed once on this CPU with every candidate
//    kernel the precision allows (random weights and inputs; a oneDNN primitive that would run a
//    reference implementation is refused, never measured), and the fastest is kept. The table is
//    saved in the user's cache folder ($XDG_CACHE_HOME/lcm, default ~/.cache/lcm), one file per
//    CPU model, feature set and kernel version, and read back by later runs, so a shape is timed
//    once per machine. A missing, unreadable or foreign file is measured again, with a one-line
//    notice on stderr, never a failure;
//  - LCM_TUNE=off (or a shape past the time budget of one process) uses the built-in rules
//    instead, which follow what was measured on the project's machines (BENCHMARKS.md).
// Candidates: fp32 layers run the direct AVX2 kernel (Winograd where the layer qualifies), oneDNN
// fp32, or im2col/plain sgemm; bf16 layers add oneDNN bf16 (AVX512-BF16) and may stay on an fp32
// kernel where that measures faster (a fp32 layer is never worse in accuracy).
//
// Determinism: a decision does not depend on the thread count (the table is shared by every
// thread count), so a model computes the same bits with 1 and 2 threads once its shapes are in
// the table; tests that compare thread counts use LCM_TUNE=off or one cache for both runs.
#ifndef LCM_OPS_BACKEND_H
#define LCM_OPS_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ops/ops.h"

// Packs a layer that holds its plain weight (c->weight, freed here) for the kernel the backend
// chooses for its shape. A shape not yet in the table is measured on this very layer's weights,
// packed for each candidate, and the fastest packing is kept (no packing twice).
lcm_status backend_pack_conv(conv2d *c, lcm_precision precision);
lcm_status backend_pack_linear(linear *l, lcm_precision precision, int64_t rows);

// The kernel for a convolution of this shape; never AUTO.
conv_kernel backend_conv_kernel(lcm_precision precision, int in, int out, int kernel, int stride,
                                int padding);
// The kernel for a linear layer; never AUTO.
linear_kernel backend_linear_kernel(lcm_precision precision, int in, int out, int64_t rows);

// The precision attention computes in for layers loaded in `asked`: bf16 (the flash kernel's
// AVX512-BF16 path) only where it measures faster than fp32 on this CPU (timed once per process on
// a 1024-token, 8-head layer, about 50 ms; on a Xeon with full-width AVX-512 fp32 won), else fp32.
lcm_precision backend_attention_precision(lcm_precision asked);

// Forces one kernel for every layer packed from now on (AUTO: back to the choice above); for
// benchmarks that compare kernels in one process. Not thread-safe against concurrent loads.
void backend_force_conv_kernel(conv_kernel kernel);
void backend_force_linear_kernel(linear_kernel kernel);

// Whether layers are tuned by measurement (false: LCM_TUNE=off, the built-in rules).
bool backend_tuning_enabled(void);

// The tuning cache file of this CPU and kernel version (may not exist yet), for messages and
// `lcm cache`-style tools. Static storage; "" when no cache folder can be named.
const char *backend_tuning_file(void);

// Everything that decides which kernels layers get and how they are packed, as text: the tuning
// table's header (kernel version, CPU, features, oneDNN version), forced kernels, LCM_TUNE and the
// Winograd setting. The packed-weight cache (ops/packed_cache.h) keys its files by it.
void backend_setup_key(char *buf, size_t size);

// Writes one line per decision this process made or read, in the order they were first used:
// "conv fp32 320->320 k3 s1 p1 @64: direct 182.0 GFLOP/s (onednn 173.0)". `lcm bench --kernels`.
void backend_print_decisions(FILE *out);

// Names for messages: "direct", "onednn", "sgemm", "auto".
const char *conv_kernel_name(conv_kernel kernel);
const char *linear_kernel_name(linear_kernel kernel);

#endif
