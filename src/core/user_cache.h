// The user's cache folder for lcm, shared by everything the program keeps between runs: the
// kernel choices (ops/backend.h), the packed-weight cache (ops/packed_cache.h) and remembered file
// hashes (core/file_hash.h).
#ifndef LCM_CORE_USER_CACHE_H
#define LCM_CORE_USER_CACHE_H

#include <stdbool.h>
#include <stddef.h>

// $XDG_CACHE_HOME/lcm, else $HOME/.cache/lcm; false when neither variable is set (or buf is short).
bool user_cache_folder(char *buf, size_t size);

// mkdir -p: makes `path` and its missing parents (mode 0755); true when it exists afterwards.
bool make_folders(const char *path);

#endif
