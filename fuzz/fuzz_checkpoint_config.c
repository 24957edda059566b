// libFuzzer harness for single-file checkpoints (src/io/checkpoint.c, checkpoint_config.c): the
// checks that a tensor table is an SD1.x pipeline, the configs derived from its tensor shapes (or
// read from its __metadata__), and the diffusers -> original name mapping those configs drive.
//
// The container formats have their own harnesses, and real checkpoints have tensors of hundreds
// of MB, so the input is text describing the table:
//
//   NAME DIM...                a tensor (float32) of that shape
//   @KEY VALUE                 a __metadata__ string ("@lcm.config.unet/config.json {...}")
//   ?COMPONENT NAME            a diffusers tensor name to map back to the original layout
//
// Every tensor's data pointer lies in one inaccessible (PROT_NONE) reservation: deriving configs
// must look at names and shapes only, and reading any value would crash the harness.
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/error.h"
#include "io/checkpoint.h"

#define MAX_TENSORS 256
#define MAX_LOOKUPS 16
#define RESERVATION (1ull << 30)

static void *no_access; // RESERVATION bytes, PROT_NONE

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    no_access = mmap(NULL, RESERVATION, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (no_access == MAP_FAILED) abort();
    return 0;
}

typedef struct lookup {
    char component[32];
    char name[512];
} lookup;

// "NAME DIM..." into t (name malloc'd); false to skip the line.
static bool parse_tensor(char *line, st_tensor *t) {
    char *save = NULL, *word = strtok_r(line, " \t\r", &save);
    if (!word) return false;
    *t = (st_tensor){.dtype = ST_F32, .data = no_access};
    uint64_t numel = 1;
    while ((word = strtok_r(NULL, " \t\r", &save))) {
        char *end;
        long long d = strtoll(word, &end, 10);
        if (*end || d < 0 || d > (1 << 20) || t->ndim == ST_MAX_DIMS) return false;
        t->shape[t->ndim++] = d;
        numel *= (uint64_t)d;
        if (numel * sizeof(float) > RESERVATION) return false;
    }
    t->numel = (int64_t)numel;
    t->nbytes = numel * sizeof(float);
    return (t->name = strdup(line)) != NULL;
}

static void check_config(const checkpoint *ck, const char *component, const char *filename,
                         const lookup *lookups, int lookup_count) {
    json_config config;
    lcm_status st = checkpoint_derive_config(ck, component, filename, &config);
    if (st == LCM_OK) json_config_free(&config);
    else if (lcm_last_error()[0] == '\0') abort();
    lcm_clear_error();

    st = checkpoint_load_config(ck, component, filename, &config);
    if (st != LCM_OK) {
        if (lcm_last_error()[0] == '\0') abort();
        lcm_clear_error();
        return;
    }
    for (int i = 0; component && i < lookup_count; i++) {
        if (strcmp(lookups[i].component, component)) continue;
        char original[600];
        if (checkpoint_original_name(component, &config, lookups[i].name, original, sizeof original) == LCM_OK) {
            if (!memchr(original, '\0', sizeof original) || !original[0]) abort();
        } else if (lcm_last_error()[0] == '\0') {
            abort();
        }
        lcm_clear_error();
    }
    json_config_free(&config);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 65536) return 0;
    char *text = malloc(size + 1);
    st_tensor *tensors = calloc(MAX_TENSORS, sizeof *tensors);
    static lookup lookups[MAX_LOOKUPS];
    static char *meta_keys[64], *meta_values[64];
    int count = 0, lookup_count = 0, meta_count = 0;
    if (!text || !tensors) abort();
    memcpy(text, data, size);
    text[size] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '@') {
            char *space = strchr(line, ' ');
            if (!space || meta_count == 64) continue;
            *space = '\0';
            meta_keys[meta_count] = line + 1;
            meta_values[meta_count++] = space + 1;
        } else if (line[0] == '?') {
            if (lookup_count < MAX_LOOKUPS &&
                sscanf(line + 1, "%31s %511s", lookups[lookup_count].component, lookups[lookup_count].name) == 2)
                lookup_count++;
        } else if (count < MAX_TENSORS && parse_tensor(line, &tensors[count])) {
            count++;
        }
    }

    st_file *file = NULL;
    checkpoint *ck = NULL;
    // The table takes the tensors (and their names) whatever happens.
    lcm_status st = st_open_table("fuzz.safetensors", tensors, (size_t)count, NULL, 0, NULL, 0, &file);
    for (int i = 0; st == LCM_OK && i < meta_count; i++) st = st_table_add_metadata(file, meta_keys[i], meta_values[i]);
    if (st == LCM_OK) {
        st = checkpoint_open_tensors("fuzz.safetensors", file, &ck);
        file = NULL;
    }
    if (st != LCM_OK) {
        if (ck || lcm_last_error()[0] == '\0') abort();
    } else {
        static const char *const configs[][2] = {{NULL, "model_index.json"},
                                                 {"scheduler", "scheduler_config.json"},
                                                 {"unet", "config.json"},
                                                 {"vae", "config.json"},
                                                 {"text_encoder", "config.json"},
                                                 {"tokenizer", "vocab.json"}};
        for (size_t i = 0; i < sizeof configs / sizeof *configs; i++)
            check_config(ck, configs[i][0], configs[i][1], lookups, lookup_count);
    }
    st_close(file);
    checkpoint_close(ck);
    free(text);
    lcm_clear_error();
    return 0;
}
