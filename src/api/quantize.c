// lcm_quantize and the quantization queries (src/tools/quantize_model.h).
#include "lcm.h"
#include "ops/backend.h"
#include "tools/quantize_model.h"

void lcm_quantize_options_init(lcm_quantize_options *options) {
    quantize_model_options defaults;
    quantize_model_options_init(&defaults);
    *options = (lcm_quantize_options){
        .steps = defaults.steps,
        .guidance = defaults.guidance,
        .method = defaults.method == ACTIVATION_RANGE_MINMAX ? LCM_ACTIVATION_RANGE_MINMAX
                                                             : LCM_ACTIVATION_RANGE_PERCENTILE,
        .percentile = defaults.percentile,
    };
}

lcm_status lcm_quantize(const lcm_quantize_options *options) {
    quantize_model_options o;
    quantize_model_options_init(&o);
    o.model_dir = options->model_dir;
    o.calibration_path = options->calibration_path;
    o.output_dir = options->output_dir;
    o.samples = options->samples;
    o.steps = options->steps;
    o.seed = options->seed;
    o.guidance = options->guidance;
    o.method = options->method == LCM_ACTIVATION_RANGE_MINMAX ? ACTIVATION_RANGE_MINMAX : ACTIVATION_RANGE_PERCENTILE;
    o.symmetric_activations = options->symmetric_activations != 0;
    o.percentile = options->percentile;
    o.compress_weights = options->compress_weights != 0;
    o.vae = options->vae != 0;
    o.keep_fp32 = options->keep_fp32;
    o.quiet = options->quiet != 0;
    o.controlnet_dir = options->controlnet_dir;
    o.control_images = options->control_images;
    o.control_image_count = options->control_image_count;
    o.loras = options->loras;
    o.lora_count = options->lora_count;
    o.weights_only = options->weights_only != 0;
    o.interrupted = options->interrupted;
    return quantize_model(&o);
}

lcm_quantization lcm_model_quantization(const char *model_dir) {
    return quantize_model_is_int8(model_dir) ? LCM_QUANTIZED_INT8 : LCM_QUANTIZED_NONE;
}

lcm_quantization lcm_controlnet_quantization(const char *controlnet_dir) {
    switch (quantize_controlnet_kind(controlnet_dir)) {
    case QUANTIZED_INT8: return LCM_QUANTIZED_INT8;
    case QUANTIZED_WEIGHTS_ONLY: return LCM_QUANTIZED_WEIGHTS_ONLY;
    default: return LCM_QUANTIZED_NONE;
    }
}

const char *lcm_int8_kernels(void) {
    // The int8 path a pipeline takes: its backend comes from the same environment (the precision
    // does not enter into it).
    ops_backend backend = ops_backend_from_environment(LCM_PRECISION_FP32);
    return quantize_model_int8_kernel(&backend);
}
