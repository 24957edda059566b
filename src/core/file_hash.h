// SHA-256 of files and file ranges through OpenSSL's libcrypto (which uses the CPU's SHA
// instructions where present: GB/s instead of the ~100 MB/s of portable code), for the model
// hashes A1111 writes into infotexts and model sites look models up by.
#ifndef LCM_CORE_FILE_HASH_H
#define LCM_CORE_FILE_HASH_H

#include <stdint.h>

#include "lcm.h"

// SHA-256 of the bytes of `path` from `offset` on, at most `length` of them (UINT64_MAX: to the
// end); a range past the end hashes what there is (possibly nothing), as Python's seek + read
// does. `hex` receives 64 lowercase hex digits + NUL. Errors name the file.
lcm_status file_sha256_range(const char *path, uint64_t offset, uint64_t length, char hex[65]);

// As file_sha256_range, but remembered between runs, as A1111 keeps its cache.json: a hash is
// looked up in $XDG_CACHE_HOME/lcm/hashes.txt (default ~/.cache/lcm) by the file's real path,
// size, modification time, device and inode and the range, and appended there after computing it
// (hashing a 3.4 GB UNet takes seconds on every run otherwise). A missing, unreadable or damaged
// list only means hashing again.
lcm_status file_sha256_remembered(const char *path, uint64_t offset, uint64_t length, char hex[65]);

#endif
