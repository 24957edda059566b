// lcm compare: the same prompts and seeds through two models (or one model at two precisions),
// side by side — the "original vs optimized" comparison of the reference system.
//
// Each model runs in a child process of its own, one after the other, so that its peak RSS is its
// own and its timings are not disturbed by the other model's memory. A child writes its images and
// a stats.json into OUTPUT/a or OUTPUT/b; the parent then reads both back, measures how far B's
// images are from A's (PSNR, SSIM) and writes OUTPUT/index.html, OUTPUT/grid.png and the table it
// also prints.
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "app/args.h"
#include "app/commands.h"
#include "app/model_options.h"
#include "lcm.h"

#define COMPARE_MAX_PROMPTS 1000
#define COMPARE_MAX_SEEDS 64
#define GRID_GAP 8

// Prompts used when no --prompts file is given: a spread of subjects, lighting and styles.
static const char *const default_prompts[] = {
    "a beautiful pink unicorn, 8k",
    "portrait of an old fisherman at dawn, detailed skin, soft light",
    "a red vintage car parked on a rainy street at night, neon reflections",
    "a bowl of fruit on a wooden table, oil painting",
};

typedef struct compare_setup {
    const char *models[2];
    const char *precisions[2];
    const char *labels[2];
    const char *dirs[2]; // "a", "b" under the output folder
    const char *output;
    char **prompts;
    int prompt_count;
    uint64_t seeds[COMPARE_MAX_SEEDS];
    int seed_count;
    int steps, width, height, threads, warmup;
    double guidance;
} compare_setup;

typedef struct model_stats {
    bool ok;
    double load_seconds;
    double *image_seconds;  // [case_count]
    double *step_seconds;   // [case_count]
    double peak_rss_bytes;
    double disk_bytes;
} model_stats;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int case_count(const compare_setup *s) { return s->prompt_count * s->seed_count; }

// ---- input ----------------------------------------------------------------------------------

static void free_prompts(compare_setup *s) {
    for (int i = 0; i < s->prompt_count; i++) free(s->prompts[i]);
    free(s->prompts);
    s->prompts = NULL;
    s->prompt_count = 0;
}

// One prompt per line; blank lines and lines starting with '#' are skipped.
static int read_prompts(compare_setup *s, const char *path) {
    s->prompts = calloc(COMPARE_MAX_PROMPTS, sizeof *s->prompts);
    if (!s->prompts) return fprintf(stderr, "lcm compare: out of memory\n"), 1;
    if (!path) {
        for (size_t i = 0; i < sizeof default_prompts / sizeof default_prompts[0]; i++) {
            s->prompts[i] = strdup(default_prompts[i]);
            if (!s->prompts[i]) return fprintf(stderr, "lcm compare: out of memory\n"), 1;
            s->prompt_count++;
        }
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) return fprintf(stderr, "lcm compare: %s: %s\n", path, strerror(errno)), 2;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0 || line[0] == '#') continue;
        if (s->prompt_count == COMPARE_MAX_PROMPTS) {
            fprintf(stderr, "lcm compare: %s: more than %d prompts (line %d)\n", path,
                    COMPARE_MAX_PROMPTS, lineno);
            rc = 2;
            break;
        }
        if (!(s->prompts[s->prompt_count++] = strdup(line))) {
            rc = 1;
            break;
        }
    }
    free(line);
    fclose(f);
    if (rc == 0 && s->prompt_count == 0) {
        fprintf(stderr, "lcm compare: %s: no prompts (one per line; '#' starts a comment)\n", path);
        rc = 2;
    }
    return rc;
}

// "1,2,42" -> seeds.
static int parse_seeds(compare_setup *s, const char *text) {
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno || *p == '-' || (*end && *end != ',') ||
            s->seed_count == COMPARE_MAX_SEEDS) {
            fprintf(stderr, "lcm compare: --seeds '%s': expected up to %d non-negative integers "
                            "separated by commas\n", text, COMPARE_MAX_SEEDS);
            return 2;
        }
        s->seeds[s->seed_count++] = v;
        p = *end ? end + 1 : end;
    }
    if (s->seed_count == 0) return fprintf(stderr, "lcm compare: --seeds is empty\n"), 2;
    return 0;
}

// ---- one model, in a child process ------------------------------------------------------------

typedef struct step_clock {
    double first, last; // elapsed seconds at the first and the last step
    int total;
} step_clock;

static int record_step(void *user, int done, int total, double elapsed) {
    step_clock *clock = user;
    if (done == 1) clock->first = elapsed;
    clock->last = elapsed;
    clock->total = total;
    return 0;
}

// The UNet's time per step: the spacing of the step callbacks. With one step only the first
// callback's time is left, which also holds the text encoding (small next to a UNet step).
static double seconds_per_step(const step_clock *c) {
    return c->total > 1 ? (c->last - c->first) / (c->total - 1) : c->first;
}

static void image_path(char *buf, size_t size, const compare_setup *s, int which, int index) {
    snprintf(buf, size, "%s/%s/%03d.png", s->output, s->dirs[which], index);
}

static lcm_status generate_case(lcm_pipeline *p, const compare_setup *s, int index,
                                step_clock *clock, lcm_result **result) {
    lcm_request r;
    lcm_request_init(&r);
    r.prompt = s->prompts[index / s->seed_count];
    r.seed = s->seeds[index % s->seed_count];
    r.steps = s->steps;
    r.guidance_scale = (float)s->guidance;
    r.width = s->width;
    r.height = s->height;
    r.progress = record_step;
    r.progress_user_data = clock;
    return lcm_generate(p, &r, result);
}

static int run_model(const compare_setup *s, int which) {
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    options.threads = s->threads;
    model_precision_parse(s->precisions[which], &options.precision);
    double t0 = now_seconds();
    lcm_pipeline *p;
    if (lcm_pipeline_open(s->models[which], &options, &p) != LCM_OK) {
        fprintf(stderr, "lcm compare: %s: %s\n", s->models[which], lcm_last_error());
        return 2;
    }
    double load_seconds = now_seconds() - t0;
    int n = case_count(s);
    cJSON *stats = cJSON_CreateObject(), *images = cJSON_AddArrayToObject(stats, "images");
    cJSON_AddNumberToObject(stats, "load_seconds", load_seconds);
    int rc = 0;
    for (int i = 0; i < s->warmup && rc == 0; i++) {
        step_clock clock = {0};
        lcm_result *result = NULL;
        if (generate_case(p, s, 0, &clock, &result) != LCM_OK) rc = 1;
        lcm_result_free(result);
    }
    for (int i = 0; i < n && rc == 0; i++) {
        step_clock clock = {0};
        lcm_result *result = NULL;
        double start = now_seconds();
        if (generate_case(p, s, i, &clock, &result) != LCM_OK) {
            rc = 1;
            break;
        }
        double seconds = now_seconds() - start;
        char path[4096];
        image_path(path, sizeof path, s, which, i);
        if (lcm_write_png(path, &result->images[0], s->prompts[i / s->seed_count]) != LCM_OK) rc = 1;
        lcm_result_free(result);
        cJSON *entry = cJSON_CreateObject();
        cJSON_AddNumberToObject(entry, "seconds", seconds);
        cJSON_AddNumberToObject(entry, "seconds_per_step", seconds_per_step(&clock));
        cJSON_AddItemToArray(images, entry);
        if (isatty(STDERR_FILENO))
            fprintf(stderr, "\r%s: image %d/%d (%.2f s)   ", s->labels[which], i + 1, n, seconds);
    }
    if (isatty(STDERR_FILENO)) fputc('\n', stderr);
    if (rc) fprintf(stderr, "lcm compare: %s: %s\n", s->models[which], lcm_last_error());
    lcm_pipeline_close(p);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    cJSON_AddNumberToObject(stats, "peak_rss_bytes", (double)usage.ru_maxrss * 1024.0);
    char path[4096], *text = cJSON_Print(stats);
    snprintf(path, sizeof path, "%s/%s/stats.json", s->output, s->dirs[which]);
    FILE *f = fopen(path, "w");
    if (!f || !text || fputs(text, f) < 0) rc = 1;
    if (f && fclose(f)) rc = 1;
    free(text);
    cJSON_Delete(stats);
    return rc;
}

static int run_model_in_child(const compare_setup *s, int which) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return fprintf(stderr, "lcm compare: fork: %s\n", strerror(errno)), 1;
    if (pid == 0) _exit(run_model(s, which));
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return fprintf(stderr, "lcm compare: waitpid: %s\n", strerror(errno)), 1;
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "lcm compare: the run of %s was killed by signal %d\n", s->models[which],
                WTERMSIG(status));
        return 1;
    }
    return WEXITSTATUS(status);
}

// ---- reading the children's results ------------------------------------------------------------

// Bytes of every regular file under `path` (symlinks followed, as the hub cache's snapshots are).
static double disk_bytes(const char *path, int depth) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (S_ISREG(st.st_mode)) return (double)st.st_size;
    if (!S_ISDIR(st.st_mode) || depth > 8) return 0;
    DIR *dir = opendir(path);
    if (!dir) return 0;
    double total = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        total += disk_bytes(child, depth + 1);
    }
    closedir(dir);
    return total;
}

static bool load_stats(const compare_setup *s, int which, model_stats *m) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/stats.json", s->output, s->dirs[which]);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t cap = 4096 + (size_t)case_count(s) * 128, len;
    char *text = malloc(cap);
    len = text ? fread(text, 1, cap - 1, f) : 0;
    fclose(f);
    if (!text) return false;
    text[len] = '\0';
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *images = cJSON_GetObjectItem(root, "images");
    int n = case_count(s);
    m->image_seconds = calloc((size_t)n, sizeof(double));
    m->step_seconds = calloc((size_t)n, sizeof(double));
    bool ok = root && cJSON_GetArraySize(images) == n && m->image_seconds && m->step_seconds;
    for (int i = 0; ok && i < n; i++) {
        cJSON *entry = cJSON_GetArrayItem(images, i);
        m->image_seconds[i] = cJSON_GetNumberValue(cJSON_GetObjectItem(entry, "seconds"));
        m->step_seconds[i] = cJSON_GetNumberValue(cJSON_GetObjectItem(entry, "seconds_per_step"));
    }
    if (ok) {
        m->load_seconds = cJSON_GetNumberValue(cJSON_GetObjectItem(root, "load_seconds"));
        m->peak_rss_bytes = cJSON_GetNumberValue(cJSON_GetObjectItem(root, "peak_rss_bytes"));
        m->disk_bytes = disk_bytes(s->models[which], 0);
    }
    cJSON_Delete(root);
    return m->ok = ok;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *values, int n) {
    double *sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted || n == 0) return free(sorted), NAN;
    memcpy(sorted, values, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_doubles);
    double m = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    free(sorted);
    return m;
}

static double minimum(const double *values, int n) {
    double m = INFINITY;
    for (int i = 0; i < n; i++) m = values[i] < m ? values[i] : m;
    return m;
}

// ---- report ---------------------------------------------------------------------------------

// A and B side by side per case, cases one under the other; shrunk by an integer factor (box
// average) when the column would be taller than a PNG reader is asked to accept.
static int write_grid(const compare_setup *s, lcm_image (*images)[2]) {
    int n = case_count(s), w = images[0][0].width, h = images[0][0].height;
    int factor = 1;
    while ((long)n * (h / factor + GRID_GAP) > LCM_IMAGE_MAX_SIDE || 2L * (w / factor) + GRID_GAP > LCM_IMAGE_MAX_SIDE)
        factor++;
    int cw = w / factor, ch = h / factor;
    int grid_w = 2 * cw + GRID_GAP, grid_h = n * ch + (n - 1) * GRID_GAP;
    lcm_image grid = {grid_w, grid_h, malloc((size_t)grid_w * grid_h * 3)};
    if (!grid.rgb) return fprintf(stderr, "lcm compare: out of memory for the grid\n"), 1;
    memset(grid.rgb, 255, (size_t)grid_w * grid_h * 3);
    for (int i = 0; i < n; i++)
        for (int side = 0; side < 2; side++)
            for (int y = 0; y < ch; y++)
                for (int x = 0; x < cw; x++)
                    for (int c = 0; c < 3; c++) {
                        int sum = 0;
                        for (int dy = 0; dy < factor; dy++)
                            for (int dx = 0; dx < factor; dx++)
                                sum += images[i][side].rgb[(((size_t)y * factor + dy) * w + x * factor + dx) * 3 + c];
                        size_t gy = (size_t)i * (ch + GRID_GAP) + y, gx = (size_t)side * (cw + GRID_GAP) + x;
                        grid.rgb[(gy * grid_w + gx) * 3 + c] = (uint8_t)(sum / (factor * factor));
                    }
    char path[4096];
    snprintf(path, sizeof path, "%s/grid.png", s->output);
    int rc = lcm_write_png(path, &grid, "lcm compare: left A, right B") == LCM_OK ? 0 : 1;
    if (rc) fprintf(stderr, "lcm compare: %s\n", lcm_last_error());
    free(grid.rgb);
    return rc;
}

static void html_escaped(FILE *f, const char *text) {
    for (; *text; text++) {
        switch (*text) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*text, f);
        }
    }
}

typedef struct table_row {
    const char *name;
    double a, b;
    const char *format; // for a and b
} table_row;

static void print_table(FILE *f, const compare_setup *s, const table_row *rows, int nrows,
                        double psnr_median, double psnr_min, double ssim_median, double ssim_min,
                        bool html) {
    if (html) {
        fputs("<table>\n<tr><th></th><th>A: ", f);
        html_escaped(f, s->labels[0]);
        fputs("</th><th>B: ", f);
        html_escaped(f, s->labels[1]);
        fputs("</th><th>B / A</th></tr>\n", f);
    } else {
        fprintf(f, "%-28s %16s %16s %8s\n", "", s->labels[0], s->labels[1], "B/A");
    }
    for (int i = 0; i < nrows; i++) {
        char a[64], b[64];
        snprintf(a, sizeof a, rows[i].format, rows[i].a);
        snprintf(b, sizeof b, rows[i].format, rows[i].b);
        double ratio = rows[i].b / rows[i].a;
        if (html)
            fprintf(f, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%.2fx</td></tr>\n", rows[i].name, a, b, ratio);
        else
            fprintf(f, "%-28s %16s %16s %7.2fx\n", rows[i].name, a, b, ratio);
    }
    if (html)
        fprintf(f, "<tr><td>PSNR of B vs A (dB), median / min</td><td colspan=3>%.2f / %.2f</td></tr>\n"
                   "<tr><td>SSIM of B vs A, median / min</td><td colspan=3>%.4f / %.4f</td></tr>\n</table>\n",
                psnr_median, psnr_min, ssim_median, ssim_min);
    else
        fprintf(f, "%-28s %.2f / %.2f\n%-28s %.4f / %.4f\n", "PSNR B vs A (dB) median/min",
                psnr_median, psnr_min, "SSIM B vs A median/min", ssim_median, ssim_min);
}

static int write_report(const compare_setup *s, const model_stats *m, lcm_image (*images)[2],
                        const double *psnr, const double *ssim) {
    int n = case_count(s);
    table_row rows[] = {
        {"end to end, median (s)", median(m[0].image_seconds, n), median(m[1].image_seconds, n), "%.3f"},
        {"UNet per step, median (s)", median(m[0].step_seconds, n), median(m[1].step_seconds, n), "%.3f"},
        {"load (s)", m[0].load_seconds, m[1].load_seconds, "%.2f"},
        {"size on disk (MB)", m[0].disk_bytes / 1e6, m[1].disk_bytes / 1e6, "%.1f"},
        {"peak RSS (MB)", m[0].peak_rss_bytes / 1e6, m[1].peak_rss_bytes / 1e6, "%.1f"},
    };
    int nrows = sizeof rows / sizeof rows[0];
    double pm = median(psnr, n), pmin = minimum(psnr, n); // identical images: +inf
    double sm = median(ssim, n), smin = minimum(ssim, n);
    printf("%d images of %dx%d, %d steps, guidance %g\n", n, images[0][0].width,
           images[0][0].height, s->steps, s->guidance);
    print_table(stdout, s, rows, nrows, pm, pmin, sm, smin, false);

    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/index.html", s->output);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return fprintf(stderr, "lcm compare: %s: %s\n", tmp, strerror(errno)), 1;
    fputs("<!doctype html>\n<html lang=en><meta charset=utf-8>\n<title>lcm compare</title>\n"
          "<style>body{font:15px system-ui,sans-serif;margin:1.5em;max-width:1200px}"
          "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
          "text-align:right}td:first-child{text-align:left}.pair{display:flex;gap:8px;flex-wrap:wrap}"
          ".pair img{max-width:48%;height:auto}figure{margin:1.2em 0}</style>\n<h1>lcm compare</h1>\n", f);
    fprintf(f, "<p>%d images of %dx%d, %d steps, guidance %g. Left: A = ", n, images[0][0].width,
            images[0][0].height, s->steps, s->guidance);
    html_escaped(f, s->models[0]);
    fputs(", right: B = ", f);
    html_escaped(f, s->models[1]);
    fputs(". <a href=grid.png>grid.png</a></p>\n", f);
    print_table(f, s, rows, nrows, pm, pmin, sm, smin, true);
    for (int i = 0; i < n; i++) {
        fprintf(f, "<figure><figcaption>seed %llu: ", (unsigned long long)s->seeds[i % s->seed_count]);
        html_escaped(f, s->prompts[i / s->seed_count]);
        fprintf(f, " &mdash; PSNR %.2f dB, SSIM %.4f</figcaption>\n<div class=pair>"
                   "<img src=\"%s/%03d.png\" alt=A><img src=\"%s/%03d.png\" alt=B></div></figure>\n",
                psnr[i], ssim[i], s->dirs[0], i, s->dirs[1], i);
    }
    fputs("</html>\n", f);
    if (fclose(f) || rename(tmp, path))
        return fprintf(stderr, "lcm compare: %s: %s\n", path, strerror(errno)), 1;
    printf("report: %s (and grid.png)\n", path);
    return 0;
}

// Loads both sides' images, measures B against A and writes the report.
static int compare_results(const compare_setup *s, const model_stats *m) {
    int n = case_count(s), rc = 0;
    lcm_image (*images)[2] = calloc((size_t)n, sizeof *images);
    double *psnr = calloc((size_t)n, sizeof *psnr), *ssim = calloc((size_t)n, sizeof *ssim);
    if (!images || !psnr || !ssim) rc = 1;
    for (int i = 0; i < n && rc == 0; i++) {
        for (int side = 0; side < 2 && rc == 0; side++) {
            char path[4096];
            image_path(path, sizeof path, s, side, i);
            lcm_image *img = &images[i][side];
            if (lcm_image_read(path, img) != LCM_OK) {
                fprintf(stderr, "lcm compare: %s\n", lcm_last_error());
                rc = 1;
            }
        }
        if (rc == 0 && lcm_image_compare(&images[i][0], &images[i][1], &psnr[i], &ssim[i]) != LCM_OK) {
            fprintf(stderr, "lcm compare: image %d: %s\n", i, lcm_last_error());
            rc = 2;
        }
    }
    if (rc == 0) rc = write_grid(s, images);
    if (rc == 0) rc = write_report(s, m, images, psnr, ssim);
    for (int i = 0; images && i < n; i++) {
        free(images[i][0].rgb);
        free(images[i][1].rgb);
    }
    free(images);
    free(psnr);
    free(ssim);
    return rc;
}

static int make_folder(const char *path) {
    if (mkdir(path, 0777) == 0 || errno == EEXIST) return 0;
    fprintf(stderr, "lcm compare: cannot create %s: %s\n", path, strerror(errno));
    return 1;
}

// The last path component, for the table's column headings.
static const char *base_name(const char *path, char *buf, size_t size) {
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/') start--;
    snprintf(buf, size, "%.*s", (int)(len - start), path + start);
    return buf;
}

int cmd_compare(int argc, char **argv) {
    args_list models = {0};
    const char *prompts = NULL, *seeds = "0", *output = NULL, *precision_a = NULL, *precision_b = NULL;
    long steps = 4, width = 0, height = 0, warmup = 1;
    model_options mo = {0}; // --threads
    double guidance = 8.5;
    const arg_spec specs[] = {
        {"model", ARG_STRING, &models, "model A, then model B (give it twice; the same folder twice "
                                       "with different --precision-a/-b compares precisions)", true},
        {"prompts", ARG_STRING, &prompts, "text file, one prompt per line (default: 4 built-in prompts)", false},
        {"seeds", ARG_STRING, &seeds, "comma-separated seeds, each used with every prompt (default 0)", false},
        {"steps", ARG_INT, &steps, "denoising steps (default 4)", false},
        {"guidance", ARG_FLOAT, &guidance, "guidance scale (default 8.5)", false},
        {"width", ARG_INT, &width, "image width (default: model A's size)", false},
        {"height", ARG_INT, &height, "image height (default: model A's size)", false},
        {"precision-a", ARG_STRING, &precision_a, "fp32 (default) or bf16 for model A", false},
        {"precision-b", ARG_STRING, &precision_b, "fp32 (default) or bf16 for model B", false},
        model_option_spec(&mo, MODEL_OPTION_THREADS, "compute threads (default: one per core)"),
        {"warmup", ARG_INT, &warmup, "untimed generations before the timed ones (default 1)", false},
        {"output", ARG_STRING, &output, "report folder: index.html, grid.png, a/, b/", false},
    };
    int npositional;
    int rc = args_parse(argc, argv, specs, sizeof specs / sizeof specs[0], NULL, 0, &npositional,
                        "lcm compare --model A --model B [--prompts FILE] [--seeds 1,2] --output DIR");
    if (rc) return rc == 1 ? 0 : 2;
    lcm_precision unused;
    if (models.count != 2 || !output) {
        fprintf(stderr, "lcm compare: give --model exactly twice (A, then B) and --output\n");
        return 2;
    }
    if (!model_precision_parse(precision_a, &unused) || !model_precision_parse(precision_b, &unused)) {
        fprintf(stderr, "lcm compare: --precision-a/-b: expected fp32 or bf16\n");
        return 2;
    }
    if (steps < 1 || steps > 1000 || width < 0 || height < 0 || width > 16384 || height > 16384 ||
        mo.threads < 0 || mo.threads > 1024 || warmup < 0 || warmup > 10 || !isfinite(guidance)) {
        fprintf(stderr, "lcm compare: --steps 1..1000, --width/--height 0..16384, --warmup 0..10\n");
        return 2;
    }
    char label_a[256], label_b[256];
    compare_setup s = {
        .models = {models.items[0], models.items[1]},
        .precisions = {precision_a ? precision_a : "fp32", precision_b ? precision_b : "fp32"},
        .labels = {base_name(models.items[0], label_a, sizeof label_a),
                   base_name(models.items[1], label_b, sizeof label_b)},
        .dirs = {"a", "b"},
        .output = output,
        .steps = (int)steps, .width = (int)width, .height = (int)height,
        .threads = (int)mo.threads, .warmup = (int)warmup, .guidance = guidance,
    };
    if (!strcmp(label_a, label_b) || strcmp(s.precisions[0], s.precisions[1])) {
        snprintf(label_a, sizeof label_a, "A %s", s.precisions[0]);
        snprintf(label_b, sizeof label_b, "B %s", s.precisions[1]);
    }
    rc = parse_seeds(&s, seeds);
    if (rc == 0) rc = read_prompts(&s, prompts);
    char sub[4096];
    if (rc == 0) rc = make_folder(output);
    for (int side = 0; side < 2 && rc == 0; side++) {
        snprintf(sub, sizeof sub, "%s/%s", output, s.dirs[side]);
        rc = make_folder(sub);
    }
    model_stats m[2] = {{0}, {0}};
    for (int side = 0; side < 2 && rc == 0; side++) {
        rc = run_model_in_child(&s, side);
        if (rc == 0 && !load_stats(&s, side, &m[side])) {
            fprintf(stderr, "lcm compare: the run of %s left no complete stats.json\n", s.models[side]);
            rc = 1;
        }
    }
    if (rc == 0) rc = compare_results(&s, m);
    for (int side = 0; side < 2; side++) {
        free(m[side].image_seconds);
        free(m[side].step_seconds);
    }
    free_prompts(&s);
    return rc;
}
