// PNG encoding and decoding with libspng, and atomic file replacement for the images we write.
#include "io/image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <spng.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/error.h"
#include "io/file.h"

// Memory bounds for hostile files beyond the pixel limits: the largest ancillary chunk libspng will
// accept (IDAT is streamed and not subject to it), and the most it keeps in memory for ancillary
// chunks (text, ICC profiles, ...) in all. libspng requires the first to be <= the second.
#define PNG_CHUNK_SIZE_LIMIT (16u * 1024u * 1024u)
#define PNG_CHUNK_CACHE_LIMIT (64u * 1024u * 1024u)

static lcm_status check_size(const char *what, int width, int height) {
    if (width < 1 || height < 1 || width > IMAGE_MAX_SIDE || height > IMAGE_MAX_SIDE ||
        (int64_t)width * height > IMAGE_MAX_PIXELS)
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                        "%s: image size %dx%d is out of range (1..%d per side, at most %d pixels)",
                        what, width, height, IMAGE_MAX_SIDE, IMAGE_MAX_PIXELS);
    return LCM_OK;
}

// ---- encoding --------------------------------------------------------------------------------

// PNG keywords: 1-79 printable Latin-1 characters, no leading, trailing or consecutive spaces.
static bool valid_keyword(const char *key) {
    size_t len = strlen(key);
    if (len < 1 || len > 79 || key[0] == ' ' || key[len - 1] == ' ') return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)key[i];
        if (!((c >= 32 && c <= 126) || c >= 161)) return false;
        if (c == ' ' && key[i + 1] == ' ') return false;
    }
    return true;
}

static bool is_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return false;
    return true;
}

static lcm_status spng_failure(lcm_status code, const char *what, const char *step, int err) {
    return lcm_fail(code, "%s: %s: %s", what, step, spng_strerror(err));
}

lcm_status image_encode_png(const uint8_t *rgb, int width, int height, const char *const *text_keys,
                            const char *const *text_values, int n_text, void **png, size_t *size) {
    *png = NULL;
    *size = 0;
    const char *what = "PNG encoder";
    LCM_TRY(check_size(what, width, height));
    if (!rgb || n_text < 0 || (n_text > 0 && (!text_keys || !text_values)))
        return lcm_fail(LCM_ERR_INVALID_ARGUMENT, "%s: missing pixels or text entries", what);
    for (int i = 0; i < n_text; i++) {
        if (!text_keys[i] || !text_values[i] || !valid_keyword(text_keys[i]))
            return lcm_fail(LCM_ERR_INVALID_ARGUMENT,
                            "%s: text key %d (\"%s\") is not a valid PNG keyword (1-79 printable "
                            "Latin-1 characters, no leading, trailing or double spaces)",
                            what, i, text_keys[i] ? text_keys[i] : "(null)");
    }

    struct spng_text *texts = n_text ? calloc((size_t)n_text, sizeof *texts) : NULL;
    if (n_text && !texts) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (!ctx) {
        free(texts);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
    }
    lcm_status status = LCM_OK;
    int err = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = {.width = (uint32_t)width,
                             .height = (uint32_t)height,
                             .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    if (!err) err = spng_set_ihdr(ctx, &ihdr);
    if (err) status = spng_failure(LCM_ERR_INTERNAL, what, "setting up", err);

    // Like PIL's PngInfo.add_text: tEXt when the value is plain ASCII (a subset of the Latin-1
    // that tEXt holds), otherwise uncompressed iTXt, whose text is UTF-8.
    char empty[1] = "";
    for (int i = 0; status == LCM_OK && i < n_text; i++) {
        struct spng_text *t = &texts[i];
        snprintf(t->keyword, sizeof t->keyword, "%s", text_keys[i]);
        t->type = is_ascii(text_values[i]) ? SPNG_TEXT : SPNG_ITXT;
        t->length = strlen(text_values[i]);
        t->text = (char *)text_values[i]; // libspng copies what it keeps; never written through
        t->language_tag = empty;
        t->translated_keyword = empty;
    }
    if (status == LCM_OK && n_text) {
        err = spng_set_text(ctx, texts, (uint32_t)n_text);
        if (err) status = spng_failure(LCM_ERR_INVALID_ARGUMENT, what, "text metadata", err);
    }
    if (status == LCM_OK) {
        size_t len = (size_t)width * (size_t)height * 3;
        err = spng_encode_image(ctx, rgb, len, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE);
        if (err) status = spng_failure(LCM_ERR_INTERNAL, what, "encoding", err);
    }
    if (status == LCM_OK) {
        *png = spng_get_png_buffer(ctx, size, &err);
        if (!*png || err) {
            free(*png);
            *png = NULL;
            *size = 0;
            status = spng_failure(LCM_ERR_OUT_OF_MEMORY, what, "output buffer", err);
        }
    }
    spng_ctx_free(ctx);
    free(texts);
    return status;
}

// ---- atomic file writes ----------------------------------------------------------------------

static lcm_status write_all(int fd, const void *data, size_t size, const char *path) {
    const uint8_t *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return lcm_fail(LCM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        p += n;
        size -= (size_t)n;
    }
    return LCM_OK;
}

// Opens a new, exclusive `path.tmp-XXXXXX` beside `path`; the name goes to tmp.
static int open_temporary(const char *path, char *tmp, size_t tmp_size) {
    static atomic_uint counter;
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    for (int attempt = 0; attempt < 100; attempt++) {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        uint64_t seed = (uint64_t)now.tv_nsec ^ ((uint64_t)now.tv_sec << 30) ^
                        ((uint64_t)getpid() << 16) ^
                        atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15u;
        char suffix[7];
        for (int i = 0; i < 6; i++) {
            seed = seed * 6364136223846793005u + 1442695040888963407u;
            suffix[i] = alphabet[(seed >> 33) % (sizeof alphabet - 1)];
        }
        suffix[6] = '\0';
        if (snprintf(tmp, tmp_size, "%s.tmp-%s", path, suffix) >= (int)tmp_size) {
            errno = ENAMETOOLONG;
            return -1;
        }
        // 0666 filtered by the umask: the final file gets the usual permissions.
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST) return fd;
    }
    errno = EEXIST;
    return -1;
}

// Makes the rename durable; failures are harmless (the data itself is already synced).
static void sync_parent_folder(const char *path) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

static lcm_status write_file_atomically(const char *path, const void *data, size_t size) {
    char tmp[PATH_MAX];
    int fd = open_temporary(path, tmp, sizeof tmp);
    if (fd < 0)
        return lcm_fail(LCM_ERR_IO, "%s: cannot create a temporary file beside it: %s", path,
                        strerror(errno));
    lcm_status st = write_all(fd, data, size, tmp);
    if (st == LCM_OK && fsync(fd) != 0)
        st = lcm_fail(LCM_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == LCM_OK)
        st = lcm_fail(LCM_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == LCM_OK && rename(tmp, path) != 0)
        st =
            lcm_fail(LCM_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
    if (st != LCM_OK) {
        unlink(tmp);
        return st;
    }
    sync_parent_folder(path);
    return LCM_OK;
}

lcm_status image_write_png(const char *path, const uint8_t *rgb, int width, int height,
                           const char *const *text_keys, const char *const *text_values,
                           int n_text) {
    void *png = NULL;
    size_t size = 0;
    lcm_status st =
        image_encode_png(rgb, width, height, text_keys, text_values, n_text, &png, &size);
    if (st != LCM_OK) return lcm_fail_context(st, "%s: ", path);
    st = write_file_atomically(path, png, size);
    free(png);
    return st;
}

// ---- decoding --------------------------------------------------------------------------------

// ---- the trailing IEND chunk ----------------------------------------------------------------------
// libspng stops reading at IEND's type and never reads its CRC: a PNG whose last 4 bytes are cut
// or damaged decoded as if whole. Once libspng accepted a file, its chunks are walked again here
// (lengths and types only, seeking over the data) to the IEND chunk, whose CRC is checked.

// Where the PNG's bytes are: a buffer, or a file (read at offsets).
typedef struct png_source {
    const unsigned char *bytes;
    size_t size;
    FILE *file;
} png_source;

static bool read_at(const png_source *src, uint64_t offset, void *out, size_t n) {
    if (!src->file) {
        if (offset > src->size || n > src->size - offset) return false;
        memcpy(out, src->bytes + offset, n);
        return true;
    }
    return fseeko(src->file, (off_t)offset, SEEK_SET) == 0 && fread(out, 1, n, src->file) == n;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static lcm_status check_iend(const png_source *src, const char *label) {
    uint64_t offset = 8; // after the signature
    for (;;) {
        unsigned char head[8];
        if (!read_at(src, offset, head, sizeof head))
            return lcm_fail(LCM_ERR_FORMAT, "%s: corrupt or truncated PNG: it ends before its IEND chunk", label);
        uint32_t length = be32(head);
        if (length > 0x7fffffffu)
            return lcm_fail(LCM_ERR_FORMAT, "%s: corrupt PNG: chunk length %u at byte %llu", label, length,
                            (unsigned long long)offset);
        if (memcmp(head + 4, "IEND", 4) != 0) {
            offset += 12 + (uint64_t)length; // length, type, data, CRC
            continue;
        }
        unsigned char stored[4];
        if (length != 0)
            return lcm_fail(LCM_ERR_FORMAT, "%s: corrupt PNG: its IEND chunk has %u bytes of data, expected none",
                            label, length);
        if (!read_at(src, offset + 8, stored, sizeof stored))
            return lcm_fail(LCM_ERR_FORMAT, "%s: truncated PNG: the CRC of its IEND chunk is missing", label);
        uint32_t expected = (uint32_t)crc32(crc32(0L, Z_NULL, 0), head + 4, 4);
        if (be32(stored) != expected)
            return lcm_fail(LCM_ERR_FORMAT, "%s: corrupt PNG: the CRC of its IEND chunk is %08x, expected %08x",
                            label, be32(stored), expected);
        return LCM_OK;
    }
}

// Decodes from a context whose source (buffer or file) is already set.
static lcm_status decode_rgb8(spng_ctx *ctx, const char *label, uint8_t **rgb, int *width,
                              int *height) {
    int err = spng_set_image_limits(ctx, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    if (!err) err = spng_set_chunk_limits(ctx, PNG_CHUNK_SIZE_LIMIT, PNG_CHUNK_CACHE_LIMIT);
    if (err) return spng_failure(LCM_ERR_INTERNAL, label, "setting up the PNG decoder", err);

    struct spng_ihdr ihdr;
    err = spng_get_ihdr(ctx, &ihdr);
    if (err == SPNG_EUSER_WIDTH || err == SPNG_EUSER_HEIGHT)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: PNG image is larger than %d pixels per side",
                        label, IMAGE_MAX_SIDE);
    if (err) return spng_failure(LCM_ERR_FORMAT, label, "not a valid PNG file", err);
    if ((uint64_t)ihdr.width * ihdr.height > IMAGE_MAX_PIXELS)
        return lcm_fail(LCM_ERR_UNSUPPORTED,
                        "%s: PNG image of %ux%u pixels is larger than %d pixels", label, ihdr.width,
                        ihdr.height, IMAGE_MAX_PIXELS);

    size_t len = 0;
    err = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &len);
    if (err) return spng_failure(LCM_ERR_FORMAT, label, "unsupported PNG layout", err);
    if (len != (size_t)ihdr.width * ihdr.height * 3)
        return lcm_fail(LCM_ERR_INTERNAL, "%s: unexpected decoded size %zu for %ux%u RGB", label,
                        len, ihdr.width, ihdr.height);
    uint8_t *pixels = malloc(len);
    if (!pixels)
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for %ux%u pixels", label,
                        ihdr.width, ihdr.height);
    err = spng_decode_image(ctx, pixels, len, SPNG_FMT_RGB8, 0);
    // Read on to IEND: a file cut anywhere, even after the last image row, is reported as such.
    if (!err) err = spng_decode_chunks(ctx);
    if (err) {
        free(pixels);
        return spng_failure(LCM_ERR_FORMAT, label, "corrupt or truncated PNG", err);
    }
    *rgb = pixels;
    *width = (int)ihdr.width;
    *height = (int)ihdr.height;
    return LCM_OK;
}

lcm_status image_decode_png(const void *png, size_t size, const char *label, uint8_t **rgb,
                            int *width, int *height) {
    *rgb = NULL;
    *width = *height = 0;
    if (!label) label = "PNG data";
    if (!png || size == 0) return lcm_fail(LCM_ERR_FORMAT, "%s: empty PNG data", label);
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    int err = spng_set_png_buffer(ctx, png, size);
    lcm_status st = err ? spng_failure(LCM_ERR_INTERNAL, label, "reading", err)
                        : decode_rgb8(ctx, label, rgb, width, height);
    spng_ctx_free(ctx);
    if (st == LCM_OK) st = check_iend(&(png_source){.bytes = png, .size = size}, label);
    if (st != LCM_OK) {
        free(*rgb);
        *rgb = NULL;
        *width = *height = 0;
    }
    return st;
}

lcm_status image_read_png(const char *path, uint8_t **rgb, int *width, int *height) {
    *rgb = NULL;
    *width = *height = 0;
    FILE *f;
    LCM_TRY(io_fopen_regular(path, &f, NULL));
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        fclose(f);
        return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    // Streaming from the file keeps memory at the decoder's working set plus the pixels.
    int err = spng_set_png_file(ctx, f);
    lcm_status st = err ? spng_failure(LCM_ERR_IO, path, "reading", err)
                        : decode_rgb8(ctx, path, rgb, width, height);
    spng_ctx_free(ctx);
    if (st == LCM_OK) st = check_iend(&(png_source){.file = f}, path);
    fclose(f);
    if (st != LCM_OK) {
        free(*rgb);
        *rgb = NULL;
        *width = *height = 0;
    }
    return st;
}

lcm_status image_png_text(const void *png, size_t size, const char *label, const char *key,
                          char **value) {
    *value = NULL;
    if (!label) label = "PNG data";
    if (!png || size == 0) return lcm_fail(LCM_ERR_FORMAT, "%s: empty PNG data", label);
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
    uint8_t *rgb = NULL;
    int width = 0, height = 0;
    // Decoding the whole file validates it and makes libspng read the text chunks after IDAT too.
    int err = spng_set_png_buffer(ctx, png, size);
    lcm_status st = err ? spng_failure(LCM_ERR_INTERNAL, label, "reading", err)
                        : decode_rgb8(ctx, label, &rgb, &width, &height);
    if (st == LCM_OK) st = check_iend(&(png_source){.bytes = png, .size = size}, label);
    free(rgb);
    uint32_t count = 0;
    struct spng_text *texts = NULL;
    if (st == LCM_OK) {
        err = spng_get_text(ctx, NULL, &count);
        if (err == SPNG_ECHUNKAVAIL) count = 0; // no text chunks at all
        else if (err) st = spng_failure(LCM_ERR_FORMAT, label, "reading the text chunks", err);
    }
    if (st == LCM_OK && count > 0) {
        texts = calloc(count, sizeof *texts);
        if (!texts) st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
        else if ((err = spng_get_text(ctx, texts, &count)))
            st = spng_failure(LCM_ERR_FORMAT, label, "reading the text chunks", err);
    }
    for (uint32_t i = 0; st == LCM_OK && i < count; i++) {
        if (strcmp(texts[i].keyword, key) != 0) continue;
        free(*value); // a later chunk with the same keyword wins, as in PIL's Image.info
        *value = malloc(texts[i].length + 1);
        if (!*value) {
            st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", label);
            break;
        }
        memcpy(*value, texts[i].text, texts[i].length);
        (*value)[texts[i].length] = '\0';
    }
    free(texts);
    spng_ctx_free(ctx);
    return st;
}
