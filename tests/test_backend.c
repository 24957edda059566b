// The kernel backend (ops/backend.h): its tuning cache file, determinism, every kernel family on the
// fixture pipelines, and oneDNN layers at the real model's shapes never running a reference kernel.
//
//  1. The cache file, each case in a private XDG_CACHE_HOME, through `lcm generate` child processes
//     (the backend reads its table once per process): created when missing (header line, no notice,
//     no stray temporary files), read back unchanged with the same image bytes; corrupt (garbage,
//     a truncated line, huge numbers, an overlong line, an empty file) and foreign (another CPU or
//     version in the header) files give one "measuring again" notice, a successful run and a valid
//     rewritten file; an unwritable cache folder still generates; LCM_TUNE=off writes nothing and
//     is deterministic.
//  2. The same PNG bytes with --threads 1 and --threads 2 on one cache folder.
//  3. Each golden pipeline case with every conv and linear layer forced onto each kernel family the
//     CPU runs (LCM_CONV_KERNEL / LCM_LINEAR_KERNEL = direct, onednn, sgemm): within 2 of 255 of the
//     tuned run, and within the golden PNG's tolerance; plus the forcing itself, in process.
//  4. oneDNN conv and linear layers at the shapes of the real UNet and VAE (channel lists from the
//     fixture configs of the full-size LCM model), fp32 and bf16 (AVX512-BF16 only), each run at two
//     or more input sizes on the same layer, largest first (the largest checked on a sample of its
//     outputs): never a oneDNN reference kernel, the reference kernels' result within tolerance,
//     and the first size's bits unchanged after the others ran. Linear layers also run on one
//     thread; bits that differ from the multi-threaded run are reported (NOTE), not failed: the
//     end-to-end --threads check of 2 is the contract.
//
// Run time on 2 cores: about 10 s of `lcm generate` runs and 10 s of layers (Release).
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "golden.h"
#include "io/image.h"
#include "io/json_config.h"
#include "ops/backend.h"
#include "ops/cpu.h"
#include "ops/dnnl_layer.h"
#include "ops/ops.h"
#include "testutil.h"
#include "generate_cases.h"

static char tmpdir[] = "/tmp/lcm-test-backend-XXXXXX";

// ---- small helpers ---------------------------------------------------------------------------

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// A fresh folder under tmpdir.
static void make_folder(char *buf, size_t size, const char *name) {
    test_path(buf, size, "%s/%s", tmpdir, name);
    CHECK(mkdir(buf, 0700) == 0, "mkdir %s: %s", buf, strerror(errno));
}

// ---- the table file ------------------------------------------------------------------------------

typedef struct table {
    char *header; // first line, with its newline
    char **keys;  // "op precision in out kernel stride padding size" of each decision, sorted
    int count;
    bool valid;   // every line as the backend writes them
} table;

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Reads a table as the writer's format describes it (a stricter reading than the backend's own).
static table read_table_file(const char *path) {
    table t = {0};
    char *text = test_read_all(path, NULL);
    if (!text) return t;
    char *nl = strchr(text, '\n');
    t.valid = nl != NULL && !strncmp(text, "lcm kernel choices ", 19);
    if (nl) {
        t.header = strndup(text, (size_t)(nl - text + 1));
        int lines = 0;
        for (char *p = nl + 1; *p; p++) lines += *p == '\n';
        t.keys = calloc((size_t)lines + 1, sizeof *t.keys);
        if (!t.header || !t.keys) exit(2);
        for (char *line = nl + 1; *line;) {
            char *end = strchr(line, '\n');
            if (!end) {
                t.valid = false; // the writer ends every line
                break;
            }
            *end = '\0';
            char op[16], precision[8], chosen[16], runner[16];
            int in, out, kernel, stride, padding, consumed = 0;
            long long size;
            double gflops, runner_gflops;
            bool ok = sscanf(line, "%15s %7s %d %d %d %d %d %lld %15s %lf %15s %lf%n", op, precision,
                             &in, &out, &kernel, &stride, &padding, &size, chosen, &gflops, runner,
                             &runner_gflops, &consumed) == 12 &&
                      line[consumed] == '\0' && (!strcmp(op, "conv") || !strcmp(op, "linear")) &&
                      (!strcmp(precision, "fp32") || !strcmp(precision, "bf16")) && in > 0 && out > 0 &&
                      (!strcmp(chosen, "direct") || !strcmp(chosen, "onednn") || !strcmp(chosen, "sgemm")) &&
                      gflops > 0 && isfinite(gflops) && isfinite(runner_gflops);
            if (!ok) {
                fprintf(stderr, "%s: bad line '%s'\n", path, line);
                t.valid = false;
            } else if (t.count < lines) {
                char key[160];
                snprintf(key, sizeof key, "%s %s %d %d %d %d %d %lld", op, precision, in, out, kernel,
                         stride, padding, size);
                t.keys[t.count++] = strdup(key);
            }
            line = end + 1;
        }
        qsort(t.keys, (size_t)t.count, sizeof *t.keys, compare_strings);
    }
    free(text);
    return t;
}

static void table_free(table *t) {
    for (int i = 0; i < t->count; i++) free(t->keys[i]);
    free(t->keys);
    free(t->header);
    *t = (table){0};
}

static bool same_keys(const table *a, const table *b) {
    if (a->count != b->count) return false;
    for (int i = 0; i < a->count; i++)
        if (strcmp(a->keys[i], b->keys[i])) return false;
    return true;
}

// ---- 1 and 2: the cache file and thread counts ----------------------------------------------------

typedef struct cache_state {
    const gen_case *g;
    char name[256];     // kernels-<hash>.txt, as lcm named it
    table good;         // the table of a complete run
    char *good_text;    // its bytes
    size_t good_len;
    char default_png[1400]; // the tuned run's image
} cache_state;

// A missing cache is created with its header; the second run reads it, changes nothing and
// computes the same bytes.
static bool test_missing_cache(cache_state *s) {
    char xdg[1200], lcm_dir[1300], out1[1300], out2[1300], err[1300];
    make_folder(xdg, sizeof xdg, "missing");
    test_path(lcm_dir, sizeof lcm_dir, "%s/lcm", xdg);
    test_path(out1, sizeof out1, "%s/first.png", xdg);
    test_path(out2, sizeof out2, "%s/second.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    if (!gen_generate_ok("missing cache", s->g, xdg, NULL, NULL, out1, err)) return false;
    CHECK(test_count_lines_with(err, "measuring again") == 0, "missing cache: a notice on the first run");
    int files = test_count_files(lcm_dir, "kernels-", ".txt");
    CHECK(files == 1, "missing cache: %d kernels-*.txt files in %s, expected 1", files, lcm_dir);
    CHECK(test_count_files(lcm_dir, "", ".tmp") == 0, "missing cache: temporary files left in %s", lcm_dir);
    char **names;
    int n = test_list_files(lcm_dir, "kernels-", ".txt", &names);
    bool found = n == 1;
    if (found) snprintf(s->name, sizeof s->name, "%s", names[0]);
    test_free_list(names, n);
    if (!found) return false;
    // The name the backend of this very process gives it (the same CPU, version and environment).
    const char *own = backend_tuning_file();
    const char *slash = strrchr(own, '/');
    CHECK(slash && !strcmp(slash + 1, s->name), "the file is %s, backend_tuning_file() names %s", s->name, own);
    char path[1600];
    test_path(path, sizeof path, "%s/%s", lcm_dir, s->name);
    s->good = read_table_file(path);
    s->good_text = test_read_all(path, &s->good_len);
    CHECK(s->good.valid && s->good.count > 0, "missing cache: the new file %s is not a valid table (%d lines)",
          path, s->good.count);
    CHECK(s->good.header && strstr(s->good.header, cpu_feature_list()) &&
              strstr(s->good.header, cpu_features_get()->name),
          "header '%s' names neither this CPU (%s) nor its features (%s)", s->good.header ? s->good.header : "",
          cpu_features_get()->name, cpu_feature_list());
    fprintf(stderr, "cache file %s: %d decisions, header %s", s->name, s->good.count,
            s->good.header ? s->good.header : "\n");

    if (gen_generate_ok("existing cache", s->g, xdg, NULL, NULL, out2, err)) {
        CHECK(test_count_lines_with(err, "measuring again") == 0, "existing cache: a notice on the second run");
        CHECK(test_same_bytes(out1, out2), "first run (measuring) and second run (from the file) give different PNG bytes");
        size_t len;
        char *again = test_read_all(path, &len);
        CHECK(again && len == s->good_len && !memcmp(again, s->good_text, len),
              "the second run changed the cache file");
        free(again);
        CHECK(test_count_files(lcm_dir, "", ".tmp") == 0, "existing cache: temporary files left in %s", lcm_dir);
    }
    snprintf(s->default_png, sizeof s->default_png, "%s", out1);
    return s->good.valid && s->good.count > 0;
}

// Writes `text` as the cache file of a fresh folder, runs, and expects one notice, success, an
// image like the tuned one and a valid table in the file's place that a later run reads quietly.
static void check_rebuilt(cache_state *s, const char *label, const char *folder, const char *text,
                          size_t len) {
    char xdg[1200], lcm_dir[1300], path[1600], out[1300], err[1300];
    make_folder(xdg, sizeof xdg, folder);
    test_path(lcm_dir, sizeof lcm_dir, "%s/lcm", xdg);
    mkdir(lcm_dir, 0700);
    test_path(path, sizeof path, "%s/%s", lcm_dir, s->name);
    test_path(out, sizeof out, "%s/out.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    CHECK(test_write_all(path, text, len), "%s: cannot write %s", label, path);
    if (!gen_generate_ok(label, s->g, xdg, NULL, NULL, out, err)) return;
    int notices = test_count_lines_with(err, "measuring again");
    CHECK(notices == 1, "%s: %d lines saying 'measuring again' on stderr, expected 1", label, notices);
    if (notices == 1 && getenv("LCM_TEST_VERBOSE")) {
        char *e = test_read_all(err, NULL);
        fprintf(stderr, "%s: %s", label, e ? e : "");
        free(e);
    }
    gen_check_close_png(label, out, s->default_png);
    table t = read_table_file(path);
    CHECK(t.valid && t.header && !strcmp(t.header, s->good.header),
          "%s: the file was not rewritten as a valid table with this machine's header", label);
    CHECK(same_keys(&t, &s->good), "%s: the rewritten table has %d shapes, a complete one %d", label,
          t.count, s->good.count);
    table_free(&t);
    CHECK(test_count_files(lcm_dir, "", ".tmp") == 0, "%s: temporary files left", label);
    // The rewritten file is read back without a notice.
    if (gen_generate_ok(label, s->g, xdg, NULL, NULL, out, err))
        CHECK(test_count_lines_with(err, "measuring again") == 0, "%s: the rewritten file is not accepted", label);
}

// The good table with `line` inserted after its header (and the rest kept).
static char *with_line(const cache_state *s, const char *line, size_t *len) {
    size_t head = strlen(s->good.header), extra = strlen(line);
    char *text = malloc(s->good_len + extra + 1);
    if (!text) exit(2);
    memcpy(text, s->good_text, head);
    memcpy(text + head, line, extra);
    memcpy(text + head + extra, s->good_text + head, s->good_len - head + 1);
    *len = s->good_len + extra;
    return text;
}

static void test_corrupt_cache(cache_state *s) {
    size_t len;
    char *text = with_line(s, "#!@ garbage \x01\x7f not a decision\n", &len);
    check_rebuilt(s, "corrupt cache (garbage line)", "garbage", text, len);
    free(text);
    // the last line cut in its middle, as a full disk or a crash mid-write would leave it
    text = strdup(s->good_text);
    if (!text) exit(2);
    len = s->good_len - 1; // without the final newline
    char *last = text + len;
    while (last > text && last[-1] != '\n') last--;
    len = (size_t)(last - text) + (s->good_len - 1 - (size_t)(last - text)) / 2;
    text[len] = '\0';
    check_rebuilt(s, "corrupt cache (truncated line)", "truncated", text, len);
    free(text);
    text = with_line(s, "conv fp32 99999999999999999999 32 3 1 1 0 onednn 1.0 - 0\n", &len);
    check_rebuilt(s, "corrupt cache (huge channel count)", "huge-int", text, len);
    free(text);
    text = with_line(s, "linear fp32 32 32 0 0 0 1 direct 1e999 onednn 1.0\n", &len);
    check_rebuilt(s, "corrupt cache (infinite rate)", "huge-float", text, len);
    free(text);
    text = with_line(s, "conv fp32 32 32 3 1 1 0 direct 100000000000000000000000000000000000000000000000000"
                        "0000000000000000000000000000000000000000000000000000000000000000000000000000000"
                        "0000000000000000000000000000000000000000000000000000000000000000000000000000000"
                        "0000000000000000000000000000000000000000000000000000000000000000000000000000000"
                        "0000000000000000000000000000000000000000000000000000000000000000000000000000000"
                        "0000000000000000000000000000000000000000000000000000000000000000000000000000000"
                        "0000000000000000000000000000000000000000000000000000000000000000000000000000000"
                        " onednn 1.0\n", &len);
    check_rebuilt(s, "corrupt cache (overlong line)", "overlong", text, len);
    free(text);
    check_rebuilt(s, "corrupt cache (empty file)", "empty", "", 0);
}

// A valid-looking file at the same path whose header is another machine's or another version's.
static void test_foreign_cache(cache_state *s) {
    const char *header = s->good.header, *bar = strstr(header, " | ");
    const char *bar2 = bar ? strstr(bar + 3, " | ") : NULL;
    CHECK(bar2 != NULL, "header '%s' is not 'lcm kernel choices V | CPU | features | oneDNN'", header);
    if (!bar2) return;
    const char *body = s->good_text + strlen(header);
    size_t body_len = s->good_len - strlen(header);
    char *text = malloc(s->good_len + 256);
    if (!text) exit(2);
    // another CPU
    int n = snprintf(text, 256, "%.*s | Some Other Processor @ 1.00GHz%s", (int)(bar - header), header, bar2);
    memcpy(text + n, body, body_len + 1);
    check_rebuilt(s, "foreign cache (another CPU)", "foreign-cpu", text, (size_t)n + body_len);
    // another kernel version
    n = snprintf(text, 256, "lcm kernel choices 999999%s", bar);
    memcpy(text + n, body, body_len + 1);
    check_rebuilt(s, "foreign cache (another version)", "foreign-version", text, (size_t)n + body_len);
    free(text);
}

// A cache folder that cannot be created or written costs a measurement, never the run.
static void test_unwritable_cache(cache_state *s) {
    char file[1200], out[1300], err[1300], ro[1200], ro_lcm[1300];
    test_path(file, sizeof file, "%s/not-a-folder", tmpdir);
    test_path(out, sizeof out, "%s/unwritable.png", tmpdir);
    test_path(err, sizeof err, "%s/unwritable-stderr.txt", tmpdir);
    CHECK(test_write_all(file, "x", 1), "cannot write %s", file);
    if (gen_generate_ok("XDG_CACHE_HOME is a file", s->g, file, NULL, NULL, out, err))
        gen_check_close_png("XDG_CACHE_HOME is a file", out, s->default_png);
    // $XDG_CACHE_HOME/lcm is a file
    make_folder(ro, sizeof ro, "lcm-is-a-file");
    test_path(ro_lcm, sizeof ro_lcm, "%s/lcm", ro);
    CHECK(test_write_all(ro_lcm, "x", 1), "cannot write %s", ro_lcm);
    if (gen_generate_ok("$XDG_CACHE_HOME/lcm is a file", s->g, ro, NULL, NULL, out, err))
        gen_check_close_png("$XDG_CACHE_HOME/lcm is a file", out, s->default_png);
    // a read-only folder (root writes there anyway: then only the run's success is checked)
    make_folder(ro, sizeof ro, "read-only");
    CHECK(chmod(ro, 0500) == 0, "chmod %s", ro);
    if (gen_generate_ok("read-only cache folder", s->g, ro, NULL, NULL, out, err)) {
        gen_check_close_png("read-only cache folder", out, s->default_png);
        test_path(ro_lcm, sizeof ro_lcm, "%s/lcm", ro);
        if (geteuid() != 0) CHECK(!test_exists(ro_lcm), "something was written in the read-only %s", ro);
        else fprintf(stderr, "read-only cache folder: running as root, whether it stays empty is not checked\n");
    }
    chmod(ro, 0700);
}

// LCM_TUNE=off: the built-in rules, no table file, the same bytes every time.
static void test_tune_off(cache_state *s) {
    char xdg[1200], lcm_dir[1300], out1[1300], out2[1300], err[1300];
    make_folder(xdg, sizeof xdg, "tune-off");
    test_path(lcm_dir, sizeof lcm_dir, "%s/lcm", xdg);
    test_path(out1, sizeof out1, "%s/first.png", xdg);
    test_path(out2, sizeof out2, "%s/second.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    bool ok = gen_generate_ok("LCM_TUNE=off", s->g, xdg, "LCM_TUNE=off ", NULL, out1, err);
    ok = gen_generate_ok("LCM_TUNE=off, again", s->g, xdg, "LCM_TUNE=off ", NULL, out2, err) && ok;
    // (the packed-weight cache, in lcm/packed, is not the tuning table: tests/test_packed_cache.c)
    CHECK(test_count_files(lcm_dir, "kernels-", "") == 0, "LCM_TUNE=off wrote a kernel table into %s", lcm_dir);
    if (ok) {
        CHECK(test_same_bytes(out1, out2), "LCM_TUNE=off: two runs give different PNG bytes");
        gen_check_close_png("LCM_TUNE=off vs tuned", out1, s->default_png);
    }
}

// One cache folder: the first run (1 thread) fills it, the second (2 threads) reads it.
static void test_threads(cache_state *s) {
    char xdg[1200], one[1300], two[1300], err[1300];
    make_folder(xdg, sizeof xdg, "threads");
    test_path(one, sizeof one, "%s/one.png", xdg);
    test_path(two, sizeof two, "%s/two.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    bool ok = gen_generate_ok("--threads 1", s->g, xdg, NULL, "--threads 1", one, err);
    ok = gen_generate_ok("--threads 2", s->g, xdg, NULL, "--threads 2", two, err) && ok;
    if (ok)
        CHECK(test_same_bytes(one, two), "--threads 1 and --threads 2 give different PNG bytes on one cache folder: a "
              "kernel the tuning chose computes thread-dependent bits (see the NOTE lines of the linear "
              "checks below, if any)");
}

// ---- 3: kernel families ------------------------------------------------------------------------

typedef struct family {
    const char *name;
    conv_kernel conv;
    linear_kernel linear;
} family;

static int families(family out[3]) {
    int n = 0;
    if (cpu_has_avx2_fma()) out[n++] = (family){"direct", CONV_KERNEL_DIRECT, LINEAR_KERNEL_DIRECT};
    else fprintf(stderr, "kernel family direct: skipped, this CPU has no AVX2 + FMA\n");
    out[n++] = (family){"onednn", CONV_KERNEL_ONEDNN, LINEAR_KERNEL_ONEDNN};
    out[n++] = (family){"sgemm", CONV_KERNEL_SGEMM, LINEAR_KERNEL_SGEMM};
    return n;
}

// The forcing itself: the environment (read when a backend is made) and a backend's forced_conv /
// forced_linear pick the family's packing.
static void test_forcing(void) {
    family fam[3];
    int n = families(fam);
    for (int f = 0; f < n; f++) {
        for (int how = 0; how < 2; how++) {
            ops_backend b;
            if (how == 0) {
                setenv("LCM_CONV_KERNEL", fam[f].name, 1);
                setenv("LCM_LINEAR_KERNEL", fam[f].name, 1);
                b = ops_backend_from_environment(LCM_PRECISION_FP32);
                unsetenv("LCM_CONV_KERNEL"); // read once: the backend keeps what it was made with
                unsetenv("LCM_LINEAR_KERNEL");
            } else {
                b = ops_backend_from_environment(LCM_PRECISION_FP32);
                b.forced_conv = fam[f].conv;
                b.forced_linear = fam[f].linear;
            }
            const char *by = how ? "forced_conv/forced_linear" : "the environment";
            CHECK(backend_conv_kernel(&b, 32, 48, 3, 1, 1) == fam[f].conv,
                  "%s forced by %s: backend_conv_kernel gives %s", fam[f].name, by,
                  conv_kernel_name(backend_conv_kernel(&b, 32, 48, 3, 1, 1)));
            CHECK(backend_linear_kernel(&b, 32, 48, 77) == fam[f].linear,
                  "%s forced by %s: backend_linear_kernel gives %s", fam[f].name, by,
                  linear_kernel_name(backend_linear_kernel(&b, 32, 48, 77)));
            conv2d c = {.in = 32, .out = 48, .kernel = 3, .stride = 1, .padding = 1};
            c.weight = test_random_floats(48 * 32 * 9, -0.1f, 0.1f);
            CHECK_OK(conv2d_pack(&c, &b));
            bool right = c.impl.family == backend_conv_family(fam[f].conv) && c.impl.state;
            CHECK(right && !c.weight, "conv forced to %s by %s packed for another kernel", fam[f].name, by);
            conv2d_free(&c);
            linear l = {.in = 32, .out = 48};
            l.weight = test_random_floats(48 * 32, -0.1f, 0.1f);
            CHECK_OK(linear_pack(&l, &b));
            // sgemm computes on the plain weight, the others on their packed state
            right = l.impl.family == backend_linear_family(fam[f].linear) &&
                    (l.impl.family->linear_keeps_weight ? l.weight != NULL : l.impl.state != NULL);
            CHECK(right, "linear forced to %s by %s packed for another kernel", fam[f].name, by);
            linear_free(&l);
        }
    }
}

// Every golden case through each family: close to the tuned run and to the golden PNG.
static void test_families(const gen_case *cases, int count, const char *tuned_xdg) {
    family fam[3];
    int n = families(fam);
    char xdg[1200], want[1300], got[1300], err[1300];
    make_folder(xdg, sizeof xdg, "forced");
    test_path(want, sizeof want, "%s/tuned.png", xdg);
    test_path(got, sizeof got, "%s/forced.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    for (int i = 0; i < count; i++) {
        const gen_case *g = &cases[i];
        char what[300];
        snprintf(what, sizeof what, "%.0fx%.0f %.0f steps (tuned)", g->w, g->h, g->steps);
        if (!gen_generate_ok(what, g, tuned_xdg, NULL, NULL, want, err)) continue;
        gen_check_golden_png(what, want, g->golden_png);
        for (int f = 0; f < n; f++) {
            char env[256];
            snprintf(env, sizeof env, "LCM_CONV_KERNEL=%s LCM_LINEAR_KERNEL=%s ", fam[f].name, fam[f].name);
            snprintf(what, sizeof what, "%.0fx%.0f %.0f steps, every layer on %s", g->w, g->h, g->steps,
                     fam[f].name);
            if (!gen_generate_ok(what, g, xdg, env, NULL, got, err)) continue;
            gen_check_close_png(what, got, want);
            gen_check_golden_png(what, got, g->golden_png);
        }
    }
}

// ---- 4: oneDNN at the real model's shapes -----------------------------------------------------------

// Sizes per layer: every candidate size whose forward pass is at most MAX_LAYER_FLOP (and always
// the two smallest) runs against the reference kernels over the whole output; then the largest
// candidate up to MAX_SAMPLED_FLOP runs too, checked on a sample of its outputs (the reference
// convolution of the whole image would cost more than the rest of the test).
#define MAX_LAYER_FLOP 3.0e9
#define MAX_SAMPLED_FLOP 1.0e10
#define SAMPLED_PIXELS 8
#define SAMPLED_CHANNELS 64
#define FP32_TOL 1e-4
#define BF16_TOL 3e-2

typedef struct conv_shape {
    int in, out, kernel, stride, padding;
    const int *sizes; // candidate input sides, ascending, 0-terminated
    const char *model;
} conv_shape;

static const int unet_sides[] = {8, 16, 32, 64, 0};
static const int vae_sides[] = {32, 64, 128, 256, 0};
static const int token_rows[] = {64, 256, 1024, 4096, 0};

typedef struct shape_list {
    conv_shape convs[128];
    int conv_count;
    struct {
        int in, out;
        bool bias;
        const int *rows;
        int fixed_rows; // > 0: one more row count (the text encoder's tokens for k and v)
    } linears[64];
    int linear_count;
} shape_list;

static void add_conv(shape_list *s, const char *model, int in, int out, int kernel, int stride,
                     int padding, const int *sizes) {
    for (int i = 0; i < s->conv_count; i++) {
        const conv_shape *c = &s->convs[i];
        if (c->in == in && c->out == out && c->kernel == kernel && c->stride == stride &&
            c->padding == padding && c->sizes == sizes)
            return;
    }
    if (s->conv_count == (int)(sizeof s->convs / sizeof s->convs[0])) return;
    s->convs[s->conv_count++] = (conv_shape){in, out, kernel, stride, padding, sizes, model};
}

static const int no_rows[] = {0};

static void add_linear(shape_list *s, int in, int out, bool bias, int fixed_rows, const int *rows) {
    for (int i = 0; i < s->linear_count; i++)
        if (s->linears[i].in == in && s->linears[i].out == out && s->linears[i].rows == rows) return;
    if (s->linear_count == (int)(sizeof s->linears / sizeof s->linears[0])) return;
    s->linears[s->linear_count].in = in;
    s->linears[s->linear_count].out = out;
    s->linears[s->linear_count].bias = bias;
    s->linears[s->linear_count].rows = rows;
    s->linears[s->linear_count].fixed_rows = fixed_rows;
    s->linear_count++;
}

// The ResNet, shortcut and downsampling convolutions of a model with these block widths.
static void add_blocks(shape_list *s, const char *model, const int64_t *widths, int count,
                       int down_padding, const int *sizes) {
    for (int i = 0; i < count; i++) {
        int c = (int)widths[i];
        add_conv(s, model, c, c, 3, 1, 1, sizes);
        if (i + 1 < count) add_conv(s, model, c, c, 3, 2, down_padding, sizes);
        if (i > 0 && widths[i - 1] != c) {
            int p = (int)widths[i - 1];
            add_conv(s, model, p, c, 3, 1, 1, sizes); // a block's first conv when it widens
            add_conv(s, model, p, c, 1, 1, 0, sizes); // its shortcut
            add_conv(s, model, c, p, 1, 1, 0, sizes); // the decoder's way back
        }
    }
}

// The full-size LCM model's folder of configs under $LCM_FIXTURES/configs ("" when none).
static void find_configs(const char *root, char *buf, size_t size) {
    char configs[1100];
    buf[0] = '\0';
    test_path(configs, sizeof configs, "%s/configs", root);
    DIR *d = opendir(configs);
    struct dirent *e;
    while (d && !buf[0] && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1300], cls[128];
        test_path(dir, sizeof dir, "%s/%s", configs, e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (!strcmp(cls, "LatentConsistencyModelPipeline")) snprintf(buf, size, "%s", dir);
    }
    if (d) closedir(d);
}

static bool load_shapes(const char *dir, shape_list *s) {
    char path[1400];
    json_config unet, vae, text;
    int64_t unet_widths[8], vae_widths[8], cross = 0, down_padding = 1, tokens = 0, cond_dim = 0;
    int unet_count = 0, vae_count = 0, types = 0;
    const char *block_types[8];
    test_path(path, sizeof path, "%s/unet/config.json", dir);
    CHECK_OK(json_config_load(path, NULL, &unet));
    test_path(path, sizeof path, "%s/vae/config.json", dir);
    CHECK_OK(json_config_load(path, NULL, &vae));
    test_path(path, sizeof path, "%s/text_encoder/config.json", dir);
    CHECK_OK(json_config_load(path, NULL, &text));
    CHECK_OK(json_config_int_array(&unet, "block_out_channels", 1, 65536, unet_widths, 8, &unet_count));
    CHECK_OK(json_config_string_array(&unet, "down_block_types", block_types, 8, &types));
    CHECK_OK(json_config_int(&unet, "cross_attention_dim", 1, 65536, &cross));
    CHECK_OK(json_config_int_or(&unet, "downsample_padding", 1, 0, 8, &down_padding));
    CHECK_OK(json_config_int_or(&unet, "time_cond_proj_dim", 0, 0, 65536, &cond_dim));
    CHECK_OK(json_config_int_array(&vae, "block_out_channels", 1, 65536, vae_widths, 8, &vae_count));
    CHECK_OK(json_config_int(&text, "max_position_embeddings", 1, 65536, &tokens));
    bool ok = unet_count > 0 && vae_count > 0 && types == unet_count && cross > 0 && tokens > 0;
    if (ok) {
        add_blocks(s, "unet", unet_widths, unet_count, (int)down_padding, unet_sides);
        // the VAE encoder pads its downsampling input itself and convolves without padding
        add_blocks(s, "vae", vae_widths, vae_count, 0, vae_sides);
        // The transformer of every cross-attention level: q/out/proj (c -> c), k/v (context -> c)
        // on the prompt's tokens, the GEGLU projection (c -> 8c) and the feed-forward out (4c -> c).
        for (int i = 0; i < unet_count; i++) {
            if (!strstr(block_types[i], "CrossAttn")) continue;
            int c = (int)unet_widths[i];
            add_linear(s, c, c, false, 0, token_rows);
            add_linear(s, (int)cross, c, false, (int)tokens, token_rows);
            add_linear(s, c, 8 * c, true, 0, token_rows);
            add_linear(s, 4 * c, c, true, 0, token_rows);
        }
        // The time embedding, one row: timestep_embedding -> 4 c0 -> 4 c0, the guidance condition
        // into the first width, and each level's projection into its ResNet blocks.
        int temb = 4 * (int)unet_widths[0];
        add_linear(s, (int)unet_widths[0], temb, true, 1, no_rows);
        add_linear(s, temb, temb, true, 1, no_rows);
        if (cond_dim > 0) add_linear(s, (int)cond_dim, (int)unet_widths[0], false, 1, no_rows);
        for (int i = 0; i < unet_count; i++) add_linear(s, temb, (int)unet_widths[i], true, 1, no_rows);
    }
    json_config_free(&unet);
    json_config_free(&vae);
    json_config_free(&text);
    return ok;
}

static float *copy_floats(const float *v, int64_t n) {
    float *c = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!c) exit(2);
    memcpy(c, v, sizeof(float) * (size_t)n);
    return c;
}

// Element (n, c, y, x) of a 4-D tensor in either layout; [row, column] of a 2-D one (n = c = 0).
static float at(const tensor *t, int64_t n, int64_t c, int64_t y, int64_t x) {
    if (t->ndim == 2) return t->data[y * t->shape[1] + x];
    int64_t C = t->shape[1], H = t->shape[2], W = t->shape[3];
    return t->layout == TENSOR_NHWC ? t->data[((n * H + y) * W + x) * C + c]
                                    : t->data[((n * C + c) * H + y) * W + x];
}

// got vs want within rel * max|want|, read in place in either layout (no converted copies: those
// would cost more than the convolutions).
static void compare(const char *what, const tensor *got, const tensor *want, double rel) {
    CHECK(got && want, "%s: NULL result: %s", what, lcm_last_error());
    if (!got || !want) return;
    bool same = got->ndim == want->ndim && (got->ndim == 2 || got->ndim == 4);
    for (int i = 0; same && i < got->ndim; i++) same = got->shape[i] == want->shape[i];
    CHECK(same, "%s: shape differs", what);
    if (!same) return;
    double scale = test_max_abs(want->data, (size_t)tensor_numel(want)), worst = 0;
    double tol = rel * (scale > 0 ? scale : 1);
    int64_t N = got->ndim == 4 ? got->shape[0] : 1, C = got->ndim == 4 ? got->shape[1] : 1;
    int64_t H = got->ndim == 4 ? got->shape[2] : got->shape[0], W = got->shape[got->ndim - 1];
    size_t bad = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++) {
                    double d = fabs((double)at(got, n, c, y, x) - (double)at(want, n, c, y, x));
                    if (!(d <= tol)) bad++;
                    if (d > worst || isnan(d)) worst = d;
                }
    CHECK(bad == 0, "%s: %zu of %lld values off by more than %.3g (max|ref| %.3g): max |diff| %.3g", what,
          bad, (long long)tensor_numel(want), tol, scale, worst);
    if (getenv("LCM_TEST_VERBOSE"))
        fprintf(stderr, "ok %s: max |diff| %.3g of max|ref| %.3g\n", what, worst, scale);
}

static bool same_values(const tensor *a, const tensor *b) {
    return a && b && tensor_numel(a) == tensor_numel(b) && a->layout == b->layout &&
           !memcmp(a->data, b->data, sizeof(float) * (size_t)tensor_numel(a));
}

static double conv_flop(const conv_shape *c, int side) {
    double o = (double)((side + 2 * c->padding - c->kernel) / c->stride + 1);
    return 2.0 * c->in * c->out * c->kernel * c->kernel * o * o;
}

static int runs_done, layers_done, thread_dependent;

// Output positions to sample: the four corners (padding on two sides) and some inside.
static void sample_positions(int64_t oh, int64_t ow, int64_t pos[SAMPLED_PIXELS][2]) {
    int64_t corners[4][2] = {{0, 0}, {0, ow - 1}, {oh - 1, 0}, {oh - 1, ow - 1}};
    for (int i = 0; i < SAMPLED_PIXELS; i++) {
        if (i < 4) {
            pos[i][0] = corners[i][0];
            pos[i][1] = corners[i][1];
        } else {
            pos[i][0] = (int64_t)(test_uniform(0, 1) * (float)oh) % oh;
            pos[i][1] = (int64_t)(test_uniform(0, 1) * (float)ow) % ow;
        }
    }
}

// A sample of conv(x) (x [1, in, side, side], either layout; plain weights) summed in double,
// against `got`.
static void compare_conv_sampled(const char *what, const conv2d *ref, const tensor *x, const tensor *got,
                                 double rel) {
    CHECK(got != NULL, "%s: NULL result: %s", what, lcm_last_error());
    if (!got) return;
    const tensor *g = got;
    int64_t h = x->shape[2], w = x->shape[3], oh = g->shape[2], ow = g->shape[3];
    int64_t pos[SAMPLED_PIXELS][2];
    sample_positions(oh, ow, pos);
    int step = ref->out > SAMPLED_CHANNELS ? ref->out / SAMPLED_CHANNELS : 1, k = ref->kernel;
    float got_v[SAMPLED_PIXELS * SAMPLED_CHANNELS + SAMPLED_PIXELS], want_v[SAMPLED_PIXELS * SAMPLED_CHANNELS + SAMPLED_PIXELS];
    size_t n = 0;
    for (int p = 0; p < SAMPLED_PIXELS; p++)
        for (int o = 0; o < ref->out && n < sizeof got_v / sizeof got_v[0]; o += step) {
            double sum = ref->bias ? ref->bias[o] : 0;
            for (int i = 0; i < ref->in; i++)
                for (int ky = 0; ky < k; ky++) {
                    int64_t iy = pos[p][0] * ref->stride - ref->padding + ky;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < k; kx++) {
                        int64_t ix = pos[p][1] * ref->stride - ref->padding + kx;
                        if (ix < 0 || ix >= w) continue;
                        sum += (double)ref->weight[((int64_t)(o * ref->in + i) * k + ky) * k + kx] *
                               at(x, 0, i, iy, ix);
                    }
                }
            want_v[n] = (float)sum;
            got_v[n++] = at(g, 0, o, pos[p][0], pos[p][1]);
        }
    double scale = test_max_abs(want_v, n);
    test_close(what, got_v, want_v, n, rel * (scale > 0 ? scale : 1), 0);
}

// A sample of rows of x W^T + b (x [rows, in]) summed in double, against `got`.
static void compare_linear_sampled(const char *what, const linear *ref, const tensor *x, const tensor *got,
                                   double rel) {
    CHECK(got != NULL, "%s: NULL result: %s", what, lcm_last_error());
    if (!got) return;
    int64_t rows = x->shape[0], pos[SAMPLED_PIXELS][2];
    sample_positions(rows, 1, pos);
    int step = ref->out > SAMPLED_CHANNELS ? ref->out / SAMPLED_CHANNELS : 1;
    float got_v[SAMPLED_PIXELS * SAMPLED_CHANNELS + SAMPLED_PIXELS], want_v[SAMPLED_PIXELS * SAMPLED_CHANNELS + SAMPLED_PIXELS];
    size_t n = 0;
    for (int p = 0; p < SAMPLED_PIXELS; p++)
        for (int o = 0; o < ref->out && n < sizeof got_v / sizeof got_v[0]; o += step) {
            int64_t r = pos[p][0];
            double sum = ref->bias ? ref->bias[o] : 0;
            for (int i = 0; i < ref->in; i++)
                sum += (double)ref->weight[(int64_t)o * ref->in + i] * x->data[r * ref->in + i];
            want_v[n] = (float)sum;
            got_v[n++] = got->data[r * ref->out + o];
        }
    double scale = test_max_abs(want_v, n);
    test_close(what, got_v, want_v, n, rel * (scale > 0 ? scale : 1), 0);
}

// The sizes to run from a 0-terminated ascending list: all up to `budget` FLOP (at least two),
// then the largest up to MAX_SAMPLED_FLOP (*sampled: its index, else -1). Returns the count.
static int pick_sizes(const int *candidates, double flop_per_unit, bool square, const conv_shape *c,
                      int *sizes, int *sampled) {
    int count = 0;
    *sampled = -1;
    for (int i = 0; candidates[i] && count < 7; i++) {
        double flop = c ? conv_flop(c, candidates[i]) : flop_per_unit * candidates[i] * (square ? candidates[i] : 1);
        if (count < 2 || flop <= MAX_LAYER_FLOP) sizes[count++] = candidates[i];
        else if (flop <= MAX_SAMPLED_FLOP) *sampled = candidates[i];
    }
    if (*sampled > 0) {
        sizes[count] = *sampled;
        *sampled = count++;
    }
    return count;
}

static void check_conv_shape(const conv_shape *c, lcm_precision precision) {
    double start = now();
    const char *pname = precision == LCM_PRECISION_BF16 ? "bf16" : "fp32";
    double tol = precision == LCM_PRECISION_BF16 ? BF16_TOL : FP32_TOL;
    int64_t wn = (int64_t)c->out * c->in * c->kernel * c->kernel;
    float bound = 1.0f / sqrtf((float)(c->in * c->kernel * c->kernel));
    conv2d ref = {.in = c->in, .out = c->out, .kernel = c->kernel, .stride = c->stride, .padding = c->padding};
    ref.weight = test_random_floats(wn, -bound, bound);
    ref.bias = test_random_floats(c->out, -0.5f, 0.5f);
    conv2d fast = ref;
    fast.weight = copy_floats(ref.weight, wn);
    fast.bias = copy_floats(ref.bias, c->out);
    CHECK_OK(conv2d_pack_kernel(&fast, test_backend_for(precision), CONV_KERNEL_ONEDNN));
    dnnl_layer *packed = test_packed_for(&fast.impl, &kernel_family_onednn);
    CHECK(packed && !fast.weight, "%s conv %d->%d k%d s%d: not packed for oneDNN", pname, c->in,
          c->out, c->kernel, c->stride);
    if (!packed) {
        conv2d_free(&ref);
        conv2d_free(&fast);
        return;
    }
    int sides[8], sampled, count = pick_sizes(c->sizes, 0, true, c, sides, &sampled);
    // Largest first, then smaller: each new size comes after a primitive test_exists for another one.
    tensor *first = NULL, *first_x = NULL;
    for (int k = count - 1; k >= 0; k--) {
        int side = sides[k];
        tensor *x = test_random_tensor(4, (int64_t[]){1, c->in, side, side}, -1, 1);
        // random values either way: the sampled size's input is NHWC from the start, the layout
        // the layer computes in (converting it would cost more than the convolution)
        if (k == sampled) x->layout = TENSOR_NHWC;
        tensor *got = conv2d_forward(&fast, x);
        const char *impl = dnnl_layer_impl(packed);
        char what[200];
        snprintf(what, sizeof what, "%s %s conv %d->%d k%d s%d p%d at %dx%d%s (%s)", c->model, pname,
                 c->in, c->out, c->kernel, c->stride, c->padding, side, side,
                 k == sampled ? ", sampled" : "", impl);
        CHECK(!dnnl_impl_is_reference(impl), "%s: a oneDNN reference kernel", what);
        if (k == sampled) {
            compare_conv_sampled(what, &ref, x, got, tol);
        } else {
            tensor *want = conv2d_forward(&ref, x);
            compare(what, got, want, tol);
            tensor_free(want);
        }
        runs_done++;
        if (k == count - 1) {
            first = got;
            first_x = x;
        } else {
            tensor_free(got);
            tensor_free(x);
        }
    }
    // Back to the first size: its primitive and weights are still there and compute the same.
    tensor *again = conv2d_forward(&fast, first_x);
    CHECK(same_values(again, first), "%s conv %d->%d k%d s%d: the first size computes other values "
          "after the others ran", pname, c->in, c->out, c->kernel, c->stride);
    CHECK(!dnnl_impl_is_reference(dnnl_layer_impl(packed)), "reference kernel on the second run");
    int primitives = dnnl_layer_primitive_count(packed), copies = dnnl_layer_weight_copies(packed);
    CHECK(primitives == count, "%s conv %d->%d k%d s%d: %d primitives for %d sizes", pname, c->in, c->out,
          c->kernel, c->stride, primitives, count);
    CHECK(copies >= 1 && copies <= count, "%s conv %d->%d k%d s%d: %d weight copies for %d sizes", pname,
          c->in, c->out, c->kernel, c->stride, copies, count);
    if (getenv("LCM_TEST_VERBOSE"))
        fprintf(stderr, "   %d sizes, %d weight copies, %.2f s\n", count, copies, now() - start);
    tensor_free(again);
    tensor_free(first);
    tensor_free(first_x);
    conv2d_free(&ref);
    conv2d_free(&fast);
    layers_done++;
}

static void check_linear_shape(int in, int out, bool bias, const int *candidates, int fixed_rows,
                               lcm_precision precision) {
    const char *pname = precision == LCM_PRECISION_BF16 ? "bf16" : "fp32";
    double tol = precision == LCM_PRECISION_BF16 ? BF16_TOL : FP32_TOL;
    float bound = 1.0f / sqrtf((float)in);
    linear ref = {.in = in, .out = out};
    ref.weight = test_random_floats((int64_t)out * in, -bound, bound);
    ref.bias = bias ? test_random_floats(out, -0.5f, 0.5f) : NULL;
    linear fast = ref;
    fast.weight = copy_floats(ref.weight, (int64_t)out * in);
    fast.bias = bias ? copy_floats(ref.bias, out) : NULL;
    CHECK_OK(linear_pack_kernel(&fast, test_backend_for(precision), LINEAR_KERNEL_ONEDNN));
    dnnl_layer *packed = test_packed_for(&fast.impl, &kernel_family_onednn);
    CHECK(packed != NULL, "%s linear %d->%d: not packed for oneDNN", pname, in, out);
    if (!packed) {
        linear_free(&ref);
        linear_free(&fast);
        return;
    }
    int rows[9], sampled, count = 0;
    if (fixed_rows > 0) rows[count++] = fixed_rows;
    count += pick_sizes(candidates, 2.0 * in * out, false, NULL, rows + count, &sampled);
    if (sampled >= 0 && fixed_rows > 0) sampled++;
    for (int k = count - 1; k >= 0; k--) {
        tensor *x = test_random_tensor(2, (int64_t[]){rows[k], in}, -1, 1);
        tensor *got = linear_forward(&fast, x);
        const char *impl = dnnl_layer_impl(packed);
        char what[200];
        snprintf(what, sizeof what, "unet %s linear %d->%d%s x %d rows%s (%s)", pname, in, out,
                 bias ? "" : " no bias", rows[k], k == sampled ? ", sampled" : "", impl);
        CHECK(!dnnl_impl_is_reference(impl), "%s: a oneDNN reference kernel", what);
        if (k == sampled) {
            compare_linear_sampled(what, &ref, x, got, tol);
        } else {
            tensor *want = linear_forward(&ref, x);
            compare(what, got, want, tol);
            tensor_free(want);
        }
        runs_done++;
        // The same rows on one thread (a primitive of its own). Not a failure here: backend.h
        // promises thread-independent bits for the kernels it chooses, which the --threads run
        // checks end to end; a oneDNN matmul that splits its sums between threads (gemm:jit on
        // AVX2-only CPUs) breaks that promise wherever tuning picks it, so say so loudly.
        int threads = omp_get_max_threads();
        if (threads > 1 && got) {
            omp_set_num_threads(1);
            tensor *one = linear_forward(&fast, x);
            omp_set_num_threads(threads);
            if (!same_values(one, got)) {
                thread_dependent++;
                fprintf(stderr, "NOTE: %s: 1 and %d threads give different bits (%s)\n", what, threads,
                        dnnl_layer_impl(packed));
            }
            tensor_free(one);
        }
        tensor_free(x);
        tensor_free(got);
    }
    // a copy at most per primitive: one per row count and thread count
    int copies = dnnl_layer_weight_copies(packed), primitives = dnnl_layer_primitive_count(packed);
    CHECK(copies >= 1 && copies <= primitives && primitives <= 2 * count,
          "%s linear %d->%d: %d weight copies and %d primitives for %d row counts", pname, in, out, copies,
          primitives, count);
    linear_free(&ref);
    linear_free(&fast);
    layers_done++;
}

static void test_model_shapes(const char *root) {
    char dir[1400];
    find_configs(root, dir, sizeof dir);
    CHECK(dir[0] != '\0', "no LatentConsistencyModelPipeline config folder under %s/configs", root);
    if (!dir[0]) return;
    shape_list *s = calloc(1, sizeof *s);
    if (!s) exit(2);
    if (!load_shapes(dir, s)) {
        free(s);
        return;
    }
    CHECK(s->conv_count > 0 && s->linear_count > 0, "no shapes from %s", dir);
    lcm_precision precisions[2] = {LCM_PRECISION_FP32, LCM_PRECISION_BF16};
    int np = cpu_has_avx512_bf16() ? 2 : 1;
    if (np == 1) fprintf(stderr, "model shapes in bf16: skipped, this CPU has no AVX512-BF16\n");
    for (int p = 0; p < np; p++) {
        double start = now();
        int before = runs_done;
        for (int i = 0; i < s->conv_count; i++) check_conv_shape(&s->convs[i], precisions[p]);
        for (int i = 0; i < s->linear_count; i++)
            check_linear_shape(s->linears[i].in, s->linears[i].out, s->linears[i].bias, s->linears[i].rows,
                               s->linears[i].fixed_rows, precisions[p]);
        if (thread_dependent)
            fprintf(stderr, "NOTE: %d oneDNN linear runs computed other bits on one thread: a model whose tuning "
                            "picks them computes other bits with --threads 1 than with more (backend.h)\n",
                    thread_dependent);
        thread_dependent = 0;
        fprintf(stderr, "model shapes %s: %d convolutions and %d linear layers of %s, %d runs, %.1f s\n",
                p ? "bf16" : "fp32", s->conv_count, s->linear_count, dir, runs_done - before, now() - start);
    }
    free(s);
}

// ---- main ----------------------------------------------------------------------------------------

int main(void) {
    // The backend under test, whatever the caller's environment says.
    unsetenv("LCM_TUNE");
    unsetenv("LCM_CONV_KERNEL");
    unsetenv("LCM_LINEAR_KERNEL");
    unsetenv("LCM_REFERENCE_KERNELS");
    // As ctest sets it: OpenMP threads that spin while waiting make every run of a busy machine
    // many times slower.
    setenv("OMP_WAIT_POLICY", "passive", 0);
    const char *root = test_fixtures();
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "FATAL: mkdtemp: %s\n", strerror(errno));
        return 2;
    }
    // This process and its children never touch the user's cache.
    char own_cache[1200];
    make_folder(own_cache, sizeof own_cache, "own-cache");
    setenv("XDG_CACHE_HOME", own_cache, 1);

    gen_case *cases = NULL;
    int count = gen_find_cases(root, &cases);
    CHECK(count > 0, "no LCM pipeline golden cases under %s", root);
    double start = now();
    if (count > 0) {
        // The smallest case drives the cache tests.
        int smallest = 0;
        for (int i = 1; i < count; i++)
            if (cases[i].w * cases[i].h * cases[i].steps < cases[smallest].w * cases[smallest].h * cases[smallest].steps)
                smallest = i;
        cache_state s = {.g = &cases[smallest]};
        if (test_missing_cache(&s)) {
            test_corrupt_cache(&s);
            test_foreign_cache(&s);
            test_unwritable_cache(&s);
            test_tune_off(&s);
            test_threads(&s);
            char tuned[1200];
            test_path(tuned, sizeof tuned, "%s/missing", tmpdir);
            test_families(cases, count, tuned);
        }
        table_free(&s.good);
        free(s.good_text);
        fprintf(stderr, "lcm runs: %.1f s\n", now() - start);
    }
    test_forcing();
    test_model_shapes(root);
    for (int i = 0; i < count; i++) free(cases[i].prompt);
    free(cases);

    char cmd[1200];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s' 2>/dev/null; rm -rf '%s'", tmpdir, tmpdir);
    test_run(cmd, NULL, 0);
    fprintf(stderr, "total %.1f s\n", now() - start);
    return test_finish();
}
