#include <stdio.h>

#include "app/commands.h"

int cmd_info(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "lcm info: not built yet\n");
    return 1;
}
