#include "core/tensor.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/error.h"

// ---- buffer reuse (see tensor.h) -------------------------------------------------------------

#define REUSE_MIN_BYTES ((size_t)1 << 20)
#define REUSE_SLOTS 16

// Kept buffers, oldest first, and the bytes of large buffers in use now and at most so far. The
// rule: live + kept never exceeds the most that was ever live, which a process without the cache
// would have had resident too, so the peak is not raised.
static pthread_mutex_t reuse_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kept_buffer {
    void *data;
    size_t bytes;
} kept[REUSE_SLOTS];
static int kept_count;
static size_t kept_bytes, live_bytes, most_live_bytes;

// Frees kept buffer i (the lock held).
static void drop_kept(int i) {
    free(kept[i].data);
    kept_bytes -= kept[i].bytes;
    memmove(kept + i, kept + i + 1, sizeof *kept * (size_t)(kept_count - i - 1));
    kept_count--;
}

// LCM_TENSOR_CACHE=0 turns the reuse off and LCM_HUGE_PAGES=0 the huge-page advice (to measure
// them); read once.
static bool reuse_on = true, huge_pages_on = true;
static pthread_once_t settings_once = PTHREAD_ONCE_INIT;

static void read_settings(void) {
    const char *v = getenv("LCM_TENSOR_CACHE");
    reuse_on = !v || strcmp(v, "0");
    v = getenv("LCM_HUGE_PAGES");
    huge_pages_on = !v || strcmp(v, "0");
}

static bool reuse_enabled(void) {
    pthread_once(&settings_once, read_settings);
    return reuse_on;
}

// A kept buffer of exactly `bytes`, else NULL after releasing the oldest kept buffers until a new
// one of `bytes` fits under the rule. Counts the buffer as live either way (the caller allocates
// on NULL and calls reuse_cancel if that fails).
static void *reuse_take(size_t bytes) {
    if (bytes < REUSE_MIN_BYTES || !reuse_enabled()) return NULL;
    void *found = NULL;
    pthread_mutex_lock(&reuse_lock);
    for (int i = kept_count - 1; i >= 0 && !found; i--) {
        if (kept[i].bytes != bytes) continue;
        found = kept[i].data;
        kept[i].data = NULL; // handed out, not freed
        kept_bytes -= bytes;
        memmove(kept + i, kept + i + 1, sizeof *kept * (size_t)(kept_count - i - 1));
        kept_count--;
    }
    live_bytes += bytes;
    if (live_bytes > most_live_bytes) most_live_bytes = live_bytes;
    while (!found && kept_count > 0 && live_bytes + kept_bytes > most_live_bytes) drop_kept(0);
    pthread_mutex_unlock(&reuse_lock);
    return found;
}

static void reuse_cancel(size_t bytes) {
    if (bytes < REUSE_MIN_BYTES || !reuse_enabled()) return;
    pthread_mutex_lock(&reuse_lock);
    live_bytes -= bytes;
    pthread_mutex_unlock(&reuse_lock);
}

// Keeps `data` for reuse when it is large (the oldest kept buffer makes room when all slots are
// taken); frees it otherwise.
static void reuse_give(void *data, size_t bytes) {
    if (bytes < REUSE_MIN_BYTES || !reuse_enabled()) {
        free(data);
        return;
    }
    pthread_mutex_lock(&reuse_lock);
    live_bytes -= bytes;
    if (kept_count == REUSE_SLOTS) drop_kept(0);
    kept[kept_count++] = (struct kept_buffer){data, bytes};
    kept_bytes += bytes;
    pthread_mutex_unlock(&reuse_lock);
}

// Large buffers on 2 MiB boundaries with transparent huge pages asked for (where the kernel is set
// to `madvise`): a 64 MiB activation then takes 32 TLB entries instead of 16384, and the kernels
// that walk it row by row stop missing the TLB.
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

static void *buffer_alloc(size_t bytes) {
    if (bytes < 2 * HUGE_PAGE_BYTES) return aligned_alloc(64, bytes);
    size_t rounded = (bytes + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    void *p = aligned_alloc(HUGE_PAGE_BYTES, rounded);
    pthread_once(&settings_once, read_settings);
    if (p && huge_pages_on) madvise(p, rounded, MADV_HUGEPAGE); // advice only: failure changes nothing
    return p;
}

void tensor_cache_stats(size_t *kept_out, size_t *live, size_t *most_live) {
    pthread_mutex_lock(&reuse_lock);
    *kept_out = kept_bytes;
    *live = live_bytes;
    *most_live = most_live_bytes;
    pthread_mutex_unlock(&reuse_lock);
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
