// Helpers for tests that run `lcm generate` on the golden pipeline cases; see generate_cases.h.
#include "generate_cases.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "golden.h"
#include "io/image.h"
#include "testutil.h"

// The whole file (NUL-terminated, malloc'd; *len without the NUL), or NULL.
char *test_read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - 1 - n, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *grown = realloc(buf, cap *= 2);
            if (!grown) free(buf);
            buf = grown;
        }
    }
    fclose(f);
    if (!buf) exit(2);
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

bool test_write_all(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(text, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

bool test_same_bytes(const char *a, const char *b) {
    size_t la, lb;
    char *da = test_read_all(a, &la), *db = test_read_all(b, &lb);
    bool same = da && db && la == lb && la > 0 && memcmp(da, db, la) == 0;
    free(da);
    free(db);
    return same;
}

bool test_exists(const char *path) { return access(path, F_OK) == 0; }


// Files in `dir` whose names start with `prefix` and end with `suffix` (0 when it cannot be listed).
int test_count_files(const char *dir, const char *prefix, const char *suffix) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    struct dirent *e;
    size_t plen = strlen(prefix), slen = strlen(suffix);
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        count += len >= plen + slen && !strncmp(e->d_name, prefix, plen) &&
                 !strcmp(e->d_name + len - slen, suffix);
    }
    closedir(d);
    return count;
}

// Lines of `path` containing `needle`.
int test_count_lines_with(const char *path, const char *needle) {
    char *text = test_read_all(path, NULL);
    int count = 0;
    for (char *line = text; line && *line;) {
        char *end = strchr(line, '\n');
        if (end) *end = '\0';
        count += strstr(line, needle) != NULL;
        line = end ? end + 1 : line + strlen(line);
    }
    free(text);
    return count;
}

// ---- the pipeline cases -------------------------------------------------------------------------



// Every golden pipeline case (with its PNG) of every LatentConsistencyModelPipeline folder.
int gen_find_cases(const char *root, gen_case **out) {
    int count = 0, cap = 8;
    gen_case *cases = calloc((size_t)cap, sizeof *cases);
    DIR *d = opendir(root);
    struct dirent *e;
    while (cases && d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], golden_dir[1100], cls[128];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (strcmp(cls, "LatentConsistencyModelPipeline")) continue;
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        struct stat st;
        if (stat(golden_dir, &st) != 0) continue;
        char **names;
        int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
        for (int i = 0; i < n; i++) {
            char golden[1400], png[1400];
            test_path(golden, sizeof golden, "%s/%s", golden_dir, names[i]);
            test_path(png, sizeof png, "%s/%.*s.png", golden_dir, (int)(strlen(names[i]) - 12), names[i]);
            if (!test_exists(png)) continue;
            st_file *file = NULL;
            CHECK_OK(st_open(golden, &file));
            if (!file) continue;
            cJSON *info = golden_info(file);
            if (count == cap) {
                gen_case *grown = realloc(cases, sizeof *cases * (size_t)(cap *= 2));
                if (!grown) exit(2);
                cases = grown;
            }
            gen_case *c = &cases[count++];
            snprintf(c->model, sizeof c->model, "%s", dir);
            snprintf(c->golden_png, sizeof c->golden_png, "%s", png);
            c->prompt = strdup(golden_string(info, "prompt"));
            c->seed = golden_number(info, "seed");
            c->steps = golden_number(info, "steps");
            c->guidance = golden_number(info, "guidance");
            c->w = golden_number(info, "w");
            c->h = golden_number(info, "h");
            cJSON_Delete(info);
            st_close(file);
        }
        test_free_list(names, n);
    }
    if (d) closedir(d);
    if (!cases) exit(2);
    *out = cases;
    return count;
}

// Appends NAME='value' and a space to the environment prefix `env`.
void test_env_add(char *env, size_t size, const char *name, const char *value) {
    size_t len = strlen(env);
    if (len + strlen(name) + 2 >= size) exit(2);
    snprintf(env + len, size - len, "%s=", name);
    test_append_quoted(env, size, value);
    len = strlen(env);
    if (len + 2 >= size) exit(2);
    strcat(env, " ");
}

char gen_last_command[8192];

// `lcm generate` of case g into `out` (removed first), with the environment prefix `env` and
// `extra` arguments; stderr into `err`. Returns the exit status.
int gen_run(const gen_case *g, const char *env, const char *extra, const char *out,
                        const char *err) {
    char *cmd = gen_last_command;
    size_t size = sizeof gen_last_command;
    unlink(out);
    snprintf(cmd, size, "%s", env);
    test_append_quoted(cmd, size, test_lcm_bin());
    strncat(cmd, " generate --quiet --model ", size - strlen(cmd) - 1);
    test_append_quoted(cmd, size, g->model);
    size_t len = strlen(cmd);
    snprintf(cmd + len, size - len,
             " --seed %.0f --steps %.0f --guidance %.9g --width %.0f --height %.0f %s --output ",
             g->seed, g->steps, g->guidance, g->w, g->h, extra ? extra : "");
    test_append_quoted(cmd, size, out);
    strncat(cmd, " 2>", size - strlen(cmd) - 1);
    test_append_quoted(cmd, size, err);
    strncat(cmd, " -- ", size - strlen(cmd) - 1);
    test_append_quoted(cmd, size, g->prompt);
    int rc = test_run(cmd, NULL, 0);
    if (rc != 0 || getenv("LCM_TEST_VERBOSE")) {
        char *text = test_read_all(err, NULL);
        fprintf(stderr, "%s -> exit %d%s%s", cmd, rc, text && *text ? ", stderr:\n" : "\n",
                text ? text : "");
        free(text);
    }
    return rc;
}

// Runs case g with the cache folder `xdg` (and `more_env`, `extra`), expecting success and a PNG.
bool gen_generate_ok(const char *what, const gen_case *g, const char *xdg, const char *more_env,
                        const char *extra, const char *out, const char *err) {
    char env[4096] = "";
    test_env_add(env, sizeof env, "XDG_CACHE_HOME", xdg);
    if (more_env) strncat(env, more_env, sizeof env - strlen(env) - 1);
    int rc = gen_run(g, env, extra, out, err);
    CHECK(rc == 0, "%s: lcm generate exited %d (%s)", what, rc, gen_last_command);
    CHECK(rc != 0 || test_exists(out), "%s: no image written", what);
    return rc == 0 && test_exists(out);
}

// Largest |difference| of two PNGs' RGB values (-1: unreadable or different sizes); *differ
// counts the values that differ at all, *total all values.
int gen_png_max_diff(const char *a, const char *b, size_t *differ, size_t *total) {
    uint8_t *pa = NULL, *pb = NULL;
    int wa, ha, wb, hb, worst = -1;
    *differ = *total = 0;
    if (image_read_png(a, &pa, &wa, &ha) == LCM_OK && image_read_png(b, &pb, &wb, &hb) == LCM_OK &&
        wa == wb && ha == hb) {
        worst = 0;
        *total = (size_t)wa * ha * 3;
        for (size_t i = 0; i < *total; i++) {
            int d = abs((int)pa[i] - (int)pb[i]);
            *differ += d != 0;
            if (d > worst) worst = d;
        }
    }
    lcm_clear_error();
    free(pa);
    free(pb);
    return worst;
}

// Within 2 of 255 everywhere: the same image through other kernels (float rounding only).
void gen_check_close_png(const char *what, const char *got, const char *want) {
    size_t differ, total;
    int worst = gen_png_max_diff(got, want, &differ, &total);
    if (getenv("LCM_TEST_VERBOSE"))
        fprintf(stderr, "%s: max |diff| %d, %zu of %zu values differ\n", what, worst, differ, total);
    CHECK(worst >= 0 && worst <= 2, "%s: max |diff| %d of 255 (%zu of %zu values differ) between %s and %s",
          what, worst, differ, total, got, want);
}

// The golden PNG's tolerance (test_cli_generate): every value within 1, at most 0.5% differing.
void gen_check_golden_png(const char *what, const char *got, const char *golden) {
    size_t differ, total;
    int worst = gen_png_max_diff(got, golden, &differ, &total);
    CHECK(worst >= 0 && worst <= 1 && differ * 200 <= total,
          "%s: vs golden %s: max |diff| %d, %zu of %zu values differ", what, golden, worst, differ, total);
}
