// Reading a CLIP tokenizer: vocab.json, merges.txt and the pad token (text/clip_tokenizer.h), into
// the tables the tokenizer runs on.
#include "text/clip_tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "text/clip_unicode.h"

// Reads a whole file into a NUL-terminated buffer the caller frees.
static lcm_status read_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return lcm_fail(LCM_ERR_IO, "%s: cannot open", path);
    char *buf = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (size == cap) {
            if (cap >= CLIP_MAX_FILE_BYTES) {
                free(buf);
                fclose(f);
                return lcm_fail(LCM_ERR_FORMAT, "%s: larger than %zu MiB, not a tokenizer file", path,
                                CLIP_MAX_FILE_BYTES >> 20);
            }
            cap = cap ? cap * 2 : 1 << 16;
            char *grown = realloc(buf, cap + 1);
            if (!grown) {
                free(buf);
                fclose(f);
                return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory reading the file", path);
            }
            buf = grown;
        }
        size_t got = fread(buf + size, 1, cap - size, f);
        size += got;
        if (got == 0) break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return lcm_fail(LCM_ERR_IO, "%s: read error", path);
    }
    buf[size] = '\0';
    *data = buf;
    *len = size;
    return LCM_OK;
}

static lcm_status check_utf8_file(const char *path, const char *data, size_t len) {
    size_t bad = clip_utf8_first_invalid((const unsigned char *)data, len);
    if (bad == len) return LCM_OK;
    int line = 1;
    for (size_t i = 0; i < bad; i++) line += data[i] == '\n';
    return lcm_fail(LCM_ERR_FORMAT, "%s: line %d (byte offset %zu): invalid UTF-8", path, line, bad);
}

static lcm_status parse_json_text(const char *label, const char *data, size_t len, cJSON **root) {
    LCM_TRY(check_utf8_file(label, data, len));
    const char *error_at = NULL;
    *root = cJSON_ParseWithLengthOpts(data, len, &error_at, false);
    size_t error_offset = error_at ? (size_t)(error_at - data) : 0;
    int error_line = 1;
    for (size_t i = 0; i < error_offset && i < len; i++) error_line += data[i] == '\n';
    if (*root) return LCM_OK;
    if (len == 0 || error_offset + 1 >= len) // cJSON points at the last byte when the text stops early
        return lcm_fail(LCM_ERR_FORMAT, "%s: truncated JSON (%zu bytes)", label, len);
    return lcm_fail(LCM_ERR_FORMAT, "%s: line %d (byte offset %zu): invalid or truncated JSON", label,
                    error_line, error_offset);
}

static lcm_status load_vocab(clip_tokenizer *t, const clip_tokenizer_text *file) {
    const char *path = file->label;
    cJSON *root;
    LCM_TRY(parse_json_text(path, file->text, file->len, &root));
    lcm_status st = LCM_OK;
    if (!cJSON_IsObject(root)) {
        st = lcm_fail(LCM_ERR_FORMAT, "%s: expected a JSON object mapping token -> id", path);
        goto done;
    }
    int entry = 0;
    for (const cJSON *item = root->child; item; item = item->next, entry++) {
        double value = item->valuedouble;
        bool valid = cJSON_IsNumber(item) && value >= 0 && value < CLIP_MAX_VOCAB_SIZE &&
                     value == (double)(int32_t)value;
        if (!valid) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: entry %d ('%.40s'): id must be an integer in [0, %d)", path,
                          entry, item->string, CLIP_MAX_VOCAB_SIZE);
            goto done;
        }
        int32_t symbol;
        st = clip_symbol_intern(&t->symbols, item->string, strlen(item->string), &symbol);
        if (st != LCM_OK) goto done;
        t->symbols.token_id[symbol] = (int32_t)value; // a repeated key keeps its last id, as in Python
        if ((int32_t)value >= t->vocab_size) t->vocab_size = (int32_t)value + 1;
    }
    int32_t bos = clip_symbol_find(&t->symbols, CLIP_BOS_TEXT, strlen(CLIP_BOS_TEXT));
    int32_t eos = clip_symbol_find(&t->symbols, CLIP_EOS_TEXT, strlen(CLIP_EOS_TEXT));
    if (bos < 0 || eos < 0) {
        st = lcm_fail(LCM_ERR_FORMAT, "%s: the special token '%s' is missing", path,
                      bos < 0 ? CLIP_BOS_TEXT : CLIP_EOS_TEXT);
        goto done;
    }
    t->bos_id = t->symbols.token_id[bos];
    t->eos_id = t->symbols.token_id[eos];
done:
    cJSON_Delete(root);
    return st;
}

// Finds the next whitespace-separated field (Python str.split()) in line[*pos, len).
static bool next_field(const char *line, size_t len, size_t *pos, size_t *start, size_t *field_len) {
    const unsigned char *s = (const unsigned char *)line;
    uint32_t cp;
    size_t n;
    while (*pos < len && (n = clip_utf8_decode(s + *pos, len - *pos, &cp)) > 0 && clip_is_python_space(cp))
        *pos += n;
    if (*pos >= len) return false;
    *start = *pos;
    while (*pos < len && (n = clip_utf8_decode(s + *pos, len - *pos, &cp)) > 0 && !clip_is_python_space(cp))
        *pos += n;
    *field_len = *pos - *start;
    return true;
}

static lcm_status add_merge(clip_tokenizer *t, const char *left, size_t left_len, const char *right,
                            size_t right_len, int32_t rank) {
    merge_rule rule = {.rank = rank};
    LCM_TRY(clip_symbol_intern(&t->symbols, left, left_len, &rule.left));
    LCM_TRY(clip_symbol_intern(&t->symbols, right, right_len, &rule.right));
    char *joined = malloc(left_len + right_len);
    if (!joined) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    memcpy(joined, left, left_len);
    memcpy(joined + left_len, right, right_len);
    lcm_status st = clip_symbol_intern(&t->symbols, joined, left_len + right_len, &rule.merged);
    free(joined);
    if (st == LCM_OK) clip_merge_insert(&t->merges, rule);
    return st;
}

static lcm_status load_merges(clip_tokenizer *t, const clip_tokenizer_text *file) {
    const char *path = file->label, *data = file->text;
    size_t len = file->len;
    lcm_status st = check_utf8_file(path, data, len);
    if (st != LCM_OK) return st;

    // Python strips the whole text, then splits it on '\n' (a '\r' stays in the line, where
    // str.split() ignores it).
    size_t begin = 0, end = len;
    int line_number = 1;
    while (begin < end && (data[begin] == ' ' || (data[begin] >= '\t' && data[begin] <= '\r')))
        line_number += data[begin++] == '\n';
    while (end > begin && (data[end - 1] == ' ' || (data[end - 1] >= '\t' && data[end - 1] <= '\r'))) end--;

    int32_t rank = -1; // the first line is the "#version" header
    for (size_t line = begin; line <= end && rank < CLIP_MAX_MERGES; line_number++, rank++) {
        const char *newline = memchr(data + line, '\n', end - line);
        size_t line_len = (newline ? (size_t)(newline - data) : end) - line;
        if (rank >= 0) {
            size_t pos = 0, starts[3], lens[3];
            int fields = 0;
            while (fields < 3 && next_field(data + line, line_len, &pos, &starts[fields], &lens[fields]))
                fields++;
            if (fields != 2) {
                st = lcm_fail(LCM_ERR_FORMAT,
                              "%s: line %d: expected two symbols separated by a space, got '%.*s'", path,
                              line_number, (int)(line_len < 60 ? line_len : 60), data + line);
                goto done;
            }
            st = add_merge(t, data + line + starts[0], lens[0], data + line + starts[1], lens[1], rank);
            if (st != LCM_OK) goto done;
        }
        if (!newline) break;
        line += line_len + 1;
    }
done:
    return st;
}

// The pad token: "pad_token" of special_tokens_map.json, else of tokenizer_config.json (a string or
// {"content": ...}), else <|endoftext|>. CLIP pads with <|endoftext|>; SD 2.x tokenizers pad with "!".
static lcm_status load_pad_token(clip_tokenizer *t, const clip_tokenizer_texts *texts) {
    const clip_tokenizer_text *files[] = {texts->special_tokens_map, texts->tokenizer_config};
    t->pad_id = t->eos_id;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (!files[i]) continue;
        const char *path = files[i]->label;
        cJSON *root;
        LCM_TRY(parse_json_text(path, files[i]->text, files[i]->len, &root));
        const cJSON *pad = cJSON_GetObjectItemCaseSensitive(root, "pad_token");
        if (cJSON_IsObject(pad)) pad = cJSON_GetObjectItemCaseSensitive(pad, "content");
        lcm_status st = LCM_OK;
        if (cJSON_IsString(pad)) {
            int32_t symbol = clip_symbol_find(&t->symbols, pad->valuestring, strlen(pad->valuestring));
            if (symbol < 0 || t->symbols.token_id[symbol] < 0)
                st = lcm_fail(LCM_ERR_FORMAT, "%s: pad_token '%.40s' is not in vocab.json", path,
                              pad->valuestring);
            else
                t->pad_id = t->symbols.token_id[symbol];
        } else if (pad && !cJSON_IsNull(pad)) {
            st = lcm_fail(LCM_ERR_FORMAT, "%s: pad_token must be a string or {\"content\": string}", path);
        }
        bool found = pad != NULL;
        cJSON_Delete(root);
        if (st != LCM_OK || found) return st;
    }
    return LCM_OK;
}

lcm_status clip_tokenizer_open_texts(const clip_tokenizer_texts *texts, clip_tokenizer **out) {
    *out = NULL;
    if (!texts->vocab || !texts->merges)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "tokenizer: vocab.json and merges.txt are both needed");
    clip_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    lcm_status st = LCM_OK;
    t->merges.slot_count = 1 << 17; // > 2 * CLIP_MAX_MERGES, so at most 37% full
    t->merges.slots = malloc(t->merges.slot_count * sizeof *t->merges.slots);
    if (!t->merges.slots) {
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
        goto fail;
    }
    for (size_t i = 0; i < t->merges.slot_count; i++) t->merges.slots[i].left = -1;
    if ((st = load_vocab(t, texts->vocab)) != LCM_OK) goto fail;
    if ((st = load_merges(t, texts->merges)) != LCM_OK) goto fail;
    if ((st = load_pad_token(t, texts)) != LCM_OK) goto fail;

    for (int b = 0; b < 256; b++) {
        unsigned char text[8];
        size_t n = clip_utf8_encode(clip_byte_to_unicode((unsigned char)b), text);
        if ((st = clip_symbol_intern(&t->symbols, (const char *)text, n, &t->byte_symbol[b])) != LCM_OK) goto fail;
        memcpy(text + n, CLIP_WORD_END, 4);
        if ((st = clip_symbol_intern(&t->symbols, (const char *)text, n + 4, &t->byte_end_symbol[b])) != LCM_OK)
            goto fail;
    }
    *out = t;
    return LCM_OK;
fail:
    clip_tokenizer_close(t);
    return st;
}

// One file of the folder into `file` (its buffer owned by the caller); a missing optional file
// leaves file->text NULL.
static lcm_status read_tokenizer_file(const char *dir, const char *name, bool optional,
                                      char path[4096], clip_tokenizer_text *file) {
    *file = (clip_tokenizer_text){.label = path};
    if (snprintf(path, 4096, "%s/%s", dir, name) >= 4096)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "tokenizer: path too long: %s", dir);
    if (optional) {
        FILE *probe = fopen(path, "rb");
        if (!probe) return LCM_OK;
        fclose(probe);
    }
    char *data = NULL;
    LCM_TRY(read_file(path, &data, &file->len));
    file->text = data;
    return LCM_OK;
}

lcm_status clip_tokenizer_open(const char *dir, clip_tokenizer **out) {
    *out = NULL;
    static const char *const names[] = {"vocab.json", "merges.txt", "special_tokens_map.json",
                                        "tokenizer_config.json"};
    char paths[4][4096];
    clip_tokenizer_text files[4] = {0};
    lcm_status st = LCM_OK;
    for (int i = 0; i < 4 && st == LCM_OK; i++)
        st = read_tokenizer_file(dir, names[i], i >= 2, paths[i], &files[i]);
    if (st == LCM_OK) {
        clip_tokenizer_texts texts = {
            .vocab = &files[0],
            .merges = &files[1],
            .special_tokens_map = files[2].text ? &files[2] : NULL,
            .tokenizer_config = files[3].text ? &files[3] : NULL,
        };
        st = clip_tokenizer_open_texts(&texts, out);
    }
    for (int i = 0; i < 4; i++) free((char *)files[i].text);
    return st;
}

void clip_tokenizer_close(clip_tokenizer *t) {
    if (!t) return;
    clip_symbol_table_free(&t->symbols);
    free(t->merges.slots);
    free(t);
}

int32_t clip_tokenizer_vocab_size(const clip_tokenizer *t) { return t->vocab_size; }
