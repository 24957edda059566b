// What the hub download reads from the server, apart from file contents: response headers
// (io/hub_http.c), the API's revision answer (commit + file list) and shard indexes, which become
// the plan of files to fetch (io/hub_select.c). Kept apart from the transfer code so that the fuzz
// harness (fuzz/fuzz_hub.c) can feed them any bytes.
#ifndef LCM_IO_HUB_PARSE_H
#define LCM_IO_HUB_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/hub.h"
#include "lcm.h"

#define HUB_MAX_FILES 256
// The most bytes an API answer or a shard index may have.
#define HUB_API_MAX_BYTES (16u << 20)

// The headers of one answer that the download looks at. Lengths are -1 when absent.
typedef struct http_response {
    long status;
    char etag[160], linked_etag[160], commit[64], location[1024];
    int64_t content_length, linked_size;
} http_response;

// One header line as libcurl hands it over (`len` bytes, not NUL-terminated, CRLF included):
// a status line starts a new answer (after a redirect), the others fill in `r`. Values too long
// for their field are cut, never overflowed.
void hub_response_header(http_response *r, const char *line, size_t len);

typedef struct hub_file {
    char path[520];
    char etag[160];
    int64_t size;     // -1 when the server did not say
    bool have;        // already in the snapshot
    bool downloaded;
} hub_file;

typedef struct hub_plan {
    hub_file files[HUB_MAX_FILES];
    int count;
} hub_plan;

// The API's answer for a revision (`len` bytes of JSON): its commit into `commit` (40 hex digits)
// and the files `selection` needs into `plan` (variant rule as in io/weights.c; `variant` may be
// NULL). Every path added is a plain relative one. `what` and `url` name the request in errors.
lcm_status hub_plan_from_revision(const char *text, size_t len, const char *what, const char *url,
                                  hub_selection selection, const char *variant, char commit[64],
                                  hub_plan *plan);

// The shards a `*.safetensors.index.json` (`len` bytes, fetched as `path`) names join `plan`.
lcm_status hub_plan_add_shards(const char *text, size_t len, const char *path, hub_plan *plan);

// hub_plan_add_shards for the index file once it is in the snapshot (`snapshot_file`).
lcm_status hub_plan_add_shard_file(const char *snapshot_file, const char *path, hub_plan *plan);

#endif
