// Hugging Face hub downloads against a local server that this test starts on 127.0.0.1 (random
// free port) and that speaks the hub's URL scheme with the tiny fixture model:
//   GET  /api/models/ID/revision/REV       {"sha": COMMIT, "siblings": [{"rfilename": ...}]}
//   HEAD/GET /ID/resolve/REV/PATH          small files: 200 + ETag (W/"..."), X-Repo-Commit
//                                          *.safetensors: 302 to /lfs/SHA256 + X-Linked-Etag/-Size
//   GET  /lfs/SHA256                       the bytes, honouring "Range: bytes=N-"
// Checked: a fresh pull and the cache layout diffusers expects, a second pull that requests no
// file, the fp16 variant with fallback, resume after a cut connection, a corrupt body, 401/403/404
// messages, offline mode, no network, cancelling, and `lcm generate --model ID` = from the folder.
// The server also plays openai/clip-vit-large-patch14 (the fixture's tokenizer files at the root,
// next to weights that must not be fetched): a single file without a tokenizer gets just those.
// And repositories of one model at their root (lcm_single_model_resolve, `--taesd ID`,
// `--controlnet ID`): the fixtures' AutoencoderTiny and ControlNetModel folders, the ControlNet
// with an fp16 variant too, the TAESD once more as one shard behind an index, and a repo with only
// pickled weights.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/sha256.h"
#include "io/checkpoint.h"
#include "io/image.h"
#include "io/json_config.h"
#include "io/safetensors.h"
#include "golden.h"
#include "testutil.h"

#define REPO_ID "test-org/tiny-lcm"
#define OLD_ID "test-org/old-name" // redirects to REPO_ID
#define COMMIT "4c8d1e0f9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
#define MAX_FILES 64
#define CLIP_ID "openai/clip-vit-large-patch14"
#define SINGLE_MAX_FILES 6

typedef struct served_file {
    char path[512];
    unsigned char *data;
    size_t size;
    char etag[65]; // sha256 for LFS files; a 40-hex stand-in for the git blob id otherwise
    bool lfs;
} served_file;

// A repository holding one model at its root. `extra` files are listed by the API but never
// served: fetching one is a 404, which fails the pull.
typedef struct single_repo {
    char id[128];
    served_file files[SINGLE_MAX_FILES];
    int count;
    const char *extra[4];
} single_repo;

enum { SINGLE_TAESD, SINGLE_CONTROLNET, SINGLE_SHARDED, SINGLE_PICKLE, SINGLE_COUNT };

typedef struct server {
    struct MHD_Daemon *daemon;
    int port;
    served_file files[MAX_FILES];
    int count;
    single_repo singles[SINGLE_COUNT];
    pthread_mutex_t lock;
    // behaviour switches, set by the test between pulls
    char cut_next[512];      // cut the body of the next /lfs GET of this file halfway
    char stall_next[512];    // the next /lfs GET of this file: half at full speed, then a byte per 20 ms
    bool stall_release;      // ... until this is set
    char corrupt_next[512];  // send wrong bytes (same size) for the next /lfs GET of this file
    char missing[512];       // answer 404 for this file (still listed by the API)
    const char *token;       // when set, 401 unless "Authorization: Bearer TOKEN"
    bool gated;              // 403 on everything
    // what was asked
    int api_requests, head_requests, get_requests, range_requests;
    long long last_range_start;
    char fetched[2048];      // the /lfs and resolve GET paths, ';'-separated
} server;

static server srv;
static char tmpdir[] = "/tmp/lcm-hub-XXXXXX";
static char model_dir[PATH_MAX];
static char taesd_dir[PATH_MAX], controlnet_dir[PATH_MAX]; // found among the fixtures by class

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *data = malloc(n > 0 ? (size_t)n : 1);
    *size = data ? fread(data, 1, (size_t)n, fp) : 0;
    fclose(fp);
    return data;
}

static void hash_hex(const void *data, size_t size, char hex[65]) {
    sha256_ctx ctx;
    uint8_t digest[32];
    sha256_init(&ctx);
    sha256_update(&ctx, data, size);
    sha256_final(&ctx, digest);
    sha256_hex(digest, hex);
}

// Takes ownership of `data`; *.safetensors are LFS files (ETag = sha256).
static void serve_bytes(served_file *f, const char *path, unsigned char *data, size_t size) {
    snprintf(f->path, sizeof f->path, "%s", path);
    f->data = data;
    f->size = size;
    size_t len = strlen(path);
    f->lfs = len > 12 && !strcmp(path + len - 12, ".safetensors");
    hash_hex(f->data, f->size, f->etag);
    if (!f->lfs) f->etag[40] = '\0';
}

// Every file of the fixture model folder (golden data excluded), as the repository's content.
static void add_files(const char *root, const char *rel) {
    char dir[PATH_MAX];
    test_path(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "golden") || !strcmp(e->d_name, "loras")) continue;
        char child[512], full[PATH_MAX];
        snprintf(child, sizeof child, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        test_path(full, sizeof full, "%s/%s", root, child);
        struct stat sb;
        if (stat(full, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            add_files(root, child);
        } else if (srv.count < MAX_FILES) {
            size_t size = 0;
            unsigned char *data = read_file(full, &size);
            serve_bytes(&srv.files[srv.count++], child, data, size);
        }
    }
    closedir(d);
}

static void note_fetched(const char *path) { // caller holds srv.lock
    size_t len = strlen(srv.fetched);
    snprintf(srv.fetched + len, sizeof srv.fetched - len, "%.200s;", path);
}

static served_file *find_file(const char *path) {
    for (int i = 0; i < srv.count; i++)
        if (!strcmp(srv.files[i].path, path)) return &srv.files[i];
    return NULL;
}

static served_file *find_blob(const char *etag) {
    for (int i = 0; i < srv.count; i++)
        if (!strcmp(srv.files[i].etag, etag)) return &srv.files[i];
    for (int r = 0; r < SINGLE_COUNT; r++)
        for (int i = 0; i < srv.singles[r].count; i++)
            if (!strcmp(srv.singles[r].files[i].etag, etag)) return &srv.singles[r].files[i];
    return NULL;
}

static served_file *find_single_file(single_repo *r, const char *path) {
    for (int i = 0; i < r->count; i++)
        if (!strcmp(r->files[i].path, path)) return &r->files[i];
    return NULL;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *text) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

typedef struct cut_body {
    const unsigned char *data;
    size_t size, cut_at;
} cut_body;

static ssize_t read_cut(void *cls, uint64_t pos, char *buf, size_t max) {
    cut_body *b = cls;
    if (pos >= b->cut_at) return MHD_CONTENT_READER_END_WITH_ERROR; // the connection drops
    size_t n = b->cut_at - pos < max ? b->cut_at - (size_t)pos : max;
    memcpy(buf, b->data + pos, n);
    return (ssize_t)n;
}

// A body that stalls halfway (a byte per 20 ms) until srv.stall_release: the client is killed meanwhile.
static ssize_t read_stalled(void *cls, uint64_t pos, char *buf, size_t max) {
    cut_body *b = cls;
    if (pos >= b->size) return MHD_CONTENT_READER_END_OF_STREAM;
    pthread_mutex_lock(&srv.lock);
    bool released = srv.stall_release;
    pthread_mutex_unlock(&srv.lock);
    size_t n = b->size - (size_t)pos < max ? b->size - (size_t)pos : max;
    if (pos >= b->cut_at && !released) {
        usleep(20000);
        n = 1;
    } else if (pos < b->cut_at && n > b->cut_at - pos) {
        n = b->cut_at - (size_t)pos;
    }
    memcpy(buf, b->data + pos, n);
    return (ssize_t)n;
}

static enum MHD_Result serve_blob(struct MHD_Connection *c, served_file *f, bool head) {
    size_t start = 0;
    const char *range = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range");
    pthread_mutex_lock(&srv.lock);
    if (range && !strncmp(range, "bytes=", 6)) {
        start = (size_t)strtoull(range + 6, NULL, 10);
        srv.range_requests++;
        srv.last_range_start = (long long)start;
    }
    bool cut = !head && !strcmp(srv.cut_next, f->path);
    bool stall = !head && !strcmp(srv.stall_next, f->path);
    if (stall) srv.stall_next[0] = '\0';
    bool corrupt = !head && !strcmp(srv.corrupt_next, f->path);
    if (cut) srv.cut_next[0] = '\0';
    if (corrupt) srv.corrupt_next[0] = '\0';
    pthread_mutex_unlock(&srv.lock);
    if (start > f->size) return reply(c, 416, "range not satisfiable");
    struct MHD_Response *r;
    size_t len = f->size - start;
    if (stall) {
        cut_body *body = malloc(sizeof *body);
        *body = (cut_body){.data = f->data + start, .size = len, .cut_at = len / 2};
        r = MHD_create_response_from_callback(len, 64 * 1024, read_stalled, body, free);
    } else if (cut) {
        cut_body *body = malloc(sizeof *body);
        *body = (cut_body){.data = f->data + start, .size = len, .cut_at = len / 2};
        r = MHD_create_response_from_callback(len, 64 * 1024, read_cut, body, free);
    } else if (corrupt) {
        unsigned char *copy = malloc(len ? len : 1);
        memcpy(copy, f->data + start, len);
        copy[len / 2] ^= 0x5a;
        r = MHD_create_response_from_buffer(len, copy, MHD_RESPMEM_MUST_FREE);
    } else {
        r = MHD_create_response_from_buffer(len, f->data + start, MHD_RESPMEM_PERSISTENT);
    }
    if (start > 0) {
        char content_range[96];
        snprintf(content_range, sizeof content_range, "bytes %zu-%zu/%zu", start, f->size - 1, f->size);
        MHD_add_response_header(r, "Content-Range", content_range);
    }
    enum MHD_Result ok = MHD_queue_response(c, start > 0 ? 206 : 200, r);
    MHD_destroy_response(r);
    return ok;
}

// The CLIP repo's files are the fixture's tokenizer/ files at the root, and its text weights.
static served_file *find_clip_file(const char *path) {
    char served[600];
    if (!strcmp(path, "model.safetensors"))
        snprintf(served, sizeof served, "text_encoder/model.safetensors");
    else
        snprintf(served, sizeof served, "tokenizer/%s", path);
    return find_file(served);
}

static enum MHD_Result answer_revision(struct MHD_Connection *c, const char *id, bool clip) {
    pthread_mutex_lock(&srv.lock);
    srv.api_requests++;
    pthread_mutex_unlock(&srv.lock);
    cJSON *root = cJSON_CreateObject(), *siblings = cJSON_AddArrayToObject(root, "siblings");
    cJSON_AddStringToObject(root, "id", id);
    cJSON_AddStringToObject(root, "sha", COMMIT);
    for (int i = 0; i < srv.count; i++) {
        const char *path = srv.files[i].path;
        if (clip && strncmp(path, "tokenizer/", 10)) continue;
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "rfilename", clip ? path + 10 : path);
        cJSON_AddItemToArray(siblings, s);
    }
    // Files never to fetch: pickles, ONNX, the safety checker; CLIP's weights.
    static const char *pipeline_extra[] = {"unet/diffusion_pytorch_model.bin", "text_encoder/model.onnx",
                                           "safety_checker/model.safetensors", "README.md"};
    static const char *clip_extra[] = {"model.safetensors", "pytorch_model.bin", "tokenizer.json", "README.md"};
    const char **extra = clip ? clip_extra : pipeline_extra;
    for (size_t i = 0; i < 4; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "rfilename", extra[i]);
        cJSON_AddItemToArray(siblings, s);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

// HEAD/GET of /ID/resolve/REV/PATH: LFS files redirect to /lfs/SHA256, others come as they are.
static enum MHD_Result answer_file(struct MHD_Connection *c, const served_file *f) {
    struct MHD_Response *r;
    unsigned status;
    char etag[80];
    if (f->lfs) {
        char location[128];
        snprintf(location, sizeof location, "/lfs/%s", f->etag);
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Location", location);
        snprintf(etag, sizeof etag, "\"%s\"", f->etag);
        MHD_add_response_header(r, "X-Linked-Etag", etag);
        char size[32];
        snprintf(size, sizeof size, "%zu", f->size);
        MHD_add_response_header(r, "X-Linked-Size", size);
        snprintf(etag, sizeof etag, "\"lfs-pointer-%.20s\"", f->etag);
        status = 302;
    } else {
        // For HEAD, MHD sends the headers (Content-Length included) and no body.
        r = MHD_create_response_from_buffer(f->size, f->data, MHD_RESPMEM_PERSISTENT);
        snprintf(etag, sizeof etag, "W/\"%s\"", f->etag);
        status = 200;
    }
    MHD_add_response_header(r, "ETag", etag);
    MHD_add_response_header(r, "X-Repo-Commit", COMMIT);
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

// The API answer for a one-model repository: its files and its extras.
static enum MHD_Result answer_single_revision(struct MHD_Connection *c, const single_repo *repo) {
    pthread_mutex_lock(&srv.lock);
    srv.api_requests++;
    pthread_mutex_unlock(&srv.lock);
    cJSON *root = cJSON_CreateObject(), *siblings = cJSON_AddArrayToObject(root, "siblings");
    cJSON_AddStringToObject(root, "id", repo->id);
    cJSON_AddStringToObject(root, "sha", COMMIT);
    for (int i = 0; i < repo->count + 4; i++) {
        const char *path = i < repo->count ? repo->files[i].path : repo->extra[i - repo->count];
        if (!path) continue;
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "rfilename", path);
        cJSON_AddItemToArray(siblings, s);
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

// /api/models/ID/revision/REV and /ID/resolve/REV/PATH of the one-model repositories; *handled
// is false when the URL is not theirs.
static enum MHD_Result answer_single(struct MHD_Connection *c, const char *url, bool head, bool *handled) {
    *handled = true;
    for (int i = 0; i < SINGLE_COUNT; i++) {
        single_repo *repo = &srv.singles[i];
        if (!repo->id[0]) continue;
        char api[256], resolve[256];
        snprintf(api, sizeof api, "/api/models/%s/revision/", repo->id);
        snprintf(resolve, sizeof resolve, "/%s/resolve/", repo->id);
        if (!strncmp(url, api, strlen(api))) return answer_single_revision(c, repo);
        if (strncmp(url, resolve, strlen(resolve))) continue;
        const char *slash = strchr(url + strlen(resolve), '/');
        served_file *f = slash ? find_single_file(repo, slash + 1) : NULL;
        pthread_mutex_lock(&srv.lock);
        if (head) srv.head_requests++;
        if (!head && f && !f->lfs) {
            srv.get_requests++;
            note_fetched(f->path);
        }
        pthread_mutex_unlock(&srv.lock);
        if (!f) return reply(c, 404, "Entry not found");
        return answer_file(c, f);
    }
    *handled = false;
    return MHD_NO;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_size, void **state) {
    (void)cls, (void)version, (void)upload_data, (void)upload_size;
    if (!*state) { // first call for this request: headers only
        *state = (void *)1;
        return MHD_YES;
    }
    bool head = !strcmp(method, "HEAD");
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (srv.gated) return reply(c, 403, "gated");
    if (srv.token) {
        char want[256];
        snprintf(want, sizeof want, "Bearer %s", srv.token);
        if (!auth || strcmp(auth, want)) return reply(c, 401, "unauthorized");
    }
    // A renamed repository: everything under the old name redirects (relative) to the new one.
    const char *old_names[] = {"/api/models/" OLD_ID "/", "/" OLD_ID "/"};
    for (int i = 0; i < 2; i++) {
        size_t len = strlen(old_names[i]);
        if (!strncmp(url, old_names[i], len)) {
            char location[1024];
            snprintf(location, sizeof location, "%s%s/%s", i ? "/" : "/api/models/", REPO_ID, url + len);
            struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
            MHD_add_response_header(r, "Location", location);
            enum MHD_Result ok = MHD_queue_response(c, 307, r);
            MHD_destroy_response(r);
            return ok;
        }
    }
    bool handled;
    enum MHD_Result single = answer_single(c, url, head, &handled);
    if (handled) return single;
    const char *api_prefix = "/api/models/" REPO_ID "/revision/";
    const char *resolve_prefix = "/" REPO_ID "/resolve/";
    const char *clip_api_prefix = "/api/models/" CLIP_ID "/revision/";
    const char *clip_resolve_prefix = "/" CLIP_ID "/resolve/";
    if (!strncmp(url, api_prefix, strlen(api_prefix))) return answer_revision(c, REPO_ID, false);
    if (!strncmp(url, clip_api_prefix, strlen(clip_api_prefix))) return answer_revision(c, CLIP_ID, true);
    if (!strncmp(url, "/lfs/", 5)) {
        served_file *f = find_blob(url + 5);
        if (!f) return reply(c, 404, "no such blob");
        pthread_mutex_lock(&srv.lock);
        if (!head) {
            srv.get_requests++;
            note_fetched(f->path);
        } else {
            srv.head_requests++;
        }
        pthread_mutex_unlock(&srv.lock);
        return serve_blob(c, f, head);
    }
    bool clip = !strncmp(url, clip_resolve_prefix, strlen(clip_resolve_prefix));
    if (clip || !strncmp(url, resolve_prefix, strlen(resolve_prefix))) {
        const char *rest = url + strlen(clip ? clip_resolve_prefix : resolve_prefix), *slash = strchr(rest, '/');
        served_file *f = !slash ? NULL : clip ? find_clip_file(slash + 1) : find_file(slash + 1);
        pthread_mutex_lock(&srv.lock);
        if (head) srv.head_requests++;
        bool missing = f && !strcmp(srv.missing, f->path);
        if (!head && f && !f->lfs) {
            srv.get_requests++;
            note_fetched(f->path);
        }
        pthread_mutex_unlock(&srv.lock);
        if (!f || missing) return reply(c, 404, "Entry not found");
        return answer_file(c, f);
    }
    return reply(c, 404, "Repository not found");
}

// The first fixture folder holding one model of class `cls` (config.json at its root).
static void find_single_model(const char *cls, char *out, size_t size) {
    DIR *d = opendir(test_fixtures());
    struct dirent *e;
    out[0] = '\0';
    while (d && (e = readdir(d)) && !out[0]) {
        char dir[PATH_MAX], found[128];
        if (e->d_name[0] == '.') continue;
        test_path(dir, sizeof dir, "%s/%s", test_fixtures(), e->d_name);
        golden_folder_class(dir, found, sizeof found);
        if (!strcmp(found, cls)) snprintf(out, size, "%s", dir);
    }
    if (d) closedir(d);
    CHECK(out[0], "no %s folder among the fixtures in %s", cls, test_fixtures());
}

static void single_add(single_repo *r, const char *path, unsigned char *data, size_t size) {
    CHECK(data && r->count < SINGLE_MAX_FILES, "%s: cannot serve %s", r->id, path);
    if (data && r->count < SINGLE_MAX_FILES) serve_bytes(&r->files[r->count++], path, data, size);
}

static unsigned char *copy_bytes(const served_file *f) {
    unsigned char *copy = malloc(f->size ? f->size : 1);
    if (copy) memcpy(copy, f->data, f->size);
    return copy;
}

// A one-model repository with DIR's config.json and diffusion_pytorch_model.safetensors.
static single_repo *single_from_folder(int which, const char *id, const char *dir) {
    single_repo *r = &srv.singles[which];
    snprintf(r->id, sizeof r->id, "%s", id);
    const char *names[] = {"config.json", "diffusion_pytorch_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char path[PATH_MAX];
        size_t size = 0;
        test_path(path, sizeof path, "%s/%s", dir, names[i]);
        unsigned char *data = read_file(path, &size);
        single_add(r, names[i], data, size);
    }
    return r;
}

// The index of a sharded model whose single shard holds every tensor of `weights`.
static char *index_for_one_shard(const served_file *weights, const char *shard) {
    st_file *f = NULL;
    CHECK_OK(st_open_memory(weights->data, weights->size, weights->path, &f));
    if (!f) return NULL;
    cJSON *root = cJSON_CreateObject(), *metadata = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(metadata, "total_size", (double)weights->size);
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    for (size_t i = 0; i < st_count(f); i++) cJSON_AddStringToObject(map, st_at(f, i)->name, shard);
    st_close(f);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}

// The one-model repositories: the fixtures' TAESD and ControlNet (with an fp16 variant: the same
// file with its last byte changed, so that the two blobs differ), the TAESD as one shard behind an
// index, and a repository with only pickled weights.
static void singles_start(void) {
    find_single_model("AutoencoderTiny", taesd_dir, sizeof taesd_dir);
    find_single_model("ControlNetModel", controlnet_dir, sizeof controlnet_dir);
    if (!taesd_dir[0] || !controlnet_dir[0]) return;
    single_repo *taesd = single_from_folder(SINGLE_TAESD, "test-org/tiny-taesd", taesd_dir);
    taesd->extra[0] = "diffusion_pytorch_model.bin";
    taesd->extra[1] = "diffusion_flax_model.msgpack";
    taesd->extra[2] = "README.md";

    single_repo *cn = single_from_folder(SINGLE_CONTROLNET, "test-org/tiny-controlnet", controlnet_dir);
    const served_file *plain = &cn->files[1];
    unsigned char *fp16 = copy_bytes(plain);
    if (fp16 && plain->size) fp16[plain->size - 1] ^= 0x01;
    single_add(cn, "diffusion_pytorch_model.fp16.safetensors", fp16, plain->size);
    cn->extra[0] = "diffusion_pytorch_model.bin";
    cn->extra[1] = "diffusion_pytorch_model.fp16.bin";

    single_repo *sharded = &srv.singles[SINGLE_SHARDED];
    snprintf(sharded->id, sizeof sharded->id, "test-org/sharded-taesd");
    const char *shard = "diffusion_pytorch_model-00001-of-00001.safetensors";
    char *index = index_for_one_shard(&taesd->files[1], shard);
    single_add(sharded, "config.json", copy_bytes(&taesd->files[0]), taesd->files[0].size);
    single_add(sharded, "diffusion_pytorch_model.safetensors.index.json", (unsigned char *)index,
               index ? strlen(index) : 0);
    single_add(sharded, shard, copy_bytes(&taesd->files[1]), taesd->files[1].size);

    single_repo *pickle = &srv.singles[SINGLE_PICKLE];
    snprintf(pickle->id, sizeof pickle->id, "test-org/pickle-only");
    single_add(pickle, "config.json", copy_bytes(&taesd->files[0]), taesd->files[0].size);
    pickle->extra[0] = "diffusion_pytorch_model.bin";
    pickle->extra[1] = "diffusion_pytorch_model.fp16.bin";
}

static void server_start(void) {
    pthread_mutex_init(&srv.lock, NULL);
    add_files(model_dir, "");
    CHECK(srv.count >= 8, "%s: only %d files to serve", model_dir, srv.count);
    singles_start();
    srv.daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                  handle, NULL, MHD_OPTION_SOCK_ADDR, NULL, MHD_OPTION_END);
    if (!srv.daemon) {
        fprintf(stderr, "cannot start the test HTTP server\n");
        exit(1);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv.daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv.port = info ? info->port : 0;
    CHECK(srv.port > 0, "server port");
}

static void server_stop(void) {
    MHD_stop_daemon(srv.daemon);
    for (int i = 0; i < srv.count; i++) free(srv.files[i].data);
    for (int r = 0; r < SINGLE_COUNT; r++)
        for (int i = 0; i < srv.singles[r].count; i++) free(srv.singles[r].files[i].data);
    pthread_mutex_destroy(&srv.lock);
}

static void reset_counters(void) {
    pthread_mutex_lock(&srv.lock);
    srv.api_requests = srv.head_requests = srv.get_requests = srv.range_requests = 0;
    srv.last_range_start = -1;
    srv.fetched[0] = '\0';
    pthread_mutex_unlock(&srv.lock);
}

// ---- the client side -----------------------------------------------------------------------------

typedef struct callbacks {
    int starts, files;
    uint64_t bytes, last_done;
    int cancel_after; // cancel once this many progress calls happened (0 = never)
    int calls;
} callbacks;

static void on_start(void *user, const char *id, int files, uint64_t bytes) {
    callbacks *cb = user;
    (void)id;
    cb->starts++;
    cb->files = files;
    cb->bytes = bytes;
}

static int on_progress(void *user, const char *file, uint64_t fd, uint64_t ft, uint64_t done,
                       uint64_t total) {
    callbacks *cb = user;
    (void)file, (void)fd, (void)ft, (void)total;
    cb->last_done = done;
    cb->calls++;
    return cb->cancel_after && cb->calls >= cb->cancel_after;
}

static char endpoint[64];

static lcm_status pull(const char *cache, const char *variant, const char *token, callbacks *cb,
                       char **snapshot) {
    lcm_hub_options o;
    lcm_hub_options_init(&o);
    o.endpoint = endpoint;
    o.cache_dir = cache;
    o.variant = variant;
    o.token = token;
    o.start = on_start;
    o.progress = on_progress;
    o.user_data = cb;
    return lcm_hub_pull(REPO_ID, &o, snapshot);
}

static void cache_path(char *buf, size_t size, const char *name) {
    test_path(buf, size, "%s/%s", tmpdir, name);
}

static bool files_equal(const char *path, const served_file *f) {
    size_t size = 0;
    unsigned char *data = read_file(path, &size);
    bool same = data && size == f->size && !memcmp(data, f->data, size);
    free(data);
    return same;
}

// What a pipeline needs: configs, tokenizer, one weights file per component (variant rule).
static bool is_needed(const char *path, const char *variant) {
    size_t len = strlen(path);
    if (len > 5 && !strcmp(path + len - 5, ".json")) return true;
    if (!strcmp(path, "tokenizer/merges.txt")) return true;
    if (len <= 12 || strcmp(path + len - 12, ".safetensors")) return false;
    bool is_variant = variant && strstr(path, variant);
    if (variant) {
        // the plain file is needed only when the component has no variant file
        char name[300];
        const char *dot = strchr(path, '.');
        snprintf(name, sizeof name, "%.*s.%s.safetensors", (int)(dot - path), path, variant);
        return is_variant || !find_file(name);
    }
    return !strchr(strchr(path, '.') + 1, '.');
}

// The layout diffusers expects: refs/main holds the commit; every needed file is a relative
// symlink snapshots/COMMIT/PATH -> (../)*../../blobs/ETAG, the blob named by the ETag (sha256 for
// LFS files) and holding exactly the content; nothing else is downloaded.
static void check_layout(const char *cache, const char *snapshot, const char *variant) {
    char repo[PATH_MAX], path[PATH_MAX], want[PATH_MAX];
    test_path(repo, sizeof repo, "%s/models--test-org--tiny-lcm", cache);
    test_path(want, sizeof want, "%s/snapshots/%s", repo, COMMIT);
    CHECK(snapshot && !strcmp(snapshot, want), "snapshot %s, want %s", snapshot ? snapshot : "(null)", want);
    test_path(path, sizeof path, "%s/refs/main", repo);
    size_t size = 0;
    char *ref = (char *)read_file(path, &size);
    CHECK(ref && size == 40 && !memcmp(ref, COMMIT, 40), "%s: '%.*s'", path, (int)size, ref ? ref : "");
    free(ref);
    for (int i = 0; i < srv.count; i++) {
        const served_file *f = &srv.files[i];
        test_path(path, sizeof path, "%s/%s", want, f->path);
        bool needed = is_needed(f->path, variant);
        char target[PATH_MAX] = {0};
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (!needed) {
            CHECK(n < 0, "%s was downloaded though the pipeline does not need it", f->path);
            continue;
        }
        char expected[PATH_MAX] = "";
        for (const char *c = f->path; *c; c++)
            if (*c == '/') strcat(expected, "../");
        strcat(expected, "../../blobs/");
        strcat(expected, f->etag);
        CHECK(n > 0 && !strcmp(target, expected), "%s -> '%s', want relative '%s'", f->path, target,
              expected);
        CHECK(files_equal(path, f), "%s: content differs from the served file", f->path);
        test_path(path, sizeof path, "%s/blobs/%s", repo, f->etag);
        struct stat sb;
        CHECK(lstat(path, &sb) == 0 && S_ISREG(sb.st_mode), "%s: blob missing", path);
    }
    const char *extra[] = {"unet/diffusion_pytorch_model.bin", "text_encoder/model.onnx",
                           "safety_checker/model.safetensors", "README.md"};
    for (size_t i = 0; i < 4; i++) {
        test_path(path, sizeof path, "%s/%s", want, extra[i]);
        CHECK(access(path, F_OK) != 0, "%s was downloaded", extra[i]);
    }
}

static uint64_t needed_bytes(const char *variant) {
    uint64_t total = 0;
    for (int i = 0; i < srv.count; i++)
        if (is_needed(srv.files[i].path, variant)) total += srv.files[i].size;
    return total;
}

static void test_fresh_and_second_pull(void) {
    char cache[PATH_MAX];
    cache_path(cache, sizeof cache, "fresh");
    callbacks cb = {0};
    char *snapshot = NULL;
    reset_counters();
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot));
    check_layout(cache, snapshot, NULL);
    CHECK(cb.starts == 1 && cb.bytes == needed_bytes(NULL), "start callback: %d calls, %llu bytes, want %llu",
          cb.starts, (unsigned long long)cb.bytes, (unsigned long long)needed_bytes(NULL));
    CHECK(cb.last_done == cb.bytes, "progress ended at %llu of %llu", (unsigned long long)cb.last_done,
          (unsigned long long)cb.bytes);
    CHECK(!strstr(srv.fetched, "fp16"), "the fp16 weights were fetched without --variant: %s", srv.fetched);
    free(snapshot);

    // A second pull asks the API for the commit and requests no file at all.
    reset_counters();
    cb = (callbacks){0};
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot));
    CHECK(srv.api_requests == 1 && srv.head_requests == 0 && srv.get_requests == 0 && cb.starts == 0,
          "second pull: %d api, %d HEAD, %d GET requests, %d starts", srv.api_requests,
          srv.head_requests, srv.get_requests, cb.starts);
    free(snapshot);

    // Offline: the cache answers, nothing is asked of the server (environment variable form).
    reset_counters();
    setenv("HF_HUB_OFFLINE", "1", 1);
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot));
    CHECK(srv.api_requests + srv.head_requests + srv.get_requests == 0, "offline pull made requests");
    check_layout(cache, snapshot, NULL);
    free(snapshot);
    char empty[PATH_MAX];
    cache_path(empty, sizeof empty, "empty");
    lcm_status st = pull(empty, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "HF_HUB_OFFLINE") &&
              strstr(lcm_last_error(), "not in the cache") && strstr(lcm_last_error(), REPO_ID),
          "offline, empty cache: %s", lcm_last_error());
    fprintf(stderr, "offline message: %s\n", lcm_last_error());
    unsetenv("HF_HUB_OFFLINE");

    // No network: a closed port. With the model cached it still works; without, a clear message.
    char saved[64];
    snprintf(saved, sizeof saved, "%s", endpoint);
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:1");
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot));
    free(snapshot);
    st = pull(empty, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "no network") &&
              strstr(lcm_last_error(), "HF_HUB_OFFLINE"),
          "no network: %s", lcm_last_error());
    fprintf(stderr, "no-network message: %s\n", lcm_last_error());
    snprintf(endpoint, sizeof endpoint, "%s", saved);
}

static void test_variant(void) {
    char cache[PATH_MAX];
    cache_path(cache, sizeof cache, "variant");
    callbacks cb = {0};
    char *snapshot = NULL;
    reset_counters();
    CHECK_OK(pull(cache, "fp16", NULL, &cb, &snapshot));
    check_layout(cache, snapshot, "fp16");
    free(snapshot);
}

static const served_file *largest_weights(void) {
    const served_file *best = NULL;
    for (int i = 0; i < srv.count; i++)
        if (srv.files[i].lfs && is_needed(srv.files[i].path, NULL) && (!best || srv.files[i].size > best->size))
            best = &srv.files[i];
    return best;
}

static void test_resume(void) {
    char cache[PATH_MAX], partial[PATH_MAX];
    cache_path(cache, sizeof cache, "resume");
    const served_file *f = largest_weights();
    snprintf(srv.cut_next, sizeof srv.cut_next, "%s", f->path);
    callbacks cb = {0};
    char *snapshot = NULL;
    reset_counters();
    lcm_status st = pull(cache, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "interrupted") &&
              strstr(lcm_last_error(), f->path) && strstr(lcm_last_error(), "resume"),
          "cut connection: %s %s", lcm_status_name(st), lcm_last_error());
    fprintf(stderr, "interrupted message: %s\n", lcm_last_error());
    test_path(partial, sizeof partial, "%s/models--test-org--tiny-lcm/blobs/%s.incomplete", cache, f->etag);
    struct stat sb;
    long long kept = stat(partial, &sb) == 0 ? (long long)sb.st_size : -1;
    CHECK(kept > 0 && kept < (long long)f->size, "partial blob %s: %lld bytes of %zu", partial, kept, f->size);
    reset_counters();
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot));
    CHECK(srv.range_requests == 1 && srv.last_range_start == kept,
          "resume: %d range requests, from %lld, want 1 from %lld", srv.range_requests,
          srv.last_range_start, kept);
    CHECK(access(partial, F_OK) != 0, "the .incomplete file is still there");
    check_layout(cache, snapshot, NULL);
    free(snapshot);
}

// `lcm pull` killed (SIGKILL: no cleanup of any kind) in the middle of a file: the next pull
// resumes the partial blob from where the disk copy ends and the blob's sha256 is its ETag.
static void test_killed_pull(void) {
    char cache[PATH_MAX], partial[PATH_MAX], blob[PATH_MAX];
    cache_path(cache, sizeof cache, "killed");
    const served_file *f = largest_weights();
    pthread_mutex_lock(&srv.lock);
    snprintf(srv.stall_next, sizeof srv.stall_next, "%s", f->path);
    srv.stall_release = false;
    pthread_mutex_unlock(&srv.lock);
    test_path(partial, sizeof partial, "%s/models--test-org--tiny-lcm/blobs/%s.incomplete", cache, f->etag);
    test_path(blob, sizeof blob, "%s/models--test-org--tiny-lcm/blobs/%s", cache, f->etag);
    pid_t child = fork();
    if (child == 0) {
        setenv("HF_ENDPOINT", endpoint, 1);
        setenv("HF_HUB_CACHE", cache, 1);
        execl(test_lcm_bin(), "lcm", "pull", REPO_ID, "--quiet", (char *)NULL);
        _exit(127);
    }
    // Wait until part of the file is on disk (the stall keeps the download going meanwhile).
    struct stat sb;
    long long on_disk = -1;
    for (int i = 0; i < 3000 && on_disk <= 0; i++) {
        usleep(10000);
        on_disk = stat(partial, &sb) == 0 ? (long long)sb.st_size : -1;
    }
    kill(child, SIGKILL);
    int status = 0;
    waitpid(child, &status, 0);
    pthread_mutex_lock(&srv.lock);
    srv.stall_release = true;
    srv.stall_next[0] = '\0';
    pthread_mutex_unlock(&srv.lock);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "lcm pull was not killed mid-file (status %#x)",
          status);
    long long kept = stat(partial, &sb) == 0 ? (long long)sb.st_size : -1;
    CHECK(kept > 0 && kept < (long long)f->size, "after the kill: %s has %lld bytes of %zu", partial, kept,
          f->size);
    CHECK(access(blob, F_OK) != 0, "a blob was completed although the pull was killed");
    fprintf(stderr, "killed pull: %lld of %zu bytes kept in %s\n", kept, f->size, partial);
    callbacks cb = {0};
    char *snapshot = NULL;
    reset_counters();
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot));
    CHECK(srv.range_requests == 1 && srv.last_range_start == kept, "resume: %d range requests, from %lld, want from %lld",
          srv.range_requests, srv.last_range_start, kept);
    CHECK(access(partial, F_OK) != 0, "the .incomplete file is still there");
    size_t size = 0;
    unsigned char *data = read_file(blob, &size);
    char hex[65] = "";
    if (data) hash_hex(data, size, hex);
    CHECK(data && size == f->size && !strcmp(hex, f->etag), "resumed blob: %zu bytes, sha256 %s, want %zu, %s",
          size, hex, f->size, f->etag);
    free(data);
    check_layout(cache, snapshot, NULL);
    free(snapshot);
}

static void test_corrupt(void) {
    char cache[PATH_MAX], blob[PATH_MAX];
    cache_path(cache, sizeof cache, "corrupt");
    const served_file *f = largest_weights();
    snprintf(srv.corrupt_next, sizeof srv.corrupt_next, "%s", f->path);
    callbacks cb = {0};
    char *snapshot = NULL;
    lcm_status st = pull(cache, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_FORMAT && strstr(lcm_last_error(), "corrupt") &&
              strstr(lcm_last_error(), f->path) && strstr(lcm_last_error(), f->etag),
          "corrupt body: %s %s", lcm_status_name(st), lcm_last_error());
    fprintf(stderr, "corrupt message: %s\n", lcm_last_error());
    test_path(blob, sizeof blob, "%s/models--test-org--tiny-lcm/blobs/%s", cache, f->etag);
    CHECK(access(blob, F_OK) != 0, "a corrupt blob was kept");
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot)); // downloads it again, correctly this time
    check_layout(cache, snapshot, NULL);
    free(snapshot);
}

// Disk full: the partial blob is made a link to /dev/full, where every write fails with ENOSPC.
static void test_disk_full(void) {
    char cache[PATH_MAX], blobs[PATH_MAX], partial[PATH_MAX], cmd[2 * PATH_MAX];
    if (access("/dev/full", W_OK) != 0) {
        fprintf(stderr, "no /dev/full: disk-full case skipped\n");
        return;
    }
    cache_path(cache, sizeof cache, "full");
    const served_file *f = largest_weights();
    test_path(blobs, sizeof blobs, "%s/models--test-org--tiny-lcm/blobs", cache);
    test_path(cmd, sizeof cmd, "mkdir -p %s", blobs);
    CHECK(system(cmd) == 0, "%s", cmd);
    test_path(partial, sizeof partial, "%s/%s.incomplete", blobs, f->etag);
    CHECK(symlink("/dev/full", partial) == 0, "symlink %s", partial);
    callbacks cb = {0};
    char *snapshot = NULL;
    lcm_status st = pull(cache, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "disk full") && strstr(lcm_last_error(), f->path) &&
              strstr(lcm_last_error(), "resumes"),
          "disk full: %s %s", lcm_status_name(st), lcm_last_error());
    fprintf(stderr, "disk-full message: %s\n", lcm_last_error());
    unlink(partial);
}

static void test_errors(void) {
    char cache[PATH_MAX];
    cache_path(cache, sizeof cache, "errors");
    callbacks cb = {0};
    char *snapshot = NULL;
    srv.token = "secret-token";
    lcm_status st = pull(cache, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "401") && strstr(lcm_last_error(), "HF_TOKEN"),
          "401: %s", lcm_last_error());
    fprintf(stderr, "401 message: %s\n", lcm_last_error());
    CHECK_OK(pull(cache, NULL, "secret-token", &cb, &snapshot));
    free(snapshot);
    srv.token = NULL;
    srv.gated = true;
    char other[PATH_MAX];
    cache_path(other, sizeof other, "gated");
    st = pull(other, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "403") && strstr(lcm_last_error(), "gated"),
          "403: %s", lcm_last_error());
    fprintf(stderr, "403 message: %s\n", lcm_last_error());
    srv.gated = false;

    lcm_hub_options o;
    lcm_hub_options_init(&o);
    o.endpoint = endpoint;
    o.cache_dir = other;
    st = lcm_hub_pull("test-org/no-such-model", &o, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "404") && strstr(lcm_last_error(), "model id") &&
              strstr(lcm_last_error(), "test-org/no-such-model"),
          "404: %s", lcm_last_error());
    fprintf(stderr, "404 message: %s\n", lcm_last_error());
    snprintf(srv.missing, sizeof srv.missing, "vae/config.json");
    st = pull(other, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "404") && strstr(lcm_last_error(), "vae/config.json"),
          "404 file: %s", lcm_last_error());
    srv.missing[0] = '\0';
    st = lcm_hub_pull("not an id", &o, &snapshot);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), "not an id"), "bad id: %s",
          lcm_last_error());

    // Cancelling from the progress callback keeps the partial file for next time.
    char cancel[PATH_MAX];
    cache_path(cancel, sizeof cancel, "cancel");
    cb = (callbacks){.cancel_after = 1};
    st = pull(cancel, NULL, NULL, &cb, &snapshot);
    CHECK(st == LCM_ERR_CANCELLED, "cancel: %s %s", lcm_status_name(st), lcm_last_error());
}

// A repository reached under its old name (relative redirects) lands in the cache folder of the
// name asked for, as with huggingface_hub.
static void test_renamed(void) {
    char cache[PATH_MAX], path[PATH_MAX];
    cache_path(cache, sizeof cache, "renamed");
    lcm_hub_options o;
    lcm_hub_options_init(&o);
    o.endpoint = endpoint;
    o.cache_dir = cache;
    char *snapshot = NULL;
    CHECK_OK(lcm_hub_pull(OLD_ID "@main", &o, &snapshot));
    test_path(path, sizeof path, "%s/models--test-org--old-name/snapshots/%s/unet/config.json", cache, COMMIT);
    CHECK(access(path, F_OK) == 0, "%s missing after a pull through redirects", path);
    free(snapshot);
}

// A cache that huggingface_hub filled (built here by hand, with files the pipeline does not need
// too) is used as it is: no file is requested.
static void test_foreign_cache(void) {
    char cache[PATH_MAX], repo[PATH_MAX], path[PATH_MAX];
    cache_path(cache, sizeof cache, "foreign");
    test_path(repo, sizeof repo, "%s/models--test-org--tiny-lcm", cache);
    for (int i = 0; i < srv.count; i++) {
        const served_file *f = &srv.files[i];
        char cmd[3 * PATH_MAX], target[PATH_MAX] = "";
        for (const char *c = f->path; *c; c++)
            if (*c == '/') strcat(target, "../");
        test_path(cmd, sizeof cmd, "mkdir -p %s/blobs $(dirname %s/snapshots/%s/%s)", repo, repo, COMMIT, f->path);
        CHECK(system(cmd) == 0, "%s", cmd);
        test_path(path, sizeof path, "%s/blobs/%s", repo, f->etag);
        FILE *fp = fopen(path, "wb");
        if (fp) {
            fwrite(f->data, 1, f->size, fp);
            fclose(fp);
        }
        test_path(path, sizeof path, "%s/snapshots/%s/%s", repo, COMMIT, f->path);
        char link_target[PATH_MAX];
        test_path(link_target, sizeof link_target, "%s../../blobs/%s", target, f->etag);
        CHECK(symlink(link_target, path) == 0, "symlink %s", path);
    }
    test_path(path, sizeof path, "%s/refs", repo);
    mkdir(path, 0755);
    test_path(path, sizeof path, "%s/refs/main", repo);
    FILE *fp = fopen(path, "w");
    if (fp) {
        fputs(COMMIT, fp);
        fclose(fp);
    }
    callbacks cb = {0};
    char *snapshot = NULL;
    reset_counters();
    CHECK_OK(pull(cache, NULL, NULL, &cb, &snapshot));
    CHECK(srv.head_requests == 0 && srv.get_requests == 0, "a filled cache still made %d HEAD, %d GET requests",
          srv.head_requests, srv.get_requests);
    free(snapshot);
}

static void test_generate_by_id(void) {
    char cache[PATH_MAX], cmd[8192], out[4096], by_id[PATH_MAX], by_folder[PATH_MAX];
    cache_path(cache, sizeof cache, "generate");
    test_path(by_id, sizeof by_id, "%s/by-id.png", tmpdir);
    test_path(by_folder, sizeof by_folder, "%s/by-folder.png", tmpdir);
    const char *args = "--prompt 'a red cube' --seed 7 --steps 1 --width 64 --height 64 --quiet";
    test_path(cmd, sizeof cmd, "HF_ENDPOINT=%s HF_HUB_CACHE=%s %s generate --model %s %s --output %s 2>&1",
             endpoint, cache, test_lcm_bin(), REPO_ID, args, by_id);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "generate by id: exit %d: %s", rc, out);
    test_path(cmd, sizeof cmd, "%s generate --model %s %s --output %s 2>&1", test_lcm_bin(), model_dir,
             args, by_folder);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "generate from folder: exit %d: %s", rc, out);
    uint8_t *a = NULL, *b = NULL;
    int aw = 0, ah = 0, bw = 0, bh = 0;
    CHECK_OK(image_read_png(by_id, &a, &aw, &ah));
    CHECK_OK(image_read_png(by_folder, &b, &bw, &bh));
    CHECK(a && b && aw == bw && ah == bh && !memcmp(a, b, (size_t)aw * ah * 3),
          "the image from the hub id differs from the image from the folder");
    free(a);
    free(b);
    // Without --quiet the first use says it downloads, with the size.
    char cache2[PATH_MAX];
    cache_path(cache2, sizeof cache2, "generate2");
    test_path(cmd, sizeof cmd,
             "HF_ENDPOINT=%s HF_HUB_CACHE=%s %s generate --model %s --prompt x --steps 1 --width 64 "
             "--height 64 --output %s/notice.png 2>&1",
             endpoint, cache2, test_lcm_bin(), REPO_ID, tmpdir);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "downloading " REPO_ID) && strstr(out, "MB"),
          "first use notice missing: %s", out);
    // `lcm info` reads a hub id from the cache (never downloading).
    test_path(cmd, sizeof cmd, "HF_HUB_CACHE=%s %s info --model %s", cache, test_lcm_bin(), REPO_ID);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "/snapshots/" COMMIT) && strstr(out, "LatentConsistencyModelPipeline"),
          "lcm info by id: exit %d: %s", rc, out);
    // `lcm pull` prints the snapshot folder; a 404 id exits non-zero with the message.
    test_path(cmd, sizeof cmd, "HF_ENDPOINT=%s HF_HUB_CACHE=%s %s pull %s --quiet", endpoint, cache,
             test_lcm_bin(), REPO_ID);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "/snapshots/" COMMIT), "lcm pull: exit %d: %s", rc, out);
    test_path(cmd, sizeof cmd, "HF_ENDPOINT=%s HF_HUB_CACHE=%s %s pull test-org/missing 2>&1",
             endpoint, cache, test_lcm_bin());
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc != 0 && strstr(out, "404"), "lcm pull of a missing id: exit %d: %s", rc, out);
}

// A single file without a tokenizer: `lcm generate` fetches only the CLIP repo's tokenizer files
// into the cache, then works offline from it.
static void test_tokenizer_only(void) {
    char cache[PATH_MAX], file[PATH_MAX], cmd[8192], out[4096], png[PATH_MAX], snapshot_vocab[PATH_MAX];
    cache_path(cache, sizeof cache, "tokenizer-cache");
    test_path(file, sizeof file, "%s/no-tokenizer.safetensors", tmpdir);
    test_path(png, sizeof png, "%s/no-tokenizer.png", tmpdir);
    CHECK_OK(checkpoint_write(model_dir, file, CHECKPOINT_STORE_CONFIGS));
    reset_counters();
    test_path(cmd, sizeof cmd, "HF_ENDPOINT=%s HF_HUB_CACHE=%s %s generate --model %s --prompt cube --steps 1 "
              "--width 64 --height 64 --quiet --output %s 2>&1", endpoint, cache, test_lcm_bin(), file, png);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0 && access(png, F_OK) == 0, "generate with the tokenizer from the hub: exit %d: %s", rc, out);
    fprintf(stderr, "tokenizer-only pull fetched: %s\n", srv.fetched);
    CHECK(strstr(srv.fetched, "tokenizer/vocab.json;") && strstr(srv.fetched, "tokenizer/merges.txt;") &&
              !strstr(srv.fetched, ".safetensors") && !strstr(srv.fetched, "unet/"),
          "the tokenizer pull fetched: %s", srv.fetched);
    test_path(snapshot_vocab, sizeof snapshot_vocab, "%s/models--openai--clip-vit-large-patch14/snapshots/%s/vocab.json",
              cache, COMMIT);
    CHECK(access(snapshot_vocab, F_OK) == 0, "%s missing", snapshot_vocab);
    // Offline, the cache answers.
    test_path(cmd, sizeof cmd, "HF_HUB_OFFLINE=1 HF_HUB_CACHE=%s %s generate --model %s --prompt cube --steps 1 "
              "--width 64 --height 64 --quiet --output %s 2>&1", cache, test_lcm_bin(), file, png);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "offline from the cached tokenizer: exit %d: %s", rc, out);
}

// ---- repositories of one model: lcm_single_model_resolve, --taesd ID, --controlnet ID --------

static lcm_status resolve_single(const char *cache, const char *id, const char *variant, callbacks *cb,
                                 char **path) {
    lcm_hub_options o;
    lcm_hub_options_init(&o);
    o.endpoint = endpoint;
    o.cache_dir = cache;
    o.variant = variant;
    o.start = on_start;
    o.progress = on_progress;
    o.user_data = cb;
    return lcm_single_model_resolve(id, &o, path);
}

// What a pull of a one-model repository fetches: the .json files, and the weights the variant
// rule picks (NAME.VARIANT.safetensors when the repository has it, else the plain files).
static bool single_needed(single_repo *r, const char *path, const char *variant) {
    size_t len = strlen(path);
    if (len > 5 && !strcmp(path + len - 5, ".json")) return true;
    const char *dot = strchr(path, '.');
    bool variant_file = dot && strchr(dot + 1, '.') != NULL;
    char variant_name[300];
    snprintf(variant_name, sizeof variant_name, "diffusion_pytorch_model.%s.safetensors", variant ? variant : "");
    if (variant && find_single_file(r, variant_name)) return !strcmp(path, variant_name);
    return !variant_file;
}

// CACHE/models--ORG--NAME for `id`.
static void cache_repo_dir(char *buf, size_t size, const char *cache, const char *id) {
    char name[256];
    size_t n = 0;
    for (const char *c = id; *c && n + 3 < sizeof name; c++) {
        if (*c == '/') {
            memcpy(name + n, "--", 2);
            n += 2;
        } else {
            name[n++] = *c;
        }
    }
    name[n] = '\0';
    test_path(buf, size, "%s/models--%s", cache, name);
}

// The cache layout of check_layout for a one-model repository: the needed files are relative
// links to their blobs with the served content; the others (and the extras) are not there, and
// neither are their blobs.
static void check_single_layout(const char *cache, const char *snapshot, single_repo *r, const char *variant) {
    char repo[PATH_MAX], want[PATH_MAX], path[PATH_MAX];
    cache_repo_dir(repo, sizeof repo, cache, r->id);
    test_path(want, sizeof want, "%s/snapshots/%s", repo, COMMIT);
    CHECK(snapshot && !strcmp(snapshot, want), "%s: snapshot %s, want %s", r->id, snapshot ? snapshot : "(null)",
          want);
    for (int i = 0; i < r->count; i++) {
        const served_file *f = &r->files[i];
        char target[PATH_MAX] = {0}, expected[PATH_MAX];
        test_path(path, sizeof path, "%s/%s", want, f->path);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (!single_needed(r, f->path, variant)) {
            CHECK(n < 0, "%s: %s was downloaded (variant %s)", r->id, f->path, variant ? variant : "none");
            test_path(path, sizeof path, "%s/blobs/%s", repo, f->etag);
            CHECK(access(path, F_OK) != 0, "%s: the blob of %s was downloaded", r->id, f->path);
            continue;
        }
        test_path(expected, sizeof expected, "../../blobs/%s", f->etag);
        CHECK(n > 0 && !strcmp(target, expected), "%s: %s -> '%s', want '%s'", r->id, f->path, target, expected);
        test_path(path, sizeof path, "%s/%s", want, f->path);
        CHECK(files_equal(path, f), "%s: %s differs from the served file", r->id, f->path);
    }
    for (int i = 0; i < 4 && r->extra[i]; i++) {
        test_path(path, sizeof path, "%s/%s", want, r->extra[i]);
        CHECK(access(path, F_OK) != 0, "%s: %s was downloaded", r->id, r->extra[i]);
    }
}

static uint64_t single_bytes(single_repo *r, const char *variant) {
    uint64_t total = 0;
    for (int i = 0; i < r->count; i++)
        if (single_needed(r, r->files[i].path, variant)) total += r->files[i].size;
    return total;
}

static void test_single_pull(void) {
    single_repo *taesd = &srv.singles[SINGLE_TAESD];
    char cache[PATH_MAX], empty[PATH_MAX], missing[PATH_MAX];
    cache_path(cache, sizeof cache, "single");
    cache_path(empty, sizeof empty, "single-empty");
    callbacks cb = {0};
    char *path = NULL;
    reset_counters();
    CHECK_OK(resolve_single(cache, taesd->id, NULL, &cb, &path));
    check_single_layout(cache, path, taesd, NULL);
    CHECK(cb.starts == 1 && cb.bytes == single_bytes(taesd, NULL), "start callback: %d calls, %llu bytes, want %llu",
          cb.starts, (unsigned long long)cb.bytes, (unsigned long long)single_bytes(taesd, NULL));
    free(path);

    // The second time the API is asked for the commit and no file is requested.
    reset_counters();
    cb = (callbacks){0};
    CHECK_OK(resolve_single(cache, taesd->id, NULL, &cb, &path));
    CHECK(srv.api_requests == 1 && srv.head_requests == 0 && srv.get_requests == 0 && cb.starts == 0,
          "second single-model pull: %d api, %d HEAD, %d GET requests, %d starts", srv.api_requests,
          srv.head_requests, srv.get_requests, cb.starts);
    free(path);

    // A folder is returned as it is; a missing path that is no id says so.
    reset_counters();
    CHECK_OK(lcm_single_model_resolve(taesd_dir, NULL, &path));
    CHECK(path && !strcmp(path, taesd_dir), "folder resolved to %s", path ? path : "(null)");
    free(path);
    test_path(missing, sizeof missing, "%s/no/such-taesd", tmpdir);
    lcm_status st = lcm_single_model_resolve(missing, NULL, &path);
    CHECK(st == LCM_ERR_IO && !path && strstr(lcm_last_error(), missing) && strstr(lcm_last_error(), "no such"),
          "missing folder: %s %s", lcm_status_name(st), lcm_last_error());
    CHECK(srv.api_requests + srv.head_requests + srv.get_requests == 0, "a folder made requests");

    // Offline: the cache answers without a request; an empty cache is a clear error.
    setenv("HF_HUB_OFFLINE", "1", 1);
    CHECK_OK(resolve_single(cache, taesd->id, NULL, &cb, &path));
    CHECK(srv.api_requests + srv.head_requests + srv.get_requests == 0, "offline single-model pull made requests");
    check_single_layout(cache, path, taesd, NULL);
    free(path);
    st = resolve_single(empty, taesd->id, NULL, &cb, &path);
    CHECK(st == LCM_ERR_IO && !path && strstr(lcm_last_error(), taesd->id) &&
              strstr(lcm_last_error(), "not in the cache") && strstr(lcm_last_error(), "HF_HUB_OFFLINE") &&
              !strstr(lcm_last_error(), "lcm pull"),
          "offline single model, empty cache: %s", lcm_last_error());
    fprintf(stderr, "offline single-model message: %s\n", lcm_last_error());
    unsetenv("HF_HUB_OFFLINE");

    // No network: the cached model still works; without it, the no-network message.
    char saved[64];
    snprintf(saved, sizeof saved, "%s", endpoint);
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:1");
    CHECK_OK(resolve_single(cache, taesd->id, NULL, &cb, &path));
    check_single_layout(cache, path, taesd, NULL);
    free(path);
    st = resolve_single(empty, taesd->id, NULL, &cb, &path);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "no network"), "no network, single model: %s",
          lcm_last_error());
    snprintf(endpoint, sizeof endpoint, "%s", saved);
}

// --variant fp16: the ControlNet's fp16 file alone; without a variant its plain file alone; the
// TAESD, which has no fp16 file, falls back to the plain one.
static void test_single_variant(void) {
    single_repo *cn = &srv.singles[SINGLE_CONTROLNET], *taesd = &srv.singles[SINGLE_TAESD];
    char cache[PATH_MAX];
    callbacks cb = {0};
    char *path = NULL;
    cache_path(cache, sizeof cache, "single-fp16");
    CHECK_OK(resolve_single(cache, cn->id, "fp16", &cb, &path));
    check_single_layout(cache, path, cn, "fp16");
    free(path);
    cache_path(cache, sizeof cache, "single-plain");
    CHECK_OK(resolve_single(cache, cn->id, NULL, &cb, &path));
    check_single_layout(cache, path, cn, NULL);
    free(path);
    cache_path(cache, sizeof cache, "single-fallback");
    CHECK_OK(resolve_single(cache, taesd->id, "fp16", &cb, &path));
    check_single_layout(cache, path, taesd, "fp16");
    free(path);
    // Sharded weights at the root: the index, then the shard it names.
    single_repo *sharded = &srv.singles[SINGLE_SHARDED];
    cache_path(cache, sizeof cache, "single-sharded");
    CHECK_OK(resolve_single(cache, sharded->id, NULL, &cb, &path));
    check_single_layout(cache, path, sharded, NULL);
    free(path);
}

static void test_single_errors(void) {
    char cache[PATH_MAX];
    cache_path(cache, sizeof cache, "single-errors");
    callbacks cb = {0};
    char *path = NULL;
    // A pipeline repository has no config.json at its root.
    reset_counters();
    lcm_status st = resolve_single(cache, REPO_ID, NULL, &cb, &path);
    CHECK(st == LCM_ERR_UNSUPPORTED && !path && strstr(lcm_last_error(), REPO_ID) &&
              strstr(lcm_last_error(), "no config.json"),
          "pipeline repo as a single model: %s %s", lcm_status_name(st), lcm_last_error());
    CHECK(srv.head_requests + srv.get_requests == 0, "a repo without config.json still fetched files");
    fprintf(stderr, "no-config message: %s\n", lcm_last_error());
    // Pickled weights only.
    single_repo *pickle = &srv.singles[SINGLE_PICKLE];
    st = resolve_single(cache, pickle->id, "fp16", &cb, &path);
    CHECK(st == LCM_ERR_UNSUPPORTED && !path && strstr(lcm_last_error(), pickle->id) &&
              strstr(lcm_last_error(), "diffusion_pytorch_model[.fp16].safetensors") &&
              strstr(lcm_last_error(), ".bin"),
          "pickle-only repo: %s %s", lcm_status_name(st), lcm_last_error());
    CHECK(srv.head_requests + srv.get_requests == 0, "a repo without safetensors still fetched files");
    fprintf(stderr, "no-safetensors message: %s\n", lcm_last_error());
    st = resolve_single(cache, "test-org/no-such-taesd", NULL, &cb, &path);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), "404") && strstr(lcm_last_error(), "test-org/no-such-taesd"),
          "404 single model: %s", lcm_last_error());
}

static bool same_pixels(const char *a_path, const char *b_path) {
    uint8_t *a = NULL, *b = NULL;
    int aw = 0, ah = 0, bw = 0, bh = 0;
    CHECK_OK(image_read_png(a_path, &a, &aw, &ah));
    CHECK_OK(image_read_png(b_path, &b, &bw, &bh));
    int max_diff = a && b && aw == bw && ah == bh ? 0 : 256;
    for (size_t i = 0; max_diff < 256 && i < (size_t)aw * ah * 3; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > max_diff) max_diff = d;
    }
    fprintf(stderr, "%s vs %s: max abs diff %d\n", a_path, b_path, max_diff);
    free(a);
    free(b);
    return max_diff == 0;
}

// A pipeline folder among the fixtures that `controlnet` fits ("" if none).
static void find_controlnet_model(char *out, size_t size) {
    DIR *d = opendir(test_fixtures());
    struct dirent *e;
    out[0] = '\0';
    while (d && (e = readdir(d)) && !out[0]) {
        char dir[PATH_MAX], cls[128];
        if (e->d_name[0] == '.') continue;
        test_path(dir, sizeof dir, "%s/%s", test_fixtures(), e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (!cls[0]) continue;
        lcm_pipeline_options options;
        lcm_pipeline_options_init(&options);
        options.threads = 1;
        options.controlnet = controlnet_dir;
        lcm_pipeline *pipeline = NULL;
        if (lcm_pipeline_open(dir, &options, &pipeline) == LCM_OK) snprintf(out, size, "%s", dir);
        lcm_pipeline_close(pipeline);
        lcm_clear_error();
    }
    if (d) closedir(d);
    CHECK(out[0], "no pipeline among the fixtures fits the ControlNet %s", controlnet_dir);
}

// `lcm generate --taesd ID` / `--controlnet ID` give the pixels of the same flags with the folders.
static void test_generate_single(void) {
    char cache[PATH_MAX], empty[PATH_MAX], cmd[8192], out[4096], env[1024];
    char by_folder[PATH_MAX], by_id[PATH_MAX], by_shards[PATH_MAX], offline[PATH_MAX], vae[PATH_MAX];
    cache_path(cache, sizeof cache, "generate-single");
    cache_path(empty, sizeof empty, "generate-single-empty");
    test_path(env, sizeof env, "HF_ENDPOINT=%s HF_HUB_CACHE=%s", endpoint, cache);
    const char *args = "--prompt 'a red cube' --seed 7 --steps 1 --width 64 --height 64 --threads 1 --quiet";
    struct {
        const char *environment, *taesd;
        char *png;
    } runs[] = {
        {"", taesd_dir, by_folder},
        {env, srv.singles[SINGLE_TAESD].id, by_id},
        {env, srv.singles[SINGLE_SHARDED].id, by_shards},
        {"HF_HUB_OFFLINE=1", srv.singles[SINGLE_TAESD].id, offline},
        {"", NULL, vae},
    };
    char offline_env[PATH_MAX + 64];
    test_path(offline_env, sizeof offline_env, "HF_HUB_OFFLINE=1 HF_HUB_CACHE=%s", cache);
    runs[3].environment = offline_env;
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        test_path(runs[i].png, PATH_MAX, "%s/taesd-%zu.png", tmpdir, i);
        test_path(cmd, sizeof cmd, "%s %s generate --model %s %s%s %s --output %s 2>&1", runs[i].environment,
                  test_lcm_bin(), model_dir, runs[i].taesd ? "--taesd " : "", runs[i].taesd ? runs[i].taesd : "",
                  args, runs[i].png);
        int rc = test_run(cmd, out, sizeof out);
        CHECK(rc == 0, "%s: exit %d: %s", cmd, rc, out);
    }
    CHECK(same_pixels(by_folder, by_id), "--taesd ID differs from --taesd FOLDER");
    CHECK(same_pixels(by_folder, by_shards), "--taesd ID (sharded) differs from --taesd FOLDER");
    CHECK(same_pixels(by_folder, offline), "--taesd ID offline differs from --taesd FOLDER");
    CHECK(!same_pixels(by_folder, vae), "--taesd made no difference to the image");
    // Offline without the TAESD in the cache: exit 2 with the message.
    test_path(cmd, sizeof cmd, "HF_HUB_OFFLINE=1 HF_HUB_CACHE=%s %s generate --model %s --taesd %s %s --output %s/x.png 2>&1",
              empty, test_lcm_bin(), model_dir, srv.singles[SINGLE_TAESD].id, args, tmpdir);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "not in the cache") && strstr(out, srv.singles[SINGLE_TAESD].id),
          "offline --taesd without cache: exit %d: %s", rc, out);

    // --controlnet ID, on a pipeline it fits, with a gradient as the control image.
    char cn_model[PATH_MAX], control[PATH_MAX], cn_folder[PATH_MAX], cn_id[PATH_MAX];
    find_controlnet_model(cn_model, sizeof cn_model);
    if (!cn_model[0]) return;
    uint8_t rgb[64 * 64 * 3];
    for (int i = 0; i < 64 * 64 * 3; i++) rgb[i] = (uint8_t)(i % 3 == 0 ? (i / 3) % 64 * 4 : (i / 192) * 4);
    test_path(control, sizeof control, "%s/control.png", tmpdir);
    CHECK_OK(image_write_png(control, rgb, 64, 64, NULL, NULL, 0));
    test_path(cn_folder, sizeof cn_folder, "%s/cn-folder.png", tmpdir);
    test_path(cn_id, sizeof cn_id, "%s/cn-id.png", tmpdir);
    const char *controlnets[2] = {controlnet_dir, srv.singles[SINGLE_CONTROLNET].id};
    const char *pngs[2] = {cn_folder, cn_id};
    for (int i = 0; i < 2; i++) {
        test_path(cmd, sizeof cmd, "%s %s generate --model %s --controlnet %s --control-image %s %s --output %s 2>&1",
                  i ? env : "", test_lcm_bin(), cn_model, controlnets[i], control, args, pngs[i]);
        rc = test_run(cmd, out, sizeof out);
        CHECK(rc == 0, "%s: exit %d: %s", cmd, rc, out);
    }
    CHECK(same_pixels(cn_folder, cn_id), "--controlnet ID differs from --controlnet FOLDER");

    // lcm serve resolves its ids before loading anything: a missing one stops it with the 404.
    test_path(cmd, sizeof cmd, "%s %s serve --model %s --taesd test-org/no-such-taesd --port 0 2>&1", env,
              test_lcm_bin(), model_dir);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 2 && strstr(out, "404") && strstr(out, "test-org/no-such-taesd"), "serve --taesd 404: exit %d: %s",
          rc, out);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_path(model_dir, sizeof model_dir, "%s/tiny-lcm", test_fixtures());
    server_start();
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", srv.port);
    unsetenv("HF_TOKEN");
    unsetenv("HF_HUB_OFFLINE");
    // The server is local: a proxy from the environment must not be asked (libcurl honours these).
    const char *proxies[] = {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"};
    for (size_t i = 0; i < 4; i++) unsetenv(proxies[i]);
    test_fresh_and_second_pull();
    test_variant();
    test_resume();
    test_killed_pull();
    test_corrupt();
    test_errors();
    test_disk_full();
    test_renamed();
    test_foreign_cache();
    test_generate_by_id();
    test_tokenizer_only();
    test_single_pull();
    test_single_variant();
    test_single_errors();
    test_generate_single();
    server_stop();
    char cmd[PATH_MAX + 16];
    test_path(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
