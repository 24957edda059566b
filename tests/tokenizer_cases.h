// Reads $LCM_FIXTURES/tokenizer_cases.jsonl for the tokenizer tests (test_tokenizer.c,
// test_cli_tokenize.c): one JSON object per line with `prompt`, `input_ids` (77 ints) and
// `n_tokens_untruncated`.
//
// cJSON keeps strings NUL-terminated, so a prompt holding "\u0000" would come back cut short; the
// prompt is therefore decoded here from the raw line (and checked against cJSON's reading).
// A malformed fixture file stops the test loudly: it must never look like a pass.
#ifndef LCM_TESTS_TOKENIZER_CASES_H
#define LCM_TESTS_TOKENIZER_CASES_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "text/clip_tokenizer.h"

typedef struct tokenizer_case {
    int line;     // 1-based line in the file
    char *prompt; // the exact bytes (may contain NUL), NUL-terminated as well
    size_t prompt_len;
    int32_t input_ids[CLIP_MAX_LENGTH];
    int n_untruncated;
} tokenizer_case;

static inline void tokenizer_cases_die(const char *path, int line, const char *why) {
    fprintf(stderr, "FATAL: %s: line %d: %s\n", path, line, why);
    exit(2);
}

static inline int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static inline int read_hex4(const char *s) {
    int value = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(s[i]);
        if (d < 0) return -1;
        value = value * 16 + d;
    }
    return value;
}

static inline size_t put_utf8(unsigned long cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) return out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), 2;
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// Decodes the JSON string whose opening quote is s[0]. Returns false when it is malformed.
static inline bool json_decode_string(const char *s, char **out, size_t *out_len) {
    if (*s++ != '"') return false;
    char *buf = malloc(strlen(s) + 1); // decoding never lengthens a JSON string
    if (!buf) return false;
    size_t len = 0;
    for (;;) {
        char c = *s++;
        if (c == '\0') break;
        if (c == '"') {
            buf[len] = '\0';
            *out = buf;
            *out_len = len;
            return true;
        }
        if (c != '\\') {
            buf[len++] = c;
            continue;
        }
        c = *s++;
        const char *simple = strchr("\"\\/bfnrt", c);
        if (c != '\0' && simple) {
            buf[len++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        if (c != 'u') break;
        int unit = read_hex4(s);
        if (unit < 0) break;
        s += 4;
        unsigned long cp = (unsigned long)unit;
        if (unit >= 0xD800 && unit <= 0xDBFF && s[0] == '\\' && s[1] == 'u') {
            int low = read_hex4(s + 2);
            if (low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + (((unsigned long)unit - 0xD800) << 10) + ((unsigned long)low - 0xDC00);
                s += 6;
            }
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) break; // a lone surrogate has no UTF-8 form
        len += put_utf8(cp, buf + len);
    }
    free(buf);
    return false;
}

// The raw `"prompt": "..."` member of a line. Inside a JSON string every '"' follows a backslash, so
// the text `"prompt"` followed by ':' can only be the key itself.
static inline bool find_prompt(const char *line, char **prompt, size_t *len) {
    for (const char *key = strstr(line, "\"prompt\""); key; key = strstr(key + 1, "\"prompt\"")) {
        const char *p = key + strlen("\"prompt\"");
        while (*p == ' ' || *p == '\t') p++;
        if (*p++ != ':') continue;
        while (*p == ' ' || *p == '\t') p++;
        return json_decode_string(p, prompt, len);
    }
    return false;
}

// Reads every case; returns the count and *cases (free with tokenizer_cases_free).
static inline int tokenizer_cases_read(const char *path, tokenizer_case **cases) {
    FILE *f = fopen(path, "rb");
    if (!f) tokenizer_cases_die(path, 0, "cannot open the fixture file");
    int count = 0, cap = 0, line_number = 0;
    tokenizer_case *list = NULL;
    char *line = NULL;
    size_t line_cap = 0;
    while (getline(&line, &line_cap, f) >= 0) {
        line_number++;
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        cJSON *root = cJSON_Parse(line);
        const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(root, "input_ids");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "n_tokens_untruncated");
        if (!cJSON_IsString(prompt) || !cJSON_IsArray(ids) || cJSON_GetArraySize(ids) != CLIP_MAX_LENGTH ||
            !cJSON_IsNumber(n))
            tokenizer_cases_die(path, line_number, "expected prompt, input_ids[77], n_tokens_untruncated");
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            list = realloc(list, (size_t)cap * sizeof *list);
            if (!list) tokenizer_cases_die(path, line_number, "out of memory");
        }
        tokenizer_case *c = &list[count++];
        c->line = line_number;
        c->n_untruncated = n->valueint;
        for (int i = 0; i < CLIP_MAX_LENGTH; i++) {
            const cJSON *id = cJSON_GetArrayItem(ids, i);
            if (!cJSON_IsNumber(id)) tokenizer_cases_die(path, line_number, "input_ids must be numbers");
            c->input_ids[i] = (int32_t)id->valueint;
        }
        if (!find_prompt(line, &c->prompt, &c->prompt_len) || strcmp(c->prompt, prompt->valuestring) != 0)
            tokenizer_cases_die(path, line_number, "cannot decode the prompt string");
        cJSON_Delete(root);
    }
    free(line);
    fclose(f);
    if (count == 0) tokenizer_cases_die(path, line_number, "no cases in the file");
    *cases = list;
    return count;
}

static inline void tokenizer_cases_free(tokenizer_case *cases, int count) {
    for (int i = 0; i < count; i++) free(cases[i].prompt);
    free(cases);
}

#endif
