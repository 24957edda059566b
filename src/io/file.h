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

// ---- mapped model files -------------------------------------------------------------------------
// Weights are read straight from read-only mappings of their files, during loads and (for tensors
// used in place) during every generation. When such a file shrinks while mapped (truncated, or
// rewritten in place by a copy or a download into the same name), touching a page past its new end
// raises SIGBUS, which would kill the process — the server with it.
//
// Why a SIGBUS handler that patches the page, and not the alternatives: checking the size before
// each read still races with the truncation; MAP_PRIVATE gives no protection (pages not yet copied
// still come from the file); and sigsetjmp around loads cannot work, because the faulting access
// is often on an OpenMP worker thread (parallel packing, conversions) or in the middle of a
// generation (in-place weights), where no jump target exists. Instead the handler, for a fault
// inside a registered mapping, maps a zero page over the faulting page (so the access completes,
// reading zeros) and records the fault against that mapping. The reads of that file then fail
// (io_mapping_check, called by the safetensors readers after every conversion), and the pipeline
// fails a load or a generation during which any fault happened (io_mapping_faults) with an error
// naming the file. Faults outside registered mappings go to the previous handler (by default:
// the process dies, as before). At most IO_MAX_MAPPINGS mappings are registered at a time; more
// are mapped unprotected.
#define IO_MAX_MAPPINGS 1024

// Maps `size` (> 0) bytes of `fd` read-only and registers the range under `path` (copied, for
// messages). *out receives the mapping; release it with io_unmap_file.
lcm_status io_map_file(int fd, size_t size, const char *path, void **out);

// Unregisters (when registered) and unmaps. NULL is allowed.
void io_unmap_file(void *mapping, size_t size);

// LCM_ERR_IO naming the file when some page of the mapping that starts at `mapping` lay past the
// file's end when it was touched (the values read there were zeros, not the file's); else LCM_OK.
lcm_status io_mapping_check(const void *mapping);

// How many such faults have happened in this process so far, in any mapping. A caller compares
// the count before and after some work: io_mapping_faults_since says the work read a shrunk file.
unsigned long io_mapping_faults(void);

// LCM_ERR_IO naming the last file that faulted, when faults happened after `before` (a value of
// io_mapping_faults); `what` says what failed ("loading the model").
lcm_status io_mapping_faults_since(unsigned long before, const char *what);

#endif
