// lcm serve: load one model and serve the page and the HTTP APIs (app/server.c) until Ctrl-C.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/args.h"
#include "app/commands.h"
#include "app/download_progress.h"
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

// With a ControlNet every probe carries a (grey) control image, as every request must.
static void find_features(lcm_pipeline *pipeline, serve_features *features) {
    int side = lcm_pipeline_default_size(pipeline) < 64 ? lcm_pipeline_default_size(pipeline) : 64;
    uint8_t *gray = calloc((size_t)side * side * 3, 1);
    if (!gray) return;
    memset(gray, 128, (size_t)side * side * 3);
    lcm_image image = {side, side, gray};
    lcm_request probe;
    lcm_request_init(&probe);
    probe.prompt = "";
    probe.width = probe.height = side;
    probe.steps = 2;
    probe.progress = stop_at_first_step;
    if (features->controlnet) probe.control_image = &image;

    lcm_request r = probe;
    r.negative_prompt = "blurry";
    features->negative_prompt = feature_works(pipeline, "negative prompt", &r);

    r = probe;
    r.init_image = &image;
    r.strength = 1.0f;
    features->img2img = feature_works(pipeline, "img2img", &r);

    r = probe;
    r.preview = ignore_preview;
    features->preview = feature_works(pipeline, "live previews", &r);
    free(gray);
    lcm_clear_error();
}

// "DIR/pytorch_lora_weights.safetensors:0.5" -> "pytorch_lora_weights.safetensors:0.5": clients
// see file names, never the server's paths.
static const char *file_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int cmd_serve(int argc, char **argv) {
    const char *model = NULL, *host = "127.0.0.1", *api_key = NULL, *variant = NULL;
    long port = 7860, queue = 16, max_size = 768, max_steps = 8, max_batch = 4, max_body = 16 << 20;
    long threads = 0, step_delay_ms = 0;
    bool insecure = false, lora_lenient = false, no_cache = false;
    const char *controlnet = NULL, *control_weights = NULL, *taesd = NULL;
    args_list lora_specs = {0};
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model,
         "diffusers model folder (LatentConsistencyModelPipeline), single .safetensors checkpoint, "
         "or hub id ORG/NAME[@REVISION] (downloaded on first use)",
         false},
        {"host", ARG_STRING, &host, "address to listen on (default 127.0.0.1: this machine only)", false},
        {"port", ARG_INT, &port, "TCP port (default 7860; 0 = any free port, printed)", false},
        {"queue", ARG_INT, &queue, "requests that may wait for the generator; more get 429 (default 16)", false},
        {"api-key", ARG_STRING, &api_key, "require 'Authorization: Bearer KEY' on the API endpoints", false},
        {"insecure-no-api-key", ARG_FLAG, &insecure, "allow a non-loopback --host without --api-key", false},
        {"max-size", ARG_INT, &max_size, "largest width/height a client may ask for (default 768)", false},
        {"max-steps", ARG_INT, &max_steps, "most steps a client may ask for (default 8)", false},
        {"max-batch", ARG_INT, &max_batch, "most images per request (default 4)", false},
        {"max-body", ARG_INT, &max_body, "largest request body in bytes (default 16 MiB)", false},
        {"controlnet", ARG_STRING, &controlnet,
         "ControlNetModel, folder or hub id ORG/NAME[@REVISION]: the page and the APIs then take a "
         "control image",
         false},
        {"taesd", ARG_STRING, &taesd,
         "decode (and preview) with this TAESD (AutoencoderTiny) instead of the VAE: folder or hub "
         "id ORG/NAME[@REVISION], e.g. madebyollin/taesd",
         false},
        {"lora", ARG_STRING, &lora_specs, "LoRA adapter FILE[:SCALE] fused at load (repeatable)", true},
        {"lora-lenient", ARG_FLAG, &lora_lenient, "warn instead of failing on LoRA keys that match nothing", false},
        {"no-cache", ARG_FLAG, &no_cache, "neither read nor write the packed-weight cache (see 'lcm cache')", false},
        {"control-weights", ARG_STRING, &control_weights,
         "NormalBae weights (scannet.pt or .safetensors): enables the normal_bae preprocessor", false},
        {"variant", ARG_STRING, &variant, "weight variant, e.g. fp16 (falls back to the plain files)", false},
        {"threads", ARG_INT, &threads, "compute threads (default: one per core)", false},
        {"step-delay-ms", ARG_INT, &step_delay_ms, "testing only: sleep after every step", false},
    };
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], NULL, 0, &npositional,
                        "lcm serve --model DIR|ID [--host 127.0.0.1] [--port 7860] [--queue 16] [--controlnet DIR|ID] "
                        "[--taesd DIR|ID] [options]");
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

    if (control_weights && !controlnet) {
        fprintf(stderr, "lcm serve: --control-weights needs --controlnet (the normal map steers a ControlNet)\n");
        return 2;
    }
    // NormalBae first: bad weights fail before the slow model load. Loaded once for every request.
    lcm_normal_detector *detector = NULL;
    if (control_weights && lcm_normal_detector_open(control_weights, &detector) != LCM_OK) {
        fprintf(stderr, "lcm serve: %s\n", lcm_last_error());
        return 2;
    }
    lcm_lora loras[sizeof lora_specs.items / sizeof lora_specs.items[0]];
    char *lora_paths[sizeof lora_specs.items / sizeof lora_specs.items[0]] = {0};
    char lora_labels[sizeof lora_specs.items / sizeof lora_specs.items[0]][300];
    const char *lora_names[sizeof lora_specs.items / sizeof lora_specs.items[0]];
    lcm_status st = LCM_OK;
    for (int i = 0; i < lora_specs.count && st == LCM_OK; i++) {
        size_t length;
        st = lcm_lora_spec_parse(lora_specs.items[i], &length, &loras[i].scale);
        if (st == LCM_OK && !(lora_paths[i] = strndup(lora_specs.items[i], length))) st = LCM_ERR_OUT_OF_MEMORY;
        loras[i].path = lora_paths[i];
        if (st == LCM_OK)
            snprintf(lora_labels[i], sizeof lora_labels[i], "%.200s:%g", file_name(lora_paths[i]),
                     (double)loras[i].scale);
        lora_names[i] = lora_labels[i];
    }
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    options.variant = variant;
    options.threads = (int)threads;
    options.loras = loras;
    options.lora_count = lora_specs.count;
    options.lora_lenient = lora_lenient;
    options.no_cache = no_cache;
    // Hub ids become snapshot folders in the Hugging Face cache (downloaded the first time).
    lcm_hub_options hub;
    lcm_hub_options_init(&hub);
    hub.variant = variant;
    download_progress download;
    download_progress_attach(&download, false, &hub);
    char *model_path = NULL, *controlnet_path = NULL, *taesd_path = NULL;
    if (st == LCM_OK) st = lcm_model_resolve(model, &hub, &model_path);
    if (st == LCM_OK && controlnet) st = lcm_single_model_resolve(controlnet, &hub, &controlnet_path);
    hub.variant = NULL; // the TAESD loads only its plain weights
    if (st == LCM_OK && taesd) st = lcm_single_model_resolve(taesd, &hub, &taesd_path);
    options.controlnet = controlnet_path;
    options.taesd = taesd_path;
    lcm_pipeline *pipeline = NULL;
    if (st == LCM_OK) st = lcm_pipeline_open(model_path, &options, &pipeline);
    free(model_path);
    free(controlnet_path);
    free(taesd_path);
    for (int i = 0; i < lora_specs.count; i++) free(lora_paths[i]);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm serve: %s\n", st == LCM_ERR_OUT_OF_MEMORY ? "out of memory" : lcm_last_error());
        lcm_normal_detector_close(detector);
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }
    if (*lcm_pipeline_lora_report(pipeline)) fprintf(stderr, "%s\n", lcm_pipeline_lora_report(pipeline));
    serve_features features = {
        .controlnet = controlnet != NULL,
        .lora = lora_specs.count > 0,
        .normalbae = detector != NULL,
    };
    find_features(pipeline, &features);

    char name[256], controlnet_name[256];
    model_name(model, name, sizeof name);
    if (controlnet) model_name(controlnet, controlnet_name, sizeof controlnet_name);
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
        .normal_detector = detector,
        .controlnet_name = controlnet ? controlnet_name : NULL,
        .lora_names = lora_names,
        .lora_count = lora_specs.count,
    };
    rc = serve_run(&config, pipeline, &features);
    lcm_pipeline_close(pipeline);
    lcm_normal_detector_close(detector);
    return rc;
}
