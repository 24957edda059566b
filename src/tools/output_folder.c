// The folder `lcm quantize` writes: built in a temporary sibling folder and renamed into place at
// the end (tools/output_folder.h).
#include "tools/output_folder.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

static bool name_in(const char *name, const char *const *list) {
    for (; list && *list; list++)
        if (!strcmp(name, *list)) return true;
    return false;
}

static lcm_status copy_file(const char *from, const char *to) {
    if (link(from, to) == 0) return LCM_OK;
    FILE *in = fopen(from, "rb");
    if (!in) return lcm_fail(LCM_ERR_IO, "%s: cannot read: %s", from, strerror(errno));
    FILE *out = fopen(to, "wb");
    if (!out) {
        fclose(in);
        return lcm_fail(LCM_ERR_IO, "%s: cannot create: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    lcm_status st = LCM_OK;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) {
            st = lcm_fail(LCM_ERR_IO, "%s: write failed: %s", to, strerror(errno));
            break;
        }
    if (st == LCM_OK && ferror(in)) st = lcm_fail(LCM_ERR_IO, "%s: read error", from);
    fclose(in);
    if (fclose(out) != 0 && st == LCM_OK) st = lcm_fail(LCM_ERR_IO, "%s: write failed", to);
    return st;
}

static bool is_weight_file(const char *name) {
    size_t n = strlen(name);
    return (n > 12 && !strcmp(name + n - 12, ".safetensors")) || (n > 4 && !strcmp(name + n - 4, ".bin")) ||
           strstr(name, ".safetensors.index.json") || strstr(name, ".bin.index.json");
}

// Copies (hard-links where possible) `from` into `to`, one level of sub-folders deep, leaving out
// the weight files of the components that are rewritten.
static lcm_status copy_folder(const char *from, const char *to, const char *const *rewritten, int depth) {
    if (mkdir(to, 0777) != 0 && errno != EEXIST)
        return lcm_fail(LCM_ERR_IO, "%s: cannot create the folder: %s", to, strerror(errno));
    DIR *d = opendir(from);
    if (!d) return lcm_fail(LCM_ERR_IO, "%s: cannot list: %s", from, strerror(errno));
    lcm_status st = LCM_OK;
    const char *component = strrchr(from, '/') ? strrchr(from, '/') + 1 : from;
    struct dirent *e;
    while (st == LCM_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", from, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", to, e->d_name);
        struct stat sb;
        if (stat(src, &sb) != 0) continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth == 0) st = copy_folder(src, dst, rewritten, 1);
        } else if (S_ISREG(sb.st_mode)) {
            if (depth == 1 && name_in(component, rewritten) && is_weight_file(e->d_name)) continue;
            st = copy_file(src, dst);
        }
    }
    closedir(d);
    return st;
}

lcm_status output_folder_staging_create(const char *output, char *staging, size_t size) {
    size_t n = strlen(output);
    while (n > 1 && output[n - 1] == '/') n--;
    if (snprintf(staging, size, "%.*s.partial-XXXXXX", (int)n, output) >= (int)size)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: path too long", output);
    if (!mkdtemp(staging))
        return lcm_fail(LCM_ERR_IO, "%s: cannot create the folder: %s", staging, strerror(errno));
    return LCM_OK;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)type, (void)ftw;
    remove(path);
    return 0; // go on: remove what can be removed
}

lcm_status output_folder_finish(const char *output, const char *staging, bool interrupted, lcm_status st) {
    if (st == LCM_OK && interrupted) st = lcm_fail(LCM_ERR_CANCELLED, "interrupted");
    struct stat sb;
    if (st == LCM_OK && stat(output, &sb) == 0)
        st = lcm_fail(LCM_ERR_IO, "%s: the output folder appeared while quantizing; the result is not moved "
                      "over it", output);
    if (st == LCM_OK && rename(staging, output) != 0)
        st = lcm_fail(LCM_ERR_IO, "%s: cannot rename %s to it: %s", output, staging, strerror(errno));
    if (st != LCM_OK) nftw(staging, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return st;
}

lcm_status output_folder_copy(const char *from, const char *to, const char *const *rewritten) {
    return copy_folder(from, to, rewritten, 0);
}

// Copies (hard-links where possible) the files at the top of a component folder except its weights.
lcm_status output_folder_copy_component(const char *from, const char *to) {
    if (mkdir(to, 0777) != 0 && errno != EEXIST)
        return lcm_fail(LCM_ERR_IO, "%s: cannot create the folder: %s", to, strerror(errno));
    DIR *d = opendir(from);
    if (!d) return lcm_fail(LCM_ERR_IO, "%s: cannot list: %s", from, strerror(errno));
    lcm_status st = LCM_OK;
    struct dirent *e;
    while (st == LCM_OK && (e = readdir(d))) {
        char src[4096], dst[4096];
        snprintf(src, sizeof src, "%s/%s", from, e->d_name);
        snprintf(dst, sizeof dst, "%s/%s", to, e->d_name);
        struct stat sb;
        if (e->d_name[0] == '.' || is_weight_file(e->d_name) || stat(src, &sb) != 0 || !S_ISREG(sb.st_mode))
            continue;
        st = copy_file(src, dst);
    }
    closedir(d);
    return st;
}
