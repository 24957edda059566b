// Embedding lcm.c: load a model folder once, make an image, write it as a PNG.
//   example_txt2img MODEL_DIR "a prompt" out.png [seed]
#include <stdio.h>
#include <stdlib.h>

#include "lcm.h"

static int on_progress(void *user, int done, int total, double seconds) {
    (void)user;
    fprintf(stderr, "step %d/%d (%.1f s)\n", done, total, seconds);
    return 0; // non-zero would cancel
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR PROMPT OUT.png [SEED]\n", argv[0]);
        return 2;
    }
    lcm_pipeline *pipeline;
    if (lcm_pipeline_open(argv[1], NULL, &pipeline) != LCM_OK) {
        fprintf(stderr, "cannot load model: %s\n", lcm_last_error());
        return 1;
    }
    lcm_request request;
    lcm_request_init(&request); // diffusers' defaults: 4 steps, guidance 8.5, native size
    request.prompt = argv[2];
    request.seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    request.progress = on_progress;

    lcm_result *result;
    lcm_status status = lcm_generate(pipeline, &request, &result);
    if (status == LCM_OK) status = lcm_write_png(argv[3], &result->images[0], request.prompt);
    if (status != LCM_OK) fprintf(stderr, "failed: %s\n", lcm_last_error());
    lcm_result_free(result);
    lcm_pipeline_close(pipeline);
    return status == LCM_OK ? 0 : 1;
}
