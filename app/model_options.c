#include "app/model_options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

arg_spec model_option_spec(model_options *o, model_option which, const char *help) {
    arg_spec spec;
    switch (which) {
    case MODEL_OPTION_MODEL:
        spec = (arg_spec){"model", ARG_STRING, &o->model,
                          "diffusers model folder, single .safetensors checkpoint, or hub id ORG/NAME[@REVISION] "
                          "(downloaded on first use)",
                          false};
        break;
    case MODEL_OPTION_VARIANT:
        spec = (arg_spec){"variant", ARG_STRING, &o->variant,
                          "weight variant, e.g. fp16 (falls back to the plain files)", false};
        break;
    case MODEL_OPTION_THREADS:
        spec = (arg_spec){"threads", ARG_INT, &o->threads, "compute threads (default: one per physical core)", false};
        break;
    case MODEL_OPTION_PRECISION:
        spec = (arg_spec){"precision", ARG_STRING, &o->precision, "fp32 (default) or bf16", false};
        break;
    case MODEL_OPTION_LORA:
        spec = (arg_spec){"lora", ARG_STRING, &o->lora_specs,
                          "LoRA adapter FILE[:SCALE] fused at load (repeatable)", true};
        break;
    case MODEL_OPTION_LORA_LENIENT:
        spec = (arg_spec){"lora-lenient", ARG_FLAG, &o->lora_lenient,
                          "warn instead of failing on LoRA keys that match nothing", false};
        break;
    case MODEL_OPTION_CONTROLNET:
        spec = (arg_spec){"controlnet", ARG_STRING, &o->controlnet,
                          "ControlNetModel steering the UNet: folder or hub id ORG/NAME[@REVISION]", false};
        break;
    case MODEL_OPTION_TAESD:
        spec = (arg_spec){"taesd", ARG_STRING, &o->taesd,
                          "decode with this TAESD (AutoencoderTiny) instead of the VAE: folder or hub id "
                          "ORG/NAME[@REVISION], e.g. madebyollin/taesd",
                          false};
        break;
    case MODEL_OPTION_TOKENIZER:
        spec = (arg_spec){"tokenizer", ARG_STRING, &o->tokenizer,
                          "CLIP tokenizer folder (vocab.json, merges.txt) for a single-file checkpoint that has "
                          "none (default: $LCM_TOKENIZER, else the Hugging Face cache of "
                          "openai/clip-vit-large-patch14)",
                          false};
        break;
    case MODEL_OPTION_NO_CACHE:
    default:
        spec = (arg_spec){"no-cache", ARG_FLAG, &o->no_cache,
                          "neither read nor write the packed-weight cache (see 'lcm cache')", false};
        break;
    }
    if (help) spec.help = help;
    return spec;
}

bool model_precision_parse(const char *text, lcm_precision *precision) {
    if (!text || !strcmp(text, "fp32")) *precision = LCM_PRECISION_FP32;
    else if (!strcmp(text, "bf16")) *precision = LCM_PRECISION_BF16;
    else return false;
    return true;
}

bool model_options_check(const model_options *o, const char *command) {
    lcm_precision unused;
    if (!model_precision_parse(o->precision, &unused)) {
        fprintf(stderr, "%s: --precision '%s': expected fp32 or bf16\n", command, o->precision);
        return false;
    }
    if (o->threads < 0 || o->threads > 1024) {
        fprintf(stderr, "%s: --threads %ld: expected 0 (auto) or 1..1024\n", command, o->threads);
        return false;
    }
    return true;
}

lcm_status model_setup_init(model_setup *s, const model_options *o, bool quiet) {
    memset(s, 0, sizeof *s);
    lcm_pipeline_options_init(&s->pipeline);
    lcm_hub_options_init(&s->hub);
    s->hub.variant = o->variant;
    download_progress_attach(&s->download, quiet, &s->hub);
    // --lora FILE[:SCALE]: the paths are copied out of the specs, which may carry a scale suffix.
    s->lora_count = o->lora_specs.count;
    lcm_status st = args_loras(&o->lora_specs, s->loras, s->lora_paths);
    s->pipeline.variant = o->variant;
    s->pipeline.threads = (int)o->threads;
    s->pipeline.loras = s->loras;
    s->pipeline.lora_count = s->lora_count;
    s->pipeline.lora_lenient = o->lora_lenient;
    s->pipeline.tokenizer = o->tokenizer;
    s->pipeline.no_cache = o->no_cache;
    model_precision_parse(o->precision, &s->pipeline.precision); // checked by model_options_check
    return st;
}

lcm_status model_setup_resolve_extras(model_setup *s, const model_options *o) {
    // --controlnet and --taesd ids are repositories of one model at their root.
    lcm_status st = LCM_OK;
    if (o->controlnet) st = lcm_single_model_resolve(o->controlnet, &s->hub, &s->controlnet_path);
    const char *variant = s->hub.variant;
    s->hub.variant = NULL; // the TAESD loads only its plain weights
    if (st == LCM_OK && o->taesd) st = lcm_single_model_resolve(o->taesd, &s->hub, &s->taesd_path);
    s->hub.variant = variant;
    s->pipeline.controlnet = s->controlnet_path;
    s->pipeline.taesd = s->taesd_path;
    return st;
}

lcm_status model_setup_resolve(model_setup *s, const char *model, char **path) {
    // A hub id becomes its snapshot folder in the Hugging Face cache (downloaded the first time).
    return lcm_model_resolve(model, &s->hub, path);
}

void model_setup_free(model_setup *s) {
    args_loras_free(s->lora_paths, s->lora_count);
    free(s->controlnet_path);
    free(s->taesd_path);
    s->controlnet_path = s->taesd_path = NULL;
}
