// Reading a diffusers scheduler config for the LCM scheduler (sched/lcm_scheduler.h), which takes
// the parsed struct and reads no JSON itself.
#ifndef LCM_PIPELINE_SCHEDULER_CONFIG_H
#define LCM_PIPELINE_SCHEDULER_CONFIG_H

#include "io/json_config.h"
#include "lcm.h"
#include "sched/lcm_scheduler.h"

// Reads any diffusers scheduler config exactly as `LCMScheduler.from_config(config)` does: fields
// LCMScheduler does not know (PNDM's skip_prk_steps, _class_name, ...) are ignored, absent or null
// fields take LCMScheduler's defaults. A value of the wrong type is LCM_ERR_FORMAT; a value this
// implementation cannot run (unknown beta_schedule or prediction_type, thresholding true) is
// LCM_ERR_UNSUPPORTED naming the file, field and value. On success the caller owns *out and releases
// it with lcm_scheduler_config_free; on failure *out holds nothing to release.
lcm_status scheduler_config_read(const json_config *cfg, lcm_scheduler_config *out);

#endif
