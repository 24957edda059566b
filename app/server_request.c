// Request parsing for `lcm serve` (see server_request.h): JSON bodies with cJSON, checked field by
// field, base64 and "WxH" sizes by hand.
#include "server_request.h"

#include <cjson/cJSON.h>
#include "lcm.h"
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// Longest prompt accepted, in bytes. The tokenizer keeps 77 tokens anyway; this only bounds memory.
#define MAX_PROMPT_BYTES 16384
// Largest seed: JSON numbers are doubles, and every integer up to 2^53 is exact.
#define MAX_SEED 9007199254740991.0
// Largest init image side: it is resized to the request's size, but decoding needs w*h*3 bytes.
#define MAX_INIT_SIDE 4096

static bool fail_code(serve_error *error, int status, const char *field, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static bool fail_code(serve_error *error, int status, const char *field, const char *code, const char *fmt, ...) {
    error->http_status = status;
    snprintf(error->field, sizeof error->field, "%s", field);
    snprintf(error->code, sizeof error->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof error->message, fmt, ap);
    va_end(ap);
    return false;
}

// A value of the right type that is out of range, malformed or not supported.
#define fail(error, status, field, ...) fail_code(error, status, field, "invalid_value", __VA_ARGS__)

void serve_params_warn(serve_params *p, const char *fmt, ...) {
    if (p->warning_count >= SERVE_MAX_WARNINGS) return;
    char *slot = p->warnings[p->warning_count++];
    if (p->warning_count == SERVE_MAX_WARNINGS) {
        snprintf(slot, SERVE_WARNING_SIZE, "more warnings were left out");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(slot, SERVE_WARNING_SIZE, fmt, ap);
    va_end(ap);
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
        return fail_code(error, 400, name, "invalid_type", "field '%s' must be a string", name);
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
        return fail_code(error, 400, name, "invalid_type", "field '%s' must be a number", name);
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
        return fail_code(error, 400, name, "invalid_type", "field '%s' must be an integer", name);
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
    return *out ? true : fail_code(error, 503, "", "server_error", "out of memory");
}

// Decodes the base64 PNG `text` of field `name` into *png, checking the header's size before
// anything decodes it (a small PNG can declare a huge image).
// `param` is the field errors report, `name` the one their messages show.
static bool decode_png_field(const char *text, const char *param, const char *name, const serve_limits *limits,
                             uint8_t **png_out, size_t *size_out, serve_error *error) {
    if (!serve_base64_decode(text, strlen(text), limits->max_image_bytes, png_out, size_out))
        return fail(error, 400, param, "field '%s' is not valid base64 of at most %zu bytes", name,
                    limits->max_image_bytes);
    int width = 0, height = 0; // PNG, JPEG or WebP: the header's size, nothing decoded yet
    if (lcm_image_probe(*png_out, *size_out, name, &width, &height) != LCM_OK)
        return fail(error, 400, param, "field %s", lcm_last_error());
    if (width < 1 || height < 1 || width > MAX_INIT_SIDE || height > MAX_INIT_SIDE)
        return fail(error, 400, param, "field '%s' is a %dx%d image: expected 1..%d pixels per side", name, width,
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

// Prefixes a failed field of ControlNet unit `index` with its full path. Returns false.
static bool unit_field_failed(serve_error *error, const char *script, int index) {
    char field_name[sizeof error->field], message[sizeof error->message], prefix[64];
    snprintf(field_name, sizeof field_name, "%s", error->field);
    snprintf(message, sizeof message, "%s", error->message);
    snprintf(prefix, sizeof prefix, "alwayson_scripts.%.16s.args[%d]", script, index);
    snprintf(error->field, sizeof error->field, "%.60s.%.20s", prefix, field_name);
    // "field 'weight' must be ..." -> "field 'alwayson_scripts.controlnet.args[0].weight' must be ..."
    if (!strncmp(message, "field '", 7))
        snprintf(error->message, sizeof error->message, "field '%.60s.%.180s", prefix, message + 7);
    else
        snprintf(error->message, sizeof error->message, "%.60s: %.180s", prefix, message);
    return false;
}

static bool same_ignoring_case(const char *a, const char *b) { return strcasecmp(a, b) == 0; }

// A number field the extension sets to -1 for "the module's default".
static bool get_unit_number(const cJSON *unit, const char *name, double min, double max, double *out,
                            serve_error *error) {
    const cJSON *item = field(unit, name);
    if (item && cJSON_IsNumber(item) && item->valuedouble == -1) return true;
    return get_number(unit, name, min, max, out, error);
}

// One element of alwayson_scripts.<controlnet>.args; *enabled false when the unit is switched off.
static bool parse_control_unit(const cJSON *unit, const char *script, int index, const serve_limits *limits,
                               serve_params *p, serve_control_unit *u, bool *enabled_out, serve_error *error) {
    char path[96];
    snprintf(path, sizeof path, "alwayson_scripts.%.16s.args[%d]", script, index);
    *enabled_out = false;
    if (!cJSON_IsObject(unit)) return fail_code(error, 400, path, "invalid_type", "field '%s' must be an object", path);
    const cJSON *enabled = field(unit, "enabled");
    if (enabled && !cJSON_IsBool(enabled)) {
        fail_code(error, 400, "enabled", "invalid_type", "field 'enabled' must be true or false");
        return unit_field_failed(error, script, index);
    }
    if (enabled && cJSON_IsFalse(enabled)) return true;
    *enabled_out = true;

    // The image: "image" (newer extension versions; a string or {"image": ..., "mask": ...}) or
    // "input_image" (older ones).
    char image_field[128];
    snprintf(image_field, sizeof image_field, "%s.image", path);
    const cJSON *image = field(unit, "image"), *mask = field(unit, "mask");
    if (image && cJSON_IsObject(image)) {
        if (!mask) mask = field(image, "mask");
        image = field(image, "image");
    }
    if (!image || (cJSON_IsString(image) && !image->valuestring[0])) {
        snprintf(image_field, sizeof image_field, "%s.input_image", path);
        image = field(unit, "input_image");
    }
    if (!image || (cJSON_IsString(image) && !image->valuestring[0])) {
        snprintf(image_field, sizeof image_field, "%s.image", path);
        return fail_code(error, 400, image_field, "missing_required_parameter",
                         "the enabled ControlNet unit %s needs an image (%s, or input_image): a base64 PNG", path,
                         image_field);
    }
    if (!cJSON_IsString(image) || !image->valuestring)
        return fail_code(error, 400, image_field, "invalid_type", "field '%s' must be a base64 string", image_field);
    if (mask && !(cJSON_IsString(mask) && !mask->valuestring[0])) {
        char mask_field[128];
        snprintf(mask_field, sizeof mask_field, "%s.mask", path);
        return fail(error, 400, mask_field, "%s: ControlNet masks (inpainting) are not supported by this server",
                    mask_field);
    }

    const char *module = "none";
    if (!get_string(unit, "module", &module, error)) return unit_field_failed(error, script, index);
    if (same_ignoring_case(module, "none"))
        u->module = SERVE_CONTROL_NONE;
    else if (same_ignoring_case(module, "canny"))
        u->module = SERVE_CONTROL_CANNY;
    else if (same_ignoring_case(module, "normal_bae") || same_ignoring_case(module, "normalbae"))
        u->module = SERVE_CONTROL_NORMALBAE;
    else {
        char module_field[128];
        snprintf(module_field, sizeof module_field, "%s.module", path);
        return fail(error, 400, module_field, "%s: '%.40s' is not available: expected none, canny or normal_bae",
                    module_field, module);
    }
    u->weight = 1.0;
    u->threshold_a = SERVE_CANNY_LOW_DEFAULT;
    u->threshold_b = SERVE_CANNY_HIGH_DEFAULT;
    u->processor_res = SERVE_PROCESSOR_RES_DEFAULT;
    u->guidance_start = 0.0;
    u->guidance_end = 1.0;
    double processor_res = u->processor_res;
    if (!get_number(unit, "weight", 0, 10, &u->weight, error) ||
        !get_unit_number(unit, "processor_res", 64, 2048, &processor_res, error) ||
        !get_number(unit, "guidance_start", 0, 1, &u->guidance_start, error) ||
        !get_number(unit, "guidance_end", 0, 1, &u->guidance_end, error))
        return unit_field_failed(error, script, index);
    if (u->module == SERVE_CONTROL_CANNY && (!get_unit_number(unit, "threshold_a", 0, 10000, &u->threshold_a, error) ||
                                             !get_unit_number(unit, "threshold_b", 0, 10000, &u->threshold_b, error)))
        return unit_field_failed(error, script, index);
    if (floor(processor_res) != processor_res) {
        fail_code(error, 400, "processor_res", "invalid_type", "field 'processor_res' must be an integer");
        return unit_field_failed(error, script, index);
    }
    u->processor_res = (int)processor_res;
    if (u->guidance_start > u->guidance_end) {
        fail(error, 400, "guidance_end", "field 'guidance_end' = %g must not be less than guidance_start = %g",
             u->guidance_end, u->guidance_start);
        return unit_field_failed(error, script, index);
    }
    // What the extension does that this server does not: said, not silently dropped.
    const cJSON *control_mode = field(unit, "control_mode"), *pixel_perfect = field(unit, "pixel_perfect");
    bool balanced = !control_mode || (cJSON_IsNumber(control_mode) && control_mode->valuedouble == 0) ||
                    (cJSON_IsString(control_mode) && same_ignoring_case(control_mode->valuestring, "Balanced"));
    if (!balanced)
        serve_params_warn(p, "%s.control_mode: only 'Balanced' is supported; the unit ran balanced", path);
    if (pixel_perfect && cJSON_IsTrue(pixel_perfect))
        serve_params_warn(p, "%s.pixel_perfect: not supported; the preprocessor ran at processor_res %d", path,
                          u->processor_res);
    if (!decode_png_field(image->valuestring, image_field, image_field, limits, &u->png, &u->png_size, error))
        return false;
    // The map is stretched to the output size ("Just Resize"); the extension's other modes crop or
    // pad first, which differs only when the aspect ratios differ.
    const cJSON *resize_mode = field(unit, "resize_mode");
    bool just_resize = !resize_mode || (cJSON_IsNumber(resize_mode) && resize_mode->valuedouble == 0) ||
                       (cJSON_IsString(resize_mode) && same_ignoring_case(resize_mode->valuestring, "Just Resize"));
    uint32_t w = (uint32_t)u->png[16] << 24 | (uint32_t)u->png[17] << 16 | (uint32_t)u->png[18] << 8 | u->png[19];
    uint32_t h = (uint32_t)u->png[20] << 24 | (uint32_t)u->png[21] << 16 | (uint32_t)u->png[22] << 8 | u->png[23];
    if (!just_resize && p->width && p->height && (uint64_t)w * (uint64_t)p->height != (uint64_t)h * (uint64_t)p->width)
        serve_params_warn(p, "%s.resize_mode: only 'Just Resize' is supported; the %ux%u control image was stretched to "
                          "%dx%d", path, w, h, p->width, p->height);
    return true;
}

// alwayson_scripts: the ControlNet units (script name matched ignoring case, as A1111 does); any
// other script that is switched on is refused by name.
static bool get_scripts(const cJSON *root, const serve_limits *limits, serve_params *p, serve_error *error) {
    const cJSON *scripts = field(root, "alwayson_scripts");
    if (!scripts) return true;
    if (!cJSON_IsObject(scripts))
        return fail_code(error, 400, "alwayson_scripts", "invalid_type", "field 'alwayson_scripts' must be an object");
    const cJSON *script;
    cJSON_ArrayForEach(script, scripts) {
        const char *name = script->string ? script->string : "";
        char path[96];
        snprintf(path, sizeof path, "alwayson_scripts.%.60s", name);
        if (cJSON_IsNull(script)) continue;
        if (!cJSON_IsObject(script))
            return fail_code(error, 400, path, "invalid_type", "field '%s' must be an object with 'args'", path);
        const cJSON *args = field(script, "args");
        if (args && !cJSON_IsArray(args))
            return fail_code(error, 400, path, "invalid_type", "field '%s.args' must be an array", path);
        if (!same_ignoring_case(name, "controlnet")) {
            // Clients send disabled scripts as {"args": []} or {"args": [false]}.
            const cJSON *first = args ? cJSON_GetArrayItem(args, 0) : NULL;
            if (!first || cJSON_IsFalse(first)) continue;
            return fail(error, 400, path, "%s: this server has no script '%.40s' (it has: controlnet)", path, name);
        }
        const cJSON *unit;
        int index = 0;
        cJSON_ArrayForEach(unit, args) {
            serve_control_unit u = {0};
            bool enabled = false;
            if (p->unit_count == SERVE_MAX_CONTROL_UNITS)
                return fail(error, 400, path, "%s: more than %d enabled ControlNet units", path, SERVE_MAX_CONTROL_UNITS);
            if (!parse_control_unit(unit, name, index++, limits, p, &u, &enabled, error)) {
                free(u.png);
                return false;
            }
            if (enabled) p->units[p->unit_count++] = u;
        }
    }
    return true;
}

// A field the server cannot honour: a 400 naming it when it is set to anything but its "off" value.
static bool refuse_if_set(const cJSON *root, const char *name, const char *why, serve_error *error) {
    const cJSON *item = field(root, name);
    if (!item || cJSON_IsFalse(item) || (cJSON_IsString(item) && !item->valuestring[0]) ||
        (cJSON_IsNumber(item) && item->valuedouble == 0) || (cJSON_IsArray(item) && !cJSON_GetArraySize(item)))
        return true;
    return fail(error, 400, name, "field '%s': %s", name, why);
}

static bool is_lcm_sampler(const char *name) {
    return same_ignoring_case(name, "LCM") || same_ignoring_case(name, "lcm") || !name[0];
}

// What A1111 clients send by default that this server treats differently, with a warning each.
static bool a1111_extras(const cJSON *root, serve_api api, serve_params *p, serve_error *error) {
    if (!refuse_if_set(root, "enable_hr", "hires fix is not supported by this server (send false)", error) ||
        !refuse_if_set(root, "tiling", "tiling (seamless textures) is not supported by this server", error) ||
        !refuse_if_set(root, "script_name", "this server has no scripts (send null)", error) ||
        !refuse_if_set(root, "mask", "inpainting masks are not supported by this server (img2img without a mask "
                                     "is)", error))
        return false;
    const char *sampler = NULL, *sampler_index = NULL, *scheduler = NULL;
    if (!get_string(root, "sampler_name", &sampler, error) || !get_string(root, "sampler_index", &sampler_index, error) ||
        !get_string(root, "scheduler", &scheduler, error))
        return false;
    if (!sampler) sampler = sampler_index;
    if (sampler && !is_lcm_sampler(sampler))
        serve_params_warn(p, "sampler_name '%.40s' is not available: LCM ran (this server's only sampler)", sampler);
    if (scheduler && !same_ignoring_case(scheduler, "automatic") && !is_lcm_sampler(scheduler))
        serve_params_warn(p, "scheduler '%.40s' is not available: the model's LCM schedule ran", scheduler);
    const cJSON *item = field(root, "restore_faces");
    if (item && cJSON_IsTrue(item)) serve_params_warn(p, "restore_faces: not supported, the faces were not restored");
    double subseed_strength = 0;
    if (!get_number(root, "subseed_strength", 0, 1, &subseed_strength, error)) return false;
    if (subseed_strength > 0) serve_params_warn(p, "subseed_strength %g: variation seeds are not supported, ignored", subseed_strength);
    item = field(root, "styles");
    if (item && cJSON_IsArray(item) && cJSON_GetArraySize(item) > 0)
        serve_params_warn(p, "styles: this server has no saved styles; the prompt ran as sent");
    item = field(root, "save_images");
    if (item && cJSON_IsTrue(item)) serve_params_warn(p, "save_images: this server never saves images; they are in the response");
    item = field(root, "send_images");
    if (item && cJSON_IsFalse(item)) p->send_images = false;
    if (api == SERVE_API_A1111_IMG2IMG) {
        item = field(root, "include_init_images");
        if (item && cJSON_IsTrue(item)) serve_params_warn(p, "include_init_images: not supported, the response has only the results");
        item = field(root, "resize_mode");
        if (item && !(cJSON_IsNumber(item) && item->valuedouble == 0))
            serve_params_warn(p, "resize_mode: only 0 (just resize) is supported; the init image was resized to the output size");
    }
    // override_settings: sd_model_checkpoint picks the model for this request; others are ignored.
    const cJSON *overrides = field(root, "override_settings");
    if (overrides && !cJSON_IsObject(overrides))
        return fail_code(error, 400, "override_settings", "invalid_type", "field 'override_settings' must be an object");
    const cJSON *setting;
    cJSON_ArrayForEach(setting, overrides) {
        if (setting->string && !strcmp(setting->string, "sd_model_checkpoint")) {
            if (!cJSON_IsString(setting))
                return fail_code(error, 400, "override_settings.sd_model_checkpoint", "invalid_type",
                                 "field 'override_settings.sd_model_checkpoint' must be a string");
            free(p->model);
            if (!(p->model = strdup(setting->valuestring))) return fail_code(error, 503, "", "server_error", "out of memory");
        } else if (setting->string) {
            serve_params_warn(p, "override_settings.%.60s: not supported by this server, ignored", setting->string);
        }
    }
    return true;
}

static bool parse_a1111(const cJSON *root, serve_api api, const serve_limits *limits, serve_params *p,
                        serve_error *error) {
    const char *prompt = "", *negative = NULL;
    int64_t seed = -1, steps = p->steps, batch = 1, n_iter = 1;
    if (!get_string(root, "prompt", &prompt, error) || !get_string(root, "negative_prompt", &negative, error) ||
        !get_int(root, "seed", -1, MAX_SEED, &seed, error) || !get_int(root, "steps", 1, 10000, &steps, error) ||
        !get_number(root, "cfg_scale", 0, 30, &p->cfg_scale, error) ||
        !get_side(root, "width", limits, &p->width, error) || !get_side(root, "height", limits, &p->height, error) ||
        !get_int(root, "batch_size", 1, limits->max_images, &batch, error) ||
        !get_int(root, "n_iter", 1, limits->max_images, &n_iter, error) ||
        !get_number(root, "denoising_strength", 0, 1, &p->denoising_strength, error))
        return false;
    if (batch * n_iter > limits->max_images)
        return fail(error, 400, "batch_size", "batch_size * n_iter = %lld is more than this server's limit of %d images",
                    (long long)(batch * n_iter), limits->max_images);
    // A1111 clients default to 20 steps; an LCM needs 1..8. Clamped, with a warning, not refused.
    if (steps > limits->max_steps) {
        serve_params_warn(p, "steps %lld is more than this server's limit: %d steps ran", (long long)steps,
                          limits->max_steps);
        steps = limits->max_steps;
    }
    if (!a1111_extras(root, api, p, error)) return false;
    if (api != SERVE_API_A1111_TXT2IMG && !get_init_image(root, limits, p, error)) return false;
    if (!get_scripts(root, limits, p, error)) return false;
    if (api == SERVE_API_A1111_IMG2IMG && !p->init_png)
        return fail_code(error, 400, "init_images", "missing_required_parameter",
                         "img2img needs 'init_images': an array with one base64 PNG");
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
    const char *prompt = NULL, *size = NULL, *format = NULL, *model = NULL;
    int64_t n = 1;
    if (!get_string(root, "prompt", &prompt, error) || !get_int(root, "n", 1, limits->max_images, &n, error) ||
        !get_string(root, "size", &size, error) || !get_string(root, "response_format", &format, error) ||
        !get_string(root, "model", &model, error))
        return false;
    if (!prompt) return fail_code(error, 400, "prompt", "missing_required_parameter", "field 'prompt' is required");
    if (format && !strcmp(format, "b64_json"))
        p->response_format = SERVE_FORMAT_B64_JSON;
    else if (format && strcmp(format, "url") != 0)
        return fail(error, 400, "response_format", "response_format '%.32s' is not supported: expected 'url' or 'b64_json'",
                    format);
    if (size && strcmp(size, "auto") != 0) { // "auto": the model's native size
        if (!serve_parse_size(size, &p->width, &p->height))
            return fail(error, 400, "size", "field 'size' must be \"auto\" or WIDTHxHEIGHT, e.g. \"1024x1024\"");
        if (p->width > limits->max_size || p->height > limits->max_size)
            return fail(error, 400, "size", "size %dx%d is larger than this server's limit of %d pixels a side "
                        "(lcm serve --max-size)", p->width, p->height, limits->max_size);
        if (p->width % 8 || p->height % 8)
            return fail(error, 400, "size", "size %dx%d: width and height must be multiples of 8", p->width, p->height);
    }
    if (model && model[0] && !(p->model = strdup(model))) return fail_code(error, 503, "", "server_error", "out of memory");
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
        .batch_size = 1,
        .n_iter = 1,
        .denoising_strength = 0.75, // A1111's default
        .send_images = true,
    };
    if (size == 0) return fail_code(error, 400, "", "invalid_json", "the request body is empty: expected a JSON object");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, size, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + size ? (size_t)(end - body) : 0;
        return fail_code(error, 400, "", "invalid_json", "the request body is not valid JSON (error near byte %zu)", at);
    }
    bool ok;
    if (!cJSON_IsObject(root))
        ok = fail_code(error, 400, "", "invalid_json", "the request body must be a JSON object");
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

bool serve_parse_detect(const char *body, size_t size, const serve_limits *limits, serve_params *out,
                        serve_error *error) {
    memset(out, 0, sizeof *out);
    memset(error, 0, sizeof *error);
    if (size == 0) return fail_code(error, 400, "", "invalid_json", "the request body is empty: expected a JSON object");
    cJSON *root = cJSON_ParseWithLength(body, size);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail_code(error, 400, "", "invalid_json", "the request body must be a JSON object");
    }
    serve_params p = {.send_images = true};
    const char *module = "none";
    double threshold_a = SERVE_CANNY_LOW_DEFAULT, threshold_b = SERVE_CANNY_HIGH_DEFAULT;
    double processor_res = SERVE_PROCESSOR_RES_DEFAULT;
    bool ok = get_string(root, "controlnet_module", &module, error) &&
              get_unit_number(root, "controlnet_threshold_a", 0, 10000, &threshold_a, error) &&
              get_unit_number(root, "controlnet_threshold_b", 0, 10000, &threshold_b, error) &&
              get_unit_number(root, "controlnet_processor_res", 64, 2048, &processor_res, error);
    serve_control_module kind = SERVE_CONTROL_NONE;
    if (ok) {
        if (same_ignoring_case(module, "canny"))
            kind = SERVE_CONTROL_CANNY;
        else if (same_ignoring_case(module, "normal_bae") || same_ignoring_case(module, "normalbae"))
            kind = SERVE_CONTROL_NORMALBAE;
        else if (!same_ignoring_case(module, "none"))
            ok = fail(error, 400, "controlnet_module", "controlnet_module '%.40s' is not available: expected none, canny "
                      "or normal_bae", module);
    }
    // The extension's field is controlnet_input_images; older clients send controlnet_images.
    const char *images_field = "controlnet_input_images";
    const cJSON *images = ok ? field(root, images_field) : NULL;
    if (ok && !images) images = field(root, images_field = "controlnet_images");
    if (ok && (!cJSON_IsArray(images) || cJSON_GetArraySize(images) < 1))
        ok = fail_code(error, 400, "controlnet_input_images", "missing_required_parameter",
                       "field 'controlnet_input_images' must be an array of base64 images (1 to %d)",
                       SERVE_MAX_CONTROL_UNITS);
    if (ok && cJSON_GetArraySize(images) > SERVE_MAX_CONTROL_UNITS)
        ok = fail(error, 400, images_field, "field '%s': at most %d images per request", images_field,
                  SERVE_MAX_CONTROL_UNITS);
    const cJSON *image;
    int index = 0;
    if (ok) cJSON_ArrayForEach(image, images) {
        char name[64];
        snprintf(name, sizeof name, "%s[%d]", images_field, index++);
        if (!cJSON_IsString(image)) {
            ok = fail_code(error, 400, images_field, "invalid_type", "field '%s' must be a base64 string", name);
            break;
        }
        serve_control_unit *u = &p.units[p.unit_count];
        *u = (serve_control_unit){.module = kind, .weight = 1, .threshold_a = threshold_a, .threshold_b = threshold_b,
                                  .processor_res = (int)processor_res, .guidance_end = 1};
        if (!decode_png_field(image->valuestring, images_field, name, limits, &u->png, &u->png_size, error)) {
            free(u->png);
            u->png = NULL;
            ok = false;
            break;
        }
        p.unit_count++;
    }
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
    free(params->model);
    free(params->init_png);
    for (int i = 0; i < params->unit_count; i++) free(params->units[i].png);
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
