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
// used in place, and for the packed-weight cache's arrays) during every generation. When such a
// file shrinks while mapped (truncated, or rewritten in place by a copy or a download into the same
// name), touching a page past its new end raises SIGBUS, which would kill the process — the server
// with it.
//
// Why a SIGBUS handler that patches the page, and not the alternatives: checking the size before
// each read still races with the truncation; MAP_PRIVATE gives no protection (pages not yet copied
// still come from the file); and sigsetjmp around loads cannot work, because the faulting access
// is often on an OpenMP worker thread (parallel packing, conversions) or in the middle of a
// generation (in-place weights), where no jump target exists. Instead the handler, for a fault
// inside a registered mapping, maps a zero page over the faulting page (so the access completes,
// reading zeros) and records the fault against that mapping and its owner. Faults outside
// registered mappings go to the previous handler (by default: the process dies, as before). At
// most IO_MAX_MAPPINGS mappings are registered at a time; more are mapped unprotected.
//
// Which work a fault spoils is found from the address, never from the thread: SIGBUS is delivered
// to the thread that touched the page (often an OpenMP worker, which belongs to no request), and
// another pipeline of the process may be loading or generating at the same time. So every mapping
// is registered under an owner (io_mapping_owner: a pipeline's), taken from the thread that maps
// the file (io_mapping_owner_enter), and a fault is counted against that owner only. An owner's
// faults are sticky: the pages read as zeros stay zeros, so every later use of its weights is
// spoiled too, until the model is loaded again.
#define IO_MAX_MAPPINGS 1024

// The mappings of one model (a pipeline): zero-initialise it, and call io_mapping_owner_release
// after its last mapping is unmapped (it also detaches mappings still registered under it).
typedef struct io_mapping_owner {
    _Atomic unsigned long faults; // pages of its mappings found past the end of their file
    char path[512];               // the first file that faulted, once its mapping is unmapped
} io_mapping_owner;

// Mappings made by the calling thread from now on belong to `owner` (NULL: to none). Returns the
// previous owner, for the caller to restore.
io_mapping_owner *io_mapping_owner_enter(io_mapping_owner *owner);

// LCM_ERR_IO naming the file when any mapping of `owner` faulted so far (its weights read zeros);
// `what` says what failed ("generating"). LCM_OK for NULL.
lcm_status io_mapping_owner_check(const io_mapping_owner *owner, const char *what);

// Detaches the mappings still registered under `owner`, so the handler never touches it again.
void io_mapping_owner_release(io_mapping_owner *owner);

// The handler runs on an alternate signal stack (file.c says why), which each thread needs before
// it touches a mapping: io_map_file prepares its caller; io_prepare_threads_for_faults prepares the
// calling thread and its OpenMP team (call it after omp_set_num_threads, before work that reads
// mappings on the team: a pipeline's load and each generation). Cheap when already done.
void io_prepare_thread_for_faults(void);
void io_prepare_threads_for_faults(void);

// Maps `size` (> 0) bytes of `fd` read-only and registers the range under `path` (copied, for
// messages) and the calling thread's owner. *out receives the mapping; release it with
// io_unmap_file.
lcm_status io_map_file(int fd, size_t size, const char *path, void **out);

// Unregisters (when registered) and unmaps. NULL is allowed.
void io_unmap_file(void *mapping, size_t size);

// LCM_ERR_IO naming the file when some page of the mapping that starts at `mapping` lay past the
// file's end when it was touched (the values read there were zeros, not the file's); else LCM_OK.
lcm_status io_mapping_check(const void *mapping);

// How many such faults have happened in this process so far, in any mapping (for tests and
// diagnostics: which work they spoiled is the owners' business).
unsigned long io_mapping_faults(void);

#endif
