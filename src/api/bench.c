// lcm_bench_*: `lcm bench`'s figures (src/tools/bench*.c).
#include "lcm.h"
#include "tools/bench.h"

static const char *const stage_names[LCM_BENCH_STAGE_COUNT] = {
    "text_encoding", "unet_step", "vae_decode", "vae_decode_tiled", "taesd_decode", "end_to_end"};

const char *lcm_bench_stage_name(lcm_bench_stage stage) {
    return (int)stage >= 0 && (int)stage < LCM_BENCH_STAGE_COUNT ? stage_names[stage] : "unknown";
}

double lcm_bench_peak(lcm_precision precision, int size, char *method, size_t method_size) {
    return bench_peak(precision, size, method, method_size);
}

lcm_status lcm_bench_open(lcm_pipeline *pipeline, const lcm_bench_options *options, lcm_bench **out,
                          lcm_bench_plan *plan) {
    lcm_request request;
    lcm_request_init(&request);
    request.prompt = options->prompt;
    request.steps = options->steps;
    request.width = options->width;
    request.height = options->height;
    request.guidance_scale = options->guidance;
    request.control_image = options->control_image;
    request.control_scale = options->control_scale;
    return bench_open(pipeline, options, &request, out, plan);
}

lcm_status lcm_bench_run(lcm_bench *bench, lcm_bench_stage stage, double *wall_seconds, double *cpu_seconds) {
    if (stage != LCM_BENCH_END_TO_END) return bench_run_stage(bench, stage, wall_seconds, cpu_seconds);
    double t0 = bench_seconds_now(), c0 = bench_cpu_seconds_now();
    lcm_result *result = NULL;
    lcm_status st = lcm_generate(bench_pipeline(bench), bench_end_to_end_request(bench), &result);
    lcm_result_free(result);
    *wall_seconds = bench_seconds_now() - t0;
    *cpu_seconds = bench_cpu_seconds_now() - c0;
    return st;
}

void lcm_bench_close(lcm_bench *bench) { bench_close(bench); }

int lcm_bench_attention_shape_count(void) { return bench_attention_shape_count(); }

const char *lcm_bench_attention_kernel_name(int index) { return bench_attention_kernel_name(index); }

lcm_status lcm_bench_attention(int index, int runs, lcm_attention_timing *out) {
    lcm_status st = bench_attention(index, runs, out);
    // A kernel this CPU cannot run is a -1 in the timings, not a failure: drop its message.
    if (st == LCM_OK) lcm_clear_error();
    return st;
}
