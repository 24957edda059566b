// The A1111 infotext: writing it, reading it back (ours and A1111's), and the one a generation
// gets. See the infotext section of include/lcm.h for the format; api/infotext.c is its public face.
//
// The reader follows A1111's parse_generation_parameters (modules/infotext_utils.py): the text is
// stripped and split into lines; the last line is the settings line only when the key/value rule
//   \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)
// matches there at least three times (re.findall). That rule is matched here by hand (no regex
// library): its key part can only end at a ':' and its quoted part only at an unescaped '"', so it
// never needs to backtrack, and a position where it fails is skipped one byte at a time, as
// findall does. Python's \w and \s are Unicode-aware; here every byte >= 0x80 (UTF-8 letters)
// counts as a word character and \s is ASCII whitespace.
#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "lcm.h"
#include "pipeline/infotext.h"
#include "pipeline/model_hashes.h"
#include "pipeline/pipeline.h"

#define INFOTEXT_MAX_BYTES ((size_t)1 << 20)

// ---- building and writing ---------------------------------------------------------------------

static bool is_word(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }
static bool is_key_char(unsigned char c) { return is_word(c) || c == ' ' || c == '-' || c == '/'; }
static bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f); }

static bool valid_key(const char *key) {
    size_t n = strlen(key);
    if (n < 2 || !is_word((unsigned char)key[0])) return false;
    for (size_t i = 1; i < n; i++)
        if (!is_key_char((unsigned char)key[i])) return false;
    return true;
}

lcm_status infotext_new(const char *prompt, const char *negative_prompt, lcm_infotext **out) {
    *out = NULL;
    lcm_infotext *info = calloc(1, sizeof *info);
    if (info) info->prompt = strdup(prompt ? prompt : "");
    if (info) info->negative_prompt = strdup(negative_prompt ? negative_prompt : "");
    if (!info || !info->prompt || !info->negative_prompt) {
        infotext_free(info);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory");
    }
    *out = info;
    return LCM_OK;
}

void infotext_free(lcm_infotext *info) {
    if (!info) return;
    for (int i = 0; i < info->field_count; i++) {
        free(info->fields[i].key);
        free(info->fields[i].value);
    }
    free(info->fields);
    free(info->prompt);
    free(info->negative_prompt);
    free(info);
}

const char *infotext_get(const lcm_infotext *info, const char *key) {
    if (!info || !key) return NULL;
    for (int i = 0; i < info->field_count; i++)
        if (!strcmp(info->fields[i].key, key)) return info->fields[i].value;
    return NULL;
}

// Sets a field from `len` bytes of value (not necessarily NUL-terminated); no key check.
static lcm_status set_field(lcm_infotext *info, const char *key, size_t key_len, const char *value,
                            size_t value_len) {
    char *v = strndup(value, value_len);
    if (!v) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory");
    for (int i = 0; i < info->field_count; i++)
        if (strlen(info->fields[i].key) == key_len && !memcmp(info->fields[i].key, key, key_len)) {
            free(info->fields[i].value);
            info->fields[i].value = v;
            return LCM_OK;
        }
    char *k = strndup(key, key_len);
    lcm_infotext_field *grown = k ? realloc(info->fields, (size_t)(info->field_count + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(k);
        free(v);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory");
    }
    info->fields = grown;
    info->fields[info->field_count++] = (lcm_infotext_field){k, v};
    return LCM_OK;
}

lcm_status infotext_set(lcm_infotext *info, const char *key, const char *value) {
    if (!valid_key(key))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "infotext key '%.80s': expected a letter, digit or '_' followed by at least one "
                        "of those, ' ', '-' or '/' (A1111's key rule)", key);
    return set_field(info, key, strlen(key), value, strlen(value));
}

// printf into a field.
static lcm_status set_fieldf(lcm_infotext *info, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static lcm_status set_fieldf(lcm_infotext *info, const char *key, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return infotext_set(info, key, buf);
}

// A growing string.
typedef struct text_buffer {
    char *data;
    size_t len, cap;
    bool failed;
} text_buffer;

static void append(text_buffer *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void append_str(text_buffer *b, const char *s) { append(b, s, strlen(s)); }

// A1111's quote(): values with ',', ':' or a newline become JSON strings (json.dumps with
// ensure_ascii=False: only '"', '\' and control characters are escaped). We also quote a value that
// starts with '"', which A1111's reader would otherwise take for a quoted one.
static void append_value(text_buffer *b, const char *v) {
    if (!strpbrk(v, ",:\n") && v[0] != '"') {
        append_str(b, v);
        return;
    }
    append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': append(b, "\\\"", 2); break;
        case '\\': append(b, "\\\\", 2); break;
        case '\n': append(b, "\\n", 2); break;
        case '\r': append(b, "\\r", 2); break;
        case '\t': append(b, "\\t", 2); break;
        case '\b': append(b, "\\b", 2); break;
        case '\f': append(b, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", *p);
                append_str(b, esc);
            } else {
                append(b, (const char *)p, 1);
            }
        }
    }
    append(b, "\"", 1);
}

lcm_status infotext_format(const lcm_infotext *info, char **text) {
    *text = NULL;
    text_buffer b = {0};
    append_str(&b, info->prompt);
    if (info->negative_prompt[0]) {
        append_str(&b, "\nNegative prompt: ");
        append_str(&b, info->negative_prompt);
    }
    append(&b, "\n", 1);
    for (int i = 0; i < info->field_count; i++) {
        if (i) append(&b, ", ", 2);
        append_str(&b, info->fields[i].key);
        append(&b, ": ", 2);
        append_value(&b, info->fields[i].value);
    }
    append(&b, "", 0);
    if (b.failed) {
        free(b.data);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory");
    }
    // A1111 strips the whole text (an empty prompt leaves no blank first line).
    size_t start = 0, end = b.len;
    while (start < end && is_space((unsigned char)b.data[start])) start++;
    while (end > start && is_space((unsigned char)b.data[end - 1])) end--;
    memmove(b.data, b.data + start, end - start);
    b.data[end - start] = '\0';
    *text = b.data;
    return LCM_OK;
}

// ---- reading ----------------------------------------------------------------------------------

typedef struct param_match {
    size_t key, key_len, value, value_len, end;
} param_match;

// A1111's key/value rule anchored at `pos` of s[0..len) (see the top of the file). On failure
// *resume is where the next attempt can start: every start before it fails the same way (it lies
// in the same run of spaces or key characters), which keeps a hostile line linear, not quadratic.
static bool match_param(const char *s, size_t len, size_t pos, param_match *m, size_t *resume) {
    size_t i = pos;
    while (i < len && is_space((unsigned char)s[i])) i++;
    *resume = i > pos ? i : pos + 1;
    if (i >= len || !is_word((unsigned char)s[i])) return false;
    size_t key = i++, run = i;
    while (i < len && is_key_char((unsigned char)s[i])) i++;
    *resume = i > run ? i : pos + 1;
    if (i == run || i >= len || s[i] != ':') return false;
    m->key = key;
    m->key_len = i - key;
    i++;
    while (i < len && is_space((unsigned char)s[i])) i++;
    if (i < len && s[i] == '"') { // "(?:\\.|[^\\"])+" followed by ',' or the end
        size_t q = i + 1, units = 0;
        for (;;) {
            if (q + 1 < len && s[q] == '\\' && s[q + 1] != '\n') q += 2;
            else if (q < len && s[q] != '\\' && s[q] != '"') q++;
            else break;
            units++;
        }
        if (units > 0 && q < len && s[q] == '"' && (q + 1 == len || s[q + 1] == ',')) {
            m->value = i;
            m->value_len = q + 1 - i;
            m->end = q + 1 < len ? q + 2 : q + 1;
            return true;
        }
    }
    size_t v = i; // [^,]* followed by ',' or the end (always matches)
    while (v < len && s[v] != ',') v++;
    m->value = i;
    m->value_len = v - i;
    m->end = v < len ? v + 1 : v;
    return true;
}

// re.findall over s[0..len): calls `each` for every match (when non-NULL); returns the count.
static int find_params(const char *s, size_t len, lcm_infotext *into, lcm_status *st) {
    int count = 0;
    size_t pos = 0;
    while (pos < len) {
        param_match m;
        size_t resume = pos + 1;
        if (!match_param(s, len, pos, &m, &resume)) {
            pos = resume;
            continue;
        }
        count++;
        pos = m.end;
        if (!into || *st != LCM_OK || m.value_len == 0) continue; // A1111 skips empty values
        const char *v = s + m.value;
        if (m.value_len >= 2 && v[0] == '"' && v[m.value_len - 1] == '"') {
            cJSON *decoded = cJSON_ParseWithLength(v, m.value_len);
            if (cJSON_IsString(decoded)) {
                *st = set_field(into, s + m.key, m.key_len, decoded->valuestring, strlen(decoded->valuestring));
                cJSON_Delete(decoded);
                continue;
            }
            cJSON_Delete(decoded); // not valid JSON: kept as written, as A1111's unquote does
        }
        *st = set_field(into, s + m.key, m.key_len, v, m.value_len);
    }
    return count;
}

// Appends line[0..len) stripped to *acc, "\n"-joined as A1111 joins prompt lines.
static void add_line(text_buffer *acc, const char *line, size_t len) {
    while (len && is_space((unsigned char)*line)) line++, len--;
    while (len && is_space((unsigned char)line[len - 1])) len--;
    if (acc->len) append(acc, "\n", 1);
    append(acc, line, len);
}

lcm_status infotext_parse(const char *text, lcm_infotext **out) {
    *out = NULL;
    size_t len = strnlen(text, INFOTEXT_MAX_BYTES + 1);
    if (len > INFOTEXT_MAX_BYTES)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "infotext: longer than %zu bytes", INFOTEXT_MAX_BYTES);
    lcm_infotext *info;
    LCM_TRY(infotext_new(NULL, NULL, &info));
    // x.strip().split("\n"); the last line is the settings line if the rule matches it 3+ times.
    size_t start = 0, end = len;
    while (start < end && is_space((unsigned char)text[start])) start++;
    while (end > start && is_space((unsigned char)text[end - 1])) end--;
    const char *s = text + start;
    size_t n = end - start;
    const char *last_nl = n ? memrchr(s, '\n', n) : NULL;
    size_t last = last_nl ? (size_t)(last_nl - s) + 1 : 0; // start of the last line
    lcm_status st = LCM_OK;
    size_t prompt_end = n;
    if (find_params(s + last, n - last, NULL, &st) >= 3) prompt_end = last;
    bool negative = false;
    text_buffer prompt = {0}, negative_prompt = {0};
    for (size_t i = 0; i < prompt_end;) {
        const char *nl = memchr(s + i, '\n', prompt_end - i);
        size_t line_end = nl ? (size_t)(nl - s) : prompt_end;
        const char *line = s + i;
        size_t line_len = line_end - i;
        while (line_len && is_space((unsigned char)*line)) line++, line_len--;
        if (line_len >= 16 && !memcmp(line, "Negative prompt:", 16)) {
            negative = true;
            line += 16;
            line_len -= 16;
        }
        add_line(negative ? &negative_prompt : &prompt, line, line_len);
        i = line_end + 1;
        if (!nl) break;
    }
    if (prompt.failed || negative_prompt.failed) {
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory");
    } else {
        if (prompt.data) free(info->prompt), info->prompt = prompt.data, prompt.data = NULL;
        if (negative_prompt.data)
            free(info->negative_prompt), info->negative_prompt = negative_prompt.data, negative_prompt.data = NULL;
    }
    free(prompt.data);
    free(negative_prompt.data);
    if (st == LCM_OK && prompt_end < n) find_params(s + last, n - last, info, &st);
    if (st != LCM_OK) {
        infotext_free(info);
        return st;
    }
    *out = info;
    return LCM_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcasecmp(s + n - m, suffix);
}

// Hashes the model and adapter files once per pipeline.
static lcm_status compute_hashes(lcm_pipeline *p) {
    if (p->hashes_done) return LCM_OK;
    if (p->model_file) {
        lcm_model_hashes h;
        LCM_TRY(model_hashes_of_file(p->model_file, &h));
        memcpy(p->model_short_hash, h.short_hash, sizeof p->model_short_hash);
    }
    for (int i = 0; i < p->adapter_count; i++) LCM_TRY(lora_file_hash(p->adapters[i].path, p->adapters[i].sha256));
    p->hashes_done = true;
    return LCM_OK;
}

// The adapter's name as A1111 mentions it: the file name without folder and extension, without
// ':' and ',' (which "Lora hashes" cannot carry).
static void adapter_name(const char *path, char *out, size_t size) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base), k = 0;
    for (size_t i = 0; i < n && k + 1 < size; i++)
        if (base[i] != ':' && base[i] != ',') out[k++] = base[i];
    out[k] = '\0';
}

lcm_status pipeline_infotext(lcm_pipeline *p, const lcm_request *r, int index, int width, int height,
                             const char *model_name, lcm_infotext **out) {
    *out = NULL;
    LCM_TRY(compute_hashes(p));
    // The prompt as an A1111 user would have typed it: the adapters as <lora:NAME:SCALE> tags.
    text_buffer prompt = {0};
    append_str(&prompt, r->prompt ? r->prompt : "");
    char name[256], tag[320];
    for (int i = 0; i < p->adapter_count; i++) {
        adapter_name(p->adapters[i].path, name, sizeof name);
        snprintf(tag, sizeof tag, "%s<lora:%s:%g>", prompt.len ? " " : "", name, (double)p->adapters[i].scale);
        append_str(&prompt, tag);
    }
    append(&prompt, "", 0);
    if (prompt.failed) {
        free(prompt.data);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory");
    }
    lcm_infotext *info = NULL;
    lcm_status st = infotext_new(prompt.data, r->negative_prompt, &info);
    free(prompt.data);
    if (st != LCM_OK) return st;
    if (st == LCM_OK) st = set_fieldf(info, "Steps", "%d", r->steps);
    if (st == LCM_OK) st = infotext_set(info, "Sampler", "LCM");
    if (st == LCM_OK) st = set_fieldf(info, "CFG scale", "%g", (double)r->guidance_scale);
    if (st == LCM_OK) st = set_fieldf(info, "Seed", "%llu", (unsigned long long)r->seed);
    if (st == LCM_OK) st = set_fieldf(info, "Size", "%dx%d", width, height);
    if (st == LCM_OK && p->model_short_hash[0]) st = infotext_set(info, "Model hash", p->model_short_hash);
    if (st == LCM_OK && model_name) { // A1111 writes a checkpoint's file name without extension
        size_t n = strlen(model_name);
        const char *extensions[] = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"};
        for (size_t e = 0; e < sizeof extensions / sizeof *extensions; e++)
            if (ends_with(model_name, extensions[e]) && n > strlen(extensions[e])) n -= strlen(extensions[e]);
        char *name = strndup(model_name, n);
        st = name ? infotext_set(info, "Model", name) : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory");
        free(name);
    }
    if (st == LCM_OK && r->init_image) st = set_fieldf(info, "Denoising strength", "%g", (double)r->strength);
    if (st == LCM_OK && r->batch > 1) st = set_fieldf(info, "Batch size", "%d", r->batch);
    if (st == LCM_OK && r->batch > 1) st = set_fieldf(info, "Batch pos", "%d", index);
    if (st == LCM_OK && p->adapter_count > 0) {
        text_buffer hashes = {0};
        for (int i = 0; i < p->adapter_count; i++) {
            adapter_name(p->adapters[i].path, name, sizeof name);
            snprintf(tag, sizeof tag, "%s%s: %.12s", i ? ", " : "", name, p->adapters[i].sha256);
            append_str(&hashes, tag);
        }
        append(&hashes, "", 0);
        st = hashes.failed ? lcm_fail(LCM_ERR_OUT_OF_MEMORY, "infotext: out of memory")
                           : infotext_set(info, "Lora hashes", hashes.data);
        free(hashes.data);
    }
    if (st == LCM_OK) st = set_fieldf(info, "Version", "lcm.c %s", LCM_VERSION_STRING);
    if (st != LCM_OK) {
        infotext_free(info);
        return st;
    }
    *out = info;
    return LCM_OK;
}
