// oneDNN convolution and matmul primitives with prepacked weights; see dnnl_layer.h.
#include "ops/dnnl_layer.h"

#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "ops/bf16.h"
#include "ops/cpu.h"

// The shape a layer is packed for at load. The layout oneDNN prefers can depend on the input size
// too; a primitive for another size that wants another layout gets the weights reordered for it
// (find_primitive).
#define PACK_IMAGE_SIZE 64
#define PACK_ROWS 256

// The layer's weights in one blocked layout. oneDNN's fast kernels want a layout that can depend
// on the input size (brgconv picks its blocking per shape): weights packed for one size, given to a
// primitive of another, can leave oneDNN nothing but its reference kernel (`ref:any`, thousands of
// times slower: measured 636 s for one 256-channel conv at 256x256). So each primitive is created
// with the layout it prefers, and the weights are reordered into that layout when no copy has it.
typedef struct packed_weights {
    dnnl_memory_desc_t md;
    void *data; // owned unless `borrowed`, 64-byte aligned
    bool borrowed; // data lies in a packed-weight cache mapping (dnnl_layer_import)
    int users;  // cached primitives running on this copy
    struct packed_weights *next;
} packed_weights;

typedef struct cached_primitive {
    int64_t key[3]; // conv: n, h, w; linear: rows, 0, 0
    int threads;    // oneDNN fixes the thread count when the primitive is created
    dnnl_primitive_t primitive;
    dnnl_memory_desc_t src_md, bias_md, dst_md;
    packed_weights *weights;
    struct cached_primitive *next;
} cached_primitive;

struct dnnl_layer {
    bool is_conv, has_bias;
    int in, out, kernel, stride, padding;
    lcm_precision precision;
    pthread_mutex_t lock;  // guards packs, cache and impl
    packed_weights *packs; // at least one copy; each layout at most once
    cached_primitive *cache;
    char impl[64];
};

// ---- engine ----------------------------------------------------------------------------------

static dnnl_engine_t engine;
static dnnl_status_t engine_status;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

// One CPU engine for the process: it holds no per-call state and lives until exit.
static void engine_create(void) {
    cpu_features_get(); // applies LCM_NO_AVX512 to oneDNN first
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
}

static lcm_status check(dnnl_status_t status, const char *what) {
    if (status == dnnl_success) return LCM_OK;
    if (status == dnnl_out_of_memory)
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "oneDNN %s: out of memory", what);
    return lcm_fail(LCM_ERR_INTERNAL, "oneDNN %s failed with status %d", what, (int)status);
}

static lcm_status get_engine(void) {
    pthread_once(&engine_once, engine_create);
    return check(engine_status, "engine creation");
}

static dnnl_data_type_t compute_type(const dnnl_layer *l) {
    return l->precision == LCM_PRECISION_BF16 ? dnnl_bf16 : dnnl_f32;
}

// ---- primitive descriptors -------------------------------------------------------------------

static int64_t conv_out_size(const dnnl_layer *l, int64_t size) {
    return (size + 2 * l->padding - l->kernel) / l->stride + 1;
}

// `weights_md` NULL lets oneDNN choose the weight layout (format_tag_any).
static dnnl_status_t conv_desc(const dnnl_layer *l, const int64_t key[3],
                               const dnnl_memory_desc_t *weights_md, dnnl_primitive_desc_t *pd) {
    int64_t n = key[0], h = key[1], w = key[2];
    dnnl_memory_desc_t src, weights, bias, dst;
    dnnl_status_t st;
    st = dnnl_memory_desc_init_by_tag(&src, 4, (dnnl_dims_t){n, l->in, h, w}, compute_type(l),
                                      dnnl_acdb);
    if (st != dnnl_success) return st;
    if (weights_md) weights = *weights_md;
    else {
        st = dnnl_memory_desc_init_by_tag(&weights, 4,
                                          (dnnl_dims_t){l->out, l->in, l->kernel, l->kernel},
                                          compute_type(l), dnnl_format_tag_any);
        if (st != dnnl_success) return st;
    }
    st = dnnl_memory_desc_init_by_tag(&bias, 1, (dnnl_dims_t){l->out}, dnnl_f32, dnnl_a);
    if (st != dnnl_success) return st;
    st = dnnl_memory_desc_init_by_tag(
        &dst, 4, (dnnl_dims_t){n, l->out, conv_out_size(l, h), conv_out_size(l, w)}, dnnl_f32,
        dnnl_acdb);
    if (st != dnnl_success) return st;
    dnnl_convolution_desc_t desc;
    st = dnnl_convolution_forward_desc_init(
        &desc, dnnl_forward_inference, dnnl_convolution_direct, &src, &weights,
        l->has_bias ? &bias : NULL, &dst, (dnnl_dims_t){l->stride, l->stride},
        (dnnl_dims_t){l->padding, l->padding}, (dnnl_dims_t){l->padding, l->padding});
    if (st != dnnl_success) return st;
    return dnnl_primitive_desc_create(pd, &desc, NULL, engine, NULL);
}

static dnnl_status_t matmul_desc(const dnnl_layer *l, const int64_t key[3],
                                 const dnnl_memory_desc_t *weights_md, dnnl_primitive_desc_t *pd) {
    int64_t rows = key[0];
    dnnl_memory_desc_t src, weights, bias, dst;
    dnnl_status_t st;
    st = dnnl_memory_desc_init_by_tag(&src, 2, (dnnl_dims_t){rows, l->in}, compute_type(l), dnnl_ab);
    if (st != dnnl_success) return st;
    if (weights_md) weights = *weights_md;
    else {
        st = dnnl_memory_desc_init_by_tag(&weights, 2, (dnnl_dims_t){l->in, l->out},
                                          compute_type(l), dnnl_format_tag_any);
        if (st != dnnl_success) return st;
    }
    st = dnnl_memory_desc_init_by_tag(&bias, 2, (dnnl_dims_t){1, l->out}, dnnl_f32, dnnl_ab);
    if (st != dnnl_success) return st;
    st = dnnl_memory_desc_init_by_tag(&dst, 2, (dnnl_dims_t){rows, l->out}, dnnl_f32, dnnl_ab);
    if (st != dnnl_success) return st;
    dnnl_matmul_desc_t desc;
    st = dnnl_matmul_desc_init(&desc, &src, &weights, l->has_bias ? &bias : NULL, &dst);
    if (st != dnnl_success) return st;
    return dnnl_primitive_desc_create(pd, &desc, NULL, engine, NULL);
}

static dnnl_status_t layer_desc(const dnnl_layer *l, const int64_t key[3],
                                const dnnl_memory_desc_t *weights_md, dnnl_primitive_desc_t *pd) {
    return l->is_conv ? conv_desc(l, key, weights_md, pd) : matmul_desc(l, key, weights_md, pd);
}

// ---- packing ---------------------------------------------------------------------------------

// Runs one reorder from `from` (memory at src) into `to` (memory at dst).
static lcm_status reorder(const dnnl_memory_desc_t *from, void *src, const dnnl_memory_desc_t *to,
                          void *dst) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t primitive = NULL;
    dnnl_memory_t src_mem = NULL, dst_mem = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, NULL);
    if (st == dnnl_success) st = dnnl_primitive_create(&primitive, pd);
    if (st == dnnl_success) st = dnnl_memory_create(&src_mem, from, engine, src);
    if (st == dnnl_success) st = dnnl_memory_create(&dst_mem, to, engine, dst);
    if (st == dnnl_success) st = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, src_mem}, {DNNL_ARG_TO, dst_mem}};
        st = dnnl_primitive_execute(primitive, stream, 2, args);
    }
    if (stream) dnnl_stream_destroy(stream);
    if (src_mem) dnnl_memory_destroy(src_mem);
    if (dst_mem) dnnl_memory_destroy(dst_mem);
    if (primitive) dnnl_primitive_destroy(primitive);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return check(st, "weight reorder");
}

// *out = a new copy of the weights at `from` (layout from_md) in layout `md`.
static lcm_status pack_new(const dnnl_memory_desc_t *from_md, const void *from,
                           const dnnl_memory_desc_t *md, packed_weights **out) {
    *out = NULL;
    packed_weights *p = calloc(1, sizeof *p);
    size_t bytes = (dnnl_memory_desc_get_size(md) + 63) / 64 * 64;
    if (p) p->data = aligned_alloc(64, bytes ? bytes : 64);
    if (!p || !p->data) {
        free(p);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing weights");
    }
    p->md = *md;
    lcm_status status = reorder(from_md, (void *)from, md, p->data);
    if (status != LCM_OK) {
        free(p->data);
        free(p);
        return status;
    }
    *out = p;
    return LCM_OK;
}

static lcm_status layer_new(dnnl_layer *l, const float *weight, dnnl_layer **out_layer) {
    *out_layer = NULL;
    LCM_TRY(get_engine());
    int64_t key[3] = {PACK_ROWS, 0, 0};
    if (l->is_conv) {
        int64_t size = PACK_IMAGE_SIZE > l->kernel ? PACK_IMAGE_SIZE : l->kernel;
        key[0] = 1;
        key[1] = key[2] = size;
    }
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t desc_status = layer_desc(l, key, NULL, &pd);
    if (desc_status == dnnl_unimplemented && l->precision == LCM_PRECISION_BF16) {
        // No bf16 kernel for this shape (a few input or output channels: the first and last
        // layers): such a layer is tiny, so it stays in fp32.
        l->precision = LCM_PRECISION_FP32;
        desc_status = layer_desc(l, key, NULL, &pd);
    }
    LCM_TRY(check(desc_status, "primitive descriptor"));
    // The layout for a representative size; a primitive for another size that prefers another
    // layout gets its own copy (find_primitive).
    dnnl_memory_desc_t packed_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);

    dnnl_memory_desc_t plain;
    dnnl_status_t st =
        l->is_conv ? dnnl_memory_desc_init_by_tag(
                         &plain, 4, (dnnl_dims_t){l->out, l->in, l->kernel, l->kernel}, dnnl_f32,
                         dnnl_abcd)
                   // [out, in] row-major is the [in, out] matrix oneDNN wants, stored transposed
                   : dnnl_memory_desc_init_by_tag(&plain, 2, (dnnl_dims_t){l->in, l->out},
                                                  dnnl_f32, dnnl_ba);
    LCM_TRY(check(st, "weight descriptor"));
    LCM_TRY(pack_new(&plain, weight, &packed_md, &l->packs));
    dnnl_layer *copy = malloc(sizeof *copy);
    if (!copy) {
        free(l->packs->data);
        free(l->packs);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory packing weights");
    }
    *copy = *l;
    pthread_mutex_init(&copy->lock, NULL);
    *out_layer = copy;
    return LCM_OK;
}

lcm_status dnnl_layer_conv_new(const float *weight, bool has_bias, int in, int out, int kernel,
                               int stride, int padding, lcm_precision precision,
                               dnnl_layer **out_layer) {
    dnnl_layer l = {.is_conv = true, .has_bias = has_bias, .in = in, .out = out,
                    .kernel = kernel, .stride = stride, .padding = padding,
                    .precision = precision};
    return layer_new(&l, weight, out_layer);
}

lcm_status dnnl_layer_linear_new(const float *weight, bool has_bias, int in, int out,
                                 lcm_precision precision, dnnl_layer **out_layer) {
    dnnl_layer l = {.is_conv = false, .has_bias = has_bias, .in = in, .out = out,
                    .precision = precision};
    return layer_new(&l, weight, out_layer);
}

void dnnl_layer_free(dnnl_layer *layer) {
    if (!layer) return;
    for (cached_primitive *c = layer->cache, *next; c; c = next) {
        next = c->next;
        dnnl_primitive_destroy(c->primitive);
        free(c);
    }
    for (packed_weights *p = layer->packs, *next; p; p = next) {
        next = p->next;
        if (!p->borrowed) free(p->data);
        free(p);
    }
    pthread_mutex_destroy(&layer->lock);
    free(layer);
}

// ---- the packed-weight cache --------------------------------------------------------------------

typedef struct dnnl_layer_meta {
    int32_t is_conv, has_bias, in, out, kernel, stride, padding, precision;
    dnnl_memory_desc_t md;
} dnnl_layer_meta;
_Static_assert(sizeof(dnnl_layer_meta) <= PACKED_META_MAX, "a memory descriptor fits an entry");

void dnnl_layer_export(dnnl_layer *l, packed_entry *entry) {
    pthread_mutex_lock(&l->lock);
    dnnl_layer_meta meta;
    memset(&meta, 0, sizeof meta);
    meta = (dnnl_layer_meta){l->is_conv, l->has_bias, l->in, l->out, l->kernel, l->stride,
                             l->padding, (int32_t)l->precision, l->packs->md};
    *entry = (packed_entry){.family = l->is_conv ? PACKED_CONV_ONEDNN : PACKED_LINEAR_ONEDNN,
                            .shape = {l->in, l->out, l->kernel, l->stride, l->padding},
                            .meta_bytes = sizeof meta, .blob_count = 1};
    memcpy(entry->meta_storage, &meta, sizeof meta);
    entry->meta = entry->meta_storage;
    entry->blobs[0] = (packed_blob){l->packs->data, dnnl_memory_desc_get_size(&l->packs->md)};
    pthread_mutex_unlock(&l->lock);
}

lcm_status dnnl_layer_import(const packed_entry *entry, bool is_conv, bool has_bias,
                             dnnl_layer **out_layer) {
    *out_layer = NULL;
    dnnl_layer_meta m;
    if (entry->family != (is_conv ? PACKED_CONV_ONEDNN : PACKED_LINEAR_ONEDNN) ||
        entry->meta_bytes != sizeof m || entry->blob_count != 1)
        return lcm_fail(LCM_ERR_FORMAT, "not a oneDNN entry of this kind");
    memcpy(&m, entry->meta, sizeof m);
    const int32_t *shape = entry->shape;
    const dnnl_memory_desc_t *md = &m.md;
    bool dims_ok = is_conv ? md->ndims == 4 && md->dims[0] == m.out && md->dims[1] == m.in &&
                                 md->dims[2] == m.kernel && md->dims[3] == m.kernel
                           : md->ndims == 2 && md->dims[0] == m.in && md->dims[1] == m.out;
    dnnl_data_type_t type = m.precision == LCM_PRECISION_BF16 ? dnnl_bf16 : dnnl_f32;
    // oneDNN trusts a descriptor's blocking: one read from a damaged file must not send it out of
    // its arrays (dnnl_memory_desc_get_size walks inner_blks/inner_idxs).
    const dnnl_blocking_desc_t *blocking = &md->format_desc.blocking;
    bool blocking_ok = md->format_kind == dnnl_blocked && blocking->inner_nblks >= 0 &&
                       blocking->inner_nblks <= DNNL_MAX_NDIMS && md->extra.flags == 0 && md->offset0 == 0;
    for (int i = 0; blocking_ok && i < blocking->inner_nblks; i++)
        blocking_ok = blocking->inner_blks[i] > 0 && blocking->inner_blks[i] <= 256 &&
                      blocking->inner_idxs[i] >= 0 && blocking->inner_idxs[i] < md->ndims;
    for (int i = 0; blocking_ok && dims_ok && i < md->ndims; i++)
        blocking_ok = md->padded_dims[i] >= md->dims[i] && md->padded_dims[i] <= md->dims[i] + 256 &&
                      md->padded_offsets[i] == 0 && blocking->strides[i] >= 0 &&
                      blocking->strides[i] <= ((int64_t)1 << 40);
    if (m.is_conv != is_conv || m.has_bias != has_bias || m.in != shape[0] || m.out != shape[1] ||
        (is_conv && (m.kernel != shape[2] || m.stride != shape[3] || m.padding != shape[4])) ||
        (m.precision != LCM_PRECISION_FP32 && m.precision != LCM_PRECISION_BF16) || !dims_ok ||
        md->data_type != type || !blocking_ok ||
        dnnl_memory_desc_get_size(md) != entry->blobs[0].bytes || (uintptr_t)entry->blobs[0].data % 64)
        return lcm_fail(LCM_ERR_FORMAT, "oneDNN entry does not match the layer");
    LCM_TRY(get_engine());
    dnnl_layer *l = calloc(1, sizeof *l);
    packed_weights *p = calloc(1, sizeof *p);
    if (!l || !p) {
        free(l);
        free(p);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    *p = (packed_weights){.md = *md, .data = (void *)entry->blobs[0].data, .borrowed = true};
    *l = (dnnl_layer){.is_conv = is_conv, .has_bias = has_bias, .in = m.in, .out = m.out,
                      .kernel = is_conv ? m.kernel : 0, .stride = is_conv ? m.stride : 0,
                      .padding = is_conv ? m.padding : 0, .precision = (lcm_precision)m.precision,
                      .packs = p};
    pthread_mutex_init(&l->lock, NULL);
    *out_layer = l;
    return LCM_OK;
}

const char *dnnl_layer_impl(const dnnl_layer *layer) { return layer->impl; }
lcm_precision dnnl_layer_precision(const dnnl_layer *layer) { return layer->precision; }

int dnnl_layer_primitive_count(dnnl_layer *layer) {
    int count = 0;
    pthread_mutex_lock(&layer->lock);
    for (const cached_primitive *c = layer->cache; c; c = c->next) count++;
    pthread_mutex_unlock(&layer->lock);
    return count;
}

int dnnl_layer_weight_copies(dnnl_layer *layer) {
    int count = 0;
    pthread_mutex_lock(&layer->lock);
    for (const packed_weights *p = layer->packs; p; p = p->next) count++;
    pthread_mutex_unlock(&layer->lock);
    return count;
}

// ---- running ---------------------------------------------------------------------------------

bool dnnl_impl_is_reference(const char *impl) {
    return !impl || !*impl || !strncmp(impl, "ref", 3) || strstr(impl, ":ref") != NULL;
}

static const char *pd_impl(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    return impl ? impl : "?";
}

// The weights copy and primitive descriptor for a new shape (l->lock held): the layout oneDNN
// prefers for the shape; an existing copy in another layout where oneDNN runs a real kernel on it
// and the copy is already in use (so a second copy would cost memory); else a new copy, which
// replaces a copy no primitive uses yet (the one packed at load).
static lcm_status choose_weights(dnnl_layer *l, const int64_t key[3], dnnl_primitive_desc_t *pd,
                                 packed_weights **weights) {
    *pd = NULL;
    *weights = NULL;
    LCM_TRY(check(layer_desc(l, key, NULL, pd), "primitive descriptor"));
    dnnl_memory_desc_t preferred = *dnnl_primitive_desc_query_md(*pd, dnnl_query_weights_md, 0);
    packed_weights *unused = NULL;
    for (packed_weights *p = l->packs; p; p = p->next) {
        if (dnnl_memory_desc_equal(&p->md, &preferred)) {
            *weights = p;
            return LCM_OK;
        }
        if (!p->users) unused = p;
    }
    if (!unused) {
        for (packed_weights *p = l->packs; p; p = p->next) {
            dnnl_primitive_desc_t other = NULL;
            if (layer_desc(l, key, &p->md, &other) != dnnl_success) continue;
            if (!dnnl_impl_is_reference(pd_impl(other))) {
                dnnl_primitive_desc_destroy(*pd);
                *pd = other;
                *weights = p;
                return LCM_OK;
            }
            dnnl_primitive_desc_destroy(other);
        }
    }
    packed_weights *source = unused ? unused : l->packs, *fresh;
    if (getenv("LCM_VERBOSE"))
        fprintf(stderr, "lcm: oneDNN %s %d->%d: weights reordered for a %lldx%lld input%s\n",
                l->is_conv ? "conv" : "linear", l->in, l->out, (long long)key[1], (long long)key[2],
                unused ? "" : " (second copy)");
    lcm_status status = pack_new(&source->md, source->data, &preferred, &fresh);
    if (status != LCM_OK) {
        dnnl_primitive_desc_destroy(*pd);
        *pd = NULL;
        return status;
    }
    if (unused) { // the new layout replaces the unused copy
        if (!unused->borrowed) free(unused->data);
        unused->borrowed = false;
        unused->data = fresh->data;
        unused->md = fresh->md;
        free(fresh);
        *weights = unused;
    } else {
        fresh->next = l->packs;
        l->packs = fresh;
        *weights = fresh;
    }
    return LCM_OK;
}

// The cached primitive for this shape and thread count, created on first use.
static lcm_status find_primitive(dnnl_layer *l, const int64_t key[3], cached_primitive **out) {
    int threads = omp_get_max_threads();
    pthread_mutex_lock(&l->lock);
    for (cached_primitive *c = l->cache; c; c = c->next)
        if (c->threads == threads && !memcmp(c->key, key, sizeof c->key)) {
            *out = c;
            pthread_mutex_unlock(&l->lock);
            return LCM_OK;
        }
    dnnl_primitive_desc_t pd = NULL;
    packed_weights *weights = NULL;
    cached_primitive *c = calloc(1, sizeof *c);
    lcm_status status = c ? LCM_OK : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    if (status == LCM_OK) status = choose_weights(l, key, &pd, &weights);
    if (status == LCM_OK) status = check(dnnl_primitive_create(&c->primitive, pd), "primitive");
    if (status == LCM_OK) {
        memcpy(c->key, key, sizeof c->key);
        c->threads = threads;
        c->src_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
        c->dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
        if (l->has_bias) c->bias_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 1);
        c->weights = weights;
        weights->users++;
        snprintf(l->impl, sizeof l->impl, "%s", pd_impl(pd));
        c->next = l->cache;
        l->cache = c;
        *out = c;
    } else {
        free(c);
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    pthread_mutex_unlock(&l->lock);
    return status;
}

static lcm_status execute(dnnl_layer *l, const int64_t key[3], const float *x, int64_t x_count,
                          const float *bias, float *y) {
    cached_primitive *c;
    LCM_TRY(find_primitive(l, key, &c));
    // bf16 primitives read bf16 activations; the values between layers stay float32.
    uint16_t *x16 = NULL;
    if (l->precision == LCM_PRECISION_BF16) {
        x16 = malloc(sizeof(uint16_t) * (size_t)(x_count ? x_count : 1));
        if (!x16) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory converting to bf16");
        bf16_from_f32(x, x16, x_count);
    }
    dnnl_memory_t src = NULL, weights = NULL, bias_mem = NULL, dst = NULL;
    dnnl_stream_t stream = NULL;
    dnnl_status_t st = dnnl_memory_create(&src, &c->src_md, engine, x16 ? (void *)x16 : (void *)x);
    if (st == dnnl_success) st = dnnl_memory_create(&weights, &c->weights->md, engine, c->weights->data);
    if (st == dnnl_success && l->has_bias)
        st = dnnl_memory_create(&bias_mem, &c->bias_md, engine, (void *)bias);
    if (st == dnnl_success) st = dnnl_memory_create(&dst, &c->dst_md, engine, y);
    if (st == dnnl_success) st = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    if (st == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src},
                                  {DNNL_ARG_WEIGHTS, weights},
                                  {DNNL_ARG_DST, dst},
                                  {DNNL_ARG_BIAS, bias_mem}};
        st = dnnl_primitive_execute(c->primitive, stream, l->has_bias ? 4 : 3, args);
    }
    if (stream) dnnl_stream_destroy(stream);
    if (src) dnnl_memory_destroy(src);
    if (weights) dnnl_memory_destroy(weights);
    if (bias_mem) dnnl_memory_destroy(bias_mem);
    if (dst) dnnl_memory_destroy(dst);
    free(x16);
    return check(st, l->is_conv ? "convolution" : "matmul");
}

lcm_status dnnl_layer_conv_run(dnnl_layer *layer, const float *x, int64_t n, int64_t h, int64_t w,
                               const float *bias, float *y) {
    int64_t key[3] = {n, h, w};
    return execute(layer, key, x, n * layer->in * h * w, bias, y);
}

lcm_status dnnl_layer_linear_run(dnnl_layer *layer, const float *x, int64_t rows,
                                 const float *bias, float *y) {
    int64_t key[3] = {rows, 0, 0};
    return execute(layer, key, x, rows * layer->in, bias, y);
}
