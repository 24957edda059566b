// CLIP byte-level BPE tokenizer, matching transformers' slow CLIPTokenizer (v4.36) without ftfy.
//
// A prompt goes through these steps, in the order of the functions at the end of this file:
//  1. tokenize_text: a literal "<|startoftext|>" / "<|endoftext|>" in the prompt becomes its id
//     directly (transformers splits added tokens out before anything else).
//  2. tokenize_piece, the rest (transformers' BasicTokenizer fallback for ftfy): drop NUL, U+FFFD and
//     control characters, turn whitespace into ' ', put spaces around CJK ideographs, NFC, split on
//     whitespace, lower-case each word exactly as Python's str.lower() does.
//  3. match_pretoken: CLIP's regex
//        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//     (case-insensitive), written out by hand. No match crosses a space, so it runs word by word.
//  4. bpe_encode: each match as UTF-8 bytes, each byte one symbol, "</w>" appended to the last; then
//     the pair with the lowest merge rank is merged everywhere, until no pair has a rank.
//  5. clip_tokenize_bytes: [BOS] + first 75 ids + [EOS], padded to 77.
//
// Unicode data comes from utf8proc (Unicode 15.0), through clip_unicode.h. The reference ran Python
// 3.11, whose unicodedata is Unicode 14.0: characters added in 15.0 are unassigned (category Cn)
// there and therefore dropped as control characters, so clip_unicode.c drops them too. Apart from
// that, utf8proc's categories, simple lower-case mappings and NFC agree with Python 3.11 on every
// code point (checked exhaustively when this was written); the two places where str.lower() is not
// a simple per-character mapping (U+0130 and the final sigma) are handled in
// clip_python_lower_word.
#include "text/clip_tokenizer_internal.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "core/error.h"
#include "text/clip_unicode.h"

// ---------------------------------------------------------------------------------------------
// Per-call working memory

typedef struct bpe_candidate {
    int32_t rank;
    int32_t left, right;               // start byte of the two symbols
    int32_t left_symbol, right_symbol; // what they were when the pair was seen
    int32_t merged_symbol;
} bpe_candidate;

typedef struct tokenize_work {
    uint32_t *decoded, *cleaned, *normalized, *lowered;
    size_t decoded_cap, cleaned_cap, normalized_cap, lowered_cap;
    unsigned char *bytes;
    size_t bytes_cap;
    // BPE over one pre-token of n bytes: position i holds the symbol starting at byte i, or -1 once
    // merged into its left neighbour; next/prev link the live positions.
    int32_t *symbol, *next, *prev;
    size_t symbol_cap, next_cap, prev_cap;
    bpe_candidate *heap, *batch; // heap ordered by (rank, left); up to 3n and n entries
    size_t heap_count, heap_cap, batch_cap;
} tokenize_work;

static void work_free(tokenize_work *w) {
    free(w->decoded);
    free(w->cleaned);
    free(w->normalized);
    free(w->lowered);
    free(w->bytes);
    free(w->symbol);
    free(w->next);
    free(w->prev);
    free(w->heap);
    free(w->batch);
}

// Grows *array to hold at least `count` elements of `size` bytes.
static lcm_status reserve(void *array_ptr, size_t *cap, size_t count, size_t size) {
    if (count <= *cap) return LCM_OK;
    void **array = array_ptr;
    void *grown = realloc(*array, count * size);
    if (!grown) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory (%zu bytes)", count * size);
    *array = grown;
    *cap = count;
    return LCM_OK;
}

typedef struct token_sink {
    int32_t kept[CLIP_MAX_LENGTH - 2]; // the first 75 ids; the rest are only counted
    size_t count;
} token_sink;

static void sink_push(token_sink *sink, int32_t id) {
    if (sink->count < CLIP_MAX_LENGTH - 2) sink->kept[sink->count] = id;
    sink->count++;
}

// ---------------------------------------------------------------------------------------------
// BPE

static bool candidate_before(const bpe_candidate *a, const bpe_candidate *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(tokenize_work *w, bpe_candidate c) {
    size_t i = w->heap_count++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!candidate_before(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
}

static bpe_candidate heap_pop(tokenize_work *w) {
    bpe_candidate top = w->heap[0];
    bpe_candidate last = w->heap[--w->heap_count];
    size_t i = 0, n = w->heap_count;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && candidate_before(&w->heap[child + 1], &w->heap[child])) child++;
        if (!candidate_before(&w->heap[child], &last)) break;
        w->heap[i] = w->heap[child];
        i = child;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

// Queues the pair starting at `left` if merges.txt has a rule for it.
static void consider_pair(const clip_tokenizer *t, tokenize_work *w, int32_t left, int32_t n) {
    if (left < 0) return;
    int32_t right = w->next[left];
    if (right >= n) return;
    const merge_rule *rule = clip_merge_find(&t->merges, w->symbol[left], w->symbol[right]);
    if (!rule) return;
    heap_push(w, (bpe_candidate){rule->rank, left, right, rule->left, rule->right, rule->merged});
}

// Python's CLIPTokenizer.bpe repeatedly takes the lowest-ranked pair present and merges all its
// occurrences in one left-to-right pass. The heap gives the same result in O(n log n): a batch is
// every queued candidate of that rank, taken from the heap before any merge so that pairs the batch
// creates wait for the next round, and applied left to right, skipping those an earlier merge in
// the batch has broken (the "aaa" -> "aa a" overlap).
static lcm_status bpe_encode(const clip_tokenizer *t, const unsigned char *bytes, size_t len,
                             tokenize_work *w, token_sink *sink) {
    int32_t n = (int32_t)len; // len <= a few times CLIP_MAX_TEXT_BYTES
    LCM_TRY(reserve(&w->symbol, &w->symbol_cap, len, sizeof *w->symbol));
    LCM_TRY(reserve(&w->next, &w->next_cap, len, sizeof *w->next));
    LCM_TRY(reserve(&w->prev, &w->prev_cap, len, sizeof *w->prev));
    LCM_TRY(reserve(&w->heap, &w->heap_cap, 3 * len, sizeof *w->heap));
    LCM_TRY(reserve(&w->batch, &w->batch_cap, len, sizeof *w->batch));

    for (int32_t i = 0; i < n; i++) {
        w->symbol[i] = i + 1 < n ? t->byte_symbol[bytes[i]] : t->byte_end_symbol[bytes[i]];
        w->next[i] = i + 1;
        w->prev[i] = i - 1;
    }
    w->heap_count = 0;
    for (int32_t i = 0; i + 1 < n; i++) consider_pair(t, w, i, n);

    while (w->heap_count > 0) {
        int32_t rank = w->heap[0].rank;
        size_t batch_count = 0;
        while (w->heap_count > 0 && w->heap[0].rank == rank) w->batch[batch_count++] = heap_pop(w);
        for (size_t i = 0; i < batch_count; i++) {
            const bpe_candidate *c = &w->batch[i];
            bool still_there = w->symbol[c->left] == c->left_symbol && w->next[c->left] == c->right &&
                               w->symbol[c->right] == c->right_symbol;
            if (!still_there) continue;
            w->symbol[c->left] = c->merged_symbol;
            w->symbol[c->right] = -1;
            w->next[c->left] = w->next[c->right];
            if (w->next[c->left] < n) w->prev[w->next[c->left]] = c->left;
            consider_pair(t, w, w->prev[c->left], n);
            consider_pair(t, w, c->left, n);
        }
    }
    for (int32_t i = 0; i < n; i = w->next[i]) {
        int32_t id = t->symbols.token_id[w->symbol[i]];
        sink_push(sink, id >= 0 ? id : t->eos_id); // unknown -> unk_token, which is <|endoftext|>
    }
    return LCM_OK;
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenization (CLIP's regex) and normalization (BasicTokenizer)

// Whether word[0..n) starts with `literal` under the regex module's case-insensitive matching. The
// literals are lower-case ASCII; besides its upper case, 's' also matches U+017F LATIN SMALL LETTER
// LONG S (simple case folding), which survives lower-casing.
static bool starts_with_folded(const uint32_t *word, size_t n, const char *literal) {
    size_t i = 0;
    for (; literal[i]; i++) {
        uint32_t want = (unsigned char)literal[i];
        if (i >= n) return false;
        uint32_t cp = word[i];
        bool same =
            cp == want || (want >= 'a' && want <= 'z' && cp == want - 32) || (want == 's' && cp == 0x17F);
        if (!same) return false;
    }
    return true;
}

// Characters no alternative of the regex matches, so re.findall skips them: whitespace, and U+0345
// COMBINING GREEK YPOGEGRAMMENI. The latter is a quirk of the `regex` module under IGNORECASE: it
// case-folds to iota, so the negated class [^\s\p{L}\p{N}] refuses it, while [\p{L}] does not take
// it either. (Checked over every code point: it is the only character the flag moves.)
static bool regex_skips(uint32_t cp) { return clip_is_python_space(cp) || cp == 0x345; }

// Length in code points of the regex match at word[0], 0 where regex_skips(word[0]).
static size_t match_pretoken(const uint32_t *word, size_t n) {
    static const char *const literals[] = {CLIP_BOS_TEXT, CLIP_EOS_TEXT, "'s",  "'t", "'re",
                                           "'ve",         "'m",          "'ll", "'d"};
    for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++)
        if (starts_with_folded(word, n, literals[i])) return strlen(literals[i]);
    size_t k = 1;
    if (clip_is_letter(word[0])) {
        while (k < n && clip_is_letter(word[k])) k++;
        return k;
    }
    if (clip_is_number(word[0])) return 1;
    if (regex_skips(word[0])) return 0;
    while (k < n && !regex_skips(word[k]) && !clip_is_letter(word[k]) && !clip_is_number(word[k])) k++;
    return k;
}

static lcm_status tokenize_word(const clip_tokenizer *t, const uint32_t *word, size_t n, tokenize_work *w,
                                token_sink *sink) {
    LCM_TRY(reserve(&w->bytes, &w->bytes_cap, 4 * n, 1));
    size_t pos = 0;
    while (pos < n) {
        size_t match = match_pretoken(word + pos, n - pos);
        if (match == 0) {
            pos++;
            continue;
        }
        size_t len = 0;
        for (size_t i = 0; i < match; i++) len += clip_utf8_encode(word[pos + i], w->bytes + len);
        pos += match;
        // transformers' bpe() cache is seeded with the two special tokens: a lower-cased
        // "<|ENDOFTEXT|>" in the prompt still becomes the special token.
        if (len == strlen(CLIP_BOS_TEXT) && !memcmp(w->bytes, CLIP_BOS_TEXT, len))
            sink_push(sink, t->bos_id);
        else if (len == strlen(CLIP_EOS_TEXT) && !memcmp(w->bytes, CLIP_EOS_TEXT, len))
            sink_push(sink, t->eos_id);
        else
            LCM_TRY(bpe_encode(t, w->bytes, len, w, sink));
    }
    return LCM_OK;
}

// One stretch of the prompt between special tokens, through BasicTokenizer then the regex and BPE.
static lcm_status tokenize_piece(const clip_tokenizer *t, const unsigned char *text, size_t len,
                                 tokenize_work *w, token_sink *sink) {
    if (len == 0) return LCM_OK;
    LCM_TRY(reserve(&w->decoded, &w->decoded_cap, len, sizeof *w->decoded));
    size_t count = 0;
    for (size_t pos = 0; pos < len; count++) pos += clip_utf8_decode(text + pos, len - pos, &w->decoded[count]);

    // _clean_text and _tokenize_chinese_chars: each code point becomes at most 3.
    LCM_TRY(reserve(&w->cleaned, &w->cleaned_cap, 3 * count, sizeof *w->cleaned));
    size_t cleaned = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t cp = w->decoded[i];
        if (cp == 0 || cp == 0xFFFD || clip_is_control(cp)) continue;
        if (clip_is_bert_whitespace(cp)) {
            w->cleaned[cleaned++] = ' ';
        } else if (clip_is_cjk_ideograph(cp)) {
            w->cleaned[cleaned++] = ' ';
            w->cleaned[cleaned++] = cp;
            w->cleaned[cleaned++] = ' ';
        } else {
            w->cleaned[cleaned++] = cp;
        }
    }
    if (cleaned == 0) return LCM_OK;

    // NFC, through utf8proc's UTF-8 interface.
    LCM_TRY(reserve(&w->bytes, &w->bytes_cap, 4 * cleaned, 1));
    size_t nbytes = 0;
    for (size_t i = 0; i < cleaned; i++) nbytes += clip_utf8_encode(w->cleaned[i], w->bytes + nbytes);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t nfc_len = utf8proc_map(w->bytes, (utf8proc_ssize_t)nbytes, &nfc,
                                            (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (nfc_len < 0)
        return lcm_fail(nfc_len == UTF8PROC_ERROR_NOMEM ? LCM_ERR_OUT_OF_MEMORY : LCM_ERR_INTERNAL,
                        "tokenizer: NFC normalization failed: %s", utf8proc_errmsg(nfc_len));
    lcm_status st = reserve(&w->normalized, &w->normalized_cap, (size_t)nfc_len, sizeof *w->normalized);
    size_t normalized = 0;
    for (size_t pos = 0; st == LCM_OK && pos < (size_t)nfc_len; normalized++) {
        size_t step = clip_utf8_decode(nfc + pos, (size_t)nfc_len - pos, &w->normalized[normalized]);
        if (step == 0) st = lcm_fail(LCM_ERR_INTERNAL, "tokenizer: NFC produced invalid UTF-8");
        pos += step;
    }
    free(nfc);
    LCM_TRY(st);

    // whitespace_tokenize, lower-case each word; the regex then runs word by word.
    size_t pos = 0;
    while (pos < normalized) {
        while (pos < normalized && clip_is_python_space(w->normalized[pos])) pos++;
        size_t start = pos;
        while (pos < normalized && !clip_is_python_space(w->normalized[pos])) pos++;
        if (pos == start) break;
        LCM_TRY(reserve(&w->lowered, &w->lowered_cap, 2 * (pos - start), sizeof *w->lowered));
        size_t lowered = clip_python_lower_word(w->normalized + start, pos - start, w->lowered);
        LCM_TRY(tokenize_word(t, w->lowered, lowered, w, sink));
    }
    return LCM_OK;
}

// Splits out literal special tokens (transformers' added-tokens trie) and tokenizes the rest.
static lcm_status tokenize_text(const clip_tokenizer *t, const unsigned char *text, size_t len,
                                tokenize_work *w, token_sink *sink) {
    static const char *const specials[] = {CLIP_BOS_TEXT, CLIP_EOS_TEXT};
    size_t piece_start = 0, pos = 0;
    while (pos < len) {
        int which = -1;
        if (text[pos] == '<')
            for (int s = 0; s < 2; s++)
                if (len - pos >= strlen(specials[s]) && !memcmp(text + pos, specials[s], strlen(specials[s])))
                    which = s;
        if (which < 0) {
            pos++;
            continue;
        }
        LCM_TRY(tokenize_piece(t, text + piece_start, pos - piece_start, w, sink));
        sink_push(sink, which == 0 ? t->bos_id : t->eos_id);
        pos += strlen(specials[which]);
        piece_start = pos;
    }
    return tokenize_piece(t, text + piece_start, len - piece_start, w, sink);
}

lcm_status clip_tokenize_bytes(const clip_tokenizer *t, const char *utf8_text, size_t len,
                               int32_t ids[CLIP_MAX_LENGTH], int *n_untruncated) {
    if (!t || !ids || (!utf8_text && len > 0))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "clip_tokenize: NULL argument");
    if (len > CLIP_MAX_TEXT_BYTES)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "prompt is %zu bytes, more than the %d accepted", len,
                        CLIP_MAX_TEXT_BYTES);
    const unsigned char *text = (const unsigned char *)utf8_text;
    size_t bad = clip_utf8_first_invalid(text, len);
    if (bad < len)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "prompt is not valid UTF-8: byte 0x%02X at byte offset %zu",
                        text[bad], bad);

    token_sink sink = {.count = 0};
    tokenize_work work = {0};
    lcm_status st = tokenize_text(t, text, len, &work, &sink);
    work_free(&work);
    if (st != LCM_OK) return st;

    size_t kept = sink.count < CLIP_MAX_LENGTH - 2 ? sink.count : CLIP_MAX_LENGTH - 2;
    ids[0] = t->bos_id;
    memcpy(ids + 1, sink.kept, kept * sizeof *ids);
    ids[kept + 1] = t->eos_id;
    for (size_t i = kept + 2; i < CLIP_MAX_LENGTH; i++) ids[i] = t->pad_id;
    if (n_untruncated) *n_untruncated = (int)(sink.count + 2);
    return LCM_OK;
}

lcm_status clip_tokenize(const clip_tokenizer *t, const char *utf8_text, int32_t ids[CLIP_MAX_LENGTH],
                         int *n_untruncated) {
    if (!utf8_text) return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "clip_tokenize: NULL prompt");
    return clip_tokenize_bytes(t, utf8_text, strlen(utf8_text), ids, n_untruncated);
}
