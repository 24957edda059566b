// CLIP tokenizer: every golden case of $LCM_FIXTURES/tokenizer_cases.jsonl, normalisation rules that
// hold for any CLIP vocabulary, invalid UTF-8 prompts, and malformed tokenizer files.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "text/clip_tokenizer.h"
#include "tokenizer_cases.h"

static void check_golden_cases(const clip_tokenizer *t, const char *cases_path) {
    tokenizer_case *cases;
    int count = tokenizer_cases_read(cases_path, &cases);
    int matched = 0;
    for (int i = 0; i < count; i++) {
        const tokenizer_case *c = &cases[i];
        int32_t ids[CLIP_MAX_LENGTH];
        int n = -1;
        lcm_status st = clip_tokenize_bytes(t, c->prompt, c->prompt_len, ids, &n);
        CHECK(st == LCM_OK, "line %d: tokenize failed: %s", c->line, lcm_last_error());
        if (st != LCM_OK) continue;
        int first_diff = -1;
        for (int k = 0; k < CLIP_MAX_LENGTH && first_diff < 0; k++)
            if (ids[k] != c->input_ids[k]) first_diff = k;
        CHECK(first_diff < 0, "line %d (prompt '%.80s'): ids[%d] = %d, want %d", c->line, c->prompt,
              first_diff, first_diff < 0 ? 0 : ids[first_diff],
              first_diff < 0 ? 0 : c->input_ids[first_diff]);
        CHECK(n == c->n_untruncated, "line %d (prompt '%.80s'): n_untruncated = %d, want %d", c->line,
              c->prompt, n, c->n_untruncated);
        matched += first_diff < 0 && n == c->n_untruncated;
    }
    printf("golden cases: %d of %d match\n", matched, count);
    tokenizer_cases_free(cases, count);
}

static bool tokenize_len(const clip_tokenizer *t, const char *text, size_t len, int32_t ids[CLIP_MAX_LENGTH],
                         int *n) {
    lcm_status st = clip_tokenize_bytes(t, text, len, ids, n);
    CHECK(st == LCM_OK, "tokenize '%s': %s", text, lcm_last_error());
    return st == LCM_OK;
}

// a and b must give the same ids (a may hold NUL bytes, hence its length).
static void check_same(const clip_tokenizer *t, const char *a, size_t a_len, const char *b, const char *why) {
    int32_t ids_a[CLIP_MAX_LENGTH], ids_b[CLIP_MAX_LENGTH];
    int n_a, n_b;
    if (!tokenize_len(t, a, a_len, ids_a, &n_a) || !tokenize_len(t, b, strlen(b), ids_b, &n_b)) return;
    CHECK(n_a == n_b && !memcmp(ids_a, ids_b, sizeof ids_a), "%s: '%s' and '%s' tokenize differently", why, a,
          b);
}

#define SAME(t, a, b, why) check_same((t), (a), sizeof(a) - 1, (b), (why))

// Rules of the reference normalisation (transformers' BasicTokenizer under Python 3.11 and the
// `regex` module); they hold whatever the vocabulary.
static void check_normalisation(const clip_tokenizer *t) {
    SAME(t, "\xC4\xB0stanbul", "i\xCC\x87stanbul", "Python lower-cases U+0130 to i + U+0307");
    SAME(t, "\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3", "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82", "final sigma");
    SAME(t, "\xCE\xA3\xCE\x91", "\xCF\x83\xCE\xB1", "non-final sigma");
    SAME(t,
         "a\xC2\xA0"
         "b\xE2\x80\x83"
         "c",
         "a b c", "Zs whitespace is a space");
    SAME(t, "x\xF0\x9F\xAB\xA8y", "xy", "U+1FAE8 (Unicode 15) is unassigned for Python 3.11: dropped");
    SAME(t, "cafe\xCC\x81", "caf\xC3\xA9", "NFC");
    SAME(t, "\xE6\x9D\xB1\xE4\xBA\xAC", "\xE6\x9D\xB1 \xE4\xBA\xAC", "spaces around CJK ideographs");
    SAME(t, "<|ENDOFTEXT|>", "<|endoftext|>", "a lower-cased special token is still special");
    SAME(t, "null\0char", "nullchar", "NUL is dropped");
    SAME(t, "bell\achar", "bellchar", "control characters are dropped");
    SAME(t,
         "a\xCD\x85"
         "b",
         "a b", "U+0345 matches no alternative of the regex");
    SAME(t, "IT'S", "it's", "lower-casing before the contraction rule");
    SAME(t, "  a \t\n b  ", "a b", "whitespace runs");

    int32_t ids[CLIP_MAX_LENGTH], empty[CLIP_MAX_LENGTH];
    int n = 0;
    if (!tokenize_len(t, "", 0, empty, &n)) return;
    CHECK(n == 2, "empty prompt: n_untruncated = %d, want 2", n);
    int32_t bos = empty[0], eos = empty[1], pad = empty[2];
    for (int i = 3; i < CLIP_MAX_LENGTH; i++)
        CHECK(empty[i] == pad, "empty prompt: ids[%d] is not padding", i);

    if (tokenize_len(t, "<|endoftext|>", 13, ids, &n)) {
        CHECK(n == 3 && ids[0] == bos && ids[1] == eos && ids[2] == eos, "literal <|endoftext|>: n = %d", n);
    }
    char long_prompt[2001];
    for (int i = 0; i < 500; i++) memcpy(long_prompt + 4 * i, "cat ", 4);
    long_prompt[2000] = '\0';
    if (tokenize_len(t, long_prompt, strlen(long_prompt), ids, &n)) {
        CHECK(n >= 502, "500 words: n_untruncated = %d, want at least 502", n);
        CHECK(ids[0] == bos && ids[CLIP_MAX_LENGTH - 1] == eos, "truncation keeps BOS and ends with EOS");
    }
    int32_t via_cstring[CLIP_MAX_LENGTH];
    int n_cstring = 0;
    CHECK_OK(clip_tokenize(t, "a photo of a cat", via_cstring, &n_cstring));
    CHECK_OK(clip_tokenize(t, "a photo of a cat", ids, NULL)); // n_untruncated is optional
    CHECK(!memcmp(ids, via_cstring, sizeof ids), "clip_tokenize with and without n_untruncated");
}

static void check_invalid_utf8(const clip_tokenizer *t) {
    static const struct {
        const char *text;
        size_t len, bad_offset;
    } cases[] = {
        {"\xFF", 1, 0},             // never valid
        {"abc\xC3", 4, 3},          // truncated sequence
        {"ok \xE2\x82 x", 7, 3},    // truncated, then more text
        {"\xED\xA0\x80", 3, 0},     // UTF-16 surrogate
        {"a\xC0\xAF", 3, 1},        // overlong '/'
        {"\xF4\x90\x80\x80", 4, 0}, // past U+10FFFF
        {"caf\xC3\xA9 \x80", 7, 6}, // stray continuation byte
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t ids[CLIP_MAX_LENGTH];
        lcm_status st = clip_tokenize_bytes(t, cases[i].text, cases[i].len, ids, NULL);
        char want[64];
        snprintf(want, sizeof want, "byte offset %zu", cases[i].bad_offset);
        CHECK(st == LCM_ERR_INVALID_ARGUMENT && strstr(lcm_last_error(), want),
              "invalid UTF-8 case %zu: got %s '%s', want an error naming %s", i, lcm_status_name(st),
              lcm_last_error(), want);
    }
    int32_t ids[CLIP_MAX_LENGTH];
    CHECK(clip_tokenize(t, NULL, ids, NULL) == LCM_ERR_INVALID_ARGUMENT, "NULL prompt is refused");
}

// ---------------------------------------------------------------------------------------------
// Malformed tokenizer files, written into a temporary folder.

static char temp_dir[64];

static void write_file(const char *name, const char *content, size_t len) {
    char path[256];
    test_path(path, sizeof path, "%s/%s", temp_dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(content, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "FATAL: cannot write %s\n", path);
        exit(2);
    }
}

#define WRITE(name, literal) write_file((name), (literal), sizeof(literal) - 1)

static void remove_file(const char *name) {
    char path[256];
    test_path(path, sizeof path, "%s/%s", temp_dir, name);
    unlink(path);
}

static const char good_vocab[] = "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": 2, \"b</w>\": 3, "
                                 "\"ab</w>\": 4, \"c</w>\": 5}";
static const char good_merges[] = "#version: 0.2\na b</w>\n";

// Opening temp_dir must fail with `want`, and the message must name `mention`.
static void expect_open_fails(const char *what, lcm_status want, const char *mention) {
    clip_tokenizer *t = NULL;
    lcm_status st = clip_tokenizer_open(temp_dir, &t);
    CHECK(st == want && t == NULL && strstr(lcm_last_error(), mention),
          "%s: got %s '%s', want %s naming '%s'", what, lcm_status_name(st), lcm_last_error(),
          lcm_status_name(want), mention);
    clip_tokenizer_close(t);
}

// The tiny tokenizer above must give [BOS, expect..., EOS, pad...] for `text`.
static void expect_tokens(const char *what, const char *text, int count, const int32_t *expect, int32_t pad) {
    clip_tokenizer *t = NULL;
    CHECK_OK(clip_tokenizer_open(temp_dir, &t));
    if (!t) return;
    int32_t ids[CLIP_MAX_LENGTH];
    int n = 0;
    CHECK_OK(clip_tokenize(t, text, ids, &n));
    bool ok = n == count + 2 && ids[0] == 0 && ids[count + 1] == 1;
    for (int i = 0; i < count; i++) ok = ok && ids[i + 1] == expect[i];
    for (int i = count + 2; i < CLIP_MAX_LENGTH; i++) ok = ok && ids[i] == pad;
    CHECK(ok, "%s: '%s' gave n=%d [%d %d %d %d ...]", what, text, n, ids[0], ids[1], ids[2], ids[3]);
    clip_tokenizer_close(t);
}

static void check_tokenizer_files(void) {
    snprintf(temp_dir, sizeof temp_dir, "/tmp/lcm_test_tokenizer_XXXXXX");
    if (!mkdtemp(temp_dir)) {
        fprintf(stderr, "FATAL: mkdtemp failed\n");
        exit(2);
    }

    // A tiny well-formed tokenizer first, so that the failures below are the files' fault.
    write_file("vocab.json", good_vocab, sizeof good_vocab - 1);
    write_file("merges.txt", good_merges, sizeof good_merges - 1);
    expect_tokens("tiny tokenizer", "ab", 1, (const int32_t[]){4}, 1);
    expect_tokens("unknown symbols are <|endoftext|>", "ab ba", 3, (const int32_t[]){4, 1, 1}, 1);
    WRITE("merges.txt", "#version: 0.2\r\na b</w>\r\n");
    expect_tokens("CRLF merges", "ab", 1, (const int32_t[]){4}, 1);
    WRITE("merges.txt", "#version: 0.2\n");
    expect_tokens("no merges", "c", 1, (const int32_t[]){5}, 1);
    WRITE("special_tokens_map.json", "{\"pad_token\": {\"content\": \"a\", \"lstrip\": false}}");
    expect_tokens("pad token from special_tokens_map.json", "c", 1, (const int32_t[]){5}, 2);
    WRITE("special_tokens_map.json", "{\"pad_token\": \"zzz\"}");
    expect_open_fails("pad token not in the vocab", LCM_ERR_FORMAT, "special_tokens_map.json");
    WRITE("special_tokens_map.json", "{\"pad_token\": ");
    expect_open_fails("truncated special_tokens_map.json", LCM_ERR_FORMAT, "special_tokens_map.json");
    remove_file("special_tokens_map.json");
    write_file("merges.txt", good_merges, sizeof good_merges - 1);

    WRITE("vocab.json", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a");
    expect_open_fails("truncated vocab.json", LCM_ERR_FORMAT, "vocab.json");
    WRITE("vocab.json", "");
    expect_open_fails("empty vocab.json", LCM_ERR_FORMAT, "vocab.json");
    WRITE("vocab.json", "[1, 2, 3]");
    expect_open_fails("vocab.json not an object", LCM_ERR_FORMAT, "vocab.json");
    WRITE("vocab.json", "{\"a\": 0, \"b</w>\": 1}");
    expect_open_fails("vocab.json without special tokens", LCM_ERR_FORMAT, "<|startoftext|>");
    WRITE("vocab.json", "{\"<|startoftext|>\": 0, \"a\": 1}");
    expect_open_fails("vocab.json without <|endoftext|>", LCM_ERR_FORMAT, "<|endoftext|>");
    WRITE("vocab.json", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": -1}");
    expect_open_fails("negative id", LCM_ERR_FORMAT, "entry 2 ('a')");
    WRITE("vocab.json", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": 2.5}");
    expect_open_fails("fractional id", LCM_ERR_FORMAT, "entry 2");
    WRITE("vocab.json", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": 1e12}");
    expect_open_fails("huge id", LCM_ERR_FORMAT, "entry 2");
    WRITE("vocab.json", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": \"1\"}");
    expect_open_fails("string id", LCM_ERR_FORMAT, "entry 1");
    WRITE("vocab.json", "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"\xC3\": 2}");
    expect_open_fails("vocab.json with invalid UTF-8", LCM_ERR_FORMAT, "invalid UTF-8");
    write_file("vocab.json", good_vocab, sizeof good_vocab - 1);

    WRITE("merges.txt", "#version: 0.2\na b</w>\na b c\n");
    expect_open_fails("merges line with three symbols", LCM_ERR_FORMAT, "merges.txt: line 3");
    WRITE("merges.txt", "#version: 0.2\nab\n");
    expect_open_fails("merges line with one symbol", LCM_ERR_FORMAT, "merges.txt: line 2");
    WRITE("merges.txt", "#version: 0.2\na b</w>\n\nb c\n");
    expect_open_fails("blank merges line", LCM_ERR_FORMAT, "merges.txt: line 3");
    WRITE("merges.txt", "#version: 0.2\na b</w>\n\xFF b\n");
    expect_open_fails("merges.txt with invalid UTF-8", LCM_ERR_FORMAT, "line 3");
    remove_file("merges.txt");
    expect_open_fails("missing merges.txt", LCM_ERR_IO, "merges.txt");
    remove_file("vocab.json");
    expect_open_fails("missing vocab.json", LCM_ERR_IO, "vocab.json");

    rmdir(temp_dir);
}

int main(void) {
    const char *root = test_fixtures();
    char dir[4096], cases_path[4096];
    test_path(dir, sizeof dir, "%s/tokenizer", root);
    test_path(cases_path, sizeof cases_path, "%s/tokenizer_cases.jsonl", root);

    clip_tokenizer *t = NULL;
    CHECK_OK(clip_tokenizer_open(dir, &t));
    if (t) {
        CHECK(clip_tokenizer_vocab_size(t) > 0, "vocab size");
        check_golden_cases(t, cases_path);
        check_normalisation(t);
        check_invalid_utf8(t);
        clip_tokenizer_close(t);
    }
    check_tokenizer_files();
    return test_finish();
}
