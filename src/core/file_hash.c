// File hashing with libcrypto's EVP interface; see file_hash.h.
#include "core/file_hash.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>

#include "core/error.h"
#include "core/user_cache.h"

#define HASH_CHUNK_BYTES ((size_t)1 << 20)

lcm_status file_sha256_range(const char *path, uint64_t offset, uint64_t length, char hex[65]) {
    hex[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) return lcm_fail(LCM_ERR_IO, "%s: cannot open for hashing: %s", path, strerror(errno));
    unsigned char *chunk = malloc(HASH_CHUNK_BYTES);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    lcm_status st = LCM_OK;
    if (!chunk || !ctx) {
        st = lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory for hashing", path);
        goto done;
    }
    if (offset > (uint64_t)INT64_MAX || fseeko(f, (off_t)offset, SEEK_SET) != 0) {
        st = lcm_fail(LCM_ERR_IO, "%s: cannot seek to byte %llu for hashing", path,
                      (unsigned long long)offset);
        goto done;
    }
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        st = lcm_fail(LCM_ERR_UNSUPPORTED, "%s: libcrypto has no SHA-256", path);
        goto done;
    }
    uint64_t left = length;
    while (left > 0) {
        size_t want = left < HASH_CHUNK_BYTES ? (size_t)left : HASH_CHUNK_BYTES;
        size_t got = fread(chunk, 1, want, f);
        if (got > 0) EVP_DigestUpdate(ctx, chunk, got);
        left -= got;
        if (got < want) {
            if (ferror(f)) st = lcm_fail(LCM_ERR_IO, "%s: read error while hashing", path);
            break; // end of file
        }
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (st == LCM_OK && EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 && digest_len == 32) {
        for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    } else if (st == LCM_OK) {
        st = lcm_fail(LCM_ERR_UNSUPPORTED, "%s: SHA-256 failed", path);
    }
done:
    EVP_MD_CTX_free(ctx);
    free(chunk);
    fclose(f);
    return st;
}

// The file's identity and the range, as one line of hashes.txt without the hash.
static bool identity_line(const char *path, uint64_t offset, uint64_t length, char *out, size_t size) {
    char real[PATH_MAX];
    struct stat sb;
    if (!realpath(path, real) || stat(real, &sb) != 0 || strchr(real, '\n')) return false;
    int n = snprintf(out, size, "%llu %llu %lld %lld.%09ld %llu %llu %s", (unsigned long long)offset,
                     (unsigned long long)length, (long long)sb.st_size, (long long)sb.st_mtim.tv_sec,
                     sb.st_mtim.tv_nsec, (unsigned long long)sb.st_dev, (unsigned long long)sb.st_ino, real);
    return n > 0 && (size_t)n < size;
}

// hashes.txt in the user's cache folder; *folder (PATH_MAX bytes) receives the folder.
static bool hashes_file(char *folder, char *out, size_t size) {
    if (!user_cache_folder(folder, PATH_MAX)) return false;
    int n = snprintf(out, size, "%s/hashes.txt", folder);
    return n > 0 && (size_t)n < size;
}

static bool is_hex64(const char *s) {
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return s[64] == ' ';
}

lcm_status file_sha256_remembered(const char *path, uint64_t offset, uint64_t length, char hex[65]) {
    char identity[PATH_MAX + 160], folder[PATH_MAX], list[PATH_MAX + 16], line[PATH_MAX + 256];
    bool known = identity_line(path, offset, length, identity, sizeof identity) &&
                 hashes_file(folder, list, sizeof list);
    FILE *f = known ? fopen(list, "r") : NULL;
    while (f && fgets(line, sizeof line, f)) { // "HEX IDENTITY\n"
        size_t len = strlen(line);
        if (len < 66 || line[len - 1] != '\n' || !is_hex64(line)) continue;
        line[len - 1] = '\0';
        if (strcmp(line + 65, identity)) continue;
        memcpy(hex, line, 64);
        hex[64] = '\0';
        fclose(f);
        return LCM_OK;
    }
    if (f) fclose(f);
    LCM_TRY(file_sha256_range(path, offset, length, hex));
    if (!known) return LCM_OK;
    // Make the folder (~/.cache may not exist yet), then append one line in one write.
    FILE *out = make_folders(folder) ? fopen(list, "a") : NULL;
    if (out) {
        fprintf(out, "%s %s\n", hex, identity);
        fclose(out);
    }
    return LCM_OK;
}
