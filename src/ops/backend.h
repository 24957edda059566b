// Which kernel each convolution and linear layer runs: the one place that decides.
//
// A layer's kernel family (ops.h: conv_kernel, linear_kernel) is chosen when the layer is packed at
// load, from its shape, the precision asked for and the CPU (ops/cpu.h), and for linear layers
// the row count when the architecture fixes it (linear_load_rows). Never from the image size or
// the model's configured sample size: the same weights must give the same bits whichever file
// or config they come from. How:
//  - a forced kernel (LCM_CONV_KERNEL / LCM_LINEAR_KERNEL = direct|sgemm|onednn, or a benchmark's
//    ops_backend.forced_conv / forced_linear) wins;
//  - else the tuning table: each distinct shape is timed once on this CPU with every candidate
//    kernel the precision allows (random weights and inputs; a oneDNN primitive that would run a
//    reference implementation is refused, never measured), and the fastest is kept. The table is
//    saved in the user's cache folder ($XDG_CACHE_HOME/lcm, default ~/.cache/lcm), one file per
//    CPU model, feature set and kernel version, and read back by later runs, so a shape is timed
//    once per machine. A missing, unreadable or foreign file is measured again, with a one-line
//    notice on stderr, never a failure;
//  - LCM_TUNE=off (or a shape past the time budget of one process) uses the built-in rules
//    instead, which follow what was measured on the project's machines (BENCHMARKS.md).
// Candidates: fp32 layers run the direct kernel (AVX-512 or AVX2 tiles, Winograd where the layer
// qualifies), oneDNN fp32, or im2col/plain sgemm; bf16 layers add oneDNN bf16 (AVX512-BF16) and stay
// on an fp32 kernel only where that measures at least 1.5x faster (bf16 is asked for half the
// weight memory; a fp32 layer is never worse in accuracy).
//
// Determinism: a decision does not depend on the thread count (the table is shared by every
// thread count), so a model computes the same bits with 1 and 2 threads once its shapes are in
// the table; tests that compare thread counts use LCM_TUNE=off or one cache for both runs.
#ifndef LCM_OPS_BACKEND_H
#define LCM_OPS_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ops/cpu.h"
#include "ops/int8_layer.h"
#include "ops/ops.h"

// ---- the backend object ----------------------------------------------------------------------

// Everything that decides which kernels the layers of a model get, resolved once (by the pipeline
// per pipeline, by tools and tests that load models) and passed to every loader and *_pack
// function. Nothing here is read from ambient state at load or run time: the environment
// variables that choose kernels (LCM_REFERENCE_KERNELS, LCM_CONV_KERNEL, LCM_LINEAR_KERNEL,
// LCM_TUNE, LCM_INT8_KERNELS here; LCM_NO_AVX512 and LCM_AMX in cpu.c) are read when a backend is
// made. A model that must know at run time which kernel set its layers were loaded for keeps
// `kernels` in its own struct (a copy, never a pointer to the backend).
//
// A plain value: it owns nothing (`cpu` is the process's static cpu_features_get()), so it may be
// copied, and a copy kept by a model (the VAE keeps one for its encoder, loaded on first use)
// outlives whoever made the original.
struct ops_backend {
    // The weights' precision (reference kernels keep fp32 whatever it says).
    lcm_precision precision;
    kernel_set kernels;          // fast (packed, NHWC) or reference (plain loops over NCHW)
    conv_kernel forced_conv;     // every convolution's kernel; AUTO: chosen per shape (below)
    linear_kernel forced_linear; // every linear layer's kernel; AUTO: chosen per shape
    bool tune;                   // choose by measurement (false: LCM_TUNE=off, the built-in rules)
    // 8-bit layers run int8 kernels (false, LCM_INT8_KERNELS=0: dequantized weights and
    // fake-quantized inputs, the reference path) ...
    bool int8_kernels;
    // ... this one (LCM_INT8_KERNELS=ours or onednn; AUTO otherwise). Every int8 kernel computes
    // the same bits (ops/int8_layer.h); oneDNN's only runs where the CPU has VNNI.
    int8_kernel int8_kernel;
    const cpu_features *cpu;     // what this CPU runs, after LCM_NO_AVX512 / LCM_AMX
};

// The backend for layers in `precision` as the environment asks (defaults: fast kernels, every
// kernel chosen per shape, tuning on, int8 kernels on). Returned by value; nothing to free.
ops_backend ops_backend_from_environment(lcm_precision precision);

// ---- packing layers ------------------------------------------------------------------------

// Packs a layer that holds its plain weight (c->weight, freed here) for the kernel `b` chooses
// for its shape. A shape not yet in the table is measured on this very layer's weights, packed
// for each candidate, and the fastest packing is kept (no packing twice). `b` is only read.
lcm_status backend_pack_conv(conv2d *c, const ops_backend *b);
lcm_status backend_pack_linear(linear *l, const ops_backend *b, int64_t rows);

// The kernel `b` gives a convolution of this shape; never AUTO.
conv_kernel backend_conv_kernel(const ops_backend *b, int in, int out, int kernel, int stride,
                                int padding);
// The kernel `b` gives a linear layer; never AUTO.
linear_kernel backend_linear_kernel(const ops_backend *b, int in, int out, int64_t rows);

// The precision attention computes in for layers loaded with `b`: fp32 unless bf16 is asked for
// on the fast kernels, and then bf16 (the flash kernel's AVX512-BF16 path) only where it measures
// faster than fp32 on this CPU (timed once per machine on a 1024-token, 8-head layer, about 50 ms;
// on a Xeon with full-width AVX-512 fp32 won).
lcm_precision backend_attention_precision(const ops_backend *b);

// ---- the tuning table and keys -----------------------------------------------------------------

// The tuning cache file of this CPU and kernel version (may not exist yet), for messages and
// `lcm cache`-style tools. Static storage; "" when no cache folder can be named.
const char *backend_tuning_file(void);

// The first line of the tuning table (ops/backend_key.c): kernel version, CPU, features and oneDNN
// version; a table with another header was measured for someone else.
void backend_table_header(char *buf, size_t size);

// Everything in `b` that decides which kernels layers get and how they are packed, as text into
// buf: the tuning table's header (kernel version, CPU, features, oneDNN version), forced kernels,
// tuning on/off and the Winograd setting. The packed-weight cache (ops/packed_cache.h) keys its
// files by it.
void backend_setup_key(const ops_backend *b, char *buf, size_t size);

// Writes one line per decision this process made or read, in the order they were first used:
// "conv fp32 320->320 k3 s1 p1 @64: direct 182.0 GFLOP/s (onednn 173.0)". `lcm bench --kernels`.
void backend_print_decisions(FILE *out);

// Names for messages: "direct", "onednn", "sgemm", "auto".
const char *conv_kernel_name(conv_kernel kernel);
const char *linear_kernel_name(linear_kernel kernel);

#endif
