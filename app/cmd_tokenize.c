// `lcm tokenize`: prints the 77 CLIP token ids of a prompt as a one-line JSON array, exactly what
// the text encoder will read. Handy to compare with transformers' CLIPTokenizer.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app/args.h"
#include "app/commands.h"
#include "lcm.h"

static const char *const usage_line = "lcm tokenize --model DIR [--text-file FILE] [--] [TEXT]";

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

// A diffusers model folder keeps its tokenizer in tokenizer/; a tokenizer folder has the files
// itself. Writes the folder to use into dir, or returns false.
static bool find_tokenizer_dir(const char *model, char *dir, size_t size) {
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/tokenizer/vocab.json", model);
    if (is_file(probe)) return snprintf(dir, size, "%s/tokenizer", model) < (int)size;
    snprintf(probe, sizeof probe, "%s/vocab.json", model);
    if (is_file(probe)) return snprintf(dir, size, "%s", model) < (int)size;
    return false;
}

// Reads the prompt file whole (it may hold any bytes; the tokenizer checks the UTF-8). Returns 0 or
// the exit code after printing why.
static int read_prompt_file(const char *path, char **text, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "lcm tokenize: cannot open --text-file '%s': %s\n", path, strerror(errno));
        return 2;
    }
    size_t cap = 4096, size = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + size, 1, cap - size, f)) > 0) {
        size += got;
        if (size > LCM_MAX_PROMPT_BYTES) break;
        if (size == cap) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    bool failed = !buf || ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        fprintf(stderr, "lcm tokenize: cannot read --text-file '%s'\n", path);
        return 1;
    }
    if (size > LCM_MAX_PROMPT_BYTES) {
        free(buf);
        fprintf(stderr, "lcm tokenize: --text-file '%s' is larger than %d bytes\n", path,
                LCM_MAX_PROMPT_BYTES);
        return 2;
    }
    *text = buf;
    *len = size;
    return 0;
}

// Bad input (a malformed prompt or tokenizer file) is the user's to fix: exit 2; the rest is 1.
static int exit_code_for(lcm_status st) {
    return st == LCM_ERR_INVALID_ARGUMENT || st == LCM_ERR_FORMAT ? 2 : 1;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text_file = NULL;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &model, "model folder (tokenizer in DIR/tokenizer/) or tokenizer folder",
         false},
        {"text-file", ARG_STRING, &text_file, "read the prompt from this UTF-8 file instead of TEXT", false},
    };
    const char *positional[1];
    int npositional = 0;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], positional, 1, &npositional,
                        usage_line);
    if (rc == 1) return 0;
    if (rc) return rc;
    if (!model) {
        fprintf(stderr, "lcm tokenize: --model DIR is required\nusage: %s\n", usage_line);
        return 2;
    }
    if ((npositional == 1) == (text_file != NULL)) {
        fprintf(stderr,
                "lcm tokenize: give the prompt either as TEXT or with --text-file, not %s\nusage: %s\n",
                text_file ? "both" : "neither", usage_line);
        return 2;
    }
    char dir[4096];
    if (!find_tokenizer_dir(model, dir, sizeof dir)) {
        fprintf(stderr,
                "lcm tokenize: no tokenizer in '%s' (expected %s/tokenizer/vocab.json or %s/vocab.json)\n",
                model, model, model);
        return 2;
    }

    char *file_text = NULL;
    const char *text = positional[0];
    size_t len = 0;
    if (text_file) {
        rc = read_prompt_file(text_file, &file_text, &len);
        if (rc) return rc;
        text = file_text;
    } else {
        len = strlen(text);
    }

    int32_t ids[LCM_TOKEN_COUNT];
    int n_untruncated = 0;
    lcm_status st = lcm_tokenize(dir, text, len, ids, &n_untruncated);
    free(file_text);
    if (st != LCM_OK) {
        fprintf(stderr, "lcm tokenize: %s\n", lcm_last_error());
        return exit_code_for(st);
    }

    printf("[");
    for (int i = 0; i < LCM_TOKEN_COUNT; i++) printf(i ? ", %d" : "%d", (int)ids[i]);
    printf("]\n");
    if (n_untruncated > LCM_TOKEN_COUNT)
        fprintf(stderr, "lcm tokenize: note: the prompt has %d tokens; only the first %d are used\n",
                n_untruncated - 2, LCM_TOKEN_COUNT - 2);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "lcm tokenize: cannot write the output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
