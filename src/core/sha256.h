// SHA-256 (FIPS 180-4), used to verify downloaded model files against the hub's sha256 ETags.
// Streaming: init, update any number of times with any chunk sizes, final.
#ifndef LCM_CORE_SHA256_H
#define LCM_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct sha256_ctx {
    uint32_t state[8];
    uint64_t total_bytes;
    uint8_t block[64];
    size_t block_len; // bytes waiting in block[]
} sha256_ctx;

void sha256_init(sha256_ctx *ctx);
void sha256_update(sha256_ctx *ctx, const void *data, size_t len);
// Writes the 32-byte digest; the context must be re-initialised before reuse.
void sha256_final(sha256_ctx *ctx, uint8_t digest[32]);
// The digest as 64 lowercase hex characters + NUL.
void sha256_hex(const uint8_t digest[32], char hex[65]);

#endif
