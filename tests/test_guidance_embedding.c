// The LCM guidance-scale embedding against every guidance_embedding*.safetensors found under
// $LCM_FIXTURES/*/golden/: each row of `w` must give that row of `timestep_cond` within abs 2e-3
// (README section 8: float32 sin/cos of arguments up to ~1.4e4).
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "models/guidance_embedding.h"
#include "testutil.h"

// Reads tensor `name` of `file` as float32 (caller frees); NULL (a failed check) when absent.
static float *read_tensor(const st_file *file, const char *name, int64_t *numel, int *ndim,
                          int64_t *shape) {
    const st_tensor *t = st_find(file, name);
    CHECK(t != NULL, "%s: tensor '%s' missing", st_path(file), name);
    if (!t) return NULL;
    float *data = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    CHECK_OK(st_read_f32(file, t, data));
    *numel = t->numel;
    *ndim = t->ndim;
    for (int i = 0; i < t->ndim && i < 4; i++) shape[i] = t->shape[i];
    return data;
}

static void check_file(const char *path) {
    st_file *file = NULL;
    CHECK_OK(st_open(path, &file));
    if (!file) return;
    int64_t n_w, n_cond, n_ref, shape_w[4], shape_cond[4], shape_ref[4];
    int nd_w, nd_cond, nd_ref;
    float *w = read_tensor(file, "w", &n_w, &nd_w, shape_w);
    float *cond = read_tensor(file, "timestep_cond", &n_cond, &nd_cond, shape_cond);
    float *ref = st_find(file, "timestep_cond_fp64_reference")
                     ? read_tensor(file, "timestep_cond_fp64_reference", &n_ref, &nd_ref, shape_ref)
                     : NULL;
    if (w && cond) {
        CHECK(nd_cond == 2 && shape_cond[0] == n_w, "%s: timestep_cond shape does not match w", path);
        int dim = (int)shape_cond[1];
        float *got = malloc(sizeof(float) * (size_t)n_cond);
        for (int64_t row = 0; row < n_w; row++) lcm_guidance_embedding(w[row], dim, got + row * dim);
        char what[4200];
        snprintf(what, sizeof what, "%s: timestep_cond (%lld rows x %d)", path, (long long)n_w, dim);
        double max_diff = 0;
        for (int64_t i = 0; i < n_cond; i++) {
            double d = got[i] - cond[i];
            if (d < 0) d = -d;
            if (d > max_diff || d != d) max_diff = d;
        }
        fprintf(stderr, "%s: max abs diff vs timestep_cond = %.3g (tolerance 2e-3)\n", path, max_diff);
        test_close(what, got, cond, (size_t)n_cond, 2e-3, 0);
        if (ref && n_ref == n_cond) {
            // Informational: how far float32 (ours and torch's) is from the exact value.
            double worst = 0;
            for (int64_t i = 0; i < n_cond; i++) {
                double d = got[i] - ref[i];
                if (d < 0) d = -d;
                if (d > worst) worst = d;
            }
            fprintf(stderr, "%s: max abs diff vs timestep_cond_fp64_reference = %.3g\n", path, worst);
        }
        // The odd-dimension rule: one trailing zero after [sin, cos] of dim/2 values each.
        float odd[9];
        lcm_guidance_embedding(w[0], 9, odd);
        float even[8];
        lcm_guidance_embedding(w[0], 8, even);
        CHECK(odd[8] == 0.0f && memcmp(odd, even, sizeof even) == 0, "odd dim pads one zero");
        free(got);
    }
    free(w);
    free(cond);
    free(ref);
    st_close(file);
}

int main(void) {
    const char *root = test_fixtures();
    DIR *dir = opendir(root);
    CHECK(dir != NULL, "cannot list %s", root);
    int files = 0;
    struct dirent *entry;
    while (dir && (entry = readdir(dir))) {
        if (entry->d_name[0] == '.') continue;
        char golden[4096];
        struct stat st;
        test_path(golden, sizeof golden, "%s/%s/golden", root, entry->d_name);
        if (stat(golden, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        char **names;
        int count = test_list_files(golden, "guidance_embedding", ".safetensors", &names);
        for (int i = 0; i < count; i++) {
            char path[4096];
            test_path(path, sizeof path, "%s/%s", golden, names[i]);
            check_file(path);
            files++;
        }
        test_free_list(names, count);
    }
    if (dir) closedir(dir);
    CHECK(files > 0, "no guidance_embedding*.safetensors under %s/*/golden", root);
    return test_finish();
}
