// Soak test of `lcm serve` (not run by CI; bench/soak_serve.sh starts the server and runs this).
//
//   bench_soak_serve URL SERVER_PID SECONDS CLIENTS [CONTROL_PHOTO.png]
//
// CLIENTS threads send a mix of requests for SECONDS: txt2img and img2img (64x64, 2 steps),
// OpenAI generations, progress polls, interrupts, clients that give up mid-job (cancels),
// malformed bodies and heads, and slow clients that send their request head a byte at a time.
// With CONTROL_PHOTO every generation carries a canny ControlNet unit made from it (for a server
// started with --controlnet). A probe thread times GET /health every 200 ms; the server's resident
// memory (VmRSS of SERVER_PID) is sampled every second.
//
// Prints the count of each answer, the errors that are not one of the documented ones (200, 400,
// 408, 429, 503; 501 for features the model lacks), /health's latency percentiles, and the RSS at
// start, after warm-up (a fifth of the run) and at the end with the slope over the warm part
// (least squares, MB per minute). Exits 1 when the server died or answered outside the set.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *base_url;
static int server_pid, seconds;
static char *control_b64, *init_b64; // base64 PNGs (NULL when not given)
static atomic_bool stop;

enum { OK_2XX, E400, E408, E429, E501, E503, OTHER, TRANSPORT, GAVE_UP, COUNT_KINDS };
static const char *kind_names[COUNT_KINDS] = {"2xx", "400", "408", "429", "501", "503", "other status",
                                              "transport errors", "client gave up (cancel)"};
static atomic_long counts[COUNT_KINDS];
static atomic_long others_logged;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t discard(char *data, size_t size, size_t n, void *user) {
    (void)data, (void)user;
    return size * n;
}

static void count_status(long status, const char *what) {
    int kind = status >= 200 && status < 300 ? OK_2XX
               : status == 400               ? E400
               : status == 408               ? E408
               : status == 429               ? E429
               : status == 501               ? E501
               : status == 503               ? E503
                                             : OTHER;
    atomic_fetch_add(&counts[kind], 1);
    if (kind == OTHER && atomic_fetch_add(&others_logged, 1) < 20) fprintf(stderr, "soak: %s answered %ld\n", what, status);
}

// One request; `timeout_ms` > 0 gives up after that long (a client that leaves mid-job).
static void request(const char *path, const char *body, long timeout_ms) {
    char url[512];
    snprintf(url, sizeof url, "%s%s", base_url, path);
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 600000L);
    if (body) curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OPERATION_TIMEDOUT && timeout_ms > 0)
        atomic_fetch_add(&counts[GAVE_UP], 1);
    else if (rc != CURLE_OK) {
        atomic_fetch_add(&counts[TRANSPORT], 1);
        if (atomic_fetch_add(&others_logged, 1) < 20) fprintf(stderr, "soak: %s: %s\n", path, curl_easy_strerror(rc));
    } else
        count_status(status, path);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
}

// A client that sends its request head one byte every 20 ms, then reads the answer.
static void slow_client(void) {
    const char *port = strrchr(base_url, ':');
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(port + 1))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        atomic_fetch_add(&counts[TRANSPORT], 1);
        if (fd >= 0) close(fd);
        return;
    }
    const char *head = "GET /sdapi/v1/progress HTTP/1.1\r\nHost: soak\r\n\r\n";
    for (const char *p = head; *p && !atomic_load(&stop); p++) {
        if (send(fd, p, 1, MSG_NOSIGNAL) != 1) break;
        usleep(20000);
    }
    char reply[4096];
    ssize_t n = recv(fd, reply, sizeof reply - 1, 0);
    int status = 0;
    if (n > 12) {
        reply[n] = '\0';
        sscanf(reply, "HTTP/1.1 %d", &status);
    }
    if (status)
        count_status(status, "slow client");
    else
        atomic_fetch_add(&counts[TRANSPORT], 1);
    close(fd);
}

static void generation_body(char *body, size_t size, bool img2img, unsigned seed) {
    int n = snprintf(body, size, "{\"prompt\":\"soak %u\",\"seed\":%u,\"steps\":2,\"width\":64,\"height\":64", seed, seed);
    if (img2img && init_b64) n += snprintf(body + n, size - (size_t)n, ",\"init_images\":[\"%s\"]", init_b64);
    if (control_b64)
        n += snprintf(body + n, size - (size_t)n,
                      ",\"alwayson_scripts\":{\"controlnet\":{\"args\":[{\"image\":\"%s\",\"module\":\"canny\"}]}}",
                      control_b64);
    snprintf(body + n, size - (size_t)n, "}");
}

static void *client_main(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u;
    size_t size = 64 + (control_b64 ? strlen(control_b64) : 0) + (init_b64 ? strlen(init_b64) : 0) + 512;
    char *body = malloc(size);
    while (!atomic_load(&stop)) {
        int pick = (int)(rand_r(&seed) % 100);
        if (pick < 30) {
            request("/sdapi/v1/progress", NULL, 0);
        } else if (pick < 40) {
            request("/health", NULL, 0);
        } else if (pick < 55) {
            generation_body(body, size, false, seed);
            request("/sdapi/v1/txt2img", body, 0);
        } else if (pick < 62) {
            generation_body(body, size, true, seed);
            request("/sdapi/v1/img2img", body, 0);
        } else if (pick < 67) {
            request("/v1/images/generations", "{\"prompt\":\"soak\",\"size\":\"64x64\",\"response_format\":\"b64_json\"}", 0);
        } else if (pick < 70) {
            request("/sdapi/v1/interrupt", "{}", 0);
        } else if (pick < 78) { // malformed bodies
            request("/sdapi/v1/txt2img", pick % 2 ? "{\"prompt\":" : "{\"prompt\":\"a\",\"steps\":\"x\"}", 0);
        } else if (pick < 85) { // a client that leaves mid-job
            generation_body(body, size, false, seed);
            request("/sdapi/v1/txt2img", body, 300);
        } else if (pick < 90) {
            slow_client();
        } else {
            request("/sdapi/v1/options", NULL, 0);
        }
        usleep(50000 + rand_r(&seed) % 200000);
    }
    free(body);
    return NULL;
}

static long rss_kb(void) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    fclose(f);
    return kb;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char *file_base64(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)n);
    if (fread(data, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((size_t)(n + 2) / 3 * 4 + 1), *o = out;
    for (long i = 0; i < n; i += 3) {
        unsigned v = (unsigned)data[i] << 16 | (i + 1 < n ? (unsigned)data[i + 1] << 8 : 0) | (i + 2 < n ? data[i + 2] : 0);
        *o++ = alphabet[v >> 18];
        *o++ = alphabet[(v >> 12) & 63];
        *o++ = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? alphabet[v & 63] : '=';
    }
    *o = '\0';
    free(data);
    return out;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s URL SERVER_PID SECONDS CLIENTS [CONTROL_PHOTO.png]\n", argv[0]);
        return 2;
    }
    base_url = argv[1];
    server_pid = atoi(argv[2]);
    seconds = atoi(argv[3]);
    int clients = atoi(argv[4]);
    if (argc > 5 && !(control_b64 = file_base64(argv[5]))) {
        fprintf(stderr, "soak: cannot read %s\n", argv[5]);
        return 2;
    }
    init_b64 = control_b64; // img2img starts from the same photo (or none: then it is a 400)
    curl_global_init(CURL_GLOBAL_DEFAULT);
    signal(SIGPIPE, SIG_IGN);
    pthread_t *threads = calloc((size_t)clients, sizeof *threads);
    for (int i = 0; i < clients; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        pthread_create(&threads[i], &attr, client_main, (void *)(uintptr_t)(i + 1));
        pthread_attr_destroy(&attr);
    }
    size_t probes_cap = (size_t)seconds * 5 + 16, probes = 0, rss_count = 0;
    double *latency = malloc(probes_cap * sizeof *latency), *rss = malloc(((size_t)seconds + 2) * sizeof *rss);
    long health_failures = 0;
    double start = now(), next_rss = start;
    bool alive = true;
    while (now() - start < seconds && alive) {
        if (now() >= next_rss) {
            long kb = rss_kb();
            alive = kb > 0;
            if (alive && rss_count < (size_t)seconds + 2) rss[rss_count++] = kb / 1024.0;
            next_rss += 1.0;
        }
        // The probe: GET /health on its own connection.
        char url[512];
        snprintf(url, sizeof url, "%s/health", base_url);
        CURL *curl = curl_easy_init();
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
        double t0 = now();
        CURLcode rc = curl_easy_perform(curl);
        long status = 0;
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(curl);
        if (rc != CURLE_OK || status != 200) health_failures++;
        else if (probes < probes_cap) latency[probes++] = now() - t0;
        usleep(200000);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < clients; i++) pthread_join(threads[i], NULL);
    long final_kb = rss_kb();
    alive = alive && final_kb > 0;

    printf("soak: %d clients, %.0f s, server %s\n", clients, now() - start, alive ? "alive" : "GONE");
    long documented = 0, undocumented = 0;
    for (int k = 0; k < COUNT_KINDS; k++) {
        printf("  %-26s %ld\n", kind_names[k], atomic_load(&counts[k]));
        if (k == OTHER || k == TRANSPORT) undocumented += atomic_load(&counts[k]);
        else documented += atomic_load(&counts[k]);
    }
    qsort(latency, probes, sizeof *latency, compare_doubles);
    if (probes)
        printf("  /health: %zu probes, %ld failed; p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", probes, health_failures,
               1e3 * latency[probes / 2], 1e3 * latency[(size_t)(probes * 0.99)], 1e3 * latency[probes - 1]);
    // RSS: slope after warm-up (the first fifth), least squares.
    size_t warm = rss_count / 5;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    size_t m = rss_count - warm;
    for (size_t i = warm; i < rss_count; i++) {
        double x = (double)i, y = rss[i];
        sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    double slope = m > 1 ? (m * sxy - sx * sy) / (m * sxx - sx * sx) * 60.0 : 0;
    double rss_max = 0;
    for (size_t i = 0; i < rss_count; i++) rss_max = rss[i] > rss_max ? rss[i] : rss_max;
    if (rss_count)
        printf("  RSS: start %.1f MB, after warm-up %.1f MB, end %.1f MB, max %.1f MB; slope after warm-up %+.2f MB/min\n",
               rss[0], rss[warm], rss[rss_count - 1], rss_max, slope);
    printf("  answers outside the documented set: %ld (of %ld)\n", undocumented, documented + undocumented);
    free(latency);
    free(rss);
    free(threads);
    free(control_b64);
    curl_global_cleanup();
    return alive && undocumented == 0 && health_failures == 0 ? 0 : 1;
}
