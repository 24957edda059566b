// `lcm serve`: HTTP front end (routing, request bodies, suspending connections while their job
// runs), the watchdog, start and stop. See server_internal.h for the threads and ownership.
#include "app/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "app/server_accept.h"
#include "app/server_internal.h"

#define WATCHDOG_PERIOD_US 250000
// How long a shutdown waits for the answers of the jobs it stopped.
#define SHUTDOWN_GRACE_SECONDS 10.0

// ---- connections and the watchdog --------------------------------------------------------------

static int client_socket(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    return info ? info->connect_fd : -1;
}

// True when the client has closed its side of the connection (or it broke).
static bool peer_closed(int socket) {
    if (socket < 0) return false;
    char byte;
    ssize_t n = recv(socket, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return true;
    return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

typedef struct watchdog {
    server *s;
    pthread_t thread;
    atomic_bool stop;
} watchdog;

static void watch_job(server *s, job *j, double now) {
    if (!atomic_load(&j->cancel) && peer_closed(j->socket)) atomic_store(&j->cancel, CANCEL_CLIENT_GONE);
    if (j->suspended && j->api == SERVE_API_PAGE && now - j->last_wake > EVENT_KEEPALIVE_SECONDS) job_wake(s, j, false);
}

// Every WATCHDOG_PERIOD_US: cancel the jobs whose clients went away (a suspended connection is not
// polled by libmicrohttpd) and give the page's idle streams a keep-alive.
static void *watchdog_main(void *arg) {
    watchdog *w = arg;
    server *s = w->s;
    while (!atomic_load(&w->stop)) {
        usleep(WATCHDOG_PERIOD_US);
        double now = serve_now();
        pthread_mutex_lock(&s->lock);
        if (s->current) watch_job(s, s->current, now);
        for (job *j = s->head; j; j = j->next) watch_job(s, j, now);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

// ---- routing ---------------------------------------------------------------------------------------

typedef struct connection_state {
    char *body;
    size_t size, capacity;
    bool too_large;
    double started; // when the head was complete
    job *job;       // the job this request waits for (suspended meanwhile)
} connection_state;

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

// Waits (suspended) for the job unless it is already done; the lock orders suspend before resume.
static void wait_for_job(server *s, struct MHD_Connection *c, job *j) {
    pthread_mutex_lock(&s->lock);
    if (j->state != JOB_DONE) {
        j->suspended = true;
        MHD_suspend_connection(c);
    }
    pthread_mutex_unlock(&s->lock);
}

// Queues a job for this request and suspends the connection until it is done (the page's event
// stream answers at once and streams instead).
static enum MHD_Result start_job(server *s, struct MHD_Connection *c, connection_state *cs, serve_api api,
                                 job_kind kind, serve_params *params, int model) {
    job *j = job_new(s, api, kind, c);
    if (!j) {
        serve_params_free(params);
        return serve_send_busy(s, c, 503, "out of memory");
    }
    if (params) j->params = *params;
    j->model = model;
    j->socket = client_socket(c);
    if (!job_enqueue(s, j)) {
        bool stopping;
        pthread_mutex_lock(&s->lock);
        stopping = s->stopping;
        pthread_mutex_unlock(&s->lock);
        job_discard(j);
        return stopping ? serve_send_busy(s, c, 503, "the server is shutting down: try again later")
                        : serve_send_busy(s, c, 429, "the server is busy: the generation queue is full, try again later");
    }
    if (api == SERVE_API_PAGE) return serve_send_event_stream(s, c, j);
    cs->job = j;
    wait_for_job(s, c, j);
    return MHD_YES;
}

// The answer to a finished job, in its API's shape.
static enum MHD_Result answer_job(server *s, struct MHD_Connection *c, const job *j) {
    if (j->status != LCM_OK) {
        bool shutdown;
        pthread_mutex_lock(&s->lock);
        shutdown = s->stopping;
        pthread_mutex_unlock(&s->lock);
        if (j->status == LCM_ERR_CANCELLED && shutdown) return serve_send_busy(s, c, 503, j->message);
        return serve_send_error(c, serve_http_status_for(j->status), j->field, j->message);
    }
    if (j->kind == JOB_LOAD) return serve_send_json(c, 200, cJSON_CreateNull());
    if (j->api != SERVE_API_OPENAI) return serve_send_json(c, 200, serve_a1111_result(s, j));
    char host[300], message[200];
    const char *header = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    if (header && strlen(header) < sizeof host && !strpbrk(header, "/\\ \"<>"))
        snprintf(host, sizeof host, "%s", header);
    else
        snprintf(host, sizeof host, "%s:%d", s->config->host, s->port);
    cJSON *result = serve_openai_result(s, j, host, message, sizeof message);
    if (!result) return serve_send_busy(s, c, 503, message);
    return serve_send_json(c, 200, result);
}

static enum MHD_Result start_generation(server *s, struct MHD_Connection *c, serve_api api, connection_state *cs) {
    serve_params params;
    serve_error error;
    bool parsed = api == SERVE_API_DETECT
                      ? serve_parse_detect(cs->body ? cs->body : "", cs->size, &s->config->limits, &params, &error)
                      : serve_parse_request(api, cs->body ? cs->body : "", cs->size, &s->config->limits, &params, &error);
    if (!parsed) return serve_send_error_code(c, error.http_status, error.field, error.code, error.message);
    pthread_mutex_lock(&s->lock);
    int model = serve_find_model(s, params.model);
    pthread_mutex_unlock(&s->lock);
    if (model < 0) {
        char message[400];
        bool openai = api == SERVE_API_OPENAI;
        snprintf(message, sizeof message, "%s '%.100s' is not one of this server's models (see %s)",
                 openai ? "model" : "override_settings.sd_model_checkpoint", params.model,
                 openai ? "/v1/models" : "/sdapi/v1/sd-models");
        serve_params_free(&params);
        return serve_send_error_code(c, openai ? 404 : 400, openai ? "model" : "override_settings.sd_model_checkpoint",
                                     "model_not_found", message);
    }
    return start_job(s, c, cs, api, JOB_GENERATE, &params, model);
}

static enum MHD_Result send_asset(struct MHD_Connection *c, const web_asset *asset) {
    struct MHD_Response *r = MHD_create_response_from_buffer(asset->size, (void *)asset->data, MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", asset->content_type);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    // Every request head passes the acceptor\'s checks: no keep-alive (server_accept.c).
    MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static bool has_prefix(const char *text, const char *prefix) { return !strncmp(text, prefix, strlen(prefix)); }

static enum MHD_Result handle_request(server *s, struct MHD_Connection *c, const char *url, bool post,
                                      connection_state *cs) {
    if (!post) {
        const web_asset *asset = find_asset(url);
        if (asset) return send_asset(c, asset);
        if (!strcmp(url, "/health")) return serve_send_json(c, 200, serve_health_json(s));
        if (!strcmp(url, "/api/capabilities")) return serve_send_json(c, 200, serve_capabilities_json(s));
        // An image's URL is its capability (128 random bits): no key, so <img src> works.
        if (has_prefix(url, "/v1/images/") && strcmp(url, "/v1/images/generations") != 0)
            return serve_openai_image(s, c, url + strlen("/v1/images/"));
    }
    static const char *const post_paths[] = {"/api/generate",   "/sdapi/v1/txt2img",      "/sdapi/v1/img2img",
                                             "/sdapi/v1/options", "/v1/images/generations", "/controlnet/detect"};
    bool path_known = !strcmp(url, "/health") || !strcmp(url, "/api/capabilities") || !strcmp(url, "/v1/models") ||
                      has_prefix(url, "/v1/models/");
    bool post_route = false;
    for (size_t i = 0; i < sizeof post_paths / sizeof post_paths[0]; i++)
        if (!strcmp(url, post_paths[i])) post_route = path_known = true;
    serve_handler handler = serve_a1111_handler(url, post, &path_known);
    bool get_route = !post && (!strcmp(url, "/v1/models") || has_prefix(url, "/v1/models/") ||
                               (!strcmp(url, "/sdapi/v1/options")));
    if (!handler && !(post && post_route) && !get_route) {
        if (path_known) return serve_send_error(c, 405, "", "method not allowed on this path");
        return serve_send_error(c, 404, "", "no such endpoint");
    }
    if (!authorized(s, c))
        return serve_send_error(c, 401, "", "missing or wrong API key: send 'Authorization: Bearer KEY'");
    if (post && cs->too_large) {
        char message[128];
        snprintf(message, sizeof message, "the request body is larger than this server's limit of %zu bytes",
                 s->config->max_body);
        return serve_send_error(c, 413, "", message);
    }
    if (handler) return handler(s, c, cs->body, cs->size);
    if (!strcmp(url, "/v1/models")) return serve_openai_models(s, c, NULL);
    if (has_prefix(url, "/v1/models/")) return serve_openai_models(s, c, url + strlen("/v1/models/"));
    if (!strcmp(url, "/sdapi/v1/options")) { // POST: switch models
        enum MHD_Result answered = MHD_NO;
        int model = serve_options_model(s, c, cs->body, cs->size, &answered);
        if (model < 0) return answered;
        return start_job(s, c, cs, SERVE_API_A1111_TXT2IMG, JOB_LOAD, NULL, model);
    }
    serve_api api = !strcmp(url, "/sdapi/v1/txt2img")   ? SERVE_API_A1111_TXT2IMG
                    : !strcmp(url, "/sdapi/v1/img2img") ? SERVE_API_A1111_IMG2IMG
                    : !strcmp(url, "/api/generate")     ? SERVE_API_PAGE
                    : !strcmp(url, "/controlnet/detect") ? SERVE_API_DETECT
                                                        : SERVE_API_OPENAI;
    return start_generation(s, c, api, cs);
}

// GET /health for the acceptor, which answers it itself (server_accept.c).
static char *health_text(void *user) {
    cJSON *json = serve_health_json(user);
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    return text;
}

// A Content-Length that is not plain decimal digits (a sign, spaces, hex, empty) is refused here,
// once, before anything reads a body.
static bool plain_length(const char *text) {
    if (!text || !*text) return false;
    for (const char *p = text; *p; p++)
        if (*p < '0' || *p > '9') return false;
    return strlen(text) <= 19;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    server *s = cls;
    connection_state *cs = *con_cls;
    bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (!cs) { // the request head is complete
        cs = calloc(1, sizeof *cs);
        if (!cs) return MHD_NO;
        *con_cls = cs;
        cs->started = serve_now();
        if (!post && strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
            return serve_send_error(c, 405, "", "only GET, HEAD and POST are served");
        // A body announced as too large (or malformed) is refused before it is read.
        const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (length && !plain_length(length)) {
            char message[160];
            snprintf(message, sizeof message, "the Content-Length header '%.40s' is not a number of bytes", length);
            return serve_send_error(c, 400, "Content-Length", message);
        }
        if (length && strtoull(length, NULL, 10) > s->config->max_body) {
            char message[128];
            snprintf(message, sizeof message, "the request body is larger than this server's limit of %zu bytes",
                     s->config->max_body);
            return serve_send_error(c, 413, "", message);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        // A body dribbled in (slow-loris after the head): the connection is dropped.
        if (serve_now() - cs->started > s->config->body_timeout_s) return MHD_NO;
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
    if (cs->job) { // resumed: the job moved
        pthread_mutex_lock(&s->lock);
        bool done = cs->job->state == JOB_DONE;
        pthread_mutex_unlock(&s->lock);
        if (!done) {
            wait_for_job(s, c, cs->job);
            return MHD_YES;
        }
        return answer_job(s, c, cs->job);
    }
    return handle_request(s, c, url, post, cs);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode code) {
    (void)code, (void)c;
    server *s = cls;
    connection_state *cs = *con_cls;
    if (cs) {
        job_release(s, cs->job);
        free(cs->body);
        free(cs);
    }
    *con_cls = NULL;
}

// libmicrohttpd's own messages (a malformed request it refuses itself, ...) go to stderr once.
static void on_mhd_log(void *cls, const char *format, va_list ap) {
    (void)cls;
    fputs("lcm serve: libmicrohttpd: ", stderr);
    vfprintf(stderr, format, ap);
}

// ---- start and stop --------------------------------------------------------------------------------

int serve_run(const serve_config *config) {
    server s = {.config = config};
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.work_ready, NULL);
    pthread_cond_init(&s.changed, NULL);
    s.images = serve_image_store_new();

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *addr = NULL;
    char port_text[16];
    snprintf(port_text, sizeof port_text, "%d", config->port);
    int gai = getaddrinfo(config->host, port_text, &hints, &addr);
    if (gai != 0 || !s.images) {
        fprintf(stderr, "lcm serve: --host %s: %s\n", config->host, gai ? gai_strerror(gai) : "out of memory");
        serve_image_store_free(s.images);
        if (addr) freeaddrinfo(addr);
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
    if (pthread_create(&worker, NULL, serve_worker_main, &s) != 0) {
        freeaddrinfo(addr);
        serve_image_store_free(s.images);
        fprintf(stderr, "lcm serve: could not start the worker thread\n");
        return 1;
    }
    // A few threads poll every connection (epoll); handlers never block, so a slow or idle client
    // costs a descriptor and a little memory, not a thread. Connections come from the acceptor
    // (server_accept.c), which has checked their request heads.
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    struct MHD_Daemon *daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, &s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, &s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)config->http_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)config->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)config->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)config->idle_timeout_s,
        MHD_OPTION_END);
    serve_acceptor *acceptor = daemon ? serve_acceptor_start(addr, daemon, config->header_timeout_s, config->max_per_ip,
                                                             serve_now, health_text, &s, &s.port)
                                      : NULL;
    freeaddrinfo(addr);
    int rc = 0;
    watchdog dog = {.s = &s};
    bool dog_running = false;
    if (!acceptor) {
        fprintf(stderr, "lcm serve: could not listen on %s port %d (in use, or not an address of this machine?)\n",
                config->host, config->port);
        rc = 1;
    } else {
        dog_running = pthread_create(&dog.thread, NULL, watchdog_main, &dog) == 0;
        bool v6 = strchr(config->host, ':') != NULL;
        printf("lcm serve: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", config->host, v6 ? "]" : "", s.port);
        fflush(stdout);
        int sig = 0;
        sigwait(&stop_signals, &sig);
        fprintf(stderr, "lcm serve: signal %d, shutting down\n", sig);
    }

    // Stop: no new connections; cancel the running job and everything queued; let every waiting
    // client get its answer (a 503 saying so), then stop.
    serve_acceptor_stop(acceptor);
    pthread_mutex_lock(&s.lock);
    s.stopping = true;
    if (s.current) atomic_store(&s.current->cancel, CANCEL_SHUTDOWN);
    pthread_cond_broadcast(&s.work_ready);
    pthread_mutex_unlock(&s.lock);
    pthread_join(worker, NULL);
    pthread_mutex_lock(&s.lock);
    double deadline = serve_now() + SHUTDOWN_GRACE_SECONDS;
    while (s.open_jobs > 0 && serve_now() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s.changed, &s.lock, &ts);
    }
    if (s.open_jobs > 0) fprintf(stderr, "lcm serve: %d answers not delivered before the shutdown\n", s.open_jobs);
    pthread_mutex_unlock(&s.lock);
    if (dog_running) {
        atomic_store(&dog.stop, true);
        pthread_join(dog.thread, NULL);
    }
    if (daemon) MHD_stop_daemon(daemon);
    for (int i = 0; i < config->model_count; i++) {
        lcm_pipeline_close(config->models[i].pipeline);
        config->models[i].pipeline = NULL;
    }
    serve_image_store_free(s.images);
    pthread_cond_destroy(&s.changed);
    pthread_cond_destroy(&s.work_ready);
    pthread_mutex_destroy(&s.lock);
    return rc;
}
