// The backend's table of kernel families (ops/kernel_family.h) and their names. Below the rest of the
// backend: the layer code packs a layer with a named family through it, and the backend's
// measurements (ops/backend.c) pack layers that way.
#include <stddef.h>

#include "ops/backend.h"
#include "ops/kernel_family.h"

// Every kernel family (ops/kernel_family.h), in the order the packed-weight cache tries them. A new
// family is its own file, its conv_kernel / linear_kernel value (ops.h) and one entry here; which
// shapes it competes for is candidates_of's business (ops/backend.c).
static const kernel_family *const kernel_families[] = {
    &kernel_family_direct,
    &kernel_family_onednn,
    &kernel_family_sgemm,
    &kernel_family_int8, // chosen by a quantized model's file (layer_quant_pack), never per shape
};
#define KERNEL_FAMILY_COUNT ((int)(sizeof kernel_families / sizeof *kernel_families))

const kernel_family *const *backend_kernel_families(int *count) {
    *count = KERNEL_FAMILY_COUNT;
    return kernel_families;
}

const kernel_family *backend_conv_family(conv_kernel kernel) {
    for (int f = 0; f < KERNEL_FAMILY_COUNT && kernel != CONV_KERNEL_AUTO; f++)
        if (kernel_families[f]->conv_id == kernel) return kernel_families[f];
    return NULL;
}

const kernel_family *backend_linear_family(linear_kernel kernel) {
    for (int f = 0; f < KERNEL_FAMILY_COUNT && kernel != LINEAR_KERNEL_AUTO; f++)
        if (kernel_families[f]->linear_id == kernel) return kernel_families[f];
    return NULL;
}

const char *conv_kernel_name(conv_kernel kernel) {
    const kernel_family *family = backend_conv_family(kernel);
    return family ? family->name : "auto";
}

const char *linear_kernel_name(linear_kernel kernel) {
    const kernel_family *family = backend_linear_family(kernel);
    return family ? family->name : "auto";
}
