// The A1111 infotext (the `parameters` text of the images we write): building, writing and reading
// it, and the infotext of one generated image. The format is described in include/lcm.h, whose
// lcm_infotext_* functions (api/infotext.c) are these with their arguments checked; here every
// pointer argument must be non-NULL unless said otherwise.
#ifndef LCM_PIPELINE_INFOTEXT_H
#define LCM_PIPELINE_INFOTEXT_H

#include "lcm.h"

// A new infotext with copies of the prompts (NULL = ""). *out is the caller's (infotext_free).
lcm_status infotext_new(const char *prompt, const char *negative_prompt, lcm_infotext **out);

// Frees the infotext and its strings. NULL is allowed.
void infotext_free(lcm_infotext *info);

// Sets `key` (A1111's key rule, else LCM_ERR_INVALID_ARGUMENT) to a copy of `value`.
lcm_status infotext_set(lcm_infotext *info, const char *key, const char *value);

// The value of `key`, owned by `info`, or NULL (also for a NULL info or key).
const char *infotext_get(const lcm_infotext *info, const char *key);

// The text; *text is malloc'd, the caller frees it.
lcm_status infotext_format(const lcm_infotext *info, char **text);

// Parses an infotext of at most 1 MiB as A1111 does. *out is the caller's (infotext_free).
lcm_status infotext_parse(const char *text, lcm_infotext **out);

// The infotext of image `index` of a generation with the resolved request `r` (see
// lcm_pipeline_infotext). Hashes the model and adapter files on the first call. *out is the
// caller's (infotext_free).
lcm_status pipeline_infotext(lcm_pipeline *p, const lcm_request *r, int index, int width, int height,
                             const char *model_name, lcm_infotext **out);

#endif
