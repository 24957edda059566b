// libFuzzer harness for LoRA key mapping (src/adapt/lora.c): which tensors of an adapter file are
// LoRA tensors, which model weight each module lands on, and the shape checks on the way.
//
// The safetensors container has its own harness, so the input here is text that this harness turns
// into a valid file, letting the fuzzer spend its time on names and shapes:
//
//   NAME [DTYPE] DIM...        one adapter tensor (DTYPE F32 by default; F16, BF16, F64, I32, U8, BOOL)
//   --                         then the model's weights, loaded in this order:
//   [te:]NAME DIM...           one weight of the UNet (or of the text encoder with "te:")
//
// The adapter is opened twice (scales 1 and 0.5, strict or lenient as the first byte says), every
// model weight is loaded through a synthetic weight set with the adapters attached, and the set
// is finished. Checked: a failure leaves a message; a success gives statistics that add up and a
// report with one line per adapter.
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapt/lora.h"
#include "core/error.h"
#include "io/safetensors_write.h"
#include "io/weights.h"

#define MAX_TENSORS 32
#define MAX_DIM 64
#define MAX_NUMEL 16384
#define MAX_NAME 600

typedef struct spec {
    char name[MAX_NAME];
    bool text_encoder;
    st_dtype dtype;
    int ndim;
    int64_t shape[4];
} spec;

static char adapter_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    // tmpfs where there is one: the file is rewritten for every input.
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(adapter_path, sizeof adapter_path, "%s/lcm-fuzz-lora-%d.safetensors", dir, (int)getpid());
    return 0;
}

static bool parse_dtype(const char *word, st_dtype *out) {
    static const struct { const char *name; st_dtype dtype; } known[] = {
        {"F32", ST_F32}, {"F16", ST_F16}, {"BF16", ST_BF16}, {"F64", ST_F64},
        {"I32", ST_I32}, {"U8", ST_U8},   {"BOOL", ST_BOOL}};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (!strcmp(word, known[i].name)) {
            *out = known[i].dtype;
            return true;
        }
    return false;
}

// One line into a spec; false for a line to skip (no name, too many dims, too big).
static bool parse_line(char *line, bool model, spec *out) {
    *out = (spec){.dtype = ST_F32};
    char *save = NULL, *word = strtok_r(line, " \t\r", &save);
    if (!word || strlen(word) >= MAX_NAME) return false;
    if (model && !strncmp(word, "te:", 3)) {
        out->text_encoder = true;
        word += 3;
    }
    snprintf(out->name, sizeof out->name, "%s", word);
    int64_t numel = 1;
    while ((word = strtok_r(NULL, " \t\r", &save))) {
        if (!model && out->ndim == 0 && parse_dtype(word, &out->dtype)) continue;
        char *end;
        long d = strtol(word, &end, 10);
        if (*end || d < 0 || d > MAX_DIM || out->ndim == 4) return false;
        out->shape[out->ndim++] = d;
        numel *= d;
    }
    return numel <= MAX_NUMEL;
}

// Small values that differ per tensor and element (what they are does not matter, only that the
// conversions and the fusion see finite numbers).
static lcm_status fill(void *user, size_t index, float *out, int64_t numel) {
    (void)user;
    for (int64_t i = 0; i < numel; i++) out[i] = (float)((int64_t)(index * 7 + (size_t)i) % 5 - 2) * 0.25f;
    return LCM_OK;
}

static void load_model(lora_set *set, const spec *weights, int count) {
    weight_recorder *recorder = NULL;
    weight_set *sets[2] = {NULL, NULL};
    const char *components[2] = {"unet", "text_encoder"};
    if (weight_recorder_new(1, &recorder) != LCM_OK) abort();
    for (int c = 0; c < 2; c++)
        if (weight_set_open_synthetic(recorder, components[c], &sets[c]) != LCM_OK ||
            lora_set_attach(set, components[c], sets[c]) != LCM_OK)
            abort();
    for (int i = 0; i < count; i++) {
        float *values = NULL;
        lcm_status st = weight_set_load_f32(sets[weights[i].text_encoder], weights[i].name, weights[i].ndim,
                                            weights[i].shape, &values);
        if (st == LCM_OK) free(values);
        else if (values != NULL || lcm_last_error()[0] == '\0') abort();
        lcm_clear_error();
    }
    for (int c = 0; c < 2; c++) weight_set_close(sets[c]);
    weight_recorder_free(recorder);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0 || size > 16384) return 0;
    bool lenient = data[0] & 1;
    char *text = malloc(size);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';

    static spec adapter[MAX_TENSORS], model[MAX_TENSORS];
    int adapter_count = 0, model_count = 0;
    bool in_model = false;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strcmp(line, "--")) {
            in_model = true;
            continue;
        }
        int *count = in_model ? &model_count : &adapter_count;
        spec *list = in_model ? model : adapter;
        if (*count < MAX_TENSORS && parse_line(line, in_model, &list[*count])) (*count)++;
    }
    free(text);

    st_write_entry entries[MAX_TENSORS];
    for (int i = 0; i < adapter_count; i++) {
        entries[i] = (st_write_entry){.name = adapter[i].name, .dtype = adapter[i].dtype, .ndim = adapter[i].ndim};
        memcpy(entries[i].shape, adapter[i].shape, sizeof adapter[i].shape);
    }
    // st_write converts to F32/F16/BF16/I8 only, and refuses duplicate names: such inputs are
    // written with F32 for the others and skipped when the writer says no.
    for (int i = 0; i < adapter_count; i++)
        if (entries[i].dtype != ST_F16 && entries[i].dtype != ST_BF16) entries[i].dtype = ST_F32;
    if (st_write(adapter_path, entries, (size_t)adapter_count, fill, NULL, NULL) != LCM_OK) {
        lcm_clear_error();
        return 0;
    }

    lcm_lora loras[2] = {{adapter_path, 1.0f}, {adapter_path, 0.5f}};
    lora_set *set = NULL;
    lcm_status st = lora_set_open(loras, 2, lenient, &set);
    if (st != LCM_OK) {
        if (set != NULL || lcm_last_error()[0] == '\0') abort();
    } else {
        load_model(set, model, model_count);
        st = lora_set_finish(set);
        if (st != LCM_OK && lcm_last_error()[0] == '\0') abort();
        if (st == LCM_OK) {
            if (lora_set_count(set) != 2) abort();
            for (int i = 0; i < 2; i++) {
                lora_stats s;
                lora_set_stats(set, i, &s);
                if (s.applied_modules > s.modules || s.unet_modules + s.text_encoder_modules != s.applied_modules ||
                    s.applied_tensors < 2 * s.applied_modules || s.applied_tensors > 3 * s.applied_modules ||
                    s.unmatched_keys < 0)
                    abort();
            }
            // One line per adapter.
            const char *report = lora_set_report(set), *newline = strchr(report, '\n');
            if (!newline || strchr(newline + 1, '\n') || !strstr(newline + 1, "(scale 0.5)")) abort();
        }
    }
    lora_set_free(set);
    lcm_clear_error();
    return 0;
}
