// Helpers for golden-file tests: the case parameters in a golden file's `info` metadata, and
// comparison of a computed tensor with a stored one.
#ifndef LCM_TESTS_GOLDEN_H
#define LCM_TESTS_GOLDEN_H

#include <stdbool.h>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "lcm.h"

typedef struct cJSON cJSON;

// Parses __metadata__["info"] of a golden file (caller frees with cJSON_Delete). Exits loudly if
// absent: a golden file without its parameters cannot be a test case.
cJSON *golden_info(const st_file *file);

// Number / string fields of the info object; exit loudly when missing.
double golden_number(const cJSON *info, const char *field);
const char *golden_string(const cJSON *info, const char *field);

// A request with the pipeline parameters of a golden case: prompt, seed, steps, guidance, w, h
// (the other fields keep lcm_request_init's defaults). `r->prompt` points into `info`.
void golden_request(const cJSON *info, lcm_request *r);

// Loads a stored tensor as float32 (malloc'd; caller frees); NULL if absent.
float *golden_f32(const st_file *file, const char *name, int64_t *numel);

// Compares `got` with the stored tensor `name` (shape must match in element count):
// |got - want| <= abs_tol + rel_to_max * max|want|. Returns false (and records a failure) on mismatch
// or when the tensor is absent and `required`.
bool golden_compare(const st_file *file, const char *name, const tensor *got, double abs_tol,
                    double rel_to_max, bool required);

// Intermediate tensors a *_tapped forward pass reports, copied by name, for comparison with the
// debug.* tensors of a golden file.
#define GOLDEN_MAX_TAPS 64
typedef struct golden_taps {
    int count;
    char *names[GOLDEN_MAX_TAPS];
    tensor *values[GOLDEN_MAX_TAPS];
} golden_taps;

// A tap callback (user = golden_taps *); taps beyond GOLDEN_MAX_TAPS are dropped.
void golden_taps_record(void *user, const char *name, const tensor *value);
// The tap named `name`, or NULL.
const tensor *golden_taps_find(const golden_taps *t, const char *name);
void golden_taps_free(golden_taps *t);

// Fixture discovery. The `_class_name` of the folder's model_index.json, else of its config.json
// ("" when neither names one): what a folder under $LCM_FIXTURES holds.
void golden_folder_class(const char *dir, char *buf, size_t size);
// Whether the ControlNet folder `cn_dir` fits the UNet of pipeline folder `model_dir` (channels,
// blocks, cross-attention width). Clears the error message either way.
bool golden_controlnet_fits(const char *cn_dir, const char *model_dir);

#endif
