// Command-line parsing shared by the subcommands.
//
// Options are `--name value` or `--name=value`; flags are `--name`. `--` ends the options, so a
// prompt may start with '-'. Everything else is a positional argument.
#ifndef LCM_APP_ARGS_H
#define LCM_APP_ARGS_H

#include <stdbool.h>

#include "lcm.h"

typedef enum arg_kind { ARG_FLAG, ARG_STRING, ARG_INT, ARG_FLOAT } arg_kind;

typedef struct arg_spec {
    const char *name; // without the leading "--"
    arg_kind kind;
    void *value;      // bool*, const char**, long*, double* by kind
    const char *help; // one line for --help
    bool repeatable;  // only for ARG_STRING: value is then an args_list*
} arg_spec;

// The most values a repeatable option takes.
#define ARGS_LIST_MAX 32

typedef struct args_list {
    const char *items[ARGS_LIST_MAX];
    int count;
} args_list;

// Parses argv[1..argc) (argv[0] is the subcommand name). Positionals go to positional[] (at most
// max_positional). Returns 0 on success, 1 when --help was printed (exit 0), 2 on a usage error
// (already printed to stderr).
int args_parse(int argc, char **argv, const arg_spec *specs, int nspecs, const char **positional,
               int max_positional, int *npositional, const char *usage_line);

// The --lora FILE[:SCALE] specs of `specs` as adapters: loras[i].path points into paths[i], a copy
// of the spec's file part owned by the caller (args_loras_free, also after a failure). Returns
// LCM_OK or the error of the first spec that does not parse (lcm_last_error says which).
lcm_status args_loras(const args_list *specs, lcm_lora *loras, char **paths);
void args_loras_free(char **paths, int count);

#endif
