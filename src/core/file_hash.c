// File hashing with libcrypto's EVP interface; see file_hash.h.
#include "core/file_hash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "core/error.h"

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
