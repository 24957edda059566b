// SHA-256 against the FIPS 180-4 / NIST example vectors, and streaming in odd chunk sizes gives the
// same digest as one call (the downloader hashes whatever chunk sizes libcurl hands it).
#include <stdlib.h>
#include <string.h>

#include "core/sha256.h"
#include "testutil.h"

static void digest_of(const void *data, size_t len, size_t chunk, char hex[65]) {
    sha256_ctx ctx;
    sha256_init(&ctx);
    const unsigned char *p = data;
    for (size_t done = 0; done < len;) {
        size_t n = len - done < chunk ? len - done : chunk;
        sha256_update(&ctx, p + done, n);
        done += n;
    }
    uint8_t digest[32];
    sha256_final(&ctx, digest);
    sha256_hex(digest, hex);
}

int main(void) {
    static const struct { const char *text; const char *hex; } vectors[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
        {"The quick brown fox jumps over the lazy dog",
         "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"},
    };
    char hex[65];
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        size_t len = strlen(vectors[i].text);
        for (size_t chunk = 1; chunk <= 128; chunk = chunk * 3 + 1) {
            digest_of(vectors[i].text, len, chunk, hex);
            CHECK(!strcmp(hex, vectors[i].hex), "vector %zu chunk %zu: %s, want %s", i, chunk, hex,
                  vectors[i].hex);
        }
    }
    // One million 'a' (FIPS 180-2 appendix B.3), fed in 1000 odd-sized pieces.
    size_t len = 1000000;
    char *a = malloc(len);
    memset(a, 'a', len);
    digest_of(a, len, 997, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"),
          "million a: %s", hex);
    // Every length from 0 to 200 around the padding boundaries: chunked == one call.
    for (size_t n = 0; n <= 200; n++) {
        char whole[65], pieces[65];
        digest_of(a, n, n ? n : 1, whole);
        digest_of(a, n, 7, pieces);
        CHECK(!strcmp(whole, pieces), "length %zu: chunked %s != whole %s", n, pieces, whole);
    }
    free(a);
    return test_finish();
}
