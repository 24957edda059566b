// The output folder of `lcm quantize`: it appears whole or not at all. Everything is written into
// a temporary sibling folder (OUTPUT.partial-XXXXXX) that is renamed to the output at the end and
// removed on any failure or interruption (a second signal, which kills the process, leaves the
// OUTPUT.partial-* folder).
#ifndef LCM_TOOLS_OUTPUT_FOLDER_H
#define LCM_TOOLS_OUTPUT_FOLDER_H

#include <stdbool.h>
#include <stddef.h>

#include "lcm.h"

// Creates the staging folder beside `output`; its path into staging (size bytes).
lcm_status output_folder_staging_create(const char *output, char *staging, size_t size);

// Renames `staging` to `output` when st is LCM_OK and the run was not interrupted (else
// LCM_ERR_CANCELLED), unless something appeared under `output` meanwhile; on any failure removes
// the staging folder. Returns the final status.
lcm_status output_folder_finish(const char *output, const char *staging, bool interrupted, lcm_status st);

// Copies (hard-links where possible) the model folder `from` into `to`, one level of sub-folders
// deep, leaving out the weight files of the components named in `rewritten` (NULL-terminated).
lcm_status output_folder_copy(const char *from, const char *to, const char *const *rewritten);

// Copies (hard-links where possible) the files at the top of a component folder except its weights.
lcm_status output_folder_copy_component(const char *from, const char *to);

#endif
