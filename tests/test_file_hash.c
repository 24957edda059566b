// file_sha256_remembered (core/file_hash.h): the same hash as file_sha256_range, remembered in
// $XDG_CACHE_HOME/lcm/hashes.txt, recomputed when the file changes (new content and time), and a
// damaged list only means hashing again.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/file_hash.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-test-file-hash-XXXXXX";

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK(f && fputs(text, f) >= 0, "writing %s", path);
    if (f) fclose(f);
}

static void check_same(const char *what, const char *path, uint64_t offset, uint64_t length) {
    char want[65], got[65];
    CHECK_OK(file_sha256_range(path, offset, length, want));
    CHECK_OK(file_sha256_remembered(path, offset, length, got));
    CHECK(!strcmp(want, got), "%s: remembered %s, computed %s", what, got, want);
}

int main(void) {
    if (!mkdtemp(tmpdir)) return 1;
    setenv("XDG_CACHE_HOME", tmpdir, 1);
    char file[256], list[256];
    test_path(file, sizeof file, "%s/model.bin", tmpdir);
    test_path(list, sizeof list, "%s/lcm/hashes.txt", tmpdir);
    write_file(file, "first content of the model file");
    check_same("first", file, 0, UINT64_MAX);
    CHECK(access(list, F_OK) == 0, "no %s written", list);
    check_same("first, from the list", file, 0, UINT64_MAX);
    check_same("a range", file, 6, 7);
    // Same size, new content and a new time: the old line must not answer.
    write_file(file, "other content of the model file");
    struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = time(NULL) + 60}};
    CHECK(utimensat(AT_FDCWD, file, times, 0) == 0, "touching %s", file);
    check_same("changed", file, 0, UINT64_MAX);
    // A damaged list: garbage lines and a line whose hash is not hex.
    write_file(list, "garbage\nzz not hex at all\n");
    check_same("damaged list", file, 0, UINT64_MAX);
    char hex[65];
    CHECK(file_sha256_remembered("/nonexistent/model.bin", 0, UINT64_MAX, hex) != LCM_OK,
          "a missing file must fail");
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
