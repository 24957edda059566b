// `lcm info`'s description of a model folder or single-file checkpoint (lcm_model_describe).
#ifndef LCM_TOOLS_MODEL_INFO_H
#define LCM_TOOLS_MODEL_INFO_H

#include "lcm.h"

// lcm_model_describe: on success *json is malloc'd JSON text, owned by the caller (free()).
lcm_status model_info_describe(const char *path, const char *variant, char **json);

#endif
