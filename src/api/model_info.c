// lcm_model_describe: what a model folder holds (src/tools/model_info.c).
#include "lcm.h"
#include "tools/model_info.h"

lcm_status lcm_model_describe(const char *path, const char *variant, char **json) {
    return model_info_describe(path, variant, json);
}
