// What the parts of `lcm serve` share (app/server*.c): the server, its models, its jobs.
//
// Threads: libmicrohttpd runs a small pool of threads, each polling many connections (epoll), so a
// handler must never block. A generation request is queued as a job and its connection suspended;
// the one worker thread, which owns the pipelines, runs jobs in arrival order and resumes the
// connection when its job is done (or, for the page's event stream, after every step). A watchdog
// thread notices clients that went away (it peeks at their sockets) and drops connections that
// take too long to send their headers (slow-loris).
//
// Locking: `server.lock` guards the queue, every job's fields marked "under lock", the models'
// state and the statistics. Connections are suspended and resumed only under it, so a resume can
// never overtake the suspend it answers.
//
// Ownership: a job belongs to its connection (freed when the request completes) until the
// connection ends early; then the job is orphaned and the worker frees it when it is done with it.
#ifndef LCM_APP_SERVER_INTERNAL_H
#define LCM_APP_SERVER_INTERNAL_H

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "app/server.h"

// The page's event stream sends a keep-alive comment after this long without an event.
#define EVENT_KEEPALIVE_SECONDS 10.0

typedef enum job_kind {
    JOB_GENERATE,
    JOB_LOAD, // make `model` the current one (POST /sdapi/v1/options sd_model_checkpoint)
} job_kind;

typedef enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE } job_state;

// Why a job was asked to stop (job.cancel).
enum {
    CANCEL_NONE = 0,
    CANCEL_CLIENT_GONE, // the client closed its connection: nobody to answer
    CANCEL_INTERRUPT,   // /sdapi/v1/interrupt: stop and answer with the partial image
    CANCEL_SHUTDOWN,    // SIGTERM/SIGINT: answer 503
};

typedef struct job {
    job_kind kind;
    serve_api api;
    serve_params params;
    int model;         // index into config->models
    int socket;        // the client's connection: a peek that sees EOF means it went away
    atomic_int cancel; // CANCEL_*: stop at the next step (or skip if still queued)
    struct MHD_Connection *connection;
    struct job *next; // queue link

    // Under server.lock:
    job_state state;
    bool suspended; // the connection waits (suspended) for this job to move
    bool orphaned;  // the connection is gone: the worker frees the job when done
    double last_wake;
    int steps_done, total_steps;
    double started, elapsed; // monotonic seconds
    int progress_events;     // bumped at every step
    char *preview_base64;    // the latest preview PNG, or NULL
    int preview_events;
    int preview_step; // the step of the latest preview: at most one per step

    // Written by the worker before DONE, read by the connection after:
    lcm_status status;
    char field[128]; // the request field a failure is about ("" for none)
    char message[512];
    bool interrupted;  // stopped by /sdapi/v1/interrupt: the images are the partial result
    uint64_t seed;     // the first seed used (the request's, or a random one)
    int image_count;
    char **images_base64; // PNGs with the A1111 `parameters` chunk
    char **infotexts;     // the `parameters` text of each image
    uint64_t *seeds;      // the seed of the lcm_generate call that made each image
    char *control_base64[SERVE_MAX_CONTROL_UNITS]; // the control map each unit's ControlNet saw
} job;

typedef struct server {
    const serve_config *config;
    pthread_mutex_t lock;
    pthread_cond_t work_ready; // the worker waits for jobs
    pthread_cond_t changed;    // broadcast whenever a job moves (shutdown waits on it)
    job *head, *tail;
    int queued;
    job *current;
    int current_model; // what requests without a model of their own use
    int open_jobs;     // jobs not yet freed (the shutdown waits for their answers)
    bool stopping;
    double preview_wanted_until; // /progress was polled lately: make previews for API jobs
    // Statistics for /health.
    unsigned long completed, failed, cancelled, rejected;
    double mean_job_seconds;
    struct serve_image_store *images; // OpenAI `url` results
    int port; // the port actually bound
} server;

double serve_now(void);

// ---- jobs (server_jobs.c) ----
job *job_new(server *s, serve_api api, job_kind kind, struct MHD_Connection *c);
// Queues a job; false when the queue is full or the server is stopping (then nothing changed).
bool job_enqueue(server *s, job *j);
// The connection is done with `j`: frees it, or orphans it while the worker still has it.
void job_release(server *s, job *j);
// Frees a job that was never queued.
void job_discard(job *j);
// Wakes the connection waiting on `j` (lock held). `final`: the job is done.
void job_wake(server *s, job *j, bool final);
void *serve_worker_main(void *arg);
int serve_http_status_for(lcm_status st);

// ---- models (server_jobs.c) ----
// The model a request names ("" or NULL = the current one), matched as A1111 matches titles:
// exactly, then ignoring case, then by the name before " [hash]". -1 when none matches.
int serve_find_model(const server *s, const char *name);

// ---- HTTP helpers (server_http.c) ----
enum MHD_Result serve_send_json(struct MHD_Connection *c, int status, cJSON *json);
// An error in OpenAI's shape {"error": {"message", "type", "param", "code"}} plus FastAPI's
// (A1111) {"detail": message}. `code` NULL = derived from the status.
cJSON *serve_error_json(int status, const char *field, const char *code, const char *message);
enum MHD_Result serve_send_error(struct MHD_Connection *c, int status, const char *field, const char *message);
enum MHD_Result serve_send_error_code(struct MHD_Connection *c, int status, const char *field, const char *code,
                                      const char *message);
enum MHD_Result serve_send_busy(server *s, struct MHD_Connection *c, int status, const char *message);
enum MHD_Result serve_send_event_stream(server *s, struct MHD_Connection *c, job *j);

// ---- A1111 (server_a1111.c) ----
// GET/POST /sdapi/v1/... and /controlnet/... other than generation; NULL when `path` is not one.
typedef enum MHD_Result (*serve_handler)(server *s, struct MHD_Connection *c, const char *body, size_t size);
// *path_known is set when `path` is one of them with another method (405).
serve_handler serve_a1111_handler(const char *path, bool post, bool *path_known);
// POST /sdapi/v1/options: the model to switch to (load), or -1 when the request was answered
// (*answered: a 400, or 200 when nothing changes).
int serve_options_model(server *s, struct MHD_Connection *c, const char *body, size_t size, enum MHD_Result *answered);
cJSON *serve_a1111_result(server *s, const job *j);
cJSON *serve_parameters_json(const server *s, const job *j);
cJSON *serve_info_json(const server *s, const job *j);
cJSON *serve_images_json(const job *j);
cJSON *serve_capabilities_json(server *s);
cJSON *serve_health_json(server *s);

// ---- OpenAI (server_openai.c) ----
// The result as OpenAI answers it; `host` is the Host the client used (for `url`s). NULL with
// *message set when the images could not be kept.
cJSON *serve_openai_result(server *s, const job *j, const char *host, char *message, size_t message_size);
enum MHD_Result serve_openai_models(server *s, struct MHD_Connection *c, const char *id);
// GET /v1/images/NAME: NAME is "ID.png" as the result's url gave it.
enum MHD_Result serve_openai_image(server *s, struct MHD_Connection *c, const char *name);
struct serve_image_store *serve_image_store_new(void);
void serve_image_store_free(struct serve_image_store *store);

#endif
