// Every reader of untrusted files refuses what is not a regular file — without blocking: opening a
// FIFO for reading waits for a writer forever unless the reader takes care.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/file.h"
#include "io/image.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-io-file-XXXXXX";

static void check_refused(lcm_status st, const char *what, const char *path) {
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), path) &&
              strstr(lcm_last_error(), "not a regular file"),
          "%s on a FIFO -> %s: %s", what, lcm_status_name(st), lcm_last_error());
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    // A regression would hang here instead of failing: make it fail.
    alarm(20);
    char fifo[256], dir[256];
    snprintf(fifo, sizeof fifo, "%s/fifo", tmpdir);
    snprintf(dir, sizeof dir, "%s/dir", tmpdir);
    CHECK(mkfifo(fifo, 0600) == 0 && mkdir(dir, 0700) == 0, "mkfifo/mkdir");

    const char *paths[] = {fifo, dir};
    for (int i = 0; i < 2; i++) {
        st_file *f = NULL;
        check_refused(st_open(paths[i], &f), "st_open", paths[i]);
        CHECK(f == NULL, "st_open left a handle");
        char *text = NULL;
        size_t len = 0;
        check_refused(read_text_file(paths[i], 1024, &text, &len), "read_text_file", paths[i]);
        CHECK(text == NULL, "read_text_file left a buffer");
        uint8_t *rgb = NULL;
        int w, h;
        check_refused(image_read_png(paths[i], &rgb, &w, &h), "image_read_png", paths[i]);
        CHECK(rgb == NULL, "image_read_png left pixels");
    }

    // A missing file is an I/O error naming it; a regular file opens and its size is reported.
    int fd;
    long long size = -1;
    char missing[300], regular[300];
    snprintf(missing, sizeof missing, "%s/missing", tmpdir);
    CHECK(io_open_regular(missing, &fd, &size) == LCM_ERR_IO && fd == -1 &&
              strstr(lcm_last_error(), missing), "missing file: %s", lcm_last_error());
    snprintf(regular, sizeof regular, "%s/regular", tmpdir);
    FILE *out = fopen(regular, "w");
    fputs("12345", out);
    fclose(out);
    FILE *in = NULL;
    CHECK_OK(io_fopen_regular(regular, &in, &size));
    char buf[8] = "";
    CHECK(in && size == 5 && fread(buf, 1, sizeof buf, in) == 5 && !memcmp(buf, "12345", 5),
          "regular file: size %lld", size);
    if (in) fclose(in);

    alarm(0);
    unlink(fifo);
    unlink(regular);
    rmdir(dir);
    rmdir(tmpdir);
    return test_finish();
}
