// `lcm cache list|clear`: the packed-weight cache (weights packed for this CPU's kernels, kept
// between runs so that a model loads without packing again) and the table of measured kernel
// choices, both in the user's cache folder.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "lcm.h"

static const char *const usage =
    "usage: lcm cache list|clear\n"
    "  list   the packed-weight cache files (size, last use) and their total\n"
    "  clear  delete them and the measured kernel choices (measured again by the next load)\n"
    "The folder is $XDG_CACHE_HOME/lcm (default ~/.cache/lcm); LCM_CACHE_LIMIT (default 20G) bounds\n"
    "it, LCM_CACHE=off or --no-cache (generate, serve, bench) disables the cache.\n";

int cmd_cache(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc != 2 || (strcmp(argv[1], "list") && strcmp(argv[1], "clear"))) {
        fprintf(stderr, "lcm cache: expected 'list' or 'clear'\n%s", usage);
        return 2;
    }
    if (!strcmp(argv[1], "list")) {
        char *text = lcm_cache_describe();
        if (!text) {
            fprintf(stderr, "lcm cache list: %s\n", lcm_last_error());
            return 1;
        }
        fputs(text, stdout);
        free(text);
        return 0;
    }
    uint64_t freed = 0;
    if (lcm_cache_clear(&freed) != LCM_OK) {
        fprintf(stderr, "lcm cache clear: %s\n", lcm_last_error());
        return 1;
    }
    printf("freed %.1f MB\n", (double)freed / 1e6);
    return 0;
}
