// Pulling from the Hugging Face hub into the huggingface_hub cache (io/hub.h): a diffusers pipeline,
// a CLIP tokenizer, or one model at a repository's root (a TAESD, a ControlNet). The cache answers
// when it has the files (always, offline); otherwise the API's file list for the revision gives
// the files to fetch (io/hub_select.c), HEAD requests their ETags, and what is missing is
// downloaded into blobs/ and linked into snapshots/COMMIT/ (io/hub_http.c), in rounds: the shards
// an index file names come after it.
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/error.h"
#include "io/hub.h"
#include "io/hub_cache.h"
#include "io/hub_http.h"
#include "io/hub_parse.h"

static bool env_offline(const lcm_hub_options *o) {
    const char *v = getenv("HF_HUB_OFFLINE");
    return o->offline || (v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
                                !strcasecmp(v, "on")));
}

// The snapshot the cache has for the repo's revision, when it holds the selection's key files
// (model_index.json; vocab.json and merges.txt; config.json).
static bool cached_snapshot(const hub_repo *repo, hub_selection selection, char *dir, size_t size) {
    static const char *const pipeline[] = {"model_index.json", NULL}, *const tokenizer[] = {"vocab.json", "merges.txt"},
                             *const single_model[] = {"config.json", NULL};
    const char *const *files = selection == HUB_SELECT_TOKENIZER       ? tokenizer
                               : selection == HUB_SELECT_SINGLE_MODEL ? single_model
                                                                      : pipeline;
    char commit[64], file[PATH_MAX];
    if (!hub_cached_commit(repo, commit)) return false;
    for (int i = 0; i < 2 && files[i]; i++)
        if (hub_snapshot_path(repo, commit, files[i], file, sizeof file) != LCM_OK || hub_file_size(file) < 0)
            return false;
    return hub_snapshot_path(repo, commit, NULL, dir, size) == LCM_OK;
}

static lcm_status return_path(const char *path, char **out) {
    if (!(*out = strdup(path))) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    return LCM_OK;
}

// Asks the API for the commit and file list of the revision, and plans the files to fetch.
static lcm_status fetch_revision(hub_session *s, const hub_repo *repo, hub_selection selection,
                                 const char *variant, char commit[64], hub_plan *plan) {
    char url[2048], what[600];
    hub_revision_url(s, repo, url, sizeof url);
    snprintf(what, sizeof what, "%s@%s", repo->id, repo->revision);
    char *text = NULL;
    size_t len = 0;
    lcm_status st = hub_http_get_text(s, what, url, &text, &len);
    if (st == LCM_OK)
        st = hub_plan_from_revision(text ? text : "", len, what, url, selection, variant, commit, plan);
    free(text);
    return st;
}

// Looks at every file of the plan not yet handled: already in the snapshot, or a blob that only
// needs its link, or something to download (its size counted in *bytes).
static lcm_status check_files(hub_session *s, const hub_repo *repo, const char *commit,
                              hub_plan *plan, int from, int *to_fetch, uint64_t *bytes) {
    for (int i = from; i < plan->count; i++) {
        hub_file *f = &plan->files[i];
        char snap[PATH_MAX], url[2600], blob[PATH_MAX];
        LCM_TRY(hub_snapshot_path(repo, commit, f->path, snap, sizeof snap));
        if (hub_file_size(snap) >= 0) { // stat follows the symlink: the blob is there
            f->have = true;
            continue;
        }
        char what[700];
        snprintf(what, sizeof what, "%s: %s", repo->id, f->path);
        hub_file_url(s, repo, f->path, url, sizeof url);
        http_response r;
        LCM_TRY(hub_http_head(s, what, url, sizeof url, &r));
        const char *etag = r.linked_etag[0] ? r.linked_etag : r.etag;
        if (!etag[0] || !hub_is_safe_file_name(etag) || strchr(etag, '/'))
            return lcm_fail(LCM_ERR_FORMAT, "%s: the server gave no usable ETag for %s", what, url);
        snprintf(f->etag, sizeof f->etag, "%s", etag);
        f->size = r.linked_size >= 0 ? r.linked_size : r.status < 300 ? r.content_length : -1;
        LCM_TRY(hub_blob_path(repo, f->etag, blob, sizeof blob));
        int64_t have = hub_file_size(blob);
        if (have >= 0 && (f->size < 0 || have == f->size)) { // same content under another name
            LCM_TRY(hub_link_snapshot(repo, commit, f->path, f->etag));
            f->have = true;
            continue;
        }
        if (have >= 0) unlink(blob); // a blob of the wrong size is corrupt: fetch it again
        (*to_fetch)++;
        if (f->size > 0) *bytes += (uint64_t)f->size;
    }
    return LCM_OK;
}

static lcm_status check_disk_space(const hub_repo *repo, uint64_t bytes) {
    char dir[PATH_MAX + 8];
    snprintf(dir, sizeof dir, "%s/blobs", repo->dir);
    LCM_TRY(hub_make_dirs(dir));
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) return LCM_OK;
    uint64_t free_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    if (free_bytes < bytes)
        return lcm_fail(LCM_ERR_IO,
                        "%s: disk full: the download needs %.1f MB but only %.1f MB are free there; "
                        "free some space or set HF_HUB_CACHE to a larger disk",
                        dir, bytes / 1e6, free_bytes / 1e6);
    return LCM_OK;
}

static lcm_status pull_online(hub_session *s, const hub_repo *repo, hub_selection selection,
                              const char *variant, char **snapshot_dir) {
    char commit[64];
    hub_plan *plan = calloc(1, sizeof *plan);
    if (!plan) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    lcm_status st = fetch_revision(s, repo, selection, variant, commit, plan);
    // Rounds: configs and weights first, then the shards named by any index file just fetched.
    for (int from = 0; st == LCM_OK && from < plan->count;) {
        int to_fetch = 0, end;
        uint64_t bytes = 0;
        st = check_files(s, repo, commit, plan, from, &to_fetch, &bytes);
        end = plan->count;
        if (st == LCM_OK && to_fetch > 0) {
            st = check_disk_space(repo, bytes);
            if (st == LCM_OK && s->options->start)
                s->options->start(s->options->user_data, repo->id, to_fetch, bytes);
            s->all_before = 0;
            s->all_total = bytes;
        }
        for (int i = from; st == LCM_OK && i < end; i++) {
            hub_file *f = &plan->files[i];
            if (f->have) continue;
            char url[2600];
            hub_file_url(s, repo, f->path, url, sizeof url);
            st = hub_download_blob(s, repo, f, url);
            if (st == LCM_OK) st = hub_link_snapshot(repo, commit, f->path, f->etag);
            if (st == LCM_OK && f->size > 0) s->all_before += (uint64_t)f->size;
        }
        for (int i = from; st == LCM_OK && i < end; i++) {
            const char *path = plan->files[i].path;
            size_t len = strlen(path);
            if (len > 11 && !strcmp(path + len - 11, ".index.json")) {
                char snap[PATH_MAX];
                st = hub_snapshot_path(repo, commit, path, snap, sizeof snap);
                if (st == LCM_OK) st = hub_plan_add_shard_file(snap, path, plan);
            }
        }
        from = end;
    }
    free(plan);
    if (st == LCM_OK) st = hub_write_ref(repo, commit);
    char dir[PATH_MAX];
    if (st == LCM_OK) st = hub_snapshot_path(repo, commit, NULL, dir, sizeof dir);
    if (st == LCM_OK) st = return_path(dir, snapshot_dir);
    return st;
}

lcm_status hub_pull_selection(const char *id, const lcm_hub_options *options, hub_selection selection,
                              char **snapshot_dir) {
    *snapshot_dir = NULL;
    lcm_hub_options defaults;
    if (!options) {
        memset(&defaults, 0, sizeof defaults); // lcm_hub_options_init's defaults
        options = &defaults;
    }
    hub_repo repo;
    LCM_TRY(hub_repo_init(id, options->revision, options->cache_dir, &repo));
    char dir[PATH_MAX];
    if (env_offline(options)) {
        if (cached_snapshot(&repo, selection, dir, sizeof dir)) return return_path(dir, snapshot_dir);
        if (selection == HUB_SELECT_TOKENIZER)
            return lcm_fail(LCM_ERR_IO,
                            "%s@%s's tokenizer files are not in the cache (%s) and this run may not use "
                            "the network (HF_HUB_OFFLINE=1)",
                            repo.id, repo.revision, repo.dir);
        if (selection == HUB_SELECT_SINGLE_MODEL) // `lcm pull` fetches pipelines only
            return lcm_fail(LCM_ERR_IO,
                            "%s@%s is not in the cache (%s) and this run may not use the network "
                            "(HF_HUB_OFFLINE=1, or a command that never downloads): run the same "
                            "command once with network access to download it",
                            repo.id, repo.revision, repo.dir);
        return lcm_fail(LCM_ERR_IO,
                        "%s@%s is not in the cache (%s) and this run may not use the network "
                        "(HF_HUB_OFFLINE=1, or a command that never downloads): run `lcm pull %s` "
                        "with network access first",
                        repo.id, repo.revision, repo.dir, repo.id);
    }
    hub_session session;
    lcm_status st = hub_session_open(&session, options);
    if (st == LCM_OK) st = pull_online(&session, &repo, selection, options->variant, snapshot_dir);
    hub_session_close(&session);
    // Without network, a model already in the cache still works (as huggingface_hub does).
    if (st != LCM_OK && session.no_network && cached_snapshot(&repo, selection, dir, sizeof dir)) {
        error_clear();
        return return_path(dir, snapshot_dir);
    }
    return st;
}

lcm_status hub_resolve(const char *model, const lcm_hub_options *options, hub_selection selection,
                       char **path) {
    *path = NULL;
    if (!model || !*model) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "no model given");
    if (access(model, F_OK) == 0) return return_path(model, path);
    if (!hub_is_id(model))
        return lcm_fail(LCM_ERR_IO,
                        "%s: no such file or folder (and not a hub id ORG/NAME[@REVISION])", model);
    return hub_pull_selection(model, options, selection, path);
}
