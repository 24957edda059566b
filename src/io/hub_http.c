// The HTTP side of hub downloads (io/hub_http.h), as huggingface_hub (v0.20) speaks it:
//   GET  {endpoint}/api/models/{id}/revision/{rev}   JSON: "sha" (commit), "siblings"[].rfilename
//   HEAD {endpoint}/{id}/resolve/{rev}/{path}         not following redirects: ETag (or, for large
//        LFS files answered with a redirect to a CDN, X-Linked-Etag = the sha256 of the content and
//        X-Linked-Size), X-Repo-Commit
//   GET  the same URL, following redirects, with "Range: bytes=N-" to resume a partial blob.
// A blob is written to blobs/ETAG.incomplete and renamed to blobs/ETAG only once its size (and,
// for sha256 ETags, its hash) is right.
#include "io/hub_http.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <unistd.h>

#include "core/error.h"
#include "core/sha256.h"

// ---- one HTTP exchange --------------------------------------------------------------------------

// Where a body goes: memory (API answers), or a blob file with its running sha256.
typedef struct http_sink {
    http_response *response;
    char *memory;
    size_t memory_len, memory_cap;
    FILE *file;
    const char *file_path;
    sha256_ctx *hash;
    int64_t resume_from; // bytes already in the file when the request was sent
    bool restarted;      // the server ignored our Range and sent everything
    int write_errno;     // set when writing the file failed (ENOSPC: disk full)
} http_sink;

static void copy_header_value(char *dst, size_t size, const char *value, size_t len) {
    while (len > 0 && isspace((unsigned char)*value)) value++, len--;
    while (len > 0 && isspace((unsigned char)value[len - 1])) len--;
    // ETags come as "abc" or W/"abc": huggingface_hub keeps what is inside the quotes.
    if (len >= 2 && !strncmp(value, "W/", 2)) value += 2, len -= 2;
    if (len >= 2 && value[0] == '"' && value[len - 1] == '"') value++, len -= 2;
    if (len >= size) len = size - 1;
    memcpy(dst, value, len);
    dst[len] = '\0';
}

static size_t on_header(char *line, size_t size, size_t count, void *user) {
    size_t len = size * count;
    hub_response_header(((http_sink *)user)->response, line, len);
    return len;
}

void hub_response_header(http_response *r, const char *line, size_t len) {
    if (len >= 5 && !strncmp(line, "HTTP/", 5)) { // a new response (after a redirect): start over
        // libcurl's header lines are not NUL-terminated: copy the status code before reading it.
        long status = 0;
        const char *space = memchr(line, ' ', len);
        if (space) {
            char code[16];
            copy_header_value(code, sizeof code, space + 1, len - (size_t)(space + 1 - line));
            status = strtol(code, NULL, 10);
        }
        memset(r, 0, sizeof *r);
        r->status = status;
        r->content_length = r->linked_size = -1;
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return;
    size_t name_len = (size_t)(colon - line);
    const char *value = colon + 1;
    size_t value_len = len - name_len - 1;
    char number[32];
#define HEADER_IS(name) (name_len == strlen(name) && !strncasecmp(line, name, name_len))
    if (HEADER_IS("ETag")) copy_header_value(r->etag, sizeof r->etag, value, value_len);
    else if (HEADER_IS("X-Linked-Etag"))
        copy_header_value(r->linked_etag, sizeof r->linked_etag, value, value_len);
    else if (HEADER_IS("Location"))
        copy_header_value(r->location, sizeof r->location, value, value_len);
    else if (HEADER_IS("X-Repo-Commit"))
        copy_header_value(r->commit, sizeof r->commit, value, value_len);
    else if (HEADER_IS("Content-Length")) {
        copy_header_value(number, sizeof number, value, value_len);
        r->content_length = strtoll(number, NULL, 10);
    } else if (HEADER_IS("X-Linked-Size")) {
        copy_header_value(number, sizeof number, value, value_len);
        r->linked_size = strtoll(number, NULL, 10);
    }
#undef HEADER_IS
}

static size_t on_body(char *data, size_t size, size_t count, void *user) {
    http_sink *sink = user;
    size_t len = size * count;
    long status = sink->response->status;
    if (status < 200 || status >= 300) return len; // an error page: not content
    if (!sink->file) {
        if (sink->memory_len + len + 1 > HUB_API_MAX_BYTES) return 0;
        if (sink->memory_len + len + 1 > sink->memory_cap) {
            size_t cap = (sink->memory_len + len + 1) * 2;
            char *grown = realloc(sink->memory, cap);
            if (!grown) return 0;
            sink->memory = grown, sink->memory_cap = cap;
        }
        memcpy(sink->memory + sink->memory_len, data, len);
        sink->memory_len += len;
        sink->memory[sink->memory_len] = '\0';
        return len;
    }
    if (status == 200 && sink->resume_from > 0 && !sink->restarted) {
        // We asked for a range and got the whole file: drop the partial copy and start over.
        sink->restarted = true;
        if (ftruncate(fileno(sink->file), 0) != 0 || fseek(sink->file, 0, SEEK_SET) != 0) {
            sink->write_errno = errno;
            return 0;
        }
        if (sink->hash) sha256_init(sink->hash);
    }
    if (fwrite(data, 1, len, sink->file) != len) {
        sink->write_errno = errno ? errno : EIO;
        return 0;
    }
    if (sink->hash) sha256_update(sink->hash, data, len);
    return len;
}

static int on_progress(void *user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
    (void)dltotal, (void)ultotal, (void)ulnow;
    hub_session *s = user;
    const lcm_hub_options *o = s->options;
    if (!o->progress || !s->current_file) return 0;
    uint64_t file_done = s->file_start + (uint64_t)dlnow;
    return o->progress(o->user_data, s->current_file, file_done, s->file_total,
                       s->all_before + file_done, s->all_total);
}

// Percent-encodes `text` for a URL path; '/' kept when keep_slash.
static void url_escape(char *dst, size_t size, const char *text, bool keep_slash) {
    size_t n = 0;
    for (const unsigned char *c = (const unsigned char *)text; *c && n + 4 < size; c++) {
        if (isalnum(*c) || strchr("-._~", *c) || (keep_slash && *c == '/')) dst[n++] = (char)*c;
        else n += (size_t)snprintf(dst + n, size - n, "%%%02X", *c);
    }
    dst[n] = '\0';
}

// Performs one request. head: HEAD without following redirects; else GET following them.
static CURLcode http_perform(hub_session *s, const char *url, bool head, http_sink *sink) {
    CURL *c = s->curl;
    curl_easy_reset(c);
    memset(sink->response, 0, sizeof *sink->response);
    sink->response->content_length = sink->response->linked_size = -1;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "lcm.c/1.0");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, head ? 0L : 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
    // A stalled connection (under 1 byte/s for a minute) is an interrupted download, not a hang.
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, sink);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, sink);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    char range[64];
    if (sink->resume_from > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)sink->resume_from);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    return curl_easy_perform(c);
}

// The message for a request that did not get a 2xx answer or failed on the way.
static lcm_status http_failure(hub_session *s, const char *what, const char *url,
                               CURLcode code, const http_response *r) {
    const char *id_hint = s->options->token || getenv("HF_TOKEN") ? "" : " Set HF_TOKEN";
    if (code == CURLE_ABORTED_BY_CALLBACK)
        return lcm_fail(LCM_ERR_CANCELLED, "%s: cancelled; the partial download is kept and resumed next time",
                        what);
    if (code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_CONNECT ||
        code == CURLE_COULDNT_RESOLVE_PROXY || code == CURLE_OPERATION_TIMEDOUT) {
        s->no_network = true;
        return lcm_fail(LCM_ERR_IO,
                        "%s: cannot reach %s (%s): no network? Check the connection (or HF_ENDPOINT), "
                        "or set HF_HUB_OFFLINE=1 to use only models already in the cache",
                        what, s->endpoint, curl_easy_strerror(code));
    }
    if (code != CURLE_OK)
        return lcm_fail(LCM_ERR_IO, "%s: %s failed: %s", what, url, curl_easy_strerror(code));
    if (r->status == 401)
        return lcm_fail(LCM_ERR_IO,
                        "%s: 401 Unauthorized from %s: the repository is private or gated, or the token "
                        "is wrong.%s to an access token from https://huggingface.co/settings/tokens",
                        what, url, *id_hint ? id_hint : " Check HF_TOKEN: set it");
    if (r->status == 403)
        return lcm_fail(LCM_ERR_IO,
                        "%s: 403 Forbidden from %s: the model is gated: accept its conditions on its "
                        "page on the hub with your account, and set HF_TOKEN to a token of that account",
                        what, url);
    if (r->status == 404)
        return lcm_fail(LCM_ERR_IO, "%s: 404 Not Found (%s): check the model id, the revision and "
                        "the file name", what, url);
    return lcm_fail(LCM_ERR_IO, "%s: HTTP %ld from %s", what, r->status, url);
}

void hub_revision_url(const hub_session *s, const hub_repo *repo, char *url, size_t size) {
    char rev[768];
    url_escape(rev, sizeof rev, repo->revision, false);
    if (snprintf(url, size, "%s/api/models/%s/revision/%s", s->endpoint, repo->id, rev) >= (int)size)
        url[0] = '\0'; // curl then fails with a clear "URL malformed"
}

void hub_file_url(const hub_session *s, const hub_repo *repo, const char *path, char *url, size_t size) {
    char rev[768], escaped[1600];
    url_escape(rev, sizeof rev, repo->revision, false);
    url_escape(escaped, sizeof escaped, path, true);
    if (snprintf(url, size, "%s/%s/resolve/%s/%s", s->endpoint, repo->id, rev, escaped) >= (int)size)
        url[0] = '\0'; // curl then fails with a clear "URL malformed"
}

lcm_status hub_http_get_text(hub_session *s, const char *what, const char *url, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    http_response response;
    http_sink sink = {.response = &response};
    CURLcode code = http_perform(s, url, false, &sink);
    if (code != CURLE_OK || response.status != 200) {
        free(sink.memory);
        return http_failure(s, what, url, code, &response);
    }
    *text = sink.memory;
    *len = sink.memory_len;
    return LCM_OK;
}

lcm_status hub_http_head(hub_session *s, const char *what, char *url, size_t size, http_response *r) {
    http_sink sink = {.response = r};
    CURLcode code = http_perform(s, url, true, &sink);
    // A renamed repository answers with a relative redirect to its new name; follow those
    // (as huggingface_hub does) but not the absolute ones to the CDN, whose headers we have.
    for (int hops = 0; code == CURLE_OK && r->status >= 300 && r->status < 400 && !r->linked_etag[0] &&
                       r->location[0] == '/' && hops < 5;
         hops++) {
        if (snprintf(url, size, "%s%s", s->endpoint, r->location) >= (int)size) break;
        code = http_perform(s, url, true, &sink);
    }
    if (code != CURLE_OK || r->status < 200 || r->status >= 400) return http_failure(s, what, url, code, r);
    return LCM_OK;
}

// ---- downloading one blob ----------------------------------------------------------------------

static bool is_sha256_hex(const char *text) {
    if (strlen(text) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)text[i])) return false;
    return true;
}

// Hashes the bytes already in a partial file so a resumed download is still verified whole.
static lcm_status hash_existing(FILE *fp, const char *path, int64_t bytes, sha256_ctx *hash) {
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    if (!buf) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    lcm_status st = fseek(fp, 0, SEEK_SET) == 0 ? LCM_OK : lcm_fail(LCM_ERR_IO, "%s: %s", path, strerror(errno));
    for (int64_t done = 0; st == LCM_OK && done < bytes;) {
        size_t want = bytes - done < CHUNK ? (size_t)(bytes - done) : CHUNK;
        size_t got = fread(buf, 1, want, fp);
        if (got == 0) st = lcm_fail(LCM_ERR_IO, "%s: read failed", path);
        sha256_update(hash, buf, got);
        done += (int64_t)got;
    }
    free(buf);
    if (st == LCM_OK && fseek(fp, 0, SEEK_END) != 0) st = lcm_fail(LCM_ERR_IO, "%s: seek failed", path);
    return st;
}

// Two processes fetching the same blob take turns on CACHE/.locks/models--ORG--NAME/ETAG.lock, the
// lock file huggingface_hub uses (flock), so lcm.c and diffusers never write one blob at once.
static int lock_blob(const hub_repo *repo, const char *etag) {
    char dir[PATH_MAX], path[PATH_MAX + 200];
    const char *slash = strrchr(repo->dir, '/');
    if (!slash) return -1;
    if (snprintf(dir, sizeof dir, "%.*s/.locks/%s", (int)(slash - repo->dir), repo->dir, slash + 1) >=
            (int)sizeof dir ||
        hub_make_dirs(dir) != LCM_OK) {
        error_clear();
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s.lock", dir, etag);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 && flock(fd, LOCK_EX) != 0) {
        close(fd);
        fd = -1;
    }
    return fd; // -1: go on unlocked (a read-only .locks folder must not block downloads)
}

static lcm_status download_blob_locked(hub_session *s, const hub_repo *repo, hub_file *f,
                                       const char *url);

lcm_status hub_download_blob(hub_session *s, const hub_repo *repo, hub_file *f, const char *url) {
    int lock = lock_blob(repo, f->etag);
    char blob[PATH_MAX];
    lcm_status st = hub_blob_path(repo, f->etag, blob, sizeof blob);
    // Another process may have finished it while we waited.
    if (st == LCM_OK && !(hub_file_size(blob) >= 0 && (f->size < 0 || hub_file_size(blob) == f->size)))
        st = download_blob_locked(s, repo, f, url);
    if (lock >= 0) close(lock); // releases the flock
    return st;
}

static lcm_status download_blob_locked(hub_session *s, const hub_repo *repo, hub_file *f,
                                       const char *url) {
    char blob[PATH_MAX], partial[PATH_MAX + 16], blobs_dir[PATH_MAX];
    LCM_TRY(hub_blob_path(repo, f->etag, blob, sizeof blob));
    snprintf(partial, sizeof partial, "%s.incomplete", blob);
    if (snprintf(blobs_dir, sizeof blobs_dir, "%s/blobs", repo->dir) >= (int)sizeof blobs_dir)
        return lcm_fail(LCM_ERR_IO, "%s: path too long", repo->dir);
    LCM_TRY(hub_make_dirs(blobs_dir));
    int64_t existing = hub_file_size(partial);
    if (existing < 0 || (f->size >= 0 && existing > f->size)) existing = 0;
    FILE *fp = fopen(partial, existing > 0 ? "r+b" : "wb");
    if (!fp) return lcm_fail(LCM_ERR_IO, "%s: cannot write: %s", partial, strerror(errno));
    bool verify = is_sha256_hex(f->etag);
    sha256_ctx hash;
    sha256_init(&hash);
    lcm_status st = LCM_OK;
    if (existing > 0) {
        st = verify ? hash_existing(fp, partial, existing, &hash)
                    : (fseek(fp, 0, SEEK_END) == 0 ? LCM_OK : lcm_fail(LCM_ERR_IO, "%s: seek", partial));
        if (st != LCM_OK) {
            fclose(fp);
            return st;
        }
    }
    http_response response;
    http_sink sink = {.response = &response, .file = fp, .file_path = partial,
                      .hash = verify ? &hash : NULL, .resume_from = existing};
    s->current_file = f->path;
    s->file_start = (uint64_t)existing;
    s->file_total = f->size >= 0 ? (uint64_t)f->size : 0;
    CURLcode code = http_perform(s, url, false, &sink);
    s->current_file = NULL;
    int close_failed = fflush(fp) != 0 || fsync(fileno(fp)) != 0;
    int close_errno = errno;
    close_failed |= fclose(fp) != 0;
    int64_t got = hub_file_size(partial);
    if (sink.write_errno || close_failed) {
        int err = sink.write_errno ? sink.write_errno : close_errno;
        if (err == ENOSPC || err == EDQUOT)
            return lcm_fail(LCM_ERR_IO,
                            "%s: disk full while writing %s (%lld bytes so far): free space there "
                            "(or point HF_HUB_CACHE elsewhere) and run again; the download resumes",
                            f->path, partial, (long long)(got > 0 ? got : 0));
        return lcm_fail(LCM_ERR_IO, "%s: cannot write %s: %s", f->path, partial, strerror(err));
    }
    if (code == CURLE_OK && response.status == 416) { // our partial copy is not a prefix of theirs
        unlink(partial);
        return lcm_fail(LCM_ERR_IO, "%s: the server refused to resume; the partial file was "
                        "deleted: run again to download it from the start", f->path);
    }
    if (code == CURLE_PARTIAL_FILE || code == CURLE_RECV_ERROR || code == CURLE_GOT_NOTHING ||
        (code == CURLE_OPERATION_TIMEDOUT && got > existing))
        return lcm_fail(LCM_ERR_IO,
                        "%s: download interrupted after %lld of %lld bytes (%s); run the same command "
                        "again to resume it",
                        f->path, (long long)got, (long long)f->size, curl_easy_strerror(code));
    char what[700];
    snprintf(what, sizeof what, "downloading %s", f->path);
    if (code != CURLE_OK || response.status < 200 || response.status >= 300)
        return http_failure(s, what, url, code, &response);
    int64_t expected = f->size >= 0 ? f->size
                       : response.content_length >= 0
                           ? response.content_length + (sink.restarted ? 0 : existing)
                           : got;
    if (got != expected) {
        unlink(partial);
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: downloaded %lld bytes, expected %lld; the file was deleted: run again "
                        "to download it again",
                        f->path, (long long)got, (long long)expected);
    }
    if (verify) {
        uint8_t digest[32];
        char hex[65];
        sha256_final(&hash, digest);
        sha256_hex(digest, hex);
        if (strcasecmp(hex, f->etag)) {
            unlink(partial);
            return lcm_fail(LCM_ERR_FORMAT,
                            "%s: corrupt download: sha256 %s, expected %s; the file was deleted: "
                            "run again to download it again",
                            f->path, hex, f->etag);
        }
    }
    if (rename(partial, blob) != 0)
        return lcm_fail(LCM_ERR_IO, "%s: cannot rename to %s: %s", partial, blob, strerror(errno));
    return LCM_OK;
}

// ---- the session ------------------------------------------------------------------------------

static void init_curl_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

void hub_session_close(hub_session *s) {
    if (s->curl) curl_easy_cleanup(s->curl);
    curl_slist_free_all(s->headers);
}

lcm_status hub_session_open(hub_session *s, const lcm_hub_options *options) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_curl_once);
    memset(s, 0, sizeof *s);
    s->options = options;
    const char *endpoint = options->endpoint ? options->endpoint : getenv("HF_ENDPOINT");
    if (!endpoint || !*endpoint) endpoint = "https://huggingface.co";
    snprintf(s->endpoint, sizeof s->endpoint, "%s", endpoint);
    size_t n = strlen(s->endpoint);
    while (n > 0 && s->endpoint[n - 1] == '/') s->endpoint[--n] = '\0';
    const char *token = options->token ? options->token : getenv("HF_TOKEN");
    if (token && *token) {
        char header[1024];
        snprintf(header, sizeof header, "Authorization: Bearer %s", token);
        s->headers = curl_slist_append(NULL, header);
        if (!s->headers) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (!(s->curl = curl_easy_init())) return lcm_fail(LCM_ERR_INTERNAL, "libcurl failed to start");
    return LCM_OK;
}
