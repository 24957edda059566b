// `lcm serve`: the HTTP server (libmicrohttpd: a small thread pool polling every connection) in
// front of one or more models and one generation worker fed by a bounded queue.
//
// Endpoints: the page (embedded web/ files) and /api/* for it, the A1111 /sdapi/v1/* and
// /controlnet/* subset, the OpenAI /v1/images/generations + /v1/models subset, /health. See
// docs/SERVE.md. Files: server.c (HTTP, routing, start/stop), server_jobs.c (queue, worker,
// models), server_http.c (responses, errors, the page's event stream), server_a1111.c,
// server_openai.c, server_request.c (parsing).
#ifndef LCM_APP_SERVER_H
#define LCM_APP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "server_request.h"
#include "lcm.h"

// Features a loaded pipeline supports, found by trying each once when it is loaded.
typedef struct serve_features {
    bool negative_prompt, img2img, preview;
    bool controlnet; // the pipeline has a ControlNet: every request needs a control image
    bool lora;       // LoRA adapters were fused at load
    bool normalbae;  // the normal_bae preprocessor is available (NormalBae weights loaded)
} serve_features;

// One model the server may run. The first is loaded by `lcm serve` before it listens; the others
// (--models-dir) when a request or /sdapi/v1/options asks for them.
typedef struct serve_model {
    char name[256]; // shown to clients (the folder or file name, never the path)
    char *path;     // where it is loaded from; borrowed from the caller of serve_run
    // Under the server's lock once serving (written by the worker when it loads the model):
    lcm_pipeline *pipeline; // NULL while not loaded
    bool probed;            // features, default_size and max_steps are known (kept after unloading)
    serve_features features;
    int default_size, max_steps;
    double last_used; // monotonic seconds: the least recently used model is unloaded first
} serve_model;

typedef struct serve_config {
    serve_model *models; // model_count entries; models[0] is current at start, loaded
    int model_count;
    int max_loaded;      // pipelines kept in memory at once (--max-loaded)
    const lcm_pipeline_options *pipeline_options; // how models are loaded (LoRAs, ControlNet, TAESD)
    const char *host;       // address to bind (numeric or a name)
    int port;               // 0 = any free port (the chosen one is printed)
    int queue_capacity;     // jobs waiting besides the running one; more are answered 429
    const char *api_key;    // NULL = none; else "Authorization: Bearer KEY" on every API call
    size_t max_body;        // largest request body in bytes; more is answered 413
    serve_limits limits;
    int http_threads;       // libmicrohttpd's thread pool (each thread polls many connections)
    int max_connections;    // open connections in all; more are refused
    int max_per_ip;         // open connections from one address
    int header_timeout_s;   // a request's headers must arrive within this (slow-loris)
    int idle_timeout_s;     // an idle connection is closed after this
    int body_timeout_s;     // a request's body must arrive within this after its head
    int image_ttl_s;        // OpenAI `url` images are served this long
    int step_delay_ms; // testing: sleep after every denoising step (to exercise cancel and 429)
    int threads;       // compute threads of the worker (0 = OpenMP's default)
    // ControlNet preprocessing: NormalBae loaded once (--control-weights; NULL = none), run only
    // by the worker thread. Borrowed.
    const lcm_normal_detector *normal_detector;
    const char *controlnet_name;   // the ControlNet folder's name, or NULL without one
    const char *const *lora_names; // "FILE:SCALE" (file names only) of the fused LoRAs
    int lora_count;
} serve_config;

// Loads model->path with config->pipeline_options and finds what it supports (a real request
// stopped after its first step per optional feature). Fills model->pipeline, features,
// default_size, max_steps. On failure returns the status with lcm_last_error() set.
lcm_status serve_model_load(const serve_config *config, serve_model *model);

// Serves until SIGINT or SIGTERM. The models' pipelines are closed by the server (also those it
// loaded). Returns the process exit code (0 after a clean shutdown, 1 when the server could not
// start).
int serve_run(const serve_config *config);

// The page's files, compiled in from web/ by scripts/embed_web.cmake (build/web_assets.c).
typedef struct web_asset {
    const char *path;         // "/index.html"
    const char *content_type; // "text/html; charset=utf-8"
    const unsigned char *data;
    size_t size;
} web_asset;

extern const web_asset web_assets[];
extern const int web_asset_count;

#endif
