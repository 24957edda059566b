// PNG reading and writing: round trip with text metadata, atomic writes, every colour type, the
// golden PNGs against their safetensors, and hostile files (truncated, corrupt, oversized).
#include <dirent.h>
#include <limits.h>
#include <spng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/image.h"
#include "io/safetensors.h"
#include "testutil.h"

static char scratch[PATH_MAX];

static bool write_bytes(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok;
}

static void *read_bytes(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = len > 0 ? malloc((size_t)len) : NULL;
    if (data && fread(data, 1, (size_t)len, f) != (size_t)len) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = data ? (size_t)len : 0;
    return data;
}

// Names in the scratch folder other than `keep`; counts leftovers such as temporary files.
static int count_other_files(const char *keep) {
    DIR *d = opendir(scratch);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.' && strcmp(e->d_name, keep) != 0) n++;
    if (d) closedir(d);
    return n;
}

static uint8_t *test_pattern(int width, int height) {
    uint8_t *rgb = malloc((size_t)width * height * 3);
    for (int i = 0; rgb && i < width * height * 3; i++) rgb[i] = (uint8_t)(i * 37 + i / 7);
    return rgb;
}

// ---- round trip with text --------------------------------------------------------------------

static void test_round_trip(void) {
    char path[PATH_MAX + 32];
    test_path(path, sizeof path, "%s/round.png", scratch);
    int w = 37, h = 23;
    uint8_t *rgb = test_pattern(w, h);
    const char *keys[] = {"parameters", "Comment"};
    const char *values[] = {"a photo of a cat\nSteps: 4, Sampler: LCM, CFG scale: 8, Seed: 42",
                            "caf\xc3\xa9 \xe7\x8c\xab"}; // UTF-8: needs iTXt
    CHECK_OK(image_write_png(path, rgb, w, h, keys, values, 2));
    CHECK(count_other_files("round.png") == 0, "a temporary file was left beside %s", path);
    // The file holds exactly what the in-memory encoder produces.
    size_t file_size = 0, mem_size = 0;
    void *file_bytes = read_bytes(path, &file_size), *mem_bytes = NULL;
    CHECK_OK(image_encode_png(rgb, w, h, keys, values, 2, &mem_bytes, &mem_size));
    CHECK(file_bytes && mem_bytes && file_size == mem_size &&
              memcmp(file_bytes, mem_bytes, file_size) == 0,
          "written file differs from image_encode_png's bytes");
    free(file_bytes);
    free(mem_bytes);

    uint8_t *back = NULL;
    int bw = 0, bh = 0;
    CHECK_OK(image_read_png(path, &back, &bw, &bh));
    CHECK(bw == w && bh == h, "size %dx%d after round trip, want %dx%d", bw, bh, w, h);
    CHECK(back && bw == w && bh == h && memcmp(back, rgb, (size_t)w * h * 3) == 0,
          "pixels differ after round trip");
    free(back);

    // The text chunks, read back with libspng itself.
    FILE *f = fopen(path, "rb");
    spng_ctx *ctx = spng_ctx_new(0);
    spng_set_png_file(ctx, f);
    uint32_t n_text = 0;
    int err = spng_get_text(ctx, NULL, &n_text);
    CHECK(err == 0 && n_text == 2, "spng_get_text: %s, %u chunks", spng_strerror(err), n_text);
    struct spng_text texts[2];
    if (err == 0 && n_text == 2 && spng_get_text(ctx, texts, &n_text) == 0) {
        for (int i = 0; i < 2; i++) {
            CHECK(strcmp(texts[i].keyword, keys[i]) == 0, "text %d keyword '%s'", i,
                  texts[i].keyword);
            CHECK(texts[i].length == strlen(values[i]) &&
                      memcmp(texts[i].text, values[i], texts[i].length) == 0,
                  "text %d value differs", i);
        }
        CHECK(texts[0].type == SPNG_TEXT, "ASCII metadata should be tEXt (type %d)", texts[0].type);
        CHECK(texts[1].type == SPNG_ITXT, "UTF-8 metadata should be iTXt (type %d)", texts[1].type);
    }
    spng_ctx_free(ctx);
    fclose(f);

    // Overwriting replaces the file whole; no temporary file stays behind.
    uint8_t *other = test_pattern(5, 4);
    CHECK_OK(image_write_png(path, other, 5, 4, NULL, NULL, 0));
    CHECK_OK(image_read_png(path, &back, &bw, &bh));
    CHECK(bw == 5 && bh == 4 && back && memcmp(back, other, 60) == 0, "overwrite");
    CHECK(count_other_files("round.png") == 0, "a temporary file was left after overwriting");
    free(back);
    free(other);
    unlink(path);

    // Errors: a folder that does not exist, a bad keyword, bad sizes.
    char missing[PATH_MAX + 32];
    test_path(missing, sizeof missing, "%s/no/such/folder/x.png", scratch);
    lcm_status st = image_write_png(missing, rgb, w, h, NULL, NULL, 0);
    CHECK(st == LCM_ERR_IO && strstr(lcm_last_error(), missing), "write into a missing folder: %s",
          lcm_last_error());
    const char *bad_key[] = {" leading space"};
    st = image_write_png(path, rgb, w, h, bad_key, values, 1);
    CHECK(st == LCM_ERR_INVALID_ARGUMENT, "bad keyword accepted: %s", lcm_status_name(st));
    CHECK(access(path, F_OK) != 0, "a failed write must not create %s", path);
    CHECK(image_write_png(path, rgb, 0, h, NULL, NULL, 0) == LCM_ERR_INVALID_ARGUMENT,
          "0-wide image accepted");
    CHECK(image_write_png(path, rgb, IMAGE_MAX_SIDE + 1, 1, NULL, NULL, 0) ==
              LCM_ERR_INVALID_ARGUMENT,
          "oversized image accepted");
    CHECK(count_other_files("") == 0, "files left in %s after failed writes", scratch);
    free(rgb);
}

// ---- colour types ----------------------------------------------------------------------------

// Encodes raw scanlines of the given PNG layout with libspng directly.
static void *encode_raw(struct spng_ihdr ihdr, const void *pixels, size_t len,
                        const struct spng_plte *plte, size_t *size) {
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    spng_set_ihdr(ctx, &ihdr);
    if (plte) spng_set_plte(ctx, (struct spng_plte *)plte);
    int err = spng_encode_image(ctx, pixels, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
    void *png = err ? NULL : spng_get_png_buffer(ctx, size, &err);
    CHECK(png != NULL, "encoding a test PNG: %s", spng_strerror(err));
    spng_ctx_free(ctx);
    return png;
}

static void expect_rgb(const char *what, const void *png, size_t size, const uint8_t *want, int w,
                       int h) {
    uint8_t *rgb = NULL;
    int gw = 0, gh = 0;
    CHECK_OK(image_decode_png(png, size, what, &rgb, &gw, &gh));
    CHECK(gw == w && gh == h && rgb && memcmp(rgb, want, (size_t)w * h * 3) == 0,
          "%s: decoded RGB differs", what);
    free(rgb);
}

static void test_colour_types(void) {
    size_t size = 0;
    // 8-bit gray: g -> (g, g, g)
    {
        uint8_t gray[6] = {0, 50, 100, 150, 200, 255}, want[18];
        for (int i = 0; i < 6; i++) want[i * 3] = want[i * 3 + 1] = want[i * 3 + 2] = gray[i];
        void *png = encode_raw((struct spng_ihdr){3, 2, 8, SPNG_COLOR_TYPE_GRAYSCALE, 0, 0, 0},
                               gray, sizeof gray, NULL, &size);
        if (png) expect_rgb("gray8", png, size, want, 3, 2);
        free(png);
    }
    // 1-bit gray: 1 -> 255
    {
        // row 0: 1 0 1, row 1: 0 1 0 (pixels packed from the high bit)
        uint8_t bits[2] = {0xA0, 0x40}, want[18] = {0};
        for (int c = 0; c < 3; c++) want[0 + c] = want[6 + c] = want[12 + c] = 255;
        void *png = encode_raw((struct spng_ihdr){3, 2, 1, SPNG_COLOR_TYPE_GRAYSCALE, 0, 0, 0},
                               bits, sizeof bits, NULL, &size);
        if (png) expect_rgb("gray1", png, size, want, 3, 2);
        free(png);
    }
    // gray + alpha: alpha dropped
    {
        uint8_t ga[4] = {10, 0, 240, 128}, want[6] = {10, 10, 10, 240, 240, 240};
        void *png =
            encode_raw((struct spng_ihdr){2, 1, 8, SPNG_COLOR_TYPE_GRAYSCALE_ALPHA, 0, 0, 0}, ga,
                       sizeof ga, NULL, &size);
        if (png) expect_rgb("gray+alpha", png, size, want, 2, 1);
        free(png);
    }
    // RGBA: alpha dropped (PIL's convert("RGB"))
    {
        uint8_t rgba[8] = {1, 2, 3, 0, 250, 251, 252, 77}, want[6] = {1, 2, 3, 250, 251, 252};
        void *png =
            encode_raw((struct spng_ihdr){2, 1, 8, SPNG_COLOR_TYPE_TRUECOLOR_ALPHA, 0, 0, 0}, rgba,
                       sizeof rgba, NULL, &size);
        if (png) expect_rgb("rgba8", png, size, want, 2, 1);
        free(png);
    }
    // palette
    {
        struct spng_plte plte = {.n_entries = 2};
        plte.entries[0] = (struct spng_plte_entry){9, 8, 7, 255};
        plte.entries[1] = (struct spng_plte_entry){200, 100, 50, 255};
        uint8_t idx[3] = {1, 0, 1}, want[9] = {200, 100, 50, 9, 8, 7, 200, 100, 50};
        void *png = encode_raw((struct spng_ihdr){3, 1, 8, SPNG_COLOR_TYPE_INDEXED, 0, 0, 0}, idx,
                               sizeof idx, &plte, &size);
        if (png) expect_rgb("palette", png, size, want, 3, 1);
        free(png);
    }
    // 16-bit RGB: the high byte of each sample, as PIL does (libspng's encoder takes host-endian
    // samples)
    {
        uint16_t rgb16[3] = {0xABCD, 0x12FF, 0x8001};
        uint8_t want[3] = {0xAB, 0x12, 0x80};
        void *png = encode_raw((struct spng_ihdr){1, 1, 16, SPNG_COLOR_TYPE_TRUECOLOR, 0, 0, 0},
                               rgb16, sizeof rgb16, NULL, &size);
        if (png) expect_rgb("rgb16", png, size, want, 1, 1);
        free(png);
    }
}

// ---- hostile files ---------------------------------------------------------------------------

static uint32_t crc32_png(const uint8_t *data, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

static void expect_read_failure(const char *what, const void *data, size_t size, const char *path) {
    CHECK(write_bytes(path, data, size), "writing %s", path);
    uint8_t *rgb = (uint8_t *)1;
    int w = -1, h = -1;
    lcm_status st = image_read_png(path, &rgb, &w, &h);
    fprintf(stderr, "  %s (%zu bytes) -> %s: %s\n", what, size, lcm_status_name(st),
            lcm_last_error());
    CHECK(st != LCM_OK && rgb == NULL && w == 0 && h == 0, "%s: read should fail cleanly", what);
    CHECK(strstr(lcm_last_error(), path) != NULL, "%s: the error should name the file: %s", what,
          lcm_last_error());
    st = image_decode_png(data, size, "buffer", &rgb, &w, &h);
    CHECK(st != LCM_OK && rgb == NULL, "%s: decode from memory should fail cleanly", what);
    unlink(path);
}

static void test_hostile(void) {
    int w = 64, h = 48;
    uint8_t *rgb = test_pattern(w, h);
    void *png = NULL;
    size_t size = 0;
    CHECK_OK(image_encode_png(rgb, w, h, NULL, NULL, 0, &png, &size));
    free(rgb);
    if (!png) return;
    char path[PATH_MAX + 32];
    test_path(path, sizeof path, "%s/bad.png", scratch);

    // Every cut fails, also one of the IEND chunk's CRC only: libspng checks that CRC when all
    // of it is there, but a file that ends inside it (1 to 4 bytes short) decoded as whole;
    // image.c's check_iend reports it.
    size_t cuts[] = {0, 5, 8, 20, 33, 40, size / 2, size - 12, size - 8, size - 5, size - 4, size - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", cuts[i]);
        expect_read_failure(what, png, cuts[i], path);
    }

    uint8_t *copy = malloc(size);
    memcpy(copy, png, size);
    copy[size / 2] ^= 0x55; // inside IDAT: the CRC (or the zlib stream) no longer matches
    expect_read_failure("corrupt IDAT byte", copy, size, path);

    // The IEND chunk's CRC damaged (its last 4 bytes), and IEND given a byte of data.
    memcpy(copy, png, size);
    CHECK(!memcmp(copy + size - 8, "IEND", 4), "the encoder's PNG ends with IEND and its CRC");
    copy[size - 1] ^= 0x01;
    expect_read_failure("damaged IEND CRC", copy, size, path);
    memcpy(copy, png, size);
    put_be32(copy + size - 12, 1);
    expect_read_failure("IEND with a length", copy, size, path);

    // IHDR claiming 20000 x 10 pixels (valid CRC): refused before any allocation.
    memcpy(copy, png, size);
    put_be32(copy + 16, 20000);
    put_be32(copy + 29, crc32_png(copy + 12, 17));
    expect_read_failure("20000-pixel-wide IHDR", copy, size, path);
    // 16384 x 16384 is within the side limit but over the pixel limit.
    memcpy(copy, png, size);
    put_be32(copy + 16, 16384);
    put_be32(copy + 20, 16384);
    put_be32(copy + 29, crc32_png(copy + 12, 17));
    expect_read_failure("16384x16384 IHDR", copy, size, path);
    free(copy);

    const char text[] = "GIF89a this is not a PNG file at all";
    expect_read_failure("not a PNG", text, sizeof text, path);

    char missing[PATH_MAX + 32];
    test_path(missing, sizeof missing, "%s/missing.png", scratch);
    uint8_t *out = NULL;
    int ow, oh;
    CHECK(image_read_png(missing, &out, &ow, &oh) == LCM_ERR_IO &&
              strstr(lcm_last_error(), missing),
          "a missing file is an I/O error naming it: %s", lcm_last_error());
    CHECK(image_read_png(scratch, &out, &ow, &oh) == LCM_ERR_IO, "a folder is not a PNG file");
    free(png);
}

// ---- golden PNGs -------------------------------------------------------------------------------

// Every golden PNG decodes; one with a same-named .safetensors holding image_uint8 matches it.
static int test_golden_pngs(const char *golden_dir) {
    char **names = NULL;
    int count = test_list_files(golden_dir, "", ".png", &names), matched = 0;
    for (int i = 0; i < count; i++) {
        char path[PATH_MAX * 2], st_path_[PATH_MAX * 2];
        test_path(path, sizeof path, "%s/%s", golden_dir, names[i]);
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        CHECK_OK(image_read_png(path, &rgb, &w, &h));
        test_path(st_path_, sizeof st_path_, "%s/%.*s.safetensors", golden_dir,
                  (int)(strlen(names[i]) - 4), names[i]);
        st_file *g = NULL;
        if (rgb && access(st_path_, F_OK) == 0 && st_open(st_path_, &g) == LCM_OK) {
            const st_tensor *t = st_find(g, "image_uint8");
            if (t) {
                CHECK(t->dtype == ST_U8 && t->numel == (int64_t)w * h * 3 &&
                          t->shape[t->ndim - 3] == h && t->shape[t->ndim - 2] == w,
                      "%s: %dx%d PNG vs image_uint8 of another shape", path, w, h);
                if (t->dtype == ST_U8 && t->numel == (int64_t)w * h * 3) {
                    size_t differ = 0;
                    for (int64_t k = 0; k < t->numel; k++)
                        differ += rgb[k] != ((const uint8_t *)t->data)[k];
                    fprintf(stderr, "  %s: %dx%d, %zu of %lld values differ from image_uint8\n",
                            names[i], w, h, differ, (long long)t->numel);
                    CHECK(differ == 0, "%s differs from image_uint8 in %zu values", path, differ);
                    matched++;
                }
            }
            st_close(g);
        } else if (rgb) {
            fprintf(stderr, "  %s: %dx%d (no same-named image_uint8)\n", names[i], w, h);
        }
        free(rgb);
    }
    test_free_list(names, count);
    return matched;
}

int main(void) {
    const char *root = test_fixtures();
    test_path(scratch, sizeof scratch, "/tmp/lcm_test_image_XXXXXX");
    CHECK(mkdtemp(scratch) != NULL, "mkdtemp");

    test_round_trip();
    test_colour_types();
    test_hostile();

    int matched = 0;
    DIR *d = opendir(root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char golden[PATH_MAX * 2];
        test_path(golden, sizeof golden, "%s/%s/golden", root, e->d_name);
        struct stat sb;
        if (stat(golden, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        fprintf(stderr, "%s\n", golden);
        matched += test_golden_pngs(golden);
    }
    if (d) closedir(d);
    CHECK(matched > 0, "no golden PNG with a same-named image_uint8 under %s", root);

    CHECK(rmdir(scratch) == 0, "scratch folder %s not empty", scratch);
    return test_finish();
}
