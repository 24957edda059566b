#include "core/tensor.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/error.h"

// ---- buffer reuse (see tensor.h) -------------------------------------------------------------

// Buffers of at least REUSE_MIN_BYTES are kept for reuse. Those of at least MAPPED_MIN_BYTES are
// anonymous mappings of whole 2 MiB huge pages: a 64 MiB activation then takes 32 TLB entries
// instead of 16384, and, above all, the pages of kept mappings can be moved (mremap) into a buffer
// of another size without copying or faulting them again. Fresh pages are dear: the kernel zeroes
// them, and in a virtual machine that returns freed memory to its host (free page reporting) each
// one costs a host fault too; 64 MiB measured 70-120 ms to touch there, 7 ms when the guest had
// just freed those pages.
#define REUSE_MIN_BYTES ((size_t)1 << 20)
#define HUGE_PAGE_BYTES ((size_t)2 << 20)
#define MAPPED_MIN_BYTES (2 * HUGE_PAGE_BYTES)
#define REUSE_SLOTS 16

static bool is_mapped(size_t bytes) { return bytes >= MAPPED_MIN_BYTES; }

// The bytes a buffer of `bytes` holds: whole huge pages when it is a mapping.
static size_t held_bytes(size_t bytes) {
    return is_mapped(bytes) ? (bytes + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES : bytes;
}

// LCM_TENSOR_CACHE=0 turns the reuse off and LCM_HUGE_PAGES=0 the huge-page advice (to measure
// them). LCM_TENSOR_GUARD=1, a debugging aid, ends every mapped buffer's data at an inaccessible
// page (and turns the reuse off), so that a kernel reading or writing past a large tensor faults
// at once instead of touching whatever mapping happens to follow. Read once.
static bool reuse_on = true, huge_pages_on = true, guard_on = false;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void read_settings(void) {
    const char *v = getenv("LCM_TENSOR_CACHE");
    reuse_on = !v || strcmp(v, "0");
    v = getenv("LCM_HUGE_PAGES");
    huge_pages_on = !v || strcmp(v, "0");
    v = getenv("LCM_TENSOR_GUARD");
    guard_on = v && *v && strcmp(v, "0");
    if (guard_on) reuse_on = false;
}

static bool reuse_enabled(void) {
    pthread_once(&settings_once, read_settings);
    return reuse_on;
}

// A fresh mapping of `held` bytes (a multiple of the huge page) on a huge-page boundary, or NULL.
static void *map_fresh(size_t held) {
    size_t span = held + HUGE_PAGE_BYTES;
    char *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    char *aligned = (char *)(((uintptr_t)p + HUGE_PAGE_BYTES - 1) & ~(uintptr_t)(HUGE_PAGE_BYTES - 1));
    if (aligned > p) munmap(p, (size_t)(aligned - p));
    if (aligned + held < p + span) munmap(aligned + held, (size_t)(p + span - (aligned + held)));
    pthread_once(&settings_once, read_settings);
    if (huge_pages_on) madvise(aligned, held, MADV_HUGEPAGE); // advice only: failure changes nothing
    return aligned;
}

// LCM_TENSOR_GUARD: the mapping holds `held` bytes and one inaccessible page after them; the data
// (rounded up to the 64-byte alignment) ends where that page starts.
#define GUARD_BYTES ((size_t)4096)
static size_t guarded_offset(size_t bytes) { return held_bytes(bytes) - (bytes + 63) / 64 * 64; }

static void *map_guarded(size_t bytes) {
    size_t held = held_bytes(bytes);
    char *p = mmap(NULL, held + GUARD_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    if (mprotect(p + held, GUARD_BYTES, PROT_NONE) != 0) {
        munmap(p, held + GUARD_BYTES);
        return NULL;
    }
    return p + guarded_offset(bytes);
}

static void *buffer_alloc(size_t bytes) {
    if (!is_mapped(bytes)) return aligned_alloc(64, bytes);
    pthread_once(&settings_once, read_settings);
    return guard_on ? map_guarded(bytes) : map_fresh(held_bytes(bytes));
}

static void buffer_free(void *data, size_t bytes) {
    if (!data || !is_mapped(bytes)) free(data);
    else if (guard_on) munmap((char *)data - guarded_offset(bytes), held_bytes(bytes) + GUARD_BYTES);
    else munmap(data, held_bytes(bytes));
}

// Kept buffers, oldest first, and the bytes of large buffers in use now and at most so far. The
// rule: live + kept never exceeds the most that was ever live, which a process without the cache
// would have had resident too, so the peak is not raised. `fresh` counts mapped bytes that came
// from the system rather than from kept pages.
static pthread_mutex_t reuse_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kept_buffer {
    void *data;
    size_t held;
    bool mapped; // pages of a mapping (a part of one may be smaller than MAPPED_MIN_BYTES)
} kept[REUSE_SLOTS];
static int kept_count;
static size_t kept_bytes, live_bytes, most_live_bytes, fresh_bytes;

static void remove_kept(int i) {
    memmove(kept + i, kept + i + 1, sizeof *kept * (size_t)(kept_count - i - 1));
    kept_count--;
}

// Returns kept buffer i to the system (the lock held).
static void drop_kept(int i) {
    if (kept[i].mapped) munmap(kept[i].data, kept[i].held);
    else free(kept[i].data);
    kept_bytes -= kept[i].held;
    remove_kept(i);
}

// A new mapping of `held` bytes made of kept pages where there are any, newest first, moved in
// whole (mremap moves page table entries: no copy, no fault); the rest is fresh. NULL when no
// mapping can be made. The lock is held.
static void *assemble_from_kept(size_t held) {
    char *region = map_fresh(held);
    if (!region) return NULL;
    size_t filled = 0;
    for (int i = kept_count - 1; i >= 0 && filled < held; i--) {
        if (!kept[i].mapped) continue;
        size_t chunk = kept[i].held < held - filled ? kept[i].held : held - filled;
        char *tail = (char *)kept[i].data + kept[i].held - chunk;
        // On failure (too many mappings, say) that part simply stays fresh.
        if (mremap(tail, chunk, chunk, MREMAP_MAYMOVE | MREMAP_FIXED, region + filled) == MAP_FAILED) break;
        filled += chunk;
        kept_bytes -= chunk;
        kept[i].held -= chunk;
        if (kept[i].held == 0) remove_kept(i);
    }
    fresh_bytes += held - filled;
    return region;
}

// A buffer for a tensor of `bytes` from the kept ones (the same size, or for mappings, kept pages
// moved together), else NULL after releasing the oldest kept buffers until a new one fits under
// the rule. Counts the buffer as live either way (the caller allocates on NULL and calls
// reuse_cancel if that fails).
static void *reuse_take(size_t bytes) {
    if (bytes < REUSE_MIN_BYTES || !reuse_enabled()) return NULL;
    size_t held = held_bytes(bytes);
    bool mapped = is_mapped(bytes);
    void *found = NULL;
    pthread_mutex_lock(&reuse_lock);
    for (int i = kept_count - 1; i >= 0 && !found; i--) {
        if (kept[i].held != held || kept[i].mapped != mapped) continue;
        found = kept[i].data;
        kept_bytes -= held;
        remove_kept(i);
    }
    if (!found && mapped) found = assemble_from_kept(held);
    live_bytes += held;
    if (live_bytes > most_live_bytes) most_live_bytes = live_bytes;
    while (kept_count > 0 && live_bytes + kept_bytes > most_live_bytes) drop_kept(0);
    pthread_mutex_unlock(&reuse_lock);
    return found;
}

static void reuse_cancel(size_t bytes) {
    if (bytes < REUSE_MIN_BYTES || !reuse_enabled()) return;
    pthread_mutex_lock(&reuse_lock);
    live_bytes -= held_bytes(bytes);
    pthread_mutex_unlock(&reuse_lock);
}

// Keeps `data` for reuse when it is large (the oldest kept buffer makes room when all slots are
// taken); frees it otherwise.
static void reuse_give(void *data, size_t bytes) {
    if (bytes < REUSE_MIN_BYTES || !reuse_enabled()) {
        buffer_free(data, bytes);
        return;
    }
    pthread_mutex_lock(&reuse_lock);
    live_bytes -= held_bytes(bytes);
    if (kept_count == REUSE_SLOTS) drop_kept(0);
    kept[kept_count++] = (struct kept_buffer){data, held_bytes(bytes), is_mapped(bytes)};
    kept_bytes += held_bytes(bytes);
    pthread_mutex_unlock(&reuse_lock);
}

tensor_cache_counts tensor_cache_stats(void) {
    pthread_mutex_lock(&reuse_lock);
    tensor_cache_counts c = {.kept = kept_bytes, .live = live_bytes, .most_live = most_live_bytes, .fresh = fresh_bytes};
    pthread_mutex_unlock(&reuse_lock);
    return c;
}

void tensor_release_cached(void) {
    pthread_mutex_lock(&reuse_lock);
    while (kept_count > 0) drop_kept(0);
    pthread_mutex_unlock(&reuse_lock);
}

// ---- tensors -------------------------------------------------------------------------------

int64_t tensor_numel(const tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

tensor *tensor_new(int ndim, const int64_t *shape) {
    if (ndim < 1 || ndim > TENSOR_MAX_DIMS) {
        lcm_fail(LCM_ERR_INTERNAL, "tensor_new: %d dimensions", ndim);
        return NULL;
    }
    tensor *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->ndim = ndim;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && numel > INT64_MAX / 4 / shape[i])) {
            free(t);
            lcm_fail(LCM_ERR_INVALID_ARGUMENT, "tensor_new: shape too large");
            return NULL;
        }
        t->shape[i] = shape[i];
        numel *= shape[i];
    }
    // Rounded up to the alignment as aligned_alloc requires; at least one cache line.
    size_t bytes = ((size_t)numel * sizeof(float) + 63) / 64 * 64;
    if (!bytes) bytes = 64;
    t->capacity = bytes;
    t->data = reuse_take(bytes);
    if (!t->data) t->data = buffer_alloc(bytes);
    if (!t->data) {
        reuse_cancel(bytes);
        free(t);
        goto oom;
    }
    return t;
oom:
    lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory allocating a tensor");
    return NULL;
}

tensor *tensor_new2(int64_t a, int64_t b) { return tensor_new(2, (int64_t[]){a, b}); }
tensor *tensor_new3(int64_t a, int64_t b, int64_t c) { return tensor_new(3, (int64_t[]){a, b, c}); }
tensor *tensor_new4(int64_t n, int64_t c, int64_t h, int64_t w) {
    return tensor_new(4, (int64_t[]){n, c, h, w});
}

tensor *tensor_zeros(int ndim, const int64_t *shape) {
    tensor *t = tensor_new(ndim, shape);
    if (t) memset(t->data, 0, (size_t)tensor_numel(t) * sizeof(float));
    return t;
}

tensor *tensor_from(int ndim, const int64_t *shape, const float *data) {
    tensor *t = tensor_new(ndim, shape);
    if (t) memcpy(t->data, data, (size_t)tensor_numel(t) * sizeof(float));
    return t;
}

tensor *tensor_copy(const tensor *t) {
    tensor *c = t ? tensor_from(t->ndim, t->shape, t->data) : NULL;
    if (c) c->layout = t->layout;
    return c;
}

tensor *tensor_concat_batch(const tensor *a, const tensor *b) {
    int64_t shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[i];
    shape[0] = a->shape[0] + b->shape[0];
    tensor *out = tensor_new(a->ndim, shape);
    if (!out) return NULL;
    memcpy(out->data, a->data, sizeof(float) * (size_t)tensor_numel(a));
    memcpy(out->data + tensor_numel(a), b->data, sizeof(float) * (size_t)tensor_numel(b));
    return out;
}

// Moves the values of a 4-D tensor between [N,C,H,W] and [N,H,W,C] storage.
static tensor *tensor_relayout(const tensor *t, tensor_layout want) {
    if (!t) return NULL;
    if (t->ndim != 4 || t->layout == want) {
        tensor *c = tensor_from(t->ndim, t->shape, t->data);
        if (c) c->layout = t->ndim == 4 ? want : TENSOR_NCHW;
        return c;
    }
    tensor *out = tensor_new(4, t->shape);
    if (!out) return NULL;
    out->layout = want;
    int64_t n = t->shape[0], c = t->shape[1], hw = t->shape[2] * t->shape[3];
    for (int64_t b = 0; b < n; b++) {
        const float *src = t->data + b * c * hw;
        float *dst = out->data + b * c * hw;
        if (want == TENSOR_NHWC) {
            for (int64_t ch = 0; ch < c; ch++)
                for (int64_t p = 0; p < hw; p++) dst[p * c + ch] = src[ch * hw + p];
        } else {
            for (int64_t p = 0; p < hw; p++)
                for (int64_t ch = 0; ch < c; ch++) dst[ch * hw + p] = src[p * c + ch];
        }
    }
    return out;
}

tensor *tensor_to_nchw(const tensor *t) { return tensor_relayout(t, TENSOR_NCHW); }
tensor *tensor_to_nhwc(const tensor *t) { return tensor_relayout(t, TENSOR_NHWC); }

void tensor_free(tensor *t) {
    if (!t) return;
    reuse_give(t->data, t->capacity);
    free(t);
}

void tensor_replace(tensor **t, tensor *next) {
    tensor_free(*t);
    *t = next;
}
