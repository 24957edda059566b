#include "testutil.h"

#include <dirent.h>
#include <jpeglib.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

int test_passed, test_failed;

void test_check(bool ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        test_passed++;
        return;
    }
    test_failed++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int test_finish(void) {
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed == 0 && test_passed > 0 ? 0 : 1;
}

const char *test_fixtures(void) {
    const char *root = getenv("LCM_FIXTURES");
    if (!root || !*root) root = LCM_DEFAULT_FIXTURES;
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "FATAL: fixture root '%s' does not exist (set LCM_FIXTURES)\n", root);
        exit(2);
    }
    return root;
}

void test_path(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        fprintf(stderr, "FATAL: path too long\n");
        exit(2);
    }
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int test_list_files(const char *dir, const char *prefix, const char *suffix, char ***names) {
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "FATAL: cannot list fixture folder '%s'\n", dir);
        exit(2);
    }
    int count = 0, cap = 16;
    char **list = malloc(sizeof *list * (size_t)cap);
    struct dirent *e;
    size_t plen = strlen(prefix), slen = strlen(suffix);
    while (list && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < plen + slen || strncmp(e->d_name, prefix, plen) != 0 ||
            strcmp(e->d_name + len - slen, suffix) != 0)
            continue;
        if (count == cap) {
            cap *= 2;
            char **grown = realloc(list, sizeof *list * (size_t)cap);
            if (!grown) break;
            list = grown;
        }
        list[count++] = strdup(e->d_name);
    }
    closedir(d);
    if (!list) exit(2);
    qsort(list, (size_t)count, sizeof *list, compare_names);
    *names = list;
    return count;
}

void test_free_list(char **names, int count) {
    for (int i = 0; i < count; i++) free(names[i]);
    free(names);
}

double test_max_abs(const float *want, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)want[i]) > m) m = fabs((double)want[i]);
    return m;
}

bool test_close(const char *what, const float *got, const float *want, size_t n, double abs_tol,
                double rel_tol) {
    size_t worst = 0, bad = 0;
    double worst_excess = -INFINITY, max_diff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double tol = abs_tol + rel_tol * fabs((double)want[i]);
        if (!(d <= tol)) bad++; // NaN counts as bad
        if (isnan(d) || d - tol > worst_excess) {
            worst_excess = isnan(d) ? INFINITY : d - tol;
            worst = i;
        }
        if (d > max_diff || isnan(d)) max_diff = d;
    }
    test_check(bad == 0, __FILE__, __LINE__,
               "%s: %zu of %zu values out of tolerance (abs %.3g + rel %.3g); worst [%zu] got %.9g "
               "want %.9g; max |diff| %.3g",
               what, bad, n, abs_tol, rel_tol, worst, n ? got[worst] : 0.0, n ? want[worst] : 0.0,
               max_diff);
    if (bad == 0 && getenv("LCM_TEST_VERBOSE"))
        fprintf(stderr, "ok %s: max |diff| %.3g over %zu values\n", what, max_diff, n);
    return bad == 0;
}

const char *test_lcm_bin(void) {
    const char *bin = getenv("LCM_BIN");
    return bin && *bin ? bin : LCM_BUILD_DIR "/lcm";
}

const char *test_source_dir(void) { return LCM_SOURCE_DIR; }

const char *test_build_dir(void) { return LCM_BUILD_DIR; }

int test_run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t len = 0;
    if (out && cap) {
        size_t n;
        while (len + 1 < cap && (n = fread(out + len, 1, cap - 1 - len, p)) > 0) len += n;
        out[len] = '\0';
    }
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    int status = pclose(p);
    if (status == -1 || !WIFEXITED(status)) return -1;
    return WEXITSTATUS(status);
}

void test_append_quoted(char *cmd, size_t size, const char *text) {
    size_t len = strlen(cmd), need = 2;
    for (const char *c = text; *c; c++) need += *c == '\'' ? 4 : 1;
    if (len + need + 1 > size) {
        fprintf(stderr, "FATAL: test command longer than %zu bytes\n", size);
        exit(2);
    }
    cmd[len++] = '\'';
    for (const char *c = text; *c; c++) {
        if (*c == '\'') {
            memcpy(cmd + len, "'\\''", 4); // close, escaped quote, reopen
            len += 4;
        } else {
            cmd[len++] = *c;
        }
    }
    cmd[len++] = '\'';
    cmd[len] = '\0';
}

static uint64_t random_state = 0x9e3779b97f4a7c15ull;

float test_uniform(float lo, float hi) {
    uint64_t z = (random_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return lo + (hi - lo) * (float)((z >> 40) * 0x1p-24);
}

float *test_random_floats(int64_t n, float lo, float hi) {
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!v) exit(2);
    for (int64_t i = 0; i < n; i++) v[i] = test_uniform(lo, hi);
    return v;
}

tensor *test_random_tensor(int ndim, const int64_t *shape, float lo, float hi) {
    tensor *t = tensor_new(ndim, shape);
    if (!t) exit(2);
    for (int64_t i = 0; i < tensor_numel(t); i++) t->data[i] = test_uniform(lo, hi);
    return t;
}

const ops_backend *test_backend_for(lcm_precision precision) {
    static ops_backend backend;
    backend = ops_backend_from_environment(precision);
    return &backend;
}

void *test_packed_for(const layer_kernel *kernel, const kernel_family *family) {
    return kernel->family == family ? kernel->state : NULL;
}

unsigned char *test_encode_jpeg(const uint8_t *pixels, int width, int height, int components, int quality,
                                bool full_chroma, unsigned long *size) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *out = NULL;
    *size = 0;
    jpeg_mem_dest(&c, &out, size);
    c.image_width = (JDIMENSION)width;
    c.image_height = (JDIMENSION)height;
    c.input_components = components;
    c.in_color_space = components == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    for (int i = 0; full_chroma && i < c.num_components; i++)
        c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)c.next_scanline * width * components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return out;
}

char *test_read_file(const char *path, size_t *size) {
    *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    long n = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    char *data = n >= 0 && fseek(fp, 0, SEEK_SET) == 0 ? malloc((size_t)n + 1) : NULL;
    if (data) {
        *size = fread(data, 1, (size_t)n, fp);
        data[*size] = 0;
    }
    fclose(fp);
    return data;
}

void test_write_file(const char *path, const void *data, size_t size) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL, "cannot write %s", path);
    if (!fp) return;
    CHECK(fwrite(data, 1, size, fp) == size, "short write to %s", path);
    CHECK(fclose(fp) == 0, "cannot write %s", path);
}
