// Request parsing for `lcm serve`: bytes in, a checked struct out, no sockets involved.
//
// Everything a client sends passes through here before it reaches the library: the JSON body of the
// A1111 (/sdapi/v1/txt2img, /sdapi/v1/img2img), OpenAI (/v1/images/generations) and page
// (/api/generate) endpoints, the base64 images inside them and OpenAI's "WxH" sizes. The functions
// are pure (no globals, no I/O), so tests and the fuzzer (fuzz/fuzz_server_request.c) call them
// directly.
//
// Rules: unknown fields are ignored; a known field of the wrong type, out of range or malformed
// fails with HTTP 400 and a message naming the field; `null` means "use the default".
#ifndef LCM_APP_SERVER_REQUEST_H
#define LCM_APP_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum serve_api {
    SERVE_API_A1111_TXT2IMG, // POST /sdapi/v1/txt2img
    SERVE_API_A1111_IMG2IMG, // POST /sdapi/v1/img2img (init_images required)
    SERVE_API_OPENAI,        // POST /v1/images/generations
    SERVE_API_PAGE,          // POST /api/generate: A1111 field names, answered as server-sent events
} serve_api;

// What the server allows; set from the command line.
typedef struct serve_limits {
    int default_size;  // the model's native size: default width/height
    int max_size;      // largest width/height (multiple of 8)
    int max_steps;     // largest steps
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

// A parsed, range-checked generation request. Strings and the init image are owned by the struct
// (serve_params_free).
typedef struct serve_params {
    char *prompt;          // never NULL after a successful parse
    char *negative_prompt; // NULL when absent or ""
    int64_t seed;          // -1 = random
    int steps;
    double cfg_scale;
    int width, height;
    int batch_size; // images per lcm_generate call (drawn from one generator)
    int n_iter;     // lcm_generate calls, with seeds seed, seed+1, ...
    double denoising_strength;
    uint8_t *init_png; // decoded base64 bytes of init_images[0] (a PNG), or NULL
    size_t init_png_size;
    // The first enabled ControlNet unit, alwayson_scripts.controlnet.args[0] in the format of the
    // sd-webui-controlnet extension: image/input_image (a base64 PNG), module, weight,
    // threshold_a/threshold_b (canny), processor_res (normal_bae); `model` is ignored (the server
    // has one ControlNet). control_png is NULL when there is no enabled unit.
    uint8_t *control_png;
    size_t control_png_size;
    serve_control_module control_module;
    double control_weight;         // default 1
    double threshold_a, threshold_b; // default 100 / 200
    int processor_res;             // NormalBae detect and image resolution, default 512
} serve_params;

typedef struct serve_error {
    int http_status;   // 400 (bad request) or 413 (too large)
    char field[64];    // the offending field ("" for the body as a whole)
    char message[256]; // says what is wrong and what was expected
} serve_error;

// Parses a request body of `size` bytes (need not be NUL-terminated) for `api`. Returns true and
// fills *out (owned by the caller; serve_params_free) or returns false with *error filled and
// nothing allocated.
bool serve_parse_request(serve_api api, const char *body, size_t size, const serve_limits *limits,
                         serve_params *out, serve_error *error);

void serve_params_free(serve_params *params);

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
