// What the CLIP tokenizer's files share (text/clip_tokenizer.c: tokenizing, clip_tokenizer_files.c:
// reading vocab.json and merges.txt, clip_bpe_tables.c: the symbol and merge tables). Not for other
// files: text/clip_tokenizer.h is the interface.
#ifndef LCM_TEXT_CLIP_TOKENIZER_INTERNAL_H
#define LCM_TEXT_CLIP_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "text/clip_tokenizer.h"

#define CLIP_BOS_TEXT "<|startoftext|>"
#define CLIP_EOS_TEXT "<|endoftext|>"
#define CLIP_WORD_END "</w>"
// transformers keeps merges.txt lines [1, 49152 - 256 - 2 + 1): the first line (the "#version"
// header) is skipped whatever it says, and lines past the 48894th merge are ignored.
#define CLIP_MAX_MERGES (49152 - 256 - 2)
// Model files are untrusted: refuse absurd sizes before reading them into memory.
#define CLIP_MAX_FILE_BYTES ((size_t)256 << 20)

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

struct clip_tokenizer {
    symbol_table symbols;
    merge_table merges;
    int32_t byte_symbol[256];     // the byte's unicode stand-in, inside a word
    int32_t byte_end_symbol[256]; // the same + "</w>", ending a word
    int32_t bos_id, eos_id, pad_id;
    int32_t vocab_size; // largest id + 1
};

int32_t clip_symbol_find(const symbol_table *t, const char *s, size_t n);

// Returns the index of symbol s, adding it (with no vocab id) when new.
lcm_status clip_symbol_intern(symbol_table *t, const char *s, size_t n, int32_t *index);

void clip_symbol_table_free(symbol_table *t);

const merge_rule *clip_merge_find(const merge_table *m, int32_t left, int32_t right);

// Like Python's dict(zip(merges, range(n))): a repeated pair keeps the rank of its last line.
void clip_merge_insert(merge_table *m, merge_rule rule);

#endif
