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
// Unicode data comes from utf8proc (Unicode 15.0). The reference ran Python 3.11, whose unicodedata
// is Unicode 14.0: characters added in 15.0 are unassigned (category Cn) there and therefore dropped
// as control characters, so unicode15_additions[] drops them here too. Apart from that, utf8proc's
// categories, simple lower-case mappings and NFC agree with Python 3.11 on every code point (checked
// exhaustively when this was written); the two places where str.lower() is not a simple per-character
// mapping (U+0130 and the final sigma) are handled in python_lower_word.
#include "text/clip_tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <utf8proc.h>

#include "core/error.h"

#define CLIP_BOS_TEXT "<|startoftext|>"
#define CLIP_EOS_TEXT "<|endoftext|>"
#define CLIP_WORD_END "</w>"
// transformers keeps merges.txt lines [1, 49152 - 256 - 2 + 1): the first line (the "#version"
// header) is skipped whatever it says, and lines past the 48894th merge are ignored.
#define CLIP_MAX_MERGES (49152 - 256 - 2)
// Model files are untrusted: refuse absurd sizes before reading them into memory.
#define CLIP_MAX_FILE_BYTES ((size_t)256 << 20)

// ---------------------------------------------------------------------------------------------
// UTF-8

// Decodes the code point at s[0] (len bytes available). Returns its length in bytes, or 0 where the
// bytes are not well-formed UTF-8 (overlong forms, surrogates and values past U+10FFFF included):
// exactly what Python's strict decoder refuses.
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
    if (len == 0) return 0;
    unsigned char lead = s[0];
    if (lead < 0x80) {
        *cp = lead;
        return 1;
    }
    size_t need;
    uint32_t value, smallest;
    if ((lead & 0xE0) == 0xC0) {
        need = 2, value = lead & 0x1F, smallest = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
        need = 3, value = lead & 0x0F, smallest = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
        need = 4, value = lead & 0x07, smallest = 0x10000;
    } else {
        return 0;
    }
    if (len < need) return 0;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        value = (value << 6) | (s[i] & 0x3F);
    }
    if (value < smallest || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF)) return 0;
    *cp = value;
    return need;
}

static size_t utf8_encode(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

// Offset of the first byte that does not start well-formed UTF-8, or len when all of it is.
static size_t utf8_first_invalid(const unsigned char *s, size_t len) {
    size_t pos = 0;
    while (pos < len) {
        uint32_t cp;
        size_t n = utf8_decode(s + pos, len - pos, &cp);
        if (n == 0) return pos;
        pos += n;
    }
    return len;
}

// ---------------------------------------------------------------------------------------------
// Unicode properties, as the reference's Python 3.11 (Unicode 14) and `regex` module see them

// Code points assigned in Unicode 15.0, i.e. unassigned for Python 3.11's unicodedata.
static const struct unicode_range {
    uint32_t first, last;
} unicode15_additions[] = {
    {0x0CF3, 0x0CF3},   {0x0ECE, 0x0ECE},   {0x10EFD, 0x10EFF}, {0x1123F, 0x11241}, {0x11B00, 0x11B09},
    {0x11F00, 0x11F10}, {0x11F12, 0x11F3A}, {0x11F3E, 0x11F59}, {0x1342F, 0x1342F}, {0x13439, 0x13455},
    {0x1B132, 0x1B132}, {0x1B155, 0x1B155}, {0x1D2C0, 0x1D2D3}, {0x1DF25, 0x1DF2A}, {0x1E030, 0x1E06D},
    {0x1E08F, 0x1E08F}, {0x1E4D0, 0x1E4F9}, {0x1F6DC, 0x1F6DC}, {0x1F774, 0x1F776}, {0x1F77B, 0x1F77F},
    {0x1F7D9, 0x1F7D9}, {0x1FA75, 0x1FA77}, {0x1FA87, 0x1FA88}, {0x1FAAD, 0x1FAAF}, {0x1FABB, 0x1FABD},
    {0x1FABF, 0x1FABF}, {0x1FACE, 0x1FACF}, {0x1FADA, 0x1FADB}, {0x1FAE8, 0x1FAE8}, {0x1FAF7, 0x1FAF8},
    {0x2B739, 0x2B739}, {0x31350, 0x323AF},
};

static bool in_ranges(uint32_t cp, const struct unicode_range *ranges, size_t count) {
    size_t lo = 0, hi = count; // binary search over sorted, disjoint ranges
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < ranges[mid].first)
            hi = mid;
        else if (cp > ranges[mid].last)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static utf8proc_category_t category(uint32_t cp) {
    if (in_ranges(cp, unicode15_additions, sizeof unicode15_additions / sizeof unicode15_additions[0]))
        return UTF8PROC_CATEGORY_CN;
    return utf8proc_category((utf8proc_int32_t)cp);
}

// BasicTokenizer's _is_control: any category C* except \t \n \r (which count as whitespace).
static bool is_control(uint32_t cp) {
    if (cp == '\t' || cp == '\n' || cp == '\r') return false;
    switch (category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN: return true;
    default: return false;
    }
}

// BasicTokenizer's _is_whitespace.
static bool is_bert_whitespace(uint32_t cp) {
    return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || category(cp) == UTF8PROC_CATEGORY_ZS;
}

// Python's str.isspace(), which is what str.split() and str.strip() split on. The regex's \s is
// this set minus U+001C..U+001F; the difference never matters here because those are control
// characters, removed before the regex runs.
static bool is_python_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// BasicTokenizer's _is_chinese_char: the CJK ideograph blocks (not kana, not hangul).
static bool is_cjk_ideograph(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

static bool is_letter(uint32_t cp) { // \p{L}
    switch (category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return true;
    default: return false;
    }
}

static bool is_number(uint32_t cp) { // \p{N}
    utf8proc_category_t c = category(cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

// Unicode's Case_Ignorable: categories Mn Me Cf Lm Sk, plus Word_Break MidLetter, MidNumLet and
// Single_Quote (listed).
static bool is_case_ignorable(uint32_t cp) {
    switch (category(cp)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK: return true;
    default: break;
    }
    static const uint32_t word_break_mid[] = {0x27,   0x2E,   0x3A,   0xB7,   0x387,  0x55F,
                                              0x5F4,  0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                              0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    for (size_t i = 0; i < sizeof word_break_mid / sizeof word_break_mid[0]; i++)
        if (cp == word_break_mid[i]) return true;
    return false;
}

// Unicode's Cased, for characters that are not case-ignorable (the only ones the final-sigma rule
// asks about): letters with a case, anything with a case mapping, and the few Other_Lowercase /
// Other_Uppercase characters that have neither.
static bool is_cased(uint32_t cp) {
    static const struct unicode_range other_cased[] = {
        {0xAA, 0xAA}, {0xBA, 0xBA}, {0x1F130, 0x1F149}, {0x1F150, 0x1F169}, {0x1F170, 0x1F189},
    };
    utf8proc_category_t c = category(cp);
    if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT) return true;
    utf8proc_int32_t signed_cp = (utf8proc_int32_t)cp;
    if (utf8proc_tolower(signed_cp) != signed_cp || utf8proc_toupper(signed_cp) != signed_cp) return true;
    return in_ranges(cp, other_cased, sizeof other_cased / sizeof other_cased[0]);
}

// Python lower-cases U+03A3 to final sigma U+03C2 when it ends a word: preceded by a cased letter
// and not followed by one, skipping case-ignorable characters both ways (CPython's
// handle_capital_sigma). The context is the original (not yet lower-cased) word.
static bool is_final_sigma(const uint32_t *word, size_t n, size_t at) {
    size_t j = at;
    while (j > 0 && is_case_ignorable(word[j - 1])) j--;
    if (j == 0 || !is_cased(word[j - 1])) return false;
    j = at + 1;
    while (j < n && is_case_ignorable(word[j])) j++;
    return j == n || !is_cased(word[j]);
}

// Python's str.lower(): the full lower-case mapping. Beyond utf8proc's simple mapping that means
// U+0130 -> "i" + U+0307 (the only unconditional multi-character lower-case mapping) and the final
// sigma. Writes at most 2n code points to out; returns how many.
static size_t python_lower_word(const uint32_t *word, size_t n, uint32_t *out) {
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = word[i];
        if (cp == 0x130) {
            out[len++] = 'i';
            out[len++] = 0x307;
        } else if (cp == 0x3A3) {
            out[len++] = is_final_sigma(word, n, i) ? 0x3C2 : 0x3C3;
        } else {
            out[len++] = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
        }
    }
    return len;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves; the other 68 (controls,
// space, 0x7F-0xA0, 0xAD) are moved, in byte order, to U+0100 onwards, so that no BPE symbol holds
// whitespace or a control character.
static bool byte_stands_for_itself(unsigned b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

static uint32_t byte_to_unicode(unsigned char b) {
    if (byte_stands_for_itself(b)) return b;
    uint32_t moved_before = 0;
    for (unsigned v = 0; v < b; v++) moved_before += !byte_stands_for_itself(v);
    return 256 + moved_before;
}

// ---------------------------------------------------------------------------------------------
// Symbol table: every distinct BPE symbol string, interned to a small integer so that the BPE
// loop compares and looks up integers. Holds the vocab tokens, every merge part and result, and
// the 512 single-byte symbols.

typedef struct symbol_table {
    char *text; // all symbol strings back to back, not NUL-terminated
    size_t text_len, text_cap;
    size_t *offset;    // [count] start of each symbol in text
    uint32_t *length;  // [count]
    int32_t *token_id; // [count] id in vocab.json, or -1 when the symbol is not a vocab token
    int32_t count, cap;
    int32_t *slots; // open addressing over symbol indices, -1 = empty; a power of two in size
    size_t slot_count;
} symbol_table;

static uint64_t hash_bytes(const char *s, size_t n) { // FNV-1a
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_pair(int32_t left, int32_t right) { // splitmix64 finalizer
    uint64_t h = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static bool symbol_equals(const symbol_table *t, int32_t index, const char *s, size_t n) {
    return t->length[index] == n && memcmp(t->text + t->offset[index], s, n) == 0;
}

static int32_t symbol_find(const symbol_table *t, const char *s, size_t n) {
    if (t->slot_count == 0) return -1;
    size_t mask = t->slot_count - 1;
    for (size_t slot = hash_bytes(s, n) & mask;; slot = (slot + 1) & mask) {
        int32_t index = t->slots[slot];
        if (index < 0) return -1;
        if (symbol_equals(t, index, s, n)) return index;
    }
}

static lcm_status symbol_rehash(symbol_table *t, size_t slot_count) {
    int32_t *slots = malloc(slot_count * sizeof *slots);
    if (!slots) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for the symbol table");
    for (size_t i = 0; i < slot_count; i++) slots[i] = -1;
    for (int32_t index = 0; index < t->count; index++) {
        size_t slot = hash_bytes(t->text + t->offset[index], t->length[index]) & (slot_count - 1);
        while (slots[slot] >= 0) slot = (slot + 1) & (slot_count - 1);
        slots[slot] = index;
    }
    free(t->slots);
    t->slots = slots;
    t->slot_count = slot_count;
    return LCM_OK;
}

// Returns the index of symbol s, adding it (with no vocab id) when new.
static lcm_status symbol_intern(symbol_table *t, const char *s, size_t n, int32_t *index) {
    int32_t found = symbol_find(t, s, n);
    if (found >= 0) {
        *index = found;
        return LCM_OK;
    }
    if (n > UINT32_MAX || t->count >= INT32_MAX / 4)
        return lcm_fail(LCM_ERR_FORMAT, "tokenizer: too many or too long symbols");
    if (t->count == t->cap) {
        int32_t cap = t->cap ? t->cap * 2 : 1024;
        size_t *offset = realloc(t->offset, (size_t)cap * sizeof *offset);
        if (offset) t->offset = offset;
        uint32_t *length = realloc(t->length, (size_t)cap * sizeof *length);
        if (length) t->length = length;
        int32_t *token_id = realloc(t->token_id, (size_t)cap * sizeof *token_id);
        if (token_id) t->token_id = token_id;
        if (!offset || !length || !token_id)
            return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for the symbol table");
        t->cap = cap;
    }
    if (t->text_len + n > t->text_cap) {
        size_t cap = t->text_cap ? t->text_cap : 1 << 16;
        while (cap < t->text_len + n) cap *= 2;
        char *text = realloc(t->text, cap);
        if (!text) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for the symbol table");
        t->text = text;
        t->text_cap = cap;
    }
    // Keep the table at most half full so that probe chains stay short.
    if ((size_t)(t->count + 1) * 2 > t->slot_count)
        LCM_TRY(symbol_rehash(t, t->slot_count ? t->slot_count * 2 : 1 << 12));

    int32_t added = t->count++;
    memcpy(t->text + t->text_len, s, n);
    t->offset[added] = t->text_len;
    t->length[added] = (uint32_t)n;
    t->token_id[added] = -1;
    t->text_len += n;
    size_t mask = t->slot_count - 1;
    size_t slot = hash_bytes(s, n) & mask;
    while (t->slots[slot] >= 0) slot = (slot + 1) & mask;
    t->slots[slot] = added;
    *index = added;
    return LCM_OK;
}

static void symbol_table_free(symbol_table *t) {
    free(t->text);
    free(t->offset);
    free(t->length);
    free(t->token_id);
    free(t->slots);
}

// ---------------------------------------------------------------------------------------------
// Merge table: (left symbol, right symbol) -> merge rank and the merged symbol.

typedef struct merge_rule {
    int32_t left, right; // left == -1 marks an empty slot
    int32_t rank;        // line index in merges.txt after the header: lower merges first
    int32_t merged;      // symbol of left + right
} merge_rule;

typedef struct merge_table {
    merge_rule *slots;
    size_t slot_count; // a power of two, at least twice CLIP_MAX_MERGES
} merge_table;

static const merge_rule *merge_find(const merge_table *m, int32_t left, int32_t right) {
    size_t mask = m->slot_count - 1;
    for (size_t slot = hash_pair(left, right) & mask;; slot = (slot + 1) & mask) {
        const merge_rule *rule = &m->slots[slot];
        if (rule->left < 0) return NULL;
        if (rule->left == left && rule->right == right) return rule;
    }
}

// Like Python's dict(zip(merges, range(n))): a repeated pair keeps the rank of its last line.
static void merge_insert(merge_table *m, merge_rule rule) {
    size_t mask = m->slot_count - 1;
    size_t slot = hash_pair(rule.left, rule.right) & mask;
    while (m->slots[slot].left >= 0 &&
           !(m->slots[slot].left == rule.left && m->slots[slot].right == rule.right))
        slot = (slot + 1) & mask;
    m->slots[slot] = rule;
}

// ---------------------------------------------------------------------------------------------
// The tokenizer

struct clip_tokenizer {
    symbol_table symbols;
    merge_table merges;
    int32_t byte_symbol[256];     // the byte's unicode stand-in, inside a word
    int32_t byte_end_symbol[256]; // the same + "</w>", ending a word
    int32_t bos_id, eos_id, pad_id;
    int32_t vocab_size; // largest id + 1
};

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
    size_t bad = utf8_first_invalid((const unsigned char *)data, len);
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
        st = symbol_intern(&t->symbols, item->string, strlen(item->string), &symbol);
        if (st != LCM_OK) goto done;
        t->symbols.token_id[symbol] = (int32_t)value; // a repeated key keeps its last id, as in Python
        if ((int32_t)value >= t->vocab_size) t->vocab_size = (int32_t)value + 1;
    }
    int32_t bos = symbol_find(&t->symbols, CLIP_BOS_TEXT, strlen(CLIP_BOS_TEXT));
    int32_t eos = symbol_find(&t->symbols, CLIP_EOS_TEXT, strlen(CLIP_EOS_TEXT));
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
    while (*pos < len && (n = utf8_decode(s + *pos, len - *pos, &cp)) > 0 && is_python_space(cp)) *pos += n;
    if (*pos >= len) return false;
    *start = *pos;
    while (*pos < len && (n = utf8_decode(s + *pos, len - *pos, &cp)) > 0 && !is_python_space(cp)) *pos += n;
    *field_len = *pos - *start;
    return true;
}

static lcm_status add_merge(clip_tokenizer *t, const char *left, size_t left_len, const char *right,
                            size_t right_len, int32_t rank) {
    merge_rule rule = {.rank = rank};
    LCM_TRY(symbol_intern(&t->symbols, left, left_len, &rule.left));
    LCM_TRY(symbol_intern(&t->symbols, right, right_len, &rule.right));
    char *joined = malloc(left_len + right_len);
    if (!joined) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory");
    memcpy(joined, left, left_len);
    memcpy(joined + left_len, right, right_len);
    lcm_status st = symbol_intern(&t->symbols, joined, left_len + right_len, &rule.merged);
    free(joined);
    if (st == LCM_OK) merge_insert(&t->merges, rule);
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
            int32_t symbol = symbol_find(&t->symbols, pad->valuestring, strlen(pad->valuestring));
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
        size_t n = utf8_encode(byte_to_unicode((unsigned char)b), text);
        if ((st = symbol_intern(&t->symbols, (const char *)text, n, &t->byte_symbol[b])) != LCM_OK) goto fail;
        memcpy(text + n, CLIP_WORD_END, 4);
        if ((st = symbol_intern(&t->symbols, (const char *)text, n + 4, &t->byte_end_symbol[b])) != LCM_OK)
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
    symbol_table_free(&t->symbols);
    free(t->merges.slots);
    free(t);
}

int32_t clip_tokenizer_vocab_size(const clip_tokenizer *t) { return t->vocab_size; }

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
    const merge_rule *rule = merge_find(&t->merges, w->symbol[left], w->symbol[right]);
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
static bool regex_skips(uint32_t cp) { return is_python_space(cp) || cp == 0x345; }

// Length in code points of the regex match at word[0], 0 where regex_skips(word[0]).
static size_t match_pretoken(const uint32_t *word, size_t n) {
    static const char *const literals[] = {CLIP_BOS_TEXT, CLIP_EOS_TEXT, "'s",  "'t", "'re",
                                           "'ve",         "'m",          "'ll", "'d"};
    for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++)
        if (starts_with_folded(word, n, literals[i])) return strlen(literals[i]);
    size_t k = 1;
    if (is_letter(word[0])) {
        while (k < n && is_letter(word[k])) k++;
        return k;
    }
    if (is_number(word[0])) return 1;
    if (regex_skips(word[0])) return 0;
    while (k < n && !regex_skips(word[k]) && !is_letter(word[k]) && !is_number(word[k])) k++;
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
        for (size_t i = 0; i < match; i++) len += utf8_encode(word[pos + i], w->bytes + len);
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
    for (size_t pos = 0; pos < len; count++) pos += utf8_decode(text + pos, len - pos, &w->decoded[count]);

    // _clean_text and _tokenize_chinese_chars: each code point becomes at most 3.
    LCM_TRY(reserve(&w->cleaned, &w->cleaned_cap, 3 * count, sizeof *w->cleaned));
    size_t cleaned = 0;
    for (size_t i = 0; i < count; i++) {
        uint32_t cp = w->decoded[i];
        if (cp == 0 || cp == 0xFFFD || is_control(cp)) continue;
        if (is_bert_whitespace(cp)) {
            w->cleaned[cleaned++] = ' ';
        } else if (is_cjk_ideograph(cp)) {
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
    for (size_t i = 0; i < cleaned; i++) nbytes += utf8_encode(w->cleaned[i], w->bytes + nbytes);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t nfc_len = utf8proc_map(w->bytes, (utf8proc_ssize_t)nbytes, &nfc,
                                            (utf8proc_option_t)(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    if (nfc_len < 0)
        return lcm_fail(nfc_len == UTF8PROC_ERROR_NOMEM ? LCM_ERR_OUT_OF_MEMORY : LCM_ERR_INTERNAL,
                        "tokenizer: NFC normalization failed: %s", utf8proc_errmsg(nfc_len));
    lcm_status st = reserve(&w->normalized, &w->normalized_cap, (size_t)nfc_len, sizeof *w->normalized);
    size_t normalized = 0;
    for (size_t pos = 0; st == LCM_OK && pos < (size_t)nfc_len; normalized++) {
        size_t step = utf8_decode(nfc + pos, (size_t)nfc_len - pos, &w->normalized[normalized]);
        if (step == 0) st = lcm_fail(LCM_ERR_INTERNAL, "tokenizer: NFC produced invalid UTF-8");
        pos += step;
    }
    free(nfc);
    LCM_TRY(st);

    // whitespace_tokenize, lower-case each word; the regex then runs word by word.
    size_t pos = 0;
    while (pos < normalized) {
        while (pos < normalized && is_python_space(w->normalized[pos])) pos++;
        size_t start = pos;
        while (pos < normalized && !is_python_space(w->normalized[pos])) pos++;
        if (pos == start) break;
        LCM_TRY(reserve(&w->lowered, &w->lowered_cap, 2 * (pos - start), sizeof *w->lowered));
        size_t lowered = python_lower_word(w->normalized + start, pos - start, w->lowered);
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
    size_t bad = utf8_first_invalid(text, len);
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
