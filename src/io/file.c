#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

lcm_status io_open_regular(const char *path, int *fd, long long *size) {
    *fd = -1;
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f < 0) return lcm_fail(LCM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(f, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(f);
        return lcm_fail(LCM_ERR_IO, "%s: not a regular file", path);
    }
    int flags = fcntl(f, F_GETFL);
    if (flags >= 0) fcntl(f, F_SETFL, flags & ~O_NONBLOCK);
    *fd = f;
    if (size) *size = (long long)sb.st_size;
    return LCM_OK;
}

lcm_status io_fopen_regular(const char *path, FILE **out, long long *size) {
    *out = NULL;
    int fd;
    LCM_TRY(io_open_regular(path, &fd, size));
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return lcm_fail(LCM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    *out = f;
    return LCM_OK;
}
