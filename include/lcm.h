// lcm.c — public C API.
//
// Ownership rules, stated once and repeated on each function:
//  - A handle returned by lcm_*_open/new is owned by the caller and released with the matching
//    lcm_*_close/free. Passing NULL to a release function is allowed and does nothing.
//  - Strings and arrays passed in are borrowed for the duration of the call only.
//  - Strings returned as `const char *` are owned by the library and stay valid as documented.
#ifndef LCM_H
#define LCM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lcm_status {
    LCM_OK = 0,
    LCM_ERR_INVALID_ARGUMENT = 1, // the caller asked for something impossible (bad size, steps, ...)
    LCM_ERR_IO = 2,               // a file could not be opened, read, mapped or written
    LCM_ERR_FORMAT = 3,           // a file's content is malformed (safetensors, JSON, PNG, ...)
    LCM_ERR_UNSUPPORTED = 4,      // well-formed, but a feature/config value this build cannot run
    LCM_ERR_OUT_OF_MEMORY = 5,
    LCM_ERR_CANCELLED = 6, // the progress callback asked to stop
    LCM_ERR_INTERNAL = 7,
} lcm_status;

// The message of the last failure on the calling thread ("" if none). Owned by the library; valid
// until the next lcm_* call on the same thread.
const char *lcm_last_error(void);

// Clears the calling thread's error message.
void lcm_clear_error(void);

// A short constant name for a status ("malformed input"). Static storage; never freed.
const char *lcm_status_name(lcm_status status);

// ---- pipelines ---------------------------------------------------------------------------------

// A loaded text-to-image pipeline: tokenizer, text encoder, UNet, VAE and LCM scheduler of one
// model folder. Not safe for concurrent lcm_generate calls on the same handle (use one per thread).
typedef struct lcm_pipeline lcm_pipeline;

// Arithmetic of the UNet/VAE/text-encoder kernels. fp32 reproduces the reference library; bf16
// holds weights in bfloat16 and accumulates in fp32 (half the memory, about twice the speed on
// CPUs with AVX512-BF16). A quantized (int8) model folder runs int8 whatever is chosen here.
typedef enum lcm_precision {
    LCM_PRECISION_FP32 = 0,
    LCM_PRECISION_BF16 = 1,
} lcm_precision;

// How the VAE decodes: AUTO tiles only when the untiled decode would not fit the memory budget.
typedef enum lcm_vae_tiling {
    LCM_VAE_TILING_AUTO = 0,
    LCM_VAE_TILING_OFF = 1,
    LCM_VAE_TILING_ON = 2,
} lcm_vae_tiling;

// One LoRA adapter to fuse into the weights at load: W += scale * (alpha / rank) * up * down.
typedef struct lcm_lora {
    const char *path; // .safetensors in the kohya, diffusers or PEFT key format; borrowed
    float scale;      // 1.0 = as trained
} lcm_lora;

typedef struct lcm_pipeline_options {
    // Weight variant: "fp16" loads *.fp16.safetensors where present, falling back to the plain
    // file (as diffusers' `variant=`). NULL or "" for the plain files.
    const char *variant;
    // Worker threads for the compute kernels; 0 = one per physical core (OMP_NUM_THREADS if set).
    int threads;
    lcm_precision precision; // default LCM_PRECISION_FP32
    // LoRA adapters (lora_count entries, may be 0); a key that matches no module is an error
    // unless lora_lenient is non-zero (then a warning on stderr).
    const lcm_lora *loras;
    int lora_count;
    int lora_lenient;
    // A ControlNetModel folder (diffusers layout) to steer the UNet, or NULL.
    const char *controlnet;
    // An AutoencoderTiny (TAESD) folder used instead of the VAE decoder, or NULL.
    const char *taesd;
    lcm_vae_tiling vae_tiling; // default AUTO
    // Memory the pipeline may use for one generation, in bytes; 0 = derived from the machine.
    uint64_t memory_budget;
} lcm_pipeline_options;

// Fills *options with the defaults (no variant, one thread per core, fp32, no adapters).
void lcm_pipeline_options_init(lcm_pipeline_options *options);

// Loads the diffusers pipeline folder `model_dir` (model_index.json, text_encoder/, tokenizer/,
// unet/, vae/, scheduler/). `options` may be NULL for the defaults; it is only read during the
// call. On success *out is owned by the caller and must be released with lcm_pipeline_close.
// On failure *out is NULL and lcm_last_error() says what is wrong with which file.
lcm_status lcm_pipeline_open(const char *model_dir, const lcm_pipeline_options *options,
                             lcm_pipeline **out);

// Releases everything the pipeline owns. NULL is allowed.
void lcm_pipeline_close(lcm_pipeline *pipeline);

// The UNet's native image size (sample_size * 8), the default width and height. Never fails.
int lcm_pipeline_default_size(const lcm_pipeline *pipeline);

// The scheduler's original_inference_steps: the largest valid `steps`.
int lcm_pipeline_max_steps(const lcm_pipeline *pipeline);

// Called after each denoising step with the number of steps done (1..total). Return non-zero to
// cancel: lcm_generate then returns LCM_ERR_CANCELLED and produces no image.
typedef int (*lcm_progress_fn)(void *user_data, int steps_done, int total_steps,
                               double elapsed_seconds);

typedef struct lcm_image lcm_image;

// Called after each denoising step with a preview of the current denoised estimate (image
// `index` of the batch): TAESD when loaded, else a cheap latent->RGB projection, at any size the
// library chooses. `preview` is borrowed for the duration of the call only.
typedef void (*lcm_preview_fn)(void *user_data, int steps_done, int total_steps, int index,
                               const lcm_image *preview);

typedef struct lcm_request {
    const char *prompt;   // UTF-8; borrowed for the duration of lcm_generate
    uint64_t seed;        // torch.manual_seed(seed) semantics: same seed -> same image as diffusers
    int steps;            // 1..lcm_pipeline_max_steps(); default 4
    float guidance_scale; // LCM guidance (w = guidance_scale - 1 is embedded); default 8.5
    int width, height;    // multiples of 8; 0 = lcm_pipeline_default_size()
    int batch;            // images per prompt, drawn from one generator as diffusers does; default 1
    lcm_progress_fn progress; // optional
    void *progress_user_data;
    // Classifier-free guidance (UNets without an LCM guidance embedding, e.g. SD1.5 + LCM-LoRA):
    // the negative prompt (NULL = "") is used when guidance is active.
    const char *negative_prompt;
    // img2img: start from this image (borrowed; resized to width x height if needed), keeping
    // (1 - strength) of it. NULL = text-to-image.
    const lcm_image *init_image;
    float strength; // 0 < strength <= 1; default 0.8 (diffusers' LCM img2img default)
    // ControlNet conditioning image (borrowed; already preprocessed: edges, normals, ...), used
    // when the pipeline was opened with a ControlNet; control_scale default 1.0.
    const lcm_image *control_image;
    float control_scale;
    lcm_preview_fn preview; // optional; costs one small decode per step when set
    void *preview_user_data;
} lcm_request;

// Fills *request with the defaults of diffusers' LatentConsistencyModelPipeline: 4 steps,
// guidance 8.5, the model's native size, batch 1, seed 0, empty prompt, no callback.
void lcm_request_init(lcm_request *request);

struct lcm_image {
    int width, height;
    uint8_t *rgb; // width * height * 3 bytes, row-major RGB
};

typedef struct lcm_result {
    int count;          // = request batch
    lcm_image *images;  // count images
    uint64_t seed;      // the seed they were made with
} lcm_result;

// Generates request->batch images. On success *out is owned by the caller (lcm_result_free).
// Bad requests (size not a multiple of 8, steps out of range, ...) return
// LCM_ERR_INVALID_ARGUMENT with a message; nothing is allocated then.
lcm_status lcm_generate(lcm_pipeline *pipeline, const lcm_request *request, lcm_result **out);

// Releases a result and its images. NULL is allowed.
void lcm_result_free(lcm_result *result);

// Writes one RGB image as a PNG, atomically (a temporary file in the same folder renamed into
// place: `path` never holds a partial file). `parameters` (may be NULL) is stored as the A1111
// `parameters` tEXt chunk. All arguments are borrowed.
lcm_status lcm_write_png(const char *path, const lcm_image *image, const char *parameters);

#ifdef __cplusplus
}
#endif
#endif
