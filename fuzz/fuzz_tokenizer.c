// libFuzzer harness: any bytes as a prompt must give ids or a clean error, never a crash.
// Needs a tokenizer folder: $LCM_TOKENIZER, else $LCM_FIXTURES/tokenizer.
#include <stdio.h>
#include <stdlib.h>

#include "text/clip_tokenizer.h"

static clip_tokenizer *tokenizer;
static int32_t empty_prompt_ids[CLIP_MAX_LENGTH]; // [BOS, EOS, pad...]

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    char dir[4096];
    const char *explicit_dir = getenv("LCM_TOKENIZER"), *fixtures = getenv("LCM_FIXTURES");
    if (explicit_dir)
        snprintf(dir, sizeof dir, "%s", explicit_dir);
    else
        snprintf(dir, sizeof dir, "%s/tokenizer", fixtures ? fixtures : "../shared/fixtures");
    if (clip_tokenizer_open(dir, &tokenizer) != LCM_OK || clip_tokenize(tokenizer, "", empty_prompt_ids, NULL)) {
        fprintf(stderr, "fuzz_tokenizer: %s (set LCM_TOKENIZER or LCM_FIXTURES)\n", lcm_last_error());
        exit(2);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t ids[CLIP_MAX_LENGTH];
    int n = 0;
    if (clip_tokenize_bytes(tokenizer, (const char *)data, size, ids, &n) != LCM_OK) return 0;
    // BOS first; EOS right after the kept tokens.
    int eos_at = n < CLIP_MAX_LENGTH ? n - 1 : CLIP_MAX_LENGTH - 1;
    if (n < 2 || ids[0] != empty_prompt_ids[0] || ids[eos_at] != empty_prompt_ids[1]) abort();
    return 0;
}
