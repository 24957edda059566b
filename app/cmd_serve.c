// lcm serve: load the model (or the first of --models-dir) and serve the page and the HTTP APIs
// (app/server*.c) until Ctrl-C or SIGTERM.
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/args.h"
#include "app/commands.h"
#include "app/model_options.h"
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

// "DIR/pytorch_lora_weights.safetensors:0.5" -> "pytorch_lora_weights.safetensors:0.5": clients
// see file names, never the server's paths.
static const char *file_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

#define MAX_MODELS 64

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// The models of --models-dir: every diffusers pipeline folder (model_index.json) and every
// single-file .safetensors checkpoint directly inside it, by name. Returns the count (paths
// malloc'd into paths[]) or -1 with a message.
static int scan_models_dir(const char *dir, char **paths, int capacity) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "lcm serve: --models-dir %s: cannot read the folder\n", dir);
        return -1;
    }
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[4096], index[4200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(index, sizeof index, "%s/model_index.json", path);
        size_t len = strlen(e->d_name);
        struct stat st;
        bool pipeline = stat(index, &st) == 0;
        bool checkpoint = len > 12 && !strcmp(e->d_name + len - 12, ".safetensors") && stat(path, &st) == 0 &&
                          S_ISREG(st.st_mode);
        if (!pipeline && !checkpoint) continue;
        if (count == capacity) {
            fprintf(stderr, "lcm serve: --models-dir %s: more than %d models\n", dir, capacity);
            break;
        }
        if (!(paths[count] = strdup(path))) break;
        count++;
    }
    closedir(d);
    qsort(paths, (size_t)count, sizeof *paths, compare_names);
    if (count == 0) fprintf(stderr, "lcm serve: --models-dir %s holds no model (folders with model_index.json, or "
                                    ".safetensors checkpoints)\n", dir);
    return count > 0 ? count : -1;
}

int cmd_serve(int argc, char **argv) {
    model_options mo = {0}; // --model, --variant, --threads, --lora..., --controlnet, --taesd, --no-cache
    const char *models_dir = NULL, *host = "127.0.0.1", *api_key = NULL;
    long port = 7860, queue = 16, max_size = 1024, max_steps = 8, max_batch = 4, max_body = 16 << 20;
    long step_delay_ms = 0, max_loaded = 1, http_threads = 4, max_connections = 1000, max_per_ip = 64;
    long header_timeout = 10, idle_timeout = 30, body_timeout = 60, image_ttl = 3600;
    bool insecure = false;
    const char *control_weights = NULL;
    const arg_spec specs[] = {
        model_option_spec(&mo, MODEL_OPTION_MODEL,
                          "diffusers model folder (LatentConsistencyModelPipeline), single .safetensors "
                          "checkpoint, or hub id ORG/NAME[@REVISION] (downloaded on first use)"),
        {"models-dir", ARG_STRING, &models_dir,
         "serve every model in this folder (pipeline folders and .safetensors checkpoints), loaded when "
         "a request or /sdapi/v1/options asks for one",
         false},
        {"max-loaded", ARG_INT, &max_loaded, "models kept in memory at once (default 1)", false},
        {"host", ARG_STRING, &host, "address to listen on (default 127.0.0.1: this machine only)", false},
        {"port", ARG_INT, &port, "TCP port (default 7860; 0 = any free port, printed)", false},
        {"queue", ARG_INT, &queue, "requests that may wait for the generator; more get 429 (default 16)", false},
        {"api-key", ARG_STRING, &api_key, "require 'Authorization: Bearer KEY' on the API endpoints", false},
        {"insecure-no-api-key", ARG_FLAG, &insecure, "allow a non-loopback --host without --api-key", false},
        {"max-size", ARG_INT, &max_size, "largest width/height a client may ask for (default 1024)", false},
        {"max-steps", ARG_INT, &max_steps, "most steps a client may ask for (default 8)", false},
        {"max-batch", ARG_INT, &max_batch, "most images per request (default 4)", false},
        {"max-body", ARG_INT, &max_body, "largest request body in bytes (default 16 MiB)", false},
        model_option_spec(&mo, MODEL_OPTION_CONTROLNET,
                          "ControlNetModel, folder or hub id ORG/NAME[@REVISION]: the page and the APIs then "
                          "take a control image"),
        model_option_spec(&mo, MODEL_OPTION_TAESD,
                          "decode (and preview) with this TAESD (AutoencoderTiny) instead of the VAE: folder or "
                          "hub id ORG/NAME[@REVISION], e.g. madebyollin/taesd"),
        model_option_spec(&mo, MODEL_OPTION_LORA, NULL),
        model_option_spec(&mo, MODEL_OPTION_LORA_LENIENT, NULL),
        model_option_spec(&mo, MODEL_OPTION_NO_CACHE, NULL),
        {"control-weights", ARG_STRING, &control_weights,
         "NormalBae weights (scannet.pt or .safetensors): enables the normal_bae preprocessor", false},
        model_option_spec(&mo, MODEL_OPTION_VARIANT, NULL),
        model_option_spec(&mo, MODEL_OPTION_THREADS, "compute threads (default: one per core)"),
        {"http-threads", ARG_INT, &http_threads, "threads serving connections, each polling many (default 4)", false},
        {"max-connections", ARG_INT, &max_connections, "open connections in all (default 1000)", false},
        {"max-per-ip", ARG_INT, &max_per_ip, "open connections from one address (default 64)", false},
        {"header-timeout", ARG_INT, &header_timeout,
         "seconds a connection may take to send a request's headers (default 10)", false},
        {"idle-timeout", ARG_INT, &idle_timeout, "seconds an idle connection is kept (default 30)", false},
        {"body-timeout", ARG_INT, &body_timeout, "seconds a request body may take to arrive (default 60)", false},
        {"image-ttl", ARG_INT, &image_ttl, "seconds OpenAI `url` images are served (default 3600)", false},
        {"step-delay-ms", ARG_INT, &step_delay_ms, "testing only: sleep after every step", false},
    };
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], NULL, 0, &npositional,
                        "lcm serve --model DIR|ID | --models-dir DIR [--host 127.0.0.1] [--port 7860] [--queue 16] [--controlnet DIR|ID] "
                        "[--taesd DIR|ID] [options]");
    if (rc) return rc == 1 ? 0 : 2;
    const char *model = mo.model, *controlnet = mo.controlnet;
    if (!model && !models_dir) {
        fprintf(stderr, "lcm serve: --model or --models-dir is required (see --help)\n");
        return 2;
    }
    if (port < 0 || port > 65535 || queue < 1 || queue > 100000 || max_size < 8 || max_size > 4096 ||
        max_steps < 1 || max_steps > 1000 || max_batch < 1 || max_batch > 64 || max_body < 1024 ||
        max_body > (1L << 30) || mo.threads < 0 || mo.threads > 1024 || step_delay_ms < 0 || step_delay_ms > 60000 ||
        max_loaded < 1 || max_loaded > MAX_MODELS || http_threads < 1 || http_threads > 64 || max_connections < 1 ||
        max_connections > 100000 || max_per_ip < 1 || max_per_ip > 100000 || header_timeout < 1 ||
        header_timeout > 3600 || idle_timeout < 1 || idle_timeout > 3600 || body_timeout < 1 || body_timeout > 3600 || image_ttl < 1 || image_ttl > 86400 * 7) {
        fprintf(stderr, "lcm serve: out of range: --port 0..65535, --queue 1..100000, --max-size 8..4096, "
                        "--max-steps 1..1000, --max-batch 1..64, --max-body 1024..1 GiB, --max-loaded 1..%d, "
                        "--http-threads 1..64, --max-connections and --max-per-ip 1..100000, --header-timeout, "
                        "--idle-timeout and --body-timeout 1..3600 s, --image-ttl 1 s..7 days\n", MAX_MODELS);
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
    // How every model is loaded (the LoRAs, ControlNet and TAESD apply to each); hub ids become
    // snapshot folders in the Hugging Face cache (downloaded the first time).
    model_setup setup;
    lcm_status st = model_setup_init(&setup, &mo, false);
    // Clients see the adapters' file names, never the server's paths.
    char lora_labels[sizeof setup.loras / sizeof setup.loras[0]][300];
    const char *lora_names[sizeof setup.loras / sizeof setup.loras[0]];
    for (int i = 0; i < setup.lora_count && st == LCM_OK; i++) {
        snprintf(lora_labels[i], sizeof lora_labels[i], "%.200s:%g", file_name(setup.lora_paths[i]),
                 (double)setup.loras[i].scale);
        lora_names[i] = lora_labels[i];
    }
    char *paths[MAX_MODELS] = {0};
    int path_count = 0;
    if (st == LCM_OK && model) {
        st = model_setup_resolve(&setup, model, &paths[0]);
        if (st == LCM_OK) path_count = 1;
    }
    if (st == LCM_OK && models_dir) {
        int found = scan_models_dir(models_dir, paths + path_count, MAX_MODELS - path_count);
        if (found < 0) {
            for (int i = 0; i < path_count; i++) free(paths[i]);
            lcm_normal_detector_close(detector);
            model_setup_free(&setup);
            return 2;
        }
        path_count += found;
    }
    if (st == LCM_OK) st = model_setup_resolve_extras(&setup, &mo);

    // The models clients see, by name (a --model given as a hub id shows as its id's last part).
    static serve_model models[MAX_MODELS];
    int model_count = 0;
    for (int i = 0; i < path_count && st == LCM_OK; i++) {
        serve_model *m = &models[model_count];
        memset(m, 0, sizeof *m);
        model_name(i == 0 && model ? model : paths[i], m->name, sizeof m->name);
        m->path = paths[i];
        bool duplicate = false;
        for (int k = 0; k < model_count; k++) duplicate |= !strcmp(models[k].name, m->name);
        if (duplicate) { // e.g. --model DIR/x with --models-dir DIR: served once
            char *a = realpath(models[0].path, NULL), *b = realpath(m->path, NULL);
            if (!a || !b || strcmp(a, b) != 0)
                fprintf(stderr, "lcm serve: two models are named %s; serving only the first\n", m->name);
            free(a);
            free(b);
            continue;
        }
        model_count++;
    }
    // The first model is loaded now: a model that cannot load stops the server before it listens.
    serve_config config = {.models = models, .model_count = model_count, .pipeline_options = &setup.pipeline,
                           .normal_detector = detector};
    if (st == LCM_OK) st = serve_model_load(&config, &models[0]);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm serve: %s\n", st == LCM_ERR_OUT_OF_MEMORY ? "out of memory" : lcm_last_error());
        lcm_normal_detector_close(detector);
        for (int i = 0; i < path_count; i++) free(paths[i]);
        model_setup_free(&setup);
        return st == LCM_ERR_OUT_OF_MEMORY || st == LCM_ERR_INTERNAL ? 1 : 2;
    }

    char controlnet_name[256];
    if (controlnet) model_name(controlnet, controlnet_name, sizeof controlnet_name);
    config = (serve_config){
        .models = models,
        .model_count = model_count,
        .max_loaded = (int)max_loaded,
        .pipeline_options = &setup.pipeline,
        .host = host,
        .port = (int)port,
        .queue_capacity = (int)queue,
        .api_key = api_key,
        .max_body = (size_t)max_body,
        .limits =
            {
                .max_size = (int)(max_size / 8 * 8),
                .max_steps = (int)max_steps,
                .max_images = (int)max_batch,
                .max_image_bytes = (size_t)max_body,
            },
        .http_threads = (int)http_threads,
        .max_connections = (int)max_connections,
        .max_per_ip = (int)max_per_ip,
        .header_timeout_s = (int)header_timeout,
        .idle_timeout_s = (int)idle_timeout,
        .body_timeout_s = (int)body_timeout,
        .image_ttl_s = (int)image_ttl,
        .step_delay_ms = (int)step_delay_ms,
        .threads = (int)mo.threads,
        .normal_detector = detector,
        .controlnet_name = controlnet ? controlnet_name : NULL,
        .lora_names = lora_names,
        .lora_count = setup.lora_count,
    };
    rc = serve_run(&config);
    lcm_normal_detector_close(detector);
    for (int i = 0; i < path_count; i++) free(paths[i]);
    model_setup_free(&setup);
    return rc;
}
