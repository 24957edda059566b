// `lcm generate` end to end with the options of the guided pipelines, against the golden PNGs:
//  - img2img (--init-image, --strength): every golden/img2img_*.safetensors of an LCM folder that
//    has a PNG beside it (the init image is the stored init_image_uint8, written to a PNG here);
//  - SD1.5 + LCM-LoRA + CFG (--lora, --guidance, --negative-prompt): every golden/pipeline_* of a
//    StableDiffusionPipeline folder, with the LoRA its note names;
//  - ControlNet (--controlnet, --control-image, --control-scale): every golden/pipeline_* of a
//    ControlNetModel folder, on the StableDiffusionPipeline folder whose UNet it fits.
// And the errors: an unreadable control image (message names the file), a ControlNet that does not
// fit the UNet, a negative prompt on an LCM-distilled UNet, flag misuse: exit 2, nothing written.
// JPEG control images and --control-preprocess canny run through.
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
#include "io/image_resize.h"
#include "io/model_folder.h"
#include "models/controlnet.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-cli-guided-XXXXXX";

// Appends `text` to `cmd` as one single-quoted shell word, after a space.
static void add_word(char *cmd, size_t size, const char *text) {
    size_t len = strlen(cmd);
    if (len + 1 < size) cmd[len++] = ' ', cmd[len] = '\0';
    test_append_quoted(cmd, size, text);
}

static void add_option(char *cmd, size_t size, const char *name, const char *value) {
    strncat(cmd, " ", size - strlen(cmd) - 1);
    strncat(cmd, name, size - strlen(cmd) - 1);
    if (value) add_word(cmd, size, value);
}

static void add_number(char *cmd, size_t size, const char *name, double value) {
    char text[64];
    snprintf(text, sizeof text, "%.9g", value);
    add_option(cmd, size, name, text);
}

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
                if (!strcmp(chunks[i].keyword, "parameters")) snprintf(text, sizeof text, "%s", chunks[i].text);
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
            fprintf(stderr, "%s: %zu of %zu values differ (max 1 allowed each)\n", want_path, differ, count);
            CHECK(worse == 0 && differ * 200 <= count, "%s vs %s: %zu differ, %zu by more than 1",
                  got_path, want_path, differ, worse);
        }
    }
    free(got);
    free(want);
}

// The LoRA a golden note names ("load_lora_weights(DIR)", "fuse_lora(lora_scale=S)") as FILE:SCALE.
static bool lora_from_note(const char *note, const char *model_dir, char *spec, size_t size) {
    const char *a = strstr(note, "load_lora_weights(");
    if (!a) return false;
    a += strlen("load_lora_weights(");
    const char *b = strchr(a, ')');
    if (!b) return false;
    char dir[1024];
    test_path(dir, sizeof dir, "%s/%.*s", model_dir, (int)(b - a), a);
    char **names;
    int n = test_list_files(dir, "", ".safetensors", &names);
    CHECK(n == 1, "%s: expected one LoRA .safetensors, found %d", dir, n);
    const char *s = strstr(note, "fuse_lora(lora_scale=");
    double scale = s ? strtod(s + strlen("fuse_lora(lora_scale="), NULL) : 1.0;
    if (n >= 1) test_path(spec, size, "%s/%s:%.9g", dir, names[0], scale);
    test_free_list(names, n);
    return n >= 1;
}

static bool folder_lora(const char *dir, char *spec, size_t size) {
    char golden_dir[1100];
    test_path(golden_dir, sizeof golden_dir, "%s/golden", dir);
    char **names;
    int n = test_list_files(golden_dir, "pipeline_", ".safetensors", &names);
    bool found = false;
    for (int i = 0; i < n && !found; i++) {
        char path[1400];
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        st_file *f;
        if (st_open(path, &f) != LCM_OK) continue;
        cJSON *info = golden_info(f);
        const cJSON *note = cJSON_GetObjectItemCaseSensitive(info, "note");
        if (cJSON_IsString(note)) found = lora_from_note(note->valuestring, dir, spec, size);
        cJSON_Delete(info);
        st_close(f);
    }
    test_free_list(names, n);
    return found;
}

// Regenerates one golden case through the CLI and compares the PNG.
static void run_case(const char *model_dir, const char *golden_dir, const char *name, const char *lora,
                     const char *controlnet) {
    char golden_path[1400], png[1400], out[1200], init_png[1200], cmd[16384];
    test_path(golden_path, sizeof golden_path, "%s/%s", golden_dir, name);
    test_path(png, sizeof png, "%s/%.*s.png", golden_dir, (int)(strlen(name) - 12), name);
    if (access(png, F_OK) != 0) return;
    st_file *golden;
    CHECK_OK(st_open(golden_path, &golden));
    if (!golden) return;
    cJSON *info = golden_info(golden);
    test_path(out, sizeof out, "%s/out.png", tmpdir);
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s generate --quiet", test_lcm_bin());
    add_option(cmd, sizeof cmd, "--model", model_dir);
    add_number(cmd, sizeof cmd, "--seed", golden_number(info, "seed"));
    add_number(cmd, sizeof cmd, "--steps", golden_number(info, "steps"));
    add_number(cmd, sizeof cmd, "--guidance", golden_number(info, "guidance"));
    add_number(cmd, sizeof cmd, "--width", golden_number(info, "w"));
    add_number(cmd, sizeof cmd, "--height", golden_number(info, "h"));
    if (lora) add_option(cmd, sizeof cmd, "--lora", lora);
    const cJSON *negative = cJSON_GetObjectItemCaseSensitive(info, "negative");
    if (cJSON_IsString(negative)) add_option(cmd, sizeof cmd, "--negative-prompt", negative->valuestring);
    if (cJSON_GetObjectItemCaseSensitive(info, "strength")) {
        const st_tensor *t = st_find(golden, "init_image_uint8");
        CHECK(t && t->ndim == 3 && t->shape[2] == 3, "%s: init_image_uint8 missing", golden_path);
        if (!t) goto done;
        test_path(init_png, sizeof init_png, "%s/init.png", tmpdir);
        CHECK_OK(image_write_png(init_png, t->data, (int)t->shape[1], (int)t->shape[0], NULL, NULL, 0));
        add_option(cmd, sizeof cmd, "--init-image", init_png);
        add_number(cmd, sizeof cmd, "--strength", golden_number(info, "strength"));
    }
    if (controlnet) {
        char control[1400];
        test_path(control, sizeof control, "%s/%s", golden_dir, golden_string(info, "control_png"));
        add_option(cmd, sizeof cmd, "--controlnet", controlnet);
        add_option(cmd, sizeof cmd, "--control-image", control);
        add_number(cmd, sizeof cmd, "--control-scale", golden_number(info, "scale"));
    }
    add_option(cmd, sizeof cmd, "--output", out);
    add_option(cmd, sizeof cmd, "--", NULL);
    add_word(cmd, sizeof cmd, golden_string(info, "prompt"));
    int rc = test_run(cmd, NULL, 0);
    CHECK(rc == 0, "%s exited %d", cmd, rc);
    if (rc == 0) {
        compare_png(out, png);
        const char *params = png_parameters(out);
        CHECK(strstr(params, golden_string(info, "prompt")) == params && strstr(params, "Sampler: LCM"),
              "PNG parameters chunk is '%s'", params);
        if (cJSON_IsString(negative))
            CHECK(strstr(params, "Negative prompt: ") != NULL, "no negative prompt in '%s'", params);
    }
done:
    cJSON_Delete(info);
    st_close(golden);
}

static int run_folder(const char *model_dir, const char *golden_dir, const char *prefix, const char *lora,
                      const char *controlnet) {
    char **names;
    int n = test_list_files(golden_dir, prefix, ".safetensors", &names), cases = 0;
    for (int i = 0; i < n; i++) {
        run_case(model_dir, golden_dir, names[i], lora, controlnet);
        cases++;
    }
    test_free_list(names, n);
    return cases;
}

// A bad request must exit 2, write nothing, and say on stderr something containing `needle`.
static void expect_error(const char *args, const char *needle, const char *why) {
    char out[1200], errfile[1200], cmd[8192];
    test_path(out, sizeof out, "%s/bad.png", tmpdir);
    test_path(errfile, sizeof errfile, "%s/stderr.txt", tmpdir);
    unlink(out);
    snprintf(cmd, sizeof cmd, "%s generate --quiet %s --output '%s' -- 'a cat' 2>'%s'", test_lcm_bin(), args,
             out, errfile);
    int rc = test_run(cmd, NULL, 0);
    CHECK(rc == 2, "%s: expected exit 2, got %d (%s)", why, rc, cmd);
    CHECK(access(out, F_OK) != 0, "%s: an output file was written", why);
    char msg[2048] = "";
    FILE *fp = fopen(errfile, "r");
    if (fp) {
        size_t n = fread(msg, 1, sizeof msg - 1, fp);
        msg[n] = '\0';
        fclose(fp);
    }
    CHECK(strstr(msg, needle) != NULL, "%s: stderr '%s' does not mention '%s'", why, msg, needle);
    fprintf(stderr, "%s -> %s", why, msg);
}

// Writes the PNG at `png` as a JPEG at `jpeg` (quality 95), resized to 7/5 of its width and 3/4
// of its height (an odd size, so the pipeline has to resize it back).
static void png_to_jpeg(const char *png, const char *jpeg) {
    uint8_t *rgb = NULL, *scaled = NULL;
    int w, h;
    CHECK_OK(image_read_png(png, &rgb, &w, &h));
    if (!rgb) return;
    CHECK_OK(image_resize_lanczos(rgb, w, h, w * 7 / 5, h * 3 / 4, &scaled));
    free(rgb);
    if (!scaled) return;
    rgb = scaled;
    w = w * 7 / 5;
    h = h * 3 / 4;
    unsigned long size = 0;
    unsigned char *bytes = test_encode_jpeg(rgb, w, h, 3, 95, false, &size);
    test_write_file(jpeg, bytes, size);
    free(bytes);
    free(rgb);
}

int main(void) {
    const char *root = test_fixtures();
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    char lcm_dirs[8][1024], sd_dirs[8][1024], cn_dirs[8][1024];
    int lcm_count = 0, sd_count = 0, cn_count = 0;
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[1024], cls[128];
        test_path(dir, sizeof dir, "%s/%s", root, e->d_name);
        golden_folder_class(dir, cls, sizeof cls);
        if (!strcmp(cls, "LatentConsistencyModelPipeline") && lcm_count < 8) snprintf(lcm_dirs[lcm_count++], 1024, "%s", dir);
        if (!strcmp(cls, "StableDiffusionPipeline") && sd_count < 8) snprintf(sd_dirs[sd_count++], 1024, "%s", dir);
        if (!strcmp(cls, "ControlNetModel") && cn_count < 8) snprintf(cn_dirs[cn_count++], 1024, "%s", dir);
    }
    if (d) closedir(d);

    int img2img = 0, sd15 = 0, cn = 0;
    char golden_dir[1100], lora[1500];
    for (int i = 0; i < lcm_count; i++) {
        test_path(golden_dir, sizeof golden_dir, "%s/golden", lcm_dirs[i]);
        img2img += run_folder(lcm_dirs[i], golden_dir, "img2img_", NULL, NULL);
    }
    for (int i = 0; i < sd_count; i++) {
        test_path(golden_dir, sizeof golden_dir, "%s/golden", sd_dirs[i]);
        bool has_lora = folder_lora(sd_dirs[i], lora, sizeof lora);
        sd15 += run_folder(sd_dirs[i], golden_dir, "pipeline_", has_lora ? lora : NULL, NULL);
    }
    const char *cn_model = NULL, *cn_dir = NULL;
    for (int c = 0; c < cn_count; c++)
        for (int i = 0; i < sd_count; i++) {
            if (!golden_controlnet_fits(cn_dirs[c], sd_dirs[i])) continue;
            test_path(golden_dir, sizeof golden_dir, "%s/golden", cn_dirs[c]);
            bool has_lora = folder_lora(sd_dirs[i], lora, sizeof lora);
            cn += run_folder(sd_dirs[i], golden_dir, "pipeline_", has_lora ? lora : NULL, cn_dirs[c]);
            cn_model = sd_dirs[i];
            cn_dir = cn_dirs[c];
            break;
        }
    fprintf(stderr, "CLI cases: img2img %d, SD1.5 %d, ControlNet %d\n", img2img, sd15, cn);
    CHECK(img2img > 0 && sd15 > 0 && cn > 0, "missing golden cases under %s", root);

    if (cn_model) {
        char args[8192], control_png[1200], missing[1200], text[1200], jpeg[1200];
        // The first control PNG of the ControlNet's golden folder, as an input that surely exists.
        char cn_golden[1100];
        test_path(cn_golden, sizeof cn_golden, "%s/golden", cn_dir);
        char **pngs;
        int n = test_list_files(cn_golden, "control_", ".png", &pngs);
        CHECK(n > 0, "no control_*.png in %s", cn_golden);
        if (n > 0) test_path(control_png, sizeof control_png, "%s/%s", cn_golden, pngs[0]);
        test_free_list(pngs, n);
        test_path(missing, sizeof missing, "%s/no-such-control.png", tmpdir);
        test_path(args, sizeof args, "--model '%s' --controlnet '%s' --control-image '%s'", cn_model, cn_dir, missing);
        expect_error(args, missing, "unreadable control image");
        test_path(text, sizeof text, "%s/not-an-image.png", tmpdir);
        FILE *fp = fopen(text, "w");
        if (fp) fputs("this is text\n", fp), fclose(fp);
        test_path(args, sizeof args, "--model '%s' --controlnet '%s' --control-image '%s'", cn_model, cn_dir, text);
        expect_error(args, text, "control image that is not an image");
        // A ControlNet on an UNet it does not fit (every LCM folder's, when its widths differ).
        for (int i = 0; i < lcm_count; i++) {
            if (golden_controlnet_fits(cn_dir, lcm_dirs[i])) continue;
            test_path(args, sizeof args, "--model '%s' --controlnet '%s' --control-image '%s'", lcm_dirs[i], cn_dir,
                     control_png);
            expect_error(args, "does not fit", "ControlNet that does not fit the UNet");
        }
        test_path(args, sizeof args, "--model '%s' --control-image '%s'", cn_model, control_png);
        expect_error(args, "--controlnet", "control image without a ControlNet");
        test_path(args, sizeof args, "--model '%s' --controlnet '%s' --control-image '%s' --control-preprocess sobel",
                 cn_model, cn_dir, control_png);
        expect_error(args, "canny", "unknown preprocessor");

        // A JPEG control image of another size, canny-preprocessed, runs through (nothing to compare
        // it with; the output size is given).
        test_path(jpeg, sizeof jpeg, "%s/control.jpg", tmpdir);
        png_to_jpeg(control_png, jpeg);
        char out[1200], cmd[8192];
        test_path(out, sizeof out, "%s/canny.png", tmpdir);
        test_path(cmd, sizeof cmd, "%s generate --quiet --model '%s' --controlnet '%s' --control-image '%s' "
                 "--control-preprocess canny --canny-low 50 --canny-high 150 --steps 2 --guidance 1 --seed 1 "
                 "--width 64 --height 64 "
                 "--output '%s' -- 'a room'", test_lcm_bin(), cn_model, cn_dir, jpeg, out);
        int rc = test_run(cmd, NULL, 0);
        CHECK(rc == 0, "JPEG + canny control image: exit %d (%s)", rc, cmd);
        if (rc == 0) {
            CHECK(strstr(png_parameters(out), "Module: canny") != NULL, "parameters: %s", png_parameters(out));
            uint8_t *rgb = NULL;
            int w = 0, h = 0;
            CHECK_OK(image_read_png(out, &rgb, &w, &h));
            CHECK(w == 64 && h == 64, "canny run wrote %dx%d, expected 64x64", w, h);
            free(rgb);
        }
    }
    if (lcm_count > 0) {
        char args[4096];
        test_path(args, sizeof args, "--model '%s' --negative-prompt 'blurry'", lcm_dirs[0]);
        expect_error(args, "negative prompt", "negative prompt on an LCM-distilled UNet");
        test_path(args, sizeof args, "--model '%s' --strength 0.5", lcm_dirs[0]);
        expect_error(args, "--init-image", "strength without an init image");
    }

    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
