// Opening and asking a pipeline in the public API (include/lcm.h); the loading is
// pipeline/pipeline.c.
#include "lcm.h"
#include "pipeline/pipeline.h"

void lcm_pipeline_options_init(lcm_pipeline_options *options) { pipeline_options_init(options); }

lcm_status lcm_pipeline_open(const char *model_dir, const lcm_pipeline_options *options,
                             lcm_pipeline **out) {
    return pipeline_open(model_dir, options, out);
}

void lcm_pipeline_close(lcm_pipeline *pipeline) { pipeline_close(pipeline); }

const char *lcm_pipeline_lora_report(const lcm_pipeline *pipeline) {
    return pipeline_lora_report(pipeline);
}

int lcm_pipeline_default_size(const lcm_pipeline *pipeline) { return pipeline_default_size(pipeline); }

int lcm_pipeline_max_steps(const lcm_pipeline *pipeline) { return pipeline_max_steps(pipeline); }

const char *lcm_pipeline_model_file(const lcm_pipeline *pipeline) {
    return pipeline ? pipeline_model_file(pipeline) : "";
}
