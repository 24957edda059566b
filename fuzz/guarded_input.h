// Places a fuzz input so that its last byte ends exactly where an inaccessible page begins.
//
// The harnesses are built with AddressSanitizer, but cJSON comes from the system and is not
// instrumented: an over-read inside it would go unnoticed on libFuzzer's heap copy. Putting a
// PROT_NONE page right after the input turns any read past the end into a SIGSEGV that libFuzzer
// reports as a crash.
#ifndef LCM_FUZZ_GUARDED_INPUT_H
#define LCM_FUZZ_GUARDED_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct guarded_input {
    uint8_t *mapping;
    size_t mapping_size;
    const uint8_t *bytes; // the copy of the input, ending at the guard page
} guarded_input;

static inline int guarded_input_make(guarded_input *g, const uint8_t *data, size_t size) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (size + page - 1) / page;
    if (data_pages == 0) data_pages = 1;
    g->mapping_size = (data_pages + 1) * page;
    void *map = mmap(NULL, g->mapping_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return -1;
    g->mapping = map;
    uint8_t *guard = g->mapping + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0) {
        munmap(map, g->mapping_size);
        return -1;
    }
    uint8_t *copy = guard - size;
    if (size) memcpy(copy, data, size);
    // Read-only, like the mmap'd files the library really reads.
    mprotect(g->mapping, data_pages * page, PROT_READ);
    g->bytes = copy;
    return 0;
}

static inline void guarded_input_free(guarded_input *g) { munmap(g->mapping, g->mapping_size); }

#endif
