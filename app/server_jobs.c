// `lcm serve`: the job queue, the generation worker and the models it loads (see server_internal.h
// for the threads, the lock and who owns a job).
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "app/server_internal.h"

double serve_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int serve_http_status_for(lcm_status st) {
    switch (st) {
    case LCM_OK: return 200;
    case LCM_ERR_INVALID_ARGUMENT: return 400;
    case LCM_ERR_UNSUPPORTED: return 501;
    case LCM_ERR_CANCELLED: return 503;
    case LCM_ERR_OUT_OF_MEMORY: return 503;
    default: return 500;
    }
}

// ---- models -----------------------------------------------------------------------------------------

static int stop_at_first_step(void *user, int done, int total, double elapsed) {
    (void)user, (void)done, (void)total, (void)elapsed;
    return 1;
}

static void ignore_preview(void *user, int done, int total, int index, const lcm_image *preview) {
    (void)user, (void)done, (void)total, (void)index, (void)preview;
}

// Whether the pipeline runs a request using an optional feature: tried for real at the smallest
// size and stopped after its first step. LCM_ERR_UNSUPPORTED means no; reaching the first step
// (cancelled) means yes.
static bool feature_works(lcm_pipeline *pipeline, const char *model, const char *feature, const lcm_request *request) {
    lcm_result *result = NULL;
    lcm_status st = lcm_generate(pipeline, request, &result);
    lcm_result_free(result);
    bool works = st == LCM_OK || st == LCM_ERR_CANCELLED;
    fprintf(stderr, "lcm serve: %s: %s: %s%s%s\n", model, feature, works ? "supported" : "not available",
            works ? "" : " - ", works ? "" : lcm_last_error());
    return works;
}

// With a ControlNet every probe carries a (grey) control image, as every request must.
static void find_features(lcm_pipeline *pipeline, const char *model, serve_features *features) {
    int side = lcm_pipeline_default_size(pipeline) < 64 ? lcm_pipeline_default_size(pipeline) : 64;
    uint8_t *gray = calloc((size_t)side * side * 3, 1);
    if (!gray) return;
    memset(gray, 128, (size_t)side * side * 3);
    lcm_image image = {side, side, gray};
    lcm_request probe;
    lcm_request_init(&probe);
    probe.prompt = "";
    probe.width = probe.height = side;
    probe.steps = 2;
    probe.progress = stop_at_first_step;
    if (features->controlnet) probe.control_image = &image;

    lcm_request r = probe;
    r.negative_prompt = "blurry";
    features->negative_prompt = feature_works(pipeline, model, "negative prompt", &r);

    r = probe;
    r.init_image = &image;
    r.strength = 1.0f;
    features->img2img = feature_works(pipeline, model, "img2img", &r);

    r = probe;
    r.preview = ignore_preview;
    features->preview = feature_works(pipeline, model, "live previews", &r);
    free(gray);
    lcm_clear_error();
}

lcm_status serve_model_load(const serve_config *config, serve_model *model) {
    lcm_pipeline *pipeline = NULL;
    double started = serve_now();
    lcm_status st = lcm_pipeline_open(model->path, config->pipeline_options, &pipeline);
    if (st != LCM_OK) return st;
    if (*lcm_pipeline_lora_report(pipeline)) fprintf(stderr, "%s\n", lcm_pipeline_lora_report(pipeline));
    if (!model->probed) {
        serve_features features = {
            .controlnet = config->pipeline_options->controlnet != NULL,
            .lora = config->pipeline_options->lora_count > 0,
            .normalbae = config->normal_detector != NULL,
        };
        find_features(pipeline, model->name, &features);
        model->features = features;
        model->default_size = lcm_pipeline_default_size(pipeline);
        model->max_steps = lcm_pipeline_max_steps(pipeline);
        model->probed = true;
    }
    model->pipeline = pipeline;
    model->last_used = serve_now();
    fprintf(stderr, "lcm serve: loaded %s in %.1f s\n", model->name, serve_now() - started);
    return LCM_OK;
}

// A1111 titles look like "name [hash]"; clients may send either form, in any case.
int serve_find_model(const server *s, const char *name) {
    if (!name || !name[0]) return s->current_model;
    const serve_config *c = s->config;
    for (int i = 0; i < c->model_count; i++)
        if (!strcmp(c->models[i].name, name)) return i;
    for (int i = 0; i < c->model_count; i++)
        if (!strcasecmp(c->models[i].name, name)) return i;
    size_t len = strcspn(name, "[");
    while (len > 0 && name[len - 1] == ' ') len--;
    for (int i = 0; i < c->model_count; i++)
        if (strlen(c->models[i].name) == len && !strncasecmp(c->models[i].name, name, len)) return i;
    return -1;
}

// Makes models[index] loaded (worker only, lock not held), unloading the least recently used
// other models beyond --max-loaded first so that peak memory stays within it.
static lcm_status ensure_loaded(server *s, int index) {
    const serve_config *c = s->config;
    serve_model *m = &c->models[index];
    if (m->pipeline) {
        m->last_used = serve_now();
        return LCM_OK;
    }
    for (;;) {
        int loaded = 0, oldest = -1;
        for (int i = 0; i < c->model_count; i++) {
            if (!c->models[i].pipeline) continue;
            loaded++;
            if (oldest < 0 || c->models[i].last_used < c->models[oldest].last_used) oldest = i;
        }
        if (loaded < c->max_loaded || oldest < 0) break;
        fprintf(stderr, "lcm serve: unloading %s (--max-loaded %d)\n", c->models[oldest].name, c->max_loaded);
        pthread_mutex_lock(&s->lock);
        lcm_pipeline *old = c->models[oldest].pipeline;
        c->models[oldest].pipeline = NULL;
        pthread_mutex_unlock(&s->lock);
        lcm_pipeline_close(old);
    }
    serve_model loading = *m;
    lcm_status st = serve_model_load(c, &loading);
    if (st != LCM_OK) return st;
    pthread_mutex_lock(&s->lock);
    *m = loading;
    pthread_mutex_unlock(&s->lock);
    return LCM_OK;
}

// ---- jobs ---------------------------------------------------------------------------------------------

job *job_new(server *s, serve_api api, job_kind kind, struct MHD_Connection *c) {
    job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->api = api;
    j->kind = kind;
    j->connection = c;
    j->socket = -1;
    j->model = s->current_model;
    return j;
}

static void job_free(job *j) {
    if (!j) return;
    // (also reached through job_discard for a job that never entered the queue)
    serve_params_free(&j->params);
    free(j->preview_base64);
    for (int i = 0; i < j->image_count; i++) {
        free(j->images_base64[i]);
        free(j->infotexts[i]);
    }
    free(j->images_base64);
    free(j->infotexts);
    free(j->seeds);
    for (int i = 0; i < SERVE_MAX_CONTROL_UNITS; i++) free(j->control_base64[i]);
    free(j);
}

void job_discard(job *j) { job_free(j); }

bool job_enqueue(server *s, job *j) {
    pthread_mutex_lock(&s->lock);
    bool ok = !s->stopping && s->queued < s->config->queue_capacity;
    if (ok) {
        j->state = JOB_QUEUED;
        j->last_wake = serve_now();
        if (s->tail)
            s->tail->next = j;
        else
            s->head = j;
        s->tail = j;
        s->queued++;
        s->open_jobs++;
        pthread_cond_signal(&s->work_ready);
    } else {
        s->rejected++;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

void job_release(server *s, job *j) {
    if (!j) return;
    pthread_mutex_lock(&s->lock);
    bool done = j->state == JOB_DONE;
    if (!done) {
        atomic_store(&j->cancel, CANCEL_CLIENT_GONE);
        j->orphaned = true;
        j->socket = -1; // the descriptor may be reused by another connection from now on
        j->connection = NULL;
        j->suspended = false;
    } else {
        s->open_jobs--;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    if (done) job_free(j);
}

void job_wake(server *s, job *j, bool final) {
    if (final || j->api == SERVE_API_PAGE) pthread_cond_broadcast(&s->changed);
    if (!j->suspended || !j->connection) return;
    // An API request waits for the end only; the page's stream shows every step.
    if (!final && j->api != SERVE_API_PAGE) return;
    j->suspended = false;
    j->last_wake = serve_now();
    MHD_resume_connection(j->connection);
}

// Marks `j` done (lock held): wakes its connection, or frees it when nobody waits any more.
static void finish_job(server *s, job *j) {
    j->state = JOB_DONE;
    if (j->orphaned) {
        s->open_jobs--;
        pthread_cond_broadcast(&s->changed);
        job_free(j);
        return;
    }
    job_wake(s, j, true);
}

// ---- the worker ----------------------------------------------------------------------------------

// The worker's nice value (and its OpenMP team's): above the HTTP threads' 0.
#define WORKER_NICE 10

typedef struct run_context {
    server *s;
    job *j;
    int iteration;
} run_context;

static int on_progress(void *user, int done, int total, double elapsed) {
    (void)elapsed;
    run_context *ctx = user;
    server *s = ctx->s;
    job *j = ctx->j;
    pthread_mutex_lock(&s->lock);
    j->total_steps = total * j->params.n_iter;
    j->steps_done = ctx->iteration * total + done;
    j->elapsed = serve_now() - j->started;
    j->progress_events++;
    if (s->stopping && !atomic_load(&j->cancel)) atomic_store(&j->cancel, CANCEL_SHUTDOWN);
    int cancel = atomic_load(&j->cancel);
    job_wake(s, j, false);
    pthread_mutex_unlock(&s->lock);
    if (s->config->step_delay_ms > 0 && !cancel) usleep((useconds_t)s->config->step_delay_ms * 1000);
    if (cancel == CANCEL_INTERRUPT) return LCM_STOP_KEEP_PARTIAL; // A1111 answers with what it has
    return cancel != CANCEL_NONE;
}

// At most one preview per step: the first image of the batch, as a base64 PNG.
static void on_preview(void *user, int done, int total, int index, const lcm_image *preview) {
    (void)total;
    run_context *ctx = user;
    server *s = ctx->s;
    if (index != 0 || !preview || !preview->rgb) return;
    pthread_mutex_lock(&s->lock);
    // API jobs make previews only while someone polls /progress for them.
    bool wanted = ctx->j->api == SERVE_API_PAGE || serve_now() < s->preview_wanted_until;
    pthread_mutex_unlock(&s->lock);
    if (!wanted) return;
    void *png = NULL;
    size_t size = 0;
    if (lcm_png_encode(preview, NULL, &png, &size) != LCM_OK) return;
    char *text = serve_base64_encode(png, size);
    free(png);
    if (!text) return;
    pthread_mutex_lock(&s->lock);
    free(ctx->j->preview_base64);
    ctx->j->preview_base64 = text;
    ctx->j->preview_events++;
    ctx->j->preview_step = ctx->iteration * total + done;
    job_wake(s, ctx->j, false);
    pthread_mutex_unlock(&s->lock);
}

static uint64_t random_seed(void) {
    uint32_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    return seed;
}

// The A1111 infotext of one image ("prompt\nNegative prompt: ...\nSteps: 4, Sampler: LCM, ...", with
// Model hash, Lora hashes and Version: lcm_pipeline_infotext): what ran (the request as generated,
// with its clamped steps), then each ControlNet unit and, after /sdapi/v1/interrupt, the step the
// partial image stopped at. On success *text is malloc'd (the caller frees it).
static lcm_status infotext(const server *s, const job *j, const lcm_request *r, int width, int height, int batch_pos,
                           char **text) {
    const serve_params *p = &j->params;
    const serve_model *m = &s->config->models[j->model];
    lcm_infotext *info = NULL;
    lcm_status st = lcm_pipeline_infotext(m->pipeline, r, batch_pos, width, height, m->name, &info);
    for (int u = 0; u < p->unit_count && st == LCM_OK; u++) {
        const serve_control_unit *unit = &p->units[u];
        char key[32] = "ControlNet", value[512];
        if (p->unit_count > 1) snprintf(key, sizeof key, "ControlNet %d", u);
        snprintf(value, sizeof value, "Module: %s, Model: %s, Weight: %g, Guidance Start: %g, Guidance End: %g",
                 serve_control_module_name(unit->module), s->config->controlnet_name, unit->weight,
                 unit->guidance_start, unit->guidance_end);
        st = lcm_infotext_set(info, key, value);
    }
    if (st == LCM_OK && j->interrupted) {
        char step[16];
        snprintf(step, sizeof step, "%d", j->steps_done);
        st = lcm_infotext_set(info, "Interrupted at step", step);
    }
    if (st == LCM_OK) st = lcm_infotext_format(info, text);
    lcm_infotext_free(info);
    return st;
}

// Encodes image `batch_pos` of the generation `r` as a base64 PNG with its infotext. On failure
// lcm_last_error says why, except for LCM_ERR_OUT_OF_MEMORY from the base64 encoding.
static lcm_status store_image(server *s, job *j, const lcm_image *img, const lcm_request *r, int batch_pos) {
    int k = j->image_count;
    char *text = NULL;
    lcm_status st = infotext(s, j, r, img->width, img->height, batch_pos, &text);
    if (st != LCM_OK) return st;
    void *png = NULL;
    size_t size = 0;
    char *encoded = NULL;
    st = lcm_png_encode(img, text, &png, &size);
    if (st == LCM_OK && !(encoded = serve_base64_encode(png, size))) st = LCM_ERR_OUT_OF_MEMORY;
    free(png);
    if (st != LCM_OK) {
        free(text);
        return st;
    }
    j->images_base64[k] = encoded;
    j->infotexts[k] = text;
    j->seeds[k] = r->seed;
    j->image_count++;
    return LCM_OK;
}

// The message of a failed prepare_control or store_image: their base64 encoding runs out of memory
// without setting one.
static const char *failure_message(lcm_status status) {
    return status == LCM_ERR_OUT_OF_MEMORY ? "out of memory" : lcm_last_error();
}

static void fail_job(job *j, lcm_status status, const char *message) {
    j->status = status;
    snprintf(j->message, sizeof j->message, "%s", message);
}

// A failure about one field of the request: its name goes to the error's `param`.
static void fail_field(job *j, lcm_status status, const char *field, const char *message) {
    fail_job(j, status, message);
    snprintf(j->field, sizeof j->field, "%s", field);
}

// Decodes unit `u`'s control image and turns it into the control map its module asks for; keeps
// the map as a base64 PNG for the response. *map is owned by the caller. On failure lcm_last_error
// says why, except for LCM_ERR_OUT_OF_MEMORY (see failure_message).
static lcm_status prepare_control(server *s, job *j, int u, lcm_image *map) {
    const serve_control_unit *unit = &j->params.units[u];
    char field[96];
    if (j->api == SERVE_API_DETECT)
        snprintf(field, sizeof field, "controlnet_input_images[%d]", u);
    else
        snprintf(field, sizeof field, "alwayson_scripts.controlnet.args[%d].image", u);
    lcm_image photo = {0};
    lcm_status st = lcm_image_decode(unit->png, unit->png_size, field, &photo); // PNG, JPEG or WebP
    if (st != LCM_OK) return LCM_ERR_INVALID_ARGUMENT; // the client's image (the message says why)
    if (unit->module == SERVE_CONTROL_CANNY) {
        st = lcm_canny(&photo, unit->threshold_a, unit->threshold_b, map);
        lcm_image_release(&photo);
    } else if (unit->module == SERVE_CONTROL_NORMALBAE) {
        st = lcm_normal_detector_run(s->config->normal_detector, &photo, unit->processor_res, unit->processor_res, map);
        lcm_image_release(&photo);
    } else {
        *map = photo;
    }
    if (st != LCM_OK) return st;
    void *png = NULL;
    size_t size = 0;
    st = lcm_png_encode(map, NULL, &png, &size);
    if (st == LCM_OK && !(j->control_base64[u] = serve_base64_encode(png, size))) st = LCM_ERR_OUT_OF_MEMORY;
    free(png);
    return st;
}

// What the model cannot do, found before any work: 501 (or 400) naming the field.
static bool check_features(server *s, job *j, const serve_model *m) {
    const serve_params *p = &j->params;
    char message[400];
    if (p->negative_prompt && !m->features.negative_prompt) {
        snprintf(message, sizeof message, "negative_prompt: %s does not take a negative prompt (an LCM-distilled "
                 "UNet has no classifier-free guidance)", m->name);
        fail_field(j, LCM_ERR_UNSUPPORTED, "negative_prompt", message);
        return false;
    }
    if (p->init_png && !m->features.img2img) {
        fail_field(j, LCM_ERR_UNSUPPORTED, "init_images", "init_images: img2img is not supported by this build/model yet");
        return false;
    }
    const char *image_field = "alwayson_scripts.controlnet.args[0].image";
    if (p->unit_count > 0 && !m->features.controlnet) {
        fail_field(j, LCM_ERR_UNSUPPORTED, image_field, "alwayson_scripts.controlnet.args[0].image: this server has "
                   "no ControlNet (start it with --controlnet DIR)");
        return false;
    }
    if (p->unit_count == 0 && m->features.controlnet) {
        fail_field(j, LCM_ERR_INVALID_ARGUMENT, j->api == SERVE_API_OPENAI ? "" : image_field,
                   j->api == SERVE_API_OPENAI ? "this server's model has a ControlNet: use /sdapi/v1/txt2img with a "
                                                "control image"
                                              : "this server's model has a ControlNet: the request needs a control "
                                                "image (alwayson_scripts.controlnet.args[0].image)");
        return false;
    }
    for (int u = 0; u < p->unit_count; u++)
        if (p->units[u].module == SERVE_CONTROL_NORMALBAE && !s->config->normal_detector) {
            char field[96];
            snprintf(field, sizeof field, "alwayson_scripts.controlnet.args[%d].module", u);
            snprintf(message, sizeof message, "%s: the normal_bae preprocessor needs NormalBae weights (start the "
                     "server with --control-weights FILE)", field);
            fail_field(j, LCM_ERR_UNSUPPORTED, field, message);
            return false;
        }
    return true;
}

// POST /controlnet/detect: every image through the module, no generation.
static void run_detect(server *s, job *j) {
    for (int u = 0; u < j->params.unit_count; u++) {
        if (j->params.units[u].module == SERVE_CONTROL_NORMALBAE && !s->config->normal_detector)
            return fail_field(j, LCM_ERR_UNSUPPORTED, "controlnet_module", "controlnet_module: the normal_bae "
                              "preprocessor needs NormalBae weights (start the server with --control-weights FILE)");
        lcm_image map = {0};
        lcm_status st = prepare_control(s, j, u, &map);
        lcm_image_release(&map);
        if (st != LCM_OK) return fail_job(j, st, failure_message(st));
    }
}

static void run_job(server *s, job *j) {
    serve_params *p = &j->params;
    if (j->api == SERVE_API_DETECT) return run_detect(s, j);
    lcm_status st = ensure_loaded(s, j->model);
    if (st != LCM_OK) return fail_job(j, st, lcm_last_error());
    serve_model *m = &s->config->models[j->model];
    if (j->kind == JOB_LOAD) return;
    if (!check_features(s, j, m)) return;
    // The model's own limits, known once it is loaded.
    if (p->steps > m->max_steps) {
        serve_params_warn(p, "steps %d is more than %s's schedule allows: %d steps ran", p->steps, m->name,
                          m->max_steps);
        p->steps = m->max_steps;
    }
    if (p->width == 0) p->width = m->default_size;
    if (p->height == 0) p->height = m->default_size;

    int total = p->batch_size * p->n_iter;
    j->images_base64 = calloc((size_t)total, sizeof *j->images_base64);
    j->infotexts = calloc((size_t)total, sizeof *j->infotexts);
    j->seeds = calloc((size_t)total, sizeof *j->seeds);
    if (!j->images_base64 || !j->infotexts || !j->seeds) return fail_job(j, LCM_ERR_OUT_OF_MEMORY, "out of memory");

    lcm_image init = {0};
    if (p->init_png) {
        st = lcm_image_decode(p->init_png, p->init_png_size, "init_images[0]", &init);
        if (st != LCM_OK) return fail_job(j, LCM_ERR_INVALID_ARGUMENT, lcm_last_error());
    }
    lcm_image control[SERVE_MAX_CONTROL_UNITS] = {0};
    lcm_control_unit units[SERVE_MAX_CONTROL_UNITS];
    for (int u = 0; u < p->unit_count && st == LCM_OK; u++) {
        st = prepare_control(s, j, u, &control[u]);
        units[u] = (lcm_control_unit){&control[u], (float)p->units[u].weight, (float)p->units[u].guidance_start,
                                      (float)p->units[u].guidance_end};
    }
    if (st != LCM_OK) fail_job(j, st, failure_message(st));
    j->seed = p->seed >= 0 ? (uint64_t)p->seed : random_seed();
    for (int it = 0; it < p->n_iter && j->status == LCM_OK && !j->interrupted; it++) {
        run_context ctx = {s, j, it};
        lcm_request r;
        lcm_request_init(&r);
        r.prompt = p->prompt;
        r.negative_prompt = p->negative_prompt;
        r.seed = j->seed + (uint64_t)it;
        r.steps = p->steps;
        r.guidance_scale = (float)p->cfg_scale;
        r.width = p->width;
        r.height = p->height;
        r.batch = p->batch_size;
        r.progress = on_progress;
        r.progress_user_data = &ctx;
        r.keep_partial = j->api != SERVE_API_PAGE;
        if (p->init_png) {
            r.init_image = &init;
            r.strength = (float)p->denoising_strength;
        }
        r.control_units = units;
        r.control_unit_count = p->unit_count;
        if (m->features.preview) {
            r.preview = on_preview;
            r.preview_user_data = &ctx;
        }
        lcm_result *result = NULL;
        st = lcm_generate(m->pipeline, &r, &result);
        if (st != LCM_OK) {
            fail_job(j, st, st == LCM_ERR_CANCELLED && atomic_load(&j->cancel) == CANCEL_SHUTDOWN
                                ? "the server is shutting down: the job was stopped, try again later"
                                : lcm_last_error());
            break;
        }
        // Stopped by /sdapi/v1/interrupt: the images are what the last step denoised.
        if (atomic_load(&j->cancel) == CANCEL_INTERRUPT) {
            j->interrupted = true;
            serve_params_warn(p, "interrupted after step %d of %d: the images are the partial result",
                              j->steps_done, j->total_steps);
        }
        for (int i = 0; i < result->count && j->status == LCM_OK; i++) {
            lcm_status stored = store_image(s, j, &result->images[i], &r, i);
            if (stored != LCM_OK)
                fail_job(j, stored, failure_message(stored));
        }
        lcm_result_free(result);
    }
    free(init.rgb);
    for (int u = 0; u < SERVE_MAX_CONTROL_UNITS; u++) lcm_image_release(&control[u]);
}

void *serve_worker_main(void *arg) {
    server *s = arg;
    // OpenMP's thread count is per calling thread: the pipeline set it (options.threads) on the
    // thread that opened it, not on this one.
    if (s->config->threads > 0) omp_set_num_threads(s->config->threads);
    // Generation yields the CPU to the threads that answer requests: a progress poll, a new
    // request or a cancel is a few microseconds of work that would otherwise wait for the
    // scheduler to take a core from a step (tens to hundreds of ms on a loaded machine). The nice
    // value is per thread on Linux, and the OpenMP team this thread starts at its first parallel
    // region inherits it. Failing to set it is harmless (the answers are only slower).
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), WORKER_NICE) != 0)
        fprintf(stderr, "lcm serve: could not lower the worker's priority: %s\n", strerror(errno));
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->work_ready, &s->lock);
        job *j = s->head;
        if (!j) break; // stopping and nothing left
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        int cancel = atomic_load(&j->cancel);
        if (s->stopping || cancel) {
            fail_job(j, LCM_ERR_CANCELLED, s->stopping ? "the server is shutting down: try again later" : "cancelled");
            s->cancelled++;
            finish_job(s, j);
            continue;
        }
        j->state = JOB_RUNNING;
        j->started = serve_now();
        s->current = j;
        job_wake(s, j, false);
        pthread_mutex_unlock(&s->lock);

        run_job(s, j);

        pthread_mutex_lock(&s->lock);
        double seconds = serve_now() - j->started;
        j->elapsed = seconds;
        if (j->kind == JOB_LOAD) {
            if (j->status == LCM_OK) s->current_model = j->model;
        } else if (j->status == LCM_OK) {
            s->completed++;
            s->mean_job_seconds = s->completed == 1 ? seconds : 0.8 * s->mean_job_seconds + 0.2 * seconds;
        } else if (j->status == LCM_ERR_CANCELLED) {
            s->cancelled++;
        } else {
            s->failed++;
        }
        if (j->kind == JOB_GENERATE)
            fprintf(stderr, "lcm serve: job %dx%d x%d, %d steps: %s in %.2f s%s%s\n", j->params.width,
                    j->params.height, j->params.batch_size * j->params.n_iter, j->params.steps,
                    j->status != LCM_OK ? lcm_status_name(j->status) : j->interrupted ? "interrupted" : "done",
                    seconds, j->status == LCM_OK ? "" : ": ", j->status == LCM_OK ? "" : j->message);
        s->current = NULL;
        finish_job(s, j);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}
