// libFuzzer harness for what `lcm pull` reads from a hub server besides file contents
// (src/io/hub_http.c, src/io/hub_select.c, io/hub_parse.h): response header lines, the API's
// revision answer and shard indexes. The first byte picks the reader (and the selection/variant
// for revision answers).
// Checked: a header line never overflows a field and leaves every field NUL-terminated; a plan
// holds only safe relative paths without duplicates; a refusal says why.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "guarded_input.h"
#include "io/hub_cache.h"
#include "io/hub_parse.h"

static void check_plan(const hub_plan *plan) {
    if (plan->count < 0 || plan->count > HUB_MAX_FILES) abort();
    for (int i = 0; i < plan->count; i++) {
        const char *path = plan->files[i].path;
        if (!memchr(path, '\0', sizeof plan->files[i].path) || !hub_is_safe_file_name(path)) abort();
        for (int j = 0; j < i; j++)
            if (!strcmp(plan->files[j].path, path)) abort();
    }
}

static void check_terminated(const char *field, size_t size) {
    if (!memchr(field, '\0', size)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    guarded_input input;
    if (guarded_input_make(&input, data + 1, size - 1) != 0) return 0;
    const char *text = (const char *)input.bytes;
    size_t len = size - 1;
    unsigned mode = data[0];
    static hub_plan plan; // 140 KB: not on the stack
    memset(&plan, 0, sizeof plan);
    if (mode % 3 == 0) {
        // Header lines, split as libcurl would (one call per line, CRLF kept).
        http_response r;
        memset(&r, 0, sizeof r);
        r.content_length = r.linked_size = -1;
        size_t start = 0;
        for (size_t i = 0; i < len; i++)
            if (text[i] == '\n' || i + 1 == len) {
                hub_response_header(&r, text + start, i + 1 - start);
                start = i + 1;
            }
        check_terminated(r.etag, sizeof r.etag);
        check_terminated(r.linked_etag, sizeof r.linked_etag);
        check_terminated(r.commit, sizeof r.commit);
        check_terminated(r.location, sizeof r.location);
    } else if (mode % 3 == 1) {
        static const char *const variants[] = {NULL, "fp16", ""};
        hub_selection selection = (hub_selection)((mode / 3) % 3);
        const char *variant = variants[(mode / 9) % 3];
        char commit[64];
        lcm_status st = hub_plan_from_revision(text, len, "fuzz@main", "http://hub/api", selection, variant,
                                               commit, &plan);
        if (st == LCM_OK) {
            if (!hub_is_commit_hash(commit)) abort();
            check_plan(&plan);
        } else if (lcm_last_error()[0] == '\0') {
            abort();
        }
    } else {
        static const char *const paths[] = {"unet/diffusion_pytorch_model.safetensors.index.json",
                                            "diffusion_pytorch_model.safetensors.index.json"};
        lcm_status st = hub_plan_add_shards(text, len, paths[(mode / 3) % 2], &plan);
        if (st == LCM_OK) check_plan(&plan);
        else if (lcm_last_error()[0] == '\0') abort();
    }
    lcm_clear_error();
    guarded_input_free(&input);
    return 0;
}
