// `lcm convert` in the public API (include/lcm.h): a diffusers folder as one single-file
// checkpoint that carries its configs and tokenizer (io/checkpoint_write.c writes it).
#include "io/checkpoint.h"
#include "lcm.h"

lcm_status lcm_convert_to_single_file(const char *model_dir, const char *path) {
    return checkpoint_write(model_dir, path, CHECKPOINT_STORE_CONFIGS | CHECKPOINT_STORE_TOKENIZER);
}
