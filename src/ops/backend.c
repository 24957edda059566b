// The kernel choice of every convolution and linear layer; see backend.h.
#include "ops/backend.h"

#include <dnnl.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/user_cache.h"
#include "ops/attention.h"
#include "ops/conv_direct.h"
#include "ops/cpu.h"
#include "ops/kernel_family.h"

// One measurement runs about this much arithmetic (a few milliseconds), on images of at least
// 16 x 16 (below that Winograd's tiles and oneDNN's blocking say little about real sizes), so that
// a whole LCM_Dreamshaper_v7 (about 70 distinct shapes) is tuned in a few seconds, once.
#define MEASURE_FLOP 1.0e9
#define MIN_MEASURE_SIDE 16
// A safety net: a process stops measuring after this long (later shapes take the built-in rule
// and are measured by a later run). Set well above what a whole model takes, because a model
// whose shapes are only partly measured computes different bits in its first and second runs.
#define TUNING_BUDGET_SECONDS 30.0
#define MAX_DECISIONS 1024
// Another kernel replaces the built-in rule's only when it measures this much faster (record).
#define RULE_MARGIN 1.08
// With bf16 asked for, a kernel computing on fp32 weights (direct, sgemm) replaces oneDNN's bf16 one
// only when it measures this much faster: bf16 is asked for half the weight memory, and an fp32
// layer holds 2x the bytes (3.6x-8x with Winograd's transformed weights). On a Xeon without AMX,
// oneDNN's avx512_core_bf16 kernels ran at 200-235 GFLOP/s beside 250-550 for the fp32 direct
// kernel; taking every faster fp32 layer raised a bf16 generation's peak RSS from 2.2 to 3.5 GB for
// no gain over fp32, while the layers at least this much faster (Winograd's 320- and 640-channel
// and the VAE's) hold a small part of the weights.
#define BF16_WEIGHT_MARGIN 1.5
// Kernels of one layer that run at all differ by a few times at most (one that falls to a
// reference implementation is refused before timing); timings further apart than this come from a
// disturbed run (a preempted thread, a page-fault storm: a helper's table once recorded a linear
// layer at 2.057 GFLOP/s with oneDNN and 0.001 with the direct kernel), and are taken again, at
// most twice; what they then give is recorded.
#define IMPLAUSIBLE_RATIO 20.0

// OP_ATTENTION: the precision attention computes in when bf16 is asked (chosen 1 = fp32, 2 = bf16),
// measured once per machine like the layers, so that a model gives the same bits in every run.
typedef enum op_kind { OP_CONV, OP_LINEAR, OP_ATTENTION } op_kind;

typedef struct decision {
    op_kind op;
    lcm_precision precision; // asked for
    int in, out, kernel, stride, padding;
    int64_t size;  // linear: the rows the architecture fixes (1, 77); 0: unknown, and every conv
    int chosen;    // conv_kernel or linear_kernel
    double gflops; // of the chosen kernel as measured (0: built-in rule)
    int runner_up; // -1: none
    double runner_gflops;
    bool used;     // asked for by this process (listed by backend_print_decisions)
} decision;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static decision decisions[MAX_DECISIONS];
static int decision_count;
static bool table_read;
static double seconds_measured;

static const char *kernel_name(op_kind op, int kernel) {
    if (op == OP_ATTENTION) return kernel == 1 ? "fp32" : kernel == 2 ? "bf16" : "-";
    return op == OP_CONV ? conv_kernel_name(kernel) : linear_kernel_name(kernel);
}

static const char *op_name(op_kind op) {
    return op == OP_CONV ? "conv" : op == OP_LINEAR ? "linear" : "attention";
}

// The conv_kernel / linear_kernel (attention: 1 fp32, 2 bf16) of that name; -1 when none is.
static int kernel_from_name(op_kind op, const char *name) {
    if (op == OP_ATTENTION) return !strcmp(name, "fp32") ? 1 : !strcmp(name, "bf16") ? 2 : -1;
    int count;
    const kernel_family *const *families = backend_kernel_families(&count);
    for (int f = 0; f < count; f++) {
        const kernel_family *family = families[f];
        int id = op == OP_CONV ? (int)family->conv_id : (int)family->linear_id;
        if (id > 0 && !strcmp(family->name, name)) return id; // 0: a family nobody selects by name
    }
    return -1;
}

// ---- the backend object ----------------------------------------------------------------------

// AUTO unless the variable names a kernel (an unknown name is ignored, as before there was a
// backend object: the per-shape choice then runs).
static int forced_by_environment(op_kind op) {
    const char *v = getenv(op == OP_CONV ? "LCM_CONV_KERNEL" : "LCM_LINEAR_KERNEL");
    int kernel = v ? kernel_from_name(op, v) : -1;
    return kernel > 0 ? kernel : 0; // 0: CONV_KERNEL_AUTO, LINEAR_KERNEL_AUTO
}

// The one place that reads the variables choosing kernels (LCM_NO_AVX512 and LCM_AMX: cpu.c, which
// reads the CPU).
ops_backend ops_backend_from_environment(lcm_precision precision) {
    const char *reference = getenv("LCM_REFERENCE_KERNELS");
    const char *tune = getenv("LCM_TUNE");
    const char *int8 = getenv("LCM_INT8_KERNELS");
    // Winograd packing is a setting of the direct kernel itself (its packed layers and cache
    // entries follow it; backend_setup_key records it), applied here when the variable is set.
    const char *winograd = getenv("LCM_WINOGRAD");
    if (winograd) conv_direct_set_winograd(strcmp(winograd, "0") != 0);
    return (ops_backend){
        .precision = precision,
        .kernels = reference && *reference && *reference != '0' ? KERNELS_REFERENCE : KERNELS_FAST,
        .forced_conv = (conv_kernel)forced_by_environment(OP_CONV),
        .forced_linear = (linear_kernel)forced_by_environment(OP_LINEAR),
        .tune = !(tune && (!strcmp(tune, "off") || !strcmp(tune, "0"))),
        .int8_kernels = !(int8 && *int8 == '0'),
        .int8_kernel = int8 && !strcmp(int8, "onednn") ? INT8_KERNEL_ONEDNN
                       : int8 && !strcmp(int8, "ours") ? INT8_KERNEL_OURS : INT8_KERNEL_AUTO,
        .cpu = cpu_features_get(),
    };
}

// ---- built-in rules --------------------------------------------------------------------------

// What measurement found on the machines seen so far (BENCHMARKS.md): without AVX-512 the direct
// AVX2 kernels beat oneDNN everywhere; with it, oneDNN wins bf16 layers and the fp32 layers that
// are not 3x3 stride 1, while the direct kernel's Winograd (AVX-512 tiles) wins every 3x3 stride-1
// fp32 layer (measured on a Xeon, one thread: 1.2-2.0x oneDNN at 16x16 and up, a tie at 8x8), and
// the dot-product kernel the layers to RGB.
static int builtin_conv(lcm_precision precision, int in, int out, int kernel, int stride) {
    (void)in;
    if (!cpu_has_avx512()) return cpu_has_avx2_fma() ? CONV_KERNEL_DIRECT : CONV_KERNEL_SGEMM;
    if (out <= 3 && cpu_has_avx2_fma()) return CONV_KERNEL_DIRECT;
    if (precision == LCM_PRECISION_BF16 && cpu_has_avx512_bf16()) return CONV_KERNEL_ONEDNN;
    if (kernel == 3 && stride == 1 && cpu_has_avx2_fma()) return CONV_KERNEL_DIRECT;
    return CONV_KERNEL_ONEDNN;
}

static int builtin_linear(void) {
    return cpu_has_avx512()     ? LINEAR_KERNEL_ONEDNN
           : cpu_has_avx2_fma() ? LINEAR_KERNEL_DIRECT
                                : LINEAR_KERNEL_SGEMM;
}

// ---- the table file --------------------------------------------------------------------------

static const char *precision_name(lcm_precision p) { return p == LCM_PRECISION_BF16 ? "bf16" : "fp32"; }

// Parses one line into *d; false on anything unexpected.
static bool parse_line(const char *line, decision *d) {
    char op[16], precision[8], chosen[16], runner[16];
    long long in, out, kernel, stride, padding, size;
    int consumed = 0;
    *d = (decision){0};
    // Every line ends with a newline: a last line without one was cut short.
    if (sscanf(line, "%15s %7s %lld %lld %lld %lld %lld %lld %15s %lf %15s %lf%n", op, precision, &in,
               &out, &kernel, &stride, &padding, &size, chosen, &d->gflops, runner,
               &d->runner_gflops, &consumed) != 12)
        return false;
    if (line[consumed] != '\n' || line[consumed + 1] != 0) return false;
    if (in < 1 || in > 1 << 20 || out < 1 || out > 1 << 20 || kernel < 0 || kernel > 64 ||
        stride < 0 || stride > 64 || padding < 0 || padding > 64)
        return false;
    d->in = (int)in;
    d->out = (int)out;
    d->kernel = (int)kernel;
    d->stride = (int)stride;
    d->padding = (int)padding;
    if (!strcmp(op, "conv")) d->op = OP_CONV;
    else if (!strcmp(op, "linear")) d->op = OP_LINEAR;
    else if (!strcmp(op, "attention")) d->op = OP_ATTENTION;
    else return false;
    if (!strcmp(precision, "fp32")) d->precision = LCM_PRECISION_FP32;
    else if (!strcmp(precision, "bf16")) d->precision = LCM_PRECISION_BF16;
    else return false;
    d->size = size;
    d->chosen = kernel_from_name(d->op, chosen);
    d->runner_up = strcmp(runner, "-") ? kernel_from_name(d->op, runner) : -1;
    return size >= 0 && size <= 1 << 24 && d->chosen > 0 && (d->runner_up > 0 || !strcmp(runner, "-")) &&
           isfinite(d->gflops) && d->gflops >= 0 && isfinite(d->runner_gflops) &&
           d->runner_gflops >= 0;
}

// Reads the table once (lock held). A file that is not entirely valid is ignored as a whole.
static void read_table(void) {
    table_read = true;
    const char *path = backend_tuning_file();
    if (!path[0]) return;
    FILE *f = fopen(path, "r");
    if (!f) return; // not measured yet on this machine: no notice needed
    char expected[512], line[512];
    backend_table_header(expected, sizeof expected);
    const char *problem = NULL;
    int count = 0, line_number = 1;
    if (!fgets(line, sizeof line, f) || strcmp(line, expected)) problem = "it was written for another CPU or version";
    while (!problem && fgets(line, sizeof line, f)) {
        line_number++;
        if (count == MAX_DECISIONS || !parse_line(line, &decisions[count])) problem = "unreadable";
        else count++;
    }
    fclose(f);
    if (problem) {
        fprintf(stderr, "lcm: kernel choices in %s: %s (line %d); measuring again\n", path, problem,
                line_number);
        count = 0;
    }
    decision_count = count;
}

// Rewrites the whole table (lock held): a temporary file renamed over the old one, so a reader
// never sees half a file. Failures only cost a later re-measurement, so they are silent.
static void write_table(void) {
    const char *path = backend_tuning_file();
    if (!path[0]) return;
    char folder[1024], tmp[1100], head[512];
    snprintf(folder, sizeof folder, "%s", path);
    char *slash = strrchr(folder, '/');
    if (!slash) return;
    *slash = 0;
    if (!make_folders(folder)) return; // its parent ~/.cache may not exist either
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    backend_table_header(head, sizeof head);
    fputs(head, f);
    for (int i = 0; i < decision_count; i++) {
        const decision *d = &decisions[i];
        if (d->gflops <= 0) continue; // a built-in rule, not a measurement
        fprintf(f, "%s %s %d %d %d %d %d %lld %s %.3f %s %.3f\n", op_name(d->op),
                precision_name(d->precision), d->in, d->out, d->kernel, d->stride, d->padding,
                (long long)d->size, kernel_name(d->op, d->chosen), d->gflops,
                d->runner_up > 0 ? kernel_name(d->op, d->runner_up) : "-", d->runner_gflops);
    }
    bool ok = fflush(f) == 0 && !ferror(f);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) unlink(tmp);
}

// ---- measuring -------------------------------------------------------------------------------

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Every value the same: a kernel's speed does not depend on the input's values (only denormals
// or NaN would slow it, and there are none).
static void fill(float *x, int64_t n, float value) {
    for (int64_t i = 0; i < n; i++) x[i] = value;
}

// A layer's time: the best of the runs after a warm-up (which also creates primitives and scratch
// buffers), repeated until MEASURE_SECONDS have been timed (a single run of a few microseconds
// said 0.8 or 93 GFLOP/s for the same shape), so a big layer runs once and a small one up to
// MAX_MEASURE_RUNS times. Seconds, or a negative value when the kernel fails or oneDNN would use
// a reference implementation.
#define MEASURE_SECONDS 0.004
#define MAX_MEASURE_RUNS 16

typedef tensor *(*forward_fn)(const void *layer, const tensor *x);
static tensor *conv_forward_of(const void *layer, const tensor *x) { return conv2d_forward(layer, x); }
static tensor *linear_forward_of(const void *layer, const tensor *x) { return linear_forward(layer, x); }

// `kernel`: the layer's, asked after the warm-up whether it fell to a reference implementation.
static double best_time(forward_fn forward, const void *layer, const layer_kernel *kernel,
                        tensor *x) {
    if (!x) return -1;
    fill(x->data, tensor_numel(x), 0.5f);
    tensor *y = forward(layer, x);
    bool reference = kernel->family && kernel->family->falls_to_reference &&
                     kernel->family->falls_to_reference(kernel->state);
    bool usable = y && !reference;
    tensor_free(y);
    double seconds = -1, spent = 0;
    for (int run = 0; usable && (run < 1 || (spent < MEASURE_SECONDS && run < MAX_MEASURE_RUNS)); run++) {
        double start = now();
        y = forward(layer, x);
        double t = now() - start;
        usable = y != NULL;
        tensor_free(y);
        spent += t;
        if (usable && (seconds < 0 || t < seconds)) seconds = t;
    }
    tensor_free(x);
    return usable ? seconds : -1;
}

static double time_conv(const conv2d *trial, int64_t side) {
    tensor *x = tensor_new4(1, trial->in, side, side);
    if (x) x->layout = TENSOR_NHWC;
    return best_time(conv_forward_of, trial, &trial->impl, x);
}

static double time_linear(const linear *trial, int64_t rows) {
    return best_time(linear_forward_of, trial, &trial->impl, tensor_new2(rows, trial->in));
}

// The side (conv) or rows (linear) to measure at: the typical size, cut down so that one run is
// about MEASURE_FLOP, but not below MIN_MEASURE_SIDE (side; 8 for the widest layers, whose 16 x 16
// runs would cost more than the rest of a model together; 32 for the layers Winograd serves with
// weights transformed at load, whose tiles pay off only there: on a Xeon, 640->640 took 9.45 ms
// direct and 9.58 ms oneDNN bf16 at 16x16 but 25.8 and 40.3 ms at 32x32, and 2x apart at the real
// 64x64 and up; 32 too for the wider 3x3 layers, whose Winograd transforms its weights again for
// every chunk of tiles: at 16x16 that cost made oneDNN look 1.3-2.4x faster on 960->320,
// 960->640 and 1280->640, while forcing the direct kernel on them made the UNet step 5% faster at
// 512x512) or 16 rows, nor above 128 (side) or 4096 rows (the per-pixel costs of the cheapest
// layers are seen by then).
static int64_t measure_extent(const decision *d, double flop_per_unit, bool square) {
    int64_t typical = d->size > 0 ? d->size : square ? 64 : 1024;
    double units = MEASURE_FLOP / flop_per_unit;
    int64_t extent = square ? (int64_t)ceil(sqrt(units)) : (int64_t)ceil(units);
    extent = (extent + 3) / 4 * 4;
    bool winograd = square && d->kernel == 3 && d->stride == 1 && d->padding == 1;
    int64_t least = !square ? 16
                    : winograd ? 2 * MIN_MEASURE_SIDE
                    : flop_per_unit * MIN_MEASURE_SIDE * MIN_MEASURE_SIDE > 4 * MEASURE_FLOP ? 8
                                                                                           : MIN_MEASURE_SIDE;
    int64_t most = square ? 128 : 4096;
    if (extent < least) extent = least;
    if (extent > most) extent = most;
    if (extent > typical) extent = typical;
    if (square && extent < d->kernel) extent = d->kernel;
    return extent;
}

// The kernels a measurement compares, fastest-guess first.
static int candidates_of(const decision *d, int candidates[3]) {
    int count = 0;
    if (cpu_has_avx2_fma()) candidates[count++] = d->op == OP_CONV ? CONV_KERNEL_DIRECT : LINEAR_KERNEL_DIRECT;
    // oneDNN only with AVX-512: below that its matmuls run gemm:jit, which splits some sums over
    // the threads (89 of 336 linear shapes gave other bits with 2 threads than with 1, measured
    // with LCM_NO_AVX512=1), and its convolutions were slower than the direct kernel anyway.
    if (cpu_has_avx512() || !cpu_has_avx2_fma())
        candidates[count++] = d->op == OP_CONV ? CONV_KERNEL_ONEDNN : LINEAR_KERNEL_ONEDNN;
    // im2col + sgemm only ever competes on 1x1 convolutions (no column copies), and plain sgemm on
    // linear layers only without AVX2 (else the direct kernel does that product on packed weights).
    if ((d->op == OP_CONV && d->kernel == 1) || !cpu_has_avx2_fma())
        candidates[count++] = d->op == OP_CONV ? CONV_KERNEL_SGEMM : LINEAR_KERNEL_SGEMM;
    return count;
}

// Records the outcome of timing `count` candidates (seconds <= 0: could not run) in d; the index of
// the fastest, or -1.
static int builtin(const decision *key);

static int record(decision *d, const int *candidates, const double *seconds, int count, double flop,
                  int64_t extent, double started) {
    int best = -1, second = -1;
    for (int i = 0; i < count; i++) {
        if (seconds[i] <= 0) continue;
        if (best < 0 || seconds[i] < seconds[best]) {
            second = best;
            best = i;
        } else if (second < 0 || seconds[i] < seconds[second]) {
            second = i;
        }
    }
    error_clear();
    double spent = now() - started;
    seconds_measured += spent;
    if (getenv("LCM_VERBOSE"))
        fprintf(stderr, "lcm: %.0f ms measuring %s %d->%d k%d (%.0f ms so far)\n", spent * 1e3,
                d->op == OP_CONV ? "conv" : "linear", d->in, d->out, d->kernel, seconds_measured * 1e3);
    if (getenv("LCM_VERBOSE"))
        for (int i = 0; i < count; i++)
            fprintf(stderr, "lcm: kernel %s for %s %s %d->%d k%d, timed at %lld: %.3f ms\n",
                    kernel_name(d->op, candidates[i]), d->op == OP_CONV ? "conv" : "linear",
                    precision_name(d->precision), d->in, d->out, d->kernel, (long long)extent,
                    seconds[i] * 1e3);
    if (best < 0) return -1;
    // The built-in rule keeps the layer unless another kernel is clearly faster: measurements on a
    // busy machine (timings of a few milliseconds) swing by more than the gaps between near-equal
    // kernels, and the rule encodes what quiet machines measured.
    int rule = builtin(d);
    for (int i = 0; i < count; i++)
        if (candidates[i] == rule && i != best && seconds[i] > 0 && seconds[best] * RULE_MARGIN > seconds[i]) {
            second = best;
            best = i;
        }
    int bf16_kernel = d->op == OP_CONV ? CONV_KERNEL_ONEDNN : LINEAR_KERNEL_ONEDNN;
    if (d->precision == LCM_PRECISION_BF16 && cpu_has_avx512_bf16() && candidates[best] != bf16_kernel)
        for (int i = 0; i < count; i++)
            if (candidates[i] == bf16_kernel && seconds[i] > 0 && seconds[best] * BF16_WEIGHT_MARGIN > seconds[i]) {
                second = best;
                best = i;
            }
    d->chosen = candidates[best];
    d->gflops = flop / seconds[best] * 1e-9;
    d->runner_up = second >= 0 ? candidates[second] : -1;
    d->runner_gflops = second >= 0 ? flop / seconds[second] * 1e-9 : 0;
    return best;
}

// Packs each candidate from c's own weight (kept until the end), times it, and leaves the fastest
// packing in c (false: none could run; c untouched, its plain weight still there).
static bool implausible(const double *seconds, int count) {
    double fastest = 0, slowest = 0;
    for (int i = 0; i < count; i++) {
        if (seconds[i] <= 0) continue;
        if (fastest <= 0 || seconds[i] < fastest) fastest = seconds[i];
        if (seconds[i] > slowest) slowest = seconds[i];
    }
    return fastest > 0 && slowest > IMPLAUSIBLE_RATIO * fastest;
}

static bool measure_conv(decision *d, conv2d *c, const ops_backend *b) {
    double start = now();
    int candidates[3], count = candidates_of(d, candidates);
    conv2d trials[3];
    double seconds[3] = {-1, -1, -1};
    int64_t extent = measure_extent(d, 2.0 * d->in * d->out * d->kernel * d->kernel / ((double)d->stride * d->stride), true);
    int64_t o = (extent + 2 * d->padding - d->kernel) / d->stride + 1;
    double flop = 2.0 * d->in * d->out * d->kernel * d->kernel * (double)(o * o);
    for (int i = 0; i < count; i++) {
        trials[i] = (conv2d){.in = c->in, .out = c->out, .kernel = c->kernel, .stride = c->stride,
                             .padding = c->padding, .weight = c->weight, .bias = c->bias};
        seconds[i] = conv2d_pack_kernel_keep(&trials[i], b, candidates[i]) == LCM_OK
                         ? time_conv(&trials[i], extent)
                         : -1;
    }
    for (int round = 0; round < 2 && implausible(seconds, count); round++)
        for (int i = 0; i < count; i++) {
            double again = seconds[i] > 0 ? time_conv(&trials[i], extent) : -1;
            if (again > 0 && again < seconds[i]) seconds[i] = again;
        }
    for (int i = 0; i < count; i++) {
        trials[i].weight = NULL; // c's
        trials[i].bias = NULL;   // c's
    }
    int best = record(d, candidates, seconds, count, flop, extent, start);
    for (int i = 0; i < count; i++) {
        if (i == best) continue;
        conv2d_free(&trials[i]);
    }
    if (best < 0) return false;
    if (!c->weight_mapped) free(c->weight);
    c->weight = NULL;
    c->weight_mapped = false;
    c->impl = trials[best].impl;
    return true;
}

static bool measure_linear(decision *d, linear *l, const ops_backend *b) {
    double start = now();
    int candidates[3], count = candidates_of(d, candidates);
    linear trials[3];
    double seconds[3] = {-1, -1, -1};
    int64_t rows = measure_extent(d, 2.0 * d->in * d->out, false);
    double flop = 2.0 * d->in * d->out * (double)rows;
    for (int i = 0; i < count; i++) {
        // weight_mapped: the trial borrows l's weight and never frees it
        trials[i] = (linear){.in = l->in, .out = l->out, .weight = l->weight, .bias = l->bias,
                             .weight_mapped = true};
        seconds[i] = linear_pack_named(&trials[i], b, candidates[i]) == LCM_OK
                         ? time_linear(&trials[i], rows)
                         : -1;
    }
    for (int round = 0; round < 2 && implausible(seconds, count); round++)
        for (int i = 0; i < count; i++) {
            double again = seconds[i] > 0 ? time_linear(&trials[i], rows) : -1;
            if (again > 0 && again < seconds[i]) seconds[i] = again;
        }
    for (int i = 0; i < count; i++) {
        trials[i].weight = NULL;
        trials[i].bias = NULL;
        trials[i].weight_mapped = false;
    }
    int best = record(d, candidates, seconds, count, flop, rows, start);
    for (int i = 0; i < count; i++) {
        if (i == best) continue;
        linear_free(&trials[i]);
    }
    if (best < 0) return false;
    l->impl = trials[best].impl;
    if (l->impl.family->linear_keeps_weight) return true; // computes on l's plain weight
    if (!l->weight_mapped) free(l->weight);
    l->weight = NULL;
    l->weight_mapped = false;
    return true;
}

// ---- decisions -------------------------------------------------------------------------------

static bool same_shape(const decision *a, const decision *b) {
    return a->op == b->op && a->precision == b->precision && a->in == b->in && a->out == b->out &&
           a->kernel == b->kernel && a->stride == b->stride && a->padding == b->padding &&
           a->size == b->size;
}

static int builtin(const decision *key) {
    return key->op == OP_CONV
               ? builtin_conv(key->precision, key->in, key->out, key->kernel, key->stride)
               : builtin_linear();
}

// The kernel `b` gives `key`: forced, from the table, or (when `layer` is given, tuning is on and
// the shape is new) measured on that layer, which is then left packed (*packed = true).
static int decide(const ops_backend *b, const decision *key, void *layer, bool *packed) {
    *packed = false;
    int forced = key->op == OP_CONV ? (int)b->forced_conv : (int)b->forced_linear;
    if (forced > 0) return forced;
    backend_tuning_file(); // names the file before the lock is taken below
    pthread_mutex_lock(&lock);
    bool tune = b->tune;
    if (tune && !table_read) read_table();
    decision *d = NULL;
    for (int i = 0; i < decision_count && !d; i++)
        if (same_shape(&decisions[i], key)) d = &decisions[i];
    // A shape asked about without a layer to measure on is answered by the rule but not recorded,
    // so that the first load of that shape still measures it.
    if (!d && layer && decision_count < MAX_DECISIONS) {
        d = &decisions[decision_count++];
        *d = *key;
        if (tune && seconds_measured < TUNING_BUDGET_SECONDS)
            *packed = key->op == OP_CONV ? measure_conv(d, layer, b) : measure_linear(d, layer, b);
        if (*packed) {
            write_table();
        } else {
            d->chosen = builtin(key);
            d->gflops = 0;
            d->runner_up = -1;
        }
    }
    int chosen = builtin(key); // not recorded (above), or a model of over a thousand layer shapes
    if (d) {
        d->used = true;
        chosen = d->chosen;
    }
    pthread_mutex_unlock(&lock);
    return chosen;
}

static decision conv_key(lcm_precision precision, int in, int out, int kernel, int stride,
                         int padding) {
    return (decision){.op = OP_CONV, .precision = precision, .in = in, .out = out,
                      .kernel = kernel, .stride = stride, .padding = padding};
}

static decision linear_key(lcm_precision precision, int in, int out, int64_t rows) {
    return (decision){.op = OP_LINEAR, .precision = precision, .in = in, .out = out,
                      .size = rows > 0 ? rows : 0};
}

conv_kernel backend_conv_kernel(const ops_backend *b, int in, int out, int kernel, int stride,
                                int padding) {
    bool packed;
    decision key = conv_key(b->precision, in, out, kernel, stride, padding);
    return (conv_kernel)decide(b, &key, NULL, &packed);
}

linear_kernel backend_linear_kernel(const ops_backend *b, int in, int out, int64_t rows) {
    bool packed;
    decision key = linear_key(b->precision, in, out, rows);
    return (linear_kernel)decide(b, &key, NULL, &packed);
}

lcm_status backend_pack_conv(conv2d *c, const ops_backend *b) {
    bool packed;
    decision key = conv_key(b->precision, c->in, c->out, c->kernel, c->stride, c->padding);
    int kernel = decide(b, &key, c, &packed);
    return packed ? LCM_OK : conv2d_pack_named(c, b, (conv_kernel)kernel);
}

lcm_status backend_pack_linear(linear *l, const ops_backend *b, int64_t rows) {
    bool packed;
    decision key = linear_key(b->precision, l->in, l->out, rows);
    int kernel = decide(b, &key, l, &packed);
    return packed ? LCM_OK : linear_pack_named(l, b, (linear_kernel)kernel);
}

// ---- attention -------------------------------------------------------------------------------

static double time_attention(const tensor *q, lcm_precision precision) {
    tensor *warm = attention_with_kernel(q, q, q, 8, false, precision, ATTENTION_FLASH);
    if (!warm) return -1;
    tensor_free(warm);
    double start = now();
    tensor *o = attention_with_kernel(q, q, q, 8, false, precision, ATTENTION_FLASH);
    double seconds = o ? now() - start : -1;
    tensor_free(o);
    return seconds;
}

// The decision of the attention precision (lock held): from the table, else measured and recorded.
static const decision *attention_decision(bool tune) {
    // The UNet's 32x32 self-attention (1024 tokens, 8 heads of 80): big enough to show each
    // kernel's rate, small enough to time in milliseconds.
    const decision key = {.op = OP_ATTENTION, .precision = LCM_PRECISION_BF16, .in = 1024, .out = 640};
    if (tune && !table_read) read_table();
    for (int i = 0; i < decision_count; i++)
        if (same_shape(&decisions[i], &key)) return &decisions[i];
    if (decision_count == MAX_DECISIONS) return NULL;
    decision *d = &decisions[decision_count++];
    *d = key;
    d->chosen = 1; // fp32, also the built-in rule (measured faster on the Xeon with full-width AVX-512)
    d->runner_up = -1;
    if (!tune) return d;
    tensor *q = tensor_new3(1, key.in, key.out);
    double fp32 = -1, bf16 = -1;
    if (q) {
        for (int64_t i = 0; i < tensor_numel(q); i++) q->data[i] = (float)(i % 17) * 0.05f - 0.4f;
        fp32 = time_attention(q, LCM_PRECISION_FP32);
        bf16 = time_attention(q, LCM_PRECISION_BF16);
    }
    tensor_free(q);
    error_clear();
    if (fp32 <= 0 || bf16 <= 0) return d; // not measured: the rule, not recorded in the file
    double flop = 4.0 * key.in * key.in * key.out;
    bool bf16_wins = bf16 < fp32;
    d->chosen = bf16_wins ? 2 : 1;
    d->gflops = flop / (bf16_wins ? bf16 : fp32) * 1e-9;
    d->runner_up = bf16_wins ? 1 : 2;
    d->runner_gflops = flop / (bf16_wins ? fp32 : bf16) * 1e-9;
    write_table();
    return d;
}

lcm_precision backend_attention_precision(const ops_backend *b) {
    if (b->kernels == KERNELS_REFERENCE || b->precision != LCM_PRECISION_BF16 ||
        !attention_flash_available(LCM_PRECISION_BF16))
        return LCM_PRECISION_FP32;
    backend_tuning_file(); // names the file before the lock is taken below
    pthread_mutex_lock(&lock);
    decision *d = (decision *)attention_decision(b->tune);
    lcm_precision chosen = d && d->chosen == 2 ? LCM_PRECISION_BF16 : LCM_PRECISION_FP32;
    if (d) d->used = true;
    pthread_mutex_unlock(&lock);
    return chosen;
}

void backend_print_decisions(FILE *out) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < decision_count; i++) {
        const decision *d = &decisions[i];
        if (!d->used) continue;
        if (d->op == OP_ATTENTION)
            fprintf(out, "attention bf16 asked, %d tokens x %d    ", d->in, d->out);
        else if (d->op == OP_CONV)
            fprintf(out, "conv   %s %5d->%-5d k%d s%d p%d        ", precision_name(d->precision),
                    d->in, d->out, d->kernel, d->stride, d->padding);
        else
            fprintf(out, "linear %s %5d->%-5d x%-5lld          ", precision_name(d->precision), d->in,
                    d->out, (long long)d->size);
        if (d->gflops > 0) {
            fprintf(out, "%-7s %8.1f GFLOP/s", kernel_name(d->op, d->chosen), d->gflops);
            if (d->runner_up > 0)
                fprintf(out, "   runner-up %-7s %8.1f GFLOP/s", kernel_name(d->op, d->runner_up),
                        d->runner_gflops);
            fputc('\n', out);
        } else {
            fprintf(out, "%-7s (built-in rule)\n", kernel_name(d->op, d->chosen));
        }
    }
    pthread_mutex_unlock(&lock);
}
