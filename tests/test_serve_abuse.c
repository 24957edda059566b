// `lcm serve` under abuse, over raw sockets (issue 21):
// - malformed request heads (Content-Length -5, hex or two different ones, Transfer-Encoding, a
//   bad request line, a header without a colon, an oversized head) are answered exactly once
//   (one status line) with a JSON error, and the server keeps serving;
// - slow-loris: 150 connections from another loopback address (127.0.0.2) dribbling a byte every
//   0.3 s do not slow /health or a generation for a client on 127.0.0.1; the ones beyond
//   --max-per-ip are refused at once, the rest get 408 once --header-timeout passes;
// - a connection beyond --max-connections, which libmicrohttpd would close without a word, gets a
//   503 JSON answer; GET /health is still answered (by the accepting thread) meanwhile;
// - SIGTERM while a job runs: its client gets a 503 JSON answer with Retry-After, and the process
//   exits 0.
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "serve_process.h"
#include "testutil.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int port_of(const server_process *sp) { return atoi(strrchr(sp->base, ':') + 1); }

// A TCP connection to the server from `source` (NULL: any), -1 on failure.
static int connect_from(const server_process *sp, const char *source) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (source) {
        struct sockaddr_in local = {.sin_family = AF_INET};
        inet_pton(AF_INET, source, &local.sin_addr);
        if (bind(fd, (struct sockaddr *)&local, sizeof local) != 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port_of(sp))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// Reads until the server closes (every response says Connection: close) or `timeout` seconds.
static size_t read_all(int fd, char *buf, size_t cap, double timeout) {
    size_t n = 0;
    double end = now() + timeout;
    while (n + 1 < cap && now() < end) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t got = recv(fd, buf + n, cap - 1 - n, 0);
        if (got <= 0) break;
        n += (size_t)got;
    }
    buf[n] = '\0';
    return n;
}

// Sends `request` on a new connection and returns the whole reply (malloc'd).
static char *exchange(const server_process *sp, const char *request, size_t size, double timeout) {
    int fd = connect_from(sp, NULL);
    CHECK(fd >= 0, "connect: %s", strerror(errno));
    if (fd < 0) return strdup("");
    if (send(fd, request, size, MSG_NOSIGNAL) < 0) {
        // the server may answer before it has read everything: the reply says what happened
    }
    char *reply = malloc(1 << 16);
    read_all(fd, reply, 1 << 16, timeout);
    close(fd);
    return reply;
}

static int count_of(const char *text, const char *what) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p++) n++;
    return n;
}

// The reply's status, or 0 when it is not one well-formed HTTP response with a JSON error body.
static int json_error_status(const char *reply) {
    int status = 0;
    const char *body = strstr(reply, "\r\n\r\n");
    // One status line: none other at the start of a line (the double answer seen with
    // libmicrohttpd 0.9.75's own errors repeated its status line after the first head).
    if (sscanf(reply, "HTTP/1.1 %d ", &status) != 1 || !body || count_of(reply, "\nHTTP/1.") != 0) return 0;
    cJSON *json = cJSON_Parse(body + 4);
    const cJSON *error = cJSON_GetObjectItem(json, "error");
    bool ok = cJSON_IsString(cJSON_GetObjectItem(error, "message")) && cJSON_IsString(cJSON_GetObjectItem(error, "code"));
    cJSON_Delete(json);
    return ok ? status : 0;
}

static void check_malformed_heads(const server_process *sp) {
    static const struct {
        const char *request;
        int status;
    } cases[] = {
        {"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}", 400},
        {"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n{}", 400},
        {"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400},
        {"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}", 400},
        {"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 411},
        {"GARBAGE\r\n\r\n", 400},
        {"GET /health HTTP/2.0\r\n\r\n", 400},
        {"GET /health HTTP/1.1\r\nNo colon here\r\n\r\n", 400},
        {"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n", 400},
        {"GET /health HTTP/1.1\nHost: x\n\n", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *reply = exchange(sp, cases[i].request, strlen(cases[i].request), 10);
        int status = json_error_status(reply);
        CHECK(status == cases[i].status, "%.60s...: expected one %d with a JSON error, got: %.300s", cases[i].request,
              cases[i].status, reply);
        free(reply);
    }
    // A head larger than the server takes: 431, once.
    size_t size = 40000;
    char *big = malloc(size + 64);
    int n = snprintf(big, size + 64, "GET /health HTTP/1.1\r\nX-Big: ");
    memset(big + n, 'a', size - (size_t)n);
    memcpy(big + size, "\r\n\r\n", 5);
    char *reply = exchange(sp, big, size + 4, 10);
    CHECK(json_error_status(reply) == 431, "an oversized head: %.300s", reply);
    free(reply);
    free(big);
    reply = exchange(sp, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 34, 10);
    CHECK(strncmp(reply, "HTTP/1.1 200", 12) == 0 && count_of(reply, "\nHTTP/1.") == 0, "still serving: %.200s", reply);
    free(reply);
}

static double health_latency(const server_process *sp, bool *ok) {
    double start = now();
    char *reply = exchange(sp, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 34, 10);
    *ok = strncmp(reply, "HTTP/1.1 200", 12) == 0 && strstr(reply, "\"status\":\"ok\"");
    free(reply);
    return now() - start;
}

#define LORIS 150

static void check_slow_loris(const server_process *sp, int max_per_ip, int header_timeout) {
    int fds[LORIS], opened = 0;
    for (int i = 0; i < LORIS; i++) {
        fds[i] = connect_from(sp, "127.0.0.2");
        if (fds[i] >= 0) {
            opened++;
            if (send(fds[i], "G", 1, MSG_NOSIGNAL) < 0) {
                // refused connections are counted below
            }
        }
    }
    CHECK(opened == LORIS, "opened %d of %d slow connections from 127.0.0.2", opened, LORIS);
    // Those beyond --max-per-ip are answered at once.
    usleep(500000);
    int refused = 0, timed_out = 0;
    for (int i = 0; i < LORIS; i++) {
        char reply[2048];
        ssize_t got = fds[i] >= 0 ? recv(fds[i], reply, sizeof reply - 1, MSG_DONTWAIT) : -1;
        if (got <= 0) continue;
        reply[got] = '\0';
        read_all(fds[i], reply + got, sizeof reply - (size_t)got, 1);
        refused += json_error_status(reply) == 503;
        close(fds[i]);
        fds[i] = -1;
    }
    const char *dribble = "ET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    double worst = 0, start = now();
    int served = 0, polls = 0;
    bool generated = false;
    for (int tick = 0; now() - start < header_timeout + 2.5; tick++) {
        for (int i = 0; i < LORIS; i++) // one more byte each
            if (fds[i] >= 0 && send(fds[i], dribble + tick % (int)strlen(dribble), 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                // closed by the server: its answer is read below
            }
        bool ok;
        double took = health_latency(sp, &ok);
        polls++;
        served += ok;
        if (took > worst) worst = took;
        if (!generated) { // and a generation for the real client
            const char *body = "{\"prompt\":\"a\",\"steps\":2,\"width\":64,\"height\":64}";
            char request[512];
            int n = snprintf(request, sizeof request,
                             "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
            char *reply = exchange(sp, request, (size_t)n, 60);
            generated = strncmp(reply, "HTTP/1.1 200", 12) == 0 && strstr(reply, "\"images\":[\"");
            CHECK(generated, "a generation beside the slow connections: %.200s", reply);
            free(reply);
        }
        usleep(300000);
    }
    // The others have had their 408 once --header-timeout passed.
    for (int i = 0; i < LORIS; i++) {
        if (fds[i] < 0) continue;
        char reply[2048];
        read_all(fds[i], reply, sizeof reply, 2);
        timed_out += json_error_status(reply) == 408;
        close(fds[i]);
    }
    fprintf(stderr, "slow-loris: %d connections, %d refused at once, %d timed out (408); /health %d/%d, worst %.3f s\n",
            LORIS, refused, timed_out, served, polls, worst);
    CHECK(served == polls && worst < 1.0, "/health beside %d slow connections: %d of %d answered, worst %.3f s", LORIS,
          served, polls, worst);
    CHECK(refused == LORIS - max_per_ip && timed_out == max_per_ip,
          "expected %d refused (beyond --max-per-ip) and %d timed out, got %d and %d", LORIS - max_per_ip, max_per_ip,
          refused, timed_out);
}

static void check_sigterm_mid_job(server_process *sp) {
    const char *body = "{\"prompt\":\"a\",\"steps\":8,\"width\":64,\"height\":64}";
    char request[512];
    int n = snprintf(request, sizeof request,
                     "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     strlen(body), body);
    int fd = connect_from(sp, NULL);
    CHECK(fd >= 0 && send(fd, request, (size_t)n, MSG_NOSIGNAL) == n, "send the job");
    // Wait until it runs, then stop the server.
    bool busy = false;
    for (int i = 0; i < 200 && !busy; i++) {
        char *reply = exchange(sp, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", 34, 10);
        busy = strstr(reply, "\"busy\":true") != NULL;
        free(reply);
        if (!busy) usleep(50000);
    }
    CHECK(busy, "the job did not start");
    kill(sp->pid, SIGTERM);
    char reply[4096];
    read_all(fd, reply, sizeof reply, 30);
    close(fd);
    CHECK(json_error_status(reply) == 503 && strstr(reply, "Retry-After: ") && strstr(reply, "shutting down"),
          "the job's client gets a 503 saying the server is shutting down: %.300s", reply);
    int status = 0;
    waitpid(sp->pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status after SIGTERM mid-job: %d", status);
    sp->pid = 0;
}

// A server limited to one open connection: one client holds it (its head sent, its body not),
// the next gets a 503 JSON answer, /health is answered all the same, and once the first client
// leaves the next request is served.
static void check_connection_limit(const char *model) {
    server_process sp;
    if (!server_start(&sp, model, "--threads 1 --max-connections 1")) return;
    static const char held_head[] = "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    int held = connect_from(&sp, NULL);
    CHECK(held >= 0 && send(held, held_head, sizeof held_head - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof held_head - 1),
          "holding a connection: %s", strerror(errno));
    usleep(300 * 1000); // the head is handed to libmicrohttpd, which waits for the body
    static const char capabilities[] = "GET /api/capabilities HTTP/1.1\r\nHost: x\r\n\r\n";
    char *reply = exchange(&sp, capabilities, sizeof capabilities - 1, 5);
    CHECK(json_error_status(reply) == 503, "a connection over the limit: expected one 503 JSON answer, got '%.200s'",
          reply);
    free(reply);
    bool ok = false;
    health_latency(&sp, &ok);
    CHECK(ok, "/health while libmicrohttpd is at its connection limit");
    if (held >= 0) close(held);
    usleep(300 * 1000); // libmicrohttpd notices the close
    reply = exchange(&sp, capabilities, sizeof capabilities - 1, 5);
    CHECK(strncmp(reply, "HTTP/1.1 200", 12) == 0, "after the held connection closed: '%.200s'", reply);
    free(reply);
    server_stop(&sp);
}

int main(void) {
    char model[1024];
    test_path(model, sizeof model, "%s/tiny-lcm", test_fixtures());
    server_process sp;
    const int max_per_ip = 40, header_timeout = 3;
    char extra[256];
    snprintf(extra, sizeof extra, "--threads 2 --max-per-ip %d --header-timeout %d --step-delay-ms 300", max_per_ip,
             header_timeout);
    check_connection_limit(model);
    if (server_start(&sp, model, extra)) {
        check_malformed_heads(&sp);
        check_slow_loris(&sp, max_per_ip, header_timeout);
        check_sigterm_mid_job(&sp);
        if (sp.pid > 0) server_stop(&sp); // only when the SIGTERM check could not run
    }
    return test_finish();
}
