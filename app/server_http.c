// `lcm serve`: JSON responses, errors in one shape for every API, and the page's event stream.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/server_internal.h"


static enum MHD_Result send_text(struct MHD_Connection *c, int status, const char *type, char *text, size_t size,
                                 const char *retry_after) {
    struct MHD_Response *r = MHD_create_response_from_buffer(size, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    if (retry_after) MHD_add_response_header(r, "Retry-After", retry_after);
    // Every request head passes the acceptor\'s checks: no keep-alive (server_accept.c).
    MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

enum MHD_Result serve_send_json(struct MHD_Connection *c, int status, cJSON *json) {
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text) return MHD_NO;
    return send_text(c, status, "application/json", text, strlen(text), NULL);
}

// OpenAI's `type` and default `code` for an HTTP status, as its API answers them (the official SDKs
// pick their error class from the status; code and type are what scripts test).
static void error_kind(int status, const char **type, const char **code) {
    *type = "invalid_request_error";
    switch (status) {
    case 400: *code = "invalid_value"; break;
    case 401: *code = "invalid_api_key"; break;
    case 404: *code = "not_found"; break;
    case 405: *code = "method_not_allowed"; break;
    case 413: *code = "request_too_large"; break;
    case 429: *type = "requests", *code = "rate_limit_exceeded"; break;
    case 501: *code = "unsupported"; break;
    case 503: *type = "server_error", *code = "service_unavailable"; break;
    default: *type = status >= 500 ? "server_error" : "invalid_request_error", *code = status >= 500 ? "server_error" : "invalid_request"; break;
    }
}

cJSON *serve_error_json(int status, const char *field, const char *code, const char *message) {
    const char *type, *default_code;
    error_kind(status, &type, &default_code);
    cJSON *root = cJSON_CreateObject(), *error = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(error, "message", message);
    cJSON_AddStringToObject(error, "type", type);
    if (field && field[0])
        cJSON_AddStringToObject(error, "param", field);
    else
        cJSON_AddNullToObject(error, "param");
    cJSON_AddStringToObject(error, "code", code && code[0] ? code : default_code);
    cJSON_AddStringToObject(root, "detail", message); // FastAPI's (A1111's) error field
    return root;
}

enum MHD_Result serve_send_error_code(struct MHD_Connection *c, int status, const char *field, const char *code,
                                      const char *message) {
    return serve_send_json(c, status, serve_error_json(status, field, code, message));
}

enum MHD_Result serve_send_error(struct MHD_Connection *c, int status, const char *field, const char *message) {
    return serve_send_error_code(c, status, field, NULL, message);
}

// 429 (queue full) and 503 (shutting down) carry Retry-After: the queue's expected wait.
enum MHD_Result serve_send_busy(server *s, struct MHD_Connection *c, int status, const char *message) {
    pthread_mutex_lock(&s->lock);
    double wait = ceil(s->mean_job_seconds * (s->queued + 1));
    pthread_mutex_unlock(&s->lock);
    char seconds[32];
    snprintf(seconds, sizeof seconds, "%d", wait < 1 ? 1 : wait > 3600 ? 3600 : (int)wait);
    cJSON *json = serve_error_json(status, "", NULL, message);
    char *text = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    if (!text) return MHD_NO;
    return send_text(c, status, "application/json", text, strlen(text), seconds);
}

// ---- the page's event stream ---------------------------------------------------------------------

// POST /api/generate answers with server-sent events: `queued`, then `progress` after every step
// (and `preview` when the library makes previews), then one `result` or `failure`. The stream's
// reader never blocks: with nothing new it suspends the connection, and the worker resumes it
// when the job moves (the watchdog does every EVENT_KEEPALIVE_SECONDS for a keep-alive comment).
typedef struct event_stream {
    server *s;
    job *j;
    char *pending; // the event being sent
    size_t pending_size, pending_sent;
    int progress_sent, previews_sent;
    bool started, finished;
    double last_sent;
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
            cJSON_AddNumberToObject(d, "status", serve_http_status_for(j->status));
            cJSON_AddStringToObject(d, "message", j->message);
            return format_event("failure", d);
        }
        cJSON *d = cJSON_CreateObject();
        cJSON_AddItemToObject(d, "images", serve_images_json(j));
        cJSON_AddItemToObject(d, "parameters", serve_parameters_json(s, j));
        cJSON_AddItemToObject(d, "info", serve_info_json(s, j));
        if (j->params.unit_count > 0 && j->control_base64[0]) { // the control map the ControlNet saw
            cJSON_AddStringToObject(d, "control_image", j->control_base64[0]);
            cJSON_AddStringToObject(d, "control_module", serve_control_module_name(j->params.units[0].module));
        }
        return format_event("result", d);
    }
    return NULL;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    event_stream *es = cls;
    if (!es->pending || es->pending_sent == es->pending_size) {
        free(es->pending);
        es->pending = NULL;
        if (es->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        server *s = es->s;
        pthread_mutex_lock(&s->lock);
        char *event = next_event(es);
        if (!event && serve_now() - es->last_sent > EVENT_KEEPALIVE_SECONDS) event = strdup(": keepalive\n\n");
        if (!event) {
            // Nothing new: wait (suspended) until the worker or the watchdog wakes the connection.
            if (es->j->connection) {
                es->j->suspended = true;
                MHD_suspend_connection(es->j->connection);
            }
            pthread_mutex_unlock(&s->lock);
            return 0;
        }
        pthread_mutex_unlock(&s->lock);
        es->pending = event;
        es->pending_size = strlen(event);
        es->pending_sent = 0;
        es->last_sent = serve_now();
    }
    size_t n = es->pending_size - es->pending_sent;
    if (n > max) n = max;
    memcpy(buf, es->pending + es->pending_sent, n);
    es->pending_sent += n;
    return (ssize_t)n;
}

// Called by libmicrohttpd when the stream ends, normally or because the client went away.
static void stream_free(void *cls) {
    event_stream *es = cls;
    job_release(es->s, es->j);
    free(es->pending);
    free(es);
}

enum MHD_Result serve_send_event_stream(server *s, struct MHD_Connection *c, job *j) {
    event_stream *es = calloc(1, sizeof *es);
    if (!es) {
        job_release(s, j);
        return MHD_NO;
    }
    es->s = s;
    es->j = j;
    es->last_sent = serve_now();
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, stream_read, es, stream_free);
    if (!r) {
        stream_free(es);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    // Every request head passes the acceptor\'s checks: no keep-alive (server_accept.c).
    MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}
