// The Hugging Face hub cache, laid out as huggingface_hub does (see lcm.h):
//   CACHE/models--ORG--NAME/{refs/REVISION, blobs/ETAG, snapshots/COMMIT/PATH -> ../../blobs/ETAG}
#ifndef LCM_IO_HUB_CACHE_H
#define LCM_IO_HUB_CACHE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "lcm.h"

typedef struct hub_repo {
    char id[256];        // "ORG/NAME"
    char revision[256];  // "main", a tag, or a commit hash
    char dir[PATH_MAX];  // CACHE/models--ORG--NAME
} hub_repo;

// Parses "ORG/NAME[@REVISION]" (`revision`, when not NULL, overrides the id's) and finds the
// cache folder (`cache_dir` NULL = environment). Bad ids are LCM_ERR_INVALID_ARGUMENT.
lcm_status hub_repo_init(const char *id, const char *revision, const char *cache_dir,
                         hub_repo *out);

// The cache root: cache_dir, else $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub.
lcm_status hub_cache_root(const char *cache_dir, char *buf, size_t size);

// Whether `model` is not an existing path and has the form ORG/NAME[@REVISION] (lcm_is_hub_id).
bool hub_is_id(const char *model);

// Whether `text` is a 40-character lowercase hex commit hash.
bool hub_is_commit_hash(const char *text);

// The commit the repo's revision points to in the cache (refs/REVISION, or the revision itself
// when it is a commit hash with a snapshot folder). False when the cache does not know it.
bool hub_cached_commit(const hub_repo *repo, char commit[64]);

// Records refs/REVISION = commit (atomically; nothing for a revision that is a commit hash).
lcm_status hub_write_ref(const hub_repo *repo, const char *commit);

// Paths inside the repo's cache folder.
lcm_status hub_snapshot_path(const hub_repo *repo, const char *commit, const char *file, char *buf,
                             size_t size);
lcm_status hub_blob_path(const hub_repo *repo, const char *etag, char *buf, size_t size);

// Makes snapshots/COMMIT/FILE a relative symlink to ../../blobs/ETAG (with one more ../ per folder
// in FILE), replacing whatever was there.
lcm_status hub_link_snapshot(const hub_repo *repo, const char *commit, const char *file,
                             const char *etag);

// The size of the regular file at `path` (symlinks followed), -1 when there is none.
int64_t hub_file_size(const char *path);

// mkdir -p
lcm_status hub_make_dirs(const char *path);

// A repository file name from the hub is untrusted: it must be a relative path without "." or
// ".." components, empty components or backslashes.
bool hub_is_safe_file_name(const char *name);

#endif
