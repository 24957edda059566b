// Opening and closing a pipeline folder: every component is loaded and checked once, here, so
// generation itself never fails on a model file.
#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/file.h"
#include "io/quantization_scheme.h"
#include "pipeline/pipeline.h"
#include "pipeline/scheduler_config.h"
#include "pipeline/tokenizer_source.h"
#include "ops/cpu.h"
#include "ops/ops.h"

void pipeline_options_init(lcm_pipeline_options *options) {
    memset(options, 0, sizeof *options);
}

void pipeline_close(lcm_pipeline *p) {
    if (!p) return;
    clip_tokenizer_close(p->tokenizer);
    clip_text_free(p->text_encoder);
    unet_free(p->unet);
    vae_free(p->vae);
    controlnet_free(p->controlnet);
    taesd_free(p->taesd);
    lcm_scheduler_config_free(&p->scheduler_config);
    model_folder_close(&p->folder);
    lora_set_free(p->loras);
    free(p->model_file);
    for (int i = 0; i < p->adapter_count; i++) free(p->adapters[i].path);
    free(p->adapters);
    io_mapping_owner_release(&p->mappings); // after the models that mapped files
    free(p);
    tensor_release_cached();
}

// The components this pipeline needs, with the classes we can run.
static lcm_status check_component(const model_folder *folder, const char *component,
                                  const char *expected_class) {
    const char *class_name = NULL;
    if (!model_folder_has_component(folder, component, &class_name))
        return lcm_fail(LCM_ERR_FORMAT, "%s/model_index.json: component '%s' is missing (expected %s)",
                        folder->root, component, expected_class);
    if (strcmp(class_name, expected_class))
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s/model_index.json: %s is a %s, expected %s",
                        folder->root, component, class_name, expected_class);
    return LCM_OK;
}

static lcm_status load_components(lcm_pipeline *p, const lcm_pipeline_options *options) {
    model_folder *f = &p->folder;
    if (!f->index.root)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: no model_index.json; expected a diffusers pipeline folder (text_encoder/, "
                        "tokenizer/, unet/, vae/, scheduler/)",
                        f->root);
    LCM_TRY(check_component(f, "text_encoder", "CLIPTextModel"));
    LCM_TRY(check_component(f, "unet", "UNet2DConditionModel"));
    LCM_TRY(check_component(f, "vae", "AutoencoderKL"));

    LCM_TRY(pipeline_open_tokenizer(f, options->tokenizer, &p->tokenizer));
    LCM_TRY(clip_text_load(&p->backend, f, "text_encoder", &p->text_encoder));
    LCM_TRY(unet_load(&p->backend, f, "unet", &p->unet));
    // img2img reads the encoder back, with a copy of the backend the VAE keeps
    LCM_TRY(vae_load_encoder_on_demand(&p->backend, f, "vae", &p->vae));

    // Whatever scheduler the folder ships, LCM runs it: LCMScheduler.from_config(its config).
    json_config scheduler;
    LCM_TRY(model_folder_load_config(f, "scheduler", "scheduler_config.json", &scheduler));
    lcm_status st = scheduler_config_read(&scheduler, &p->scheduler_config);
    json_config_free(&scheduler);
    if (st != LCM_OK) return lcm_fail_context(st, "%s: ", f->root);

    const unet_config *uc = unet_get_config(p->unet);
    if (uc->cross_attention_dim != clip_text_hidden_size(p->text_encoder))
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: unet cross_attention_dim %d does not match the text encoder's hidden "
                        "size %d",
                        f->root, uc->cross_attention_dim, clip_text_hidden_size(p->text_encoder));
    if (uc->in_channels != vae_get_config(p->vae)->latent_channels)
        return lcm_fail(LCM_ERR_FORMAT, "%s: unet in_channels %d != vae latent_channels %d", f->root,
                        uc->in_channels, vae_get_config(p->vae)->latent_channels);
    return LCM_OK;
}

// model_folder weights hook: remembers the file the UNet's weights come from (the infotext's
// "Model hash"), and fuses LoRA updates as the unet and text encoder read weights.
static lcm_status on_weights_opened(void *user, const char *component, weight_set *weights) {
    lcm_pipeline *p = user;
    if (!strcmp(component, "unet") && !p->model_file && !p->folder.checkpoint && !p->folder.synthetic &&
        !(p->model_file = strdup(weight_set_source(weights))))
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    return p->loras ? lora_set_attach(p->loras, component, weights) : LCM_OK;
}

// Keeps the adapters' paths and scales for the infotext (the options are only borrowed).
static lcm_status keep_adapters(lcm_pipeline *p, const lcm_pipeline_options *options) {
    if (options->lora_count <= 0) return LCM_OK;
    p->adapters = calloc((size_t)options->lora_count, sizeof *p->adapters);
    if (!p->adapters) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < options->lora_count; i++) {
        p->adapter_count = i + 1;
        p->adapters[i].scale = options->loras[i].scale;
        if (!(p->adapters[i].path = strdup(options->loras[i].path ? options->loras[i].path : "")))
            return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    return LCM_OK;
}

const char *pipeline_lora_report(const lcm_pipeline *p) {
    return p->loras ? lora_set_report(p->loras) : "";
}

// The TAESD folder replaces the VAE for decoding; it must speak the UNet's latents.
static lcm_status load_taesd(lcm_pipeline *p, const char *dir) {
    LCM_TRY(taesd_load_dir(&p->backend, dir, &p->taesd));
    const taesd_config *tc = taesd_get_config(p->taesd);
    const vae_config *vc = vae_get_config(p->vae);
    if (tc->latent_channels != unet_get_config(p->unet)->in_channels ||
        tc->downscale_factor != vc->downscale_factor || tc->out_channels != vc->out_channels)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s/config.json: TAESD with %d latent channels, downscale %d and %d "
                        "output channels does not fit %s (unet in_channels %d, VAE downscale %d, "
                        "%d output channels)",
                        dir, tc->latent_channels, tc->downscale_factor, tc->out_channels,
                        p->folder.root, unet_get_config(p->unet)->in_channels,
                        vc->downscale_factor, vc->out_channels);
    return LCM_OK;
}

lcm_status pipeline_open(const char *model_dir, const lcm_pipeline_options *options, lcm_pipeline **out) {
    *out = NULL;
    lcm_pipeline_options defaults;
    if (!options) {
        pipeline_options_init(&defaults);
        options = &defaults;
    }
    if (options->threads < 0)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "threads = %d, expected 0 (auto) or more",
                        options->threads);
    if (options->precision != LCM_PRECISION_FP32 && options->precision != LCM_PRECISION_BF16)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "precision %d: expected fp32 (0) or bf16 (1)",
                        (int)options->precision);
    if (options->vae_tiling != LCM_VAE_TILING_AUTO && options->vae_tiling != LCM_VAE_TILING_OFF &&
        options->vae_tiling != LCM_VAE_TILING_ON)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "vae_tiling = %d, expected AUTO, OFF or ON",
                        (int)options->vae_tiling);
    lcm_pipeline *p = calloc(1, sizeof *p);
    if (!p) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    // The files mapped from here on are this pipeline's (see the end).
    io_mapping_owner *previous_owner = io_mapping_owner_enter(&p->mappings);
    // Before loading: oneDNN fixes a primitive's thread count when it is created. Auto is one
    // thread per physical core, unless OMP_NUM_THREADS says otherwise.
    p->threads = options->threads > 0          ? options->threads
                 : getenv("OMP_NUM_THREADS") ? omp_get_max_threads()
                                             : cpu_physical_cores();
    omp_set_num_threads(p->threads);
    io_prepare_threads_for_faults(); // the team reads the weight files' mappings
    p->vae_tiling = options->vae_tiling;
    p->memory_budget = options->memory_budget;
    // Every model below is loaded with this backend: the precision asked for, the rest from the
    // environment (ops/backend.h).
    p->backend = ops_backend_from_environment(options->precision);
    // Adapter files are checked before the (slow) model load.
    lcm_status st = LCM_OK;
    if (options->lora_count)
        st = lora_set_open(options->loras, options->lora_count, options->lora_lenient != 0, &p->loras);
    if (st == LCM_OK) st = keep_adapters(p, options);
    if (st == LCM_OK) st = model_folder_open(model_dir, options->variant, &p->folder);
    if (st == LCM_OK) p->folder.packed_cache = !options->no_cache;
    if (st == LCM_OK) {
        p->folder.weights_hook = on_weights_opened;
        p->folder.weights_hook_user = p;
        // A single-file checkpoint is itself the model file A1111 hashes.
        if (p->folder.checkpoint && !(p->model_file = strdup(p->folder.root)))
            st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (st == LCM_OK) st = load_components(p, options);
    p->folder.weights_hook = NULL;
    if (st == LCM_OK && p->loras) st = lora_set_finish(p->loras);
    // The ControlNet is loaded after the hook is removed: diffusers' load_lora_weights adapts the
    // UNet and text encoder only.
    if (st == LCM_OK && options->controlnet) {
        st = controlnet_load(&p->backend, options->controlnet, options->variant, !options->no_cache,
                             &p->controlnet);
        if (st == LCM_OK) st = controlnet_check_fits(p->controlnet, unet_get_config(p->unet), model_dir);
    }
    if (st == LCM_OK && options->taesd) st = load_taesd(p, options->taesd);
    // What lcm quantize wrote beside quantized weights must be intact too, in every component.
    if (st == LCM_OK) st = quantization_scheme_check_model(model_dir);
    if (st == LCM_OK && options->controlnet) st = quantization_scheme_check(options->controlnet);
    // Loaders that pack or copy weights straight from a mapping (not through st_read_f32) read
    // zeros from a file that shrank meanwhile (io/file.h): such a model is not loaded.
    if (st == LCM_OK) st = io_mapping_owner_check(&p->mappings, "loading the model");
    io_mapping_owner_enter(previous_owner);
    if (st != LCM_OK) {
        pipeline_close(p);
        return st;
    }
    *out = p;
    return LCM_OK;
}

int pipeline_default_size(const lcm_pipeline *p) {
    // diffusers: unet.config.sample_size * vae_scale_factor (768 for LCM_Dreamshaper_v7).
    int sample = unet_get_config(p->unet)->sample_size[0];
    return (sample > 0 ? sample : 64) * vae_get_config(p->vae)->downscale_factor;
}

int pipeline_max_steps(const lcm_pipeline *p) {
    return p->scheduler_config.original_inference_steps;
}

const char *pipeline_model_file(const lcm_pipeline *p) { return p->model_file ? p->model_file : ""; }
