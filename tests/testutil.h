// Small test harness shared by every tests/test_*.c program.
//
// A test program calls CHECK()/CHECK_OK() as often as it likes and ends with `return test_finish();`,
// which prints the plain closing line "N passed, N failed" and returns non-zero on any failure.
#ifndef LCM_TESTUTIL_H
#define LCM_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "lcm.h"
#include "ops/backend.h"
#include "ops/kernel_family.h"

extern int test_passed, test_failed;

void test_check(bool ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define CHECK(cond, ...) test_check((cond), __FILE__, __LINE__, __VA_ARGS__)
#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        lcm_status check_ok_st_ = (expr);                                                          \
        test_check(check_ok_st_ == LCM_OK, __FILE__, __LINE__, "%s -> %s: %s", #expr,              \
                   lcm_status_name(check_ok_st_), lcm_last_error());                               \
    } while (0)

// Prints "N passed, N failed" and returns the process exit code.
int test_finish(void);

// The fixture root: $LCM_FIXTURES, else ../shared/fixtures beside the repository. Exits with a loud
// message if it does not exist, so a missing fixture set can never look like a pass.
const char *test_fixtures(void);

// test_path(buf, "%s/tiny-lcm/golden", root): snprintf into a static-size buffer, aborting on overflow.
void test_path(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// Lists the regular files in `dir` whose names start with `prefix` and end with `suffix`, sorted.
// Returns the count; *names is a malloc'd array of malloc'd strings (free with test_free_list).
// Exits loudly if the directory cannot be read.
int test_list_files(const char *dir, const char *prefix, const char *suffix, char ***names);
void test_free_list(char **names, int count);

// Compares got[] with want[] elementwise: |got-want| <= abs_tol + rel_tol*|want|. Reports the worst
// element and returns true when all pass. NaN in either fails.
bool test_close(const char *what, const float *got, const float *want, size_t n, double abs_tol,
                double rel_tol);

// Max |want| (the scale for "1e-4 * max(abs(ref))" tolerances).
double test_max_abs(const float *want, size_t n);

// Appends `text` to the shell command `cmd` (a buffer of `size` bytes) as one single-quoted word,
// so paths and prompts with spaces or quotes pass through test_run unchanged. Exits loudly when
// the command would not fit (a cut command could run something else).
void test_append_quoted(char *cmd, size_t size, const char *text);

// Path of the built `lcm` binary (from $LCM_BIN, set by ctest).
const char *test_lcm_bin(void);

// The repository and the CMake build folder this test was built from.
const char *test_source_dir(void);
const char *test_build_dir(void);

// Runs a shell command, capturing stdout (up to cap-1 bytes) into out; returns the exit status
// (-1 if it could not be run or was killed by a signal).
int test_run(const char *cmd, char *out, size_t cap);

// Fixed-sequence random inputs for kernel tests (splitmix64 from a fixed seed: a failure
// reproduces). Uniform in [lo, hi); the arrays and tensors are the caller's (free / tensor_free);
// out of memory ends the test program.
float test_uniform(float lo, float hi);
float *test_random_floats(int64_t n, float lo, float hi);
tensor *test_random_tensor(int ndim, const int64_t *shape, float lo, float hi);

// The backend a test loads models with: what `lcm generate` would use in `precision`, read from
// the environment as it is at this call (tests change it). Static storage, overwritten by the next
// call: pass it straight to a loader (loaders only read it during the call).
const ops_backend *test_backend_for(lcm_precision precision);

// The packed state of a layer's kernel when the layer was packed for `family`, else NULL: which
// kernel a layer got, for tests (a oneDNN state is the layer's dnnl_layer).
void *test_packed_for(const layer_kernel *kernel, const kernel_family *family);

// Writes size bytes to `path` (created or replaced), a failed check if it cannot.
void test_write_file(const char *path, const void *data, size_t size);
// The whole file, NUL-terminated (so text can be read as a string; *size excludes the NUL), or
// NULL when it cannot be read. The caller frees it.
char *test_read_file(const char *path, size_t *size);

// A JPEG of width x height pixels of `components` (1: gray, 3: RGB) channels at `quality`; with
// `full_chroma` no chroma subsampling (4:4:4). Returns libjpeg's malloc'd buffer (the caller frees
// it) and its size in *size.
unsigned char *test_encode_jpeg(const uint8_t *pixels, int width, int height, int components, int quality,
                                bool full_chroma, unsigned long *size);

#endif
