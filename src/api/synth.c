// lcm_synth_model: random-weight models from config files (src/tools/synth.c).
#include "core/error.h"
#include "lcm.h"
#include "tools/synth.h"

lcm_status lcm_synth_model(const char *config_dir, const char *out_dir, const char *tokenizer_dir,
                           lcm_weight_dtype dtype, lcm_synth_progress_fn progress, void *user_data) {
    st_dtype st_type;
    switch (dtype) {
    case LCM_WEIGHT_FP32: st_type = ST_F32; break;
    case LCM_WEIGHT_FP16: st_type = ST_F16; break;
    case LCM_WEIGHT_BF16: st_type = ST_BF16; break;
    default: return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "weight dtype %d: expected fp32, fp16 or bf16", (int)dtype);
    }
    return synth_model(config_dir, out_dir, tokenizer_dir, st_type, progress, user_data);
}
