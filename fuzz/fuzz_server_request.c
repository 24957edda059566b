// libFuzzer harness for `lcm serve`'s request parsing (app/server_request.c): the JSON body of each
// endpoint, the base64 decoder and the "WxH" size parser. The first input byte picks the entry
// point and the API; the rest is the client's bytes.
//
// Checked beyond "no crash": a parsed request (its ControlNet unit included) lies within the limits
// it was parsed with; a refusal
// allocates nothing and says why with a 4xx; a decoded base64 re-encodes to text that decodes to the
// same bytes; a parsed size is in range.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "guarded_input.h"

#include "../app/server_request.c"

static const serve_limits limits = {
    .default_size = 64, .max_size = 768, .max_steps = 8, .max_images = 4, .max_image_bytes = 4096,
};

static void check_request(serve_api api, const char *body, size_t size) {
    serve_params p;
    serve_error e;
    if (serve_parse_request(api, body, size, &limits, &p, &e)) {
        if (!p.prompt || p.steps < 1 || p.steps > limits.max_steps || p.width < 8 || p.height < 8 ||
            p.width > limits.max_size || p.height > limits.max_size || p.width % 8 || p.height % 8 ||
            p.batch_size < 1 || p.n_iter < 1 || p.batch_size * p.n_iter > limits.max_images || p.seed < -1 ||
            !(p.cfg_scale >= 0 && p.cfg_scale <= 30) || !(p.denoising_strength >= 0 && p.denoising_strength <= 1) ||
            (p.init_png && (p.init_png_size > limits.max_image_bytes || p.init_png_size < 24)) ||
            (api == SERVE_API_A1111_IMG2IMG && !p.init_png) || (api == SERVE_API_A1111_TXT2IMG && p.init_png))
            abort();
        // The ControlNet unit: a PNG within the limits, a known module, values in range.
        if ((p.control_png && (p.control_png_size > limits.max_image_bytes || p.control_png_size < 24 ||
                               memcmp(p.control_png + 1, "PNG", 3) != 0)) ||
            (!p.control_png && p.control_png_size) ||
            (p.control_module != SERVE_CONTROL_NONE && p.control_module != SERVE_CONTROL_CANNY &&
             p.control_module != SERVE_CONTROL_NORMALBAE) ||
            !(p.control_weight >= 0 && p.control_weight <= 10) || !(p.threshold_a >= 0 && p.threshold_a <= 10000) ||
            !(p.threshold_b >= 0 && p.threshold_b <= 10000) || p.processor_res < 64 || p.processor_res > 2048 ||
            strcmp(serve_control_module_name(p.control_module), "") == 0)
            abort();
        serve_params_free(&p);
    } else {
        serve_params zero;
        memset(&zero, 0, sizeof zero);
        if (memcmp(&p, &zero, sizeof p) != 0 || e.http_status < 400 || e.http_status > 599 || !e.message[0])
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
    switch (data[0] % 6) {
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
