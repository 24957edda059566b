// Models by name in the public API (include/lcm.h): hub ids, pulls into the Hugging Face cache and
// resolving a --model argument to a path. The download itself is io/hub.c.
#include <string.h>

#include "io/hub.h"
#include "io/hub_cache.h"
#include "lcm.h"

void lcm_hub_options_init(lcm_hub_options *options) { memset(options, 0, sizeof *options); }

int lcm_is_hub_id(const char *model) { return hub_is_id(model) ? 1 : 0; }

lcm_status lcm_hub_pull(const char *id, const lcm_hub_options *options, char **snapshot_dir) {
    return hub_pull_selection(id, options, HUB_SELECT_PIPELINE, snapshot_dir);
}

lcm_status lcm_model_resolve(const char *model, const lcm_hub_options *options, char **path) {
    return hub_resolve(model, options, HUB_SELECT_PIPELINE, path);
}

lcm_status lcm_single_model_resolve(const char *model, const lcm_hub_options *options, char **path) {
    return hub_resolve(model, options, HUB_SELECT_SINGLE_MODEL, path);
}
