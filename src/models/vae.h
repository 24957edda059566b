// The Stable Diffusion VAE: diffusers' AutoencoderKL (v0.26.3), encoder and decoder, plus the
// conversions between its [-1, 1] NCHW images and 8-bit RGB pixels.
//
//   decode: latents [N,L,h,w] -> post_quant_conv -> Decoder -> image [N,3,h*f,w*f]
//   encode: image [N,3,H,W]   -> Encoder -> quant_conv -> mean, logvar [N,L,H/f,W/f]
// with f = 2^(blocks-1) = 8. The pipelines divide latents by config.scaling_factor before decoding
// and multiply sampled latents by it after encoding; this module does neither.
#ifndef LCM_MODELS_VAE_H
#define LCM_MODELS_VAE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "io/model_folder.h"
#include "lcm.h"

typedef struct ops_backend ops_backend; // ops/backend.h: the kernels layers are loaded for

#define VAE_MAX_BLOCKS 8

// vae/config.json, validated.
typedef struct vae_config {
    int in_channels;     // image channels fed to the encoder (3)
    int out_channels;    // image channels the decoder produces (3)
    int latent_channels; // 4 for SD1.5
    int block_count;     // len(block_out_channels) = number of down and of up blocks
    int block_out_channels[VAE_MAX_BLOCKS];
    int layers_per_block; // resnets per down block (up blocks have one more)
    int norm_num_groups;
    bool mid_block_add_attention;
    bool use_quant_conv, use_post_quant_conv; // always true for diffusers 0.26 checkpoints
    float scaling_factor; // 0.18215 for SD1.5
    int sample_size;      // the image size the VAE was trained at (tiling uses it)
    int downscale_factor; // 2^(block_count-1): image pixels per latent pixel (8)
} vae_config;

// Reads an AutoencoderKL config.json into *cfg (vae_config.c): LCM_ERR_FORMAT / LCM_ERR_UNSUPPORTED
// naming the field for what this implementation cannot run.
lcm_status vae_config_parse(const json_config *c, vae_config *cfg);

// A loaded AutoencoderKL; opaque.
typedef struct vae_model vae_model;

// Loads `component` ("vae"; NULL or "." for a single-model folder holding config.json and the
// weights at its root) of `folder`: validates config.json and reads every encoder and decoder
// weight. Both the current attention names (to_q/to_k/to_v/to_out.0) and the pre-0.14 ones
// (query/key/value/proj_attn, as linears or 1x1 convs) are accepted. `backend` chooses the layers'
// kernels and precision (only read). On success *out is owned by the caller (vae_free).
lcm_status vae_load(const ops_backend *backend, const model_folder *folder, const char *component,
                    vae_model **out);
// As vae_load (every weight is read and checked now), but the encoder, which only vae_encode
// (img2img) needs, is then dropped again and only read back from the weight file, kept open, at
// the first vae_encode: text-to-image never holds it in memory. That first vae_encode can then
// fail like a load; it loads with a copy of `backend` the model keeps. The model is then not safe
// for concurrent vae_encode calls (neither is a pipeline for concurrent generations).
lcm_status vae_load_encoder_on_demand(const ops_backend *backend, const model_folder *folder,
                                      const char *component, vae_model **out);
void vae_free(vae_model *m);

// The validated config. Borrowed from m.
const vae_config *vae_get_config(const vae_model *m);

// How many of the decoder's convs and linears (post_quant_conv included) run on the kernel family
// `family` (ops/kernel_family.h; NULL: the plain reference loops, nothing packed), out of *layers.
// For tests and summaries: an int8 decoder's layers should be on kernel_family_int8.
struct kernel_family;
int vae_decoder_layers_on(const vae_model *m, const struct kernel_family *family, int *layers);

// Number of parameters (encoder + decoder + quant convs), for summaries.
int64_t vae_param_count(const vae_model *m);

// Optional observer of intermediate activations, for tests and debugging: called with names like
// diffusers' module paths ("post_quant_conv", "decoder.conv_in", "decoder.mid_block",
// "decoder.up_blocks.0", "decoder.conv_out"; "encoder.conv_in", "encoder.down_blocks.0",
// "encoder.mid_block", "encoder.conv_out", "quant_conv"). The tensor is borrowed for the call only.
typedef void (*vae_tap_fn)(void *user, const char *name, const tensor *value);

// latents [N, latent_channels, h, w] (already divided by scaling_factor) -> *image
// [N, out_channels, h*f, w*f], roughly in [-1, 1] (not clamped). *image is owned by the caller.
lcm_status vae_decode(const vae_model *m, const tensor *latents, tensor **image);
lcm_status vae_decode_tapped(const vae_model *m, const tensor *latents, vae_tap_fn tap, void *user,
                             tensor **image);

// image [N, in_channels, H, W] in [-1, 1] -> the latent distribution's *mean and *logvar
// [N, latent_channels, H', W'] (each down block halves a side, rounding down: H' = H/f for sizes
// that are multiples of f), logvar clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution
// does. Both owned by the caller.
lcm_status vae_encode(const vae_model *m, const tensor *image, tensor **mean, tensor **logvar);
lcm_status vae_encode_tapped(const vae_model *m, const tensor *image, vae_tap_fn tap, void *user,
                             tensor **mean, tensor **logvar);

// std = exp(0.5 * logvar), elementwise; a new tensor (NULL in, NULL out).
tensor *vae_logvar_to_std(const tensor *logvar);

// ---- image conversions -------------------------------------------------------------------------

// VaeImageProcessor.postprocess(output_type="np"): clamp(x/2 + 0.5, 0, 1), NCHW -> NHWC.
// image [N, C, H, W]; out_nhwc holds N*H*W*C floats (caller-owned).
void vae_image_to_float_nhwc(const tensor *image, float *out_nhwc);

// Image `index` of a [N, 3, H, W] batch as 8-bit RGB (rgb: H*W*3 bytes, row-major, caller-owned):
// round(clamp(x/2 + 0.5, 0, 1) * 255) with round-half-to-even, as numpy's round does.
lcm_status vae_image_to_rgb8(const tensor *image, int index, uint8_t *rgb);

// VaeImageProcessor.preprocess of one 8-bit RGB image (height rows of width*3 bytes):
// x/255*2 - 1 as [1, 3, height, width]. NULL (error set) on bad sizes or out of memory.
tensor *vae_rgb8_to_image(const uint8_t *rgb, int width, int height);

#endif
