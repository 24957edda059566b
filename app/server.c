// `lcm serve`: HTTP front end, job queue and generation worker.
//
// Threads: libmicrohttpd runs a thread per connection (so a handler may block until its job is
// done, and an event stream may block until the next event); one worker thread owns the pipeline
// and runs jobs in arrival order. They share `server.lock`: the queue, every job's progress fields
// and the statistics are read and written only under it; `server.changed` is broadcast whenever a
// job moves.
//
// Cancelling: a job's `cancel` flag is set when its client goes away (noticed by peeking at the
// socket while waiting) or by /sdapi/v1/interrupt; the progress callback returns it, so the
// library stops after the current step. A queued job that was cancelled is skipped.
//
// Ownership: the connection thread creates a job, queues it, waits until the worker marks it DONE
// and then frees it. The worker never touches a job after marking it DONE.
#include "app/server.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "io/image.h"

#define EVENT_KEEPALIVE_SECONDS 10.0

// ---- jobs -----------------------------------------------------------------------------------------

typedef enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE } job_state;

typedef struct job {
    serve_api api;
    serve_params params;
    int socket;        // the client's connection: a peek that sees EOF means it went away
    atomic_int cancel; // non-zero: stop at the next step (or skip if still queued)
    struct job *next;  // queue link

    // Under server.lock:
    job_state state;
    int steps_done, total_steps;
    double started, elapsed; // monotonic seconds
    int progress_events;     // bumped at every step
    char *preview_base64;    // the latest preview PNG, or NULL
    int preview_events;

    // Written by the worker before DONE, read by the connection thread after:
    lcm_status status;
    char message[512];
    uint64_t seed; // the first seed used (the request's, or a random one)
    int image_count;
    char **images_base64; // PNGs with the A1111 `parameters` chunk
    char **infotexts;     // the `parameters` text of each image
    uint64_t *seeds;      // the seed of the lcm_generate call that made each image
    char *control_base64; // the control map the ControlNet saw (PNG), or NULL
} job;

typedef struct server {
    const serve_config *config;
    const serve_features *features;
    lcm_pipeline *pipeline;
    pthread_mutex_t lock;
    pthread_cond_t work_ready; // the worker waits for jobs
    pthread_cond_t changed;    // connection threads wait for their job to move
    job *head, *tail;
    int queued;
    job *current;
    bool stopping;
    // Statistics for /health.
    unsigned long completed, failed, cancelled, rejected;
    double mean_job_seconds;
} server;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Waits on `cond` for at most `seconds` (the lock held).
static void timed_wait(pthread_cond_t *cond, pthread_mutex_t *lock, double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(seconds * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_cond_timedwait(cond, lock, &ts);
}

// True when the client has closed its side of the connection (or it broke).
static bool peer_closed(int socket) {
    if (socket < 0) return false;
    char byte;
    ssize_t n = recv(socket, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

static void job_free(job *j) {
    if (!j) return;
    serve_params_free(&j->params);
    free(j->preview_base64);
    for (int i = 0; i < j->image_count; i++) {
        free(j->images_base64[i]);
        free(j->infotexts[i]);
    }
    free(j->images_base64);
    free(j->infotexts);
    free(j->seeds);
    free(j->control_base64);
    free(j);
}

// Queues a job; false when the queue is full or the server is stopping (then nothing changed).
static bool enqueue(server *s, job *j) {
    pthread_mutex_lock(&s->lock);
    bool ok = !s->stopping && s->queued < s->config->queue_capacity;
    if (ok) {
        j->state = JOB_QUEUED;
        if (s->tail)
            s->tail->next = j;
        else
            s->head = j;
        s->tail = j;
        s->queued++;
        pthread_cond_signal(&s->work_ready);
    } else {
        s->rejected++;
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

// Blocks until the worker is done with `j`, cancelling it if the client disconnects meanwhile.
static void wait_until_done(server *s, job *j) {
    pthread_mutex_lock(&s->lock);
    while (j->state != JOB_DONE) {
        timed_wait(&s->changed, &s->lock, 0.25);
        if (!atomic_load(&j->cancel) && peer_closed(j->socket)) atomic_store(&j->cancel, 1);
    }
    pthread_mutex_unlock(&s->lock);
}

// ---- the worker ----------------------------------------------------------------------------------

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
    j->elapsed = now_seconds() - j->started;
    j->progress_events++;
    bool stop = s->stopping;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    if (s->config->step_delay_ms > 0) usleep((useconds_t)s->config->step_delay_ms * 1000);
    return stop || atomic_load(&ctx->j->cancel);
}

static void on_preview(void *user, int done, int total, int index, const lcm_image *preview) {
    (void)done, (void)total;
    run_context *ctx = user;
    if (index != 0 || !preview || !preview->rgb) return;
    void *png = NULL;
    size_t size = 0;
    if (image_encode_png(preview->rgb, preview->width, preview->height, NULL, NULL, 0, &png, &size) != LCM_OK)
        return;
    char *text = serve_base64_encode(png, size);
    free(png);
    if (!text) return;
    pthread_mutex_lock(&ctx->s->lock);
    free(ctx->j->preview_base64);
    ctx->j->preview_base64 = text;
    ctx->j->preview_events++;
    pthread_cond_broadcast(&ctx->s->changed);
    pthread_mutex_unlock(&ctx->s->lock);
}

static uint64_t random_seed(void) {
    uint32_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    return seed;
}

// The A1111 infotext of one image ("prompt\nNegative prompt: ...\nSteps: 4, Sampler: LCM, ...").
static char *infotext(const server *s, const job *j, uint64_t seed, int width, int height, int batch_pos) {
    const serve_params *p = &j->params;
    char buf[20000];
    int n = snprintf(buf, sizeof buf, "%s", p->prompt);
    if (p->negative_prompt)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "\nNegative prompt: %s", p->negative_prompt);
    n += snprintf(buf + n, sizeof buf - (size_t)n,
                  "\nSteps: %d, Sampler: LCM, CFG scale: %g, Seed: %llu, Size: %dx%d, Model: %s", p->steps,
                  p->cfg_scale, (unsigned long long)seed, width, height, s->config->model_name);
    if (p->init_png && n < (int)sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ", Denoising strength: %g", p->denoising_strength);
    if (p->batch_size > 1 && n < (int)sizeof buf)
        n += snprintf(buf + n, sizeof buf - (size_t)n, ", Batch size: %d, Batch pos: %d", p->batch_size, batch_pos);
    if (p->control_png && n < (int)sizeof buf)
        snprintf(buf + n, sizeof buf - (size_t)n, ", ControlNet: \"Module: %s, Model: %s, Weight: %g\"",
                 serve_control_module_name(p->control_module), s->config->controlnet_name, p->control_weight);
    return strdup(buf);
}

// Encodes one result image as a base64 PNG with its infotext; false when out of memory.
static bool store_image(server *s, job *j, const lcm_image *img, uint64_t seed, int batch_pos) {
    int k = j->image_count;
    char *text = infotext(s, j, seed, img->width, img->height, batch_pos);
    const char *key = "parameters";
    void *png = NULL;
    size_t size = 0;
    char *encoded = NULL;
    if (text && image_encode_png(img->rgb, img->width, img->height, &key, (const char *const *)&text, 1,
                                 &png, &size) == LCM_OK)
        encoded = serve_base64_encode(png, size);
    free(png);
    if (!encoded) {
        free(text);
        return false;
    }
    j->images_base64[k] = encoded;
    j->infotexts[k] = text;
    j->seeds[k] = seed;
    j->image_count++;
    return true;
}

static void fail_job(job *j, lcm_status status, const char *message) {
    j->status = status;
    snprintf(j->message, sizeof j->message, "%s", message);
}

// Decodes the request's control image and turns it into the control map its module asks for;
// keeps the map as a base64 PNG for the response. *map is owned by the caller.
static lcm_status prepare_control(server *s, job *j, lcm_image *map) {
    const serve_params *p = &j->params;
    lcm_image photo = {0};
    lcm_status st = image_decode_png(p->control_png, p->control_png_size, "alwayson_scripts.controlnet.args[0].image",
                                     &photo.rgb, &photo.width, &photo.height);
    if (st != LCM_OK) return LCM_ERR_INVALID_ARGUMENT; // the client's image (the message says why)
    if (p->control_module == SERVE_CONTROL_CANNY) {
        st = lcm_canny(&photo, p->threshold_a, p->threshold_b, map);
        lcm_image_release(&photo);
    } else if (p->control_module == SERVE_CONTROL_NORMALBAE) {
        st = lcm_normal_detector_run(s->config->normal_detector, &photo, p->processor_res, p->processor_res, map);
        lcm_image_release(&photo);
    } else {
        *map = photo;
    }
    if (st != LCM_OK) return st;
    void *png = NULL;
    size_t size = 0;
    st = image_encode_png(map->rgb, map->width, map->height, NULL, NULL, 0, &png, &size);
    if (st == LCM_OK && !(j->control_base64 = serve_base64_encode(png, size)))
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "out of memory");
    free(png);
    return st;
}

static void run_job(server *s, job *j) {
    const serve_params *p = &j->params;
    int total = p->batch_size * p->n_iter;
    j->images_base64 = calloc((size_t)total, sizeof *j->images_base64);
    j->infotexts = calloc((size_t)total, sizeof *j->infotexts);
    j->seeds = calloc((size_t)total, sizeof *j->seeds);
    if (!j->images_base64 || !j->infotexts || !j->seeds) return fail_job(j, LCM_ERR_OUT_OF_MEMORY, "out of memory");

    lcm_image init = {0};
    if (p->init_png) {
        lcm_status st = image_decode_png(p->init_png, p->init_png_size, "init_images[0]", &init.rgb,
                                         &init.width, &init.height);
        if (st != LCM_OK) return fail_job(j, LCM_ERR_INVALID_ARGUMENT, lcm_last_error());
    }
    lcm_image control = {0};
    if (p->control_png) {
        lcm_status st = prepare_control(s, j, &control);
        if (st != LCM_OK) {
            free(init.rgb);
            lcm_image_release(&control);
            return fail_job(j, st, lcm_last_error());
        }
    }
    j->seed = p->seed >= 0 ? (uint64_t)p->seed : random_seed();
    for (int it = 0; it < p->n_iter && j->status == LCM_OK; it++) {
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
        if (p->init_png) {
            r.init_image = &init;
            r.strength = (float)p->denoising_strength;
        }
        if (p->control_png) {
            r.control_image = &control;
            r.control_scale = (float)p->control_weight;
        }
        if (j->api == SERVE_API_PAGE && s->features->preview) {
            r.preview = on_preview;
            r.preview_user_data = &ctx;
        }
        lcm_result *result = NULL;
        lcm_status st = lcm_generate(s->pipeline, &r, &result);
        if (st != LCM_OK) {
            fail_job(j, st, lcm_last_error());
            break;
        }
        for (int i = 0; i < result->count && j->status == LCM_OK; i++)
            if (!store_image(s, j, &result->images[i], r.seed, i)) fail_job(j, LCM_ERR_OUT_OF_MEMORY, "out of memory");
        lcm_result_free(result);
    }
    free(init.rgb);
    lcm_image_release(&control);
}

static void *worker_main(void *arg) {
    server *s = arg;
    // OpenMP's thread count is per calling thread: the pipeline set it (options.threads) on the
    // thread that opened it, not on this one.
    if (s->config->threads > 0) omp_set_num_threads(s->config->threads);
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->work_ready, &s->lock);
        job *j = s->head;
        if (!j) break; // stopping and nothing left
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        s->queued--;
        if (s->stopping || atomic_load(&j->cancel)) {
            fail_job(j, LCM_ERR_CANCELLED, s->stopping ? "the server is shutting down" : "cancelled");
            s->cancelled++;
            j->state = JOB_DONE;
            pthread_cond_broadcast(&s->changed);
            continue;
        }
        j->state = JOB_RUNNING;
        j->started = now_seconds();
        s->current = j;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);

        run_job(s, j);

        pthread_mutex_lock(&s->lock);
        double seconds = now_seconds() - j->started;
        j->elapsed = seconds;
        if (j->status == LCM_OK) {
            s->completed++;
            s->mean_job_seconds = s->completed == 1 ? seconds : 0.8 * s->mean_job_seconds + 0.2 * seconds;
        } else if (j->status == LCM_ERR_CANCELLED) {
            s->cancelled++;
        } else {
            s->failed++;
        }
        fprintf(stderr, "lcm serve: job %dx%d x%d, %d steps: %s in %.2f s%s%s\n", j->params.width,
                j->params.height, j->params.batch_size * j->params.n_iter, j->params.steps,
                j->status == LCM_OK ? "done" : lcm_status_name(j->status), seconds,
                j->status == LCM_OK ? "" : ": ", j->status == LCM_OK ? "" : j->message);
        s->current = NULL;
        j->state = JOB_DONE;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

// ---- responses -------------------------------------------------------------------------------------

static int http_status_for(lcm_status st) {
    switch (st) {
    case LCM_OK: return 200;
    case LCM_ERR_INVALID_ARGUMENT: return 400;
    case LCM_ERR_UNSUPPORTED: return 501;
    case LCM_ERR_CANCELLED: return 503;
    case LCM_ERR_OUT_OF_MEMORY: return 503;
    default: return 500;
    }
}

static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *type, char *text,
                                 size_t size) {
    struct MHD_Response *r = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

// Sends `json` (consumed) as the response.
static enum MHD_Result send_json(struct MHD_Connection *c, int status, cJSON *json) {
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text) return MHD_NO;
    return send_text(c, status, "application/json", text, strlen(text));
}

// {"error": {"message", "param", "type"}, "detail": message}: OpenAI's error shape, plus FastAPI's
// (A1111) `detail`.
static cJSON *error_json(const char *field, const char *message) {
    cJSON *root = cJSON_CreateObject(), *error = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(error, "message", message);
    if (field && field[0])
        cJSON_AddStringToObject(error, "param", field);
    else
        cJSON_AddNullToObject(error, "param");
    cJSON_AddStringToObject(error, "type", "invalid_request_error");
    cJSON_AddStringToObject(root, "detail", message);
    return root;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *field, const char *message) {
    return send_json(c, status, error_json(field, message));
}

static enum MHD_Result send_busy(server *s, struct MHD_Connection *c) {
    pthread_mutex_lock(&s->lock);
    double wait = ceil(s->mean_job_seconds * (s->queued + 1));
    pthread_mutex_unlock(&s->lock);
    char seconds[32];
    snprintf(seconds, sizeof seconds, "%d", wait < 1 ? 1 : wait > 3600 ? 3600 : (int)wait);
    cJSON *json = error_json("", "the server is busy: the generation queue is full, try again later");
    char *text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    if (!text) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Retry-After", seconds);
    enum MHD_Result ret = MHD_queue_response(c, 429, r);
    MHD_destroy_response(r);
    return ret;
}

// The request as A1111 echoes it in `parameters` (defaults filled in).
static cJSON *parameters_json(const server *s, const job *j) {
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
    if (p->control_png) { // the unit as used, without its image
        cJSON *unit = cJSON_CreateObject();
        cJSON_AddBoolToObject(unit, "enabled", true);
        cJSON_AddStringToObject(unit, "module", serve_control_module_name(p->control_module));
        cJSON_AddStringToObject(unit, "model", s->config->controlnet_name ? s->config->controlnet_name : "");
        cJSON_AddNumberToObject(unit, "weight", p->control_weight);
        if (p->control_module == SERVE_CONTROL_CANNY) {
            cJSON_AddNumberToObject(unit, "threshold_a", p->threshold_a);
            cJSON_AddNumberToObject(unit, "threshold_b", p->threshold_b);
        }
        if (p->control_module == SERVE_CONTROL_NORMALBAE) cJSON_AddNumberToObject(unit, "processor_res", p->processor_res);
        cJSON *args = cJSON_CreateArray();
        cJSON_AddItemToArray(args, unit);
        cJSON *controlnet = cJSON_CreateObject();
        cJSON_AddItemToObject(controlnet, "args", args);
        cJSON *scripts = cJSON_AddObjectToObject(o, "alwayson_scripts");
        cJSON_AddItemToObject(scripts, "controlnet", controlnet);
    }
    return o;
}

// A1111's `info`: what was actually used, seeds included.
static cJSON *info_json(const server *s, const job *j) {
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
    cJSON_AddStringToObject(o, "sd_model_name", s->config->model_name);
    if (p->init_png) cJSON_AddNumberToObject(o, "denoising_strength", p->denoising_strength);
    cJSON_AddNumberToObject(o, "elapsed", j->elapsed);
    return o;
}

static cJSON *images_json(const job *j) {
    cJSON *images = cJSON_CreateArray();
    for (int i = 0; i < j->image_count; i++) cJSON_AddItemToArray(images, cJSON_CreateString(j->images_base64[i]));
    return images;
}

static enum MHD_Result send_job_result(server *s, struct MHD_Connection *c, const job *j) {
    if (j->status != LCM_OK) return send_error(c, http_status_for(j->status), "", j->message);
    cJSON *root = cJSON_CreateObject();
    if (j->api == SERVE_API_OPENAI) {
        cJSON_AddNumberToObject(root, "created", (double)time(NULL));
        cJSON *data = cJSON_AddArrayToObject(root, "data");
        for (int i = 0; i < j->image_count; i++) {
            cJSON *item = cJSON_CreateObject();
            cJSON_AddStringToObject(item, "b64_json", j->images_base64[i]);
            cJSON_AddStringToObject(item, "revised_prompt", j->params.prompt);
            cJSON_AddItemToArray(data, item);
        }
    } else {
        cJSON *images = images_json(j);
        // sd-webui-controlnet's API appends the detected map after the images when a
        // preprocessor ran.
        if (j->control_base64 && j->params.control_module != SERVE_CONTROL_NONE)
            cJSON_AddItemToArray(images, cJSON_CreateString(j->control_base64));
        cJSON_AddItemToObject(root, "images", images);
        cJSON_AddItemToObject(root, "parameters", parameters_json(s, j));
        cJSON *info = info_json(s, j);
        char *text = cJSON_PrintUnformatted(info);
        cJSON_Delete(info);
        cJSON_AddStringToObject(root, "info", text ? text : "{}");
        free(text);
    }
    return send_json(c, 200, root);
}

// ---- the page's event stream ---------------------------------------------------------------------

// POST /api/generate answers with server-sent events: `queued`, then `progress` after every step
// (and `preview` when the library makes previews), then one `result` or `failure`.
typedef struct event_stream {
    server *s;
    job *j;
    char *pending; // the event being sent
    size_t pending_size, pending_sent;
    int progress_sent, previews_sent;
    bool started, finished;
} event_stream;

static char *format_event(const char *name, cJSON *data) {
    char *json = cJSON_PrintUnformatted(data);
    cJSON_Delete(data);
    if (!json) return NULL;
    size_t size = strlen(name) + strlen(json) + 32;
    char *text = malloc(size);
    if (text) snprintf(text, size, "event: %s\ndata: %s\n\n", name, json);
    free(json);
    return text;
}

// The next event for the stream (the lock held), or NULL when there is nothing new yet.
static char *next_event(event_stream *es) {
    server *s = es->s;
    job *j = es->j;
    if (!es->started) {
        es->started = true;
        int ahead = 0;
        for (job *q = s->head; q && q != j; q = q->next) ahead++;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "position", j->state == JOB_QUEUED ? ahead + (s->current != NULL) : 0);
        return format_event("queued", d);
    }
    // The latest progress goes out before the result even when the job finished first (a reader
    // slower than the steps, as under a sanitizer, still sees the last step done).
    if (j->progress_events != es->progress_sent) {
        es->progress_sent = j->progress_events;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddNumberToObject(d, "step", j->steps_done);
        cJSON_AddNumberToObject(d, "steps", j->total_steps);
        cJSON_AddNumberToObject(d, "elapsed", j->elapsed);
        return format_event("progress", d);
    }
    if (j->preview_events != es->previews_sent && j->preview_base64 && j->state != JOB_DONE) {
        es->previews_sent = j->preview_events;
        cJSON *d = cJSON_CreateObject();
        cJSON_AddStringToObject(d, "image", j->preview_base64);
        return format_event("preview", d);
    }
    if (j->state == JOB_DONE) {
        es->finished = true;
        if (j->status != LCM_OK) {
            cJSON *d = cJSON_CreateObject();
            cJSON_AddNumberToObject(d, "status", http_status_for(j->status));
            cJSON_AddStringToObject(d, "message", j->message);
            return format_event("failure", d);
        }
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "images", images_json(j));
        cJSON_AddItemToObject(d, "parameters", parameters_json(s, j));
        cJSON_AddItemToObject(d, "info", info_json(s, j));
        if (j->control_base64) { // the control map the ControlNet saw, shown beside the result
            cJSON_AddStringToObject(d, "control_image", j->control_base64);
            cJSON_AddStringToObject(d, "control_module", serve_control_module_name(j->params.control_module));
        }
        return format_event("result", d);
    }
    return NULL;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    event_stream *es = cls;
    for (;;) {
        if (es->pending && es->pending_sent < es->pending_size) {
            size_t n = es->pending_size - es->pending_sent;
            if (n > max) n = max;
            memcpy(buf, es->pending + es->pending_sent, n);
            es->pending_sent += n;
            return (ssize_t)n;
        }
        free(es->pending);
        es->pending = NULL;
        if (es->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        server *s = es->s;
        double waited_since = now_seconds();
        pthread_mutex_lock(&s->lock);
        char *event;
        while (!(event = next_event(es))) {
            if (peer_closed(es->j->socket)) {
                atomic_store(&es->j->cancel, 1);
                pthread_mutex_unlock(&s->lock);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            if (now_seconds() - waited_since > EVENT_KEEPALIVE_SECONDS) {
                event = strdup(": keepalive\n\n");
                break;
            }
            timed_wait(&s->changed, &s->lock, 0.25);
        }
        pthread_mutex_unlock(&s->lock);
        if (!event) return MHD_CONTENT_READER_END_WITH_ERROR;
        es->pending = event;
        es->pending_size = strlen(event);
        es->pending_sent = 0;
    }
}

// Called by libmicrohttpd when the stream ends, normally or because the client went away.
static void stream_free(void *cls) {
    event_stream *es = cls;
    if (!es->finished) atomic_store(&es->j->cancel, 1);
    wait_until_done(es->s, es->j);
    job_free(es->j);
    free(es->pending);
    free(es);
}

static enum MHD_Result send_event_stream(server *s, struct MHD_Connection *c, job *j) {
    event_stream *es = calloc(1, sizeof *es);
    if (!es) {
        atomic_store(&j->cancel, 1);
        wait_until_done(s, j);
        job_free(j);
        return MHD_NO;
    }
    es->s = s;
    es->j = j;
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, stream_read, es, stream_free);
    if (!r) {
        stream_free(es);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

// ---- GET endpoints -------------------------------------------------------------------------------

static cJSON *health_json(server *s) {
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&s->lock);
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "model", s->config->model_name);
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

// What the page needs to build its form: limits, defaults and which optional controls to show.
static cJSON *capabilities_json(server *s) {
    const serve_limits *l = &s->config->limits;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", s->config->model_name);
    cJSON_AddNumberToObject(o, "default_size", l->default_size);
    cJSON_AddNumberToObject(o, "min_size", l->default_size < 256 ? l->default_size : 256);
    cJSON_AddNumberToObject(o, "max_size", l->max_size);
    cJSON_AddNumberToObject(o, "size_step", l->default_size < 256 ? 8 : 32);
    cJSON_AddNumberToObject(o, "default_steps", l->max_steps < 4 ? l->max_steps : 4);
    cJSON_AddNumberToObject(o, "max_steps", l->max_steps);
    // A UNet that takes a negative prompt runs classifier-free guidance (SD1.5 + LCM-LoRA), where
    // 8.5 would be far too strong: LCM-LoRA wants 1..2, and 1 (no guidance) is twice as fast.
    // LCM-distilled UNets embed the guidance instead; 8.5 is their pipeline's default.
    cJSON_AddNumberToObject(o, "default_guidance", s->features->negative_prompt ? 1.0 : 8.5);
    cJSON_AddNumberToObject(o, "max_images", l->max_images);
    cJSON_AddBoolToObject(o, "api_key_required", s->config->api_key != NULL);
    cJSON *f = cJSON_AddObjectToObject(o, "features");
    cJSON_AddBoolToObject(f, "negative_prompt", s->features->negative_prompt);
    cJSON_AddBoolToObject(f, "img2img", s->features->img2img);
    cJSON_AddBoolToObject(f, "preview", s->features->preview);
    cJSON_AddBoolToObject(f, "controlnet", s->features->controlnet);
    cJSON_AddBoolToObject(f, "lora", s->features->lora);
    cJSON_AddBoolToObject(f, "normalbae", s->features->normalbae);
    if (s->features->controlnet) {
        cJSON_AddStringToObject(o, "controlnet", s->config->controlnet_name);
        cJSON *modules = cJSON_AddArrayToObject(o, "control_modules");
        cJSON_AddItemToArray(modules, cJSON_CreateString("none"));
        cJSON_AddItemToArray(modules, cJSON_CreateString("canny"));
        if (s->features->normalbae) cJSON_AddItemToArray(modules, cJSON_CreateString("normal_bae"));
        cJSON_AddNumberToObject(o, "default_processor_res", SERVE_PROCESSOR_RES_DEFAULT);
    }
    cJSON *loras = cJSON_AddArrayToObject(o, "loras");
    for (int i = 0; i < s->config->lora_count; i++)
        cJSON_AddItemToArray(loras, cJSON_CreateString(s->config->lora_names[i]));
    return o;
}

static cJSON *progress_json(server *s) {
    cJSON *o = cJSON_CreateObject(), *state = cJSON_CreateObject();
    pthread_mutex_lock(&s->lock);
    job *j = s->current;
    double fraction = j && j->total_steps ? (double)j->steps_done / j->total_steps : 0;
    double eta = j && j->steps_done ? j->elapsed / j->steps_done * (j->total_steps - j->steps_done) : 0;
    cJSON_AddNumberToObject(o, "progress", fraction);
    cJSON_AddNumberToObject(o, "eta_relative", eta);
    cJSON_AddBoolToObject(state, "skipped", false);
    cJSON_AddBoolToObject(state, "interrupted", j && atomic_load(&j->cancel));
    cJSON_AddStringToObject(state, "job", j ? "txt2img" : "");
    cJSON_AddNumberToObject(state, "job_count", s->queued + (j != NULL));
    cJSON_AddNumberToObject(state, "sampling_step", j ? j->steps_done : 0);
    cJSON_AddNumberToObject(state, "sampling_steps", j ? j->total_steps : 0);
    cJSON_AddItemToObject(o, "state", state);
    if (j && j->preview_base64)
        cJSON_AddStringToObject(o, "current_image", j->preview_base64);
    else
        cJSON_AddNullToObject(o, "current_image");
    cJSON_AddNullToObject(o, "textinfo");
    pthread_mutex_unlock(&s->lock);
    return o;
}

static cJSON *sd_models_json(server *s) {
    cJSON *list = cJSON_CreateArray(), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "title", s->config->model_name);
    cJSON_AddStringToObject(m, "model_name", s->config->model_name);
    cJSON_AddNullToObject(m, "hash");
    cJSON_AddNullToObject(m, "sha256");
    cJSON_AddStringToObject(m, "filename", s->config->model_name); // never the server's path
    cJSON_AddNullToObject(m, "config");
    cJSON_AddItemToArray(list, m);
    return list;
}

static cJSON *openai_models_json(server *s) {
    cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddStringToObject(m, "id", s->config->model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", 0);
    cJSON_AddStringToObject(m, "owned_by", "lcm.c");
    cJSON_AddItemToArray(data, m);
    return o;
}

// ---- routing ---------------------------------------------------------------------------------------

typedef struct connection_state {
    char *body;
    size_t size, capacity;
    bool too_large;
} connection_state;

typedef enum route_kind { ROUTE_GET, ROUTE_POST } route_kind;

typedef struct route {
    const char *path;
    route_kind method;
    bool needs_key;
} route;

static const route routes[] = {
    {"/health", ROUTE_GET, false},
    {"/api/capabilities", ROUTE_GET, false},
    {"/api/generate", ROUTE_POST, true},
    {"/sdapi/v1/txt2img", ROUTE_POST, true},
    {"/sdapi/v1/img2img", ROUTE_POST, true},
    {"/sdapi/v1/progress", ROUTE_GET, true},
    {"/sdapi/v1/interrupt", ROUTE_POST, true},
    {"/sdapi/v1/sd-models", ROUTE_GET, true},
    {"/v1/images/generations", ROUTE_POST, true},
    {"/v1/models", ROUTE_GET, true},
};

static const web_asset *find_asset(const char *url) {
    if (!strcmp(url, "/")) url = "/index.html";
    for (int i = 0; i < web_asset_count; i++)
        if (!strcmp(web_assets[i].path, url)) return &web_assets[i];
    return NULL;
}

// Compares without an early exit, so timing says nothing about how much of the key matched.
static bool same_secret(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned diff = la != lb;
    for (size_t i = 0; i < la; i++) diff |= (unsigned char)a[i] ^ (unsigned char)(i < lb ? b[i] : 0);
    return diff == 0;
}

static bool authorized(server *s, struct MHD_Connection *c) {
    if (!s->config->api_key) return true;
    const char *header = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!header || strncmp(header, "Bearer ", 7) != 0) return false;
    return same_secret(header + 7, s->config->api_key);
}

static int client_socket(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return info ? info->connect_fd : -1;
}

static enum MHD_Result start_generation(server *s, struct MHD_Connection *c, serve_api api, connection_state *cs) {
    serve_params params;
    serve_error error;
    if (!serve_parse_request(api, cs->body ? cs->body : "", cs->size, &s->config->limits, &params, &error))
        return send_error(c, error.http_status, error.field, error.message);
    if (params.negative_prompt && !s->features->negative_prompt) {
        serve_params_free(&params);
        return send_error(c, 501, "negative_prompt", "negative prompts are not supported by this build/model yet");
    }
    if (params.init_png && !s->features->img2img) {
        serve_params_free(&params);
        return send_error(c, 501, "init_images", "img2img is not supported by this build/model yet");
    }
    const char *control_problem = NULL, *control_field = "alwayson_scripts.controlnet.args[0].image";
    int control_status = 400;
    if (params.control_png && !s->features->controlnet) {
        control_problem = "alwayson_scripts.controlnet.args[0].image: this server has no ControlNet (start it "
                          "with --controlnet DIR)";
        control_status = 501;
    } else if (!params.control_png && s->features->controlnet) {
        control_problem = api == SERVE_API_OPENAI
                              ? "this server's model has a ControlNet: use /sdapi/v1/txt2img with a control image"
                              : "this server's model has a ControlNet: the request needs a control image "
                                "(alwayson_scripts.controlnet.args[0].image)";
    } else if (params.control_module == SERVE_CONTROL_NORMALBAE && !s->features->normalbae) {
        control_problem = "alwayson_scripts.controlnet.args[0].module: the normal_bae preprocessor needs "
                          "NormalBae weights (start the server with --control-weights FILE)";
        control_field = "alwayson_scripts.controlnet.args[0].module";
        control_status = 501;
    }
    if (control_problem) {
        serve_params_free(&params);
        return send_error(c, control_status, control_field, control_problem);
    }
    job *j = calloc(1, sizeof *j);
    if (!j) {
        serve_params_free(&params);
        return send_error(c, 503, "", "out of memory");
    }
    j->api = api;
    j->params = params;
    j->socket = client_socket(c);
    if (!enqueue(s, j)) {
        job_free(j);
        return send_busy(s, c);
    }
    if (api == SERVE_API_PAGE) return send_event_stream(s, c, j);
    wait_until_done(s, j);
    enum MHD_Result ret = send_job_result(s, c, j);
    job_free(j);
    return ret;
}

static enum MHD_Result handle_request(server *s, struct MHD_Connection *c, const char *url, bool post,
                                      connection_state *cs) {
    if (!post) {
        const web_asset *asset = find_asset(url);
        if (asset) {
            struct MHD_Response *r = MHD_create_response_from_buffer(asset->size, (void *)asset->data,
                                                                     MHD_RESPMEM_PERSISTENT);
            if (!r) return MHD_NO;
            MHD_add_response_header(r, "Content-Type", asset->content_type);
            MHD_add_response_header(r, "Cache-Control", "no-cache");
            MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
            enum MHD_Result ret = MHD_queue_response(c, 200, r);
            MHD_destroy_response(r);
            return ret;
        }
    }
    const route *match = NULL;
    bool path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(routes[i].path, url) != 0) continue;
        path_known = true;
        if ((routes[i].method == ROUTE_POST) == post) match = &routes[i];
    }
    if (!match) {
        if (path_known) return send_error(c, 405, "", "method not allowed on this path");
        return send_error(c, 404, "", "no such endpoint");
    }
    if (match->needs_key && !authorized(s, c))
        return send_error(c, 401, "", "missing or wrong API key: send 'Authorization: Bearer KEY'");
    if (post && cs->too_large) {
        char message[128];
        snprintf(message, sizeof message, "the request body is larger than this server's limit of %zu bytes",
                 s->config->max_body);
        return send_error(c, 413, "", message);
    }
    const char *p = match->path;
    if (!strcmp(p, "/health")) return send_json(c, 200, health_json(s));
    if (!strcmp(p, "/api/capabilities")) return send_json(c, 200, capabilities_json(s));
    if (!strcmp(p, "/sdapi/v1/progress")) return send_json(c, 200, progress_json(s));
    if (!strcmp(p, "/sdapi/v1/sd-models")) return send_json(c, 200, sd_models_json(s));
    if (!strcmp(p, "/v1/models")) return send_json(c, 200, openai_models_json(s));
    if (!strcmp(p, "/sdapi/v1/interrupt")) {
        pthread_mutex_lock(&s->lock);
        if (s->current) atomic_store(&s->current->cancel, 1);
        pthread_mutex_unlock(&s->lock);
        return send_json(c, 200, cJSON_CreateObject());
    }
    serve_api api = !strcmp(p, "/sdapi/v1/txt2img")   ? SERVE_API_A1111_TXT2IMG
                    : !strcmp(p, "/sdapi/v1/img2img") ? SERVE_API_A1111_IMG2IMG
                    : !strcmp(p, "/api/generate")     ? SERVE_API_PAGE
                                                      : SERVE_API_OPENAI;
    return start_generation(s, c, api, cs);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    server *s = cls;
    connection_state *cs = *con_cls;
    bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (!cs) { // headers only so far
        if (!post && strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
            return send_error(c, 405, "", "only GET, HEAD and POST are served");
        // A body announced as too large is refused before it is read.
        const char *length = post ? MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length") : NULL;
        if (length && strtoull(length, NULL, 10) > s->config->max_body) {
            char message[128];
            snprintf(message, sizeof message, "the request body is larger than this server's limit of %zu bytes",
                     s->config->max_body);
            return send_error(c, 413, "", message);
        }
        cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        *con_cls = cs;
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (cs->too_large || n > s->config->max_body - cs->size) {
            cs->too_large = true; // keep reading (and dropping) the body, answer 413 at its end
            free(cs->body);
            cs->body = NULL;
            return MHD_YES;
        }
        if (cs->size + n > cs->capacity) {
            size_t capacity = cs->capacity ? cs->capacity : 4096;
            while (capacity < cs->size + n) capacity *= 2;
            if (capacity > s->config->max_body) capacity = s->config->max_body;
            char *grown = realloc(cs->body, capacity);
            if (!grown) return MHD_NO;
            cs->body = grown;
            cs->capacity = capacity;
        }
        memcpy(cs->body + cs->size, upload_data, n);
        cs->size += n;
        return MHD_YES;
    }
    return handle_request(s, c, url, post, cs);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode code) {
    (void)cls, (void)c, (void)code;
    connection_state *cs = *con_cls;
    if (cs) {
        free(cs->body);
        free(cs);
    }
    *con_cls = NULL;
}

// ---- start and stop --------------------------------------------------------------------------------

int serve_run(const serve_config *config, lcm_pipeline *pipeline, const serve_features *features) {
    server s = {.config = config, .features = features, .pipeline = pipeline};
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.work_ready, NULL);
    pthread_cond_init(&s.changed, NULL);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *addr = NULL;
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", config->port);
    int gai = getaddrinfo(config->host, port_text, &hints, &addr);
    if (gai != 0) {
        fprintf(stderr, "lcm serve: --host %s: %s\n", config->host, gai_strerror(gai));
        return 1;
    }

    // SIGINT/SIGTERM are taken by sigwait below: block them before any thread starts, so every
    // thread inherits the mask. SIGPIPE from a vanished client must not kill the server.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_t worker;
    if (pthread_create(&worker, NULL, worker_main, &s) != 0) {
        freeaddrinfo(addr);
        fprintf(stderr, "lcm serve: could not start the worker thread\n");
        return 1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (addr->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *daemon = MHD_start_daemon(
        flags, (uint16_t)config->port, NULL, NULL, on_request, &s, MHD_OPTION_SOCK_ADDR, addr->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s, MHD_OPTION_CONNECTION_LIMIT, (unsigned)1000,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_THREAD_STACK_SIZE, (size_t)(512 * 1024),
        MHD_OPTION_END);
    freeaddrinfo(addr);
    int rc = 0;
    if (!daemon) {
        fprintf(stderr, "lcm serve: could not listen on %s port %d (in use, or not an address of this machine?)\n",
                config->host, config->port);
        rc = 1;
    } else {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
        int port = info ? info->port : config->port;
        bool v6 = strchr(config->host, ':') != NULL;
        printf("lcm serve: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", config->host, v6 ? "]" : "", port);
        fflush(stdout);
        int sig = 0;
        sigwait(&stop_signals, &sig);
        fprintf(stderr, "lcm serve: signal %d, shutting down\n", sig);
    }

    // Stop: cancel the running job and everything queued, let the handlers answer, then stop.
    pthread_mutex_lock(&s.lock);
    s.stopping = true;
    if (s.current) atomic_store(&s.current->cancel, 1);
    pthread_cond_broadcast(&s.work_ready);
    pthread_mutex_unlock(&s.lock);
    pthread_join(worker, NULL);
    if (daemon) MHD_stop_daemon(daemon);
    pthread_cond_destroy(&s.changed);
    pthread_cond_destroy(&s.work_ready);
    pthread_mutex_destroy(&s.lock);
    return rc;
}
