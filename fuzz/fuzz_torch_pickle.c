// libFuzzer harness for the PyTorch checkpoint reader: every input is a candidate torch.save zip.
// The zip layer is exercised on its own (every entry read back, inflating deflated ones), then the
// whole reader: a checkpoint that opens must have every tensor readable over its full byte range,
// so a validation gap shows up as an AddressSanitizer report.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "guarded_input.h"
#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io/zip.h"

static volatile uint8_t sink;

static void touch(const void *data, size_t n) {
    const uint8_t *p = data;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++) x ^= p[i];
    sink = x;
}

static void read_every_entry(const uint8_t *bytes, size_t size) {
    zip_archive *zip = NULL;
    if (zip_open_memory(bytes, size, "fuzz.zip", &zip) != LCM_OK) {
        if (zip || lcm_last_error()[0] == '\0') abort();
        return;
    }
    for (size_t i = 0; i < zip_count(zip); i++) {
        const zip_entry *e = zip_at(zip, i);
        if (zip_find(zip, e->name) != e) abort();
        const uint8_t *content = NULL;
        uint8_t *copy = NULL;
        if (zip_read(zip, e, &content, &copy) == LCM_OK) touch(content, (size_t)e->size);
        free(copy);
    }
    zip_close(zip);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    guarded_input input;
    if (guarded_input_make(&input, data, size) != 0) return 0;
    read_every_entry(input.bytes, size);
    st_file *file = NULL;
    if (torch_open_memory(input.bytes, size, "fuzz.pt", &file) == LCM_OK) {
        for (size_t i = 0; i < st_count(file); i++) {
            const st_tensor *t = st_at(file, i);
            if (st_find(file, t->name) != t) abort();
            if ((size_t)t->numel * st_dtype_size(t->dtype) != t->nbytes) abort();
            touch(t->data, t->nbytes);
            float *f = malloc(t->numel ? (size_t)t->numel * sizeof *f : 1);
            if (f) (void)st_read_f32(file, t, f);
            free(f);
        }
        for (size_t i = 0; i < st_metadata_count(file); i++) {
            const char *key = st_metadata_key_at(file, i);
            const char *value = st_metadata(file, key);
            if (!value) abort();
            touch(value, strlen(value));
        }
        st_close(file);
    } else if (file != NULL || lcm_last_error()[0] == '\0') {
        abort(); // a failure must leave no file and must say why
    }
    lcm_clear_error();
    guarded_input_free(&input);
    return 0;
}
