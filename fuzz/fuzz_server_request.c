// libFuzzer harness for `lcm serve`'s request parsing (app/server_request.c): the JSON body of each
// endpoint, the base64 decoder and the "WxH" size parser. The first input byte picks the entry
// point and the API; the rest is the client's bytes.
//
// Checked beyond "no crash": a parsed request (its ControlNet units and warnings included; also
// /controlnet/detect's body) lies within the limits
// it was parsed with, its images PNG, JPEG or WebP of a bounded size; a refusal
// allocates nothing and says why with a 4xx; a decoded base64 re-encodes to text that decodes to the
// same bytes; a parsed size is in range.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guarded_input.h"

#include "../app/server_request.c"

static const serve_limits limits = {
    .max_size = 768, .max_steps = 8, .max_images = 4, .max_image_bytes = 4096,
};

// An accepted upload: within the byte limit, a PNG, JPEG or WebP whose header declares 1..4096
// pixels a side (lcm_image_probe, as the parser checked it).
static bool image_ok(const uint8_t *bytes, size_t size) {
    int width = 0, height = 0;
    return bytes && size <= limits.max_image_bytes && lcm_image_probe(bytes, size, "upload", &width, &height) == LCM_OK &&
           width >= 1 && height >= 1 && width <= MAX_INIT_SIDE && height <= MAX_INIT_SIDE;
}

static bool unit_ok(const serve_control_unit *u) {
    return image_ok(u->png, u->png_size) &&
           (u->module == SERVE_CONTROL_NONE || u->module == SERVE_CONTROL_CANNY || u->module == SERVE_CONTROL_NORMALBAE) &&
           u->weight >= 0 && u->weight <= 10 && u->threshold_a >= 0 && u->threshold_a <= 10000 && u->threshold_b >= 0 &&
           u->threshold_b <= 10000 && u->processor_res >= 64 && u->processor_res <= 2048 && u->guidance_start >= 0 &&
           u->guidance_start <= u->guidance_end && u->guidance_end <= 1 && serve_control_module_name(u->module)[0];
}

static void check_request(serve_api api, const char *body, size_t size) {
    serve_params p;
    serve_error e;
    bool parsed = api == SERVE_API_DETECT ? serve_parse_detect(body, size, &limits, &p, &e)
                                          : serve_parse_request(api, body, size, &limits, &p, &e);
    if (parsed) {
        // width/height 0 = the model's native size; steps above the limit were clamped.
        if ((api != SERVE_API_DETECT &&
             (!p.prompt || p.steps < 1 || p.steps > limits.max_steps || p.width < 0 || p.height < 0 ||
              (p.width && p.width < 8) || (p.height && p.height < 8) || p.width > limits.max_size ||
              p.height > limits.max_size || p.width % 8 || p.height % 8 || p.batch_size < 1 || p.n_iter < 1 ||
              p.batch_size * p.n_iter > limits.max_images || p.seed < -1 || !(p.cfg_scale >= 0 && p.cfg_scale <= 30) ||
              !(p.denoising_strength >= 0 && p.denoising_strength <= 1))) ||
            (p.init_png && !image_ok(p.init_png, p.init_png_size)) ||
            (api == SERVE_API_A1111_IMG2IMG && !p.init_png) || (api == SERVE_API_A1111_TXT2IMG && p.init_png) ||
            p.unit_count < 0 || p.unit_count > SERVE_MAX_CONTROL_UNITS || p.warning_count < 0 ||
            p.warning_count > SERVE_MAX_WARNINGS)
            abort();
        for (int i = 0; i < p.unit_count; i++)
            if (!unit_ok(&p.units[i])) abort();
        for (int i = 0; i < p.warning_count; i++)
            if (!memchr(p.warnings[i], 0, SERVE_WARNING_SIZE) || !p.warnings[i][0]) abort();
        serve_params_free(&p);
    } else {
        serve_params zero;
        memset(&zero, 0, sizeof zero);
        if (memcmp(&p, &zero, sizeof p) != 0 || e.http_status < 400 || e.http_status > 599 || !e.message[0] || !e.code[0])
            abort();
    }
}

static void check_base64(const char *text, size_t size) {
    uint8_t *bytes = NULL;
    size_t n = 0;
    if (!serve_base64_decode(text, size, 1 << 16, &bytes, &n)) {
        if (bytes || n) abort();
        return;
    }
    if (n > (1 << 16) || n > size) abort();
    char *again = serve_base64_encode(bytes, n);
    uint8_t *round = NULL;
    size_t m = 0;
    if (!again || strlen(again) != (n + 2) / 3 * 4 || !serve_base64_decode(again, strlen(again), n, &round, &m) ||
        m != n || (n && memcmp(round, bytes, n) != 0))
        abort();
    free(round);
    free(again);
    free(bytes);
}

static void check_size(const char *text, size_t size) {
    char buf[64];
    if (size >= sizeof buf) return;
    memcpy(buf, text, size);
    buf[size] = '\0';
    int w = 0, h = 0;
    if (serve_parse_size(buf, &w, &h) && (w < 1 || w > 65535 || h < 1 || h > 65535)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    guarded_input input;
    if (guarded_input_make(&input, data + 1, size - 1) != 0) return 0;
    const char *text = (const char *)input.bytes;
    size_t n = size - 1;
    switch (data[0] % 7) {
    case 6: check_request(SERVE_API_DETECT, text, n); break;
    case 0: check_request(SERVE_API_A1111_TXT2IMG, text, n); break;
    case 1: check_request(SERVE_API_A1111_IMG2IMG, text, n); break;
    case 2: check_request(SERVE_API_OPENAI, text, n); break;
    case 3: check_request(SERVE_API_PAGE, text, n); break;
    case 4: check_base64(text, n); break;
    default: check_size(text, n); break;
    }
    guarded_input_free(&input);
    return 0;
}
