// Tiled AutoencoderKL decode against diffusers' tiled_decode (fixtures README 7.6).
//
// Cases are discovered: every fixture folder F with an AutoencoderKL in F/vae and
// F/golden/vae_tiled*.safetensors; the tile sizes come from the file's info, the cases are
// caseK.latents_scaled -> caseK.image_tiled for K = 0, 1, ... while present, and the raw tiles
// debug.caseK.tile_rR_cC are compared where stored.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "io/json_config.h"
#include "io/model_folder.h"
#include "io/safetensors.h"
#include "models/vae_tiled.h"
#include "testutil.h"

static tensor *golden_tensor(const st_file *g, const char *name) {
    const st_tensor *t = st_find(g, name);
    if (!t || t->ndim < 1 || t->ndim > TENSOR_MAX_DIMS) return NULL;
    tensor *x = tensor_new(t->ndim, t->shape);
    if (x) CHECK_OK(st_read_f32(g, t, x->data));
    return x;
}

static void compare(const char *label, const tensor *got, const st_file *g, const char *name) {
    tensor *want = golden_tensor(g, name);
    CHECK(want != NULL, "%s: golden '%s' missing", st_path(g), name);
    CHECK(got != NULL, "%s %s: nothing computed", label, name);
    if (got && want) {
        bool same = got->ndim == want->ndim;
        for (int i = 0; same && i < got->ndim; i++) same = got->shape[i] == want->shape[i];
        CHECK(same, "%s %s: shape %lldx%lld differs from the golden one", label, name,
              (long long)got->shape[2], (long long)got->shape[3]);
        if (same) {
            size_t n = (size_t)tensor_numel(want);
            double scale = test_max_abs(want->data, n), max_diff = 0;
            for (size_t i = 0; i < n; i++)
                max_diff = fmax(max_diff, fabs((double)got->data[i] - want->data[i]));
            fprintf(stderr, "  %-10s %-28s max|diff| %.3g (tol %.3g)\n", label, name, max_diff,
                    1e-4 * scale);
            char what[256];
            snprintf(what, sizeof what, "%s %s", label, name);
            test_close(what, got->data, want->data, n, 1e-4 * scale, 0.0);
        }
    }
    tensor_free(want);
}

typedef struct tile_check {
    const st_file *golden;
    const char *prefix; // "debug.caseK."
    int compared, decoded;
} tile_check;

static void check_tile(void *user, const char *name, const tensor *value) {
    tile_check *c = user;
    c->decoded++;
    char golden_name[128];
    snprintf(golden_name, sizeof golden_name, "%s%s", c->prefix, name);
    if (!st_find(c->golden, golden_name)) return;
    compare("tile", value, c->golden, golden_name);
    c->compared++;
}

// Blending and joining the reference's own tiles reproduces its image bit for bit (the generator
// checked the same with a numpy re-implementation).
static void test_blend_exact(const st_file *g, const vae_tiling *t, int k, const tensor *latents) {
    int rows = vae_tiling_tile_count(t, latents->shape[2]);
    int cols = vae_tiling_tile_count(t, latents->shape[3]);
    tensor **tiles = calloc((size_t)rows * cols, sizeof *tiles);
    bool all = tiles != NULL;
    for (int i = 0; all && i < rows * cols; i++) {
        char name[96];
        snprintf(name, sizeof name, "debug.case%d.tile_r%d_c%d", k, i / cols, i % cols);
        tiles[i] = golden_tensor(g, name);
        all = tiles[i] != NULL;
    }
    if (all) {
        char image_name[64];
        snprintf(image_name, sizeof image_name, "case%d.image_tiled", k);
        tensor *want = golden_tensor(g, image_name), *got = NULL;
        CHECK_OK(vae_tiles_blend_join(tiles, rows, cols, t, &got));
        bool same = got && want && tensor_numel(got) == tensor_numel(want);
        int64_t differ = 0;
        for (int64_t i = 0; same && i < tensor_numel(want); i++) differ += got->data[i] != want->data[i];
        fprintf(stderr, "  case%d: blending the stored tiles: %lld values differ (exact check)\n", k,
                (long long)differ);
        CHECK(same && differ == 0, "case%d: blend+join of the reference tiles is not bit-exact "
              "(%lld values differ)", k, (long long)differ);
        tensor_free(got);
        tensor_free(want);
    }
    for (int i = 0; tiles && i < rows * cols; i++) tensor_free(tiles[i]);
    free(tiles);
}

static int test_tiled_golden(const vae_model *vae, const char *path) {
    st_file *g = NULL;
    CHECK_OK(st_open(path, &g));
    if (!g) return 0;
    fprintf(stderr, "%s\n", path);
    cJSON *info = golden_info(g);
    vae_tiling t;
    CHECK_OK(vae_tiling_init(&t, (int)golden_number(info, "tile_sample_min_size"),
                             (int)golden_number(info, "tile_latent_min_size"),
                             golden_number(info, "tile_overlap_factor")));
    // The derived sizes, where recorded, agree with diffusers' int() arithmetic.
    const struct { const char *field; int value; } derived[] = {
        {"overlap_size_latent", t.stride_latent},
        {"blend_extent_px", t.blend_extent_px},
        {"row_limit_px", t.row_limit_px},
    };
    for (size_t i = 0; i < sizeof derived / sizeof derived[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(info, derived[i].field);
        if (cJSON_IsNumber(v))
            CHECK((int)v->valuedouble == derived[i].value, "%s: %s = %g, computed %d", path,
                  derived[i].field, v->valuedouble, derived[i].value);
    }
    int cases = 0;
    for (int k = 0;; k++) {
        char latents_name[64], image_name[64], prefix[64], label[32];
        snprintf(latents_name, sizeof latents_name, "case%d.latents_scaled", k);
        snprintf(image_name, sizeof image_name, "case%d.image_tiled", k);
        snprintf(prefix, sizeof prefix, "debug.case%d.", k);
        snprintf(label, sizeof label, "case%d", k);
        tensor *latents = golden_tensor(g, latents_name);
        if (!latents) break;
        CHECK(vae_tiling_applies(&t, latents->shape[2], latents->shape[3]),
              "%s: diffusers took the tiled path, so a side must exceed T_l", label);
        tile_check tc = {.golden = g, .prefix = prefix};
        tensor *image = NULL;
        CHECK_OK(vae_decode_tiled(vae, latents, &t, check_tile, &tc, &image));
        compare(label, image, g, image_name);
        int expected_tiles = vae_tiling_tile_count(&t, latents->shape[2]) *
                             vae_tiling_tile_count(&t, latents->shape[3]);
        CHECK(tc.decoded == expected_tiles, "%s: %d tiles decoded, expected %d", label, tc.decoded,
              expected_tiles);
        fprintf(stderr, "  %s: %d tiles, %d compared with debug tiles\n", label, tc.decoded,
                tc.compared);
        if (tc.compared == expected_tiles) test_blend_exact(g, &t, k, latents);
        tensor_free(image);
        tensor_free(latents);
        cases++;
    }
    CHECK(cases > 0, "%s: no case0.latents_scaled", path);
    cJSON_Delete(info);
    st_close(g);
    return cases;
}

static bool is_autoencoder_kl(const char *model_dir) {
    char path[PATH_MAX];
    test_path(path, sizeof path, "%s/vae/config.json", model_dir);
    json_config c;
    if (access(path, F_OK) != 0 || json_config_load(path, NULL, &c) != LCM_OK) return false;
    const char *cls = NULL;
    bool yes = json_config_string_or(&c, "_class_name", "", &cls) == LCM_OK &&
               strcmp(cls, "AutoencoderKL") == 0;
    json_config_free(&c);
    return yes;
}

static void test_bad_parameters(void) {
    vae_tiling t;
    CHECK(vae_tiling_init(&t, 96, 12, 1.0) == LCM_ERR_INVALID_ARGUMENT, "overlap 1 must fail");
    CHECK(strstr(lcm_last_error(), "tile_overlap_factor"), "message names the field: %s",
          lcm_last_error());
    CHECK(vae_tiling_init(&t, 96, 1, 0.25) == LCM_ERR_INVALID_ARGUMENT, "stride 0 must fail");
    CHECK(strstr(lcm_last_error(), "stride"), "message: %s", lcm_last_error());
    CHECK(vae_tiling_init(&t, 0, 12, 0.25) == LCM_ERR_INVALID_ARGUMENT, "size 0 must fail");
    CHECK_OK(vae_tiling_init(&t, 512, 64, 0.25));
    CHECK(t.stride_latent == 48 && t.blend_extent_px == 128 && t.row_limit_px == 384,
          "SD defaults: stride %d, extent %d, limit %d", t.stride_latent, t.blend_extent_px,
          t.row_limit_px);
}

int main(void) {
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    int cases = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char model_dir[PATH_MAX], golden_dir[PATH_MAX * 2], path[PATH_MAX * 3];
        test_path(model_dir, sizeof model_dir, "%s/%s", root, e->d_name);
        test_path(golden_dir, sizeof golden_dir, "%s/golden", model_dir);
        if (access(golden_dir, F_OK) != 0 || !is_autoencoder_kl(model_dir)) continue;
        char **names = NULL;
        int count = test_list_files(golden_dir, "vae_tiled", ".safetensors", &names);
        if (count > 0) {
            model_folder folder;
            vae_model *vae = NULL;
            CHECK_OK(model_folder_open(model_dir, NULL, &folder));
            CHECK_OK(vae_load(test_backend_for(LCM_PRECISION_FP32), &folder, "vae", &vae));
            model_folder_close(&folder);
            for (int i = 0; vae && i < count; i++) {
                test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
                cases += test_tiled_golden(vae, path);
            }
            vae_free(vae);
        }
        test_free_list(names, count);
    }
    if (d) closedir(d);
    test_bad_parameters();
    fprintf(stderr, "%d tiled VAE golden cases\n", cases);
    CHECK(cases > 0, "no vae_tiled golden cases found under %s", root);
    return test_finish();
}
