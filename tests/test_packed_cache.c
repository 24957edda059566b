// The packed-weight cache (ops/packed_cache.h), through `lcm generate` and `lcm cache` child
// processes, each case with its own XDG_CACHE_HOME:
//  1. every golden pipeline case: a cold run writes cache files (no temporaries left), a warm run
//     reads them (writes nothing) and gives the same PNG bytes as the cold run and as --no-cache,
//     within the golden PNG's tolerance; the same in bf16 where the CPU has AVX512-BF16;
//  2. damaged files, each detected with a one-line notice, the run still giving the same bytes and
//     the file rebuilt: truncated, extended, index bytes flipped, the first blob's bytes flipped,
//     garbage, empty, another model's file under this one's name;
//  3. stale: the weights file touched (new modification time) gets a new cache file;
//  4. LCM_CACHE_LIMIT=1 leaves only the file written last; an unwritable cache folder still
//     generates; --no-cache and LCM_CACHE=off write nothing; `lcm cache list` and `clear`;
//  5. a cache entry packed for another kernel than the table now gives its layer is not used.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "generate_cases.h"
#include "ops/cpu.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-test-packed-cache-XXXXXX";

static void make_folder(char *buf, size_t size, const char *name) {
    test_path(buf, size, "%s/%s", tmpdir, name);
    CHECK(mkdir(buf, 0700) == 0, "mkdir %s: %s", buf, strerror(errno));
}

// The cache files (packed-*.bin) in XDG/lcm/packed, sorted; returns the count (at most max).
static int cache_files(const char *xdg, char names[][1400], int max) {
    char dir[1300];
    test_path(dir, sizeof dir, "%s/lcm/packed", xdg);
    if (!test_exists(dir)) return 0;
    char **list;
    int n = test_list_files(dir, "packed-", ".bin", &list);
    for (int i = 0; i < n && i < max; i++) test_path(names[i], 1400, "%s/%s", dir, list[i]);
    test_free_list(list, n);
    return n;
}

static int temporaries(const char *xdg) {
    char dir[1300];
    test_path(dir, sizeof dir, "%s/lcm/packed", xdg);
    DIR *d = opendir(dir);
    int count = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) count += strstr(e->d_name, ".bin.") != NULL;
    if (d) closedir(d);
    return count;
}

static long long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

// ---- 1. cold, warm, --no-cache --------------------------------------------------------------------

// Runs case g cold, warm and without the cache in a fresh folder; returns whether all ran.
static bool check_case(const gen_case *g, int index, const char *precision_args, const char *label) {
    char xdg[1200], name[64], cold[1300], warm[1300], plain[1300], err[1300];
    snprintf(name, sizeof name, "case-%d-%s", index, label);
    make_folder(xdg, sizeof xdg, name);
    test_path(cold, sizeof cold, "%s/cold.png", xdg);
    test_path(warm, sizeof warm, "%s/warm.png", xdg);
    test_path(plain, sizeof plain, "%s/plain.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    char what[1700];
    snprintf(what, sizeof what, "%s (%s) cold", g->golden_png, label);
    if (!gen_generate_ok(what, g, xdg, NULL, precision_args, cold, err)) return false;
    char files[8][1400];
    int n = cache_files(xdg, files, 8);
    CHECK(n >= 1, "%s: no cache file written", what);
    CHECK(temporaries(xdg) == 0, "%s: temporary files left behind", what);
    CHECK(test_count_lines_with(err, "packed-weight cache") == 0, "%s: a notice on a clean first run", what);
    snprintf(what, sizeof what, "%s (%s) warm", g->golden_png, label);
    if (!gen_generate_ok(what, g, xdg, "LCM_VERBOSE=1 ", precision_args, warm, err)) return false;
    CHECK(test_count_lines_with(err, "layers") >= n && test_count_lines_with(err, "wrote") == 0,
          "%s: the cache was not read, or written again (%s)", what, err);
    CHECK(test_same_bytes(cold, warm), "%s: different PNG bytes from the cold run", what);
    char extra[256];
    snprintf(extra, sizeof extra, "%s --no-cache", precision_args ? precision_args : "");
    snprintf(what, sizeof what, "%s (%s) --no-cache", g->golden_png, label);
    if (!gen_generate_ok(what, g, xdg, NULL, extra, plain, err)) return false;
    CHECK(test_same_bytes(cold, plain), "%s: different PNG bytes from the cached runs", what);
    if (!precision_args) gen_check_golden_png(what, warm, g->golden_png);
    return true;
}

// ---- 2. damaged files ---------------------------------------------------------------------------

typedef enum damage { TRUNCATE, EXTEND, FLIP_INDEX, FLIP_BLOB, GARBAGE, EMPTY, FOREIGN } damage;
static const char *const damage_names[] = {"truncated", "extended", "index flipped", "blob flipped",
                                           "garbage", "empty", "foreign"};

static bool flip_byte(const char *path, long long offset) {
    int fd = open(path, O_RDWR);
    unsigned char b = 0;
    bool ok = fd >= 0 && pread(fd, &b, 1, offset) == 1;
    b ^= 0x5a;
    ok = ok && pwrite(fd, &b, 1, offset) == 1;
    if (fd >= 0) close(fd);
    return ok;
}

static bool apply_damage(damage d, const char *path, const char *other) {
    long long size = file_size(path);
    switch (d) {
    case TRUNCATE: return truncate(path, size - 1000) == 0;
    case EXTEND: return truncate(path, size + 4096) == 0;
    case FLIP_INDEX: return flip_byte(path, size - 40); // the index is written last
    case FLIP_BLOB: return flip_byte(path, 4096 + 8); // the first blob starts after the header page
    case GARBAGE: {
        char junk[8192];
        for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)(i * 7 + 3);
        return test_write_all(path, junk, sizeof junk);
    }
    case EMPTY: return test_write_all(path, "", 0);
    case FOREIGN: {
        size_t len;
        char *bytes = test_read_all(other, &len);
        bool ok = bytes && test_write_all(path, bytes, len);
        free(bytes);
        return ok;
    }
    }
    return false;
}


static void check_damage(const gen_case *g, damage d) {
    char xdg[1200], name[64], out[1300], reference[1300], err[1300];
    snprintf(name, sizeof name, "damage-%d", (int)d);
    make_folder(xdg, sizeof xdg, name);
    test_path(reference, sizeof reference, "%s/reference.png", xdg);
    test_path(out, sizeof out, "%s/out.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    if (!gen_generate_ok("damage: first run", g, xdg, NULL, NULL, reference, err)) return;
    char files[8][1400];
    int n = cache_files(xdg, files, 8);
    if (n < 1 || (d == FOREIGN && n < 2)) {
        CHECK(n >= 1, "damage: no cache file to damage");
        return;
    }
    // The largest file (the UNet's) gets the damage; FOREIGN puts another file's bytes in it.
    int victim = 0, other = -1;
    for (int i = 1; i < n && i < 8; i++)
        if (file_size(files[i]) > file_size(files[victim])) victim = i;
    for (int i = 0; i < n && i < 8; i++)
        if (i != victim) other = i;
    CHECK(apply_damage(d, files[victim], other >= 0 ? files[other] : NULL), "damage %s: could not apply",
          damage_names[d]);
    char what[128];
    snprintf(what, sizeof what, "damage %s", damage_names[d]);
    if (!gen_generate_ok(what, g, xdg, NULL, NULL, out, err)) return;
    CHECK(test_count_lines_with(err, "packed-weight cache") == 1,
          "%s: expected one notice about the cache on stderr (%s)", what, err);
    CHECK(test_same_bytes(out, reference), "%s: different PNG bytes", what);
    CHECK(temporaries(xdg) == 0, "%s: temporary files left behind", what);
    // Rebuilt: the next run reads every file without a notice or a write, and gives the same bytes.
    if (!gen_generate_ok(what, g, xdg, "LCM_VERBOSE=1 ", NULL, out, err)) return;
    CHECK(test_count_lines_with(err, "wrote") == 0 && test_count_lines_with(err, "damaged") == 0 &&
              test_count_lines_with(err, "again") == 0,
          "%s: the file was not rebuilt (%s)", what, err);
    CHECK(test_same_bytes(out, reference), "%s: different PNG bytes after the rebuild", what);
}

// ---- 3. stale, 4. limits and commands ------------------------------------------------------------

// A copy of the case's model folder, whose weights can be touched without touching the fixtures.
static bool copy_model(const gen_case *g, char *copy, size_t size) {
    test_path(copy, size, "%s/model-copy", tmpdir);
    char cmd[4200] = "cp -r ";
    test_append_quoted(cmd, sizeof cmd, g->model);
    strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
    test_append_quoted(cmd, sizeof cmd, copy);
    return test_run(cmd, NULL, 0) == 0;
}

static void check_stale(const gen_case *g) {
    gen_case copy = *g;
    if (!copy_model(g, copy.model, sizeof copy.model)) {
        CHECK(false, "stale: could not copy %s", g->model);
        return;
    }
    char xdg[1200], out[1300], out2[1300], err[1300], weights[1400];
    make_folder(xdg, sizeof xdg, "stale");
    test_path(out, sizeof out, "%s/first.png", xdg);
    test_path(out2, sizeof out2, "%s/second.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    if (!gen_generate_ok("stale: first run", &copy, xdg, NULL, NULL, out, err)) return;
    char files[8][1400];
    int before = cache_files(xdg, files, 8);
    test_path(weights, sizeof weights, "%s/unet/diffusion_pytorch_model.safetensors", copy.model);
    struct stat st;
    if (stat(weights, &st) != 0) { // the case's model stores its UNet otherwise: nothing to touch
        fprintf(stderr, "stale: %s not found, skipped\n", weights);
        return;
    }
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = st.st_mtime + 10}};
    CHECK(utimensat(AT_FDCWD, weights, times, 0) == 0, "touching %s", weights);
    if (!gen_generate_ok("stale: after touching the UNet weights", &copy, xdg, "LCM_VERBOSE=1 ", NULL,
                         out2, err))
        return;
    CHECK(cache_files(xdg, files, 8) == before + 1, "stale: touching the weights made no new cache file");
    CHECK(test_count_lines_with(err, "wrote") == 1, "stale: expected exactly the UNet packed again");
    CHECK(test_same_bytes(out, out2), "stale: different PNG bytes");
}

// ---- 5. another kernel choice ------------------------------------------------------------------
// The kernel table is not part of the cache's key (a re-measured table must not throw the packings
// away), so a cache can hold a layer packed for another kernel than the table now gives it. Such an
// entry must not be used: the layer would compute with the cache's kernel, and the same weights
// would give other bits depending on the cache's history (a single-file checkpoint and its folder
// gave images one byte apart). Here: a run writes the table and the cache; every convolution line
// of the table that names a runner-up gets it as its choice; the next run, over that cache, must
// give the bytes of a run with the same table and no cache.

// Swaps the chosen kernel and the runner-up (with their figures) of every "conv" line of the
// kernel tables in XDG/lcm; returns how many lines changed.
static int flip_conv_choices(const char *xdg) {
    char dir[1300];
    test_path(dir, sizeof dir, "%s/lcm", xdg);
    char **tables;
    int n = test_list_files(dir, "kernels-", ".txt", &tables), flipped = 0;
    for (int t = 0; t < n; t++) {
        char path[1500], line[512], out[65536] = "";
        test_path(path, sizeof path, "%s/%s", dir, tables[t]);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        while (fgets(line, sizeof line, f)) {
            char op[16], precision[16], chosen[32], runner[32];
            int a, b, c, d, e, size;
            double chosen_rate, runner_rate;
            if (sscanf(line, "%15s %15s %d %d %d %d %d %d %31s %lf %31s %lf", op, precision, &a, &b, &c, &d, &e,
                       &size, chosen, &chosen_rate, runner, &runner_rate) == 12 &&
                !strcmp(op, "conv") && strcmp(runner, "-")) {
                snprintf(line, sizeof line, "%s %s %d %d %d %d %d %d %s %.3f %s %.3f\n", op, precision, a, b, c,
                         d, e, size, runner, runner_rate, chosen, chosen_rate);
                flipped++;
            }
            strncat(out, line, sizeof out - strlen(out) - 1);
        }
        fclose(f);
        f = fopen(path, "w");
        if (f) {
            fputs(out, f);
            fclose(f);
        }
    }
    test_free_list(tables, n);
    return flipped;
}

static void check_other_choice(const gen_case *g, int index) {
    char xdg[1200], first[1300], cached[1300], plain[1300], err[1300], name[64];
    snprintf(name, sizeof name, "choice-%d", index);
    make_folder(xdg, sizeof xdg, name);
    test_path(first, sizeof first, "%s/first.png", xdg);
    test_path(cached, sizeof cached, "%s/cached.png", xdg);
    test_path(plain, sizeof plain, "%s/plain.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    if (!gen_generate_ok("choice: first run (table and cache written)", g, xdg, NULL, NULL, first, err)) return;
    int flipped = flip_conv_choices(xdg);
    if (flipped == 0) {
        fprintf(stderr, "choice: no convolution with a runner-up in the kernel table on this CPU: skipped\n");
        return;
    }
    if (!gen_generate_ok("choice: the runners-up chosen, over the cache", g, xdg, NULL, NULL, cached, err) ||
        !gen_generate_ok("choice: the runners-up chosen, no cache", g, xdg, NULL, "--no-cache", plain, err))
        return;
    CHECK(test_same_bytes(cached, plain), "choice: with %d convolution choices changed, the run over the "
                                          "cache gave other PNG bytes than the run without it", flipped);
    if (test_same_bytes(first, plain))
        fprintf(stderr, "choice: both kernel choices give the same bytes on %s: the check cannot tell "
                        "the cache's kernel from the table's here\n", g->golden_png);
}

static void check_limits_and_commands(const gen_case *g) {
    char xdg[1200], out[1300], err[1300], listing[4096], cmd[4200];
    make_folder(xdg, sizeof xdg, "limit");
    test_path(out, sizeof out, "%s/out.png", xdg);
    test_path(err, sizeof err, "%s/stderr.txt", xdg);
    char files[8][1400];
    if (gen_generate_ok("LCM_CACHE_LIMIT=1", g, xdg, "LCM_CACHE_LIMIT=1 ", NULL, out, err))
        CHECK(cache_files(xdg, files, 8) == 1, "LCM_CACHE_LIMIT=1: %d files kept, expected the last one",
              cache_files(xdg, files, 8));

    make_folder(xdg, sizeof xdg, "no-cache");
    if (gen_generate_ok("--no-cache", g, xdg, NULL, "--no-cache", out, err))
        CHECK(cache_files(xdg, files, 8) == 0, "--no-cache wrote a cache file");
    if (gen_generate_ok("LCM_CACHE=off", g, xdg, "LCM_CACHE=off ", NULL, out, err))
        CHECK(cache_files(xdg, files, 8) == 0, "LCM_CACHE=off wrote a cache file");

    // XDG_CACHE_HOME is a file: the cache folder cannot be made; the run still succeeds.
    char blocked[1300];
    test_path(blocked, sizeof blocked, "%s/blocked", tmpdir);
    CHECK(test_write_all(blocked, "x", 1), "writing %s", blocked);
    gen_generate_ok("XDG_CACHE_HOME is a file", g, blocked, NULL, NULL, out, err);

    // lcm cache list / clear
    make_folder(xdg, sizeof xdg, "commands");
    if (!gen_generate_ok("before lcm cache", g, xdg, NULL, NULL, out, err)) return;
    int n = cache_files(xdg, files, 8);
    char env[2048] = "";
    test_env_add(env, sizeof env, "XDG_CACHE_HOME", xdg);
    snprintf(cmd, sizeof cmd, "%s", env);
    test_append_quoted(cmd, sizeof cmd, test_lcm_bin());
    strncat(cmd, " cache list", sizeof cmd - strlen(cmd) - 1);
    CHECK(test_run(cmd, listing, sizeof listing) == 0, "lcm cache list failed");
    char expect[64];
    snprintf(expect, sizeof expect, "%d file%s", n, n == 1 ? "" : "s");
    CHECK(strstr(listing, expect) != NULL, "lcm cache list does not say '%s':\n%s", expect, listing);
    for (int i = 0; i < n && i < 8; i++)
        CHECK(strstr(listing, strrchr(files[i], '/') + 1) != NULL, "lcm cache list misses %s", files[i]);
    snprintf(cmd, sizeof cmd, "%s", env);
    test_append_quoted(cmd, sizeof cmd, test_lcm_bin());
    strncat(cmd, " cache clear", sizeof cmd - strlen(cmd) - 1);
    CHECK(test_run(cmd, listing, sizeof listing) == 0 && strstr(listing, "freed") != NULL,
          "lcm cache clear failed: %s", listing);
    char lcm_dir[1300];
    test_path(lcm_dir, sizeof lcm_dir, "%s/lcm", xdg);
    CHECK(cache_files(xdg, files, 8) == 0 && test_count_files(lcm_dir, "kernels-", "") == 0,
          "lcm cache clear left files behind");
    snprintf(cmd, sizeof cmd, "%s", test_lcm_bin());
    strncat(cmd, " cache frobnicate 2>/dev/null", sizeof cmd - strlen(cmd) - 1);
    CHECK(test_run(cmd, NULL, 0) == 2, "lcm cache with a wrong word should exit 2");
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    gen_case *cases = NULL;
    int count = gen_find_cases(test_fixtures(), &cases);
    CHECK(count > 0, "no golden pipeline cases under %s", test_fixtures());
    for (int i = 0; i < count; i++) {
        check_case(&cases[i], i, NULL, "fp32");
        if (cpu_has_avx512_bf16()) check_case(&cases[i], i, "--precision bf16", "bf16");
    }
    if (count > 0) {
        for (int d = TRUNCATE; d <= FOREIGN; d++) check_damage(&cases[0], (damage)d);
        check_stale(&cases[0]);
        check_limits_and_commands(&cases[0]);
    }
    for (int i = 0; i < count; i++) check_other_choice(&cases[i], i);
    for (int i = 0; i < count; i++) free(cases[i].prompt);
    free(cases);
    char cmd[200] = "rm -rf ";
    test_append_quoted(cmd, sizeof cmd, tmpdir);
    if (test_run(cmd, NULL, 0) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
