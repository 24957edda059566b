// lcm serve: load one model and serve the page and the HTTP APIs (app/server.c) until Ctrl-C.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/args.h"
#include "app/commands.h"
#include "app/server.h"
#include "lcm.h"

// The last path component of the model folder: the name clients see (never the path).
static void model_name(const char *dir, char *name, size_t size) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(name, size, "%.*s", (int)(len - start), dir + start);
}

static bool is_loopback(const char *host) {
    return !strcmp(host, "localhost") || !strncmp(host, "127.", 4) || !strcmp(host, "::1");
}

static int stop_at_first_step(void *user, int done, int total, double elapsed) {
    (void)user, (void)done, (void)total, (void)elapsed;
    return 1;
}

static void ignore_preview(void *user, int done, int total, int index, const lcm_image *preview) {
    (void)user, (void)done, (void)total, (void)index, (void)preview;
}

// Whether the pipeline runs a request using an optional feature: tried for real at the smallest
// size and stopped after its first step. LCM_ERR_UNSUPPORTED means no; reaching the first step
// (cancelled) means yes.
static bool feature_works(lcm_pipeline *pipeline, const char *feature, const lcm_request *request) {
    lcm_result *result = NULL;
    lcm_status st = lcm_generate(pipeline, request, &result);
    lcm_result_free(result);
    bool works = st == LCM_OK || st == LCM_ERR_CANCELLED;
    fprintf(stderr, "lcm serve: %s: %s%s%s\n", feature, works ? "supported" : "not available",
            works ? "" : " - ", works ? "" : lcm_last_error());
    return works;
}

static void find_features(lcm_pipeline *pipeline, serve_features *features) {
    int side = lcm_pipeline_default_size(pipeline) < 64 ? lcm_pipeline_default_size(pipeline) : 64;
    lcm_request probe;
    lcm_request_init(&probe);
    probe.prompt = "";
    probe.width = probe.height = side;
    probe.steps = 2;
    probe.progress = stop_at_first_step;

    lcm_request r = probe;
    r.negative_prompt = "blurry";
    features->negative_prompt = feature_works(pipeline, "negative prompt", &r);

    uint8_t *gray = calloc((size_t)side * side * 3, 1);
    lcm_image init = {side, side, gray};
    if (gray) {
        memset(gray, 128, (size_t)side * side * 3);
        r = probe;
        r.init_image = &init;
        r.strength = 1.0f;
        features->img2img = feature_works(pipeline, "img2img", &r);
        free(gray);
    }

    r = probe;
    r.preview = ignore_preview;
    features->preview = feature_works(pipeline, "live previews", &r);
    lcm_clear_error();
}

int cmd_serve(int argc, char **argv) {
    const char *model = NULL, *host = "127.0.0.1", *api_key = NULL, *variant = NULL;
    long port = 7860, queue = 16, max_size = 768, max_steps = 8, max_batch = 4, max_body = 16 << 20;
    long threads = 0, step_delay_ms = 0;
    bool insecure = false;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "diffusers model folder (LatentConsistencyModelPipeline)", false},
        {"host", ARG_STRING, &host, "address to listen on (default 127.0.0.1: this machine only)", false},
        {"port", ARG_INT, &port, "TCP port (default 7860; 0 = any free port, printed)", false},
        {"queue", ARG_INT, &queue, "requests that may wait for the generator; more get 429 (default 16)", false},
        {"api-key", ARG_STRING, &api_key, "require 'Authorization: Bearer KEY' on the API endpoints", false},
        {"insecure-no-api-key", ARG_FLAG, &insecure, "allow a non-loopback --host without --api-key", false},
        {"max-size", ARG_INT, &max_size, "largest width/height a client may ask for (default 768)", false},
        {"max-steps", ARG_INT, &max_steps, "most steps a client may ask for (default 8)", false},
        {"max-batch", ARG_INT, &max_batch, "most images per request (default 4)", false},
        {"max-body", ARG_INT, &max_body, "largest request body in bytes (default 16 MiB)", false},
        {"variant", ARG_STRING, &variant, "weight variant, e.g. fp16 (falls back to the plain files)", false},
        {"threads", ARG_INT, &threads, "compute threads (default: one per core)", false},
        {"step-delay-ms", ARG_INT, &step_delay_ms, "testing only: sleep after every step", false},
    };
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], NULL, 0, &npositional,
                        "lcm serve --model DIR [--host 127.0.0.1] [--port 7860] [--queue 16] [options]");
    if (rc) return rc == 1 ? 0 : 2;
    if (!model) {
        fprintf(stderr, "lcm serve: --model is required (see --help)\n");
        return 2;
    }
    if (port < 0 || port > 65535 || queue < 1 || queue > 100000 || max_size < 8 || max_size > 4096 ||
        max_steps < 1 || max_steps > 1000 || max_batch < 1 || max_batch > 64 || max_body < 1024 ||
        max_body > (1L << 30) || threads < 0 || threads > 1024 || step_delay_ms < 0 || step_delay_ms > 60000) {
        fprintf(stderr, "lcm serve: out of range: --port 0..65535, --queue 1..100000, --max-size 8..4096, "
                        "--max-steps 1..1000, --max-batch 1..64, --max-body 1024..1 GiB\n");
        return 2;
    }
    if (!is_loopback(host) && !api_key && !insecure) {
        fprintf(stderr, "lcm serve: --host %s lets other machines in: give --api-key KEY (clients send "
                        "'Authorization: Bearer KEY'), or --insecure-no-api-key to serve without one\n", host);
        return 2;
    }
    if (api_key && !api_key[0]) {
        fprintf(stderr, "lcm serve: --api-key must not be empty\n");
        return 2;
    }

    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    options.variant = variant;
    options.threads = (int)threads;
    lcm_pipeline *pipeline;
    lcm_status st = lcm_pipeline_open(model, &options, &pipeline);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm serve: %s\n", lcm_last_error());
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    serve_features features = {0};
    find_features(pipeline, &features);

    char name[256];
    model_name(model, name, sizeof name);
    int pipeline_steps = lcm_pipeline_max_steps(pipeline);
    serve_config config = {
        .model_dir = model,
        .model_name = name,
        .host = host,
        .port = (int)port,
        .queue_capacity = (int)queue,
        .api_key = api_key,
        .max_body = (size_t)max_body,
        .limits =
            {
                .default_size = lcm_pipeline_default_size(pipeline),
                .max_size = (int)(max_size / 8 * 8),
                .max_steps = max_steps < pipeline_steps ? (int)max_steps : pipeline_steps,
                .max_images = (int)max_batch,
                .max_image_bytes = (size_t)max_body,
            },
        .step_delay_ms = (int)step_delay_ms,
        .threads = (int)threads,
    };
    rc = serve_run(&config, pipeline, &features);
    lcm_pipeline_close(pipeline);
    return rc;
}
