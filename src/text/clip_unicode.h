// UTF-8 and the Unicode properties the CLIP tokenizer (text/clip_tokenizer.c) sees, as the
// reference's Python 3.11 (Unicode 14) and `regex` module see them; from utf8proc (Unicode 15.0),
// with the characters added in 15.0 treated as unassigned.
#ifndef LCM_TEXT_CLIP_UNICODE_H
#define LCM_TEXT_CLIP_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Decodes the code point at s[0] (len bytes available). Returns its length in bytes, or 0 where the
// bytes are not well-formed UTF-8 (overlong forms, surrogates and values past U+10FFFF included):
// exactly what Python's strict decoder refuses.
size_t clip_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp);

// Writes cp as UTF-8 (1 to 4 bytes) to out; returns the length.
size_t clip_utf8_encode(uint32_t cp, unsigned char *out);

// Offset of the first byte that does not start well-formed UTF-8, or len when all of it is.
size_t clip_utf8_first_invalid(const unsigned char *s, size_t len);

// BasicTokenizer's _is_control: any category C* except \t \n \r (which count as whitespace).
bool clip_is_control(uint32_t cp);

// BasicTokenizer's _is_whitespace.
bool clip_is_bert_whitespace(uint32_t cp);

// Python's str.isspace(), which is what str.split() and str.strip() split on. The regex's \s is
// this set minus U+001C..U+001F; the difference never matters here because those are control
// characters, removed before the regex runs.
bool clip_is_python_space(uint32_t cp);

// BasicTokenizer's _is_chinese_char: the CJK ideograph blocks (not kana, not hangul).
bool clip_is_cjk_ideograph(uint32_t cp);

// \p{L} of the `regex` module.
bool clip_is_letter(uint32_t cp);

// \p{N} of the `regex` module.
bool clip_is_number(uint32_t cp);

// Python's str.lower(): the full lower-case mapping. Beyond utf8proc's simple mapping that means
// U+0130 -> "i" + U+0307 (the only unconditional multi-character lower-case mapping) and the final
// sigma. Writes at most 2n code points to out; returns how many.
size_t clip_python_lower_word(const uint32_t *word, size_t n, uint32_t *out);

// GPT-2's bytes_to_unicode: the code point that stands for byte b in BPE symbols (printable
// Latin-1 bytes stand for themselves; the other 68 move to U+0100 onwards).
uint32_t clip_byte_to_unicode(unsigned char b);

#endif
