// A1111's hashes of the files a generation names in its infotext: the checkpoint's (sha256, its
// short "Model hash" and the legacy hash) and each LoRA file's. See lcm_model_hashes_of_file and
// lcm_lora_hash in include/lcm.h, which are these with their arguments checked.
#ifndef LCM_PIPELINE_MODEL_HASHES_H
#define LCM_PIPELINE_MODEL_HASHES_H

#include "lcm.h"

// The hashes of the file at `path`; errors name it.
lcm_status model_hashes_of_file(const char *path, lcm_model_hashes *out);

// A LoRA file's hash (sshs_model_hash metadata, else SHA-256 of a .safetensors file's data, else of
// the whole file) as 64 hex digits + NUL in `hex`.
lcm_status lora_file_hash(const char *path, char hex[65]);

#endif
