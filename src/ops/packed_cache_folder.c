// The packed-weight cache's folder: where it is, its size limit, listing and clearing it (the
// files themselves: packed_cache.c).
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/user_cache.h"
#include "ops/backend.h"
#include "ops/packed_cache.h"

bool packed_cache_folder(char *buf, size_t size) {
    char base[PATH_MAX];
    if (!user_cache_folder(base, sizeof base)) return false;
    int n = snprintf(buf, size, "%s/packed", base);
    return n > 0 && (size_t)n < size;
}

typedef struct folder_file {
    char name[256];
    int64_t bytes;
    time_t used;
} folder_file;

static int by_use(const void *a, const void *b) {
    const folder_file *x = a, *y = b;
    return x->used < y->used ? -1 : x->used > y->used;
}

// The cache files (and, with temporaries, left-over temporary files) of the folder; malloc'd.
static folder_file *list_files(const char *folder, bool temporaries, size_t *count) {
    *count = 0;
    DIR *dir = opendir(folder);
    if (!dir) return NULL;
    folder_file *files = NULL;
    size_t capacity = 0;
    struct dirent *d;
    while ((d = readdir(dir))) {
        size_t len = strlen(d->d_name);
        bool cache = !strncmp(d->d_name, "packed-", 7) && len > 11 && !strcmp(d->d_name + len - 4, ".bin");
        bool temporary = !strncmp(d->d_name, "packed-", 7) && strstr(d->d_name, ".bin.");
        if (len >= sizeof files->name || !(cache || (temporaries && temporary))) continue;
        char path[PATH_MAX + 256];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", folder, d->d_name);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        if (*count == capacity) {
            capacity = capacity ? 2 * capacity : 16;
            folder_file *grown = realloc(files, capacity * sizeof *grown);
            if (!grown) break;
            files = grown;
        }
        folder_file *f = &files[(*count)++];
        snprintf(f->name, sizeof f->name, "%s", d->d_name);
        f->bytes = (int64_t)sb.st_size;
        f->used = sb.st_mtime;
    }
    closedir(dir);
    if (files) qsort(files, *count, sizeof *files, by_use);
    return files;
}

// LCM_CACHE_LIMIT: bytes with an optional K, M or G suffix; default 20G.
static int64_t cache_limit(void) {
    const char *v = getenv("LCM_CACHE_LIMIT");
    int64_t fallback = (int64_t)20 << 30;
    if (!v || !*v) return fallback;
    char *end;
    double x = strtod(v, &end);
    int shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20 : *end == 'G' || *end == 'g' ? 30 : 0;
    if (shift) end++;
    if (*end || !(x >= 0) || x > 1e18 / (double)((int64_t)1 << shift)) {
        fprintf(stderr, "lcm: LCM_CACHE_LIMIT=%s is not a size like 20G or 512M; using 20G\n", v);
        return fallback;
    }
    return (int64_t)(x * (double)((int64_t)1 << shift));
}

void packed_cache_trim_folder(const char *keep) {
    char folder[PATH_MAX];
    if (!packed_cache_folder(folder, sizeof folder)) return;
    size_t count;
    folder_file *files = list_files(folder, false, &count);
    int64_t total = 0, limit = cache_limit();
    for (size_t i = 0; i < count; i++) total += files[i].bytes;
    for (size_t i = 0; i < count && total > limit; i++) {
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", folder, files[i].name);
        if (!strcmp(path, keep)) continue;
        if (unlink(path) == 0) total -= files[i].bytes;
    }
    free(files);
}

int packed_cache_list(FILE *out) {
    char folder[PATH_MAX];
    if (!packed_cache_folder(folder, sizeof folder)) {
        fprintf(out, "no cache folder (neither XDG_CACHE_HOME nor HOME is set)\n");
        return 0;
    }
    size_t count;
    folder_file *files = list_files(folder, false, &count);
    int64_t total = 0;
    fprintf(out, "packed-weight cache: %s (limit %.1f GiB)\n", folder, (double)cache_limit() / (double)(1 << 30));
    for (size_t i = count; i-- > 0;) { // most recently used first
        char when[32];
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%d %H:%M", localtime_r(&files[i].used, &tm));
        fprintf(out, "  %8.1f MB  %s  %s\n", (double)files[i].bytes / 1e6, when, files[i].name);
        total += files[i].bytes;
    }
    fprintf(out, "%zu file%s, %.1f MB\n", count, count == 1 ? "" : "s", (double)total / 1e6);
    const char *tuning = backend_tuning_file();
    if (tuning[0] && access(tuning, F_OK) == 0) fprintf(out, "kernel choices: %s\n", tuning);
    free(files);
    return (int)count;
}

lcm_status packed_cache_clear(int64_t *freed_out) {
    *freed_out = 0;
    char folder[PATH_MAX];
    if (!packed_cache_folder(folder, sizeof folder))
        return lcm_fail(LCM_ERR_IO, "no cache folder: neither XDG_CACHE_HOME nor HOME is set");
    size_t count;
    folder_file *files = list_files(folder, true, &count);
    int64_t freed = 0;
    for (size_t i = 0; i < count; i++) {
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", folder, files[i].name);
        if (unlink(path) == 0) freed += files[i].bytes;
    }
    free(files);
    // The kernel choices are measured again by the next load.
    const char *tuning = backend_tuning_file();
    struct stat sb;
    if (tuning[0] && stat(tuning, &sb) == 0 && unlink(tuning) == 0) freed += (int64_t)sb.st_size;
    *freed_out = freed;
    return LCM_OK;
}
