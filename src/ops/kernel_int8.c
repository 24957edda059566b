// The int8 family (kernel_family.h): the int8 kernels (ours, or oneDNN's u8 x s8 primitives where
// the CPU has VNNI: ops/int8_layer.h) for the layers a quantized model (lcm quantize) stores with
// 8-bit input parameters. Not chosen per shape by the backend but by the model file:
// layer_quant_pack / layer_quant_pack_s8 move such a layer onto it. It takes the layer's input as
// given and quantizes it itself, so it is a whole-layer `forward`.
#include "ops/int8_layer.h"
#include "ops/kernel_family.h"

static tensor *int8_forward(const void *state, const tensor *x, const float *bias) {
    return int8_layer_forward((int8_layer *)state, x, bias);
}

static void int8_free(void *state) { int8_layer_free(state); }

const kernel_family kernel_family_int8 = {
    .name = "int8",
    .conv_id = CONV_KERNEL_AUTO,     // never forced or tuned: the model file decides
    .linear_id = LINEAR_KERNEL_AUTO,
    .forward = int8_forward,
    .conv_free = int8_free,
    .linear_free = int8_free,
};
