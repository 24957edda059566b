#include <stdio.h>

#include "app/commands.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "lcm tokenize: not built yet\n");
    return 1;
}
