// The image-generation pipeline behind the public lcm_pipeline handle (include/lcm.h, whose
// lcm_pipeline_* / lcm_generate functions in api/ are these with their arguments checked).
//
// Kept separate from the public header so that tests can look inside: `generate_run` takes a trace
// callback that sees every intermediate tensor under the names the golden files use
// ("prompt_embeds", "initial_latents", "step0.noise_pred", "image_decoded", ...).
#ifndef LCM_PIPELINE_PIPELINE_H
#define LCM_PIPELINE_PIPELINE_H

#include "adapt/lora.h"
#include "core/tensor.h"
#include "io/file.h"
#include "io/model_folder.h"
#include "lcm.h"
#include "models/controlnet.h"
#include "models/taesd.h"
#include "models/unet.h"
#include "models/vae.h"
#include "ops/backend.h"
#include "sched/lcm_scheduler.h"
#include "models/clip_text.h"
#include "text/clip_tokenizer.h"

struct lcm_pipeline {
    // The kernels and weight precision of every model this pipeline loads (ops/backend.h),
    // resolved once when it opens; the models keep what they need of it at run time.
    ops_backend backend;
    model_folder folder;
    clip_tokenizer *tokenizer;
    clip_text_model *text_encoder;
    unet_model *unet;
    vae_model *vae;
    controlnet_model *controlnet; // NULL unless the options named one
    taesd_model *taesd; // options.taesd, or NULL: decodes instead of the VAE (pipeline/decode.h)
    lcm_vae_tiling vae_tiling;
    uint64_t memory_budget; // options.memory_budget (0 = the default, decode.h)
    lcm_scheduler_config scheduler_config;
    int threads;
    lora_set *loras; // NULL without adapters; fused into the unet and text encoder at load
    // For the infotext (pipeline/infotext.c): the file whose hash is the "Model hash" (the
    // single-file checkpoint, or the UNet weights file a folder's unet was read from), the
    // adapters as given, and their hashes once computed (hashes_done).
    char *model_file;
    struct pipeline_adapter {
        char *path;
        float scale;
        char sha256[65];
    } *adapters;
    int adapter_count;
    char model_short_hash[11]; // "" when there is no model file (synthetic weights)
    bool hashes_done;
    // The mappings of this pipeline's weight files (and packed-weight cache files): a file that
    // shrinks under them spoils this pipeline's loads and generations, not another's (io/file.h).
    io_mapping_owner mappings;
};

// ---- opening (pipeline/pipeline.c) ----

// The default options (lcm_pipeline_options_init): all zero.
void pipeline_options_init(lcm_pipeline_options *options);

// Loads and checks every component (lcm_pipeline_open); `options` may be NULL for the defaults.
// On success *out is the caller's (pipeline_close); on failure it is NULL.
lcm_status pipeline_open(const char *model_dir, const lcm_pipeline_options *options, lcm_pipeline **out);

// Frees the pipeline and everything it owns. NULL is allowed.
void pipeline_close(lcm_pipeline *p);

// The adapters' load report, "" without adapters; owned by the pipeline.
const char *pipeline_lora_report(const lcm_pipeline *p);

// The UNet's native image size (sample_size * the VAE's downscale factor).
int pipeline_default_size(const lcm_pipeline *p);

// The scheduler's original_inference_steps: the largest valid `steps`.
int pipeline_max_steps(const lcm_pipeline *p);

// The file whose hash is the infotext's "Model hash", "" when there is none; owned by the pipeline.
const char *pipeline_model_file(const lcm_pipeline *p);

// ---- generating ----

// The defaults of diffusers' LatentConsistencyModelPipeline (lcm_request_init).
void generate_request_init(lcm_request *request);

// Checks a request against the pipeline (sizes, steps, batch, control units, memory) and fills in
// the defaults (sizes from the init/control image or the model): *resolved is what runs.
lcm_status generate_request_check(const lcm_pipeline *p, const lcm_request *request, lcm_request *resolved);

// Called with each intermediate; the tensor is borrowed for the duration of the call.
typedef void (*generate_trace_fn)(void *user_data, const char *name, const tensor *value);

// Runs one request; *images is [batch, 3, H, W] in [-1, 1] (caller frees). `trace` may be NULL.
lcm_status generate_run(lcm_pipeline *p, const lcm_request *request, generate_trace_fn trace,
                        void *trace_user_data, tensor **images);

// What lcm_generate does with non-NULL arguments: generate_run on this pipeline's threads, checked
// against its files shrinking, as 8-bit RGB images. On success *out is the caller's
// (generate_result_free); on failure NULL.
lcm_status generate_images(lcm_pipeline *p, const lcm_request *request, lcm_result **out);

// Frees a result and its images. NULL is allowed.
void generate_result_free(lcm_result *result);

#endif
