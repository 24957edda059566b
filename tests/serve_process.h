// Starting and stopping `lcm serve` from a test: the server is told to take any free port and
// prints the one it got on its first line of stdout.
#ifndef LCM_TESTS_SERVE_PROCESS_H
#define LCM_TESTS_SERVE_PROCESS_H

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

typedef struct server_process {
    pid_t pid;
    char base[64]; // "http://127.0.0.1:PORT"
    const char *api_key;
} server_process;

// Starts `lcm serve --model MODEL --port 0 EXTRA`; false (with a recorded failure) if it did not
// come up within a minute.
static bool server_start(server_process *sp, const char *model, const char *extra) {
    memset(sp, 0, sizeof *sp);
    int out[2];
    if (pipe(out) != 0) return false;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec '%s' serve --model '%s' --port 0 %s", test_lcm_bin(), model, extra);
    sp->pid = fork();
    if (sp->pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    // The first line on stdout says where it listens.
    char line[256];
    size_t len = 0;
    struct pollfd pfd = {out[0], POLLIN, 0};
    while (len + 1 < sizeof line && poll(&pfd, 1, 60000) == 1) {
        ssize_t n = read(out[0], line + len, 1);
        if (n <= 0 || line[len] == '\n') break;
        len++;
    }
    line[len] = '\0';
    close(out[0]);
    const char *at = strstr(line, "http://127.0.0.1:");
    int port = at ? atoi(at + 17) : 0;
    CHECK(port > 0, "server did not say where it listens: '%s' (%s)", line, cmd);
    if (port <= 0) {
        kill(sp->pid, SIGKILL);
        waitpid(sp->pid, NULL, 0);
        return false;
    }
    snprintf(sp->base, sizeof sp->base, "http://127.0.0.1:%d", port);
    fprintf(stderr, "server: %s\n", cmd);
    return true;
}

// SIGTERM, then the exit status must be 0 (a clean shutdown).
static void server_stop(server_process *sp) {
    if (sp->pid <= 0) return;
    kill(sp->pid, SIGTERM);
    int status = 0;
    waitpid(sp->pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server %s did not exit cleanly on SIGTERM (status %d)",
          sp->base, status);
}

#endif
