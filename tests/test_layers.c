// The layer check (issue 23): the folders of src/ form layers, and an arrow may only point down.
//
// Reads the repository's own sources (no build products) and reports, as `file:line: ...`:
//   layers  an `#include "folder/x.h"` in src/<folder>/ naming a folder of a higher level, or of the
//           same level but another folder (io, text and sched are level 1 and must not use each other);
//           a folder of src/ missing from the table below
//   loops   a file loop inside one folder: file A calls a function defined in file B of the same
//           folder and B (directly or through other files of the folder) calls back into A
//   app     app/ including anything but "lcm.h" and app/'s own headers (the ctest test_layers_app)
//   api     a function declared in include/lcm.h defined outside src/api/, or called from a folder
//           below src/api/ (the ctest test_layers_api)
//
// Usage: test_layers                 the self-test (a made-up tree that breaks every rule must be
//                                    reported), then this repository: layers + loops
//        test_layers --app | --api   this repository: that check only
//        test_layers --root DIR [--app] [--api] [--all]   any tree laid out like this one
//
// The loop check works on calls, not on includes: several files of ops/ share types through
// headers (ops.h, packed_cache.h) without calling each other in a circle, and what makes two files
// one room is that each needs the other's functions. A function is "defined" in a file when a
// non-static definition of that name is at the top level of the file; "called" means the name
// appears in the other file outside comments and strings (a call, or its address taken).
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

// ---- the layer order: the one table (docs/ARCHITECTURE.md shows it to readers) -----------------
// A folder may include only folders of a LOWER level. Any layer may include "lcm.h" for its types.
static const struct {
    const char *folder;
    int level;
} layer_table[] = {
    {"core", 0},       // errors, tensors, rng, hashes, user cache dir
    {"io", 1},         // files and formats
    {"text", 1},       // the CLIP tokenizer
    {"sched", 1},      // the LCM scheduler (takes a parsed config)
    {"ops", 2},        // kernels, layers, backend, packed cache, int8 arithmetic
    {"models", 3},     // networks
    {"adapt", 4},      // LoRA
    {"preprocess", 4}, // ControlNet annotators
    {"pipeline", 5},   // generation
    {"tools", 6},      // quantize, flops, bench figures, synth, compare
    {"api", 7},        // every function declared in include/lcm.h
    {"app", 8},        // the CLI and server (repository root app/, not src/)
};
#define LAYER_COUNT ((int)(sizeof layer_table / sizeof *layer_table))

static int level_of(const char *folder) {
    for (int i = 0; i < LAYER_COUNT; i++)
        if (!strcmp(layer_table[i].folder, folder)) return layer_table[i].level;
    return -1;
}

// ---- reading sources ----------------------------------------------------------------------------

static void *xmalloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p) {
        fprintf(stderr, "test_layers: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xrealloc(void *p, size_t size) {
    p = realloc(p, size ? size : 1);
    if (!p) {
        fprintf(stderr, "test_layers: out of memory\n");
        exit(2);
    }
    return p;
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

typedef struct name_at {
    char *name;
    int line;
} name_at;

typedef struct include_at {
    char *path; // as written between the quotes
    int line;
} include_at;

typedef struct source {
    char *path;   // relative to the root: "src/io/checkpoint.c", "app/main.c", "include/lcm.h"
    char *folder; // "io" for src/io/..., "app" for app/..., "include" for include/
    bool is_c;    // .c or .inc (a translation unit's code), else a header
    include_at *includes;
    int include_count;
    name_at *idents; // every identifier outside comments, strings and #include lines, first line seen,
    int ident_count; // sorted by name
    name_at *defs;   // non-static functions defined at the top level (.c/.inc only)
    int def_count;
    name_at *statics; // static functions defined at the top level: names of the file's own
    int static_count;
    name_at *decls; // functions declared at the top level (headers only)
    int decl_count;
} source;

typedef struct tree {
    source *files;
    int count;
} tree;

// Comments become spaces and string/char literals keep only their quotes, so the text can be
// tokenized; newlines stay where they were (line numbers hold) and #include lines stay verbatim.
static char *strip_comments_and_strings(const char *raw) {
    size_t n = strlen(raw);
    char *out = xmalloc(n + 1);
    size_t i = 0;
    bool line_start = true;
    while (i < n) {
        char c = raw[i];
        if (line_start) {
            size_t j = i;
            while (j < n && (raw[j] == ' ' || raw[j] == '\t')) j++;
            if (j < n && raw[j] == '#') {
                size_t k = j + 1;
                while (k < n && (raw[k] == ' ' || raw[k] == '\t')) k++;
                if (!strncmp(raw + k, "include", 7)) {
                    while (i < n && raw[i] != '\n') out[i] = raw[i], i++;
                    continue;
                }
            }
        }
        line_start = false;
        if (c == '/' && i + 1 < n && raw[i + 1] == '/') {
            while (i < n && raw[i] != '\n') out[i++] = ' ';
        } else if (c == '/' && i + 1 < n && raw[i + 1] == '*') {
            out[i++] = ' ';
            out[i++] = ' ';
            while (i < n && !(raw[i] == '*' && i + 1 < n && raw[i + 1] == '/')) {
                out[i] = raw[i] == '\n' ? '\n' : ' ';
                i++;
            }
            if (i < n) out[i++] = ' ', out[i++] = ' ';
        } else if (c == '"' || c == '\'') {
            out[i++] = c;
            while (i < n && raw[i] != c && raw[i] != '\n') {
                if (raw[i] == '\\' && i + 1 < n) out[i++] = ' ';
                out[i++] = ' ';
            }
            if (i < n) out[i] = raw[i], i++;
        } else {
            out[i] = c;
            if (c == '\n') line_start = true;
            i++;
        }
    }
    out[n] = '\0';
    return out;
}

typedef struct token {
    const char *s;
    int len;
    int line;
    bool ident;
    bool directive; // inside a preprocessor directive (#define bodies included)
} token;

static bool ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool ident_char(char c) {
    return ident_start(c) || (c >= '0' && c <= '9');
}

// Identifiers, numbers and single punctuation characters; #include lines are left out entirely.
static token *tokenize(const char *text, int *count) {
    int cap = 1024, n = 0, line = 1;
    token *toks = xmalloc(sizeof *toks * (size_t)cap);
    bool directive = false, line_start = true, skip_line = false;
    for (const char *p = text; *p;) {
        if (*p == '\n') {
            if (!(p > text && p[-1] == '\\')) directive = false, skip_line = false;
            line++, p++, line_start = true;
            continue;
        }
        if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\f' || *p == '\\') {
            p++;
            continue;
        }
        if (line_start && *p == '#') {
            directive = true;
            const char *k = p + 1;
            while (*k == ' ' || *k == '\t') k++;
            if (!strncmp(k, "include", 7)) skip_line = true;
        }
        line_start = false;
        if (skip_line) {
            p++;
            continue;
        }
        if (n == cap) toks = xrealloc(toks, sizeof *toks * (size_t)(cap *= 2));
        token *t = &toks[n++];
        t->s = p, t->line = line, t->directive = directive;
        if (ident_start(*p)) {
            while (ident_char(*p)) p++;
            t->ident = true;
        } else if (*p >= '0' && *p <= '9') { // a number: one token that is no identifier
            while (ident_char(*p) || *p == '.') p++;
            t->ident = false;
        } else {
            p++;
            t->ident = false;
        }
        t->len = (int)(p - t->s);
    }
    *count = n;
    return toks;
}

static bool tok_is(const token *t, const char *word) {
    return (int)strlen(word) == t->len && !strncmp(t->s, word, (size_t)t->len);
}

static char *tok_dup(const token *t) {
    char *s = xmalloc((size_t)t->len + 1);
    memcpy(s, t->s, (size_t)t->len);
    s[t->len] = '\0';
    return s;
}

// The function a top-level statement defines or declares: the identifier right before the first
// '(' (after any __attribute__((...))), or -1 when the statement is not a function (a variable with
// an initializer, a typedef, a struct, a function-pointer variable).
static int function_name_index(const token *stmt, int n, bool *is_static) {
    *is_static = false;
    for (int i = 0; i < n; i++) {
        if (stmt[i].ident && (tok_is(&stmt[i], "typedef"))) return -1;
        if (!stmt[i].ident && *stmt[i].s == '=') return -1;
    }
    for (int i = 0; i < n; i++) {
        if (stmt[i].ident && tok_is(&stmt[i], "static")) *is_static = true;
        if (stmt[i].ident && tok_is(&stmt[i], "__attribute__")) {
            int depth = 0; // skip its balanced parentheses
            for (i++; i < n; i++) {
                if (*stmt[i].s == '(' && !stmt[i].ident) depth++;
                if (*stmt[i].s == ')' && !stmt[i].ident && --depth == 0) break;
            }
            continue;
        }
        if (!stmt[i].ident && *stmt[i].s == '(')
            return i > 0 && stmt[i - 1].ident ? i - 1 : -1;
    }
    return -1;
}

static void add_name(name_at **list, int *count, const token *t) {
    *list = xrealloc(*list, sizeof **list * (size_t)(*count + 1));
    (*list)[(*count)++] = (name_at){tok_dup(t), t->line};
}

static int cmp_name_line(const void *a, const void *b) {
    const name_at *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

// The function the top-level statement toks[start..end) defines or declares (directives left out),
// or NULL.
static const token *statement_function(const token *toks, int start, int end, bool *is_static) {
    static token stmt[256];
    int len = 0;
    for (int k = start; k < end && len < 256; k++)
        if (!toks[k].directive) stmt[len++] = toks[k];
    int name = function_name_index(stmt, len, is_static);
    return name >= 0 ? &stmt[name] : NULL;
}

// Top-level definitions (.c) and declarations (headers), skipping `extern "C" {` wrappers.
static void scan_top_level(source *f, const token *toks, int n) {
    int start = 0;          // first token of the current top-level statement
    int depth = 0;          // brace depth, not counting extern "C" braces
    bool wrapper[64] = {0}; // per open brace: is it an extern "C" one
    int open = 0;
    for (int i = 0; i < n; i++) {
        const token *t = &toks[i];
        if (t->directive) {
            if (depth == 0 && start == i) start = i + 1;
            continue;
        }
        if (t->ident) continue;
        char c = *t->s;
        if (c == '{') {
            bool is_wrapper = depth == 0 && i - start == 3 && tok_is(&toks[start], "extern");
            if (open < 64) wrapper[open] = is_wrapper;
            open++;
            if (is_wrapper) {
                start = i + 1;
                continue;
            }
            if (depth == 0 && f->is_c) {
                bool is_static;
                const token *name = statement_function(toks, start, i, &is_static);
                if (name && is_static) add_name(&f->statics, &f->static_count, name);
                else if (name) add_name(&f->defs, &f->def_count, name);
            }
            depth++;
        } else if (c == '}') {
            open--;
            if (open >= 0 && open < 64 && wrapper[open]) {
                start = i + 1;
                continue;
            }
            if (depth > 0) depth--;
            if (depth == 0) start = i + 1;
        } else if (c == ';' && depth == 0) {
            if (!f->is_c) {
                bool is_static;
                const token *name = statement_function(toks, start, i, &is_static);
                if (name && !is_static) add_name(&f->decls, &f->decl_count, name);
            }
            start = i + 1;
        }
    }
}

static void read_includes(source *f, const char *text) {
    int line = 1;
    for (const char *p = text; *p; line++) {
        const char *q = p;
        while (*q == ' ' || *q == '\t') q++;
        if (*q == '#') {
            q++;
            while (*q == ' ' || *q == '\t') q++;
            if (!strncmp(q, "include", 7)) {
                q += 7;
                while (*q == ' ' || *q == '\t') q++;
                const char *end = *q == '"' ? strchr(q + 1, '"') : NULL;
                const char *eol = strchr(q, '\n');
                if (end && (!eol || end < eol)) {
                    f->includes = xrealloc(f->includes, sizeof *f->includes * (size_t)(f->include_count + 1));
                    char *path = xmalloc((size_t)(end - q));
                    memcpy(path, q + 1, (size_t)(end - q - 1));
                    path[end - q - 1] = '\0';
                    f->includes[f->include_count++] = (include_at){path, line};
                }
            }
        }
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
}

static char *read_text(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += got;
        if (cap - n < 2) buf = xrealloc(buf, cap *= 2);
    }
    fclose(fp);
    buf[n] = '\0';
    return buf;
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static bool add_source(tree *t, const char *root, const char *rel, const char *folder) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    char *raw = read_text(path);
    if (!raw) {
        fprintf(stderr, "test_layers: cannot read %s: %s\n", path, strerror(errno));
        return false;
    }
    t->files = xrealloc(t->files, sizeof *t->files * (size_t)(t->count + 1));
    source *f = &t->files[t->count++];
    memset(f, 0, sizeof *f);
    f->path = xstrdup(rel);
    f->folder = xstrdup(folder);
    f->is_c = has_suffix(rel, ".c") || has_suffix(rel, ".inc");
    char *text = strip_comments_and_strings(raw);
    free(raw);
    read_includes(f, text);
    int n;
    token *toks = tokenize(text, &n);
    scan_top_level(f, toks, n);
    name_at *all = xmalloc(sizeof *all * (size_t)n);
    int m = 0;
    for (int i = 0; i < n; i++) {
        // a member name (x.name, x->name, .name = ...) is not the function of that name
        bool member = i > 0 && !toks[i - 1].ident &&
                      (*toks[i - 1].s == '.' || (*toks[i - 1].s == '>' && i > 1 && *toks[i - 2].s == '-'));
        if (toks[i].ident && !member) all[m++] = (name_at){tok_dup(&toks[i]), toks[i].line};
    }
    qsort(all, (size_t)m, sizeof *all, cmp_name_line);
    f->idents = xmalloc(sizeof *f->idents * (size_t)m);
    for (int i = 0; i < m; i++) {
        if (f->ident_count && !strcmp(f->idents[f->ident_count - 1].name, all[i].name)) {
            free(all[i].name);
            continue;
        }
        f->idents[f->ident_count++] = all[i];
    }
    free(all);
    free(toks);
    free(text);
    return true;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// The entries of root/rel (sorted, without hidden ones), or -1 when it cannot be listed.
static int list_dir(const char *root, const char *rel, char ***names) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    DIR *d = opendir(path);
    *names = NULL;
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        *names = xrealloc(*names, sizeof **names * (size_t)(n + 1));
        (*names)[n++] = xstrdup(e->d_name);
    }
    closedir(d);
    qsort(*names, (size_t)n, sizeof **names, cmp_str);
    return n;
}

static bool is_dir(const char *root, const char *rel) {
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", root, rel);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_source_name(const char *name) {
    return has_suffix(name, ".c") || has_suffix(name, ".h") || has_suffix(name, ".inc");
}

// Every source file of src/<folder>/ (one level: the layers have no subfolders), app/ and
// include/lcm.h. False when the root has no src/.
static bool read_tree(const char *root, tree *t) {
    memset(t, 0, sizeof *t);
    char **folders;
    int nf = list_dir(root, "src", &folders);
    if (nf < 0) {
        fprintf(stderr, "test_layers: %s/src: cannot list: %s\n", root, strerror(errno));
        return false;
    }
    bool ok = true;
    for (int i = 0; i < nf; i++) {
        char rel[1024];
        snprintf(rel, sizeof rel, "src/%s", folders[i]);
        if (is_dir(root, rel)) {
            char **names;
            int n = list_dir(root, rel, &names);
            for (int k = 0; k < n; k++) {
                char file[2048];
                snprintf(file, sizeof file, "%s/%s", rel, names[k]);
                if (is_source_name(names[k])) ok &= add_source(t, root, file, folders[i]);
                free(names[k]);
            }
            free(names);
        }
        free(folders[i]);
    }
    free(folders);
    char **names;
    int n = list_dir(root, "app", &names);
    for (int k = 0; k < n; k++) {
        char file[2048];
        snprintf(file, sizeof file, "app/%s", names[k]);
        if (is_source_name(names[k])) ok &= add_source(t, root, file, "app");
        free(names[k]);
    }
    free(names);
    char lcm_h[4096];
    snprintf(lcm_h, sizeof lcm_h, "%s/include/lcm.h", root);
    if (access(lcm_h, R_OK) == 0) ok &= add_source(t, root, "include/lcm.h", "include");
    return ok;
}

static void free_names(name_at *list, int n) {
    for (int i = 0; i < n; i++) free(list[i].name);
    free(list);
}

static void free_tree(tree *t) {
    for (int i = 0; i < t->count; i++) {
        source *f = &t->files[i];
        for (int k = 0; k < f->include_count; k++) free(f->includes[k].path);
        free(f->includes);
        free_names(f->idents, f->ident_count);
        free_names(f->defs, f->def_count);
        free_names(f->statics, f->static_count);
        free_names(f->decls, f->decl_count);
        free(f->path);
        free(f->folder);
    }
    free(t->files);
}

static bool has_name(const name_at *list, int count, const char *name) {
    for (int i = 0; i < count; i++)
        if (!strcmp(list[i].name, name)) return true;
    return false;
}

static bool is_src(const source *f) {
    return !strncmp(f->path, "src/", 4);
}

// ---- the checks ---------------------------------------------------------------------------------

// layers: an include in src/<folder>/ of a folder that is not lower; a folder not in the table.
static int check_layers(const tree *t, FILE *out) {
    int violations = 0;
    const char *last_unknown = "";
    for (int i = 0; i < t->count; i++) {
        const source *f = &t->files[i];
        if (!is_src(f)) continue;
        int level = level_of(f->folder);
        if (level < 0) {
            if (strcmp(last_unknown, f->folder))
                fprintf(out, "src/%s/: folder not in the layer table (tests/test_layers.c layer_table, "
                             "docs/ARCHITECTURE.md)\n", f->folder), violations++;
            last_unknown = f->folder;
            continue;
        }
        for (int k = 0; k < f->include_count; k++) {
            const include_at *inc = &f->includes[k];
            const char *slash = strchr(inc->path, '/');
            if (!slash) continue; // "lcm.h" (types only) or a header of the same folder
            char folder[256];
            snprintf(folder, sizeof folder, "%.*s", (int)(slash - inc->path), inc->path);
            if (!strcmp(folder, f->folder)) continue;
            int target = level_of(folder);
            if (target < 0)
                fprintf(out, "%s:%d: includes %s (not a layer) from level %d\n", f->path, inc->line,
                        inc->path, level), violations++;
            else if (target >= level)
                fprintf(out, "%s:%d: includes %s (level %d) from level %d\n", f->path, inc->line,
                        inc->path, target, level), violations++;
        }
    }
    return violations;
}

// The non-static function `name` defined in a .c file of `folder`, other than `self`: the files'
// indices into *hits (returns how many).
typedef struct definition {
    const char *name;
    int file;
    int line;
} definition;

static int cmp_definition(const void *a, const void *b) {
    return strcmp(((const definition *)a)->name, ((const definition *)b)->name);
}

static definition *all_definitions(const tree *t, int *count) {
    int n = 0;
    for (int i = 0; i < t->count; i++) n += t->files[i].def_count;
    definition *defs = xmalloc(sizeof *defs * (size_t)n);
    n = 0;
    for (int i = 0; i < t->count; i++)
        for (int k = 0; k < t->files[i].def_count; k++)
            defs[n++] = (definition){t->files[i].defs[k].name, i, t->files[i].defs[k].line};
    qsort(defs, (size_t)n, sizeof *defs, cmp_definition);
    *count = n;
    return defs;
}

// loops: per folder, the files that call each other in a circle (strongly connected components of
// the "calls a function defined in" graph), each printed with one concrete circle.
typedef struct call_edge {
    const char *name; // the first function (by line) A uses from B; NULL: no edge
    int line;
} call_edge;

typedef struct folder_graph {
    int n;
    int *file;       // node -> index into the tree
    call_edge *edge; // n*n, edge[a*n+b]: a calls b
    int *index, *low, *stack, *component;
    bool *on_stack;
    int next_index, depth, components;
} folder_graph;

static void strong_connect(folder_graph *g, int v) {
    g->index[v] = g->low[v] = g->next_index++;
    g->stack[g->depth++] = v;
    g->on_stack[v] = true;
    for (int w = 0; w < g->n; w++) {
        if (!g->edge[v * g->n + w].name) continue;
        if (g->index[w] < 0) {
            strong_connect(g, w);
            if (g->low[w] < g->low[v]) g->low[v] = g->low[w];
        } else if (g->on_stack[w] && g->index[w] < g->low[v]) {
            g->low[v] = g->index[w];
        }
    }
    if (g->low[v] == g->index[v]) {
        int w;
        do {
            w = g->stack[--g->depth];
            g->on_stack[w] = false;
            g->component[w] = g->components;
        } while (w != v);
        g->components++;
    }
}

// A shortest circle through `start` inside its component (breadth-first); returns its length and
// the nodes in path[0..len-1] (path[0] = start, each calls the next, the last calls start).
static int shortest_circle(const folder_graph *g, int start, int *path) {
    int *previous = xmalloc(sizeof *previous * (size_t)g->n);
    int *queue = xmalloc(sizeof *queue * (size_t)g->n);
    for (int i = 0; i < g->n; i++) previous[i] = -1;
    int head = 0, tail = 0, last = -1;
    queue[tail++] = start;
    while (head < tail && last < 0) {
        int v = queue[head++];
        for (int w = 0; w < g->n; w++) {
            if (!g->edge[v * g->n + w].name || g->component[w] != g->component[start]) continue;
            if (w == start) {
                last = v;
                break;
            }
            if (previous[w] < 0) previous[w] = v, queue[tail++] = w;
        }
    }
    int len = 0;
    if (last < 0) { // not in a circle after all (cannot happen inside a component of two or more)
        free(previous);
        free(queue);
        return 0;
    }
    for (int v = last; v != start; v = previous[v]) path[len++] = v;
    path[len++] = start;
    for (int i = 0; i < len / 2; i++) {
        int tmp = path[i];
        path[i] = path[len - 1 - i];
        path[len - 1 - i] = tmp;
    }
    free(previous);
    free(queue);
    return len;
}

static int check_loops(const tree *t, FILE *out) {
    int def_count;
    definition *defs = all_definitions(t, &def_count);
    int violations = 0;
    for (int first = 0; first < t->count;) {
        // the files of one folder are consecutive in the tree
        int end = first;
        while (end < t->count && !strcmp(t->files[end].folder, t->files[first].folder)) end++;
        if (!is_src(&t->files[first])) {
            first = end;
            continue;
        }
        folder_graph g = {0};
        g.file = xmalloc(sizeof *g.file * (size_t)(end - first));
        for (int i = first; i < end; i++)
            if (t->files[i].is_c) g.file[g.n++] = i;
        g.edge = calloc((size_t)g.n * (size_t)g.n + 1, sizeof *g.edge);
        if (!g.edge) exit(2);
        for (int a = 0; a < g.n; a++) {
            const source *fa = &t->files[g.file[a]];
            for (int k = 0; k < fa->ident_count; k++) {
                // a name the file defines static is its own function, not the other file's
                if (has_name(fa->statics, fa->static_count, fa->idents[k].name)) continue;
                definition key = {fa->idents[k].name, 0, 0};
                definition *hit = bsearch(&key, defs, (size_t)def_count, sizeof key, cmp_definition);
                if (!hit) continue;
                while (hit > defs && !strcmp(hit[-1].name, key.name)) hit--;
                for (; hit < defs + def_count && !strcmp(hit->name, key.name); hit++) {
                    for (int b = 0; b < g.n; b++) {
                        call_edge *e = &g.edge[a * g.n + b];
                        if (b == a || g.file[b] != hit->file) continue;
                        if (!e->name || fa->idents[k].line < e->line)
                            *e = (call_edge){hit->name, fa->idents[k].line};
                    }
                }
            }
        }
        g.index = xmalloc(sizeof *g.index * (size_t)g.n + 1);
        g.low = xmalloc(sizeof *g.low * (size_t)g.n + 1);
        g.stack = xmalloc(sizeof *g.stack * (size_t)g.n + 1);
        g.component = xmalloc(sizeof *g.component * (size_t)g.n + 1);
        g.on_stack = calloc((size_t)g.n + 1, sizeof *g.on_stack);
        for (int v = 0; v < g.n; v++) g.index[v] = -1;
        for (int v = 0; v < g.n; v++)
            if (g.index[v] < 0) strong_connect(&g, v);
        int *path = xmalloc(sizeof *path * (size_t)g.n + 1);
        for (int c = 0; c < g.components; c++) {
            int members = 0, start = -1;
            for (int v = 0; v < g.n; v++)
                if (g.component[v] == c && members++ == 0) start = v;
            if (members < 2) continue;
            violations++;
            int len = shortest_circle(&g, start, path);
            if (len < 2) continue;
            const source *fs = &t->files[g.file[start]];
            fprintf(out, "%s:%d: file loop in src/%s/:", fs->path, g.edge[start * g.n + path[1 % len]].line,
                    fs->folder);
            for (int i = 0; i <= len; i++)
                fprintf(out, "%s %s", i ? " ->" : "", strrchr(t->files[g.file[path[i % len]]].path, '/') + 1);
            if (members > len) fprintf(out, " (%d files tangled in all)", members);
            fprintf(out, "\n");
            for (int i = 0; i < len; i++) {
                int a = path[i], b = path[(i + 1) % len];
                fprintf(out, "    %s:%d: calls %s (%s)\n", t->files[g.file[a]].path,
                        g.edge[a * g.n + b].line, g.edge[a * g.n + b].name, t->files[g.file[b]].path);
            }
        }
        free(path);
        free(g.file);
        free(g.edge);
        free(g.index);
        free(g.low);
        free(g.stack);
        free(g.component);
        free(g.on_stack);
        first = end;
    }
    free(defs);
    return violations;
}

static const source *find_source(const tree *t, const char *path) {
    for (int i = 0; i < t->count; i++)
        if (!strcmp(t->files[i].path, path)) return &t->files[i];
    return NULL;
}

// app: app/ includes only "lcm.h" and its own headers.
static int check_app(const tree *t, FILE *out) {
    int violations = 0;
    const int app_level = level_of("app");
    for (int i = 0; i < t->count; i++) {
        const source *f = &t->files[i];
        if (strcmp(f->folder, "app") || is_src(f)) continue;
        for (int k = 0; k < f->include_count; k++) {
            const include_at *inc = &f->includes[k];
            char own[1024];
            snprintf(own, sizeof own, "app/%s", inc->path);
            if (!strcmp(inc->path, "lcm.h") || (!strchr(inc->path, '/') && find_source(t, own)) ||
                (!strncmp(inc->path, "app/", 4) && find_source(t, inc->path)))
                continue;
            const char *slash = strchr(inc->path, '/');
            char folder[256];
            snprintf(folder, sizeof folder, "%.*s", slash ? (int)(slash - inc->path) : 0, inc->path);
            int target = slash ? level_of(folder) : -1;
            if (target >= 0)
                fprintf(out, "%s:%d: includes %s (level %d) from level %d (app/ may include only "
                             "\"lcm.h\" and app/'s own headers)\n",
                        f->path, inc->line, inc->path, target, app_level);
            else
                fprintf(out, "%s:%d: includes %s (neither \"lcm.h\" nor a header of app/) from level %d\n",
                        f->path, inc->line, inc->path, app_level);
            violations++;
        }
    }
    return violations;
}

// api: every function declared in include/lcm.h is defined in src/api/, and no folder below it
// calls one (that would be an upward call hidden behind the header).
static int check_api(const tree *t, FILE *out) {
    const source *lcm_h = find_source(t, "include/lcm.h");
    if (!lcm_h || lcm_h->decl_count == 0) {
        fprintf(out, "include/lcm.h: missing, or no function declarations found in it\n");
        return 1;
    }
    int violations = 0;
    const int api_level = level_of("api");
    for (int i = 0; i < t->count; i++) {
        const source *f = &t->files[i];
        if (!is_src(f) || !strcmp(f->folder, "api")) continue;
        for (int k = 0; k < f->def_count; k++)
            if (has_name(lcm_h->decls, lcm_h->decl_count, f->defs[k].name))
                fprintf(out, "%s:%d: defines %s (declared in include/lcm.h) outside src/api/\n",
                        f->path, f->defs[k].line, f->defs[k].name), violations++;
        int level = level_of(f->folder);
        if (level < 0 || level >= api_level) continue;
        for (int k = 0; k < f->ident_count; k++) {
            const char *name = f->idents[k].name;
            if (has_name(lcm_h->decls, lcm_h->decl_count, name) && !has_name(f->defs, f->def_count, name))
                fprintf(out, "%s:%d: calls %s (declared in include/lcm.h) from level %d: only src/api/ "
                             "(level %d) and app/ may\n",
                        f->path, f->idents[k].line, name, level, api_level), violations++;
        }
    }
    return violations;
}

// docs/ARCHITECTURE.md shows the same table: a row "| level | `src/folder/` | ..." per layer.
static int check_docs_mirror(const char *root, FILE *out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/docs/ARCHITECTURE.md", root);
    char *doc = read_text(path);
    if (!doc) {
        fprintf(out, "docs/ARCHITECTURE.md: cannot read it (it shows the layer table)\n");
        return 1;
    }
    int violations = 0;
    for (int i = 0; i < LAYER_COUNT; i++) {
        char row[256];
        snprintf(row, sizeof row, "| %d | `%s%s/` |", layer_table[i].level,
                 strcmp(layer_table[i].folder, "app") ? "src/" : "", layer_table[i].folder);
        if (!strstr(doc, row))
            fprintf(out, "docs/ARCHITECTURE.md: no row starting \"%s\" (the layer table in "
                         "tests/test_layers.c has it)\n", row), violations++;
    }
    free(doc);
    return violations;
}

// ---- the self-test: a tree that breaks each rule once, and must be reported exactly so ----------

static void write_tree_file(const char *root, const char *rel, const char *text) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            fprintf(stderr, "mkdir %s: %s\n", path, strerror(errno));
        *p = '/';
    }
    test_write_file(path, text, strlen(text));
}

static const struct {
    const char *path, *text;
} broken_tree[] = {
    {"include/lcm.h", "#ifdef __cplusplus\nextern \"C\" {\n#endif\ntypedef int lcm_status;\n"
                      "typedef int (*lcm_callback)(void *user);\nlcm_status lcm_do(int x);\n"
                      "#ifdef __cplusplus\n}\n#endif\n"},
    {"src/core/base.h", "int base_value(void);\n"},
    {"src/core/base.c", "#include \"core/base.h\"\nint base_value(void) { return 1; }\n"
                        "lcm_status lcm_do(int x) { return x; }\n"}, // lcm.h function outside api/
    {"src/ops/kern.c", "#include \"core/base.h\"\n#include \"models/net.h\"\n" // upward include, line 2
                       "// #include \"pipeline/hidden.h\" is a comment\nint kern(void) { return base_value(); }\n"},
    {"src/models/net.h", "int net(void);\n"},
    {"src/models/net.c", "#include \"models/net.h\"\n#include \"lcm.h\"\n"
                         "int net(void) { return lcm_do(2); }\n"}, // calls lcm.h from level 3, line 3
    {"src/io/a.h", "int a_first(void);\nint a_third(void);\n"},
    {"src/io/a.c", "#include \"io/a.h\"\n#include \"io/b.h\"\n\n"
                   "int a_first(void) { return b_second() + c_value(); }\nint a_third(void) { return 3; }\n"},
    {"src/io/b.h", "int b_second(void);\n"},
    {"src/io/b.c", "#include \"io/a.h\"\n#include \"io/b.h\"\nint b_second(void) { return a_third(); }\n"},
    // a.c calls c.c, and c.c's own static a_third is no arrow back
    {"src/io/c.c", "static int a_third(void) { return 0; }\nint c_value(void) { return a_third(); }\n"},
    {"src/sched/s.c", "#include \"io/a.h\"\nint s(void) { return a_third(); }\n"}, // same level, line 1
    {"src/newlayer/x.c", "int x(void) { return 0; }\n"},
    {"src/api/api.c", "#include \"lcm.h\"\n#include \"app/args.h\"\n"}, // src/ never includes app/
    {"app/args.h", "int args(void);\n"},
    {"app/main.c", "#include \"lcm.h\"\n#include \"app/args.h\"\n#include \"args.h\"\n"
                   "#include \"core/base.h\"\n"}, // line 4
};

static const char *expected_reports[] = {
    "src/ops/kern.c:2: includes models/net.h (level 3) from level 2\n",
    "src/sched/s.c:1: includes io/a.h (level 1) from level 1\n",
    "src/api/api.c:2: includes app/args.h (level 8) from level 7\n",
    "src/newlayer/: folder not in the layer table",
    "src/io/a.c:4: file loop in src/io/: a.c -> b.c -> a.c\n",
    "    src/io/a.c:4: calls b_second (src/io/b.c)\n",
    "    src/io/b.c:3: calls a_third (src/io/a.c)\n",
    "app/main.c:4: includes core/base.h (level 0) from level 8 (app/ may include only",
    "src/core/base.c:3: defines lcm_do (declared in include/lcm.h) outside src/api/\n",
    "src/models/net.c:3: calls lcm_do (declared in include/lcm.h) from level 3",
};

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

static void self_test(void) {
    const char *tmp = getenv("TMPDIR");
    char root[1024];
    snprintf(root, sizeof root, "%s/test_layers.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        CHECK(false, "mkdtemp %s: %s", root, strerror(errno));
        return;
    }
    for (size_t i = 0; i < sizeof broken_tree / sizeof *broken_tree; i++)
        write_tree_file(root, broken_tree[i].path, broken_tree[i].text);
    tree t;
    CHECK(read_tree(root, &t), "read the made-up tree %s", root);
    char *report = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&report, &size);
    int layers = check_layers(&t, out), loops = check_loops(&t, out), app = check_app(&t, out),
        api = check_api(&t, out);
    fclose(out);
    printf("self-test: what the checker reports for a made-up tree that breaks each rule:\n%s", report);
    CHECK(layers == 4, "layers: %d reports, expected 4 (upward, same level, src/ to app/, unknown folder)",
          layers);
    CHECK(loops == 1, "loops: %d reports, expected 1 (a.c <-> b.c)", loops);
    CHECK(app == 1, "app: %d reports, expected 1 (core/base.h)", app);
    CHECK(api == 2, "api: %d reports, expected 2 (a definition, a call)", api);
    for (size_t i = 0; i < sizeof expected_reports / sizeof *expected_reports; i++)
        CHECK(strstr(report, expected_reports[i]) != NULL, "report lacks: %s", expected_reports[i]);
    CHECK(!strstr(report, "hidden.h") && !strstr(report, "src/io/c.c"),
          "a commented-out include and a one-way call are not violations");
    free(report);
    free_tree(&t);
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(int argc, char **argv) {
    const char *root = NULL;
    bool layers = false, app = false, api = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--root") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "--app")) app = true;
        else if (!strcmp(argv[i], "--api")) api = true;
        else if (!strcmp(argv[i], "--all")) layers = app = api = true;
        else {
            fprintf(stderr, "usage: %s [--root DIR] [--app] [--api] [--all]\n", argv[0]);
            return 2;
        }
    }
    if (!app && !api) layers = true;
    bool own_repository = !root;
    if (own_repository) {
        root = test_source_dir();
        if (layers) self_test();
    }
    tree t;
    CHECK(read_tree(root, &t), "read %s", root);
    int def_total = 0;
    for (int i = 0; i < t.count; i++) def_total += t.files[i].def_count;
    CHECK(t.count > 0 && def_total > 0, "%s: found %d source files defining %d functions", root, t.count,
          def_total);
    int violations = 0;
    if (layers) {
        violations += check_layers(&t, stdout);
        violations += check_loops(&t, stdout);
        if (own_repository) violations += check_docs_mirror(root, stdout);
    }
    if (app) violations += check_app(&t, stdout);
    if (api) violations += check_api(&t, stdout);
    CHECK(violations == 0, "%s: %d violation(s) of the layer order, listed above", root, violations);
    free_tree(&t);
    return test_finish();
}
