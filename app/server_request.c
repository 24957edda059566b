// Request parsing for `lcm serve` (see server_request.h): JSON bodies with cJSON, checked field by
// field, base64 and "WxH" sizes by hand.
#include "server_request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Longest prompt accepted, in bytes. The tokenizer keeps 77 tokens anyway; this only bounds memory.
#define MAX_PROMPT_BYTES 16384
// Largest seed: JSON numbers are doubles, and every integer up to 2^53 is exact.
#define MAX_SEED 9007199254740991.0
// Largest init image side: it is resized to the request's size, but decoding needs w*h*3 bytes.
#define MAX_INIT_SIDE 4096

static bool fail(serve_error *error, int status, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(serve_error *error, int status, const char *field, const char *fmt, ...) {
    error->http_status = status;
    snprintf(error->field, sizeof error->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof error->message, fmt, ap);
    va_end(ap);
    return false;
}

// The field `name` of `root`, or NULL when absent or null (both mean "the default").
static const cJSON *field(const cJSON *root, const char *name) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, name);
    return cJSON_IsNull(item) ? NULL : item;
}

static bool get_string(const cJSON *root, const char *name, const char **out, serve_error *error) {
    const cJSON *item = field(root, name);
    if (!item) return true;
    if (!cJSON_IsString(item) || !item->valuestring)
        return fail(error, 400, name, "field '%s' must be a string", name);
    if (strlen(item->valuestring) > MAX_PROMPT_BYTES)
        return fail(error, 400, name, "field '%s' is longer than %d bytes", name, MAX_PROMPT_BYTES);
    *out = item->valuestring;
    return true;
}

static bool get_number(const cJSON *root, const char *name, double min, double max, double *out,
                       serve_error *error) {
    const cJSON *item = field(root, name);
    if (!item) return true;
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble))
        return fail(error, 400, name, "field '%s' must be a number", name);
    double v = item->valuedouble;
    if (v < min || v > max)
        return fail(error, 400, name, "field '%s' = %g is out of range: expected %g..%g", name, v, min, max);
    *out = v;
    return true;
}

static bool get_int(const cJSON *root, const char *name, double min, double max, int64_t *out,
                    serve_error *error) {
    const cJSON *item = field(root, name);
    if (!item) return true;
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) || floor(item->valuedouble) != item->valuedouble)
        return fail(error, 400, name, "field '%s' must be an integer", name);
    double v = item->valuedouble;
    if (v < min || v > max)
        return fail(error, 400, name, "field '%s' = %.0f is out of range: expected %.0f..%.0f", name, v,
                    min, max);
    *out = (int64_t)v;
    return true;
}

static bool get_side(const cJSON *root, const char *name, const serve_limits *limits, int *out,
                     serve_error *error) {
    int64_t v = *out;
    if (!get_int(root, name, 8, limits->max_size, &v, error)) return false;
    if (v % 8 != 0) return fail(error, 400, name, "field '%s' = %lld must be a multiple of 8", name, (long long)v);
    *out = (int)v;
    return true;
}

static bool copy_string(const char *text, char **out, serve_error *error) {
    *out = strdup(text ? text : "");
    return *out ? true : fail(error, 503, "", "out of memory");
}

// Decodes the base64 PNG `text` of field `name` into *png, checking the header's size before
// anything decodes it (a small PNG can declare a huge image).
// `param` is the field errors report, `name` the one their messages show.
static bool decode_png_field(const char *text, const char *param, const char *name, const serve_limits *limits,
                             uint8_t **png_out, size_t *size_out, serve_error *error) {
    if (!serve_base64_decode(text, strlen(text), limits->max_image_bytes, png_out, size_out))
        return fail(error, 400, param, "field '%s' is not valid base64 of at most %zu bytes", name,
                    limits->max_image_bytes);
    static const uint8_t signature[12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
    const uint8_t *png = *png_out;
    if (*size_out < 24 || memcmp(png, signature, sizeof signature) != 0 || memcmp(png + 12, "IHDR", 4) != 0)
        return fail(error, 400, param, "field '%s' is not a PNG image", name);
    uint32_t width = (uint32_t)png[16] << 24 | (uint32_t)png[17] << 16 | (uint32_t)png[18] << 8 | png[19];
    uint32_t height = (uint32_t)png[20] << 24 | (uint32_t)png[21] << 16 | (uint32_t)png[22] << 8 | png[23];
    if (width < 1 || height < 1 || width > MAX_INIT_SIDE || height > MAX_INIT_SIDE)
        return fail(error, 400, param, "field '%s' is a %ux%u PNG: expected 1..%d pixels per side", name, width,
                    height, MAX_INIT_SIDE);
    return true;
}

// init_images: an array whose first entry is a base64 PNG (optionally a data: URL).
static bool get_init_image(const cJSON *root, const serve_limits *limits, serve_params *p,
                           serve_error *error) {
    const cJSON *images = field(root, "init_images");
    if (!images) return true;
    if (!cJSON_IsArray(images)) return fail(error, 400, "init_images", "field 'init_images' must be an array of base64 strings");
    const cJSON *first = cJSON_GetArrayItem(images, 0);
    if (!first) return true;
    if (!cJSON_IsString(first) || !first->valuestring)
        return fail(error, 400, "init_images", "field 'init_images[0]' must be a base64 string");
    return decode_png_field(first->valuestring, "init_images", "init_images[0]", limits, &p->init_png, &p->init_png_size, error);
}

const char *serve_control_module_name(serve_control_module module) {
    switch (module) {
    case SERVE_CONTROL_CANNY: return "canny";
    case SERVE_CONTROL_NORMALBAE: return "normal_bae";
    default: return "none";
    }
}

// Names a failed field of the ControlNet unit by its full path. Returns false.
static bool unit_field_failed(serve_error *error) {
    char field_name[sizeof error->field], message[sizeof error->message];
    snprintf(field_name, sizeof field_name, "%s", error->field);
    snprintf(message, sizeof message, "%s", error->message);
    snprintf(error->field, sizeof error->field, "alwayson_scripts.controlnet.args[0].%.20s", field_name);
    // "field 'weight' must be ..." -> "field 'alwayson_scripts.controlnet.args[0].weight' must be ..."
    if (!strncmp(message, "field '", 7))
        snprintf(error->message, sizeof error->message, "field 'alwayson_scripts.controlnet.args[0].%.200s",
                 message + 7);
    else
        snprintf(error->message, sizeof error->message, "alwayson_scripts.controlnet.args[0]: %.200s", message);
    return false;
}

// alwayson_scripts.controlnet.args[0]: the ControlNet unit, as the sd-webui-controlnet extension's
// API takes it. The field names in errors are the full paths.
static bool get_controlnet_unit(const cJSON *root, const serve_limits *limits, serve_params *p,
                                serve_error *error) {
    const cJSON *scripts = field(root, "alwayson_scripts");
    if (!scripts) return true;
    if (!cJSON_IsObject(scripts)) return fail(error, 400, "alwayson_scripts", "field 'alwayson_scripts' must be an object");
    const cJSON *controlnet = field(scripts, "controlnet");
    if (!controlnet) return true;
    if (!cJSON_IsObject(controlnet))
        return fail(error, 400, "alwayson_scripts.controlnet", "field 'alwayson_scripts.controlnet' must be an object");
    const cJSON *args = field(controlnet, "args");
    if (!args) return true;
    if (!cJSON_IsArray(args))
        return fail(error, 400, "alwayson_scripts.controlnet.args",
                    "field 'alwayson_scripts.controlnet.args' must be an array of ControlNet units");
    const cJSON *unit = cJSON_GetArrayItem(args, 0);
    if (!unit) return true;
    if (!cJSON_IsObject(unit))
        return fail(error, 400, "alwayson_scripts.controlnet.args[0]",
                    "field 'alwayson_scripts.controlnet.args[0]' must be an object");
    const cJSON *enabled = field(unit, "enabled");
    if (enabled && !cJSON_IsBool(enabled))
        return fail(error, 400, "alwayson_scripts.controlnet.args[0].enabled",
                    "field 'alwayson_scripts.controlnet.args[0].enabled' must be true or false");
    if (enabled && cJSON_IsFalse(enabled)) return true;

    // The image: "image" (newer extension versions; a string or {"image": ..., "mask": ...}) or
    // "input_image" (older ones).
    const char *image_field = "alwayson_scripts.controlnet.args[0].image";
    const cJSON *image = field(unit, "image");
    if (image && cJSON_IsObject(image)) image = field(image, "image");
    if (!image) {
        image_field = "alwayson_scripts.controlnet.args[0].input_image";
        image = field(unit, "input_image");
    }
    if (!image) return fail(error, 400, "alwayson_scripts.controlnet.args[0].image",
                            "the ControlNet unit needs alwayson_scripts.controlnet.args[0].image (or "
                            "input_image): a base64 PNG");
    if (!cJSON_IsString(image) || !image->valuestring)
        return fail(error, 400, image_field, "field '%s' must be a base64 string", image_field);

    const char *module = "none";
    if (!get_string(unit, "module", &module, error)) return unit_field_failed(error);
    if (!strcmp(module, "none"))
        p->control_module = SERVE_CONTROL_NONE;
    else if (!strcmp(module, "canny"))
        p->control_module = SERVE_CONTROL_CANNY;
    else if (!strcmp(module, "normal_bae") || !strcmp(module, "normalbae"))
        p->control_module = SERVE_CONTROL_NORMALBAE;
    else
        return fail(error, 400, "alwayson_scripts.controlnet.args[0].module",
                    "alwayson_scripts.controlnet.args[0].module: '%.40s' is not available: expected none, canny "
                    "or normal_bae", module);
    // The extension sends -1 for "the module's default".
    const cJSON *a = field(unit, "threshold_a"), *b = field(unit, "threshold_b"), *res = field(unit, "processor_res");
    bool canny = p->control_module == SERVE_CONTROL_CANNY;
    if (!get_number(unit, "weight", 0, 10, &p->control_weight, error)) return unit_field_failed(error);
    if (canny && a && !(cJSON_IsNumber(a) && a->valuedouble == -1) &&
        !get_number(unit, "threshold_a", 0, 10000, &p->threshold_a, error))
        return unit_field_failed(error);
    if (canny && b && !(cJSON_IsNumber(b) && b->valuedouble == -1) &&
        !get_number(unit, "threshold_b", 0, 10000, &p->threshold_b, error))
        return unit_field_failed(error);
    int64_t processor_res = p->processor_res;
    if (res && !(cJSON_IsNumber(res) && res->valuedouble == -1) &&
        !get_int(unit, "processor_res", 64, 2048, &processor_res, error))
        return unit_field_failed(error);
    p->processor_res = (int)processor_res;
    if (!decode_png_field(image->valuestring, image_field, image_field, limits, &p->control_png, &p->control_png_size, error))
        return false;
    return true;
}

static bool parse_a1111(const cJSON *root, serve_api api, const serve_limits *limits, serve_params *p,
                        serve_error *error) {
    const char *prompt = "", *negative = NULL;
    int64_t seed = -1, steps = p->steps, batch = 1, n_iter = 1;
    if (!get_string(root, "prompt", &prompt, error) || !get_string(root, "negative_prompt", &negative, error) ||
        !get_int(root, "seed", -1, MAX_SEED, &seed, error) ||
        !get_int(root, "steps", 1, limits->max_steps, &steps, error) ||
        !get_number(root, "cfg_scale", 0, 30, &p->cfg_scale, error) ||
        !get_side(root, "width", limits, &p->width, error) || !get_side(root, "height", limits, &p->height, error) ||
        !get_int(root, "batch_size", 1, limits->max_images, &batch, error) ||
        !get_int(root, "n_iter", 1, limits->max_images, &n_iter, error) ||
        !get_number(root, "denoising_strength", 0, 1, &p->denoising_strength, error))
        return false;
    if (batch * n_iter > limits->max_images)
        return fail(error, 400, "batch_size", "batch_size * n_iter = %lld is more than this server's limit of %d images",
                    (long long)(batch * n_iter), limits->max_images);
    if (api != SERVE_API_A1111_TXT2IMG && !get_init_image(root, limits, p, error)) return false;
    if (!get_controlnet_unit(root, limits, p, error)) return false;
    if (api == SERVE_API_A1111_IMG2IMG && !p->init_png)
        return fail(error, 400, "init_images", "img2img needs 'init_images': an array with one base64 PNG");
    if (p->init_png && p->denoising_strength <= 0)
        return fail(error, 400, "denoising_strength", "field 'denoising_strength' must be more than 0");
    p->seed = seed;
    p->steps = (int)steps;
    p->batch_size = (int)batch;
    p->n_iter = (int)n_iter;
    if (!copy_string(prompt, &p->prompt, error)) return false;
    if (negative && negative[0] && !copy_string(negative, &p->negative_prompt, error)) return false;
    return true;
}

static bool parse_openai(const cJSON *root, const serve_limits *limits, serve_params *p, serve_error *error) {
    const char *prompt = NULL, *size = NULL, *format = NULL;
    int64_t n = 1;
    if (!get_string(root, "prompt", &prompt, error) || !get_int(root, "n", 1, limits->max_images, &n, error) ||
        !get_string(root, "size", &size, error) || !get_string(root, "response_format", &format, error))
        return false;
    if (!prompt) return fail(error, 400, "prompt", "field 'prompt' is required");
    if (format && strcmp(format, "b64_json") != 0)
        return fail(error, 400, "response_format",
                    "response_format '%.32s' is not supported: this server only answers with 'b64_json'", format);
    if (size) {
        if (!serve_parse_size(size, &p->width, &p->height))
            return fail(error, 400, "size", "field 'size' must be WIDTHxHEIGHT, e.g. \"512x512\"");
        if (p->width % 8 || p->height % 8 || p->width > limits->max_size || p->height > limits->max_size)
            return fail(error, 400, "size", "size %dx%d: width and height must be multiples of 8 up to %d",
                        p->width, p->height, limits->max_size);
    }
    p->batch_size = (int)n;
    return copy_string(prompt, &p->prompt, error);
}

bool serve_parse_request(serve_api api, const char *body, size_t size, const serve_limits *limits,
                         serve_params *out, serve_error *error) {
    memset(out, 0, sizeof *out);
    memset(error, 0, sizeof *error);
    serve_params p = {
        .seed = -1,
        .steps = limits->max_steps < 4 ? limits->max_steps : 4,
        .cfg_scale = 8.5, // the pipeline's default (diffusers' LatentConsistencyModelPipeline)
        .width = limits->default_size,
        .height = limits->default_size,
        .batch_size = 1,
        .n_iter = 1,
        .denoising_strength = 0.75, // A1111's default
        .control_weight = 1.0,
        .threshold_a = SERVE_CANNY_LOW_DEFAULT,
        .threshold_b = SERVE_CANNY_HIGH_DEFAULT,
        .processor_res = SERVE_PROCESSOR_RES_DEFAULT,
    };
    if (size == 0) return fail(error, 400, "", "the request body is empty: expected a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, size, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + size ? (size_t)(end - body) : 0;
        return fail(error, 400, "", "the request body is not valid JSON (error near byte %zu)", at);
    }
    bool ok;
    if (!cJSON_IsObject(root))
        ok = fail(error, 400, "", "the request body must be a JSON object");
    else if (api == SERVE_API_OPENAI)
        ok = parse_openai(root, limits, &p, error);
    else
        ok = parse_a1111(root, api, limits, &p, error);
    cJSON_Delete(root);
    if (!ok) {
        serve_params_free(&p);
        return false;
    }
    *out = p;
    return true;
}

void serve_params_free(serve_params *params) {
    if (!params) return;
    free(params->prompt);
    free(params->negative_prompt);
    free(params->init_png);
    free(params->control_png);
    memset(params, 0, sizeof *params);
}

// ---- base64 --------------------------------------------------------------------------------------

static const char base64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int base64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool serve_base64_decode(const char *text, size_t size, size_t max_out, uint8_t **out, size_t *out_size) {
    *out = NULL;
    *out_size = 0;
    // A data URL as browsers make them: "data:image/png;base64,<payload>".
    if (size >= 5 && memcmp(text, "data:", 5) == 0) {
        const char *marker = ";base64,";
        size_t limit = size < 256 ? size : 256, i = 5;
        while (i + 8 <= limit && memcmp(text + i, marker, 8) != 0) i++;
        if (i + 8 > limit) return false;
        text += i + 8;
        size -= i + 8;
    }
    // First pass: validate and count, so the output is allocated once at its exact size.
    size_t symbols = 0, pads = 0;
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)text[i];
        if (is_space(c)) continue;
        if (c == '=') {
            pads++;
            continue;
        }
        if (pads > 0 || base64_value(c) < 0) return false; // data after padding, or not base64
    }
    for (size_t i = 0; i < size; i++) symbols += base64_value((unsigned char)text[i]) >= 0;
    if (pads > 2 || symbols % 4 == 1) return false;
    if (pads > 0 && (symbols + pads) % 4 != 0) return false;
    size_t n = symbols / 4 * 3 + (symbols % 4 ? symbols % 4 - 1 : 0);
    if (n > max_out) return false;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return false;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < size; i++) {
        int v = base64_value((unsigned char)text[i]);
        if (v < 0) continue;
        acc = ((acc << 6) | (uint32_t)v) & 0xFFFFFF;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o < n) buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    if (o != n) { // cannot happen if the count above is right; never return a short buffer
        free(buf);
        return false;
    }
    *out = buf;
    *out_size = n;
    return true;
}

char *serve_base64_encode(const uint8_t *data, size_t size) {
    if (size > (SIZE_MAX - 1) / 4 * 3 - 3) return NULL;
    size_t n = (size + 2) / 3 * 4;
    char *text = malloc(n + 1), *o = text;
    if (!text) return NULL;
    size_t i = 0;
    for (; i + 3 <= size; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = base64_alphabet[v >> 18];
        *o++ = base64_alphabet[(v >> 12) & 63];
        *o++ = base64_alphabet[(v >> 6) & 63];
        *o++ = base64_alphabet[v & 63];
    }
    if (i < size) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < size ? (uint32_t)data[i + 1] << 8 : 0);
        *o++ = base64_alphabet[v >> 18];
        *o++ = base64_alphabet[(v >> 12) & 63];
        *o++ = i + 1 < size ? base64_alphabet[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return text;
}

// ---- sizes ---------------------------------------------------------------------------------------

static bool parse_side(const char **s, int *out) {
    long v = 0;
    int digits = 0;
    while (**s >= '0' && **s <= '9') {
        if (++digits > 5) return false;
        v = v * 10 + (**s - '0');
        (*s)++;
    }
    if (digits == 0 || v < 1 || v > 65535) return false;
    *out = (int)v;
    return true;
}

bool serve_parse_size(const char *text, int *width, int *height) {
    int w, h;
    const char *s = text;
    if (!parse_side(&s, &w) || *s++ != 'x' || !parse_side(&s, &h) || *s != '\0') return false;
    *width = w;
    *height = h;
    return true;
}
