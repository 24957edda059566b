// The HTTP side of hub downloads (io/hub.c drives it): one libcurl session per pull, the requests
// the huggingface_hub protocol needs (an API answer into memory, a HEAD for a file's ETag and size,
// a resumable, verified blob download into the cache) and the messages for their failures.
#ifndef LCM_IO_HUB_HTTP_H
#define LCM_IO_HUB_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/hub_cache.h"
#include "io/hub_parse.h"
#include "lcm.h"

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

// Starts a session for `options` (borrowed until hub_session_close): the endpoint (options, else
// $HF_ENDPOINT, else https://huggingface.co) and the token (options, else $HF_TOKEN).
lcm_status hub_session_open(hub_session *s, const lcm_hub_options *options);

// Ends the session; safe after a failed hub_session_open.
void hub_session_close(hub_session *s);

// {endpoint}/api/models/{id}/revision/{rev} and {endpoint}/{id}/resolve/{rev}/{path}.
void hub_revision_url(const hub_session *s, const hub_repo *repo, char *url, size_t size);
void hub_file_url(const hub_session *s, const hub_repo *repo, const char *path, char *url, size_t size);

// GET `url` into memory (at most HUB_API_MAX_BYTES): *text (NUL-terminated, malloc'd, the
// caller frees it; NULL when empty) and *len. A non-200 answer fails with a message naming `what`.
lcm_status hub_http_get_text(hub_session *s, const char *what, const char *url, char **text, size_t *len);

// HEAD `url` (a buffer of `size` bytes, updated as relative redirects of a renamed repository are
// followed) into *r; absolute redirects (to a CDN) are not followed: their headers are the answer.
// An answer outside 2xx/3xx fails with a message naming `what`.
lcm_status hub_http_head(hub_session *s, const char *what, char *url, size_t size, http_response *r);

// Downloads file `f` of the repo (its etag and size known from hub_http_head) from `url` into
// blobs/ETAG: resumed from blobs/ETAG.incomplete, verified (size; sha256 for sha256 ETags) and
// renamed into place only when whole, under huggingface_hub's lock file for that blob.
lcm_status hub_download_blob(hub_session *s, const hub_repo *repo, hub_file *f, const char *url);

#endif
