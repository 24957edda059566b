// Downloading from the Hugging Face hub into the huggingface_hub cache: a diffusers pipeline, a CLIP
// tokenizer, or one model at a repository's root (a TAESD, a ControlNet).
//
// The protocol, as huggingface_hub (v0.20) speaks it:
//   GET  {endpoint}/api/models/{id}/revision/{rev}   JSON: "sha" (commit), "siblings"[].rfilename
//   HEAD {endpoint}/{id}/resolve/{rev}/{path}         not following redirects: ETag (or, for large
//        LFS files answered with a redirect to a CDN, X-Linked-Etag = the sha256 of the content and
//        X-Linked-Size), X-Repo-Commit
//   GET  the same URL, following redirects, with "Range: bytes=N-" to resume a partial blob.
// A blob is written to blobs/ETAG.incomplete and renamed to blobs/ETAG only once its size (and,
// for sha256 ETags, its hash) is right; the snapshot then gets a relative symlink to it.
#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "core/error.h"
#include "core/sha256.h"
#include "io/hub.h"
#include "io/hub_cache.h"
#include "io/hub_parse.h"

#define HUB_API_MAX_BYTES (16u << 20)

// ---- one HTTP exchange --------------------------------------------------------------------------

typedef struct hub_session {
    CURL *curl;
    struct curl_slist *headers;
    char endpoint[512];
    const lcm_hub_options *options;
    // progress of the current pull
    const char *current_file;
    uint64_t file_start, file_total, all_before, all_total;
    bool no_network; // a request failed before reaching the server
} hub_session;

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

// ---- the files a pipeline needs -----------------------------------------------------------------

static bool plan_has(const hub_plan *p, const char *path) {
    for (int i = 0; i < p->count; i++)
        if (!strcmp(p->files[i].path, path)) return true;
    return false;
}

static lcm_status plan_add(hub_plan *p, const char *path) {
    if (plan_has(p, path)) return LCM_OK;
    if (p->count == HUB_MAX_FILES) return lcm_fail(LCM_ERR_FORMAT, "too many files to download");
    if (!hub_is_safe_file_name(path))
        return lcm_fail(LCM_ERR_FORMAT, "refusing to download '%s': not a plain relative path", path);
    hub_file *f = &p->files[p->count++];
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->size = -1;
    return LCM_OK;
}

static bool listed(const cJSON *siblings, const char *path) {
    const cJSON *s;
    cJSON_ArrayForEach(s, siblings) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(s, "rfilename");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, path)) return true;
    }
    return false;
}

// One model's weights, NAME = "unet/diffusion_pytorch_model" say, with the variant rule of
// io/weights.c: NAME.VARIANT.safetensors, its .index.json, NAME.safetensors, its .index.json.
static lcm_status plan_weights(const char *label, const cJSON *siblings, const char *variant,
                               const char *name, hub_plan *plan) {
    for (int with_variant = variant && *variant ? 1 : 0; with_variant >= 0; with_variant--) {
        char single[600], index[620];
        snprintf(single, sizeof single, "%s%s%s.safetensors", name, with_variant ? "." : "",
                 with_variant ? variant : "");
        snprintf(index, sizeof index, "%s.index.json", single);
        if (listed(siblings, single)) return plan_add(plan, single);
        if (listed(siblings, index)) return plan_add(plan, index);
    }
    return lcm_fail(LCM_ERR_UNSUPPORTED,
                    "%s has no %s%s%s%s.safetensors weights (lcm.c loads only .safetensors, not "
                    ".bin/.ckpt pickles)",
                    label, name, variant && *variant ? "[." : "", variant && *variant ? variant : "",
                    variant && *variant ? "]" : "");
}

// The configs and tokenizer files of the pipeline, and each component's weights with the variant
// rule of io/weights.c (variant single file, variant index, plain single file, plain index). Safety
// checker, feature extractor, .bin/.ckpt pickles, ONNX and Flax files are never fetched.
static lcm_status plan_files(const char *label, const cJSON *siblings, const char *variant,
                             hub_plan *plan) {
    static const char *required[] = {"model_index.json",     "scheduler/scheduler_config.json",
                                     "tokenizer/vocab.json", "tokenizer/merges.txt",
                                     "text_encoder/config.json", "unet/config.json",
                                     "vae/config.json"};
    static const char *optional[] = {"tokenizer/special_tokens_map.json",
                                     "tokenizer/tokenizer_config.json"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        if (!listed(siblings, required[i]))
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s has no %s: not a Stable Diffusion / LCM pipeline in the diffusers "
                            "layout (model_index.json, scheduler/, tokenizer/, text_encoder/, unet/, "
                            "vae/)",
                            label, required[i]);
        LCM_TRY(plan_add(plan, required[i]));
    }
    for (size_t i = 0; i < sizeof optional / sizeof *optional; i++)
        if (listed(siblings, optional[i])) LCM_TRY(plan_add(plan, optional[i]));
    static const char *const components[] = {"text_encoder/model", "unet/diffusion_pytorch_model",
                                             "vae/diffusion_pytorch_model"};
    for (size_t i = 0; i < sizeof components / sizeof *components; i++)
        LCM_TRY(plan_weights(label, siblings, variant, components[i], plan));
    return LCM_OK;
}

// Only the tokenizer files, at the repository's root (openai/clip-vit-large-patch14 keeps them
// there, next to the 1.7 GB of CLIP weights we never want).
static lcm_status plan_tokenizer_files(const char *label, const cJSON *siblings, hub_plan *plan) {
    static const char *required[] = {"vocab.json", "merges.txt"};
    static const char *optional[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        if (!listed(siblings, required[i]))
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s has no %s at its root: not a CLIP tokenizer repository",
                            label, required[i]);
        LCM_TRY(plan_add(plan, required[i]));
    }
    for (size_t i = 0; i < sizeof optional / sizeof *optional; i++)
        if (listed(siblings, optional[i])) LCM_TRY(plan_add(plan, optional[i]));
    return LCM_OK;
}

// A repository holding one diffusers model at its root (madebyollin/taesd, a ControlNet such as
// lllyasviel/control_v11p_sd15_normalbae): config.json and the weights, variant rule as above.
static lcm_status plan_single_model_files(const char *label, const cJSON *siblings, const char *variant,
                                          hub_plan *plan) {
    if (!listed(siblings, "config.json"))
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s has no config.json at its root: not a single diffusers model (expected "
                        "config.json + diffusion_pytorch_model.safetensors, like madebyollin/taesd)",
                        label);
    LCM_TRY(plan_add(plan, "config.json"));
    return plan_weights(label, siblings, variant, "diffusion_pytorch_model", plan);
}

// After an index file is in the snapshot, the shards it names join the plan.
static lcm_status plan_shards(const char *snapshot_file, const char *path, hub_plan *plan) {
    char *text = NULL;
    size_t len = 0;
    FILE *fp = fopen(snapshot_file, "rb");
    if (!fp) return lcm_fail(LCM_ERR_IO, "%s: %s", snapshot_file, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (size < 0 || size > (long)HUB_API_MAX_BYTES || !(text = malloc((size_t)size + 1))) {
        fclose(fp);
        return lcm_fail(LCM_ERR_FORMAT, "%s: too large or unreadable", snapshot_file);
    }
    len = fread(text, 1, (size_t)size, fp);
    fclose(fp);
    lcm_status st = hub_plan_add_shards(text, len, path, plan);
    free(text);
    return st;
}

lcm_status hub_plan_add_shards(const char *text, size_t len, const char *path, hub_plan *plan) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    lcm_status st = cJSON_IsObject(map) ? LCM_OK
                                        : lcm_fail(LCM_ERR_FORMAT, "%s: no object 'weight_map'", path);
    // The shards sit next to the index: in its folder, or at the root (single-model repos).
    const char *slash = strrchr(path, '/');
    int dir_len = slash ? (int)(slash - path + 1) : 0;
    const cJSON *entry;
    if (st == LCM_OK) cJSON_ArrayForEach(entry, map) {
        char shard[1100];
        if (!cJSON_IsString(entry) || strchr(entry->valuestring, '/')) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: bad shard name for '%s'", path, entry->string);
            break;
        }
        snprintf(shard, sizeof shard, "%.*s%s", dir_len, path, entry->valuestring);
        if ((st = plan_add(plan, shard)) != LCM_OK) break;
    }
    cJSON_Delete(root);
    return st;
}

// ---- downloading one blob ----------------------------------------------------------------------

static bool is_sha256_hex(const char *text) {
    if (strlen(text) != 64) return false;
    for (int i = 0; i < 64; i++)
        if (!isxdigit((unsigned char)text[i])) return false;
    return true;
}

static int64_t file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) ? (int64_t)sb.st_size : -1;
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

static lcm_status download_blob(hub_session *s, const hub_repo *repo, hub_file *f, const char *url) {
    int lock = lock_blob(repo, f->etag);
    char blob[PATH_MAX];
    lcm_status st = hub_blob_path(repo, f->etag, blob, sizeof blob);
    // Another process may have finished it while we waited.
    if (st == LCM_OK && !(file_size(blob) >= 0 && (f->size < 0 || file_size(blob) == f->size)))
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
    int64_t existing = file_size(partial);
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
    int64_t got = file_size(partial);
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

// ---- the pull ----------------------------------------------------------------------------------

static void init_curl_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static void session_close(hub_session *s) {
    if (s->curl) curl_easy_cleanup(s->curl);
    curl_slist_free_all(s->headers);
}

static lcm_status session_open(hub_session *s, const lcm_hub_options *options) {
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
        if (hub_snapshot_path(repo, commit, files[i], file, sizeof file) != LCM_OK || file_size(file) < 0)
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
    char url[2048], rev[768];
    url_escape(rev, sizeof rev, repo->revision, false);
    snprintf(url, sizeof url, "%s/api/models/%s/revision/%s", s->endpoint, repo->id, rev);
    http_response response;
    http_sink sink = {.response = &response};
    CURLcode code = http_perform(s, url, false, &sink);
    char what[600];
    snprintf(what, sizeof what, "%s@%s", repo->id, repo->revision);
    lcm_status st = LCM_OK;
    if (code != CURLE_OK || response.status != 200) st = http_failure(s, what, url, code, &response);
    if (st == LCM_OK)
        st = hub_plan_from_revision(sink.memory ? sink.memory : "", sink.memory_len, what, url, selection,
                                    variant, commit, plan);
    free(sink.memory);
    return st;
}

lcm_status hub_plan_from_revision(const char *text, size_t len, const char *what, const char *url,
                                  hub_selection selection, const char *variant, char commit[64],
                                  hub_plan *plan) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(root, "sha");
    const cJSON *siblings = cJSON_GetObjectItemCaseSensitive(root, "siblings");
    if (!cJSON_IsString(sha) || !hub_is_commit_hash(sha->valuestring) || !cJSON_IsArray(siblings)) {
        cJSON_Delete(root);
        return lcm_fail(LCM_ERR_FORMAT, "%s: the answer of %s has no commit 'sha' or 'siblings' list",
                        what, url);
    }
    snprintf(commit, 64, "%s", sha->valuestring);
    lcm_status st = selection == HUB_SELECT_TOKENIZER       ? plan_tokenizer_files(what, siblings, plan)
                    : selection == HUB_SELECT_SINGLE_MODEL ? plan_single_model_files(what, siblings, variant, plan)
                                                           : plan_files(what, siblings, variant, plan);
    cJSON_Delete(root);
    return st;
}

static void file_url(const hub_session *s, const hub_repo *repo, const char *path, char *url,
                     size_t size) {
    char rev[768], escaped[1600];
    url_escape(rev, sizeof rev, repo->revision, false);
    url_escape(escaped, sizeof escaped, path, true);
    if (snprintf(url, size, "%s/%s/resolve/%s/%s", s->endpoint, repo->id, rev, escaped) >= (int)size)
        url[0] = '\0'; // curl then fails with a clear "URL malformed"
}

// Looks at every file of the plan not yet handled: already in the snapshot, or a blob that only
// needs its link, or something to download (its size counted in *bytes).
static lcm_status check_files(hub_session *s, const hub_repo *repo, const char *commit,
                              hub_plan *plan, int from, int *to_fetch, uint64_t *bytes) {
    for (int i = from; i < plan->count; i++) {
        hub_file *f = &plan->files[i];
        char snap[PATH_MAX], url[2600], blob[PATH_MAX];
        LCM_TRY(hub_snapshot_path(repo, commit, f->path, snap, sizeof snap));
        if (file_size(snap) >= 0) { // stat follows the symlink: the blob is there
            f->have = true;
            continue;
        }
        file_url(s, repo, f->path, url, sizeof url);
        http_response r;
        http_sink sink = {.response = &r};
        CURLcode code = http_perform(s, url, true, &sink);
        // A renamed repository answers with a relative redirect to its new name; follow those
        // (as huggingface_hub does) but not the absolute ones to the CDN, whose headers we have.
        for (int hops = 0; code == CURLE_OK && r.status >= 300 && r.status < 400 && !r.linked_etag[0] &&
                           r.location[0] == '/' && hops < 5;
             hops++) {
            if (snprintf(url, sizeof url, "%s%s", s->endpoint, r.location) >= (int)sizeof url) break;
            code = http_perform(s, url, true, &sink);
        }
        char what[700];
        snprintf(what, sizeof what, "%s: %s", repo->id, f->path);
        if (code != CURLE_OK || r.status < 200 || r.status >= 400)
            return http_failure(s, what, url, code, &r);
        const char *etag = r.linked_etag[0] ? r.linked_etag : r.etag;
        if (!etag[0] || !hub_is_safe_file_name(etag) || strchr(etag, '/'))
            return lcm_fail(LCM_ERR_FORMAT, "%s: the server gave no usable ETag for %s", what, url);
        snprintf(f->etag, sizeof f->etag, "%s", etag);
        f->size = r.linked_size >= 0 ? r.linked_size : r.status < 300 ? r.content_length : -1;
        LCM_TRY(hub_blob_path(repo, f->etag, blob, sizeof blob));
        int64_t have = file_size(blob);
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
            file_url(s, repo, f->path, url, sizeof url);
            st = download_blob(s, repo, f, url);
            if (st == LCM_OK) st = hub_link_snapshot(repo, commit, f->path, f->etag);
            if (st == LCM_OK && f->size > 0) s->all_before += (uint64_t)f->size;
        }
        for (int i = from; st == LCM_OK && i < end; i++) {
            const char *path = plan->files[i].path;
            size_t len = strlen(path);
            if (len > 11 && !strcmp(path + len - 11, ".index.json")) {
                char snap[PATH_MAX];
                st = hub_snapshot_path(repo, commit, path, snap, sizeof snap);
                if (st == LCM_OK) st = plan_shards(snap, path, plan);
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
    lcm_status st = session_open(&session, options);
    if (st == LCM_OK) st = pull_online(&session, &repo, selection, options->variant, snapshot_dir);
    session_close(&session);
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
