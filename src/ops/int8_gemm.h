// Our own int8 convolution and linear kernels: u8 activations in NHWC with one zero point per
// tensor, s8 weights with one scale per output channel, float32 out. Every kernel computes the
// EXACT int32 sums
//     acc[p, o] = sum over taps and input channels of (q_x - zero_point) * q_w[o, ...]
// (padding contributes nothing: a padded pixel holds the zero point) and then, in float32,
//     y[p, o] = (float)acc[p, o] * out_scale[o]   and, where a bias is given, + bias[o]
// as two roundings (a multiply, then an add), which is what oneDNN's u8 x s8 primitives with an
// output scale and our bias pass after them compute. So every kernel here, on every CPU, and
// oneDNN's VNNI kernels give the same bits; int8_reference_run is the plain-C definition.
//
// Kernels:
//  - AMX (Sapphire Rapids and later): tdpbusd, 16 pixels x 16 channels x 64 inputs per
//    instruction, on stride-1 convolutions with "same" padding and linear layers whose inputs are
//    a multiple of 64 (every UNet and VAE layer but the first and the downsamplers); see the AMX
//    section of int8_gemm.c.
//  - AVX-512 VNNI: vpdpbusd sums four u8 x s8 products into int32 directly; a register tile of 6
//    output pixels x 64 output channels (24 zmm accumulators). The zero point is taken out once per
//    output channel: sum (q_x - zp) w = sum q_x w - zp * sum w.
//  - AVX2: a = q_x - 128 as s8 and vpmaddubsw(|a|, sign(w, a)): |a| <= 128 and |w| <= 127, so a
//    pair of products sums to at most 2 * 128 * 127 = 32512 and the 16-bit saturation of vpmaddubsw
//    never happens; vpmaddwd by ones widens to int32. sum (q_x - zp) w = sum a w + (128 - zp) sum w.
//    (The 7-bit weights that oneDNN's AVX2 path needed are gone.)
// Both read the same packed weights, so a layer may run either one per call.
#ifndef LCM_OPS_INT8_GEMM_H
#define LCM_OPS_INT8_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include "lcm.h"

// A layer's geometry. kernel 0: linear (rows of `in` values); else a kernel x kernel convolution.
typedef struct int8_shape {
    int in, out, kernel, stride, padding;
} int8_shape;

// The weights packed for int8_gemm_run, with what the kernels need per output channel.
typedef struct int8_packed {
    int8_shape shape;
    int32_t zero_point;     // of the layer's input
    int in_padded;          // input channels rounded up to 4 (one vpdpbusd group)
    int taps;               // kernel * kernel (1 for linear)
    int blocks;             // output channels / 16, rounded up
    // [blocks][taps][in_padded / 4][16 channels][4 inputs]: the 64 bytes one k-group of a block of
    // 16 output channels reads; channels past `out` and inputs past `in` are 0.
    int8_t *weight;
    int32_t *zp_times_sum;  // [blocks * 16]: zero_point * sum w[o, ...] (VNNI)
    int32_t *avx2_offset;   // [blocks * 16]: (zero_point - 128) * sum w[o, ...] (AVX2)
    float *out_scale;       // [blocks * 16]: weight_scale[o] * input_scale (0 past out)
} int8_packed;

// Packs weights stored as s8 [out, in(, k, k)] with scales [out]. Fails (error set, nothing
// allocated) on out of memory. *p is filled; int8_packed_free releases it.
lcm_status int8_packed_init(int8_packed *p, const int8_shape *shape, const int8_t *weight,
                            const float *weight_scale, float input_scale, int32_t zero_point);
void int8_packed_free(int8_packed *p);
// The plain s8 weights [out, in, k, k] back from the packing (for oneDNN, which packs its own).
void int8_packed_unpack(const int8_packed *p, int8_t *weight);

// The input buffer the kernels read: u8 NHWC with `padding` pixels of zero_point around each image
// and in_padded channels per pixel (linear: rows of in_padded). Sizes for an input of n images of
// h x w (linear: n rows, h = w = 1).
typedef struct int8_input {
    int64_t n, h, w;           // as given
    int64_t padded_h, padded_w;
    int64_t out_h, out_w;      // the output's size (1 x 1 for linear)
} int8_input;
void int8_input_geometry(const int8_packed *p, int64_t n, int64_t h, int64_t w, int8_input *g);
int64_t int8_input_bytes(const int8_packed *p, const int8_input *g);

// Quantizes x (float; NCHW when `nchw` and a convolution, else NHWC / rows) into the buffer,
// round half to even: q = clamp(round(x / scale) + zp, 0, 255), as fake_quantize_u8 does.
void int8_quantize_input(const int8_packed *p, const int8_input *g, const float *x, bool nchw,
                         float input_scale, uint8_t *buffer);

typedef enum int8_isa {
    INT8_ISA_AUTO = 0, // AMX where the CPU has it and the layer fits it, else VNNI, else AVX2
    INT8_ISA_VNNI,
    INT8_ISA_AVX2,
    INT8_ISA_AMX,      // AMX where it can run the layer, else as AUTO
} int8_isa;

// Whether the AMX tiles can run here: the CPU has AMX-TILE and AMX-INT8 (not hidden with
// AVX-512, not turned off with LCM_AMX=0) and Linux granted the process the tile state (asked
// once, arch_prctl ARCH_REQ_XCOMP_PERM).
bool int8_amx_usable(void);
// Whether the AMX kernel takes layer p: a linear layer, or a stride-1 convolution with "same"
// padding; input channels a multiple of 64 (in_padded).
bool int8_amx_fits(const int8_packed *p);

// The kernel int8_gemm_run runs for layer p when `asked` (never AUTO) on this CPU as cpu.h shows it.
int8_isa int8_gemm_isa(const int8_packed *p, int8_isa asked);

// y [n * out_h * out_w, out] from the quantized buffer; bias [out] or NULL. Threads over OpenMP;
// the result does not depend on the thread count or the ISA.
void int8_gemm_run(const int8_packed *p, const int8_input *g, const uint8_t *buffer,
                   const float *bias, int8_isa isa, float *y);

// The definition: plain C over plain weights [out, in, k, k] and the unpadded u8 input (NHWC, or
// rows), out_scale [out], bias [out] or NULL -> y [n * oh * ow, out].
void int8_reference_run(const int8_shape *shape, int64_t n, int64_t h, int64_t w, const uint8_t *x,
                        int32_t zero_point, const int8_t *weight, const float *out_scale,
                        const float *bias, float *y);

#endif
