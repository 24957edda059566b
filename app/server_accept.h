// `lcm serve`'s front door (server_accept.c): accepts connections and hands each to
// libmicrohttpd once its request head has arrived and is well formed.
#ifndef LCM_APP_SERVER_ACCEPT_H
#define LCM_APP_SERVER_ACCEPT_H

#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>

typedef struct serve_acceptor serve_acceptor;

// The body of GET /health (malloc'd JSON text, or NULL when out of memory), which the accepting
// thread answers itself (server_accept.c says why). Called on that thread.
typedef char *(*serve_health_fn)(void *user);

// Listens on `addr` and starts the accepting thread, handing connections to `daemon` (started
// with MHD_USE_NO_LISTEN_SOCKET). A head must arrive within header_timeout seconds; at most
// max_per_ip connections from one address wait for theirs. GET /health is answered with
// health(health_user) when `health` is set. *port receives the bound port. NULL when the address
// cannot be bound (errno says why).
serve_acceptor *serve_acceptor_start(const struct addrinfo *addr, struct MHD_Daemon *daemon, double header_timeout,
                                     int max_per_ip, double (*now)(void), serve_health_fn health, void *health_user,
                                     int *port);

// Stops accepting (the listening socket is closed) and drops the connections still waiting.
void serve_acceptor_stop(serve_acceptor *acceptor);

#endif
