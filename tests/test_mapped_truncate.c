// A weights file that shrinks while it is mapped (truncated, or rewritten in place) must give an
// error naming it, never a SIGBUS that kills the process (io/file.h says how). Checked:
//   - st_read_f32 / st_load_f32 of a tensor whose pages now lie past the end of the file;
//   - a tensor used in place (weight_set_map_f32) touched by several threads after the truncation
//     (none of them the one that mapped it): the process lives, the fault is charged to the
//     mapping's owner only (another owner's file read meanwhile stays fine), and the owner's error
//     names the file, also after the file is unmapped;
//   - a whole pipeline (a copy of the fixture model): every .safetensors file cut to its first
//     page after lcm_pipeline_open, then lcm_generate: an error naming a file, or (when this
//     model's loaders kept no weight in place) success with no fault recorded;
//   - the packed-weight cache file cut short during a generation that borrows its arrays (after
//     the first step, from the progress callback): that generation and the next fail naming the
//     cache file; the model opened again rebuilds the cache and makes the same image as before;
//   - a SIGBUS outside any model mapping still kills the process (a child), as before.
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/file.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "io/weights.h"
#include "lcm.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-truncate-XXXXXX";

#define ROWS 256
#define COLS 256 // 256 KB of float32: many pages past the first

static lcm_status fill(void *user, size_t index, float *out, int64_t numel) {
    (void)user, (void)index;
    for (int64_t i = 0; i < numel; i++) out[i] = 1.0f + (float)(i % 7);
    return LCM_OK;
}

static void write_weights(const char *path) {
    st_write_entry e = {.name = "w", .dtype = ST_F32, .ndim = 2, .shape = {ROWS, COLS}};
    CHECK_OK(st_write(path, &e, 1, fill, NULL, NULL));
}

static void check_shrunk_error(lcm_status st, const char *what, const char *path) {
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), path) && strstr(lcm_last_error(), "got shorter"),
          "%s after truncation: %s: %s", what, lcm_status_name(st), lcm_last_error());
    fprintf(stderr, "%s: %s\n", what, lcm_last_error());
    lcm_clear_error();
}

static void test_read_after_truncation(void) {
    char path[300];
    test_path(path, sizeof path, "%s/read.safetensors", tmpdir);
    write_weights(path);
    st_file *f = NULL;
    CHECK_OK(st_open(path, &f));
    if (!f) return;
    const st_tensor *t = st_find(f, "w");
    float *values = malloc(sizeof(float) * ROWS * COLS);
    CHECK_OK(st_read_f32(f, t, values)); // intact: reads fine
    CHECK(values[ROWS * COLS - 1] == 1.0f + (float)((ROWS * COLS - 1) % 7), "last value before truncation");
    CHECK(truncate(path, 4096) == 0, "truncate %s", path);
    check_shrunk_error(st_read_f32(f, t, values), "st_read_f32", path);
    float *loaded = NULL;
    check_shrunk_error(st_load_f32(f, "w", 2, (int64_t[]){ROWS, COLS}, &loaded), "st_load_f32", path);
    CHECK(loaded == NULL, "st_load_f32 handed out values after an error");
    free(values);
    st_close(f);
    // Closed and opened again: the file is now too short for its header, which says so.
    CHECK(st_open(path, &f) != LCM_OK && f == NULL, "the truncated file opened");
    lcm_clear_error();
}

typedef struct reader {
    const float *values;
    size_t begin, end;
    double sum;
} reader;

static void *read_range(void *arg) {
    reader *r = arg;
    for (size_t i = r->begin; i < r->end; i++) r->sum += r->values[i];
    return NULL;
}

// Sums `values` on four threads, each over a quarter.
static double sum_on_threads(const float *values, size_t count) {
    pthread_t threads[4];
    reader readers[4];
    for (int t = 0; t < 4; t++) {
        readers[t] = (reader){values, count * (size_t)t / 4, count * (size_t)(t + 1) / 4, 0};
        CHECK(pthread_create(&threads[t], NULL, read_range, &readers[t]) == 0, "pthread_create");
    }
    double sum = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        sum += readers[t].sum;
    }
    return sum;
}

static void test_in_place_after_truncation(void) {
    // Two files under two owners, as two pipelines of one server: only one file is cut.
    char cut_path[300], kept_path[300];
    test_path(cut_path, sizeof cut_path, "%s/in_place.safetensors", tmpdir);
    test_path(kept_path, sizeof kept_path, "%s/in_place_kept.safetensors", tmpdir);
    write_weights(cut_path);
    write_weights(kept_path);
    io_mapping_owner spoiled = {0}, intact = {0};
    weight_set *cut = NULL, *kept = NULL;
    io_mapping_owner *previous = io_mapping_owner_enter(&spoiled);
    CHECK_OK(weight_set_open_file(cut_path, &cut));
    io_mapping_owner_enter(&intact);
    CHECK_OK(weight_set_open_file(kept_path, &kept));
    io_mapping_owner_enter(previous);
    if (!cut || !kept) return;
    const int64_t shape[2] = {ROWS, COLS};
    const float *w = weight_set_map_f32(cut, "w", 2, shape), *k = weight_set_map_f32(kept, "w", 2, shape);
    CHECK(w && k, "an aligned F32 tensor without patches is used in place");
    if (w && k) {
        double whole = sum_on_threads(k, ROWS * COLS);
        CHECK_OK(io_mapping_owner_check(&spoiled, "reading"));
        // Drop the pages already read (as a low-memory pipeline does), then cut the file.
        weight_set_release_pages(cut);
        weight_set_release_pages(kept);
        CHECK(truncate(cut_path, 4096) == 0, "truncate %s", cut_path);
        unsigned long before = io_mapping_faults();
        // Both read at once on worker threads: the faults land on them, in the cut file only.
        double cut_sum = sum_on_threads(w, ROWS * COLS), kept_sum = sum_on_threads(k, ROWS * COLS);
        fprintf(stderr, "sum over the truncated tensor (zeros past the end): %g of %g\n", cut_sum, whole);
        CHECK(io_mapping_faults() > before, "no fault recorded for reads past the end");
        CHECK(cut_sum < whole, "the cut tensor summed to %g, the whole one to %g", cut_sum, whole);
        check_shrunk_error(io_mapping_owner_check(&spoiled, "reading"), "in place", cut_path);
        CHECK_OK(io_mapping_owner_check(&intact, "reading"));
        CHECK(kept_sum == whole, "the other file read %g, expected %g", kept_sum, whole);
    }
    weight_set_close(cut);
    // The owner's fault outlives the mapping (a load closes its files before its last check).
    if (w) check_shrunk_error(io_mapping_owner_check(&spoiled, "after closing"), "closed", cut_path);
    weight_set_close(kept);
    io_mapping_owner_release(&spoiled);
    io_mapping_owner_release(&intact);
}

// Every .safetensors file under `dir` cut to its first page (header kept, data gone).
static int truncate_weights(const char *dir) {
    char cmd[600], out[8192];
    test_path(cmd, sizeof cmd, "find %s -type f ! -name '*.json' ! -name '*.txt' -exec truncate -s 4096 {} + -print", dir);
    CHECK(test_run(cmd, out, sizeof out) == 0, "%s: %s", cmd, out);
    int n = 0;
    for (const char *p = out; (p = strchr(p, '\n')); p++) n++;
    return n;
}

static void test_pipeline(void) {
    char src[600], model[300], cmd[1400], out[4096];
    test_path(src, sizeof src, "%s/tiny-lcm", test_fixtures());
    test_path(model, sizeof model, "%s/model", tmpdir);
    // A private copy (the fixtures are read-only and shared): configs, tokenizer and weights.
    test_path(cmd, sizeof cmd, "cp -r %s %s && rm -rf %s/golden %s/loras", src, model, model, model);
    if (test_run(cmd, out, sizeof out) != 0) {
        CHECK(0, "%s: %s", cmd, out);
        return;
    }
    lcm_pipeline_options o;
    lcm_pipeline_options_init(&o);
    lcm_pipeline *p = NULL;
    CHECK_OK(lcm_pipeline_open(model, &o, &p));
    if (!p) return;
    int cut = truncate_weights(model);
    CHECK(cut > 0, "no weights file to truncate in %s", model);
    lcm_request r;
    lcm_request_init(&r);
    r.prompt = "a red cube";
    r.width = r.height = 64;
    r.steps = 1;
    unsigned long before = io_mapping_faults();
    lcm_result *result = NULL;
    lcm_status st = lcm_generate(p, &r, &result);
    if (io_mapping_faults() > before) {
        CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), model) && strstr(lcm_last_error(), "got shorter") &&
                  result == NULL,
              "generation over truncated weights: %s: %s", lcm_status_name(st), lcm_last_error());
        fprintf(stderr, "pipeline: %s\n", lcm_last_error());
    } else {
        // Nothing was used in place: the images come from the weights copied at load.
        CHECK(st == LCM_OK, "no fault, yet generation failed: %s", lcm_last_error());
        fprintf(stderr, "pipeline: no weight of this model is used in place; generation unaffected\n");
    }
    lcm_result_free(result);
    lcm_clear_error();
    lcm_pipeline_close(p);

    // Loading the truncated model now: the headers still parse (first page kept) but the data is
    // gone, which the header check reports (nothing is mapped past the end).
    st = lcm_pipeline_open(model, &o, &p);
    CHECK(st != LCM_OK && p == NULL && strstr(lcm_last_error(), model), "truncated model loaded: %s",
          lcm_last_error());
    lcm_clear_error();
}

// The packed-weight cache files of the test's cache folder (discovered by listing).
static int packed_cache_files(char ***names, char *folder, size_t size) {
    test_path(folder, size, "%s/xdg-packed/lcm/packed", tmpdir);
    return test_list_files(folder, "packed-", ".bin", names);
}

typedef struct cut_after_first_step {
    const char *folder;
    char **names;
    int count, cut;
} cut_after_first_step;

// The progress callback: after the first step (the layers have read their arrays from the cache
// file once), every cache file is cut to its header page; the next steps read past its end.
static int cut_cache_files(void *user, int steps_done, int total_steps, double elapsed) {
    (void)total_steps, (void)elapsed;
    cut_after_first_step *c = user;
    if (steps_done != 1) return 0;
    for (int i = 0; i < c->count; i++) {
        char path[700];
        test_path(path, sizeof path, "%s/%s", c->folder, c->names[i]);
        if (truncate(path, 4096) == 0) c->cut++;
    }
    return 0;
}

static void test_packed_cache_during_generation(void) {
    char src[600], model[300], cmd[1400], out[4096], folder[400];
    test_path(src, sizeof src, "%s/tiny-lcm", test_fixtures());
    test_path(model, sizeof model, "%s/cached-model", tmpdir);
    test_path(cmd, sizeof cmd, "cp -r %s %s && rm -rf %s/golden", src, model, model);
    if (test_run(cmd, out, sizeof out) != 0) {
        CHECK(0, "%s: %s", cmd, out);
        return;
    }
    // A cache folder of its own: the cache files listed below are this model's only.
    char xdg[300];
    test_path(xdg, sizeof xdg, "%s/xdg-packed", tmpdir);
    setenv("XDG_CACHE_HOME", xdg, 1);
    lcm_pipeline_options o;
    lcm_pipeline_options_init(&o);
    lcm_request r;
    lcm_request_init(&r);
    r.prompt = "a red cube";
    r.width = r.height = 64;
    r.steps = 3;
    // The first open packs the layers and writes the cache; the image it makes is the reference.
    lcm_pipeline *p = NULL;
    lcm_result *reference = NULL, *result = NULL;
    CHECK_OK(lcm_pipeline_open(model, &o, &p));
    if (p) CHECK_OK(lcm_generate(p, &r, &reference));
    lcm_pipeline_close(p);
    p = NULL;
    if (!reference) return;
    char **names = NULL;
    int count = packed_cache_files(&names, folder, sizeof folder);
    CHECK(count > 0, "no packed-weight cache file written in %s", folder);
    // The second open maps the cache; the generation is cut short under it.
    CHECK_OK(lcm_pipeline_open(model, &o, &p));
    cut_after_first_step cut = {folder, names, count, 0};
    if (p) {
        unsigned long before = io_mapping_faults();
        r.progress = cut_cache_files;
        r.progress_user_data = &cut;
        lcm_status st = lcm_generate(p, &r, &result);
        CHECK(cut.cut == count, "cut %d of %d cache files", cut.cut, count);
        CHECK(io_mapping_faults() > before, "no read past the end of the cut cache file");
        CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), folder) && strstr(lcm_last_error(), "got shorter") &&
                  result == NULL,
              "generation over a cut cache file: %s: %s", lcm_status_name(st), lcm_last_error());
        fprintf(stderr, "cut cache: %s\n", lcm_last_error());
        lcm_result_free(result);
        result = NULL;
        lcm_clear_error();
        // The zeros stay in the mapping: the next request of this pipeline fails the same way.
        r.progress = NULL;
        st = lcm_generate(p, &r, &result);
        CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), folder) && result == NULL,
              "the next generation on the spoiled pipeline: %s: %s", lcm_status_name(st), lcm_last_error());
        lcm_result_free(result);
        result = NULL;
        lcm_clear_error();
    }
    lcm_pipeline_close(p);
    p = NULL;
    test_free_list(names, count);
    // Opened again: the cut file fails its checks and is rebuilt; the image is the reference's.
    CHECK_OK(lcm_pipeline_open(model, &o, &p));
    if (p) CHECK_OK(lcm_generate(p, &r, &result));
    if (result && reference) {
        const lcm_image *a = &result->images[0], *b = &reference->images[0];
        CHECK(a->width == b->width && a->height == b->height &&
                  !memcmp(a->rgb, b->rgb, (size_t)a->width * (size_t)a->height * 3),
              "the image after the rebuild differs from the one before the cut");
    }
    lcm_result_free(result);
    lcm_result_free(reference);
    lcm_pipeline_close(p);
}

// The handler passes faults outside model mappings on: a SIGBUS elsewhere still kills.
static void test_foreign_sigbus_kills(void) {
    char path[300];
    test_path(path, sizeof path, "%s/foreign.bin", tmpdir);
    write_weights(path);
    st_file *f = NULL;
    CHECK_OK(st_open(path, &f)); // installs the handler
    fprintf(stderr, "a child now dies of SIGBUS on purpose (under AddressSanitizer with a 'BUS' report)\n");
    pid_t child = fork();
    if (child == 0) {
        FILE *fp = fopen(path, "rb");
        void *map = fp ? mmap(NULL, 65536, PROT_READ, MAP_PRIVATE, fileno(fp), 0) : MAP_FAILED;
        if (map == MAP_FAILED || truncate(path, 0) != 0) _exit(3);
        volatile const char *c = map;
        _exit(c[8192] == 0 ? 4 : 5); // past the end of a mapping nobody registered
    }
    int status = 0;
    waitpid(child, &status, 0);
    // Killed by SIGBUS; under AddressSanitizer its own SIGBUS report ends the child instead
    // (exit 1, or SIGABRT with abort_on_error). Exits 3-5: set-up failed, or the read survived.
    bool died = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 1);
    CHECK(died, "child status %#x, expected death by SIGBUS", status);
    st_close(f);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    char xdg[300];
    test_path(xdg, sizeof xdg, "%s/xdg", tmpdir);
    setenv("XDG_CACHE_HOME", xdg, 1); // the packed-weight cache of these models goes there
    test_read_after_truncation();
    test_in_place_after_truncation();
    test_pipeline();
    test_packed_cache_during_generation();
    test_foreign_sigbus_kills();
    char cmd[400];
    test_path(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
