// The direct family (kernel_family.h): our AVX2 + FMA kernels on weights packed once at load,
// ops/conv_direct.h (direct and Winograd convolutions, fusing upsample, residual and ReLU) and
// ops/linear_direct.h (each value summed in input order, whatever the rows or threads).
#include "core/error.h"
#include "ops/conv_direct.h"
#include "ops/kernel_family.h"
#include "ops/linear_direct.h"

static lcm_status direct_conv_pack(const conv2d *c, lcm_precision precision, void **state) {
    (void)precision; // computes in fp32 whatever was asked (never worse in accuracy)
    if (!conv_direct_available())
        return lcm_fail(LCM_ERR_UNSUPPORTED, "conv2d_pack: the direct kernel needs AVX2 and FMA");
    conv_direct *d = NULL;
    LCM_TRY(conv_direct_new(c->weight, c->bias, c->in, c->out, c->kernel, c->stride, c->padding,
                            &d));
    *state = d;
    return LCM_OK;
}

// The direct AVX2 kernel (ops/conv_direct.h) with `fusion` done inside it.
static tensor *direct_conv_run(const conv2d *c, const tensor *x, int64_t oh, int64_t ow,
                               const conv2d_fusion *fusion) {
    tensor *converted = x->layout == TENSOR_NHWC ? NULL : tensor_to_nhwc(x);
    if (x->layout != TENSOR_NHWC && !converted) return NULL;
    const tensor *residual = fusion->residual;
    tensor *residual_converted = NULL;
    if (residual && residual->layout != TENSOR_NHWC)
        residual = residual_converted = tensor_to_nhwc(residual);
    tensor *y = fusion->residual && !residual ? NULL : tensor_new4(x->shape[0], c->out, oh, ow);
    if (y) {
        y->layout = TENSOR_NHWC;
        const conv_direct_epilogue epilogue = {
            .residual = residual ? residual->data : NULL,
            .relu = fusion->activation == CONV_ACTIVATION_RELU,
        };
        if (conv_direct_run(c->impl.state, converted ? converted->data : x->data, x->shape[0],
                            x->shape[2], x->shape[3], fusion->upsample_input, &epilogue,
                            y->data) != LCM_OK)
            tensor_replace(&y, NULL);
    }
    tensor_free(converted);
    tensor_free(residual_converted);
    return y;
}

static lcm_status direct_conv_prepare_upsampled(const conv2d *c) {
    return conv_direct_prepare_upsampled(c->impl.state);
}

static void direct_conv_free(void *state) { conv_direct_free(state); }

static void direct_conv_export(const conv2d *c, packed_entry *entry) {
    conv_direct_export(c->impl.state, entry);
}

static lcm_status direct_conv_import(const conv2d *c, const packed_entry *entry, void **state) {
    (void)c;
    conv_direct *d = NULL;
    LCM_TRY(conv_direct_import(entry, &d));
    *state = d;
    return LCM_OK;
}

static lcm_status direct_linear_pack(const linear *l, lcm_precision precision, void **state) {
    (void)precision; // fp32, as direct_conv_pack
    if (!linear_direct_available())
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "linear_pack: the direct kernel needs AVX2 and FMA");
    linear_direct *d = NULL;
    LCM_TRY(linear_direct_new(l->weight, l->bias, l->in, l->out, &d));
    *state = d;
    return LCM_OK;
}

// Each value's sum is the same whatever the other rows: all rows at once.
static lcm_status direct_linear_run(const linear *l, const float *x, int64_t rows, int64_t items,
                                    float *y) {
    (void)items;
    linear_direct_run(l->impl.state, x, rows, y);
    return LCM_OK;
}

static void direct_linear_free(void *state) { linear_direct_free(state); }

static void direct_linear_export(const linear *l, packed_entry *entry) {
    linear_direct_export(l->impl.state, entry);
}

static lcm_status direct_linear_import(linear *l, const packed_entry *entry, void **state) {
    (void)l;
    linear_direct *d = NULL;
    LCM_TRY(linear_direct_import(entry, &d));
    *state = d;
    return LCM_OK;
}

const kernel_family kernel_family_direct = {
    .name = "direct",
    .conv_id = CONV_KERNEL_DIRECT,
    .linear_id = LINEAR_KERNEL_DIRECT,
    .conv_cache = PACKED_CONV_DIRECT,
    .linear_cache = PACKED_LINEAR_DIRECT,
    .conv_pack = direct_conv_pack,
    .conv_run = direct_conv_run,
    .conv_fuses = true,
    .conv_prepare_upsampled = direct_conv_prepare_upsampled,
    .conv_free = direct_conv_free,
    .conv_export = direct_conv_export,
    .conv_import = direct_conv_import,
    .linear_pack = direct_linear_pack,
    .linear_run = direct_linear_run,
    .linear_free = direct_linear_free,
    .linear_export = direct_linear_export,
    .linear_import = direct_linear_import,
};
