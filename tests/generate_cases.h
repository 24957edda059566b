// Helpers for tests that run `lcm generate` on the fixtures' golden pipeline cases as child
// processes (tests/test_backend.c, tests/test_packed_cache.c): finding the cases, running them with
// an environment, comparing PNGs.
#ifndef LCM_TESTS_GENERATE_CASES_H
#define LCM_TESTS_GENERATE_CASES_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gen_case {
    char model[1024];
    char golden_png[1400];
    char *prompt;
    double seed, steps, guidance, w, h;
} gen_case;

// The whole file (NUL-terminated, malloc'd; *len without the NUL), or NULL.
char *test_read_all(const char *path, size_t *len);
bool test_write_all(const char *path, const char *text, size_t len);
bool test_same_bytes(const char *a, const char *b);
bool test_exists(const char *path);
// Entries of `dir` whose names start with `prefix` and end with `suffix`.
int test_count_files(const char *dir, const char *prefix, const char *suffix);
// Lines of `path` containing `needle`.
int test_count_lines_with(const char *path, const char *needle);

// Every golden pipeline case (with its PNG) of every LatentConsistencyModelPipeline folder under
// `root`; *out malloc'd (prompts too: the test keeps them to the end).
int gen_find_cases(const char *root, gen_case **out);
// Appends NAME='value' and a space to the environment prefix `env`.
void test_env_add(char *env, size_t size, const char *name, const char *value);
// The last command gen_run ran, for messages.
extern char gen_last_command[8192];
// `lcm generate` of case g into `out` (removed first), with the environment prefix `env` and
// `extra` arguments; stderr into `err`. Returns the exit status.
int gen_run(const gen_case *g, const char *env, const char *extra, const char *out, const char *err);
// Runs case g with the cache folder `xdg` (and `more_env`, `extra`), expecting success and a PNG.
bool gen_generate_ok(const char *what, const gen_case *g, const char *xdg, const char *more_env,
                     const char *extra, const char *out, const char *err);
// Largest |difference| of two PNGs' RGB values (-1: unreadable or different sizes); *differ
// counts the values that differ at all, *total all values.
int gen_png_max_diff(const char *a, const char *b, size_t *differ, size_t *total);
// Within 2 of 255 everywhere: the same image through other kernels (float rounding only).
void gen_check_close_png(const char *what, const char *got, const char *want);
// The golden PNG's tolerance (test_cli_generate): every value within 1, at most 0.5% differing.
void gen_check_golden_png(const char *what, const char *got, const char *golden);

#endif
