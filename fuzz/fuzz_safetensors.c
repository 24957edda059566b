// libFuzzer harness for the safetensors reader: every input is a candidate file. A file that opens
// must be fully readable: every tensor is found by name and converted with st_read_f32/st_read_i64
// (whichever its dtype allows), so a header that passed validation but lies about sizes or offsets
// shows up as an AddressSanitizer report.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/error.h"
#include "guarded_input.h"
#include "io/safetensors.h"

static int is_float_dtype(st_dtype d) {
    return d == ST_F32 || d == ST_F16 || d == ST_BF16 || d == ST_F64;
}

static void read_every_tensor(const st_file *file) {
    for (size_t i = 0; i < st_count(file); i++) {
        const st_tensor *t = st_at(file, i);
        if (st_find(file, t->name) != t) abort(); // names are unique, so lookup must round-trip
        if ((size_t)t->numel * st_dtype_size(t->dtype) != t->nbytes) abort();
        size_t n = t->numel ? (size_t)t->numel : 1;
        float *f = malloc(n * sizeof *f);
        int64_t *v = malloc(n * sizeof *v);
        if (f && v) {
            lcm_status fs = st_read_f32(file, t, f);
            lcm_status is = st_read_i64(file, t, v);
            // Floats convert to float only; integers to both, except U64 (may not fit either).
            bool is_u64 = t->dtype == ST_U64;
            if (is_float_dtype(t->dtype) && (fs != LCM_OK || is == LCM_OK)) abort();
            if (!is_float_dtype(t->dtype) && (fs == LCM_OK) == is_u64) abort();
            if (!is_float_dtype(t->dtype) && (is == LCM_OK) == is_u64) abort();
        }
        free(f);
        free(v);
        float *loaded = NULL;
        if (st_load_f32(file, t->name, t->ndim, t->shape, &loaded) == LCM_OK) free(loaded);
        // A shape that cannot match must be refused, with nothing to free.
        int64_t wrong = t->numel + 1;
        if (st_load_f32(file, t->name, 1, &wrong, &loaded) == LCM_OK || loaded != NULL) abort();
    }
    (void)st_metadata(file, "info");
    (void)st_find(file, "missing tensor name");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    guarded_input input;
    if (guarded_input_make(&input, data, size) != 0) return 0;
    st_file *file = NULL;
    if (st_open_memory(input.bytes, size, "fuzz.safetensors", &file) == LCM_OK) {
        read_every_tensor(file);
        st_close(file);
    } else if (file != NULL || lcm_last_error()[0] == '\0') {
        abort(); // a failure must leave no file and must say why
    }
    lcm_clear_error();
    guarded_input_free(&input);
    return 0;
}
