// Request parsing for `lcm serve`: bytes in, a checked struct out, no sockets involved.
//
// Everything a client sends passes through here before it reaches the library: the JSON body of the
// A1111 (/sdapi/v1/txt2img, /sdapi/v1/img2img), OpenAI (/v1/images/generations) and page
// (/api/generate) endpoints, the base64 images inside them and OpenAI's "WxH" sizes. The functions
// are pure (no globals, no I/O), so tests and the fuzzer (fuzz/fuzz_server_request.c) call them
// directly.
//
// Rules: unknown fields are ignored; a known field of the wrong type, out of range or malformed
// fails with HTTP 400 and a message naming the field; `null` means "use the default". A field the
// server cannot honour is refused (400 naming it: mask, enable_hr, tiling, script_name, other
// scripts) or, where ignoring it still gives what the client meant, answered with a warning
// (steps above the limit are clamped, other samplers run as LCM, ...).
#ifndef LCM_APP_SERVER_REQUEST_H
#define LCM_APP_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum serve_api {
    SERVE_API_DETECT,        // POST /controlnet/detect: preprocess images, no generation
    SERVE_API_A1111_TXT2IMG, // POST /sdapi/v1/txt2img
    SERVE_API_A1111_IMG2IMG, // POST /sdapi/v1/img2img (init_images required)
    SERVE_API_OPENAI,        // POST /v1/images/generations
    SERVE_API_PAGE,          // POST /api/generate: A1111 field names, answered as server-sent events
} serve_api;

// What the server allows; set from the command line.
typedef struct serve_limits {
    int max_size;      // largest width/height (multiple of 8)
    int max_steps;     // largest steps; more are clamped to it with a warning
    int max_images;    // largest batch_size * n_iter (OpenAI: n)
    size_t max_image_bytes; // largest decoded init image (PNG bytes)
} serve_limits;

// ControlNet preprocessing a request asks for (sd-webui-controlnet's `module`).
typedef enum serve_control_module {
    SERVE_CONTROL_NONE,      // "none": the image is the control map
    SERVE_CONTROL_CANNY,     // "canny": threshold_a / threshold_b are the low / high thresholds
    SERVE_CONTROL_NORMALBAE, // "normal_bae" (or "normalbae"): NormalBae at processor_res
} serve_control_module;

// Defaults of the ControlNet unit (sd-webui-controlnet's, controlnet_aux's resolutions).
#define SERVE_CANNY_LOW_DEFAULT 100
#define SERVE_CANNY_HIGH_DEFAULT 200
#define SERVE_PROCESSOR_RES_DEFAULT 512
// Enabled ControlNet units a request may send (sd-webui-controlnet's default is 3).
#define SERVE_MAX_CONTROL_UNITS 4
#define SERVE_MAX_WARNINGS 12
#define SERVE_WARNING_SIZE 240

// One enabled ControlNet unit, an element of alwayson_scripts.controlnet.args in the format of the
// sd-webui-controlnet extension: image/input_image (a base64 PNG), module, weight,
// threshold_a/threshold_b (canny), processor_res (normal_bae), guidance_start/guidance_end.
// `model` is ignored (the server has one ControlNet).
typedef struct serve_control_unit {
    uint8_t *png; // owned
    size_t png_size;
    serve_control_module module;
    double weight;                   // default 1
    double threshold_a, threshold_b; // default 100 / 200
    int processor_res;               // NormalBae detect and image resolution, default 512
    double guidance_start, guidance_end; // default 0 / 1
} serve_control_unit;

// OpenAI's response_format.
typedef enum serve_response_format { SERVE_FORMAT_URL, SERVE_FORMAT_B64_JSON } serve_response_format;

// A parsed, range-checked generation request. Strings, images and units are owned by the struct
// (serve_params_free).
typedef struct serve_params {
    char *prompt;          // never NULL after a successful parse
    char *negative_prompt; // NULL when absent or ""
    char *model;           // override_settings.sd_model_checkpoint or OpenAI's `model`; NULL = current
    int64_t seed;          // -1 = random
    int steps;
    double cfg_scale;
    int width, height; // 0 = the model's native size (absent, null, or OpenAI's "auto")
    int batch_size;    // images per lcm_generate call (drawn from one generator)
    int n_iter;        // lcm_generate calls, with seeds seed, seed+1, ...
    double denoising_strength;
    uint8_t *init_png; // decoded base64 bytes of init_images[0] (a PNG), or NULL
    size_t init_png_size;
    serve_control_unit units[SERVE_MAX_CONTROL_UNITS];
    int unit_count;
    bool send_images; // A1111's send_images (default true)
    serve_response_format response_format; // OpenAI only; default url
    // What the server does differently from what was asked (a clamped `steps`, an unknown
    // sampler, ...): answered in the response's `warnings`, never silently.
    char warnings[SERVE_MAX_WARNINGS][SERVE_WARNING_SIZE];
    int warning_count;
} serve_params;

typedef struct serve_error {
    int http_status;   // 400 (bad request) or 413 (too large)
    char field[128];   // the offending field ("" for the body as a whole)
    char code[40];     // OpenAI's error code: invalid_value, invalid_type, missing_required_parameter, ...
    char message[256]; // says what is wrong and what was expected
} serve_error;

// Parses a request body of `size` bytes (need not be NUL-terminated) for `api`. Returns true and
// fills *out (owned by the caller; serve_params_free) or returns false with *error filled and
// nothing allocated.
bool serve_parse_request(serve_api api, const char *body, size_t size, const serve_limits *limits,
                         serve_params *out, serve_error *error);

// POST /controlnet/detect (sd-webui-controlnet): controlnet_module, controlnet_input_images (or
// controlnet_images), controlnet_processor_res, controlnet_threshold_a/b. One unit per image in
// out->units (module and thresholds as sent); same ownership and errors as serve_parse_request.
bool serve_parse_detect(const char *body, size_t size, const serve_limits *limits, serve_params *out,
                        serve_error *error);

void serve_params_free(serve_params *params);

// Adds a warning to params->warnings (dropped silently past SERVE_MAX_WARNINGS, the last slot then
// says so).
void serve_params_warn(serve_params *params, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// sd-webui-controlnet's name of a module ("none", "canny", "normal_bae").
const char *serve_control_module_name(serve_control_module module);

// Decodes standard base64 (RFC 4648, '+' '/', '=' padding optional, ASCII whitespace ignored) of
// `size` bytes into a malloc'd buffer (*out, *out_size; caller frees). A "data:...;base64," prefix
// is skipped. Returns false (nothing allocated) on any other character, misplaced padding, a
// dangling last character, or when the decoded size would exceed max_out.
bool serve_base64_decode(const char *text, size_t size, size_t max_out, uint8_t **out,
                         size_t *out_size);

// Encodes `size` bytes as standard padded base64 into a malloc'd NUL-terminated string; NULL if
// out of memory.
char *serve_base64_encode(const uint8_t *data, size_t size);

// Parses OpenAI's "WIDTHxHEIGHT" ("512x512"): decimal digits only, each 1..65535. Returns false on
// anything else.
bool serve_parse_size(const char *text, int *width, int *height);

#endif
