// `lcm serve`: the OpenAI Images API subset (/v1/images/generations, /v1/models) and the images it
// serves for `url` responses (/v1/images/ID.png, kept for --image-ttl seconds).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "app/server_internal.h"

// What the store keeps at most, whatever the TTL: the oldest image goes first.
#define STORE_MAX_IMAGES 256
#define STORE_MAX_BYTES ((size_t)256 << 20)

typedef struct stored_image {
    char id[33]; // 128 random bits in hex: unguessable, so the URL is the capability
    uint8_t *png;
    size_t size;
    double expires; // monotonic seconds
} stored_image;

typedef struct serve_image_store {
    pthread_mutex_t lock;
    stored_image items[STORE_MAX_IMAGES]; // oldest first
    int count;
    size_t bytes;
} serve_image_store;

serve_image_store *serve_image_store_new(void) {
    serve_image_store *store = calloc(1, sizeof *store);
    if (store) pthread_mutex_init(&store->lock, NULL);
    return store;
}

void serve_image_store_free(serve_image_store *store) {
    if (!store) return;
    for (int i = 0; i < store->count; i++) free(store->items[i].png);
    pthread_mutex_destroy(&store->lock);
    free(store);
}

static void drop_oldest(serve_image_store *store) {
    store->bytes -= store->items[0].size;
    free(store->items[0].png);
    memmove(&store->items[0], &store->items[1], (size_t)(store->count - 1) * sizeof store->items[0]);
    store->count--;
}

// Drops what expired (lock held). Items are in insertion order and share one TTL.
static void expire(serve_image_store *store, double now) {
    while (store->count > 0 && store->items[0].expires <= now) drop_oldest(store);
}

// Keeps `png` (taken over) and writes its id; false (png freed) when out of random bytes.
static bool store_put(serve_image_store *store, uint8_t *png, size_t size, double ttl, char id[33]) {
    uint8_t random[16];
    if (getrandom(random, sizeof random, 0) != sizeof random) {
        free(png);
        return false;
    }
    for (int i = 0; i < 16; i++) snprintf(id + 2 * i, 3, "%02x", random[i]);
    pthread_mutex_lock(&store->lock);
    double now = serve_now();
    expire(store, now);
    while (store->count > 0 && (store->count == STORE_MAX_IMAGES || store->bytes + size > STORE_MAX_BYTES))
        drop_oldest(store);
    stored_image *item = &store->items[store->count++];
    memcpy(item->id, id, 33);
    item->png = png;
    item->size = size;
    item->expires = now + ttl;
    store->bytes += size;
    pthread_mutex_unlock(&store->lock);
    return true;
}

enum MHD_Result serve_openai_image(server *s, struct MHD_Connection *c, const char *name) {
    serve_image_store *store = s->images;
    size_t length = strlen(name);
    char id[33] = "";
    if (length == 36 && !strcmp(name + 32, ".png")) memcpy(id, name, 32);
    pthread_mutex_lock(&store->lock);
    expire(store, serve_now());
    stored_image *found = NULL;
    for (int i = 0; i < store->count && id[0]; i++)
        if (!memcmp(store->items[i].id, id, 32)) found = &store->items[i];
    uint8_t *copy = found ? malloc(found->size) : NULL;
    size_t size = found ? found->size : 0;
    if (copy) memcpy(copy, found->png, size);
    pthread_mutex_unlock(&store->lock);
    if (!found) {
        char message[200];
        snprintf(message, sizeof message, "no such image: generated images are served for %d seconds after they "
                 "are made", s->config->image_ttl_s);
        return serve_send_error(c, 404, "", message);
    }
    if (!copy) return serve_send_busy(s, c, 503, "out of memory");
    struct MHD_Response *r = MHD_create_response_from_buffer(size, copy, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(copy);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "image/png");
    MHD_add_response_header(r, "Cache-Control", "private, max-age=3600");
    // Every request head passes the acceptor\'s checks: no keep-alive (server_accept.c).
    MHD_add_response_header(r, "Connection", "close");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

// The images as `b64_json`, or stored and answered as `url`s on the address the client used.
cJSON *serve_openai_result(server *s, const job *j, const char *host, char *message, size_t message_size) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "created", (double)time(NULL));
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    for (int i = 0; i < j->image_count; i++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddItemToArray(data, item);
        if (j->params.response_format == SERVE_FORMAT_B64_JSON) {
            cJSON_AddStringToObject(item, "b64_json", j->images_base64[i]);
        } else {
            const char *b64 = j->images_base64[i];
            uint8_t *png = NULL;
            size_t size = 0;
            char id[33];
            if (!serve_base64_decode(b64, strlen(b64), (size_t)-1, &png, &size) ||
                !store_put(s->images, png, size, s->config->image_ttl_s, id)) {
                snprintf(message, message_size, "out of memory keeping the image for its url");
                cJSON_Delete(root);
                return NULL;
            }
            char url[512];
            snprintf(url, sizeof url, "http://%.300s/v1/images/%s.png", host, id);
            cJSON_AddStringToObject(item, "url", url);
        }
        cJSON_AddStringToObject(item, "revised_prompt", j->params.prompt);
    }
    return root;
}

static cJSON *model_json(const serve_model *m) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", m->name);
    cJSON_AddStringToObject(o, "object", "model");
    cJSON_AddNumberToObject(o, "created", 0);
    cJSON_AddStringToObject(o, "owned_by", "lcm.c");
    return o;
}

// GET /v1/models (id NULL) or /v1/models/{id}.
enum MHD_Result serve_openai_models(server *s, struct MHD_Connection *c, const char *id) {
    const serve_config *config = s->config;
    if (!id) {
        cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data");
        cJSON_AddStringToObject(o, "object", "list");
        for (int i = 0; i < config->model_count; i++) cJSON_AddItemToArray(data, model_json(&config->models[i]));
        return serve_send_json(c, 200, o);
    }
    for (int i = 0; i < config->model_count; i++)
        if (!strcmp(config->models[i].name, id)) return serve_send_json(c, 200, model_json(&config->models[i]));
    char message[300];
    snprintf(message, sizeof message, "The model '%.200s' does not exist", id);
    return serve_send_error_code(c, 404, "model", "model_not_found", message);
}
