// `lcm tokenize` end to end: a sample of the golden cases through the built binary (prompt from a
// file and as a quoted argument), prompts starting with '-', both folder layouts, and usage errors.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"
#include "text/clip_tokenizer.h"
#include "tokenizer_cases.h"

static char temp_dir[64];
static char prompt_file[128];
static char output[1 << 16];

// Writes s as one single-quoted shell word: it's -> 'it'\''s'. Returns false if it does not fit.
static bool shell_quote(char *out, size_t cap, const char *s) {
    size_t len = 0;
    if (cap < 3) return false;
    out[len++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t piece_len = piece ? 4 : 1;
        if (len + piece_len + 2 > cap) return false;
        if (piece)
            memcpy(out + len, piece, 4);
        else
            out[len] = *s;
        len += piece_len;
    }
    out[len++] = '\'';
    out[len] = '\0';
    return true;
}

// Runs `lcm tokenize --model MODEL ARGS` (ARGS already shell-quoted); stdout (and stderr when
// merge_stderr) goes to `output`. Returns the exit code.
static int run_tokenize(const char *model, const char *args, bool merge_stderr) {
    static char cmd[1 << 17];
    char bin[4096], model_q[4096];
    if (!shell_quote(bin, sizeof bin, test_lcm_bin()) || !shell_quote(model_q, sizeof model_q, model)) {
        fprintf(stderr, "FATAL: path too long\n");
        exit(2);
    }
    test_path(cmd, sizeof cmd, "%s tokenize --model %s %s%s", bin, model_q, args,
              merge_stderr ? " 2>&1" : "");
    return test_run(cmd, output, sizeof output);
}

// Parses `output` as the 77-id JSON array; returns false (with a failed check) if it is not one.
static bool parse_ids(const char *what, int32_t ids[CLIP_MAX_LENGTH]) {
    size_t len = strlen(output);
    bool one_line = len > 0 && output[len - 1] == '\n' && strchr(output, '\n') == output + len - 1;
    cJSON *root = cJSON_Parse(output);
    bool ok = one_line && cJSON_IsArray(root) && cJSON_GetArraySize(root) == CLIP_MAX_LENGTH;
    for (int i = 0; ok && i < CLIP_MAX_LENGTH; i++) {
        const cJSON *id = cJSON_GetArrayItem(root, i);
        ok = cJSON_IsNumber(id);
        if (ok) ids[i] = (int32_t)id->valueint;
    }
    cJSON_Delete(root);
    CHECK(ok, "%s: output is not one line holding a JSON array of %d ids: '%.200s'", what, CLIP_MAX_LENGTH,
          output);
    return ok;
}

static void write_prompt_file(const char *text, size_t len) {
    FILE *f = fopen(prompt_file, "wb");
    if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
        fprintf(stderr, "FATAL: cannot write %s\n", prompt_file);
        exit(2);
    }
}

static void check_ids(const char *what, int line, const int32_t *got, const int32_t *want) {
    int diff = -1;
    for (int i = 0; i < CLIP_MAX_LENGTH && diff < 0; i++)
        if (got[i] != want[i]) diff = i;
    CHECK(diff < 0, "%s (line %d): ids[%d] = %d, want %d", what, line, diff, diff < 0 ? 0 : got[diff],
          diff < 0 ? 0 : want[diff]);
}

// Every 10th case with the prompt in a file; every 10th (offset 5) as a quoted argument.
static void check_golden_sample(const char *model, const char *cases_path) {
    tokenizer_case *cases;
    int count = tokenizer_cases_read(cases_path, &cases);
    int checked = 0;
    char args[1 << 15], quoted[1 << 15];
    for (int i = 0; i < count; i++) {
        const tokenizer_case *c = &cases[i];
        int32_t ids[CLIP_MAX_LENGTH];
        if (i % 10 == 0) {
            write_prompt_file(c->prompt, c->prompt_len);
            shell_quote(quoted, sizeof quoted, prompt_file);
            test_path(args, sizeof args, "--text-file %s", quoted);
        } else if (i % 10 == 5 && strlen(c->prompt) == c->prompt_len &&
                   shell_quote(quoted, sizeof quoted, c->prompt)) {
            test_path(args, sizeof args, "-- %s", quoted);
        } else {
            continue;
        }
        int rc = run_tokenize(model, args, false);
        CHECK(rc == 0, "line %d: lcm tokenize exited %d", c->line, rc);
        if (rc == 0 && parse_ids("golden", ids)) check_ids("golden", c->line, ids, c->input_ids);
        checked++;
    }
    printf("cli: checked %d of %d golden cases\n", checked, count);
    tokenizer_cases_free(cases, count);
}

// The CLI must print what the library computes, for a prompt that looks like an option.
static void check_dash_prompt(const char *model, const char *tokenizer_dir) {
    clip_tokenizer *t = NULL;
    CHECK_OK(clip_tokenizer_open(tokenizer_dir, &t));
    if (!t) return;
    static const char *const prompts[] = {"-a photo of a cat", "--model", "-", "--help"};
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++) {
        int32_t want[CLIP_MAX_LENGTH], got[CLIP_MAX_LENGTH];
        CHECK_OK(clip_tokenize(t, prompts[i], want, NULL));
        char quoted[256], args[300];
        shell_quote(quoted, sizeof quoted, prompts[i]);
        test_path(args, sizeof args, "-- %s", quoted);
        int rc = run_tokenize(model, args, false);
        CHECK(rc == 0, "prompt '%s' after --: exit %d", prompts[i], rc);
        if (rc == 0 && parse_ids(prompts[i], got)) check_ids(prompts[i], 0, got, want);
    }
    clip_tokenizer_close(t);
}

static void expect_usage_error(const char *model, const char *args, const char *mention) {
    int rc = run_tokenize(model, args, true);
    CHECK(rc == 2 && strstr(output, mention),
          "'tokenize --model %s %s': exit %d, output '%.300s'; want 2 and '%s'", model, args, rc, output,
          mention);
}

static void check_errors(const char *model) {
    char quoted[256], args[512];
    shell_quote(quoted, sizeof quoted, prompt_file);

    expect_usage_error(model, "", "either as TEXT or with --text-file");
    write_prompt_file("cat", 3);
    test_path(args, sizeof args, "--text-file %s dog", quoted);
    expect_usage_error(model, args, "not both");
    expect_usage_error(model, "a b", "unexpected argument");
    expect_usage_error(model, "--frobnicate x", "unknown option");
    expect_usage_error("/nonexistent/model/folder", "cat", "no tokenizer in");
    expect_usage_error(model, "--text-file /nonexistent/prompt.txt", "cannot open");
    write_prompt_file("caf\xC3", 4);
    test_path(args, sizeof args, "--text-file %s", quoted);
    expect_usage_error(model, args, "byte offset 3");

    char cmd[4096], bin[2048];
    shell_quote(bin, sizeof bin, test_lcm_bin());
    test_path(cmd, sizeof cmd, "%s tokenize cat 2>&1", bin);
    int rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 2 && strstr(output, "--model"), "missing --model: exit %d '%s'", rc, output);
    test_path(cmd, sizeof cmd, "%s tokenize --help", bin);
    rc = test_run(cmd, output, sizeof output);
    CHECK(rc == 0 && strstr(output, "--text-file"), "--help: exit %d '%s'", rc, output);
}

int main(void) {
    const char *root = test_fixtures();
    char model[4096], tokenizer_dir[4096], cases_path[4096];
    test_path(model, sizeof model, "%s/tiny-lcm", root);
    test_path(tokenizer_dir, sizeof tokenizer_dir, "%s/tiny-lcm/tokenizer", root);
    test_path(cases_path, sizeof cases_path, "%s/tokenizer_cases.jsonl", root);

    snprintf(temp_dir, sizeof temp_dir, "/tmp/lcm_test_cli_tokenize_XXXXXX");
    if (!mkdtemp(temp_dir)) {
        fprintf(stderr, "FATAL: mkdtemp failed\n");
        exit(2);
    }
    snprintf(prompt_file, sizeof prompt_file, "%s/prompt.txt", temp_dir);

    check_golden_sample(model, cases_path);
    check_dash_prompt(model, tokenizer_dir);
    check_dash_prompt(tokenizer_dir, tokenizer_dir); // a folder holding vocab.json itself
    check_errors(model);

    unlink(prompt_file);
    rmdir(temp_dir);
    return test_finish();
}
