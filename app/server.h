// `lcm serve`: the HTTP server (libmicrohttpd, a thread per connection) in front of one loaded
// pipeline and one generation worker fed by a bounded queue.
//
// Endpoints: the page (embedded web/ files) and /api/* for it, the A1111 /sdapi/v1/* subset and the
// OpenAI /v1/images/generations + /v1/models subset, /health. See docs/SERVE.md.
#ifndef LCM_APP_SERVER_H
#define LCM_APP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "server_request.h"
#include "lcm.h"

typedef struct serve_config {
    const char *model_dir;
    const char *model_name; // shown to clients instead of the folder path
    const char *host;       // address to bind (numeric or a name)
    int port;               // 0 = any free port (the chosen one is printed)
    int queue_capacity;     // jobs waiting besides the running one; more are answered 429
    const char *api_key;    // NULL = none; else "Authorization: Bearer KEY" on every API call
    size_t max_body;        // largest request body in bytes; more is answered 413
    serve_limits limits;
    int step_delay_ms; // testing: sleep after every denoising step (to exercise cancel and 429)
    int threads;       // compute threads of the worker (0 = OpenMP's default)
    // ControlNet preprocessing: NormalBae loaded once (--control-weights; NULL = none), run only
    // by the worker thread. Borrowed.
    const lcm_normal_detector *normal_detector;
    const char *controlnet_name;   // the ControlNet folder's name, or NULL without one
    const char *const *lora_names; // "FILE:SCALE" (file names only) of the fused LoRAs
    int lora_count;
} serve_config;

// Features the loaded pipeline supports, found by trying each once at start-up.
typedef struct serve_features {
    bool negative_prompt, img2img, preview;
    bool controlnet; // the pipeline has a ControlNet: every request needs a control image
    bool lora;       // LoRA adapters were fused at load
    bool normalbae;  // the normal_bae preprocessor is available (NormalBae weights loaded)
} serve_features;

// Serves until SIGINT or SIGTERM. `pipeline` stays owned by the caller. Returns the process exit
// code (0 after a clean shutdown, 1 when the server could not start).
int serve_run(const serve_config *config, lcm_pipeline *pipeline, const serve_features *features);

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
