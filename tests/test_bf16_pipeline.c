// bf16 precision end to end: every `golden/pipeline_*.safetensors` case of every
// LatentConsistencyModelPipeline folder under $LCM_FIXTURES is generated with
// LCM_PRECISION_BF16 and its image compared with the golden (fp32 reference) image by PSNR, which
// must be at least 30 dB (issue 5). The PSNR is printed for each case.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "models/vae.h"
#include "ops/cpu.h"
#include "pipeline/pipeline.h"
#include "testutil.h"

#define MIN_PSNR_DB 30.0

// PSNR in dB of images with values in [0, 1]; infinite when identical.
static double psnr(const float *got, const float *want, size_t n) {
    double sq = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        sq += d * d;
    }
    double mse = sq / (double)(n ? n : 1);
    return mse > 0 ? 10.0 * log10(1.0 / mse) : INFINITY;
}

static void run_case(lcm_pipeline *p, const char *path) {
    st_file *golden;
    CHECK_OK(st_open(path, &golden));
    if (!golden) return;
    cJSON *info = golden_info(golden);
    lcm_request r;
    golden_request(info, &r);
    tensor *image = NULL;
    CHECK_OK(generate_run(p, &r, NULL, NULL, &image));
    int64_t numel = 0;
    float *want = golden_f32(golden, "image_float", &numel);
    CHECK(want != NULL, "%s: image_float missing", path);
    if (image && want) {
        size_t count = (size_t)tensor_numel(image);
        CHECK(count == (size_t)numel, "%s: image has %zu values, golden %lld", path, count,
              (long long)numel);
        if (count == (size_t)numel) {
            float *got = malloc(count * sizeof(float));
            if (!got) exit(2);
            vae_image_to_float_nhwc(image, got);
            double db = psnr(got, want, count);
            fprintf(stderr, "%s: bf16 vs fp32 golden image PSNR %.2f dB (limit %.0f)\n", path, db,
                    MIN_PSNR_DB);
            CHECK(db >= MIN_PSNR_DB, "%s: bf16 image PSNR %.2f dB < %.0f dB", path, db, MIN_PSNR_DB);
            free(got);
        }
    }
    free(want);
    tensor_free(image);
    cJSON_Delete(info);
    st_close(golden);
}

static bool is_lcm_pipeline(const char *dir) {
    model_folder folder;
    if (model_folder_open(dir, NULL, &folder) != LCM_OK) return false;
    const char *cls = model_folder_pipeline_class(&folder);
    bool yes = cls && !strcmp(cls, "LatentConsistencyModelPipeline");
    model_folder_close(&folder);
    return yes;
}

int main(void) {
    // Without AVX512-BF16 (or its emulation on AVX-512), oneDNN has no bf16 kernels and the layers
    // stay in fp32: the test then still runs the bf16 code path but the PSNR is that of fp32.
    fprintf(stderr, "AVX-512: %s, AVX512-BF16: %s\n", cpu_has_avx512() ? "yes" : "no",
            cpu_has_avx512_bf16() ? "yes" : "no");
    const char *root = test_fixtures();
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot list %s", root);
    struct dirent *e;
    int cases = 0;
    lcm_pipeline_options options;
    lcm_pipeline_options_init(&options);
    options.precision = LCM_PRECISION_BF16;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], golden_dir[1100];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        if (!is_lcm_pipeline(dir)) continue;
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        char **names;
        int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
        lcm_pipeline *p = NULL;
        if (n > 0) CHECK_OK(lcm_pipeline_open(dir, &options, &p));
        for (int i = 0; p && i < n; i++) {
            char path[1400];
            test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
            run_case(p, path);
            cases++;
        }
        lcm_pipeline_close(p);
        test_free_list(names, n);
    }
    if (d) closedir(d);
    CHECK(cases > 0, "no pipeline golden cases found under %s", root);
    return test_finish();
}
