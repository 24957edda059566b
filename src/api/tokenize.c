// lcm_tokenize: the CLIP tokenizer (src/text/clip_tokenizer.h) on its own.
#include "lcm.h"
#include "text/clip_tokenizer.h"

_Static_assert(LCM_TOKEN_COUNT == CLIP_MAX_LENGTH, "lcm.h's token count is the tokenizer's");
_Static_assert(LCM_MAX_PROMPT_BYTES == CLIP_MAX_TEXT_BYTES, "lcm.h's prompt limit is the tokenizer's");

lcm_status lcm_tokenize(const char *tokenizer_dir, const char *text, size_t length,
                        int32_t ids[LCM_TOKEN_COUNT], int *untruncated_count) {
    clip_tokenizer *tokenizer = NULL;
    int untruncated = 0;
    lcm_status st = clip_tokenizer_open(tokenizer_dir, &tokenizer);
    if (st == LCM_OK) st = clip_tokenize_bytes(tokenizer, text, length, ids, &untruncated);
    clip_tokenizer_close(tokenizer);
    if (untruncated_count) *untruncated_count = untruncated;
    return st;
}
