// What the CLI shows while a hub model downloads: a notice with the size, then (on a terminal) a
// progress bar with bytes, speed and time left.
#ifndef LCM_APP_DOWNLOAD_PROGRESS_H
#define LCM_APP_DOWNLOAD_PROGRESS_H

#include <stdbool.h>

#include "lcm.h"

typedef struct download_progress {
    bool on_terminal; // draw the bar (stderr is a tty and not --quiet)
    bool quiet;       // not even the notice
    double started;   // monotonic seconds when the first byte was asked for
    double last_draw;
} download_progress;

// Sets options->start/progress/user_data to draw into `state`.
void download_progress_attach(download_progress *state, bool quiet, lcm_hub_options *options);

#endif
