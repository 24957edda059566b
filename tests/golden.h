// Helpers for golden-file tests: the case parameters in a golden file's `info` metadata, and
// comparison of a computed tensor with a stored one.
#ifndef LCM_TESTS_GOLDEN_H
#define LCM_TESTS_GOLDEN_H

#include <stdbool.h>

#include "core/tensor.h"
#include "io/safetensors.h"

typedef struct cJSON cJSON;

// Parses __metadata__["info"] of a golden file (caller frees with cJSON_Delete). Exits loudly if
// absent: a golden file without its parameters cannot be a test case.
cJSON *golden_info(const st_file *file);

// Number / string fields of the info object; exit loudly when missing.
double golden_number(const cJSON *info, const char *field);
const char *golden_string(const cJSON *info, const char *field);

// Loads a stored tensor as float32 (malloc'd; caller frees); NULL if absent.
float *golden_f32(const st_file *file, const char *name, int64_t *numel);

// Compares `got` with the stored tensor `name` (shape must match in element count):
// |got - want| <= abs_tol + rel_to_max * max|want|. Returns false (and records a failure) on mismatch
// or when the tensor is absent and `required`.
bool golden_compare(const st_file *file, const char *name, const tensor *got, double abs_tol,
                    double rel_to_max, bool required);

#endif
