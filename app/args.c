#include "app/args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const char *usage_line, const arg_spec *specs, int nspecs) {
    printf("usage: %s\n\noptions:\n", usage_line);
    for (int i = 0; i < nspecs; i++) {
        const char *meta = specs[i].kind == ARG_FLAG     ? ""
                           : specs[i].kind == ARG_STRING ? " TEXT"
                           : specs[i].kind == ARG_INT    ? " N"
                                                         : " X";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", specs[i].name, meta);
        printf("  %-22s %s\n", left, specs[i].help);
    }
    printf("  %-22s %s\n", "--", "end of options (a prompt may then start with '-')");
}

static int set_value(const arg_spec *spec, const char *text, const char *cmd) {
    char *end;
    errno = 0;
    switch (spec->kind) {
    case ARG_FLAG: *(bool *)spec->value = true; return 0;
    case ARG_STRING:
        if (spec->repeatable) {
            args_list *list = spec->value;
            if (list->count >= (int)(sizeof list->items / sizeof list->items[0])) {
                fprintf(stderr, "%s: too many --%s options\n", cmd, spec->name);
                return 2;
            }
            list->items[list->count++] = text;
        } else {
            *(const char **)spec->value = text;
        }
        return 0;
    case ARG_INT: {
        long v = strtol(text, &end, 10);
        if (errno || end == text || *end) {
            fprintf(stderr, "%s: --%s expects an integer, got '%s'\n", cmd, spec->name, text);
            return 2;
        }
        *(long *)spec->value = v;
        return 0;
    }
    case ARG_FLOAT: {
        double v = strtod(text, &end);
        if (errno || end == text || *end || !isfinite(v)) {
            fprintf(stderr, "%s: --%s expects a number, got '%s'\n", cmd, spec->name, text);
            return 2;
        }
        *(double *)spec->value = v;
        return 0;
    }
    }
    return 2;
}

int args_parse(int argc, char **argv, const arg_spec *specs, int nspecs, const char **positional,
               int max_positional, int *npositional, const char *usage_line) {
    const char *cmd = argv[0];
    bool options_done = false;
    *npositional = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!options_done && !strcmp(a, "--")) {
            options_done = true;
            continue;
        }
        if (!options_done && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            print_help(usage_line, specs, nspecs);
            return 1;
        }
        if (!options_done && a[0] == '-' && a[1] == '-') {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const arg_spec *spec = NULL;
            for (int s = 0; s < nspecs; s++)
                if (strlen(specs[s].name) == len && !strncmp(specs[s].name, name, len)) spec = &specs[s];
            if (!spec) {
                fprintf(stderr, "%s: unknown option '%s' (see '%s --help')\n", cmd, a, cmd);
                return 2;
            }
            const char *value = NULL;
            if (spec->kind == ARG_FLAG) {
                if (eq) {
                    fprintf(stderr, "%s: --%s takes no value\n", cmd, spec->name);
                    return 2;
                }
            } else if (eq) {
                value = eq + 1;
            } else if (i + 1 < argc) {
                value = argv[++i];
            } else {
                fprintf(stderr, "%s: --%s needs a value\n", cmd, spec->name);
                return 2;
            }
            int rc = set_value(spec, value, cmd);
            if (rc) return rc;
            continue;
        }
        if (*npositional >= max_positional) {
            fprintf(stderr, "%s: unexpected argument '%s' (see '%s --help')\n", cmd, a, cmd);
            return 2;
        }
        positional[(*npositional)++] = a;
    }
    return 0;
}

lcm_status args_loras(const args_list *specs, lcm_lora *loras, char **paths) {
    for (int i = 0; i < specs->count; i++) paths[i] = NULL;
    for (int i = 0; i < specs->count; i++) {
        size_t length;
        lcm_status st = lcm_lora_spec_parse(specs->items[i], &length, &loras[i].scale);
        if (st != LCM_OK) return st;
        if (!(paths[i] = strndup(specs->items[i], length))) return LCM_ERR_OUT_OF_MEMORY;
        loras[i].path = paths[i];
    }
    return LCM_OK;
}

void args_loras_free(char **paths, int count) {
    for (int i = 0; i < count; i++) free(paths[i]);
}
