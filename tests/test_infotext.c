// The A1111 infotext (src/pipeline/infotext.c, include/lcm.h), held against A1111's documented
// format by a second, independent reader written here: glibc's POSIX regex engine running A1111's
// own key/value rule
//   \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)
// (as ERE: no non-capturing groups; for this pattern leftmost-longest and Perl's leftmost-first
// choose the same matches: the quoted branch is only longer when the [^,]* branch stops at a comma
// inside the quotes), with parse_generation_parameters' line rules and cJSON for JSON unquoting.
//  - writer -> both readers, for awkward prompts and values (commas, colons, quotes, backslashes,
//    newlines, UTF-8, an empty prompt, a prompt line that looks like settings);
//  - A1111's own infotexts (the docstring example; a 1.x one with quoted ControlNet / Lora hashes /
//    Version fields; a text with no settings line) through our reader;
//  - hashes against independent computations with coreutils (sha256sum of the fixture files, the
//    1 MiB-offset legacy slice via tail/head, the LoRA's bytes after its safetensors header);
//  - `lcm generate` with a LoRA: the PNG's `parameters` chunk read back, Model hash = sha256sum of
//    the UNet weights file (diffusers folder) or of the file itself (a single-file checkpoint made
//    with `lcm convert`), Lora hashes / <lora:...> / Version as A1111 writes them;
//  - `lcm serve`: POST /sdapi/v1/png-info on the server's own txt2img PNG, on an A1111 PNG made
//    here, on a JPEG (no infotext: ""), and bad requests (clear 400s naming the field / format).
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "golden.h"
#include "io/image.h"
#include "serve_process.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-infotext-XXXXXX";

// ---- the independent reader --------------------------------------------------------------------

typedef struct kv {
    char key[128];
    char *value;
} kv;

typedef struct reference_parse {
    char *prompt, *negative;
    kv fields[64];
    int count;
} reference_parse;

static regex_t param_rule;

// re.findall(A1111's rule, line): fills `out` (when given), returns the number of matches.
static int reference_findall(const char *line, reference_parse *out) {
    int n = 0;
    const char *p = line;
    regmatch_t m[4];
    while (*p && regexec(&param_rule, p, 4, m, 0) == 0) {
        if (m[0].rm_eo == 0) break;
        n++;
        if (out && out->count < 64) {
            int key_len = (int)(m[1].rm_eo - m[1].rm_so), value_len = (int)(m[2].rm_eo - m[2].rm_so);
            char *value = strndup(p + m[2].rm_so, (size_t)value_len);
            if (value_len > 0 && value[0] == '"' && value[value_len - 1] == '"') {
                cJSON *j = cJSON_Parse(value);
                if (cJSON_IsString(j)) {
                    free(value);
                    value = strdup(j->valuestring);
                }
                cJSON_Delete(j);
            }
            if (value_len == 0) { // A1111: v[0] raises on an empty value, the field is skipped
                free(value);
            } else {
                kv *f = &out->fields[out->count++];
                snprintf(f->key, sizeof f->key, "%.*s", key_len, p + m[1].rm_so);
                f->value = value;
            }
        }
        p += m[0].rm_eo;
    }
    return n;
}

static char *strip(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = '\0';
    return s;
}

static void join(char **acc, const char *line) {
    size_t old = strlen(*acc), n = strlen(line);
    *acc = realloc(*acc, old + n + 2);
    if (old) (*acc)[old++] = '\n';
    memcpy(*acc + old, line, n + 1);
}

// parse_generation_parameters: *lines, lastline = x.strip().split("\n"); ...
static void reference_parse_text(const char *text, reference_parse *out) {
    memset(out, 0, sizeof *out);
    out->prompt = strdup("");
    out->negative = strdup("");
    char *copy = strdup(text), *s = strip(copy);
    char *last = strrchr(s, '\n');
    char *lastline = last ? last + 1 : s;
    bool settings = reference_findall(lastline, NULL) >= 3;
    if (settings) {
        if (last) *last = '\0';
        else s = (char *)"";
    }
    bool negative = false;
    for (char *line = s, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (!*s) break;
        char *l = strip(line);
        if (!strncmp(l, "Negative prompt:", 16)) {
            negative = true;
            l = strip(l + 16);
        }
        join(negative ? &out->negative : &out->prompt, l);
    }
    if (settings) reference_findall(lastline, out);
    free(copy);
}

static void reference_free(reference_parse *r) {
    free(r->prompt);
    free(r->negative);
    for (int i = 0; i < r->count; i++) free(r->fields[i].value);
}

static const char *reference_get(const reference_parse *r, const char *key) {
    const char *v = NULL;
    for (int i = 0; i < r->count; i++)
        if (!strcmp(r->fields[i].key, key)) v = r->fields[i].value; // the last one wins (a dict)
    return v;
}

// Both readers must agree with each other and with what was written.
static void check_both_readers(const char *text, const lcm_infotext *want, const char *what) {
    reference_parse ref;
    reference_parse_text(text, &ref);
    lcm_infotext *got = NULL;
    CHECK_OK(lcm_infotext_parse(text, &got));
    if (!got) return reference_free(&ref);
    CHECK(!strcmp(ref.prompt, want->prompt), "%s: A1111's rules read prompt '%s', expected '%s'", what, ref.prompt,
          want->prompt);
    CHECK(!strcmp(got->prompt, want->prompt), "%s: lcm_infotext_parse read prompt '%s', expected '%s'", what,
          got->prompt, want->prompt);
    CHECK(!strcmp(ref.negative, want->negative_prompt) && !strcmp(got->negative_prompt, want->negative_prompt),
          "%s: negative prompt '%s' / '%s', expected '%s'", what, ref.negative, got->negative_prompt,
          want->negative_prompt);
    int nonempty = 0;
    for (int i = 0; i < want->field_count; i++) {
        const char *k = want->fields[i].key, *v = want->fields[i].value;
        if (!v[0]) continue;
        nonempty++;
        const char *r = reference_get(&ref, k), *g = lcm_infotext_get(got, k);
        CHECK(r && !strcmp(r, v), "%s: A1111's rules read %s = '%s', expected '%s'", what, k, r ? r : "(none)", v);
        CHECK(g && !strcmp(g, v), "%s: lcm_infotext_parse read %s = '%s', expected '%s'", what, k, g ? g : "(none)", v);
    }
    CHECK(ref.count == nonempty && got->field_count == nonempty, "%s: %d / %d fields read, %d written", what,
          ref.count, got->field_count, nonempty);
    lcm_infotext_free(got);
    reference_free(&ref);
}

// ---- writer against both readers ------------------------------------------------------------------

static void writer_cases(void) {
    struct {
        const char *prompt, *negative;
        const char *kv[16]; // key, value, ..., NULL
    } cases[] = {
        {"a photo of a cat", NULL, {"Steps", "4", "Sampler", "LCM", "CFG scale", "8.5", "Seed", "42", NULL}},
        {"a cat, sitting: on a mat\nsecond line, with commas", "blurry, low quality",
         {"Steps", "2", "Model", "my model, v2: final", "Size", "512x768", "ControlNet",
          "Module: canny, Model: control_v11p, Weight: 1", NULL}},
        {"quotes \"inside\" and a back\\slash", "",
         {"Note", "she said \"hi\", then \\left", "Multi", "line one\nline two", "Unicode", "caf\xc3\xa9, \xe6\x97\xa5\xe6\x9c\xac",
          "Lora hashes", "lcm-lora: 0123456789ab, other: ba9876543210", NULL}},
        {"", NULL, {"Steps", "1", "Seed", "0", "Size", "8x8", "Version", "lcm.c 0.1.0", NULL}},
        // A prompt whose last line looks like a settings line: ours still follows it.
        {"Steps: 9, Seed: 9, Size: 9x9", NULL, {"Steps", "4", "Seed", "1", "Size", "64x64", NULL}},
        {"starts with a quote", NULL, {"Title", "\"quoted\" start", "Empty", "", "Dash-key/slash", "x", "Steps", "3", NULL}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        lcm_infotext *info = NULL;
        CHECK_OK(lcm_infotext_new(cases[c].prompt, cases[c].negative, &info));
        if (!info) continue;
        for (int i = 0; cases[c].kv[i]; i += 2) CHECK_OK(lcm_infotext_set(info, cases[c].kv[i], cases[c].kv[i + 1]));
        char *text = NULL;
        CHECK_OK(lcm_infotext_format(info, &text));
        char what[64];
        snprintf(what, sizeof what, "writer case %zu", c);
        if (text) {
            fprintf(stderr, "%s:\n%s\n", what, text);
            check_both_readers(text, info, what);
        }
        free(text);
        lcm_infotext_free(info);
    }
    // Keys outside A1111's rule are refused, naming the key.
    lcm_infotext *info = NULL;
    CHECK_OK(lcm_infotext_new("p", NULL, &info));
    const char *bad_keys[] = {"", "S", "Bad:key", "Comma,key", " lead", "-dash"};
    for (size_t i = 0; info && i < sizeof bad_keys / sizeof *bad_keys; i++) {
        lcm_status st = lcm_infotext_set(info, bad_keys[i], "v");
        CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), "key"), "key '%s' accepted (%s)", bad_keys[i],
              lcm_last_error());
    }
    // Setting a key again replaces its value in place.
    CHECK_OK(lcm_infotext_set(info, "Steps", "4"));
    CHECK_OK(lcm_infotext_set(info, "Seed", "1"));
    CHECK_OK(lcm_infotext_set(info, "Steps", "8"));
    CHECK(info && info->field_count == 2 && !strcmp(info->fields[0].value, "8"), "set did not replace Steps");
    lcm_infotext_free(info);
}

// ---- A1111's own infotexts through our reader ---------------------------------------------------------

static void a1111_cases(void) {
    // The example of A1111's parse_generation_parameters docstring.
    const char *doc =
        "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse "
        "Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
        "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn "
        "face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b";
    lcm_infotext *info = NULL;
    CHECK_OK(lcm_infotext_parse(doc, &info));
    if (info) {
        CHECK(!strncmp(info->prompt, "girl with an artist's beret", 27) && strstr(info->prompt, "intricate"),
              "docstring prompt: %s", info->prompt);
        CHECK(!strncmp(info->negative_prompt, "ugly, fat", 9) && strstr(info->negative_prompt, "messy drawing"),
              "docstring negative prompt: %s", info->negative_prompt);
        const char *want[][2] = {{"Steps", "20"}, {"Sampler", "Euler a"}, {"CFG scale", "7"}, {"Seed", "965400086"},
                                 {"Size", "512x512"}, {"Model hash", "45dee52b"}};
        for (size_t i = 0; i < 6; i++) {
            const char *v = lcm_infotext_get(info, want[i][0]);
            CHECK(v && !strcmp(v, want[i][1]), "docstring %s = '%s', expected '%s'", want[i][0], v ? v : "(none)",
                  want[i][1]);
        }
        CHECK(info->field_count == 6, "docstring: %d fields", info->field_count);
    }
    lcm_infotext_free(info);
    // A1111 1.x with extensions: quoted values with commas and colons, "Lora hashes", "Version",
    // <lora:...> in the prompt, a multi-line prompt.
    const char *modern =
        "masterpiece, <lora:add_detail:0.5>\nsecond prompt line\n"
        "Negative prompt: lowres\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 123, Size: 768x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.4, "
        "ControlNet 0: \"Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: "
        "Crop and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0\", "
        "Lora hashes: \"add_detail: 7c6bad76eb54\", TI hashes: \"easynegative: c74b4e810b03\", Version: v1.7.0";
    CHECK_OK(lcm_infotext_parse(modern, &info));
    if (info) {
        CHECK(!strcmp(info->prompt, "masterpiece, <lora:add_detail:0.5>\nsecond prompt line"), "modern prompt: %s",
              info->prompt);
        CHECK(!strcmp(info->negative_prompt, "lowres"), "modern negative: %s", info->negative_prompt);
        const char *want[][2] = {
            {"Schedule type", "Karras"},
            {"Model hash", "6ce0161689"},
            {"ControlNet 0", "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop "
                             "and Resize, Processor Res: 512, Threshold A: 100.0, Threshold B: 200.0"},
            {"Lora hashes", "add_detail: 7c6bad76eb54"},
            {"TI hashes", "easynegative: c74b4e810b03"},
            {"Version", "v1.7.0"}};
        for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
            const char *v = lcm_infotext_get(info, want[i][0]);
            CHECK(v && !strcmp(v, want[i][1]), "modern %s = '%s', expected '%s'", want[i][0], v ? v : "(none)",
                  want[i][1]);
        }
        CHECK(info->field_count == 13, "modern: %d fields, expected 13", info->field_count);
    }
    lcm_infotext_free(info);
    // A last line with fewer than three settings belongs to the prompt; so does everything of a
    // text without settings.
    CHECK_OK(lcm_infotext_parse("just a prompt\nStyle: noir, Mood: dark", &info));
    CHECK(info && !strcmp(info->prompt, "just a prompt\nStyle: noir, Mood: dark") && info->field_count == 0,
          "two-setting last line: prompt '%s', %d fields", info ? info->prompt : "?", info ? info->field_count : -1);
    lcm_infotext_free(info);
    CHECK_OK(lcm_infotext_parse("", &info));
    CHECK(info && !info->prompt[0] && !info->negative_prompt[0] && info->field_count == 0, "empty text");
    lcm_infotext_free(info);
    // Unterminated quotes and stray escapes never crash; 1 MiB is the limit.
    CHECK_OK(lcm_infotext_parse("p\nA: \"unterminated, B: 2, C: \"x\\\", D: \"\\", &info));
    lcm_infotext_free(info);
    // Hostile texts of the largest size accepted stay linear (a quadratic reader would take
    // minutes): one long key-like run, spaces before a non-key character, a million newlines,
    // and unterminated quotes on the settings line.
    {
        size_t n = (size_t)1 << 20;
        char *hostile = malloc(n + 1);
        const char *shapes[] = {"a", " ", "\n", "k: \"\\\" "};
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            size_t len = strlen(shapes[k]);
            for (size_t i = 0; i < n; i++) hostile[i] = shapes[k][i % len];
            memcpy(hostile, "p\nA: 1, B: 2, C: 3, ", 20); // a settings line starts after "p\n"
            hostile[n - 1] = '!';
            hostile[n] = '\0';
            CHECK_OK(lcm_infotext_parse(hostile, &info));
            lcm_infotext_free(info);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
        fprintf(stderr, "4 hostile 1 MiB infotexts parsed in %.2f s\n", seconds);
        CHECK(seconds < 30, "hostile infotexts took %.1f s: not linear", seconds);
        free(hostile);
    }
    size_t big = ((size_t)1 << 20) + 10;
    char *huge = malloc(big + 1);
    memset(huge, 'a', big);
    huge[big] = '\0';
    CHECK(lcm_infotext_parse(huge, &info) == LCM_ERR_INVALID_ARGUMENT && info == NULL, "an oversized infotext was read");
    free(huge);
}

// ---- hashes ------------------------------------------------------------------------------------------

// The first `n` hex digits coreutils' sha256sum gives for the shell pipeline `source` (a command
// writing the bytes to stdout).
static void sha256sum_of(const char *source, size_t n, char *out) {
    char cmd[4096], line[256] = "";
    snprintf(cmd, sizeof cmd, "%s | sha256sum", source);
    int rc = test_run(cmd, line, sizeof line);
    CHECK(rc == 0 && strlen(line) >= 64, "'%s' failed: %s", cmd, line);
    snprintf(out, n + 1, "%s", line);
}

static void check_hashes(const char *unet_file, const char *lora_file) {
    lcm_model_hashes h;
    CHECK_OK(lcm_model_hashes_of_file(unet_file, &h));
    char want[65], source[2048];
    snprintf(source, sizeof source, "cat '%s'", unet_file);
    sha256sum_of(source, 64, want);
    CHECK(!strcmp(h.sha256, want) && !strncmp(h.short_hash, want, 10) && strlen(h.short_hash) == 10,
          "%s: sha256 %s / short %s, sha256sum says %s", unet_file, h.sha256, h.short_hash, want);
    // Legacy: 0x10000 bytes at offset 0x100000 (tail -c +N is 1-based).
    snprintf(source, sizeof source, "tail -c +%d '%s' | head -c %d", 0x100000 + 1, unet_file, 0x10000);
    sha256sum_of(source, 8, want);
    CHECK(!strcmp(h.legacy_hash, want), "%s: legacy hash %s, expected %s", unet_file, h.legacy_hash, want);
    fprintf(stderr, "%s: Model hash %s, legacy %s\n", unet_file, h.short_hash, h.legacy_hash);
    if (lora_file) {
        char hex[65];
        CHECK_OK(lcm_lora_hash(lora_file, hex));
        // The bytes after the 8-byte little-endian header length and the header.
        snprintf(source, sizeof source,
                 "n=$(head -c 8 '%s' | od -An -t u8 | tr -d ' '); tail -c +$((n + 9)) '%s'", lora_file, lora_file);
        sha256sum_of(source, 64, want);
        CHECK(!strcmp(hex, want), "%s: LoRA hash %s, expected %s", lora_file, hex, want);
    }
    CHECK(lcm_model_hashes_of_file("/nonexistent/model.safetensors", &h) == LCM_ERR_IO &&
              strstr(lcm_last_error(), "/nonexistent/model.safetensors"),
          "a missing model file: %s", lcm_last_error());
}

// ---- the CLI's PNG ----------------------------------------------------------------------------------------

static char *png_file_parameters(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *bytes = malloc((size_t)n);
    size_t got = fread(bytes, 1, (size_t)n, f);
    fclose(f);
    char *text = NULL;
    CHECK_OK(lcm_png_read_parameters(bytes, got, path, &text));
    free(bytes);
    return text;
}

static void check_cli(const char *model, const char *unet_file, const char *lora_file) {
    char out[1200], cmd[8192], output[4096] = "";
    test_path(out, sizeof out, "%s/cli.png", tmpdir);
    const char *prompt = "a cat, sitting: on a \"mat\"";
    snprintf(cmd, sizeof cmd, "'%s' generate --quiet --model '%s' %s%s%s --steps 2 --guidance 1 --seed 11 --width 64 "
             "--height 64 --batch 2 --output '%s' -- '%s' 2>&1",
             test_lcm_bin(), model, lora_file ? "--lora '" : "", lora_file ? lora_file : "", lora_file ? ":0.75'" : "",
             out, prompt);
    int rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 0, "exit %d: %s\n%s", rc, cmd, output);
    char path[1300];
    test_path(path, sizeof path, "%s/cli-1.png", tmpdir);
    char *text = rc == 0 ? png_file_parameters(path) : NULL;
    CHECK(text != NULL, "%s has no parameters chunk", path);
    if (!text) return;
    fprintf(stderr, "CLI infotext:\n%s\n", text);
    reference_parse ref;
    reference_parse_text(text, &ref);
    char want_hash[11], source[2048], want_prompt[512], version[64];
    snprintf(source, sizeof source, "cat '%s'", unet_file);
    sha256sum_of(source, 10, want_hash);
    const char *got_hash = reference_get(&ref, "Model hash");
    CHECK(got_hash && !strcmp(got_hash, want_hash), "Model hash %s, sha256sum of %s says %s", got_hash ? got_hash : "?",
          unet_file, want_hash);
    snprintf(version, sizeof version, "lcm.c %s", lcm_version());
    const char *v = reference_get(&ref, "Version");
    CHECK(v && !strcmp(v, version), "Version '%s', expected '%s'", v ? v : "?", version);
    v = reference_get(&ref, "Batch pos");
    CHECK(v && !strcmp(v, "1"), "Batch pos of the second image: %s", v ? v : "?");
    v = reference_get(&ref, "Seed");
    CHECK(v && !strcmp(v, "11"), "Seed %s", v ? v : "?");
    v = reference_get(&ref, "Model");
    CHECK(v && v[0] && !strstr(v, ".safetensors"), "Model '%s': A1111 writes the name without extension", v ? v : "?");
    if (lora_file) {
        // NAME = the file name without its extension; hash = first 12 digits of the addnet hash.
        const char *base = strrchr(lora_file, '/') ? strrchr(lora_file, '/') + 1 : lora_file;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(strrchr(base, '.') - base), base);
        snprintf(want_prompt, sizeof want_prompt, "%s <lora:%s:0.75>", prompt, name);
        char lora_hash[13], want_hashes[300];
        snprintf(source, sizeof source,
                 "n=$(head -c 8 '%s' | od -An -t u8 | tr -d ' '); tail -c +$((n + 9)) '%s'", lora_file, lora_file);
        sha256sum_of(source, 12, lora_hash);
        snprintf(want_hashes, sizeof want_hashes, "%s: %s", name, lora_hash);
        v = reference_get(&ref, "Lora hashes");
        CHECK(v && !strcmp(v, want_hashes), "Lora hashes '%s', expected '%s'", v ? v : "?", want_hashes);
        CHECK(strstr(text, "Lora hashes: \"") != NULL, "Lora hashes not quoted as A1111 writes it: %s", text);
    } else {
        snprintf(want_prompt, sizeof want_prompt, "%s", prompt);
    }
    CHECK(!strcmp(ref.prompt, want_prompt), "prompt read back '%s', expected '%s'", ref.prompt, want_prompt);
    reference_free(&ref);
    free(text);
}

// ---- the server's png-info ---------------------------------------------------------------------------------

typedef struct reply {
    char *body;
    size_t size;
    long status;
} reply;

static size_t on_body(char *data, size_t size, size_t n, void *user) {
    reply *r = user;
    char *grown = realloc(r->body, r->size + size * n + 1);
    if (!grown) return 0;
    memcpy(grown + r->size, data, size * n);
    r->size += size * n;
    grown[r->size] = '\0';
    r->body = grown;
    return size * n;
}

static reply post(const server_process *sp, const char *path, const char *body) {
    reply r = {0};
    char url[512];
    snprintf(url, sizeof url, "%s%s", sp->base, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    CURLcode rc = curl_easy_perform(curl);
    CHECK(rc == CURLE_OK, "POST %s: %s", path, curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_cleanup(curl);
    curl_slist_free_all(h);
    if (!r.body) r.body = strdup("");
    return r;
}

static char *base64(const uint8_t *data, size_t n) {
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *p = out;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < n ? (uint32_t)data[i + 1] << 8 : 0) | (i + 2 < n ? data[i + 2] : 0);
        *p++ = alphabet[v >> 18 & 63];
        *p++ = alphabet[v >> 12 & 63];
        *p++ = i + 1 < n ? alphabet[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? alphabet[v & 63] : '=';
    }
    *p = '\0';
    return out;
}

// POST /sdapi/v1/png-info with `image_b64`; returns the parsed 200 reply (NULL otherwise).
static cJSON *png_info(const server_process *sp, const char *image_b64) {
    size_t n = strlen(image_b64) + 64;
    char *body = malloc(n);
    snprintf(body, n, "{\"image\": \"%s\"}", image_b64);
    reply r = post(sp, "/sdapi/v1/png-info", body);
    free(body);
    CHECK(r.status == 200, "png-info: status %ld: %.300s", r.status, r.body);
    cJSON *json = r.status == 200 ? cJSON_Parse(r.body) : NULL;
    free(r.body);
    return json;
}

static const char *json_string(const cJSON *o, const char *key) {
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static void check_server(const char *model, const char *unet_file) {
    server_process sp;
    if (!server_start(&sp, model, "")) return;
    // The server's own PNG.
    reply r = post(&sp, "/sdapi/v1/txt2img",
                   "{\"prompt\": \"a lighthouse, at night: stormy\", \"steps\": 1, \"seed\": 5, \"width\": 64, "
                   "\"height\": 64}");
    CHECK(r.status == 200, "txt2img: %ld %.300s", r.status, r.body);
    cJSON *gen = cJSON_Parse(r.body);
    const char *image = cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(gen, "images"), 0));
    CHECK(image != NULL, "txt2img returned no image");
    cJSON *info = image ? png_info(&sp, image) : NULL;
    if (info) {
        const char *text = json_string(info, "info");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(info, "parameters");
        char want_hash[11], source[2048];
        snprintf(source, sizeof source, "cat '%s'", unet_file);
        sha256sum_of(source, 10, want_hash);
        CHECK(text && strstr(text, "Model hash: ") && strstr(text, want_hash), "png-info info: %s", text ? text : "?");
        CHECK(json_string(params, "Prompt") && !strcmp(json_string(params, "Prompt"), "a lighthouse, at night: stormy"),
              "png-info Prompt: %s", json_string(params, "Prompt"));
        CHECK(json_string(params, "Model hash") && !strcmp(json_string(params, "Model hash"), want_hash),
              "png-info Model hash: %s", json_string(params, "Model hash"));
        CHECK(json_string(params, "Size-1") && !strcmp(json_string(params, "Size-1"), "64") &&
                  json_string(params, "Size-2") && !strcmp(json_string(params, "Size-2"), "64"),
              "png-info Size-1/Size-2");
        CHECK(json_string(params, "Seed") && !strcmp(json_string(params, "Seed"), "5"), "png-info Seed");
        CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(info, "items")), "png-info items");
        fprintf(stderr, "png-info of the server's PNG: %s\n", text ? text : "?");
    }
    cJSON_Delete(info);
    cJSON_Delete(gen);
    free(r.body);

    // An A1111 PNG (what A1111 writes: an iTXt when not ASCII), as a data URL.
    const char *a1111 = "caf\xc3\xa9 at dawn\nNegative prompt: rain\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                        "Seed: 1, Size: 512x768, Model hash: 6ce0161689, Lora hashes: \"x: 0123456789ab\", Version: v1.7.0";
    uint8_t rgb[8 * 8 * 3] = {0};
    const char *key = "parameters";
    void *png = NULL;
    size_t png_size = 0;
    CHECK_OK(image_encode_png(rgb, 8, 8, &key, &a1111, 1, &png, &png_size));
    char *b64 = base64(png, png_size);
    size_t url_len = strlen(b64) + 32;
    char *url = malloc(url_len);
    snprintf(url, url_len, "data:image/png;base64,%s", b64);
    info = png_info(&sp, url);
    if (info) {
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(info, "parameters");
        CHECK(json_string(info, "info") && !strcmp(json_string(info, "info"), a1111), "A1111 PNG info: %s",
              json_string(info, "info"));
        CHECK(json_string(params, "Prompt") && !strcmp(json_string(params, "Prompt"), "caf\xc3\xa9 at dawn") &&
                  json_string(params, "Negative prompt") && !strcmp(json_string(params, "Negative prompt"), "rain") &&
                  json_string(params, "Lora hashes") && !strcmp(json_string(params, "Lora hashes"), "x: 0123456789ab") &&
                  json_string(params, "Size-2") && !strcmp(json_string(params, "Size-2"), "768"),
              "A1111 PNG parameters wrong");
    }
    cJSON_Delete(info);
    free(url);
    free(b64);
    free(png);
    // A PNG without parameters, and a JPEG: info "".
    CHECK_OK(image_encode_png(rgb, 8, 8, NULL, NULL, 0, &png, &png_size));
    b64 = base64(png, png_size);
    info = png_info(&sp, b64);
    CHECK(info && json_string(info, "info") && !json_string(info, "info")[0], "a PNG without parameters");
    cJSON_Delete(info);
    free(b64);
    free(png);
    // A real JPEG: it carries no infotext we read (A1111 would look at its EXIF comment).
    {
        unsigned long jpeg_size = 0;
        unsigned char *jpeg = test_encode_jpeg(rgb, 8, 8, 3, 75, false, &jpeg_size);
        b64 = base64(jpeg, jpeg_size);
        info = png_info(&sp, b64);
        CHECK(info && json_string(info, "info") && !json_string(info, "info")[0], "a JPEG: info should be empty");
        cJSON_Delete(info);
        free(b64);
        free(jpeg);
    }
    const uint8_t jpeg_head[] = {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0};
    b64 = base64(jpeg_head, sizeof jpeg_head);
    size_t bl = strlen(b64) + 32;
    char *body = malloc(bl);
    snprintf(body, bl, "{\"image\": \"%s\"}", b64);
    r = post(&sp, "/sdapi/v1/png-info", body);
    fprintf(stderr, "png-info of a JPEG header only: %ld %s\n", r.status, r.body);
    CHECK(r.status == 400 && strstr(r.body, "JPEG"), "a broken JPEG: %ld %s", r.status, r.body);
    free(r.body);
    free(body);
    free(b64);
    // Bad requests: clear 400s naming the field.
    const char *bad[][2] = {{"{}", "image"}, {"{\"image\": 5}", "image"}, {"{\"image\": \"!!!\"}", "image"},
                            {"{\"image\": \"R0lGODlhAQABAAAAACw=\"}", "GIF"}, {"not json", "JSON"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        r = post(&sp, "/sdapi/v1/png-info", bad[i][0]);
        CHECK(r.status == 400 && strstr(r.body, bad[i][1]) && strstr(r.body, "\"error\""), "png-info %s: %ld %s",
              bad[i][0], r.status, r.body);
        fprintf(stderr, "png-info %s -> %ld %s\n", bad[i][0], r.status, r.body);
        free(r.body);
    }
    server_stop(&sp);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    CHECK(regcomp(&param_rule, "[[:space:]]*([[:alnum:]_][[:alnum:]_ /-]+):[[:space:]]*(\"(\\\\.|[^\\\\\"])+\"|[^,]*)(,|$)",
                  REG_EXTENDED) == 0,
          "regcomp");
    writer_cases();
    a1111_cases();

    // Models from the fixture set: an LCM folder, and an SD folder with a LoRA.
    const char *root = test_fixtures();
    char lcm_dir[1024] = "", sd_dir[1024] = "";
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], cls[128];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (!strcmp(cls, "LatentConsistencyModelPipeline") && !*lcm_dir) snprintf(lcm_dir, sizeof lcm_dir, "%s", dir);
        if (!strcmp(cls, "StableDiffusionPipeline") && !*sd_dir) snprintf(sd_dir, sizeof sd_dir, "%s", dir);
    }
    if (d) closedir(d);
    CHECK(*lcm_dir, "no LCM model folder in %s", root);
    char lora[1400] = "", unet_file[1200];
    if (*sd_dir) { // the first LoRA in kohya format under loras/
        char loras[1200];
        test_path(loras, sizeof loras, "%s/loras/lcm-lora-kohya", sd_dir);
        char **names = NULL;
        int n = access(loras, R_OK) == 0 ? test_list_files(loras, "", ".safetensors", &names) : 0;
        if (n > 0) test_path(lora, sizeof lora, "%s/%s", loras, names[0]);
        test_free_list(names, n);
        test_path(unet_file, sizeof unet_file, "%s/unet/diffusion_pytorch_model.safetensors", sd_dir);
        check_hashes(unet_file, *lora ? lora : NULL);
        check_cli(sd_dir, unet_file, *lora ? lora : NULL);
    }
    if (*lcm_dir) {
        // A diffusers folder's Model hash is its UNet weights file's (include/lcm.h).
        test_path(unet_file, sizeof unet_file, "%s/unet/diffusion_pytorch_model.safetensors", lcm_dir);
        check_hashes(unet_file, NULL);
        check_cli(lcm_dir, unet_file, NULL);
        // A single-file checkpoint (written here by `lcm convert`) is itself the hashed file, as in A1111.
        char single[1300], cmd[4096], output[2048] = "";
        test_path(single, sizeof single, "%s/single.safetensors", tmpdir);
        test_path(cmd, sizeof cmd, "'%s' convert --model '%s' --output '%s' 2>&1", test_lcm_bin(), lcm_dir, single);
        int rc = test_run(cmd, output, sizeof output);
        CHECK(rc == 0, "%s: exit %d: %s", cmd, rc, output);
        if (rc == 0) check_cli(single, single, NULL);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        check_server(lcm_dir, unet_file);
        curl_global_cleanup();
    }
    regfree(&param_rule);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
