// CLIP byte-level BPE tokenizer: prompt text -> the 77 token ids the CLIP text encoder reads.
//
// Reproduces transformers' slow CLIPTokenizer (v4.36) as it runs without ftfy installed, which is
// what the diffusers reference pipelines used (see fixtures README, section 3):
//   ids = [BOS] + first 75 BPE ids + [EOS], padded to 77 with the pad token (<|endoftext|> for CLIP).
//
// A tokenizer is read from a folder holding vocab.json and merges.txt (a diffusers model's
// `tokenizer/` folder). Those files are untrusted input: any malformation is reported as
// LCM_ERR_FORMAT naming the file and the entry or line. Once opened, a tokenizer is immutable, so
// one tokenizer may be used from several threads at once.
#ifndef LCM_TEXT_CLIP_TOKENIZER_H
#define LCM_TEXT_CLIP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "lcm.h"

typedef struct clip_tokenizer clip_tokenizer;

#define CLIP_MAX_LENGTH 77
// Token ids in vocab.json must lie in [0, CLIP_MAX_VOCAB_SIZE) (CLIP itself has 49408).
#define CLIP_MAX_VOCAB_SIZE (1 << 20)
// Longest prompt accepted, in bytes: far beyond any real prompt, small enough that the working
// buffers (a few times the prompt size) stay reasonable.
#define CLIP_MAX_TEXT_BYTES (16 << 20)

// Reads dir/vocab.json and dir/merges.txt, and the pad token from dir/special_tokens_map.json (else
// dir/tokenizer_config.json) when either exists; the pad token defaults to <|endoftext|>.
// On success *out is owned by the caller (release with clip_tokenizer_close).
lcm_status clip_tokenizer_open(const char *dir, clip_tokenizer **out);

// The same files given as texts (a single-file checkpoint carries them in its __metadata__). Each
// text is borrowed for the call; `label` names it in errors.
typedef struct clip_tokenizer_text {
    const char *label;
    const char *text;
    size_t len;
} clip_tokenizer_text;

typedef struct clip_tokenizer_texts {
    const clip_tokenizer_text *vocab;              // vocab.json, required
    const clip_tokenizer_text *merges;             // merges.txt, required
    const clip_tokenizer_text *special_tokens_map; // optional (NULL)
    const clip_tokenizer_text *tokenizer_config;   // optional (NULL)
} clip_tokenizer_texts;

lcm_status clip_tokenizer_open_texts(const clip_tokenizer_texts *texts, clip_tokenizer **out);

// Releases a tokenizer; NULL is allowed.
void clip_tokenizer_close(clip_tokenizer *t);

// Tokenizes a NUL-terminated UTF-8 prompt. ids[77] receives BOS + up to 75 ids + EOS, then padding.
// *n_untruncated (optional, may be NULL) receives the length including BOS/EOS before truncation,
// so a value above 77 means the prompt was cut. Invalid UTF-8 gives LCM_ERR_INVALID_ARGUMENT naming
// the byte offset.
lcm_status clip_tokenize(const clip_tokenizer *t, const char *utf8_text, int32_t ids[CLIP_MAX_LENGTH],
                         int *n_untruncated);

// Same, for a prompt given as `len` bytes that may contain NUL characters (dropped, like any
// control character).
lcm_status clip_tokenize_bytes(const clip_tokenizer *t, const char *utf8_text, size_t len,
                               int32_t ids[CLIP_MAX_LENGTH], int *n_untruncated);

// One past the largest token id in the vocabulary: the number of rows the text encoder's token
// embedding must have.
int32_t clip_tokenizer_vocab_size(const clip_tokenizer *t);

#endif
