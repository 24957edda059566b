// Images in, whatever their format (src/io/image_format.c, image_webp.c, image_jpeg.c): every PNG
// of the fixture set is re-encoded here, with libwebp and libjpeg, and read back through the one
// entry point that tells formats apart by their bytes:
//  - lossless WebP (RGB and RGBA) decodes to exactly the PNG's pixels;
//  - lossy WebP decodes to exactly what libwebp's own simple decoder gives for the same bytes
//    (another code path of the library), and near the PNG (PSNR >= 16 dB: the same picture; the
//    tiny models' noisy images measure 23-32 dB at quality 90, unrelated images ~10 dB);
//  - JPEG at quality 100 with 4:4:4 chroma decodes within a few levels of the PNG;
//  - the file name does not matter (a WebP named .png reads as WebP);
//  - an RGBA WebP is composited over white by lcm_image_read_composited, as controlnet_aux's HWC3;
//  - the header probe (lcm_image_probe) gives each format's size without decoding;
//  - truncated, animated, oversized and foreign (GIF, text) data are clear errors naming the
//    source and the formats accepted.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#include <webp/decode.h>
#include <webp/encode.h>

#include "io/image.h"
#include "io/image_format.h"
#include "io/image_webp.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/lcm-image-formats-XXXXXX";

static int max_abs_diff(const uint8_t *a, const uint8_t *b, size_t n) {
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > worst) worst = d;
    }
    return worst;
}

// The call must fail with `want` and a message that contains every needle.
static void expect_failure(lcm_status st, lcm_status want, const char *needle, const char *needle2,
                           const char *what) {
    const char *msg = lcm_last_error();
    CHECK(st == want && strstr(msg, needle) && (!needle2 || strstr(msg, needle2)),
          "%s: got %s '%s', expected %s naming '%s'%s%s", what, lcm_status_name(st), msg,
          lcm_status_name(want), needle, needle2 ? " and " : "", needle2 ? needle2 : "");
    fprintf(stderr, "%s -> %s\n", what, msg);
}

// Decodes `bytes` through the sniffing entry point, from memory and from a file named `name`
// (whose extension is deliberately not the format's in one case), and checks the size.
static uint8_t *decode_both_ways(const void *bytes, size_t size, const char *name, int width, int height,
                                 const char *what) {
    char path[1200];
    test_path(path, sizeof path, "%s/%s", tmpdir, name);
    test_write_file(path, bytes, size);
    lcm_image from_file = {0}, from_memory = {0};
    CHECK_OK(lcm_image_read(path, &from_file));
    CHECK_OK(lcm_image_decode(bytes, size, what, &from_memory));
    CHECK(from_file.width == width && from_file.height == height, "%s: %dx%d from the file, expected %dx%d",
          what, from_file.width, from_file.height, width, height);
    CHECK(from_memory.rgb && from_file.rgb &&
              !memcmp(from_memory.rgb, from_file.rgb, (size_t)width * height * 3),
          "%s: file and memory decodes differ", what);
    int pw = 0, ph = 0;
    CHECK_OK(lcm_image_probe(bytes, size, what, &pw, &ph));
    CHECK(pw == width && ph == height, "%s: probe says %dx%d, expected %dx%d", what, pw, ph, width, height);
    lcm_image_release(&from_memory);
    return from_file.rgb;
}

static void check_png(const char *png_path, int index) {
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    CHECK_OK(image_read_png(png_path, &rgb, &w, &h));
    if (!rgb) return;
    size_t n = (size_t)w * h * 3;
    char name[64], what[1500];

    // Lossless WebP: exactly the PNG's pixels. Named .png on purpose: bytes decide, not names.
    uint8_t *webp = NULL;
    size_t size = WebPEncodeLosslessRGB(rgb, w, h, w * 3, &webp);
    CHECK(size > 0, "%s: WebPEncodeLosslessRGB failed", png_path);
    snprintf(name, sizeof name, "lossless-%d.png", index);
    snprintf(what, sizeof what, "%s as lossless WebP", png_path);
    uint8_t *got = decode_both_ways(webp, size, name, w, h, what);
    CHECK(got && !memcmp(got, rgb, n), "%s: pixels differ (max |diff| %d)", what, got ? max_abs_diff(got, rgb, n) : -1);
    free(got);

    // Truncated lossless WebP: an error naming the source.
    snprintf(what, sizeof what, "truncated-%d.webp", index);
    lcm_image img = {0};
    expect_failure(lcm_image_decode(webp, size - size / 3, what, &img), LCM_ERR_FORMAT, what, "WebP",
                   "truncated WebP");
    CHECK(img.rgb == NULL && img.width == 0, "truncated WebP returned pixels");
    WebPFree(webp);

    // Lossy WebP: the same pixels as libwebp's simple decoder, and the same picture as the PNG.
    size = WebPEncodeRGB(rgb, w, h, w * 3, 90.0f, &webp);
    CHECK(size > 0, "%s: WebPEncodeRGB failed", png_path);
    snprintf(name, sizeof name, "lossy-%d.webp", index);
    snprintf(what, sizeof what, "%s as lossy WebP", png_path);
    got = decode_both_ways(webp, size, name, w, h, what);
    int rw = 0, rh = 0;
    uint8_t *reference = WebPDecodeRGB(webp, size, &rw, &rh);
    CHECK(reference && got && rw == w && rh == h && !memcmp(got, reference, n),
          "%s: differs from WebPDecodeRGB", what);
    if (got) {
        lcm_image a = {w, h, rgb}, b = {w, h, got};
        double psnr = 0, ssim = 0;
        CHECK_OK(lcm_image_compare(&a, &b, &psnr, &ssim));
        fprintf(stderr, "%s: PSNR %.1f dB vs the PNG, max |diff| %d\n", what, psnr, max_abs_diff(got, rgb, n));
        CHECK(psnr >= 16.0, "%s: PSNR %.1f dB vs the PNG: not the same picture", what, psnr);
    }
    WebPFree(reference);
    WebPFree(webp);
    free(got);

    // JPEG, quality 100, 4:4:4: within a few levels of the PNG everywhere.
    unsigned long jpeg_size = 0;
    unsigned char *jpeg = test_encode_jpeg(rgb, w, h, 3, 100, true, &jpeg_size);
    snprintf(name, sizeof name, "q100-%d.jpg", index);
    snprintf(what, sizeof what, "%s as JPEG", png_path);
    got = decode_both_ways(jpeg, jpeg_size, name, w, h, what);
    if (got) {
        int worst = max_abs_diff(got, rgb, n);
        fprintf(stderr, "%s: max |diff| %d levels\n", what, worst);
        CHECK(worst <= 8, "%s: decoded pixels differ by up to %d levels", what, worst);
    }
    free(got);
    free(jpeg);

    // RGBA lossless WebP with a gradient alpha: the RGB decode drops alpha (the PNG's pixels),
    // the composited read blends over white as controlnet_aux's HWC3 (float32, truncated).
    uint8_t *rgba = malloc((size_t)w * h * 4), *want = malloc(n);
    for (size_t i = 0; i < (size_t)w * h; i++) {
        uint8_t alpha = (uint8_t)((i * 7) % 256);
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = alpha;
        for (int c = 0; c < 3; c++) {
            float a = (float)alpha / 255.0f;
            float v = (float)rgb[3 * i + c] * a + 255.0f * (1.0f - a);
            want[3 * i + c] = (uint8_t)fminf(fmaxf(v, 0.0f), 255.0f);
        }
    }
    // `exact` keeps the RGB under fully transparent pixels (libwebp may otherwise rewrite it).
    WebPConfig config;
    WebPPicture picture;
    WebPMemoryWriter writer;
    CHECK(WebPConfigInit(&config) && WebPPictureInit(&picture), "libwebp init");
    config.lossless = 1;
    config.exact = 1;
    picture.use_argb = 1;
    picture.width = w;
    picture.height = h;
    WebPMemoryWriterInit(&writer);
    picture.writer = WebPMemoryWrite;
    picture.custom_ptr = &writer;
    CHECK(WebPPictureImportRGBA(&picture, rgba, w * 4) && WebPEncode(&config, &picture),
          "%s: RGBA WebP encode failed", png_path);
    snprintf(name, sizeof name, "alpha-%d.webp", index);
    snprintf(what, sizeof what, "%s as RGBA WebP", png_path);
    got = decode_both_ways(writer.mem, writer.size, name, w, h, what);
    CHECK(got && !memcmp(got, rgb, n), "%s: RGB decode is not the colour channels", what);
    free(got);
    char path[1200];
    test_path(path, sizeof path, "%s/%s", tmpdir, name);
    lcm_image composited = {0};
    CHECK_OK(lcm_image_read_composited(path, &composited));
    CHECK(composited.rgb && composited.width == w && composited.height == h &&
              !memcmp(composited.rgb, want, n),
          "%s: composited over white differs (max |diff| %d)", what,
          composited.rgb ? max_abs_diff(composited.rgb, want, n) : -1);
    lcm_image_release(&composited);
    WebPPictureFree(&picture);
    WebPMemoryWriterClear(&writer);
    free(rgba);
    free(want);
    free(rgb);
}

// A RIFF/WEBP file holding only a VP8X header: `flags` (0x02 = animation) and the canvas size.
static size_t vp8x_only(uint8_t out[30], uint8_t flags, int width, int height) {
    memset(out, 0, 30);
    memcpy(out, "RIFF", 4);
    out[4] = 22; // file size - 8
    memcpy(out + 8, "WEBPVP8X", 8);
    out[16] = 10; // chunk size
    out[20] = flags;
    out[24] = (uint8_t)((width - 1) & 0xff), out[25] = (uint8_t)((width - 1) >> 8 & 0xff),
    out[26] = (uint8_t)((width - 1) >> 16);
    out[27] = (uint8_t)((height - 1) & 0xff), out[28] = (uint8_t)((height - 1) >> 8 & 0xff),
    out[29] = (uint8_t)((height - 1) >> 16);
    return 30;
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    // Every PNG of the fixture set's golden folders (whatever the set holds).
    const char *folders[] = {"tiny-lcm/golden", "tiny-controlnet/golden", "tiny-sd15/golden"};
    int checked = 0;
    for (size_t f = 0; f < sizeof folders / sizeof *folders; f++) {
        char dir[1200];
        test_path(dir, sizeof dir, "%s/%s", test_fixtures(), folders[f]);
        if (access(dir, R_OK) != 0) continue;
        char **names = NULL;
        int count = test_list_files(dir, "", ".png", &names);
        for (int i = 0; i < count; i++) {
            char path[1400];
            test_path(path, sizeof path, "%s/%s", dir, names[i]);
            check_png(path, checked++);
        }
        test_free_list(names, count);
    }
    CHECK(checked > 0, "no fixture PNG found under %s", test_fixtures());
    fprintf(stderr, "%d fixture PNGs re-encoded as WebP and JPEG\n", checked);

    // Animated WebP: refused as such, before any pixel buffer.
    uint8_t header[30];
    size_t size = vp8x_only(header, 0x02, 64, 64);
    lcm_image img = {0};
    expect_failure(lcm_image_decode(header, size, "anim.webp", &img), LCM_ERR_UNSUPPORTED, "anim.webp",
                   "animated", "animated WebP");
    // A canvas beyond the pixel limit (16384 x 16384 > IMAGE_MAX_PIXELS): refused from the header.
    size = vp8x_only(header, 0, 16384, 16384);
    expect_failure(lcm_image_decode(header, size, "huge.webp", &img), LCM_ERR_FORMAT, "huge.webp", "16384x16384",
                   "oversized WebP");
    CHECK(img.rgb == NULL, "a refused WebP returned pixels");
    // Foreign formats and empty data: the message names the source and the formats accepted.
    const char gif[] = "GIF89a\x01\x00\x01\x00\x00\x00\x00;";
    expect_failure(lcm_image_decode(gif, sizeof gif - 1, "cat.gif", &img), LCM_ERR_FORMAT, "cat.gif",
                   "PNG, JPEG or WebP", "GIF");
    CHECK(strstr(lcm_last_error(), "GIF") != NULL, "the GIF is not named as one: %s", lcm_last_error());
    const char riff[] = "RIFF\x04\x00\x00\x00WAVEfmt ";
    expect_failure(lcm_image_decode(riff, sizeof riff - 1, "sound.wav", &img), LCM_ERR_FORMAT, "sound.wav",
                   "not WebP", "RIFF that is not WebP");
    expect_failure(lcm_image_decode("", 0, "empty upload", &img), LCM_ERR_FORMAT, "empty upload",
                   "PNG, JPEG or WebP", "empty data");
    int pw = -1, ph = -1;
    expect_failure(lcm_image_probe("hello", 5, "hello.txt", &pw, &ph), LCM_ERR_FORMAT, "hello.txt",
                   "PNG, JPEG or WebP", "probe of text");
    // A RIFF/WEBP header whose chunk is garbage.
    uint8_t junk[40];
    memset(junk, 0x5a, sizeof junk);
    memcpy(junk, "RIFF\x20\x00\x00\x00WEBPVP8 ", 16);
    expect_failure(lcm_image_decode(junk, sizeof junk, "junk.webp", &img), LCM_ERR_FORMAT, "junk.webp", "WebP",
                   "corrupt WebP");

    char cmd[1400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    test_run(cmd, NULL, 0);
    return test_finish();
}
