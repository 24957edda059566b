// UTF-8 and Unicode properties for the CLIP tokenizer; see clip_unicode.h and clip_tokenizer.c's
// opening comment (why Unicode 15.0 additions count as unassigned).
#include "text/clip_unicode.h"

#include <utf8proc.h>

// ---------------------------------------------------------------------------------------------
// UTF-8

// Decodes the code point at s[0] (len bytes available). Returns its length in bytes, or 0 where the
// bytes are not well-formed UTF-8 (overlong forms, surrogates and values past U+10FFFF included):
// exactly what Python's strict decoder refuses.
size_t clip_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
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

size_t clip_utf8_encode(uint32_t cp, unsigned char *out) {
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
size_t clip_utf8_first_invalid(const unsigned char *s, size_t len) {
    size_t pos = 0;
    while (pos < len) {
        uint32_t cp;
        size_t n = clip_utf8_decode(s + pos, len - pos, &cp);
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
bool clip_is_control(uint32_t cp) {
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
bool clip_is_bert_whitespace(uint32_t cp) {
    return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || category(cp) == UTF8PROC_CATEGORY_ZS;
}

// Python's str.isspace(), which is what str.split() and str.strip() split on. The regex's \s is
// this set minus U+001C..U+001F; the difference never matters here because those are control
// characters, removed before the regex runs.
bool clip_is_python_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// BasicTokenizer's _is_chinese_char: the CJK ideograph blocks (not kana, not hangul).
bool clip_is_cjk_ideograph(uint32_t cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

bool clip_is_letter(uint32_t cp) { // \p{L}
    switch (category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: return true;
    default: return false;
    }
}

bool clip_is_number(uint32_t cp) { // \p{N}
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
size_t clip_python_lower_word(const uint32_t *word, size_t n, uint32_t *out) {
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

uint32_t clip_byte_to_unicode(unsigned char b) {
    if (byte_stands_for_itself(b)) return b;
    uint32_t moved_before = 0;
    for (unsigned v = 0; v < b; v++) moved_before += !byte_stands_for_itself(v);
    return 256 + moved_before;
}
