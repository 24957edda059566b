#include "app/download_progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void human_bytes(char *buf, size_t size, double bytes) {
    const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    int u = 0;
    while (bytes >= 1000 && u < 4) bytes /= 1000, u++;
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

static void on_start(void *user, const char *id, int files, uint64_t bytes) {
    download_progress *state = user;
    state->started = now_seconds();
    if (state->quiet) return;
    char size[32];
    human_bytes(size, sizeof size, (double)bytes);
    fprintf(stderr, "downloading %s from the Hugging Face hub: %d file%s, %s (once; cached for next time)\n",
            id, files, files == 1 ? "" : "s", size);
}

static int on_progress(void *user, const char *file, uint64_t file_done, uint64_t file_total,
                       uint64_t all_done, uint64_t all_total) {
    (void)file_done, (void)file_total;
    download_progress *state = user;
    if (!state->on_terminal) return 0;
    double now = now_seconds();
    bool finished = all_total && all_done >= all_total;
    if (now - state->last_draw < 0.2 && !finished) return 0;
    state->last_draw = now;
    double elapsed = now - state->started, speed = elapsed > 0 ? all_done / elapsed : 0;
    char done[32], total[32], rate[32];
    human_bytes(done, sizeof done, (double)all_done);
    human_bytes(total, sizeof total, (double)all_total);
    human_bytes(rate, sizeof rate, speed);
    int width = 24, filled = all_total ? (int)(width * (double)all_done / all_total) : 0;
    if (filled > width) filled = width;
    double eta = speed > 0 && all_total > all_done ? (all_total - all_done) / speed : 0;
    fprintf(stderr, "\r[%.*s%*s] %s / %s  %s/s  ETA %d:%02d  %-40.40s", filled,
            "########################", width - filled, "", done, total, rate, (int)eta / 60,
            (int)eta % 60, file);
    if (finished) fputc('\n', stderr);
    fflush(stderr);
    return 0;
}

void download_progress_attach(download_progress *state, bool quiet, lcm_hub_options *options) {
    *state = (download_progress){.on_terminal = !quiet && isatty(STDERR_FILENO), .quiet = quiet};
    options->start = on_start;
    options->progress = on_progress;
    options->user_data = state;
}
