#include "ops/cpu.h"
#include "ops/int8_layer.h"

#include <dnnl.h>
#include <stdbool.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ops/int8_quantize.h"
#include "ops/int8_gemm.h"
#include "core/error.h"

struct int8_layer {
    int in, out, kernel, stride, padding; // kernel 0: linear
    float input_scale;
    int32_t zero_point;
    int8_kernel choice;   // OURS or ONEDNN (AUTO resolved at creation)
    // The only copy of the weights the layer keeps: packed for our kernels (ops/int8_gemm.h), with
    // output_scale [out] = weight_scale[o] * input_scale. oneDNN packs its own from them.
    int8_packed packed_ours;
    // oneDNN: the primitive for the last input shape (and thread count), with its packed weights
    int64_t key[4];
    dnnl_primitive_t primitive;
    dnnl_memory_t packed;
    dnnl_memory_desc_t src_md, dst_md;
    const char *impl;
};

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static dnnl_status_t engine_status;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;

static void engine_create(void) {
    cpu_features_get(); // applies LCM_NO_AVX512 to oneDNN first
    engine_status = dnnl_engine_create(&engine, dnnl_cpu, 0);
    if (engine_status == dnnl_success) engine_status = dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
}

static lcm_status check(dnnl_status_t s, const char *what) {
    return s == dnnl_success ? LCM_OK : lcm_fail(LCM_ERR_INTERNAL, "oneDNN int8: %s failed (status %d)", what, (int)s);
}

// AUTO is ours, a built-in rule from measurement (BENCHMARKS.md, "int8 kernels"; Xeon with VNNI,
// 2026-12-07, `OMP_NUM_THREADS=1 bench_int8_bench --cpu-time --repeat 5`, whole layer forward):
// ours 445/470/345/330 GOPS on the UNet's 3x3 convs 320@64, 640@32, 1280@16, 2560->1280@16 against
// oneDNN's 444/449/368/404, and 151-359 against 140-327 on its linear layers: a tie but for the
// widest input (oneDNN 1.2x there). Ours keeps one packed copy of the weights and rebuilds nothing
// per input shape, where oneDNN packs a second copy per primitive, so per-shape measuring was not
// worth that memory.
int8_kernel int8_kernel_for_cpu(int8_kernel asked) {
    // oneDNN's u8 x s8 kernels without VNNI sum pairs of products in saturating 16-bit arithmetic
    // (255 * 127 * 2 > 32767): never used there, whatever was asked.
    if (!cpu_has_vnni()) return INT8_KERNEL_OURS;
    return asked == INT8_KERNEL_ONEDNN ? INT8_KERNEL_ONEDNN : INT8_KERNEL_OURS;
}

lcm_status int8_layer_new_s8(const int8_t *weight, const float *weight_scale, int in, int out,
                             int kernel, int stride, int padding, float input_scale,
                             int32_t input_zero_point, int8_kernel choice, int8_layer **out_layer) {
    *out_layer = NULL;
    int8_layer *l = calloc(1, sizeof *l);
    if (!l) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for an int8 layer");
    *l = (int8_layer){.in = in, .out = out, .kernel = kernel, .stride = stride, .padding = padding,
                      .input_scale = input_scale, .zero_point = input_zero_point,
                      .choice = int8_kernel_for_cpu(choice), .impl = ""};
    int8_shape shape = {in, out, kernel, stride, padding};
    lcm_status st = int8_packed_init(&l->packed_ours, &shape, weight, weight_scale, input_scale,
                                     input_zero_point);
    if (st == LCM_OK && l->choice == INT8_KERNEL_ONEDNN) {
        pthread_once(&engine_once, engine_create);
        st = check(engine_status, "engine creation");
    }
    if (st != LCM_OK) {
        int8_layer_free(l);
        return st;
    }
    *out_layer = l;
    return LCM_OK;
}

lcm_status int8_layer_new(const float *weight, int in, int out, int kernel, int stride, int padding,
                          float input_scale, int32_t input_zero_point, int8_kernel choice,
                          int8_layer **out_layer) {
    *out_layer = NULL;
    int64_t per_channel = (int64_t)in * (kernel ? kernel * kernel : 1);
    int8_t *q = malloc((size_t)(out * per_channel));
    float *scales = malloc(sizeof(float) * (size_t)out);
    lcm_status st = q && scales ? LCM_OK : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory for int8 weights");
    if (st == LCM_OK) {
        quantize_weights_s8(weight, out, per_channel, q, scales);
        st = int8_layer_new_s8(q, scales, in, out, kernel, stride, padding, input_scale,
                               input_zero_point, choice, out_layer);
    }
    free(q);
    free(scales);
    return st;
}

static void drop_primitive(int8_layer *l) {
    if (l->primitive) dnnl_primitive_destroy(l->primitive);
    if (l->packed) dnnl_memory_destroy(l->packed);
    l->primitive = NULL;
    l->packed = NULL;
}

void int8_layer_free(int8_layer *l) {
    if (!l) return;
    drop_primitive(l);
    int8_packed_free(&l->packed_ours);
    free(l);
}

const char *int8_layer_impl(const int8_layer *l) { return l->impl; }

int8_kernel int8_layer_kernel(const int8_layer *l) { return l->choice; }

// The first implementation of `desc` that does not use AMX. oneDNN 2.6.3's AMX int8 kernels
// (brgconv/brgemm avx512_core_amx, with our runtime source zero point) overwrite heap memory
// outside their buffers: under ASan on a Xeon with AMX, test_int8 later freed a corrupted pointer
// inside an unrelated primitive (dnnl_primitive_destroy of a VAE conv) every run, and never with
// these implementations skipped. The VNNI kernels they fall back to compute the same int32 sums.
static dnnl_status_t create_pd_without_amx(const_dnnl_op_desc_t desc, const_dnnl_primitive_attr_t attr,
                                           dnnl_primitive_desc_t *pd) {
    *pd = NULL;
    dnnl_primitive_desc_iterator_t it;
    dnnl_status_t s = dnnl_primitive_desc_iterator_create(&it, desc, attr, engine, NULL);
    if (s != dnnl_success) return s;
    do {
        dnnl_primitive_desc_t candidate = dnnl_primitive_desc_iterator_fetch(it);
        if (!candidate) break;
        const char *impl = "";
        dnnl_primitive_desc_query(candidate, dnnl_query_impl_info_str, 0, &impl);
        if (!impl || !strstr(impl, "amx")) {
            *pd = candidate;
            break;
        }
        dnnl_primitive_desc_destroy(candidate);
    } while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
    dnnl_primitive_desc_iterator_destroy(it);
    return *pd ? dnnl_success : dnnl_unimplemented;
}

// Creates the primitive for input [n, h, w] (linear: rows = n) and packs the weights for it.
static lcm_status make_primitive(int8_layer *l, int64_t n, int64_t h, int64_t w, int64_t oh, int64_t ow) {
    drop_primitive(l);
    dnnl_memory_desc_t weights_any, weights_plain, src, dst;
    dnnl_primitive_attr_t attr;
    LCM_TRY(check(dnnl_primitive_attr_create(&attr), "attr"));
    int32_t runtime_zero_point = DNNL_RUNTIME_S32_VAL;
    dnnl_status_t s = dnnl_primitive_attr_set_output_scales(attr, l->out, 1 << 1, l->packed_ours.out_scale);
    if (s == dnnl_success) s = dnnl_primitive_attr_set_zero_points(attr, DNNL_ARG_SRC, 1, 0, &runtime_zero_point);
    dnnl_primitive_desc_t pd = NULL;
    if (l->kernel == 0) {
        dnnl_dims_t sd = {n, l->in}, wd = {l->in, l->out}, dd = {n, l->out};
        dnnl_memory_desc_init_by_tag(&src, 2, sd, dnnl_u8, dnnl_ab);
        dnnl_memory_desc_init_by_tag(&weights_any, 2, wd, dnnl_s8, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&weights_plain, 2, wd, dnnl_s8, dnnl_ba); // stored [out, in]
        dnnl_memory_desc_init_by_tag(&dst, 2, dd, dnnl_f32, dnnl_ab);
        dnnl_matmul_desc_t desc;
        if (s == dnnl_success) s = dnnl_matmul_desc_init(&desc, &src, &weights_any, NULL, &dst);
        if (s == dnnl_success) s = create_pd_without_amx(&desc, attr, &pd);
    } else {
        dnnl_dims_t sd = {n, l->in, h, w}, wd = {l->out, l->in, l->kernel, l->kernel}, dd = {n, l->out, oh, ow};
        dnnl_dims_t strides = {l->stride, l->stride}, pad = {l->padding, l->padding};
        dnnl_memory_desc_init_by_tag(&src, 4, sd, dnnl_u8, dnnl_nhwc);
        dnnl_memory_desc_init_by_tag(&weights_any, 4, wd, dnnl_s8, dnnl_format_tag_any);
        dnnl_memory_desc_init_by_tag(&weights_plain, 4, wd, dnnl_s8, dnnl_oihw);
        dnnl_memory_desc_init_by_tag(&dst, 4, dd, dnnl_f32, dnnl_nhwc);
        dnnl_convolution_desc_t desc;
        if (s == dnnl_success)
            s = dnnl_convolution_forward_desc_init(&desc, dnnl_forward_inference, dnnl_convolution_direct,
                                                   &src, &weights_any, NULL, &dst, strides, pad, pad);
        if (s == dnnl_success) s = create_pd_without_amx(&desc, attr, &pd);
    }
    dnnl_primitive_attr_destroy(attr);
    if (s != dnnl_success)
        return lcm_fail(LCM_ERR_INTERNAL,
                        "oneDNN int8: no primitive for %s %d -> %d (kernel %d, stride %d) on input "
                        "[%lld, %lld, %lld] (status %d)", l->kernel ? "conv" : "linear", l->in, l->out,
                        l->kernel, l->stride, (long long)n, (long long)h, (long long)w, (int)s);
    const dnnl_memory_desc_t *packed_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const char *impl = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    l->impl = impl; // a static string of the library
    dnnl_memory_t plain = NULL;
    dnnl_primitive_desc_t reorder_pd = NULL;
    dnnl_primitive_t reorder = NULL;
    // the plain weights for the reorder, back from our packing (the layer keeps no plain copy)
    int8_t *plain_weight = malloc((size_t)l->out * (size_t)l->in * (size_t)l->packed_ours.taps);
    s = plain_weight ? dnnl_primitive_create(&l->primitive, pd) : dnnl_out_of_memory;
    if (plain_weight) int8_packed_unpack(&l->packed_ours, plain_weight);
    if (s == dnnl_success) s = dnnl_memory_create(&l->packed, packed_md, engine, DNNL_MEMORY_ALLOCATE);
    if (s == dnnl_success) s = dnnl_memory_create(&plain, &weights_plain, engine, plain_weight);
    if (s == dnnl_success) s = dnnl_reorder_primitive_desc_create(&reorder_pd, &weights_plain, engine, packed_md, engine, NULL);
    if (s == dnnl_success) s = dnnl_primitive_create(&reorder, reorder_pd);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, plain}, {DNNL_ARG_TO, l->packed}};
        s = dnnl_primitive_execute(reorder, stream, 2, args);
    }
    if (s == dnnl_success) s = dnnl_stream_wait(stream);
    if (reorder) dnnl_primitive_destroy(reorder);
    if (reorder_pd) dnnl_primitive_desc_destroy(reorder_pd);
    if (plain) dnnl_memory_destroy(plain);
    free(plain_weight);
    l->src_md = src;
    l->dst_md = dst;
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success) drop_primitive(l);
    return check(s, "primitive creation");
}

// x (float, `layout` order) -> u8 in NHWC / row order, as fake_quantize_u8 rounds.
static void quantize_input(const int8_layer *l, const tensor *x, uint8_t *q) {
    float inverse = 1.0f / l->input_scale, zp = (float)l->zero_point;
    int64_t numel = tensor_numel(x);
    bool transpose = x->ndim == 4 && x->layout == TENSOR_NCHW && l->kernel != 0;
    int64_t c = x->ndim == 4 ? x->shape[1] : 1, hw = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < numel; i++) {
        float v = nearbyintf(x->data[i] * inverse) + zp;
        v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
        int64_t at = i;
        if (transpose) { // NCHW index i = (b, ch, p) -> NHWC (b, p, ch)
            int64_t b = i / (c * hw), ch = i / hw % c, p = i % hw;
            at = (b * hw + p) * c + ch;
        }
        q[at] = (uint8_t)v;
    }
}

// oneDNN: y [rows, out] from `input` (linear: rows of in; conv: [n, in, h, w]).
static lcm_status run_onednn(int8_layer *l, const tensor *input, int64_t n, int64_t h, int64_t w,
                             int64_t oh, int64_t ow, tensor *y) {
    uint8_t *q = malloc((size_t)(tensor_numel(input) ? tensor_numel(input) : 1));
    lcm_status st = q ? LCM_OK : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "int8 layer: out of memory");
    int64_t key[4] = {n, h, w, omp_get_max_threads()};
    if (st == LCM_OK && (!l->primitive || memcmp(key, l->key, sizeof key))) {
        st = make_primitive(l, n, h, w, oh, ow);
        if (st == LCM_OK) memcpy(l->key, key, sizeof key);
    }
    if (st == LCM_OK && n > 0) {
        quantize_input(l, input, q);
        dnnl_memory_t src = NULL, dst = NULL, zero_point = NULL;
        dnnl_memory_desc_t zp_md;
        dnnl_dims_t one = {1};
        dnnl_memory_desc_init_by_tag(&zp_md, 1, one, dnnl_s32, dnnl_a);
        int32_t zp = l->zero_point;
        dnnl_status_t s = dnnl_memory_create(&src, &l->src_md, engine, q);
        if (s == dnnl_success) s = dnnl_memory_create(&dst, &l->dst_md, engine, y->data);
        if (s == dnnl_success) s = dnnl_memory_create(&zero_point, &zp_md, engine, &zp);
        if (s == dnnl_success) {
            dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, l->packed}, {DNNL_ARG_DST, dst},
                                      {DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, zero_point}};
            s = dnnl_primitive_execute(l->primitive, stream, 4, args);
        }
        if (s == dnnl_success) s = dnnl_stream_wait(stream);
        dnnl_memory_t mems[] = {src, dst, zero_point};
        for (int i = 0; i < 3; i++)
            if (mems[i]) dnnl_memory_destroy(mems[i]);
        st = check(s, "execution");
    }
    free(q);
    return st;
}

// Ours: quantized into a padded NHWC buffer, the bias added in the kernel's last step.
static lcm_status run_ours(const int8_layer *l, const tensor *input, int64_t n, int64_t h, int64_t w,
                           const float *bias, tensor *y) {
    int8_input g;
    int8_input_geometry(&l->packed_ours, n, h, w, &g);
    int64_t bytes = int8_input_bytes(&l->packed_ours, &g);
    // A tensor's storage, for its buffer reuse (core/tensor.h): the VAE's inputs are tens of MB a
    // call, and fresh pages from the system cost a zeroing fault each (9.6% of an int8 generation's
    // samples with plain malloc).
    tensor *storage = tensor_new(1, (int64_t[]){(bytes + 3) / 4 > 0 ? (bytes + 3) / 4 : 1});
    if (!storage) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "int8 layer: out of memory for %lld input bytes",
                                  (long long)bytes);
    uint8_t *buffer = (uint8_t *)storage->data;
    bool nchw = input->ndim == 4 && input->layout == TENSOR_NCHW;
    int8_quantize_input(&l->packed_ours, &g, input->data, nchw, l->input_scale, buffer);
    int8_gemm_run(&l->packed_ours, &g, buffer, bias, INT8_ISA_AUTO, y->data);
    tensor_free(storage);
    return LCM_OK;
}

tensor *int8_layer_forward(int8_layer *l, const tensor *x, const float *bias) {
    if (!x) return NULL;
    const tensor *input = x;
    tensor *converted = NULL;
    int64_t n, h = 1, w = 1, oh = 1, ow = 1;
    tensor *y = NULL;
    if (l->kernel == 0) {
        if (x->shape[x->ndim - 1] != l->in) {
            lcm_fail(LCM_ERR_INTERNAL, "int8 linear: input has %lld features, layer expects %d",
                     (long long)x->shape[x->ndim - 1], l->in);
            return NULL;
        }
        if (x->ndim == 4 && x->layout != TENSOR_NCHW && !(input = converted = tensor_to_nchw(x))) return NULL;
        n = tensor_numel(x) / l->in;
        int64_t shape[TENSOR_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[x->ndim - 1] = l->out;
        y = tensor_new(x->ndim, shape);
    } else {
        if (x->ndim != 4 || x->shape[1] != l->in) {
            lcm_fail(LCM_ERR_INTERNAL, "int8 conv: input has %lld channels, layer expects %d",
                     (long long)(x->ndim == 4 ? x->shape[1] : -1), l->in);
            return NULL;
        }
        n = x->shape[0], h = x->shape[2], w = x->shape[3];
        oh = (h + 2 * l->padding - l->kernel) / l->stride + 1;
        ow = (w + 2 * l->padding - l->kernel) / l->stride + 1;
        y = tensor_new4(n, l->out, oh, ow);
        if (y) y->layout = TENSOR_NHWC;
    }
    lcm_status st = y ? LCM_OK : lcm_fail(LCM_ERR_OUT_OF_MEMORY, "int8 layer: out of memory");
    // oneDNN only where the CPU (as cpu.h shows it now) has VNNI: int8_kernel_for_cpu
    bool onednn = int8_kernel_for_cpu(l->choice) == INT8_KERNEL_ONEDNN;
    if (st == LCM_OK && onednn && (st = check(engine_status, "engine creation")) == LCM_OK)
        st = run_onednn(l, input, n, h, w, oh, ow, y);
    else if (st == LCM_OK && !onednn)
        st = run_ours(l, input, n, h, w, bias, y);
    // oneDNN's bias outside the primitive, as our kernels add it: a multiply, then an add
    if (st == LCM_OK && onednn && bias) {
        int64_t rows = tensor_numel(y) / l->out;
        #pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t o = 0; o < l->out; o++) y->data[r * l->out + o] += bias[o];
    }
    tensor_free(converted);
    if (st != LCM_OK) tensor_replace(&y, NULL);
    return y;
}
