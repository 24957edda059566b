// `lcm serve` end to end over HTTP: the test starts the server on the tiny fixture model (port 0,
// the server prints the one it got) and talks to it with libcurl.
//
// Server A (defaults): every endpoint; txt2img of each golden pipeline case (prompt, seed, size,
// steps and guidance from the golden file's info) must give exactly `lcm generate`'s pixels; the
// OpenAI endpoint; bad JSON, wrong types and bad values answered 400 naming the field; optional
// features answered as /api/capabilities says.
// Server C (--controlnet, --lora, --control-weights: the reference ControlNet workflow): the
// capabilities say so; a photo sent with the sd-webui-controlnet unit (module normal_bae or canny)
// through /sdapi/v1/txt2img and through the page's /api/generate gives exactly the pixels of
// `lcm generate --control-preprocess ...` and returns the control map (= --control-output's);
// requests without a control image or with an unknown module are 400s naming the field, and a
// server without a ControlNet answers a ControlNet unit with 501.
// Server B (--queue 1 --step-delay-ms, --max-body 4096, --api-key): 401 without the key, 413 for an
// oversized body, 429 with Retry-After when the queue is full, a client that disconnects cancels
// its job, /sdapi/v1/interrupt stops the running job. Both servers must exit 0 on SIGTERM.
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <poll.h>
#include <signal.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "control_fixtures.h"
#include "golden.h"
#include "serve_process.h"
#include "io/image.h"
#include "testutil.h"

// The parsing helpers are compiled in from the app so the base64 round trip can be checked here.
#include "../app/server_request.c"

static char tmpdir[] = "/tmp/lcm-serve-test-XXXXXX";

static const char *or_empty(const char *s) { return s ? s : ""; }

// ---- HTTP ------------------------------------------------------------------------------------------

typedef struct reply {
    long status;
    char *body;
    size_t size;
    char retry_after[32];
} reply;

static size_t on_body(char *data, size_t size, size_t n, void *user) {
    reply *r = user;
    char *grown = realloc(r->body, r->size + size * n + 1);
    if (!grown) return 0;
    r->body = grown;
    memcpy(r->body + r->size, data, size * n);
    r->size += size * n;
    r->body[r->size] = '\0';
    return size * n;
}

static size_t on_header(char *data, size_t size, size_t n, void *user) {
    reply *r = user;
    if (size * n > 13 && strncasecmp(data, "Retry-After: ", 13) == 0)
        snprintf(r->retry_after, sizeof r->retry_after, "%.*s", (int)(size * n - 13), data + 13);
    return size * n;
}

static struct curl_slist *auth_headers(const server_process *sp) {
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (sp->api_key) {
        char line[256];
        snprintf(line, sizeof line, "Authorization: Bearer %s", sp->api_key);
        h = curl_slist_append(h, line);
    }
    return h;
}

// An easy handle for METHOD base+path with `body` (NULL = GET); the caller runs and cleans it.
static CURL *request_handle(const server_process *sp, const char *path, const char *body, reply *r,
                            struct curl_slist *headers) {
    memset(r, 0, sizeof *r);
    char url[512];
    snprintf(url, sizeof url, "%s%s", sp->base, path);
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    return curl;
}

static reply http(const server_process *sp, const char *path, const char *body) {
    reply r;
    struct curl_slist *headers = auth_headers(sp);
    CURL *curl = request_handle(sp, path, body, &r, headers);
    CURLcode rc = curl_easy_perform(curl);
    CHECK(rc == CURLE_OK, "%s %s: %s", body ? "POST" : "GET", path, curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(headers);
    if (!r.body) r.body = strdup("");
    return r;
}

static cJSON *reply_json(const reply *r, const char *what) {
    cJSON *json = cJSON_Parse(r->body);
    CHECK(json != NULL, "%s: the reply is not JSON: %.200s", what, r->body);
    return json;
}

// A request that must fail with `status` and a JSON error whose message is present and whose
// param names `field` (when given).
static void expect_error(const server_process *sp, const char *path, const char *body, long status,
                         const char *field) {
    reply r = http(sp, path, body);
    CHECK(r.status == status, "%s %.80s: status %ld, expected %ld (%.200s)", path, body, r.status, status, r.body);
    cJSON *json = cJSON_Parse(r.body);
    const cJSON *error = cJSON_GetObjectItem(json, "error");
    const char *message = cJSON_GetStringValue(cJSON_GetObjectItem(error, "message"));
    const char *param = cJSON_GetStringValue(cJSON_GetObjectItem(error, "param"));
    CHECK(message && strlen(message) > 10, "%s %.80s: no error message: %.200s", path, body, r.body);
    if (field)
        CHECK(param && !strcmp(param, field) && message && strstr(message, field),
              "%s %.80s: the error should name '%s': %.200s", path, body, field, r.body);
    if (getenv("LCM_TEST_VERBOSE")) fprintf(stderr, "%ld %s\n", r.status, message ? message : "?");
    cJSON_Delete(json);
    free(r.body);
}

// ---- images ----------------------------------------------------------------------------------------

// Decodes a base64 PNG; *parameters gets its A1111 `parameters` text (static buffer).
static uint8_t *decode_image(const char *b64, int *w, int *h, const char **parameters) {
    static char text[4096];
    text[0] = '\0';
    if (parameters) *parameters = text;
    uint8_t *png = NULL, *rgb = NULL;
    size_t size = 0;
    CHECK(b64 && serve_base64_decode(b64, strlen(b64), 1 << 26, &png, &size), "image is not base64");
    if (!png) return NULL;
    CHECK_OK(image_decode_png(png, size, "reply image", &rgb, w, h));
    spng_ctx *ctx = spng_ctx_new(0);
    spng_set_png_buffer(ctx, png, size);
    uint32_t n = 0;
    if (spng_get_text(ctx, NULL, &n) == 0 && n > 0) {
        struct spng_text *chunks = calloc(n, sizeof *chunks);
        if (spng_get_text(ctx, chunks, &n) == 0)
            for (uint32_t i = 0; i < n; i++)
                if (!strcmp(chunks[i].keyword, "parameters")) snprintf(text, sizeof text, "%s", chunks[i].text);
        free(chunks);
    }
    spng_ctx_free(ctx);
    free(png);
    return rgb;
}

// One golden case: the server's txt2img image must equal `lcm generate`'s bit for bit, and be
// within the CLI test's tolerance of the reference PNG.
static void check_golden_case(const server_process *sp, const char *model, const char *golden_path,
                              const char *golden_png) {
    st_file *golden;
    CHECK_OK(st_open(golden_path, &golden));
    if (!golden) return;
    cJSON *info = golden_info(golden);
    const char *prompt = golden_string(info, "prompt");
    double seed = golden_number(info, "seed"), steps = golden_number(info, "steps");
    double guidance = golden_number(info, "guidance"), w = golden_number(info, "w"), h = golden_number(info, "h");

    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "prompt", prompt);
    cJSON_AddNumberToObject(body, "seed", seed);
    cJSON_AddNumberToObject(body, "steps", steps);
    cJSON_AddNumberToObject(body, "cfg_scale", guidance);
    cJSON_AddNumberToObject(body, "width", w);
    cJSON_AddNumberToObject(body, "height", h);
    cJSON_AddStringToObject(body, "some_future_field", "ignored");
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    reply r = http(sp, "/sdapi/v1/txt2img", text);
    free(text);
    CHECK(r.status == 200, "%s: txt2img status %ld: %.300s", golden_path, r.status, r.body);
    cJSON *json = reply_json(&r, "txt2img");
    const cJSON *images = cJSON_GetObjectItem(json, "images");
    const char *info_text = cJSON_GetStringValue(cJSON_GetObjectItem(json, "info"));
    const cJSON *params = cJSON_GetObjectItem(json, "parameters");
    CHECK(cJSON_GetArraySize(images) == 1, "%s: expected 1 image", golden_path);
    CHECK(params && cJSON_GetNumberValue(cJSON_GetObjectItem(params, "seed")) == seed &&
              !strcmp(or_empty(cJSON_GetStringValue(cJSON_GetObjectItem(params, "prompt"))), prompt),
          "%s: parameters do not echo the request", golden_path);
    cJSON *reply_info = info_text ? cJSON_Parse(info_text) : NULL;
    CHECK(reply_info && cJSON_GetNumberValue(cJSON_GetObjectItem(reply_info, "seed")) == seed &&
              cJSON_GetArraySize(cJSON_GetObjectItem(reply_info, "all_seeds")) == 1,
          "%s: info should be a JSON string with seed %.0f and all_seeds: %.200s", golden_path, seed,
          info_text ? info_text : "(none)");
    cJSON_Delete(reply_info);

    int gw = 0, gh = 0;
    const char *png_text = NULL;
    uint8_t *got = decode_image(cJSON_GetStringValue(cJSON_GetArrayItem(images, 0)), &gw, &gh, &png_text);
    char expect[128];
    snprintf(expect, sizeof expect, "Seed: %.0f, Size: %.0fx%.0f", seed, w, h);
    CHECK(strstr(png_text, prompt) == png_text && strstr(png_text, expect), "PNG parameters chunk is '%s'", png_text);

    // `lcm generate` with the same parameters.
    char out[1200], cmd[8192];
    test_path(out, sizeof out, "%s/cli.png", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' generate --quiet --model '%s' --seed %.0f --steps %.0f --guidance %.9g --width %.0f --height %.0f --output '%s' -- ",
             test_lcm_bin(), model, seed, steps, guidance, w, h, out);
    test_append_quoted(cmd, sizeof cmd, prompt);
    CHECK(test_run(cmd, NULL, 0) == 0, "%s failed", cmd);
    uint8_t *cli = NULL, *want = NULL;
    int cw = 0, ch = 0, ww = 0, wh = 0;
    CHECK_OK(image_read_png(out, &cli, &cw, &ch));
    CHECK_OK(image_read_png(golden_png, &want, &ww, &wh));
    if (got && cli && want) {
        CHECK(gw == cw && gh == ch && gw == ww && gh == wh, "sizes: server %dx%d, CLI %dx%d, golden %dx%d", gw, gh, cw,
              ch, ww, wh);
        if (gw == cw && gh == ch && gw == ww && gh == wh) {
            size_t count = (size_t)gw * gh * 3, differ_cli = 0, differ_golden = 0, worse = 0;
            for (size_t i = 0; i < count; i++) {
                differ_cli += got[i] != cli[i];
                int d = abs((int)got[i] - (int)want[i]);
                differ_golden += d != 0;
                worse += d > 1;
            }
            fprintf(stderr, "%s: server vs lcm generate: %zu of %zu values differ; vs golden PNG: %zu differ, %zu by more than 1\n",
                    golden_path, differ_cli, count, differ_golden, worse);
            CHECK(differ_cli == 0, "server image differs from lcm generate's in %zu values", differ_cli);
            CHECK(worse == 0 && differ_golden * 200 <= count, "server image vs golden: %zu differ, %zu by more than 1",
                  differ_golden, worse);
        }
    }
    free(got);
    free(cli);
    free(want);
    cJSON_Delete(json);
    free(r.body);
    cJSON_Delete(info);
    st_close(golden);
}

static void check_golden(const server_process *sp, const char *model) {
    char golden_dir[1100];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", model);
    char **names;
    int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names), cases = 0;
    for (int i = 0; i < n; i++) {
        char golden[1400], png[1400];
        test_path(golden, sizeof golden, "%s/%s", golden_dir, names[i]);
        test_path(png, sizeof png, "%s/%.*s.png", golden_dir, (int)(strlen(names[i]) - 12), names[i]);
        if (access(png, F_OK) != 0) continue;
        check_golden_case(sp, model, golden, png);
        cases++;
    }
    test_free_list(names, n);
    CHECK(cases > 0, "no golden pipeline_*.safetensors with a PNG under %s", golden_dir);
}

// ---- server A: endpoints and bad requests -----------------------------------------------------------

static cJSON *capabilities;

static void check_endpoints(const server_process *sp) {
    reply r = http(sp, "/health", NULL);
    cJSON *json = reply_json(&r, "/health");
    CHECK(r.status == 200 && !strcmp(or_empty(cJSON_GetStringValue(cJSON_GetObjectItem(json, "status"))), "ok"),
          "/health: %ld %s", r.status, r.body);
    cJSON_Delete(json);
    free(r.body);

    r = http(sp, "/api/capabilities", NULL);
    capabilities = reply_json(&r, "/api/capabilities");
    CHECK(r.status == 200 && cJSON_GetNumberValue(cJSON_GetObjectItem(capabilities, "default_size")) >= 8 &&
              cJSON_IsObject(cJSON_GetObjectItem(capabilities, "features")),
          "/api/capabilities: %s", r.body);
    free(r.body);

    r = http(sp, "/sdapi/v1/progress", NULL);
    json = reply_json(&r, "/sdapi/v1/progress");
    CHECK(r.status == 200 && cJSON_IsNumber(cJSON_GetObjectItem(json, "progress")) &&
              cJSON_IsObject(cJSON_GetObjectItem(json, "state")),
          "/sdapi/v1/progress: %s", r.body);
    cJSON_Delete(json);
    free(r.body);

    r = http(sp, "/sdapi/v1/sd-models", NULL);
    json = reply_json(&r, "/sdapi/v1/sd-models");
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(json, 0), "model_name"));
    CHECK(r.status == 200 && name && !strcmp(name, "tiny-lcm") && !strstr(r.body, "/"),
          "/sdapi/v1/sd-models (model name, no paths): %s", r.body);
    cJSON_Delete(json);
    free(r.body);

    r = http(sp, "/v1/models", NULL);
    json = reply_json(&r, "/v1/models");
    name = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(json, "data"), 0), "id"));
    CHECK(r.status == 200 && name && !strcmp(name, "tiny-lcm"), "/v1/models: %s", r.body);
    cJSON_Delete(json);
    free(r.body);

    r = http(sp, "/", NULL);
    CHECK(r.status == 200 && strstr(r.body, "<form") && strstr(r.body, "/app.js"), "/ is not the page: %.200s", r.body);
    free(r.body);
    r = http(sp, "/app.js", NULL);
    CHECK(r.status == 200 && strstr(r.body, "/api/generate"), "/app.js: %ld", r.status);
    free(r.body);

    expect_error(sp, "/no/such/thing", NULL, 404, NULL);
    expect_error(sp, "/sdapi/v1/txt2img", NULL, 405, NULL); // GET on a POST endpoint
    expect_error(sp, "/health", "{}", 405, NULL);
}

static void check_openai(const server_process *sp) {
    int side = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(capabilities, "default_size"));
    char body[256];
    const char *model = cJSON_GetStringValue(cJSON_GetObjectItem(capabilities, "model"));
    snprintf(body, sizeof body, "{\"prompt\":\"a red fox\",\"n\":2,\"size\":\"%dx%d\",\"response_format\":\"b64_json\",\"model\":\"%s\"}",
             side, side + 8, model);
    reply r = http(sp, "/v1/images/generations", body);
    cJSON *json = reply_json(&r, "/v1/images/generations");
    const cJSON *data = cJSON_GetObjectItem(json, "data");
    CHECK(r.status == 200 && cJSON_GetArraySize(data) == 2, "/v1/images/generations n=2: %ld %.200s", r.status, r.body);
    for (int i = 0; i < cJSON_GetArraySize(data); i++) {
        int w = 0, h = 0;
        uint8_t *rgb = decode_image(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(data, i), "b64_json")),
                                    &w, &h, NULL);
        CHECK(rgb && w == side && h == side + 8, "OpenAI image %d is %dx%d, expected %dx%d", i, w, h, side, side + 8);
        free(rgb);
    }
    cJSON_Delete(json);
    free(r.body);
    // The default response_format is url: the image is served by this server for a while.
    r = http(sp, "/v1/images/generations", "{\"prompt\":\"a\",\"size\":\"auto\"}");
    json = reply_json(&r, "/v1/images/generations url");
    const char *url = cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(json, "data"), 0), "url"));
    const char *path = url ? strstr(url, "/v1/images/") : NULL;
    CHECK(r.status == 200 && path, "/v1/images/generations answers a url by default: %ld %.200s", r.status, r.body);
    if (path) {
        reply image = http(sp, path, NULL);
        CHECK(image.status == 200 && image.size > 8 && !memcmp(image.body, "\x89PNG", 4), "GET %s: %ld", path, image.status);
        spng_ctx *ctx = spng_ctx_new(0);
        struct spng_ihdr ihdr = {0};
        spng_set_png_buffer(ctx, image.body, image.size);
        CHECK(spng_get_ihdr(ctx, &ihdr) == 0 && (int)ihdr.width == side && (int)ihdr.height == side,
              "size auto = the model's %dx%d: %ux%u", side, side, ihdr.width, ihdr.height);
        spng_ctx_free(ctx);
        free(image.body);
    }
    cJSON_Delete(json);
    free(r.body);
    expect_error(sp, "/v1/images/0123456789abcdef0123456789abcdef.png", NULL, 404, NULL);
    expect_error(sp, "/v1/images/generations", "{\"prompt\":\"a\",\"response_format\":\"png\"}", 400, "response_format");
    expect_error(sp, "/v1/images/generations", "{\"prompt\":\"a\",\"model\":\"no-such-model\"}", 404, "model");
    expect_error(sp, "/v1/images/generations", "{\"prompt\":\"a\",\"size\":\"64by64\"}", 400, "size");
    expect_error(sp, "/v1/images/generations", "{\"prompt\":\"a\",\"size\":\"100x64\"}", 400, "size");
    expect_error(sp, "/v1/images/generations", "{\"n\":1}", 400, "prompt");
    expect_error(sp, "/v1/images/generations", "{\"prompt\":\"a\",\"n\":\"2\"}", 400, "n");
}

static void check_bad_requests(const server_process *sp) {
    const char *t2i = "/sdapi/v1/txt2img";
    expect_error(sp, t2i, "{\"prompt\":", 400, NULL);
    expect_error(sp, t2i, "", 400, NULL);
    expect_error(sp, t2i, "[1,2]", 400, NULL);
    expect_error(sp, t2i, "{\"prompt\":5}", 400, "prompt");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"steps\":\"4\"}", 400, "steps");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"steps\":0}", 400, "steps");
    // More steps than allowed run as many as allowed, with a warning (A1111 clients send 20).
    reply clamped = http(sp, t2i, "{\"prompt\":\"a\",\"steps\":1000}");
    CHECK(clamped.status == 200 && strstr(clamped.body, "\"warnings\":[\"steps 1000 is more than"),
          "steps 1000: %ld %.300s", clamped.status, clamped.body);
    free(clamped.body);
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"seed\":1.5}", 400, "seed");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"seed\":-2}", 400, "seed");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"width\":100}", 400, "width");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"height\":100000}", 400, "height");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"cfg_scale\":\"high\"}", 400, "cfg_scale");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"batch_size\":99}", 400, "batch_size");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"batch_size\":3,\"n_iter\":3}", 400, "batch_size");
    expect_error(sp, t2i, "{\"prompt\":\"a\",\"negative_prompt\":[]}", 400, "negative_prompt");
    expect_error(sp, "/sdapi/v1/img2img", "{\"prompt\":\"a\"}", 400, "init_images");
    expect_error(sp, "/sdapi/v1/img2img", "{\"prompt\":\"a\",\"init_images\":[\"@@@\"]}", 400, "init_images");
    expect_error(sp, "/sdapi/v1/img2img", "{\"prompt\":\"a\",\"init_images\":\"abc\"}", 400, "init_images");
    expect_error(sp, "/sdapi/v1/img2img", "{\"prompt\":\"a\",\"init_images\":[\"AAAA\"],\"denoising_strength\":2}", 400,
                 "denoising_strength");
    expect_error(sp, "/sdapi/v1/img2img", "{\"prompt\":\"a\",\"init_images\":[\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"]}", 400,
                 "init_images"); // not a PNG
    // A PNG header declaring 100000 x 100000 pixels: refused before anything decodes it.
    static const uint8_t huge[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                                     0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0, 0, 0, 0, 0};
    char *b64 = serve_base64_encode(huge, sizeof huge), body[256];
    snprintf(body, sizeof body, "{\"prompt\":\"a\",\"init_images\":[\"%s\"]}", b64);
    expect_error(sp, "/sdapi/v1/img2img", body, 400, "init_images");
    free(b64);
}

// Optional features: answered 200 when /api/capabilities lists them, else 501 naming the field.
static void check_optional_features(const server_process *sp) {
    const cJSON *features = cJSON_GetObjectItem(capabilities, "features");
    int side = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(capabilities, "default_size"));
    uint8_t *gray = malloc((size_t)side * side * 3);
    memset(gray, 100, (size_t)side * side * 3);
    void *png = NULL;
    size_t size = 0;
    CHECK_OK(image_encode_png(gray, side, side, NULL, NULL, 0, &png, &size));
    char *b64 = serve_base64_encode(png, size);
    size_t cap = strlen(b64) + 256;
    char *body = malloc(cap);
    snprintf(body, cap, "{\"prompt\":\"a\",\"seed\":1,\"init_images\":[\"data:image/png;base64,%s\"],\"denoising_strength\":0.5}", b64);
    reply r = http(sp, "/sdapi/v1/img2img", body);
    bool img2img = cJSON_IsTrue(cJSON_GetObjectItem(features, "img2img"));
    CHECK(r.status == (img2img ? 200 : 501), "img2img (capabilities say %d): %ld %.200s", img2img, r.status, r.body);
    if (!img2img) CHECK(strstr(r.body, "init_images") != NULL, "501 should name init_images: %s", r.body);
    free(r.body);
    r = http(sp, "/sdapi/v1/txt2img", "{\"prompt\":\"a\",\"negative_prompt\":\"blurry\",\"steps\":1}");
    bool negative = cJSON_IsTrue(cJSON_GetObjectItem(features, "negative_prompt"));
    CHECK(r.status == (negative ? 200 : 501), "negative_prompt (capabilities say %d): %ld %.200s", negative, r.status, r.body);
    free(r.body);
    free(body);
    free(b64);
    free(png);
    free(gray);
}

// The page's endpoint answers with server-sent events ending in a result.
static void check_event_stream(const server_process *sp) {
    reply r = http(sp, "/api/generate", "{\"prompt\":\"a cat\",\"steps\":2,\"seed\":5}");
    CHECK(r.status == 200, "/api/generate: %ld", r.status);
    const char *queued = strstr(r.body, "event: queued\n"), *progress = strstr(r.body, "event: progress\ndata: {\"step\":2,\"steps\":2");
    const char *result = strstr(r.body, "event: result\ndata: {\"images\":[\"iVBOR");
    CHECK(queued && progress && result && queued < progress && progress < result,
          "/api/generate events out of order or missing: %.300s", r.body);
    free(r.body);
}

// ---- server B: limits, queue, cancel -----------------------------------------------------------------

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double health_number(const server_process *sp, const char *field) {
    reply r = http(sp, "/health", NULL);
    cJSON *json = cJSON_Parse(r.body);
    const cJSON *item = cJSON_GetObjectItem(json, field);
    double v = cJSON_IsBool(item) ? cJSON_IsTrue(item) : cJSON_GetNumberValue(item);
    cJSON_Delete(json);
    free(r.body);
    return v;
}

static void check_auth_and_size(server_process *sp) {
    const char *key = sp->api_key;
    sp->api_key = NULL;
    expect_error(sp, "/sdapi/v1/txt2img", "{\"prompt\":\"a\"}", 401, NULL);
    expect_error(sp, "/v1/models", NULL, 401, NULL);
    sp->api_key = "wrong-key";
    expect_error(sp, "/sdapi/v1/txt2img", "{\"prompt\":\"a\"}", 401, NULL);
    sp->api_key = NULL;
    reply r = http(sp, "/health", NULL); // open without a key, for load balancers
    CHECK(r.status == 200, "/health without the key: %ld", r.status);
    free(r.body);
    sp->api_key = key;
    char big[8192];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"prompt\":\"", 11);
    memcpy(big + sizeof big - 4, "\"}", 3);
    expect_error(sp, "/sdapi/v1/txt2img", big, 413, NULL);
}

// Starts `count` requests at once (curl multi) and drives them to the end.
static void run_concurrently(const server_process *sp, const char *body, int count, reply *replies) {
    CURLM *multi = curl_multi_init();
    CURL *handles[8];
    struct curl_slist *headers = auth_headers(sp);
    for (int i = 0; i < count; i++) {
        handles[i] = request_handle(sp, "/sdapi/v1/txt2img", body, &replies[i], headers);
        curl_multi_add_handle(multi, handles[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(multi, &running);
        if (running) curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    for (int i = 0; i < count; i++) {
        curl_easy_getinfo(handles[i], CURLINFO_RESPONSE_CODE, &replies[i].status);
        curl_multi_remove_handle(multi, handles[i]);
        curl_easy_cleanup(handles[i]);
    }
    curl_slist_free_all(headers);
    curl_multi_cleanup(multi);
}

static void check_queue_full(const server_process *sp) {
    // Queue 1: one running and one waiting at most; four at once must see at least one 429.
    reply replies[4];
    run_concurrently(sp, "{\"prompt\":\"a\",\"steps\":2}", 4, replies);
    int ok = 0, busy = 0;
    for (int i = 0; i < 4; i++) {
        if (replies[i].status == 200) ok++;
        if (replies[i].status == 429) {
            busy++;
            CHECK(atoi(replies[i].retry_after) >= 1, "429 without a Retry-After: '%s'", replies[i].retry_after);
            CHECK(replies[i].body && strstr(replies[i].body, "busy"), "429 body: %s", replies[i].body);
        }
        free(replies[i].body);
    }
    fprintf(stderr, "4 concurrent requests, queue 1: %d images, %d answered 429\n", ok, busy);
    CHECK(ok >= 1 && busy >= 1 && ok + busy == 4, "expected images and 429s only: %d ok, %d busy", ok, busy);
}

// A client that goes away mid-job: the server stops the job within about one step.
static void check_disconnect_cancels(const server_process *sp, int step_delay_ms) {
    double cancelled_before = health_number(sp, "cancelled");
    reply r;
    struct curl_slist *headers = auth_headers(sp);
    CURL *curl = request_handle(sp, "/sdapi/v1/txt2img", "{\"prompt\":\"a\",\"steps\":8}", &r, headers);
    CURLM *multi = curl_multi_init();
    curl_multi_add_handle(multi, curl);
    int running = 1, step = 0;
    double start = now();
    while (running && step < 1 && now() - start < 30) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 50, NULL);
        reply p = http(sp, "/sdapi/v1/progress", NULL);
        cJSON *json = cJSON_Parse(p.body);
        step = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetObjectItem(json, "state"), "sampling_step"));
        cJSON_Delete(json);
        free(p.body);
    }
    CHECK(step >= 1, "the job never started");
    double disconnect = now();
    curl_multi_remove_handle(multi, curl);
    curl_easy_cleanup(curl); // closes the connection
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    free(r.body);
    bool stopped = false;
    // Cancelled (not completed) is the proof; the time bound only guards responsiveness, loosely,
    // since a step's compute time on a loaded machine (or under ASan) is not known.
    while (now() - disconnect < 15) {
        if (!health_number(sp, "busy") && health_number(sp, "cancelled") > cancelled_before) {
            stopped = true;
            break;
        }
        usleep(50000);
    }
    double took = now() - disconnect;
    fprintf(stderr, "disconnect -> job cancelled after %.2f s (a step takes %.2f s)\n", took, step_delay_ms / 1000.0);
    CHECK(stopped && took < 5, "the job went on after its client left (%.2f s)", took);
}

// /sdapi/v1/interrupt stops the running job; its client gets the partial image quickly.
static void check_interrupt(const server_process *sp) {
    reply r;
    struct curl_slist *headers = auth_headers(sp);
    CURL *curl = request_handle(sp, "/sdapi/v1/txt2img", "{\"prompt\":\"a\",\"steps\":8}", &r, headers);
    CURLM *multi = curl_multi_init();
    curl_multi_add_handle(multi, curl);
    int running = 1;
    double start = now();
    bool interrupted = false;
    while (running && now() - start < 30) {
        curl_multi_perform(multi, &running);
        curl_multi_poll(multi, NULL, 0, 50, NULL);
        if (!interrupted && health_number(sp, "busy")) {
            reply i = http(sp, "/sdapi/v1/interrupt", "{}");
            CHECK(i.status == 200, "/sdapi/v1/interrupt: %ld", i.status);
            free(i.body);
            interrupted = true;
        }
    }
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    // As A1111: the partial image, with the infotext and a warning saying so.
    CHECK(interrupted && status == 200 && r.body && strstr(r.body, "\\\"interrupted\\\":true") &&
              strstr(r.body, "Interrupted at step") && strstr(r.body, "\"images\":[\"iVBOR"),
          "interrupted job answered %ld: %.300s", status, r.body ? r.body : "");
    curl_multi_remove_handle(multi, curl);
    curl_easy_cleanup(curl);
    curl_multi_cleanup(multi);
    curl_slist_free_all(headers);
    free(r.body);
}

// ---- pure helpers --------------------------------------------------------------------------------------

static void check_base64_and_sizes(void) {
    uint8_t data[256];
    for (int i = 0; i < 256; i++) data[i] = (uint8_t)(i * 37 + 11);
    for (size_t n = 0; n <= 10; n++) {
        char *text = serve_base64_encode(data, n);
        uint8_t *back = NULL;
        size_t size = 0;
        CHECK(text && serve_base64_decode(text, strlen(text), 1024, &back, &size) && size == n &&
                  (n == 0 || memcmp(back, data, n) == 0),
              "base64 round trip of %zu bytes ('%s')", n, text ? text : "");
        free(text);
        free(back);
    }
    static const struct {
        const char *text;
        bool ok;
        const char *bytes;
    } cases[] = {
        {"TWFu", true, "Man"}, {"TWE=", true, "Ma"}, {"TWE", true, "Ma"}, {"TQ==", true, "M"},
        {"T W\nFu", true, "Man"}, {"data:image/png;base64,TWFu", true, "Man"}, {"T", false, NULL},
        {"TQ=", false, NULL}, {"TQ===", false, NULL}, {"TQ==TQ==", false, NULL}, {"TW-u", false, NULL},
        {"data:image/png,TWFu", false, NULL}, {"TWFu\x80", false, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *out = NULL;
        size_t size = 0;
        bool ok = serve_base64_decode(cases[i].text, strlen(cases[i].text), 1024, &out, &size);
        CHECK(ok == cases[i].ok && (!ok || (size == strlen(cases[i].bytes) && !memcmp(out, cases[i].bytes, size))),
              "base64 '%s': %s", cases[i].text, ok ? "accepted" : "rejected");
        CHECK(ok || out == NULL, "a rejected base64 left a buffer");
        free(out);
    }
    uint8_t *out = NULL;
    size_t size = 0;
    CHECK(!serve_base64_decode("TWFuTWFu", 8, 5, &out, &size), "base64 over max_out accepted");
    int w = 0, h = 0;
    CHECK(serve_parse_size("512x768", &w, &h) && w == 512 && h == 768, "size 512x768");
    const char *bad[] = {"", "512", "512x", "x512", "512X512", "-8x8", "0x8", "99999999x8", "8x8 ", "1.5x8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(!serve_parse_size(bad[i], &w, &h), "size '%s' accepted", bad[i]);
}

// Listening beyond this machine needs a key or an explicit flag; bad limits are usage errors.
static void check_command_line(const char *model) {
    static const struct {
        const char *args, *says;
    } cases[] = {
        {"--host 0.0.0.0", "--api-key"},
        {"--port 70000", "--port"},
        {"--queue 0", "--queue"},
        {"--api-key ''", "--api-key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[2048], out[1024] = "";
        snprintf(cmd, sizeof cmd, "'%s' serve --model '%s' --port 0 %s 2>&1", test_lcm_bin(), model, cases[i].args);
        int rc = test_run(cmd, out, sizeof out);
        CHECK(rc == 2 && strstr(out, cases[i].says), "lcm serve %s: exit %d, expected 2 and a message naming %s: %s",
              cases[i].args, rc, cases[i].says, out);
    }
}

// ---- server C: ControlNet ---------------------------------------------------------------------------

static char *file_base64(const char *path) {
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return NULL;
    static uint8_t data[1 << 22];
    size_t n = fread(data, 1, sizeof data, f);
    fclose(f);
    return serve_base64_encode(data, n);
}

// A txt2img body with one ControlNet unit; `unit_extra` is spliced into the unit ("" for none).
static char *control_body(const char *photo_b64, const char *module, double weight, const char *unit_extra) {
    size_t cap = strlen(photo_b64) + 1024;
    char *body = malloc(cap);
    snprintf(body, cap,
             "{\"prompt\":\"a house in the woods\",\"seed\":3,\"steps\":2,\"cfg_scale\":1,\"width\":128,"
             "\"height\":64,\"alwayson_scripts\":{\"controlnet\":{\"args\":[{\"enabled\":true,"
             "\"image\":\"%s\",\"module\":\"%s\",\"model\":\"whatever\",\"weight\":%g%s}]}}}",
             photo_b64, module, weight, unit_extra);
    return body;
}

// The decoded pixels of a base64 PNG equal those of the PNG file `path`.
static void check_same_as_file(const char *b64, const char *path, const char *what) {
    int w = 0, h = 0, fw = 0, fh = 0;
    uint8_t *got = b64 ? decode_image(b64, &w, &h, NULL) : NULL, *want = NULL;
    CHECK(got != NULL, "%s: no image", what);
    CHECK_OK(image_read_png(path, &want, &fw, &fh));
    if (got && want) {
        size_t differ = 0;
        if (w == fw && h == fh)
            for (size_t i = 0; i < (size_t)w * h * 3; i++) differ += got[i] != want[i];
        fprintf(stderr, "%s: %dx%d vs %dx%d, %zu values differ\n", what, w, h, fw, fh, differ);
        CHECK(w == fw && h == fh && differ == 0, "%s: the server's image differs from %s", what, path);
    }
    free(got);
    free(want);
}

// `lcm generate` with the server's model and the request's parameters; the control map goes to
// map_out.
static void cli_control(const control_fixtures *fx, const char *preprocess_args, double weight, const char *out,
                        const char *map_out) {
    char cmd[8192];
    test_path(cmd, sizeof cmd,
              "'%s' generate --quiet --model '%s' --controlnet '%s' %s%s%s --control-image '%s' %s "
              "--control-scale %g --control-output '%s' --seed 3 --steps 2 --guidance 1 --width 128 --height 64 "
              "--output '%s' --prompt 'a house in the woods'",
              test_lcm_bin(), fx->model, fx->controlnet, fx->lora[0] ? "--lora '" : "", fx->lora,
              fx->lora[0] ? "'" : "", fx->photo, preprocess_args, weight, map_out, out);
    int rc = test_run(cmd, NULL, 0);
    CHECK(rc == 0, "%s: exit %d", cmd, rc);
}

// The `data:` JSON of the page stream's result event (parsed), or NULL.
static cJSON *result_event(const char *stream) {
    const char *marker = "event: result\ndata: ";
    const char *at = stream ? strstr(stream, marker) : NULL;
    if (!at) return NULL;
    at += strlen(marker);
    const char *end = strchr(at, '\n');
    return cJSON_ParseWithLength(at, end ? (size_t)(end - at) : strlen(at));
}

static void check_controlnet_server(const server_process *sp, const control_fixtures *fx) {
    reply r = http(sp, "/api/capabilities", NULL);
    cJSON *caps = reply_json(&r, "capabilities");
    const cJSON *features = cJSON_GetObjectItem(caps, "features");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(features, "controlnet")) && cJSON_IsTrue(cJSON_GetObjectItem(features, "normalbae")) &&
              cJSON_IsTrue(cJSON_GetObjectItem(features, "lora")) == (fx->lora[0] != 0),
          "capabilities should report controlnet, normalbae and lora: %.400s", r.body);
    const char *caps_text = or_empty(r.body);
    CHECK(strstr(caps_text, "\"normal_bae\"") && strstr(caps_text, "\"canny\""),
          "capabilities should list the control modules: %.400s", caps_text);
    CHECK(!strstr(caps_text, "/"), "capabilities must not show server paths: %.400s", caps_text);
    cJSON_Delete(caps);
    free(r.body);

    char *photo = file_base64(fx->photo);
    if (!photo) return;
    char cli_out[1200], cli_map[1200];
    test_path(cli_out, sizeof cli_out, "%s/cn_cli.png", tmpdir);
    test_path(cli_map, sizeof cli_map, "%s/cn_cli_map.png", tmpdir);

    // normal_bae at processor_res 64, through the A1111 API and through the page.
    char preprocess[1400];
    test_path(preprocess, sizeof preprocess,
              "--control-preprocess normalbae --control-weights '%s' --detect-resolution 64 --image-resolution 64",
              fx->weights[0]);
    cli_control(fx, preprocess, 0.8, cli_out, cli_map);
    char *body = control_body(photo, "normal_bae", 0.8, ",\"processor_res\":64");
    r = http(sp, "/sdapi/v1/txt2img", body);
    CHECK(r.status == 200, "ControlNet txt2img: %ld %.300s", r.status, r.body);
    cJSON *json = reply_json(&r, "ControlNet txt2img");
    const cJSON *images = cJSON_GetObjectItem(json, "images");
    CHECK(cJSON_GetArraySize(images) == 2, "A1111 reply: the image and the detected map expected, got %d",
          cJSON_GetArraySize(images));
    check_same_as_file(cJSON_GetStringValue(cJSON_GetArrayItem(images, 0)), cli_out, "A1111 normal_bae image vs CLI");
    check_same_as_file(cJSON_GetStringValue(cJSON_GetArrayItem(images, 1)), cli_map, "A1111 normal_bae map vs CLI");
    const cJSON *params = cJSON_GetObjectItem(json, "parameters");
    CHECK(cJSON_GetObjectItem(params, "alwayson_scripts") != NULL, "parameters should echo the ControlNet unit");
    cJSON_Delete(json);
    free(r.body);

    r = http(sp, "/api/generate", body);
    CHECK(r.status == 200, "ControlNet /api/generate: %ld", r.status);
    cJSON *result = result_event(r.body);
    CHECK(result != NULL, "/api/generate: no result event: %.300s", r.body);
    check_same_as_file(cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(result, "images"), 0)), cli_out,
                       "page normal_bae image vs CLI");
    check_same_as_file(cJSON_GetStringValue(cJSON_GetObjectItem(result, "control_image")), cli_map,
                       "page normal_bae control map vs CLI");
    CHECK(!strcmp(or_empty(cJSON_GetStringValue(cJSON_GetObjectItem(result, "control_module"))), "normal_bae"),
          "result event should name the module");
    cJSON_Delete(result);
    free(r.body);
    free(body);

    // canny with the extension's threshold_a / threshold_b, old-style "input_image".
    cli_control(fx, "--control-preprocess canny --canny-low 40 --canny-high 90", 1.0, cli_out, cli_map);
    size_t cap = strlen(photo) + 512;
    body = malloc(cap);
    snprintf(body, cap,
             "{\"prompt\":\"a house in the woods\",\"seed\":3,\"steps\":2,\"cfg_scale\":1,\"width\":128,\"height\":64,"
             "\"alwayson_scripts\":{\"controlnet\":{\"args\":[{\"input_image\":\"data:image/png;base64,%s\","
             "\"module\":\"canny\",\"threshold_a\":40,\"threshold_b\":90}]}}}",
             photo);
    r = http(sp, "/sdapi/v1/txt2img", body);
    CHECK(r.status == 200, "canny txt2img: %ld %.300s", r.status, r.body);
    json = reply_json(&r, "canny txt2img");
    images = cJSON_GetObjectItem(json, "images");
    check_same_as_file(cJSON_GetStringValue(cJSON_GetArrayItem(images, 0)), cli_out, "A1111 canny image vs CLI");
    check_same_as_file(cJSON_GetStringValue(cJSON_GetArrayItem(images, 1)), cli_map, "A1111 canny map vs CLI");
    cJSON_Delete(json);
    free(r.body);
    free(body);

    // Errors name the field.
    expect_error(sp, "/sdapi/v1/txt2img", "{\"prompt\":\"a\",\"steps\":1}", 400,
                 "alwayson_scripts.controlnet.args[0].image");
    body = control_body(photo, "depth_midas", 1, "");
    expect_error(sp, "/sdapi/v1/txt2img", body, 400, "alwayson_scripts.controlnet.args[0].module");
    free(body);
    body = control_body(photo, "canny", 1, ",\"threshold_a\":\"high\"");
    expect_error(sp, "/sdapi/v1/txt2img", body, 400, "alwayson_scripts.controlnet.args[0].threshold_a");
    free(body);
    expect_error(sp, "/sdapi/v1/txt2img",
                 "{\"prompt\":\"a\",\"alwayson_scripts\":{\"controlnet\":{\"args\":[{\"image\":\"bm90IGEgcG5n\"}]}}}", 400,
                 "alwayson_scripts.controlnet.args[0].image");
    free(photo);
}

// A server without a ControlNet refuses a ControlNet unit (501, naming it) instead of ignoring it.
static void check_controlnet_absent(const server_process *sp, const control_fixtures *fx) {
    char *photo = file_base64(fx->photo);
    if (!photo) return;
    char *body = control_body(photo, "none", 1, "");
    expect_error(sp, "/sdapi/v1/txt2img", body, 501, "alwayson_scripts.controlnet.args[0].image");
    free(body);
    free(photo);
}

int main(void) {
    const char *root = test_fixtures();
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    check_base64_and_sizes();

    char model[1024];
    test_path(model, sizeof model, "%s/tiny-lcm", root);
    check_command_line(model);
    static control_fixtures fx;
    bool have_control = control_fixtures_find(root, &fx);
    server_process a;
    if (server_start(&a, model, "--threads 2")) {
        check_endpoints(&a);
        check_golden(&a, model);
        check_openai(&a);
        check_bad_requests(&a);
        check_optional_features(&a);
        check_event_stream(&a);
        if (have_control) check_controlnet_absent(&a, &fx);
        server_stop(&a);
    }
    cJSON_Delete(capabilities);

    int step_delay_ms = 300;
    char extra[256];
    snprintf(extra, sizeof extra, "--threads 2 --queue 1 --step-delay-ms %d --max-body 4096 --api-key test-key-123",
             step_delay_ms);
    server_process b;
    if (server_start(&b, model, extra)) {
        b.api_key = "test-key-123";
        check_auth_and_size(&b);
        check_queue_full(&b);
        check_disconnect_cancels(&b, step_delay_ms);
        check_interrupt(&b);
        server_stop(&b);
    }
    if (have_control) {
        char control_extra[4096], missing[1200];
        test_path(control_extra, sizeof control_extra, "--threads 2 --controlnet '%s' %s%s%s --control-weights '%s'",
                  fx.controlnet, fx.lora[0] ? "--lora '" : "", fx.lora, fx.lora[0] ? "'" : "", fx.weights[0]);
        server_process c;
        if (server_start(&c, fx.model, control_extra)) {
            check_controlnet_server(&c, &fx);
            server_stop(&c);
        }
        // Bad NormalBae weights stop the server before it listens, naming the file.
        test_path(missing, sizeof missing, "%s/no-such-scannet.pt", tmpdir);
        char cmd[8192], out[4096];
        test_path(cmd, sizeof cmd, "'%s' serve --model '%s' --port 0 --controlnet '%s' --control-weights '%s' 2>&1",
                  test_lcm_bin(), fx.model, fx.controlnet, missing);
        int rc = test_run(cmd, out, sizeof out);
        CHECK(rc == 2 && strstr(out, missing), "serve with missing NormalBae weights: exit %d: %s", rc, out);
    }
    curl_global_cleanup();
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
