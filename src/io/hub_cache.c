#include "io/hub_cache.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

// Characters the hub allows in organisation and repository names.
static bool is_name_char(char c) {
    return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.';
}

static bool is_valid_name(const char *begin, size_t len) {
    if (len == 0 || len > 96 || begin[0] == '.' || begin[0] == '-') return false;
    for (size_t i = 0; i < len; i++)
        if (!is_name_char(begin[i])) return false;
    return true;
}

bool hub_is_commit_hash(const char *text) {
    if (strlen(text) != 40) return false;
    for (int i = 0; i < 40; i++)
        if (!isxdigit((unsigned char)text[i]) || isupper((unsigned char)text[i])) return false;
    return true;
}

bool hub_is_id(const char *model) {
    if (!model || access(model, F_OK) == 0) return false;
    const char *slash = strchr(model, '/');
    if (!slash || strchr(slash + 1, '/')) return false;
    const char *at = strchr(slash + 1, '@');
    size_t name_len = at ? (size_t)(at - slash - 1) : strlen(slash + 1);
    if (at && (!at[1] || strchr(at, '/'))) return false;
    return is_valid_name(model, (size_t)(slash - model)) && is_valid_name(slash + 1, name_len);
}

lcm_status hub_cache_root(const char *cache_dir, char *buf, size_t size) {
    const char *hub_cache = getenv("HF_HUB_CACHE"), *hf_home = getenv("HF_HOME");
    const char *home = getenv("HOME");
    int n;
    if (cache_dir && *cache_dir) n = snprintf(buf, size, "%s", cache_dir);
    else if (hub_cache && *hub_cache) n = snprintf(buf, size, "%s", hub_cache);
    else if (hf_home && *hf_home) n = snprintf(buf, size, "%s/hub", hf_home);
    else if (home && *home) n = snprintf(buf, size, "%s/.cache/huggingface/hub", home);
    else
        return lcm_fail(LCM_ERR_IO,
                        "no Hugging Face cache folder: set HF_HUB_CACHE, HF_HOME or HOME");
    if (n < 0 || (size_t)n >= size) return lcm_fail(LCM_ERR_IO, "cache path too long");
    return LCM_OK;
}

lcm_status hub_repo_init(const char *id, const char *revision, const char *cache_dir,
                         hub_repo *out) {
    memset(out, 0, sizeof *out);
    const char *slash = id ? strchr(id, '/') : NULL;
    const char *at = slash ? strchr(slash, '@') : NULL;
    size_t id_len = at ? (size_t)(at - id) : (id ? strlen(id) : 0);
    if (!slash || strchr(slash + 1, '/') || id_len >= sizeof out->id ||
        !is_valid_name(id, (size_t)(slash - id)) ||
        !is_valid_name(slash + 1, id_len - (size_t)(slash + 1 - id)))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "'%s' is not a Hugging Face model id: expected ORG/NAME[@REVISION] such as "
                        "SimianLuo/LCM_Dreamshaper_v7 (or an existing folder or .safetensors file)",
                        id ? id : "(null)");
    memcpy(out->id, id, id_len);
    const char *rev = revision && *revision ? revision : at ? at + 1 : "main";
    if (!*rev || strlen(rev) >= sizeof out->revision || strstr(rev, "..") || rev[0] == '/')
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "'%s': bad revision '%s'", id, rev);
    snprintf(out->revision, sizeof out->revision, "%s", rev);
    char root[PATH_MAX];
    LCM_TRY(hub_cache_root(cache_dir, root, sizeof root));
    // huggingface_hub: "models--" + repo_id with every "/" replaced by "--".
    int n = snprintf(out->dir, sizeof out->dir, "%s/models--%.*s--%s", root,
                     (int)(slash - id), id, out->id + (slash + 1 - id));
    if (n < 0 || (size_t)n >= sizeof out->dir) return lcm_fail(LCM_ERR_IO, "cache path too long");
    return LCM_OK;
}

bool hub_cached_commit(const hub_repo *repo, char commit[64]) {
    char path[PATH_MAX + 300];
    if (hub_is_commit_hash(repo->revision)) {
        snprintf(path, sizeof path, "%s/snapshots/%s", repo->dir, repo->revision);
        if (access(path, F_OK) != 0) return false;
        memcpy(commit, repo->revision, 41);
        return true;
    }
    snprintf(path, sizeof path, "%s/refs/%s", repo->dir, repo->revision);
    FILE *fp = fopen(path, "r");
    if (!fp) return false;
    char text[64] = {0};
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    while (n > 0 && isspace((unsigned char)text[n - 1])) text[--n] = '\0';
    if (!hub_is_commit_hash(text)) return false;
    snprintf(commit, 64, "%s", text);
    return true;
}

int64_t hub_file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : -1;
}

lcm_status hub_make_dirs(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return lcm_fail(LCM_ERR_IO, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return lcm_fail(LCM_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
        if (!saved) break;
        *p = saved;
    }
    return LCM_OK;
}

lcm_status hub_write_ref(const hub_repo *repo, const char *commit) {
    if (hub_is_commit_hash(repo->revision)) return LCM_OK;
    char path[PATH_MAX + 300], tmp[PATH_MAX + 320], dir[PATH_MAX + 300];
    snprintf(path, sizeof path, "%s/refs/%s", repo->dir, repo->revision);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0'; // a revision like "refs/pr/1" has folders
    LCM_TRY(hub_make_dirs(dir));
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "w");
    // huggingface_hub writes the bare hash, no newline.
    if (!fp || fputs(commit, fp) < 0 || fclose(fp) != 0 || rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return lcm_fail(LCM_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    }
    return LCM_OK;
}

lcm_status hub_snapshot_path(const hub_repo *repo, const char *commit, const char *file, char *buf,
                             size_t size) {
    int n = snprintf(buf, size, "%s/snapshots/%s%s%s", repo->dir, commit, file ? "/" : "",
                     file ? file : "");
    if (n < 0 || (size_t)n >= size) return lcm_fail(LCM_ERR_IO, "%s: path too long", repo->dir);
    return LCM_OK;
}

lcm_status hub_blob_path(const hub_repo *repo, const char *etag, char *buf, size_t size) {
    int n = snprintf(buf, size, "%s/blobs/%s", repo->dir, etag);
    if (n < 0 || (size_t)n >= size) return lcm_fail(LCM_ERR_IO, "%s: path too long", repo->dir);
    return LCM_OK;
}

bool hub_is_safe_file_name(const char *name) {
    if (!*name || name[0] == '/' || strchr(name, '\\') || strlen(name) > 512) return false;
    const char *part = name;
    for (;;) {
        const char *end = strchr(part, '/');
        size_t len = end ? (size_t)(end - part) : strlen(part);
        if (len == 0 || (len == 1 && part[0] == '.') || (len == 2 && !strncmp(part, "..", 2)))
            return false;
        if (!end) return true;
        part = end + 1;
    }
}

lcm_status hub_link_snapshot(const hub_repo *repo, const char *commit, const char *file,
                             const char *etag) {
    char link[PATH_MAX], dir[PATH_MAX], target[PATH_MAX];
    LCM_TRY(hub_snapshot_path(repo, commit, file, link, sizeof link));
    snprintf(dir, sizeof dir, "%s", link);
    *strrchr(dir, '/') = '\0';
    LCM_TRY(hub_make_dirs(dir));
    // From snapshots/COMMIT/a/b/file the blobs folder is ../../../blobs (one ../ per folder).
    size_t len = 0;
    target[0] = '\0';
    for (const char *c = file; *c; c++)
        if (*c == '/') len += (size_t)snprintf(target + len, sizeof target - len, "../");
    snprintf(target + len, sizeof target - len, "../../blobs/%s", etag);
    unlink(link);
    if (symlink(target, link) != 0)
        return lcm_fail(LCM_ERR_IO, "%s: cannot create symlink: %s", link, strerror(errno));
    return LCM_OK;
}
