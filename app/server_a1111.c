// `lcm serve`: the AUTOMATIC1111 web UI API (/sdapi/v1/*) and the sd-webui-controlnet extension's
// (/controlnet/*) beyond generation: what clients call at start-up, for model switching and to
// watch a job, with A1111's field names and shapes. Lists of things this server does not have
// (upscalers, VAEs, styles, ...) are answered as A1111 answers them when it has none.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "app/png_info.h"
#include "app/server_internal.h"

// sd-webui-controlnet's API version this server follows (its /controlnet/version).
#define CONTROLNET_API_VERSION 2

// ---- results ----------------------------------------------------------------------------------------

// The request as A1111 echoes it in `parameters` (defaults filled in).
cJSON *serve_parameters_json(const server *s, const job *j) {
    const serve_params *p = &j->params;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", p->prompt);
    cJSON_AddStringToObject(o, "negative_prompt", p->negative_prompt ? p->negative_prompt : "");
    cJSON_AddNumberToObject(o, "seed", (double)p->seed);
    cJSON_AddStringToObject(o, "sampler_name", "LCM");
    cJSON_AddNumberToObject(o, "batch_size", p->batch_size);
    cJSON_AddNumberToObject(o, "n_iter", p->n_iter);
    cJSON_AddNumberToObject(o, "steps", p->steps);
    cJSON_AddNumberToObject(o, "cfg_scale", p->cfg_scale);
    cJSON_AddNumberToObject(o, "width", p->width);
    cJSON_AddNumberToObject(o, "height", p->height);
    if (j->api == SERVE_API_A1111_IMG2IMG || p->init_png)
        cJSON_AddNumberToObject(o, "denoising_strength", p->denoising_strength);
    if (p->unit_count > 0) { // the units as used, without their images
        cJSON *args = cJSON_CreateArray();
        for (int u = 0; u < p->unit_count; u++) {
            const serve_control_unit *unit = &p->units[u];
            cJSON *item = cJSON_CreateObject();
            cJSON_AddBoolToObject(item, "enabled", true);
            cJSON_AddStringToObject(item, "module", serve_control_module_name(unit->module));
            cJSON_AddStringToObject(item, "model", s->config->controlnet_name ? s->config->controlnet_name : "");
            cJSON_AddNumberToObject(item, "weight", unit->weight);
            cJSON_AddNumberToObject(item, "guidance_start", unit->guidance_start);
            cJSON_AddNumberToObject(item, "guidance_end", unit->guidance_end);
            if (unit->module == SERVE_CONTROL_CANNY) {
                cJSON_AddNumberToObject(item, "threshold_a", unit->threshold_a);
                cJSON_AddNumberToObject(item, "threshold_b", unit->threshold_b);
            }
            if (unit->module == SERVE_CONTROL_NORMALBAE) cJSON_AddNumberToObject(item, "processor_res", unit->processor_res);
            cJSON_AddItemToArray(args, item);
        }
        cJSON *controlnet = cJSON_CreateObject();
        cJSON_AddItemToObject(controlnet, "args", args);
        cJSON *scripts = cJSON_AddObjectToObject(o, "alwayson_scripts");
        cJSON_AddItemToObject(scripts, "controlnet", controlnet);
    }
    return o;
}

static cJSON *warnings_json(const job *j) {
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; i < j->params.warning_count; i++) cJSON_AddItemToArray(list, cJSON_CreateString(j->params.warnings[i]));
    return list;
}

// A1111's `info`: what was actually used, seeds included.
cJSON *serve_info_json(const server *s, const job *j) {
    const serve_params *p = &j->params;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prompt", p->prompt);
    cJSON_AddStringToObject(o, "negative_prompt", p->negative_prompt ? p->negative_prompt : "");
    cJSON_AddNumberToObject(o, "seed", (double)j->seed);
    cJSON *seeds = cJSON_AddArrayToObject(o, "all_seeds");
    cJSON *texts = cJSON_AddArrayToObject(o, "infotexts");
    cJSON *prompts = cJSON_AddArrayToObject(o, "all_prompts");
    cJSON *negatives = cJSON_AddArrayToObject(o, "all_negative_prompts");
    for (int i = 0; i < j->image_count; i++) {
        cJSON_AddItemToArray(seeds, cJSON_CreateNumber((double)j->seeds[i]));
        cJSON_AddItemToArray(texts, cJSON_CreateString(j->infotexts[i]));
        cJSON_AddItemToArray(prompts, cJSON_CreateString(p->prompt));
        cJSON_AddItemToArray(negatives, cJSON_CreateString(p->negative_prompt ? p->negative_prompt : ""));
    }
    cJSON_AddNumberToObject(o, "index_of_first_image", 0);
    cJSON_AddNumberToObject(o, "steps", p->steps);
    cJSON_AddNumberToObject(o, "cfg_scale", p->cfg_scale);
    cJSON_AddNumberToObject(o, "width", p->width);
    cJSON_AddNumberToObject(o, "height", p->height);
    cJSON_AddNumberToObject(o, "batch_size", p->batch_size);
    cJSON_AddNumberToObject(o, "n_iter", p->n_iter);
    cJSON_AddStringToObject(o, "sampler_name", "LCM");
    cJSON_AddStringToObject(o, "sd_model_name", s->config->models[j->model].name);
    if (p->init_png) cJSON_AddNumberToObject(o, "denoising_strength", p->denoising_strength);
    cJSON_AddNumberToObject(o, "elapsed", j->elapsed);
    cJSON_AddBoolToObject(o, "interrupted", j->interrupted);
    cJSON_AddItemToObject(o, "warnings", warnings_json(j));
    return o;
}

cJSON *serve_images_json(const job *j) {
    cJSON *images = cJSON_CreateArray();
    if (!j->params.send_images) return images;
    for (int i = 0; i < j->image_count; i++) cJSON_AddItemToArray(images, cJSON_CreateString(j->images_base64[i]));
    return images;
}

cJSON *serve_a1111_result(server *s, const job *j) {
    cJSON *root = cJSON_CreateObject();
    cJSON *images = serve_images_json(j);
    if (j->api == SERVE_API_DETECT) {
        for (int u = 0; u < j->params.unit_count; u++)
            if (j->control_base64[u]) cJSON_AddItemToArray(images, cJSON_CreateString(j->control_base64[u]));
        cJSON_AddItemToObject(root, "images", images);
        cJSON_AddStringToObject(root, "info", "Success");
        return root;
    }
    // sd-webui-controlnet's API appends the detected maps after the images when a preprocessor ran.
    for (int u = 0; u < j->params.unit_count && j->params.send_images; u++)
        if (j->control_base64[u] && j->params.units[u].module != SERVE_CONTROL_NONE)
            cJSON_AddItemToArray(images, cJSON_CreateString(j->control_base64[u]));
    cJSON_AddItemToObject(root, "images", images);
    cJSON_AddItemToObject(root, "parameters", serve_parameters_json(s, j));
    cJSON *info = serve_info_json(s, j);
    char *text = cJSON_PrintUnformatted(info);
    cJSON_Delete(info);
    cJSON_AddStringToObject(root, "info", text ? text : "{}");
    free(text);
    cJSON_AddItemToObject(root, "warnings", warnings_json(j));
    return root;
}

// ---- the page and /health ---------------------------------------------------------------------------

cJSON *serve_health_json(server *s) {
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&s->lock);
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "model", s->config->models[s->current_model].name);
    cJSON_AddBoolToObject(o, "busy", s->current != NULL);
    cJSON_AddNumberToObject(o, "queued", s->queued);
    cJSON_AddNumberToObject(o, "queue_capacity", s->config->queue_capacity);
    cJSON_AddNumberToObject(o, "completed", (double)s->completed);
    cJSON_AddNumberToObject(o, "failed", (double)s->failed);
    cJSON_AddNumberToObject(o, "cancelled", (double)s->cancelled);
    cJSON_AddNumberToObject(o, "rejected", (double)s->rejected);
    pthread_mutex_unlock(&s->lock);
    return o;
}

// What the page needs to build its form: limits, defaults and which optional controls to show,
// for the current model.
cJSON *serve_capabilities_json(server *s) {
    const serve_limits *l = &s->config->limits;
    pthread_mutex_lock(&s->lock);
    const serve_model *m = &s->config->models[s->current_model];
    serve_features features = m->features;
    int default_size = m->default_size, max_steps = m->max_steps < l->max_steps ? m->max_steps : l->max_steps;
    pthread_mutex_unlock(&s->lock);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", m->name);
    cJSON_AddNumberToObject(o, "default_size", default_size);
    cJSON_AddNumberToObject(o, "min_size", default_size < 256 ? default_size : 256);
    cJSON_AddNumberToObject(o, "max_size", l->max_size);
    cJSON_AddNumberToObject(o, "size_step", default_size < 256 ? 8 : 32);
    cJSON_AddNumberToObject(o, "default_steps", max_steps < 4 ? max_steps : 4);
    cJSON_AddNumberToObject(o, "max_steps", max_steps);
    // A UNet that takes a negative prompt runs classifier-free guidance (SD1.5 + LCM-LoRA), where
    // 8.5 would be far too strong: LCM-LoRA wants 1..2, and 1 (no guidance) is twice as fast.
    // LCM-distilled UNets embed the guidance instead; 8.5 is their pipeline's default.
    cJSON_AddNumberToObject(o, "default_guidance", features.negative_prompt ? 1.0 : 8.5);
    cJSON_AddNumberToObject(o, "max_images", l->max_images);
    cJSON_AddBoolToObject(o, "api_key_required", s->config->api_key != NULL);
    cJSON *f = cJSON_AddObjectToObject(o, "features");
    cJSON_AddBoolToObject(f, "negative_prompt", features.negative_prompt);
    cJSON_AddBoolToObject(f, "img2img", features.img2img);
    cJSON_AddBoolToObject(f, "preview", features.preview);
    cJSON_AddBoolToObject(f, "controlnet", features.controlnet);
    cJSON_AddBoolToObject(f, "lora", features.lora);
    cJSON_AddBoolToObject(f, "normalbae", features.normalbae);
    if (features.controlnet) {
        cJSON_AddStringToObject(o, "controlnet", s->config->controlnet_name);
        cJSON *modules = cJSON_AddArrayToObject(o, "control_modules");
        cJSON_AddItemToArray(modules, cJSON_CreateString("none"));
        cJSON_AddItemToArray(modules, cJSON_CreateString("canny"));
        if (features.normalbae) cJSON_AddItemToArray(modules, cJSON_CreateString("normal_bae"));
        cJSON_AddNumberToObject(o, "default_processor_res", SERVE_PROCESSOR_RES_DEFAULT);
    }
    cJSON *loras = cJSON_AddArrayToObject(o, "loras");
    for (int i = 0; i < s->config->lora_count; i++)
        cJSON_AddItemToArray(loras, cJSON_CreateString(s->config->lora_names[i]));
    return o;
}

// ---- GET endpoints ----------------------------------------------------------------------------------

static enum MHD_Result progress(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    const char *skip = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "skip_current_image");
    bool want_image = !skip || strcasecmp(skip, "true") != 0;
    cJSON *o = cJSON_CreateObject(), *state = cJSON_CreateObject();
    pthread_mutex_lock(&s->lock);
    // While someone polls with images, API jobs make a preview per step (TAESD or the latent one).
    if (want_image) s->preview_wanted_until = serve_now() + 10.0;
    job *j = s->current && s->current->kind == JOB_GENERATE ? s->current : NULL;
    double fraction = j && j->total_steps ? (double)j->steps_done / j->total_steps : 0;
    double eta = j && j->steps_done ? j->elapsed / j->steps_done * (j->total_steps - j->steps_done) : 0;
    cJSON_AddNumberToObject(o, "progress", fraction);
    cJSON_AddNumberToObject(o, "eta_relative", eta);
    cJSON_AddBoolToObject(state, "skipped", false);
    cJSON_AddBoolToObject(state, "interrupted", j && atomic_load(&j->cancel) == CANCEL_INTERRUPT);
    cJSON_AddStringToObject(state, "job", !j ? "" : j->params.init_png ? "img2img" : "txt2img");
    cJSON_AddNumberToObject(state, "job_count", s->queued + (j != NULL));
    cJSON_AddNumberToObject(state, "sampling_step", j ? j->steps_done : 0);
    cJSON_AddNumberToObject(state, "sampling_steps", j ? j->total_steps : 0);
    cJSON_AddItemToObject(o, "state", state);
    if (want_image && j && j->preview_base64)
        cJSON_AddStringToObject(o, "current_image", j->preview_base64);
    else
        cJSON_AddNullToObject(o, "current_image");
    cJSON_AddNullToObject(o, "textinfo");
    pthread_mutex_unlock(&s->lock);
    return serve_send_json(c, 200, o);
}

static enum MHD_Result interrupt(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    pthread_mutex_lock(&s->lock);
    if (s->current && s->current->kind == JOB_GENERATE) atomic_store(&s->current->cancel, CANCEL_INTERRUPT);
    pthread_mutex_unlock(&s->lock);
    return serve_send_json(c, 200, cJSON_CreateObject());
}

static enum MHD_Result sd_models(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; i < s->config->model_count; i++) {
        const char *name = s->config->models[i].name;
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "title", name);
        cJSON_AddStringToObject(m, "model_name", name);
        cJSON_AddNullToObject(m, "hash");
        cJSON_AddNullToObject(m, "sha256");
        cJSON_AddStringToObject(m, "filename", name); // never the server's path
        cJSON_AddNullToObject(m, "config");
        cJSON_AddItemToArray(list, m);
    }
    return serve_send_json(c, 200, list);
}

static enum MHD_Result options_get(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&s->lock);
    const serve_model *m = &s->config->models[s->current_model];
    cJSON_AddStringToObject(o, "sd_model_checkpoint", m->name);
    cJSON_AddBoolToObject(o, "live_previews_enable", m->features.preview);
    pthread_mutex_unlock(&s->lock);
    cJSON_AddNullToObject(o, "sd_checkpoint_hash");
    cJSON_AddStringToObject(o, "sd_vae", "Automatic");
    cJSON_AddNumberToObject(o, "sd_checkpoints_limit", s->config->max_loaded);
    cJSON_AddNumberToObject(o, "CLIP_stop_at_last_layers", 1);
    cJSON_AddStringToObject(o, "samples_format", "png");
    cJSON_AddNumberToObject(o, "show_progress_every_n_steps", 1);
    cJSON_AddStringToObject(o, "show_progress_type", "Approx cheap");
    cJSON_AddNumberToObject(o, "eta_noise_seed_delta", 0);
    cJSON_AddBoolToObject(o, "enable_pnginfo", true);
    return serve_send_json(c, 200, o);
}

static enum MHD_Result samplers(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    cJSON *list = cJSON_CreateArray(), *lcm = cJSON_CreateObject(), *aliases = cJSON_CreateArray();
    cJSON_AddStringToObject(lcm, "name", "LCM");
    cJSON_AddItemToArray(aliases, cJSON_CreateString("lcm"));
    cJSON_AddItemToObject(lcm, "aliases", aliases);
    cJSON_AddObjectToObject(lcm, "options");
    cJSON_AddItemToArray(list, lcm);
    return serve_send_json(c, 200, list);
}

static enum MHD_Result schedulers(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    cJSON *list = cJSON_CreateArray(), *automatic = cJSON_CreateObject();
    cJSON_AddStringToObject(automatic, "name", "automatic");
    cJSON_AddStringToObject(automatic, "label", "Automatic");
    cJSON_AddNullToObject(automatic, "aliases");
    cJSON_AddNumberToObject(automatic, "default_rho", -1);
    cJSON_AddBoolToObject(automatic, "need_inner_model", false);
    cJSON_AddItemToArray(list, automatic);
    return serve_send_json(c, 200, list);
}

static enum MHD_Result scripts(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    cJSON *o = cJSON_CreateObject(), *txt2img = cJSON_AddArrayToObject(o, "txt2img"),
          *img2img = cJSON_AddArrayToObject(o, "img2img");
    if (s->config->controlnet_name) { // A1111 lists script titles in lower case
        cJSON_AddItemToArray(txt2img, cJSON_CreateString("controlnet"));
        cJSON_AddItemToArray(img2img, cJSON_CreateString("controlnet"));
    }
    return serve_send_json(c, 200, o);
}

// The fused adapters, by file name (the server's paths stay private).
static enum MHD_Result loras(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; i < s->config->lora_count; i++) {
        const char *label = s->config->lora_names[i]; // "FILE:SCALE"
        const char *colon = strrchr(label, ':');
        size_t file_length = colon ? (size_t)(colon - label) : strlen(label);
        size_t stem_length = file_length;
        if (stem_length > 12 && !strncmp(label + stem_length - 12, ".safetensors", 12)) stem_length -= 12;
        char file[300], stem[300];
        snprintf(file, sizeof file, "%.*s", (int)file_length, label);
        snprintf(stem, sizeof stem, "%.*s", (int)stem_length, label);
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", stem);
        cJSON_AddStringToObject(item, "alias", stem);
        cJSON_AddStringToObject(item, "path", file);
        cJSON *metadata = cJSON_AddObjectToObject(item, "metadata");
        cJSON_AddNumberToObject(metadata, "fused_scale", colon ? atof(colon + 1) : 1.0);
        cJSON_AddItemToArray(list, item);
    }
    return serve_send_json(c, 200, list);
}

static enum MHD_Result empty_list(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    return serve_send_json(c, 200, cJSON_CreateArray());
}

// A1111 always lists the "None" upscaler; this server has no other.
static enum MHD_Result upscalers(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    cJSON *list = cJSON_CreateArray(), *none = cJSON_CreateObject();
    cJSON_AddStringToObject(none, "name", "None");
    cJSON_AddNullToObject(none, "model_name");
    cJSON_AddNullToObject(none, "model_path");
    cJSON_AddNullToObject(none, "model_url");
    cJSON_AddNumberToObject(none, "scale", 4);
    cJSON_AddItemToArray(list, none);
    return serve_send_json(c, 200, list);
}

// The model list is fixed when the server starts: nothing to rescan. A1111 answers null.
static enum MHD_Result refresh_checkpoints(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    return serve_send_json(c, 200, cJSON_CreateNull());
}

// A1111's shape: ram {free, used, total} with `used` the process's resident memory; no CUDA here.
static enum MHD_Result memory(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    long page = sysconf(_SC_PAGESIZE), pages = sysconf(_SC_PHYS_PAGES), available = sysconf(_SC_AVPHYS_PAGES);
    unsigned long long program = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &program, &resident) != 2) resident = 0;
        fclose(f);
    }
    cJSON *o = cJSON_CreateObject(), *ram = cJSON_AddObjectToObject(o, "ram"), *cuda = cJSON_AddObjectToObject(o, "cuda");
    double total = (double)pages * page, used = (double)resident * page;
    cJSON_AddNumberToObject(ram, "free", (double)available * page);
    cJSON_AddNumberToObject(ram, "used", used);
    cJSON_AddNumberToObject(ram, "total", total);
    cJSON_AddStringToObject(cuda, "error", "this server runs on the CPU");
    return serve_send_json(c, 200, o);
}

static enum MHD_Result cmd_flags(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    const serve_config *config = s->config;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "api", true);
    cJSON_AddBoolToObject(o, "nowebui", false);
    cJSON_AddStringToObject(o, "listen", config->host);
    cJSON_AddNumberToObject(o, "port", config->port);
    cJSON_AddBoolToObject(o, "api_auth", config->api_key != NULL);
    cJSON_AddNumberToObject(o, "queue", config->queue_capacity);
    cJSON_AddNumberToObject(o, "max_size", config->limits.max_size);
    cJSON_AddNumberToObject(o, "max_steps", config->limits.max_steps);
    cJSON_AddNumberToObject(o, "max_batch", config->limits.max_images);
    cJSON_AddNumberToObject(o, "max_loaded", config->max_loaded);
    cJSON_AddNumberToObject(o, "models", config->model_count);
    cJSON_AddBoolToObject(o, "controlnet", config->controlnet_name != NULL);
    return serve_send_json(c, 200, o);
}

// ---- POST /sdapi/v1/options ---------------------------------------------------------------------------

// Only sd_model_checkpoint is acted on: switching models waits until the model is loaded (as A1111
// does), so the next generation runs on it. Other settings are not this server's; they are
// accepted and have no effect (A1111 also skips names it does not know).
int serve_options_model(server *s, struct MHD_Connection *c, const char *body, size_t size, enum MHD_Result *answered) {
    cJSON *root = cJSON_ParseWithLength(body ? body : "", size);
    const cJSON *checkpoint = cJSON_GetObjectItemCaseSensitive(root, "sd_model_checkpoint");
    int index = -1;
    char message[400];
    if (!cJSON_IsObject(root)) {
        *answered = serve_send_error_code(c, 400, "", "invalid_json", "the request body must be a JSON object of options");
    } else if (!checkpoint || cJSON_IsNull(checkpoint)) {
        *answered = serve_send_json(c, 200, cJSON_CreateNull());
    } else if (!cJSON_IsString(checkpoint)) {
        *answered = serve_send_error_code(c, 400, "sd_model_checkpoint", "invalid_type",
                                          "field 'sd_model_checkpoint' must be a string");
    } else if ((index = serve_find_model(s, checkpoint->valuestring)) < 0) {
        snprintf(message, sizeof message, "sd_model_checkpoint '%.100s' is not one of this server's models (see "
                 "/sdapi/v1/sd-models)", checkpoint->valuestring);
        *answered = serve_send_error_code(c, 400, "sd_model_checkpoint", "model_not_found", message);
    } else {
        pthread_mutex_lock(&s->lock);
        bool already = s->current_model == index && s->config->models[index].pipeline;
        pthread_mutex_unlock(&s->lock);
        if (already) { // nothing changes: no reload
            *answered = serve_send_json(c, 200, cJSON_CreateNull());
            index = -1;
        }
    }
    cJSON_Delete(root);
    return index;
}

// ---- sd-webui-controlnet ---------------------------------------------------------------------------

static enum MHD_Result controlnet_version(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "version", CONTROLNET_API_VERSION);
    return serve_send_json(c, 200, o);
}

static enum MHD_Result controlnet_models(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    cJSON *o = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(o, "model_list");
    if (s->config->controlnet_name) cJSON_AddItemToArray(list, cJSON_CreateString(s->config->controlnet_name));
    return serve_send_json(c, 200, o);
}

// The preprocessors this server runs, with the slider meanings the extension reports.
static enum MHD_Result controlnet_modules(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)body, (void)size;
    cJSON *o = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(o, "module_list");
    cJSON *detail = cJSON_AddObjectToObject(o, "module_detail");
    const char *names[] = {"none", "canny", "normal_bae"};
    int count = s->config->normal_detector ? 3 : 2;
    for (int i = 0; i < count; i++) {
        cJSON_AddItemToArray(list, cJSON_CreateString(names[i]));
        cJSON *d = cJSON_AddObjectToObject(detail, names[i]);
        cJSON_AddBoolToObject(d, "model_free", i == 0);
        cJSON *sliders = cJSON_AddArrayToObject(d, "sliders");
        if (i == 0) continue;
        cJSON *res = cJSON_CreateObject();
        cJSON_AddStringToObject(res, "name", "Preprocessor Resolution");
        cJSON_AddNumberToObject(res, "value", SERVE_PROCESSOR_RES_DEFAULT);
        cJSON_AddNumberToObject(res, "min", 64);
        cJSON_AddNumberToObject(res, "max", 2048);
        cJSON_AddItemToArray(sliders, res);
        if (i != 1) continue;
        const char *labels[] = {"Canny Low Threshold", "Canny High Threshold"};
        const int values[] = {SERVE_CANNY_LOW_DEFAULT, SERVE_CANNY_HIGH_DEFAULT};
        for (int k = 0; k < 2; k++) {
            cJSON *t = cJSON_CreateObject();
            cJSON_AddStringToObject(t, "name", labels[k]);
            cJSON_AddNumberToObject(t, "value", values[k]);
            cJSON_AddNumberToObject(t, "min", 1);
            cJSON_AddNumberToObject(t, "max", 255);
            cJSON_AddItemToArray(sliders, t);
        }
    }
    return serve_send_json(c, 200, o);
}

static enum MHD_Result embeddings(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    (void)s, (void)body, (void)size;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddObjectToObject(o, "loaded");
    cJSON_AddObjectToObject(o, "skipped");
    return serve_send_json(c, 200, o);
}

// ---- POST /sdapi/v1/png-info ------------------------------------------------------------------------

// A1111's "PNG Info": the generation parameters an image carries (app/png_info.c).
static enum MHD_Result png_info(server *s, struct MHD_Connection *c, const char *body, size_t size) {
    cJSON *answer = NULL;
    const char *field = "";
    char message[512];
    int status = png_info_answer(body, size, s->config->limits.max_image_bytes, &answer, &field, message,
                                 sizeof message);
    return status == 200 ? serve_send_json(c, 200, answer) : serve_send_error(c, status, field, message);
}

// ---- routing -------------------------------------------------------------------------------------------

typedef struct a1111_route {
    const char *path;
    bool post;
    serve_handler handler;
} a1111_route;

static const a1111_route a1111_routes[] = {
    {"/sdapi/v1/progress", false, progress},
    {"/sdapi/v1/interrupt", true, interrupt},
    {"/sdapi/v1/sd-models", false, sd_models},
    {"/sdapi/v1/png-info", true, png_info},
    {"/sdapi/v1/options", false, options_get},
    {"/sdapi/v1/samplers", false, samplers},
    {"/sdapi/v1/schedulers", false, schedulers},
    {"/sdapi/v1/scripts", false, scripts},
    {"/sdapi/v1/loras", false, loras},
    {"/sdapi/v1/sd-vae", false, empty_list},
    {"/sdapi/v1/upscalers", false, upscalers},
    {"/sdapi/v1/latent-upscale-modes", false, empty_list},
    {"/sdapi/v1/hypernetworks", false, empty_list},
    {"/sdapi/v1/face-restorers", false, empty_list},
    {"/sdapi/v1/realesrgan-models", false, empty_list},
    {"/sdapi/v1/prompt-styles", false, empty_list},
    {"/sdapi/v1/refresh-checkpoints", true, refresh_checkpoints},
    {"/sdapi/v1/memory", false, memory},
    {"/sdapi/v1/cmd-flags", false, cmd_flags},
    {"/sdapi/v1/embeddings", false, embeddings},
    {"/controlnet/version", false, controlnet_version},
    {"/controlnet/model_list", false, controlnet_models},
    {"/controlnet/module_list", false, controlnet_modules},
};

serve_handler serve_a1111_handler(const char *path, bool post, bool *path_known) {
    for (size_t i = 0; i < sizeof a1111_routes / sizeof a1111_routes[0]; i++) {
        if (strcmp(a1111_routes[i].path, path) != 0) continue;
        *path_known = true;
        if (a1111_routes[i].post == post) return a1111_routes[i].handler;
    }
    return NULL;
}
