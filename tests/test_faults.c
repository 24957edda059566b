// Faults lose nothing: a full disk while writing a PNG (the library call and `lcm generate`) gives a
// clear error, leaves no partial file and keeps the old file as it was; every kind of file the
// program writes and reads back, damaged, gives an error naming it (no crash, no silent use):
//   - safetensors files as st_write writes them (models of lcm synth/convert/quantize): cut at
//     several points, header length and header bytes overwritten;
//   - a folder written by `lcm quantize` (int8 UNet): quantization.json not JSON / of another
//     version, the weights cut in half, a header byte overwritten, a scale tensor renamed away;
//   - a ControlNet folder written by `lcm quantize --weights-only`: the same for its files.
// A disk is "full" through RLIMIT_FSIZE with SIGXFSZ ignored: writes past the limit fail (EFBIG),
// as they would with ENOSPC, whatever the file system.
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control_fixtures.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "lcm.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-faults-XXXXXX";

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

// Noise compresses badly: a PNG of it is about as big as its pixels.
static uint8_t *noise(int w, int h) {
    uint8_t *rgb = malloc((size_t)w * h * 3);
    uint32_t x = 12345;
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)((x = x * 1664525u + 1013904223u) >> 24);
    return rgb;
}

static void test_png_disk_full_library(void) {
    char dir[300], path[400];
    test_path(dir, sizeof dir, "%s/png", tmpdir);
    test_path(path, sizeof path, "%s/out.png", dir);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    uint8_t *small = noise(8, 8), *big = noise(256, 256);
    CHECK_OK(image_write_png(path, small, 8, 8, NULL, NULL, 0));
    size_t old_size = 0;
    unsigned char *old = (unsigned char *)test_read_file(path, &old_size);
    pid_t child = fork();
    if (child == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit limit = {16384, 16384};
        setrlimit(RLIMIT_FSIZE, &limit);
        lcm_status st = image_write_png(path, big, 256, 256, NULL, NULL, 0);
        fprintf(stderr, "full disk, image_write_png: %s: %s\n", lcm_status_name(st), lcm_last_error());
        _exit(st == LCM_ERR_IO && strstr(lcm_last_error(), dir) ? 0 : 1);
    }
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "image_write_png on a full disk: status %#x", status);
    size_t now_size = 0;
    unsigned char *now = (unsigned char *)test_read_file(path, &now_size);
    CHECK(old && now && now_size == old_size && !memcmp(old, now, old_size), "the old PNG was changed");
    CHECK(count_entries(dir) == 1, "%d files in %s: a partial file was left", count_entries(dir), dir);
    free(old);
    free(now);
    free(small);
    free(big);
}

static void test_png_disk_full_cli(const char *model) {
    char dir[300], path[400], cache[400], cmd[2400], out[8192];
    test_path(dir, sizeof dir, "%s/cli", tmpdir);
    test_path(path, sizeof path, "%s/out.png", dir);
    test_path(cache, sizeof cache, "%s/xdg", tmpdir);
    CHECK(mkdir(dir, 0700) == 0, "mkdir %s", dir);
    uint8_t *small = noise(8, 8);
    CHECK_OK(image_write_png(path, small, 8, 8, NULL, NULL, 0));
    free(small);
    size_t old_size = 0;
    unsigned char *old = (unsigned char *)test_read_file(path, &old_size);
    // 4 KB of file per process: loading reads only, the PNG (and any kernel-choice cache) write fails.
    test_path(cmd, sizeof cmd,
              "trap '' XFSZ; ulimit -f 4; XDG_CACHE_HOME='%s' exec '%s' generate --model '%s' --prompt 'a red cube' "
              "--steps 1 --width 128 --height 128 --seed 1 --output '%s' --quiet 2>&1",
              cache, test_lcm_bin(), model, path);
    int rc = test_run(cmd, out, sizeof out);
    fprintf(stderr, "full disk, lcm generate -> %d: %s", rc, out);
    CHECK(rc == 1 && strstr(out, path), "lcm generate on a full disk: exit %d: %s", rc, out);
    size_t now_size = 0;
    unsigned char *now = (unsigned char *)test_read_file(path, &now_size);
    CHECK(old && now && now_size == old_size && !memcmp(old, now, old_size), "the old PNG was changed");
    CHECK(count_entries(dir) == 1, "%d files in %s: a partial file was left", count_entries(dir), dir);
    free(old);
    free(now);
}

// ---- written safetensors files -------------------------------------------------------------------

static lcm_status fill(void *user, size_t index, float *out, int64_t numel) {
    (void)user;
    for (int64_t i = 0; i < numel; i++) out[i] = (float)(index + 1) * 0.5f;
    return LCM_OK;
}

static void write_copy(const char *path, const unsigned char *data, size_t size) {
    FILE *fp = fopen(path, "wb");
    CHECK(fp && fwrite(data, 1, size, fp) == size, "write %s", path);
    if (fp) fclose(fp);
}

static void expect_refused(const char *what, const char *path) {
    st_file *f = NULL;
    lcm_status st = st_open(path, &f);
    CHECK(st != LCM_OK && f == NULL && strstr(lcm_last_error(), path), "%s: st_open -> %s: %s", what,
          lcm_status_name(st), lcm_last_error());
    fprintf(stderr, "%s: %s\n", what, lcm_last_error());
    st_close(f);
    lcm_clear_error();
}

static void test_written_safetensors(void) {
    char path[400], bad[400];
    test_path(path, sizeof path, "%s/written.safetensors", tmpdir);
    test_path(bad, sizeof bad, "%s/damaged.safetensors", tmpdir);
    st_write_entry entries[] = {{.name = "a.weight", .dtype = ST_F32, .ndim = 2, .shape = {16, 8}},
                                {.name = "b.weight", .dtype = ST_F16, .ndim = 1, .shape = {40}},
                                {.name = "c.weight", .dtype = ST_BF16, .ndim = 4, .shape = {4, 2, 3, 3}}};
    CHECK_OK(st_write(path, entries, 3, fill, NULL, "pt"));
    size_t size = 0;
    unsigned char *data = (unsigned char *)test_read_file(path, &size);
    if (!data || size < 64) {
        CHECK(0, "%s not written", path);
        free(data);
        return;
    }
    uint64_t header = 0;
    for (int i = 7; i >= 0; i--) header = header << 8 | data[i];
    // Cut: nothing, inside the length, inside the header, right after it, inside the data, one short.
    size_t cuts[] = {0, 4, 8 + (size_t)header / 2, 8 + (size_t)header, 8 + (size_t)header + (size - 8 - (size_t)header) / 2,
                     size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "cut at %zu of %zu bytes", cuts[i], size);
        write_copy(bad, data, cuts[i]);
        expect_refused(what, bad);
    }
    unsigned char *copy = malloc(size);
    memcpy(copy, data, size);
    memset(copy, 0xff, 8); // a header length far past the end
    write_copy(bad, copy, size);
    expect_refused("header length 2^64-1", bad);
    memcpy(copy, data, size);
    copy[8] = 'x'; // the header's opening brace
    write_copy(bad, copy, size);
    expect_refused("header byte overwritten", bad);
    memcpy(copy, data, size);
    char *offsets = memmem(copy + 8, (size_t)header, "data_offsets\":[", 15);
    if (offsets) offsets[15] = '9'; // a's data now starts 9xx bytes in: past the end or overlapping
    write_copy(bad, copy, size);
    expect_refused("data offset changed", bad);
    free(copy);
    free(data);
}

// ---- quantized folders ---------------------------------------------------------------------------

// Copies `from` to `to`, then runs `damage` (a shell command, %s = the copy) on it.
static void damaged_copy(const char *from, const char *to, const char *damage_fmt) {
    char cmd[3000], damage[2000], out[4096];
    snprintf(damage, sizeof damage, damage_fmt, to, to, to);
    test_path(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s' && %s", to, from, to, damage);
    CHECK(test_run(cmd, out, sizeof out) == 0, "%s: %s", cmd, out);
}

static const char *const unet_damage[][2] = {
    {"quantization.json not JSON", "printf '{not json' > '%s/unet/quantization.json'"},
    {"quantization.json of another version", "sed -i 's/\"version\":[^,]*/\"version\": 7/' '%s/unet/quantization.json'"},
    {"weights cut in half", "f='%s/unet/diffusion_pytorch_model.safetensors'; truncate -s $(( $(stat -c %%s \"$f\") / 2 )) \"$f\""},
    {"header byte overwritten", "printf x | dd of='%s/unet/diffusion_pytorch_model.safetensors' bs=1 seek=8 conv=notrunc 2>/dev/null"},
    {"scale tensor renamed", "sed -i '0,/[.]weight_scale\"/s//.weight_scalx\"/' '%s/unet/diffusion_pytorch_model.safetensors'"},
};

static void test_quantized_unet(const char *model) {
    char prompts[400], q8[400], bad[400], png[400], cmd[3000], out[8192];
    test_path(prompts, sizeof prompts, "%s/prompts.txt", tmpdir);
    test_path(q8, sizeof q8, "%s/q8", tmpdir);
    test_path(bad, sizeof bad, "%s/q8-damaged", tmpdir);
    test_path(png, sizeof png, "%s/q8.png", tmpdir);
    FILE *fp = fopen(prompts, "w");
    if (fp) fputs("a red cube\n", fp), fclose(fp);
    test_path(cmd, sizeof cmd, "'%s' quantize --model '%s' --calibration '%s' --output '%s' --samples 1 --steps 1 --quiet 2>&1",
              test_lcm_bin(), model, prompts, q8);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "%s: exit %d: %s", cmd, rc, out);
    if (rc != 0) return;
    const char *gen_fmt = "'%s' generate --model '%s' --prompt 'a red cube' --steps 1 --width 64 --height 64 --output '%s' "
                          "--quiet 2>&1";
    test_path(cmd, sizeof cmd, gen_fmt, test_lcm_bin(), q8, png);
    rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "the undamaged quantized model: exit %d: %s", rc, out);
    for (size_t i = 0; i < sizeof unet_damage / sizeof *unet_damage; i++) {
        damaged_copy(q8, bad, unet_damage[i][1]);
        test_path(cmd, sizeof cmd, gen_fmt, test_lcm_bin(), bad, png);
        rc = test_run(cmd, out, sizeof out);
        fprintf(stderr, "quantized UNet, %s -> %d: %s", unet_damage[i][0], rc, out);
        CHECK(rc == 2 && strstr(out, bad) && strstr(out, "/unet/"), "quantized UNet, %s: exit %d: %s",
              unet_damage[i][0], rc, out);
    }
}

static void test_quantized_controlnet(void) {
    control_fixtures c;
    if (!control_fixtures_find(test_fixtures(), &c)) {
        fprintf(stderr, "no ControlNet among the fixtures: quantized ControlNet cases skipped\n");
        return;
    }
    char q8[400], bad[400], cmd[3000], out[8192];
    test_path(q8, sizeof q8, "%s/cn8", tmpdir);
    test_path(bad, sizeof bad, "%s/cn8-damaged", tmpdir);
    test_path(cmd, sizeof cmd, "'%s' quantize --controlnet '%s' --weights-only --output '%s' --quiet 2>&1", test_lcm_bin(),
              c.controlnet, q8);
    int rc = test_run(cmd, out, sizeof out);
    CHECK(rc == 0, "%s: exit %d: %s", cmd, rc, out);
    if (rc != 0) return;
    lcm_pipeline_options o;
    lcm_pipeline_options_init(&o);
    o.controlnet = q8;
    lcm_pipeline *p = NULL;
    CHECK_OK(lcm_pipeline_open(c.model, &o, &p));
    lcm_pipeline_close(p);
    static const char *const damage[][2] = {
        {"quantization.json not JSON", "printf '[1,' > '%s/quantization.json'"},
        {"quantization.json of another format", "sed -i 's/lcm.c int8/int4/' '%s/quantization.json'"},
        {"weights cut in half", "f='%s/diffusion_pytorch_model.safetensors'; truncate -s $(( $(stat -c %%s \"$f\") / 2 )) \"$f\""},
    };
    o.controlnet = bad;
    for (size_t i = 0; i < sizeof damage / sizeof *damage; i++) {
        damaged_copy(q8, bad, damage[i][1]);
        p = NULL;
        lcm_status st = lcm_pipeline_open(c.model, &o, &p);
        fprintf(stderr, "quantized ControlNet, %s -> %s: %s\n", damage[i][0], lcm_status_name(st), lcm_last_error());
        CHECK(st != LCM_OK && p == NULL && strstr(lcm_last_error(), bad), "quantized ControlNet, %s: %s: %s",
              damage[i][0], lcm_status_name(st), lcm_last_error());
        lcm_clear_error();
    }
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    char xdg[300];
    test_path(xdg, sizeof xdg, "%s/xdg", tmpdir);
    setenv("XDG_CACHE_HOME", xdg, 1); // kernel choices and packed weights of these runs go there
    char model[600];
    test_path(model, sizeof model, "%s/tiny-lcm", test_fixtures());
    test_png_disk_full_library();
    test_png_disk_full_cli(model);
    test_written_safetensors();
    test_quantized_unet(model);
    test_quantized_controlnet();
    char cmd[400];
    test_path(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_finish();
}
