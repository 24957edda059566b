// Opening files that must be regular files (model files, configs, images).
#ifndef LCM_IO_FILE_H
#define LCM_IO_FILE_H

#include <stdio.h>

#include "lcm.h"

// Opens `path` for reading and checks that it is a regular file, without ever blocking: a FIFO or
// a device named by mistake (or by a hostile request) is an error, not a hang. On success *fd is
// an open descriptor (close it) and *size the file's size; on failure *fd is -1 and the error
// names the path.
lcm_status io_open_regular(const char *path, int *fd, long long *size);

// The same as a stdio stream (fclose it).
lcm_status io_fopen_regular(const char *path, FILE **out, long long *size);

#endif
