// `lcm generate` end to end from the command line: each golden pipeline case of every LCM folder
// under $LCM_FIXTURES is regenerated from its parameters and the PNG compared with the golden PNG;
// bad requests must exit with status 2 and leave no file behind.
#include <cjson/cJSON.h>
#include <dirent.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "golden.h"
#include "io/image.h"
#include "io/model_folder.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-cli-generate-XXXXXX";

// The A1111 `parameters` tEXt chunk of a PNG, or "" (static buffer).
static const char *png_parameters(const char *path) {
    static char text[4096];
    text[0] = '\0';
    FILE *fp = fopen(path, "rb");
    if (!fp) return text;
    spng_ctx *ctx = spng_ctx_new(0);
    spng_set_png_file(ctx, fp);
    uint32_t n = 0;
    if (spng_get_text(ctx, NULL, &n) == 0 && n > 0) {
        struct spng_text *chunks = calloc(n, sizeof *chunks);
        if (spng_get_text(ctx, chunks, &n) == 0)
            for (uint32_t i = 0; i < n; i++)
                if (!strcmp(chunks[i].keyword, "parameters"))
                    snprintf(text, sizeof text, "%s", chunks[i].text);
        free(chunks);
    }
    spng_ctx_free(ctx);
    fclose(fp);
    return text;
}

static void compare_png(const char *got_path, const char *want_path) {
    uint8_t *got = NULL, *want = NULL;
    int gw, gh, ww, wh;
    CHECK_OK(image_read_png(got_path, &got, &gw, &gh));
    CHECK_OK(image_read_png(want_path, &want, &ww, &wh));
    if (got && want) {
        CHECK(gw == ww && gh == wh, "%s: %dx%d, golden %dx%d", got_path, gw, gh, ww, wh);
        if (gw == ww && gh == wh) {
            size_t count = (size_t)gw * gh * 3, differ = 0, worse = 0;
            for (size_t i = 0; i < count; i++) {
                int d = abs((int)got[i] - (int)want[i]);
                differ += d != 0;
                worse += d > 1;
            }
            fprintf(stderr, "%s: %zu of %zu values differ from %s\n", got_path, differ, count, want_path);
            CHECK(worse == 0 && differ * 200 <= count, "%s vs %s: %zu differ, %zu by more than 1",
                  got_path, want_path, differ, worse);
        }
    }
    free(got);
    free(want);
}

static void run_golden_case(const char *model_dir, const char *golden_path, const char *png_path) {
    st_file *golden;
    CHECK_OK(st_open(golden_path, &golden));
    if (!golden) return;
    cJSON *info = golden_info(golden);
    char out[1200], cmd[8192];
    test_path(out, sizeof out, "%s/out.png", tmpdir);
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s generate --quiet --model ", test_lcm_bin());
    test_append_quoted(cmd, sizeof cmd, model_dir);
    size_t len = strlen(cmd);
    snprintf(cmd + len, sizeof cmd - len, " --seed %.0f --steps %.0f --guidance %.9g --width %.0f --height %.0f --output ",
             golden_number(info, "seed"), golden_number(info, "steps"), golden_number(info, "guidance"),
             golden_number(info, "w"), golden_number(info, "h"));
    test_append_quoted(cmd, sizeof cmd, out);
    strncat(cmd, " -- ", sizeof cmd - strlen(cmd) - 1);
    test_append_quoted(cmd, sizeof cmd, golden_string(info, "prompt"));
    int rc = test_run(cmd, NULL, 0);
    CHECK(rc == 0, "%s exited %d", cmd, rc);
    if (rc == 0) {
        compare_png(out, png_path);
        const char *params = png_parameters(out);
        char expect[256];
        snprintf(expect, sizeof expect, "Seed: %.0f, Size: %.0fx%.0f", golden_number(info, "seed"),
                 golden_number(info, "w"), golden_number(info, "h"));
        CHECK(strstr(params, golden_string(info, "prompt")) == params && strstr(params, "Sampler: LCM") &&
                  strstr(params, expect),
              "PNG parameters chunk is '%s'", params);
    }
    cJSON_Delete(info);
    st_close(golden);
}

// A bad request must fail with exit status 2, say why on stderr, and write nothing.
static void expect_usage_error(const char *model_dir, const char *extra, const char *why) {
    char out[1200], cmd[4096], errfile[1200];
    test_path(out, sizeof out, "%s/bad.png", tmpdir);
    test_path(errfile, sizeof errfile, "%s/stderr.txt", tmpdir);
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s generate --quiet --model ", test_lcm_bin());
    test_append_quoted(cmd, sizeof cmd, model_dir);
    size_t len = strlen(cmd);
    snprintf(cmd + len, sizeof cmd - len, " --prompt 'a cat' --output '%s' %s 2>'%s'", out, extra, errfile);
    int rc = test_run(cmd, NULL, 0);
    CHECK(rc == 2, "%s: expected exit 2, got %d (%s)", why, rc, cmd);
    CHECK(access(out, F_OK) != 0, "%s: an output file was written", why);
    FILE *fp = fopen(errfile, "r");
    char msg[512] = "";
    if (fp) {
        size_t n = fread(msg, 1, sizeof msg - 1, fp);
        msg[n] = '\0';
        fclose(fp);
    }
    CHECK(strlen(msg) > 10, "%s: no error message on stderr", why);
    if (getenv("LCM_TEST_VERBOSE")) fprintf(stderr, "%s -> %s", why, msg);
}

static bool read_file(const char *path, char *buf, size_t cap, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return false;
    *len = fread(buf, 1, cap, fp);
    fclose(fp);
    return true;
}

// --batch 2 writes FILE-0.png and FILE-1.png with different images; the same request gives the
// same bytes with 1 thread and with the default thread count.
static void check_batch_and_threads(const char *model_dir) {
    char cmd[4096], base[1200], a[1300], b[1300], one[1300];
    test_path(base, sizeof base, "%s/batch.png", tmpdir);
    test_path(a, sizeof a, "%s/batch-0.png", tmpdir);
    test_path(b, sizeof b, "%s/batch-1.png", tmpdir);
    test_path(one, sizeof one, "%s/one-thread.png", tmpdir);
    snprintf(cmd, sizeof cmd, "%s generate --quiet --model '%s' --seed 7 --batch 2 --output '%s' -- 'a red fox'",
             test_lcm_bin(), model_dir, base);
    CHECK(test_run(cmd, NULL, 0) == 0, "%s", cmd);
    static char da[1 << 20], db[1 << 20];
    size_t la = 0, lb = 0;
    CHECK(read_file(a, da, sizeof da, &la) && read_file(b, db, sizeof db, &lb), "batch files missing");
    CHECK(la > 0 && lb > 0 && (la != lb || memcmp(da, db, la) != 0), "batch images are identical");
    CHECK(access(base, F_OK) != 0, "batch run also wrote %s", base);
    snprintf(cmd, sizeof cmd, "%s generate --quiet --threads 1 --model '%s' --seed 7 --batch 2 --output '%s' -- 'a red fox'",
             test_lcm_bin(), model_dir, one);
    CHECK(test_run(cmd, NULL, 0) == 0, "%s", cmd);
    char first_one[1300];
    test_path(first_one, sizeof first_one, "%s/one-thread-0.png", tmpdir);
    CHECK(read_file(first_one, db, sizeof db, &lb) && lb == la && memcmp(da, db, la) == 0,
          "1 thread and the default thread count give different bytes");
}

int main(void) {
    const char *root = test_fixtures();
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    char lcm_dir[1024];
    test_path(lcm_dir, sizeof lcm_dir, "%s/tiny-lcm", root);
    int cases = 0;
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], golden_dir[1100];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        model_folder folder;
        if (model_folder_open(dir, NULL, &folder) != LCM_OK) continue;
        const char *cls = model_folder_pipeline_class(&folder);
        bool lcm = cls && !strcmp(cls, "LatentConsistencyModelPipeline");
        model_folder_close(&folder);
        if (!lcm) continue;
        test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
        char **names;
        int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
        for (int i = 0; i < n; i++) {
            char golden[1400], png[1400];
            test_path(golden, sizeof golden, "%s/%s", golden_dir, names[i]);
            test_path(png, sizeof png, "%s/%.*s.png", golden_dir, (int)(strlen(names[i]) - 12), names[i]);
            if (access(png, F_OK) != 0) continue;
            run_golden_case(dir, golden, png);
            snprintf(lcm_dir, sizeof lcm_dir, "%s", dir);
            cases++;
        }
        test_free_list(names, n);
    }
    if (d) closedir(d);
    CHECK(cases > 0, "no LCM pipeline golden PNGs under %s", root);

    check_batch_and_threads(lcm_dir);
    expect_usage_error(lcm_dir, "--width 100 --height 64", "width not a multiple of 8");
    expect_usage_error(lcm_dir, "--steps 0", "zero steps");
    expect_usage_error(lcm_dir, "--precision fp16", "unknown precision");
    expect_usage_error(lcm_dir, "--steps 51", "more steps than original_inference_steps");
    expect_usage_error(lcm_dir, "--width 65536", "size too large");
    expect_usage_error("/nonexistent/model", "", "missing model folder");
    char empty[1200];
    test_path(empty, sizeof empty, "%s/empty-model", tmpdir);
    mkdir(empty, 0700);
    expect_usage_error(empty, "", "empty model folder");
    // A pipeline folder whose unet component is missing.
    char broken[1200], cmd[4096];
    test_path(broken, sizeof broken, "%s/no-unet", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && for c in '%s'/*; do case \"$c\" in */unet|*/golden) ;; *) ln -s \"$c\" '%s'/ ;; esac; done",
             broken, lcm_dir, broken);
    CHECK(test_run(cmd, NULL, 0) == 0, "building %s", broken);
    expect_usage_error(broken, "", "missing unet component");

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
