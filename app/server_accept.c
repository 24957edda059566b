// `lcm serve`: the front door. One thread accepts connections and holds each until its request
// head (request line and headers) has fully arrived, reading it with MSG_PEEK so nothing is
// consumed; a head that is well formed is handed to libmicrohttpd (MHD_add_connection) which reads
// it again and serves the request. This thread, not libmicrohttpd, therefore answers:
// - heads that arrive too slowly (slow-loris): closed after --header-timeout seconds;
// - too many waiting connections, in all or from one address: refused at once;
// - malformed heads (a bad request line, a header that is not "name: value", a Content-Length
//   that is not one plain decimal number, Transfer-Encoding, an oversized head): a 400 (or 431,
//   411) with a JSON body, sent once. libmicrohttpd's own error answers are HTML, and for some
//   (Content-Length: -5) version 0.9.75 sends the status line and headers twice.
// - connections libmicrohttpd refuses (its connection limits): a 503 (it would close them silently).
// - GET /health, answered here (see examine).
// Every response carries "Connection: close", so every request head passes through here.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "app/server_accept.h"

#define HEAD_MAX 16384     // largest request head (libmicrohttpd's own limit is larger)
#define PENDING_MAX 1024   // connections waiting for their head, in all
#define EPOLL_BATCH 64

typedef struct pending {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    double deadline;
} pending;

struct serve_acceptor {
    struct MHD_Daemon *daemon;
    int listen_fd, epoll_fd, wake_fd; // wake_fd: a pipe's read end, written to stop
    int wake_write;
    double header_timeout;
    int max_per_ip;
    pending items[PENDING_MAX];
    int count;
    pthread_t thread;
    bool running;
    double (*now)(void);
    serve_health_fn health;
    void *health_user;
};

static bool same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                       sizeof(struct in6_addr));
    return false;
}

// Sends a complete JSON response (best effort: the socket is non-blocking and the answer small),
// then closes after dropping what the client already sent, so the close does not reset the
// connection before the client has read the answer.
static void send_and_close(int fd, int status, const char *reason, const char *body, size_t body_length) {
    char head[300];
    int head_length = snprintf(head, sizeof head,
                               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                               "Connection: close\r\nCache-Control: no-store\r\n\r\n",
                               status, reason, body_length);
    struct iovec parts[2] = {{head, (size_t)head_length}, {(void *)body, body_length}};
    struct msghdr message = {.msg_iov = parts, .msg_iovlen = 2};
    if (sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        // nothing more to do: the client is gone or not reading
    }
    shutdown(fd, SHUT_WR);
    char drain[4096];
    for (int i = 0; i < 64 && recv(fd, drain, sizeof drain, MSG_DONTWAIT) > 0; i++) {
    }
    close(fd);
}

static void answer_and_close(int fd, int status, const char *reason, const char *code, const char *message) {
    char body[600];
    int body_length = snprintf(body, sizeof body,
                               "{\"error\":{\"message\":\"%s\",\"type\":\"invalid_request_error\",\"param\":null,"
                               "\"code\":\"%s\"},\"detail\":\"%s\"}",
                               message, code, message);
    send_and_close(fd, status, reason, body, (size_t)body_length);
}

static bool is_token_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

typedef enum head_verdict { HEAD_OK, HEAD_INCOMPLETE, HEAD_BAD } head_verdict;

// Checks a request head (`size` bytes, ending at the blank line). On HEAD_BAD fills the answer.
static head_verdict check_head(const char *head, size_t size, int *status, const char **reason, const char **code,
                               const char **message) {
    *status = 400, *reason = "Bad Request", *code = "invalid_request";
    // Request line: METHOD SP TARGET SP HTTP/1.x CRLF
    const char *p = head, *end = head + size, *eol = memchr(p, '\n', size);
    if (!eol || eol == p || eol[-1] != '\r') return *message = "the request line must end with CRLF", HEAD_BAD;
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1) return *message = "the request line must be METHOD TARGET HTTP/1.x", HEAD_BAD;
    for (const char *c = p; c < sp1; c++)
        if (!is_token_char((unsigned char)*c)) return *message = "the request method is not a token", HEAD_BAD;
    for (const char *c = sp1 + 1; c < sp2; c++)
        if ((unsigned char)*c <= 32 || *c == 127) return *message = "the request target has a control character or space", HEAD_BAD;
    if (eol - 1 - (sp2 + 1) != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) || (sp2[8] != '0' && sp2[8] != '1'))
        return *message = "only HTTP/1.0 and HTTP/1.1 are served", HEAD_BAD;
    // Headers: NAME ":" OWS VALUE CRLF, until the empty line.
    int lengths = 0;
    char first_length[24] = "";
    for (p = eol + 1; p < end;) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol || eol == p || eol[-1] != '\r') return *message = "a header line must end with CRLF", HEAD_BAD;
        if (eol - 1 == p) break; // the blank line
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p) return *message = "a header line must be NAME: VALUE", HEAD_BAD;
        for (const char *c = p; c < colon; c++)
            if (!is_token_char((unsigned char)*c)) return *message = "a header name is not a token (no spaces before the colon)", HEAD_BAD;
        const char *value = colon + 1, *value_end = eol - 1;
        for (const char *c = value; c < value_end; c++)
            if (((unsigned char)*c < 32 && *c != '\t') || *c == 127) return *message = "a header value has a control character", HEAD_BAD;
        while (value < value_end && (*value == ' ' || *value == '\t')) value++;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) value_end--;
        size_t name_length = (size_t)(colon - p), value_length = (size_t)(value_end - value);
        if (name_length == 14 && !strncasecmp(p, "Content-Length", 14)) {
            if (value_length == 0 || value_length > 18) return *message = "Content-Length must be a decimal number of bytes", HEAD_BAD;
            for (const char *c = value; c < value_end; c++)
                if (*c < '0' || *c > '9') return *message = "Content-Length must be a decimal number of bytes", HEAD_BAD;
            if (lengths++ && (strlen(first_length) != value_length || memcmp(first_length, value, value_length)))
                return *message = "two different Content-Length headers", HEAD_BAD;
            memcpy(first_length, value, value_length);
            first_length[value_length] = '\0';
        }
        if (name_length == 17 && !strncasecmp(p, "Transfer-Encoding", 17)) {
            *status = 411, *reason = "Length Required", *code = "length_required";
            return *message = "send the body with a Content-Length (Transfer-Encoding is not accepted)", HEAD_BAD;
        }
        p = eol + 1;
    }
    return HEAD_OK;
}

// "GET /health" (a query string allowed, as libmicrohttpd ignores it) in a checked head.
static bool is_health_request(const char *head) {
    static const char prefix[] = "GET /health";
    if (strncmp(head, prefix, sizeof prefix - 1)) return false;
    char next = head[sizeof prefix - 1];
    return next == ' ' || next == '?';
}

static void drop(serve_acceptor *a, int index, bool close_fd) {
    epoll_ctl(a->epoll_fd, EPOLL_CTL_DEL, a->items[index].fd, NULL);
    if (close_fd) close(a->items[index].fd);
    a->items[index] = a->items[--a->count];
}

// Looks at what a waiting connection has sent so far; hands it on, answers it, or keeps waiting.
static void examine(serve_acceptor *a, int index) {
    pending *w = &a->items[index];
    static char head[HEAD_MAX + 1];
    ssize_t n = recv(w->fd, head, HEAD_MAX, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return drop(a, index, true);
    if (n < 0) return;
    head[n] = '\0';
    char *blank = memmem(head, (size_t)n, "\r\n\r\n", 4);
    int status;
    const char *reason, *code, *message;
    if (!blank && memmem(head, (size_t)n, "\n\n", 2)) {
        int fd = w->fd;
        drop(a, index, false);
        return answer_and_close(fd, 400, "Bad Request", "invalid_request", "request lines must end with CRLF");
    }
    if (!blank) {
        if (n < HEAD_MAX) return; // wait for more (an edge comes with every new byte)
        int fd = w->fd;
        drop(a, index, false);
        return answer_and_close(fd, 431, "Request Header Fields Too Large", "request_too_large",
                                "the request head is larger than 16384 bytes");
    }
    int fd = w->fd;
    if (check_head(head, (size_t)(blank + 4 - head), &status, &reason, &code, &message) == HEAD_BAD) {
        drop(a, index, false);
        return answer_and_close(fd, status, reason, code, message);
    }
    // GET /health is answered here: handed on, it would wait for a libmicrohttpd thread, each of
    // which polls many busy connections (uploads, base64 images going out) on a CPU the generation
    // keeps busy. Monitors time this endpoint; it must answer while everything else is slow.
    if (a->health && is_health_request(head)) {
        drop(a, index, false);
        char *body = a->health(a->health_user);
        if (!body) return answer_and_close(fd, 500, "Internal Server Error", "server_error", "out of memory");
        send_and_close(fd, 200, "OK", body, strlen(body));
        free(body);
        return;
    }
    struct sockaddr_storage addr = w->addr;
    socklen_t addr_len = w->addr_len;
    drop(a, index, false);
    // libmicrohttpd closes the socket without a word when it cannot take it (its connection
    // limits in all and per address, out of memory). A second descriptor of the same socket
    // keeps it open through that close, so the client gets a 503 instead of a reset.
    int spare = dup(fd);
    if (MHD_add_connection(a->daemon, fd, (const struct sockaddr *)&addr, addr_len) == MHD_YES) {
        if (spare >= 0) close(spare); // the socket stays open: libmicrohttpd holds `fd`
    } else if (spare >= 0) {
        answer_and_close(spare, 503, "Service Unavailable", "too_many_connections",
                         "the server has too many open connections; try again later");
    }
}

static void accept_all(serve_acceptor *a) {
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t addr_len = sizeof addr;
        int fd = accept4(a->listen_fd, (struct sockaddr *)&addr, &addr_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; // EAGAIN: all taken; other errors (EMFILE, ...): try again at the next event
        int same_ip = 0;
        for (int i = 0; i < a->count; i++) same_ip += same_address(&a->items[i].addr, &addr);
        if (a->count == PENDING_MAX || same_ip >= a->max_per_ip) {
            answer_and_close(fd, 503, "Service Unavailable", "too_many_connections",
                             "too many connections are waiting to send their requests; try again later");
            continue;
        }
        pending *w = &a->items[a->count];
        *w = (pending){.fd = fd, .addr = addr, .addr_len = addr_len, .deadline = a->now() + a->header_timeout};
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
        if (epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            continue;
        }
        a->count++;
        examine(a, a->count - 1); // the head may already be there
    }
}

static void *acceptor_main(void *arg) {
    serve_acceptor *a = arg;
    struct epoll_event events[EPOLL_BATCH];
    for (;;) {
        int n = epoll_wait(a->epoll_fd, events, EPOLL_BATCH, 250);
        bool stop = false;
        for (int e = 0; e < n; e++) {
            int fd = events[e].data.fd;
            if (fd == a->wake_fd) {
                stop = true;
            } else if (fd == a->listen_fd) {
                accept_all(a);
            } else {
                for (int i = 0; i < a->count; i++)
                    if (a->items[i].fd == fd) {
                        examine(a, i);
                        break;
                    }
            }
        }
        if (stop) break;
        double now = a->now();
        for (int i = 0; i < a->count;) {
            if (now < a->items[i].deadline) {
                i++;
                continue;
            }
            int fd = a->items[i].fd;
            drop(a, i, false);
            answer_and_close(fd, 408, "Request Timeout", "request_timeout",
                             "the request head did not arrive in time");
        }
    }
    while (a->count > 0) drop(a, 0, true);
    return NULL;
}

serve_acceptor *serve_acceptor_start(const struct addrinfo *addr, struct MHD_Daemon *daemon, double header_timeout,
                                     int max_per_ip, double (*now)(void), serve_health_fn health, void *health_user,
                                     int *port) {
    serve_acceptor *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->health = health;
    a->health_user = health_user;
    a->daemon = daemon;
    a->header_timeout = header_timeout;
    a->max_per_ip = max_per_ip;
    a->now = now;
    a->listen_fd = a->epoll_fd = a->wake_fd = a->wake_write = -1;
    int pipe_fds[2] = {-1, -1}, one = 1;
    a->listen_fd = socket(addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    bool ok = a->listen_fd >= 0 && setsockopt(a->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
              bind(a->listen_fd, addr->ai_addr, addr->ai_addrlen) == 0 && listen(a->listen_fd, 511) == 0 &&
              (a->epoll_fd = epoll_create1(EPOLL_CLOEXEC)) >= 0 && pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) == 0;
    a->wake_fd = pipe_fds[0];
    a->wake_write = pipe_fds[1];
    struct epoll_event listen_ev = {.events = EPOLLIN, .data.fd = a->listen_fd};
    struct epoll_event wake_ev = {.events = EPOLLIN, .data.fd = a->wake_fd};
    ok = ok && epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, a->listen_fd, &listen_ev) == 0 &&
         epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, a->wake_fd, &wake_ev) == 0;
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    ok = ok && getsockname(a->listen_fd, (struct sockaddr *)&bound, &bound_len) == 0;
    if (ok)
        *port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
    ok = ok && pthread_create(&a->thread, NULL, acceptor_main, a) == 0;
    if (!ok) {
        serve_acceptor_stop(a);
        return NULL;
    }
    a->running = true;
    return a;
}

void serve_acceptor_stop(serve_acceptor *a) {
    if (!a) return;
    if (a->running) {
        if (write(a->wake_write, "x", 1) != 1) {
            // the pipe is empty and non-blocking: this cannot fail short of a broken process
        }
        pthread_join(a->thread, NULL);
    }
    if (a->listen_fd >= 0) close(a->listen_fd);
    if (a->epoll_fd >= 0) close(a->epoll_fd);
    if (a->wake_fd >= 0) close(a->wake_fd);
    if (a->wake_write >= 0) close(a->wake_write);
    free(a);
}
