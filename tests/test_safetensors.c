// The safetensors reader and weight sets against hostile and valid files.
//
// Every malformed file below must be refused with LCM_ERR_FORMAT (or LCM_ERR_IO for what cannot be
// read at all) and a message that names the file and, where one is involved, the tensor. The valid
// files are written here byte by byte, so the expected values are known exactly; the real fixture
// files must all open.
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "io/weights.h"
#include "testutil.h"

// ---- building files ---------------------------------------------------------------------------

// A safetensors image: u64 LE header length, the header, the data. Caller frees.
static unsigned char *make_file(const char *header, const void *data, size_t data_size,
                                size_t *size) {
    size_t header_len = strlen(header);
    *size = 8 + header_len + data_size;
    unsigned char *bytes = malloc(*size ? *size : 1);
    if (!bytes) exit(2);
    for (int i = 0; i < 8; i++) bytes[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    memcpy(bytes + 8, header, header_len);
    if (data_size) memcpy(bytes + 8 + header_len, data, data_size);
    return bytes;
}

static void write_bytes(const char *path, const void *bytes, size_t size) {
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(bytes, 1, size, fp) != size || fclose(fp) != 0) {
        fprintf(stderr, "FATAL: cannot write %s\n", path);
        exit(2);
    }
}

static void write_st(const char *path, const char *header, const void *data, size_t data_size) {
    size_t size;
    unsigned char *bytes = make_file(header, data, data_size, &size);
    write_bytes(path, bytes, size);
    free(bytes);
}

static char temp_root[] = "/tmp/lcm_test_safetensors_XXXXXX";

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void make_dir(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "FATAL: cannot create %s\n", path);
        exit(2);
    }
}

// ---- checking failures ------------------------------------------------------------------------

static bool contains(const char *haystack, const char *needle) {
    return needle == NULL || strstr(haystack, needle) != NULL;
}

// Opens the bytes from memory under `label` and expects `want` with a message holding the label
// and `detail` (a tensor name or a phrase; NULL for none).
static void expect_bytes_fail(const char *label, const void *bytes, size_t size, lcm_status want,
                              const char *detail) {
    st_file *f = (st_file *)1;
    lcm_clear_error();
    lcm_status st = st_open_memory(bytes, size, label, &f);
    const char *msg = lcm_last_error();
    CHECK(st == want, "%s: got status '%s', want '%s' (message: %s)", label, lcm_status_name(st),
          lcm_status_name(want), msg);
    CHECK(f == NULL, "%s: failed open left a file handle", label);
    CHECK(contains(msg, label), "%s: message does not name the file: %s", label, msg);
    CHECK(contains(msg, detail), "%s: message does not mention '%s': %s", label, detail, msg);
    if (st == LCM_OK) st_close(f);
}

// Same for a header (plus data) built by make_file; the message must also hold `detail` (a quoted
// tensor name, a metadata key) unless it is NULL.
static void expect_header_fail(const char *label, const char *header, size_t data_size,
                               const char *detail) {
    unsigned char *data = calloc(data_size ? data_size : 1, 1);
    size_t size;
    unsigned char *bytes = make_file(header, data, data_size, &size);
    expect_bytes_fail(label, bytes, size, LCM_ERR_FORMAT, detail);
    free(bytes);
    free(data);
}

static void test_truncated_and_bad_lengths(void) {
    unsigned char bytes[64] = {0};
    expect_bytes_fail("empty.safetensors", bytes, 0, LCM_ERR_FORMAT, "too short");
    expect_bytes_fail("five_bytes.safetensors", bytes, 5, LCM_ERR_FORMAT, "too short");

    // Header length 40 but only 10 header bytes follow.
    bytes[0] = 40;
    memcpy(bytes + 8, "{\"a\":{}}  ", 10);
    expect_bytes_fail("header_past_eof.safetensors", bytes, 18, LCM_ERR_FORMAT, "past the end");

    memset(bytes, 0, sizeof bytes);
    bytes[7] = 0x80; // 2^63
    memcpy(bytes + 8, "{}", 2);
    expect_bytes_fail("header_2e63.safetensors", bytes, 10, LCM_ERR_FORMAT, "out of range");
    memset(bytes, 0xff, 8); // 2^64 - 1
    expect_bytes_fail("header_max.safetensors", bytes, 10, LCM_ERR_FORMAT, "out of range");

    memset(bytes, 0, 8);
    expect_bytes_fail("header_len0.safetensors", bytes, 10, LCM_ERR_FORMAT, "out of range");
    bytes[0] = 1;
    expect_bytes_fail("header_len1.safetensors", bytes, 10, LCM_ERR_FORMAT, "out of range");
}

static void test_bad_json(void) {
    expect_header_fail("not_json.safetensors", "this is not JSON", 0, NULL);
    expect_header_fail("truncated_json.safetensors", "{\"w\": {\"dtype\": \"F32\"", 0, NULL);
    expect_header_fail("json_array.safetensors", "[1, 2, 3]", 0, NULL);
    expect_header_fail("json_string.safetensors", "\"hello\"", 0, NULL);
    expect_header_fail("json_number.safetensors", "12345678", 0, NULL);
    expect_header_fail("json_null.safetensors", "null", 0, NULL);
    // Header bytes after the JSON value that are not padding.
    expect_header_fail("json_trailing.safetensors", "{}  garbage", 0, NULL);
}

static void test_bad_entries(void) {
    expect_header_fail("entry_number.safetensors", "{\"w\": 5}", 0, "\'w\'");
    expect_header_fail("entry_array.safetensors", "{\"w\": [\"F32\", [1], [0, 4]]}", 4, "\'w\'");
    expect_header_fail("no_dtype.safetensors", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}",
                       4, "\'w\'");
    expect_header_fail("dtype_number.safetensors",
                       "{\"w\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "\'w\'");
    expect_header_fail("no_shape.safetensors", "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}",
                       4, "\'w\'");
    expect_header_fail("shape_object.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": {}, \"data_offsets\": [0, 4]}}", 4, "\'w\'");
    expect_header_fail("no_offsets.safetensors", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4,
                       "w");
    expect_header_fail("fp8.safetensors",
                       "{\"w\": {\"dtype\": \"F8_E4M3\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 4,
                       "w");
    expect_header_fail("q4.safetensors",
                       "{\"w\": {\"dtype\": \"Q4\", \"shape\": [8], \"data_offsets\": [0, 4]}}", 4, "\'w\'");
    expect_header_fail("lowercase_dtype.safetensors",
                       "{\"w\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "\'w\'");
}

static void test_bad_shapes(void) {
    expect_header_fail("shape_negative.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4, "\'w\'");
    expect_header_fail("shape_fraction.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, "\'w\'");
    expect_header_fail("shape_string.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}}", 4,
                       "w");
    expect_header_fail("shape_null.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [null], \"data_offsets\": [0, 4]}}", 4,
                       "w");
    expect_header_fail("shape_nested.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [[1]], \"data_offsets\": [0, 4]}}", 4,
                       "w");
    expect_header_fail("shape_1e300.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1e300], \"data_offsets\": [0, 4]}}", 4,
                       "w");
    expect_header_fail("nine_dims.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], "
                       "\"data_offsets\": [0, 4]}}",
                       4, "\'w\'");
    // 2^40 * 2^40 elements overflow a 64-bit count.
    expect_header_fail("numel_overflow.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1099511627776, 1099511627776], "
                       "\"data_offsets\": [0, 4]}}",
                       4, "\'w\'");
    // 2^62 elements fit, but 2^62 * 4 bytes do not.
    expect_header_fail("bytes_overflow.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 1073741824], "
                       "\"data_offsets\": [0, 4]}}",
                       4, "\'w\'");
    // 2^63 F16 elements are 2^64 bytes, which wraps to exactly 0: must not look like an empty tensor.
    expect_header_fail("bytes_wrap_to_zero.safetensors",
                       "{\"w\": {\"dtype\": \"F16\", \"shape\": [4294967296, 2147483648], "
                       "\"data_offsets\": [0, 0]}}",
                       0, "\'w\'");
}

static void test_bad_offsets(void) {
    expect_header_fail("offsets_reversed.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8, "\'w\'");
    expect_header_fail("offsets_past_end.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4, "\'w\'");
    expect_header_fail("offsets_huge.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], "
                       "\"data_offsets\": [18446744073709551612, 18446744073709551616]}}",
                       4, "\'w\'");
    expect_header_fail("offsets_negative.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4, "\'w\'");
    expect_header_fail("offsets_three.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 8,
                       "w");
    expect_header_fail("offsets_strings.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [\"0\", \"4\"]}}", 4,
                       "w");
    // 8 bytes hold two F32 values, not three, and not one F64 pretending to be F16.
    expect_header_fail("size_mismatch.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, "\'w\'");
    expect_header_fail("wrong_dtype_size.safetensors",
                       "{\"w\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8, "\'w\'");
}

static void test_overlaps_and_duplicates(void) {
    expect_header_fail("overlap.safetensors",
                       "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                       12, "\'a\'");
    expect_header_fail("same_range.safetensors",
                       "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"b\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [0, 8]}}",
                       8, "\'b\'");
    // The overlap of a and c hides behind the empty tensor e, which sorts between them.
    expect_header_fail("overlap_behind_empty.safetensors",
                       "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                       " \"e\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [4, 4]},"
                       " \"c\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 12]}}",
                       16, "\'c\'");
    // A tensor inside a larger one, with another after both.
    expect_header_fail("nested.safetensors",
                       "{\"big\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                       " \"in\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]},"
                       " \"after\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [16, 20]}}",
                       20, "\'in\'");
    expect_header_fail("duplicate.safetensors",
                       "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
                       " \"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
                       8, "\'w\'");
    expect_header_fail("duplicate_metadata.safetensors",
                       "{\"__metadata__\": {}, \"__metadata__\": {\"a\": \"b\"}}", 0, NULL);
}

static void test_bad_metadata(void) {
    expect_header_fail("metadata_array.safetensors", "{\"__metadata__\": [\"a\"]}", 0, NULL);
    expect_header_fail("metadata_string.safetensors", "{\"__metadata__\": \"info\"}", 0, NULL);
    expect_header_fail("metadata_number_value.safetensors", "{\"__metadata__\": {\"info\": 3}}", 0,
                       "\"info\"");
    expect_header_fail("metadata_object_value.safetensors",
                       "{\"__metadata__\": {\"ok\": \"x\", \"info\": {\"seed\": 1}}}", 0, "\"info\"");
    expect_header_fail("metadata_null_value.safetensors", "{\"__metadata__\": {\"info\": null}}", 0,
                       "\"info\"");
}

// Through st_open on real files: what cannot be read is LCM_ERR_IO, and the path is named.
static void test_files_on_disk(void) {
    char path[512], dir[512];
    test_path(path, sizeof path, "%s/empty.safetensors", temp_root);
    write_bytes(path, "", 0);
    st_file *f = NULL;
    lcm_status st = st_open(path, &f);
    CHECK(st == LCM_ERR_FORMAT && f == NULL && contains(lcm_last_error(), path),
          "empty file on disk: %s: %s", lcm_status_name(st), lcm_last_error());

    test_path(path, sizeof path, "%s/does_not_exist.safetensors", temp_root);
    st = st_open(path, &f);
    CHECK(st == LCM_ERR_IO && f == NULL && contains(lcm_last_error(), path),
          "missing file: %s: %s", lcm_status_name(st), lcm_last_error());

    test_path(dir, sizeof dir, "%s/a_folder.safetensors", temp_root);
    make_dir(dir);
    st = st_open(dir, &f);
    CHECK(st == LCM_ERR_IO && f == NULL && contains(lcm_last_error(), dir), "folder: %s: %s",
          lcm_status_name(st), lcm_last_error());

    // A file truncated in the middle of its data.
    test_path(path, sizeof path, "%s/truncated.safetensors", temp_root);
    write_st(path, "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", "abcdefgh",
             8);
    st = st_open(path, &f);
    CHECK(st == LCM_ERR_FORMAT && f == NULL && contains(lcm_last_error(), path) &&
              contains(lcm_last_error(), "'w'"),
          "truncated data: %s: %s", lcm_status_name(st), lcm_last_error());
}

// ---- valid files --------------------------------------------------------------------------------

// float16 reference by the textbook formula, independent of the bit tricks in st_f16_to_f32.
static double f16_reference(uint16_t h) {
    int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
    double magnitude;
    if (exponent == 31) magnitude = mantissa ? NAN : INFINITY;
    else if (exponent == 0) magnitude = ldexp(mantissa, -24);
    else magnitude = ldexp(1024 + mantissa, exponent - 25);
    return sign ? -magnitude : magnitude;
}

static void test_f16_every_value(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        double want = f16_reference((uint16_t)h);
        float got = st_f16_to_f32((uint16_t)h);
        bool same = isnan(want) ? isnan(got) : (double)got == want && !signbit(got) == !signbit(want);
        if (!same && bad++ < 5)
            fprintf(stderr, "f16 0x%04x: got %.9g want %.9g\n", (unsigned)h, got, want);
    }
    CHECK(bad == 0, "st_f16_to_f32 wrong for %d of 65536 half values", bad);
}

static void test_bf16_values(void) {
    const struct {
        uint16_t bits;
        double want;
    } cases[] = {{0x3f80, 1.0}, {0xc0a0, -5.0}, {0x0000, 0.0}, {0x4049, 3.140625},
                 {0x0001, 0x1p-133}, {0x7f80, INFINITY}, {0xff80, -INFINITY}, {0x7f7f, 0x1.fep127}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float got = st_bf16_to_f32(cases[i].bits);
        CHECK((double)got == cases[i].want, "bf16 0x%04x: got %.9g want %.9g", cases[i].bits, got,
              cases[i].want);
    }
    CHECK(isnan(st_bf16_to_f32(0x7fc0)), "bf16 0x7fc0 is NaN");
    CHECK(signbit(st_bf16_to_f32(0x8000)) && st_bf16_to_f32(0x8000) == 0.0f, "bf16 -0");
}

// One file with a tensor of each dtype the models meet; the data area is laid out by hand.
static void test_all_dtypes(void) {
    unsigned char data[256];
    size_t at = 0;
#define PUT(value, type)                                                                           \
    do {                                                                                           \
        type v_ = (value);                                                                         \
        memcpy(data + at, &v_, sizeof v_);                                                         \
        at += sizeof v_;                                                                           \
    } while (0)
    const float f32[4] = {1.5f, -0.25f, 3.0e38f, -1e-40f}; // [0, 16)
    for (int i = 0; i < 4; i++) PUT(f32[i], float);
    const uint16_t f16[8] = {0x3c00, 0xc000, 0x0001, 0x83ff, 0x7bff, 0x7c00, 0xfc00, 0x7e00}; // [16, 32)
    for (int i = 0; i < 8; i++) PUT(f16[i], uint16_t);
    const uint16_t bf16[2] = {0x3f80, 0xc0a0}; // [32, 36)
    for (int i = 0; i < 2; i++) PUT(bf16[i], uint16_t);
    PUT(0, uint32_t); // [36, 40): unused gap, allowed
    const double f64[3] = {0.1, -2.5, 1e-300}; // [40, 64)
    for (int i = 0; i < 3; i++) PUT(f64[i], double);
    const int64_t i64[3] = {INT64_MIN, -1, 1234567890123}; // [64, 88)
    for (int i = 0; i < 3; i++) PUT(i64[i], int64_t);
    const int32_t i32[2] = {-7, INT32_MAX}; // [88, 96)
    for (int i = 0; i < 2; i++) PUT(i32[i], int32_t);
    const uint8_t u8[3] = {0, 128, 255}; // [96, 99)
    for (int i = 0; i < 3; i++) PUT(u8[i], uint8_t);
    const uint8_t bools[2] = {1, 0}; // [99, 101)
    for (int i = 0; i < 2; i++) PUT(bools[i], uint8_t);
    PUT(-3, int8_t);          // [101, 102)
    PUT(65535, uint16_t);     // [102, 104)
    PUT(-300, int16_t);       // [104, 106)
    PUT(4000000000u, uint32_t); // [106, 110)
    PUT(7, uint64_t);           // [110, 118)
#undef PUT
    const char *header =
        "{\"__metadata__\": {\"info\": \"{\\\"seed\\\": 42}\", \"format\": \"pt\"},"
        " \"f32\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]},"
        " \"f16\": {\"dtype\": \"F16\", \"shape\": [8], \"data_offsets\": [16, 32]},"
        " \"bf16\": {\"dtype\": \"BF16\", \"shape\": [1, 2], \"data_offsets\": [32, 36]},"
        " \"f64\": {\"dtype\": \"F64\", \"shape\": [3], \"data_offsets\": [40, 64]},"
        " \"i64\": {\"dtype\": \"I64\", \"shape\": [3], \"data_offsets\": [64, 88]},"
        " \"i32\": {\"dtype\": \"I32\", \"shape\": [2, 1], \"data_offsets\": [88, 96]},"
        " \"u8\": {\"dtype\": \"U8\", \"shape\": [1, 1, 3], \"data_offsets\": [96, 99]},"
        " \"bool\": {\"dtype\": \"BOOL\", \"shape\": [2], \"data_offsets\": [99, 101]},"
        " \"i8\": {\"dtype\": \"I8\", \"shape\": [], \"data_offsets\": [101, 102]},"
        " \"u16\": {\"dtype\": \"U16\", \"shape\": [1], \"data_offsets\": [102, 104]},"
        " \"i16\": {\"dtype\": \"I16\", \"shape\": [1], \"data_offsets\": [104, 106]},"
        " \"u32\": {\"dtype\": \"U32\", \"shape\": [1], \"data_offsets\": [106, 110]},"
        " \"u64\": {\"dtype\": \"U64\", \"shape\": [1], \"data_offsets\": [110, 118]},"
        " \"empty\": {\"dtype\": \"F32\", \"shape\": [0, 5], \"data_offsets\": [118, 118]},"
        " \"empty_at_0\": {\"dtype\": \"I64\", \"shape\": [3, 0], \"data_offsets\": [0, 0]}}"
        "      ";
    char path[512];
    test_path(path, sizeof path, "%s/all_dtypes.safetensors", temp_root);
    write_st(path, header, data, at);
    st_file *f = NULL;
    CHECK_OK(st_open(path, &f));
    if (!f) return;
    CHECK(st_count(f) == 15, "15 tensors, got %zu", st_count(f));
    CHECK(!strcmp(st_path(f), path), "st_path");
    const char *info = st_metadata(f, "info");
    CHECK(info && !strcmp(info, "{\"seed\": 42}"), "metadata info = %s", info ? info : "(null)");
    CHECK(st_metadata(f, "format") && !strcmp(st_metadata(f, "format"), "pt"), "metadata format");
    CHECK(st_metadata(f, "missing") == NULL, "absent metadata key is NULL");
    CHECK(st_find(f, "missing") == NULL && st_find(f, "") == NULL && st_find(f, "f3") == NULL &&
              st_find(f, "f32x") == NULL,
          "absent tensors are NULL");
    CHECK(st_find(f, "__metadata__") == NULL, "__metadata__ is not a tensor");
    CHECK(st_at(f, st_count(f)) == NULL, "st_at past the end is NULL");
    // st_at walks the tensors in data order.
    for (size_t i = 1; i < st_count(f); i++)
        CHECK((const char *)st_at(f, i - 1)->data <= (const char *)st_at(f, i)->data,
              "st_at order at %zu", i);

    float out[16];
    int64_t ints[16];
    const st_tensor *t = st_find(f, "f32");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->numel == 4 &&
              t->nbytes == 16,
          "f32 descriptor");
    if (t) {
        CHECK_OK(st_read_f32(f, t, out));
        CHECK(!memcmp(out, f32, sizeof f32), "f32 values are copied bit for bit");
        lcm_status st = st_read_i64(f, t, ints);
        CHECK(st == LCM_ERR_UNSUPPORTED && contains(lcm_last_error(), "'f32'") &&
                  contains(lcm_last_error(), path),
              "st_read_i64 on F32: %s", lcm_last_error());
    }
    t = st_find(f, "f16");
    CHECK(t != NULL, "f16 present");
    if (t) {
        CHECK_OK(st_read_f32(f, t, out));
        const double want[8] = {1.0, -2.0, 0x1p-24, -1023 * 0x1p-24, 65504.0, INFINITY, -INFINITY};
        for (int i = 0; i < 7; i++)
            CHECK((double)out[i] == want[i], "f16[%d] = %.9g, want %.9g", i, out[i], want[i]);
        CHECK(isnan(out[7]), "f16[7] NaN");
    }
    t = st_find(f, "bf16");
    if (t) {
        CHECK_OK(st_read_f32(f, t, out));
        CHECK(out[0] == 1.0f && out[1] == -5.0f, "bf16 values %g %g", out[0], out[1]);
    }
    CHECK(t != NULL, "bf16 present");
    t = st_find(f, "f64");
    if (t) {
        CHECK_OK(st_read_f32(f, t, out));
        CHECK(out[0] == (float)0.1 && out[1] == -2.5f && out[2] == 0.0f, "f64 values %.9g %g %g",
              out[0], out[1], out[2]);
    }
    CHECK(t != NULL, "f64 present");
    t = st_find(f, "i64");
    if (t) {
        CHECK_OK(st_read_i64(f, t, ints));
        CHECK(ints[0] == INT64_MIN && ints[1] == -1 && ints[2] == 1234567890123, "i64 values");
        CHECK_OK(st_read_f32(f, t, out));
        CHECK(out[0] == -0x1p63f && out[1] == -1.0f && out[2] == (float)1234567890123, "i64 as f32");
    }
    CHECK(t != NULL, "i64 present");
    t = st_find(f, "i32");
    if (t) {
        CHECK_OK(st_read_i64(f, t, ints));
        CHECK(ints[0] == -7 && ints[1] == INT32_MAX, "i32 values");
        CHECK_OK(st_read_f32(f, t, out));
        CHECK(out[0] == -7.0f, "i32 as f32");
    }
    CHECK(t != NULL, "i32 present");
    t = st_find(f, "u8");
    if (t) {
        CHECK(t->ndim == 3 && t->shape[2] == 3, "u8 shape");
        CHECK_OK(st_read_i64(f, t, ints));
        CHECK(ints[0] == 0 && ints[1] == 128 && ints[2] == 255, "u8 values");
        CHECK_OK(st_read_f32(f, t, out));
        CHECK(out[2] == 255.0f, "u8 as f32");
    }
    CHECK(t != NULL, "u8 present");
    t = st_find(f, "bool");
    if (t) {
        CHECK_OK(st_read_i64(f, t, ints));
        CHECK(ints[0] == 1 && ints[1] == 0, "bool values");
    }
    CHECK(t != NULL, "bool present");
    const struct {
        const char *name;
        int64_t want;
    } small_ints[] = {{"i8", -3}, {"u16", 65535}, {"i16", -300}, {"u32", 4000000000}};
    for (size_t i = 0; i < 4; i++) {
        t = st_find(f, small_ints[i].name);
        CHECK(t != NULL, "%s present", small_ints[i].name);
        if (!t) continue;
        CHECK_OK(st_read_i64(f, t, ints));
        CHECK(ints[0] == small_ints[i].want, "%s = %lld", small_ints[i].name, (long long)ints[0]);
    }
    t = st_find(f, "i8");
    CHECK(t && t->ndim == 0 && t->numel == 1, "a scalar has ndim 0 and one element");
    t = st_find(f, "u64");
    if (t) {
        CHECK(st_read_f32(f, t, out) == LCM_ERR_UNSUPPORTED && contains(lcm_last_error(), "'u64'"),
              "U64 as f32 refused: %s", lcm_last_error());
        CHECK(st_read_i64(f, t, ints) == LCM_ERR_UNSUPPORTED && contains(lcm_last_error(), "'u64'"),
              "U64 as i64 refused: %s", lcm_last_error());
    }
    // Empty tensors: zero elements, zero bytes; reads succeed and touch nothing, type checks still apply.
    const st_tensor *empty = st_find(f, "empty");
    CHECK(empty && empty->numel == 0 && empty->nbytes == 0 && empty->ndim == 2 &&
              empty->shape[1] == 5,
          "empty tensor descriptor");
    if (empty) {
        CHECK_OK(st_read_f32(f, empty, out));
        CHECK(st_read_i64(f, empty, ints) == LCM_ERR_UNSUPPORTED, "empty F32 is still not an integer");
    }
    const st_tensor *empty0 = st_find(f, "empty_at_0");
    CHECK(empty0 && empty0->numel == 0, "empty tensor at offset 0 beside f32");
    if (empty0) CHECK_OK(st_read_i64(f, empty0, ints));

    // st_load_f32: shape checks name both shapes.
    float *loaded = NULL;
    CHECK_OK(st_load_f32(f, "f32", 2, (const int64_t[]){2, 2}, &loaded));
    CHECK(loaded && loaded[0] == 1.5f && loaded[3] == f32[3], "st_load_f32 values");
    free(loaded);
    CHECK_OK(st_load_f32(f, "f16", -1, NULL, &loaded));
    CHECK(loaded && loaded[0] == 1.0f, "st_load_f32 any shape converts");
    free(loaded);
    lcm_status st = st_load_f32(f, "f32", 2, (const int64_t[]){4, 1}, &loaded);
    CHECK(st == LCM_ERR_FORMAT && loaded == NULL && contains(lcm_last_error(), "[2, 2]") &&
              contains(lcm_last_error(), "[4, 1]") && contains(lcm_last_error(), "'f32'"),
          "shape mismatch message: %s", lcm_last_error());
    st = st_load_f32(f, "f32", 1, (const int64_t[]){4}, &loaded);
    CHECK(st == LCM_ERR_FORMAT && loaded == NULL, "rank mismatch refused");
    st = st_load_f32(f, "nope", -1, NULL, &loaded);
    CHECK(st == LCM_ERR_FORMAT && loaded == NULL && contains(lcm_last_error(), "'nope'") &&
              contains(lcm_last_error(), path),
          "missing tensor message: %s", lcm_last_error());
    st = st_load_f32(f, "u64", -1, NULL, &loaded);
    CHECK(st == LCM_ERR_UNSUPPORTED && loaded == NULL, "st_load_f32 of U64 refused");
    st_close(f);
}

static void test_empty_headers(void) {
    // `{}` padded with spaces as writers do, with or without data bytes after it.
    const char *headers[] = {"{}", "{}      ", " { } ", "{\"__metadata__\": {}}"};
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        size_t size;
        unsigned char *bytes = make_file(headers[i], "xyz", i % 2 ? 3 : 0, &size);
        st_file *f = NULL;
        CHECK_OK(st_open_memory(bytes, size, "empty_header", &f));
        CHECK(f && st_count(f) == 0 && st_find(f, "a") == NULL && st_metadata(f, "info") == NULL,
              "empty header '%s' has no tensors", headers[i]);
        st_close(f);
        free(bytes);
    }
    st_close(NULL); // allowed
}

// ---- the fixture files ------------------------------------------------------------------------

static int fixture_files, fixture_tensors;

static int open_fixture(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)ftw;
    size_t len = strlen(path), suffix = strlen(".safetensors");
    if (flag != FTW_F || len < suffix || strcmp(path + len - suffix, ".safetensors")) return 0;
    fixture_files++;
    st_file *f = NULL;
    CHECK_OK(st_open(path, &f));
    if (!f) return 0;
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        fixture_tensors++;
        CHECK(st_find(f, t->name) == t, "%s: st_find('%s') finds st_at(%zu)", path, t->name, i);
        if (t->dtype == ST_U64) continue;
        float *values = malloc(t->numel ? (size_t)t->numel * sizeof *values : 1);
        CHECK_OK(st_read_f32(f, t, values));
        free(values);
    }
    st_close(f);
    return 0;
}

static void test_fixture_files(void) {
    const char *root = test_fixtures();
    CHECK(nftw(root, open_fixture, 16, FTW_PHYS) == 0, "walking %s", root);
    CHECK(fixture_files > 0, "no .safetensors file under %s", root);
    fprintf(stderr, "opened %d fixture .safetensors files, %d tensors\n", fixture_files,
            fixture_tensors);
}

// ---- weight sets: shards and variants -----------------------------------------------------------

// A one-tensor F32 file holding `values`.
static void write_one_tensor(const char *path, const char *name, const float *values, int n) {
    char header[256];
    snprintf(header, sizeof header,
             "{\"%s\": {\"dtype\": \"F32\", \"shape\": [%d], \"data_offsets\": [0, %d]}}", name, n,
             4 * n);
    write_st(path, header, values, (size_t)n * 4);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

static void expect_weights_fail(const char *dir, const char *variant, lcm_status want,
                                const char *detail1, const char *detail2) {
    weight_set *ws = (weight_set *)1;
    lcm_status st = weight_set_open(dir, "diffusion_pytorch_model", variant, &ws);
    const char *msg = lcm_last_error();
    CHECK(st == want && ws == NULL && contains(msg, detail1) && contains(msg, detail2),
          "%s: got '%s' want '%s'; message must mention '%s' and '%s': %s", dir, lcm_status_name(st),
          lcm_status_name(want), detail1, detail2 ? detail2 : "", msg);
    if (st == LCM_OK) weight_set_close(ws);
}

static void test_sharded(void) {
    char dir[512], path[600], index[600];
    test_path(dir, sizeof dir, "%s/sharded", temp_root);
    make_dir(dir);
    const float a[3] = {1, 2, 3}, b[2] = {-4, 5};
    test_path(path, sizeof path, "%s/diffusion_pytorch_model-00001-of-00002.safetensors", dir);
    write_one_tensor(path, "down.weight", a, 3);
    test_path(path, sizeof path, "%s/diffusion_pytorch_model-00002-of-00002.safetensors", dir);
    write_one_tensor(path, "up.bias", b, 2);
    test_path(index, sizeof index, "%s/diffusion_pytorch_model.safetensors.index.json", dir);
    write_text(index, "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {"
                      "\"down.weight\": \"diffusion_pytorch_model-00001-of-00002.safetensors\","
                      "\"up.bias\": \"diffusion_pytorch_model-00002-of-00002.safetensors\"}}");
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open(dir, "diffusion_pytorch_model", NULL, &ws));
    if (ws) {
        CHECK(weight_set_count(ws) == 2, "two tensors over two shards, got %zu", weight_set_count(ws));
        CHECK(!strcmp(weight_set_source(ws), index), "source is the index: %s", weight_set_source(ws));
        const st_file *shard = NULL;
        CHECK(weight_set_find(ws, "up.bias", &shard) && shard &&
                  strstr(st_path(shard), "00002-of-00002"),
              "up.bias is in the second shard");
        CHECK(weight_set_find(ws, "missing", NULL) == NULL, "absent tensor");
        CHECK(weight_set_at(ws, 0) && weight_set_at(ws, 1) && !weight_set_at(ws, 2), "weight_set_at");
        float *v = NULL;
        CHECK_OK(weight_set_load_f32(ws, "down.weight", 1, (const int64_t[]){3}, &v));
        CHECK(v && v[0] == 1 && v[2] == 3, "values from shard 1");
        free(v);
        CHECK_OK(weight_set_load_f32(ws, "up.bias", 1, (const int64_t[]){2}, &v));
        CHECK(v && v[0] == -4 && v[1] == 5, "values from shard 2");
        free(v);
        lcm_status st = weight_set_load_f32(ws, "mid.weight", -1, NULL, &v);
        CHECK(st == LCM_ERR_FORMAT && v == NULL && contains(lcm_last_error(), "'mid.weight'") &&
                  contains(lcm_last_error(), index),
              "missing tensor names index and tensor: %s", lcm_last_error());
        weight_set_close(ws);
    }
    weight_set_close(NULL);

    // Hostile or broken indexes.
    write_text(index, "{\"weight_map\": {\"down.weight\": \"../evil.safetensors\"}}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, index, "down.weight");
    write_text(index, "{\"weight_map\": {\"down.weight\": \"/etc/passwd\"}}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, index, "down.weight");
    write_text(index, "{\"weight_map\": {\"down.weight\": \"..\"}}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, index, "down.weight");
    write_text(index, "{\"weight_map\": {\"down.weight\": 7}}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, index, "down.weight");
    write_text(index, "{\"metadata\": {}}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, index, "weight_map");
    write_text(index, "{\"weight_map\": [\"a\"]}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, index, "weight_map");
    write_text(index, "{\"weight_map\": {");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, index, NULL);
    write_text(index, "{\"weight_map\": {\"down.weight\": \"diffusion_pytorch_model-00001-of-00002.safetensors\","
                      " \"ghost\": \"diffusion_pytorch_model-00002-of-00002.safetensors\"}}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, "'ghost'", "00002-of-00002");
    write_text(index, "{\"weight_map\": {\"down.weight\": \"no-such-shard.safetensors\"}}");
    expect_weights_fail(dir, NULL, LCM_ERR_IO, "no-such-shard.safetensors", NULL);
    // A broken shard is reported with the shard's own path.
    test_path(path, sizeof path, "%s/broken.safetensors", dir);
    write_text(path, "garbage!garbage!");
    write_text(index, "{\"weight_map\": {\"down.weight\": \"broken.safetensors\"}}");
    expect_weights_fail(dir, NULL, LCM_ERR_FORMAT, path, NULL);
}

static void test_variants(void) {
    char dir[512], plain[600], fp16[600];
    test_path(dir, sizeof dir, "%s/variants", temp_root);
    make_dir(dir);
    test_path(plain, sizeof plain, "%s/diffusion_pytorch_model.safetensors", dir);
    test_path(fp16, sizeof fp16, "%s/diffusion_pytorch_model.fp16.safetensors", dir);

    expect_weights_fail(dir, "fp16", LCM_ERR_IO, "diffusion_pytorch_model.fp16.safetensors",
                        "diffusion_pytorch_model.safetensors");
    expect_weights_fail(dir, NULL, LCM_ERR_IO, dir, "diffusion_pytorch_model.safetensors");

    write_one_tensor(plain, "w", (const float[]){1}, 1);
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open(dir, "diffusion_pytorch_model", "fp16", &ws));
    CHECK(ws && !strcmp(weight_set_source(ws), plain), "fp16 falls back to the plain file: %s",
          ws ? weight_set_source(ws) : "(none)");
    weight_set_close(ws);

    write_one_tensor(fp16, "w", (const float[]){2}, 1);
    CHECK_OK(weight_set_open(dir, "diffusion_pytorch_model", "fp16", &ws));
    CHECK(ws && !strcmp(weight_set_source(ws), fp16), "fp16 variant preferred: %s",
          ws ? weight_set_source(ws) : "(none)");
    weight_set_close(ws);
    CHECK_OK(weight_set_open(dir, "diffusion_pytorch_model", NULL, &ws));
    CHECK(ws && !strcmp(weight_set_source(ws), plain), "no variant opens the plain file");
    weight_set_close(ws);
    CHECK_OK(weight_set_open(dir, "diffusion_pytorch_model", "", &ws));
    CHECK(ws && !strcmp(weight_set_source(ws), plain), "empty variant means none");
    weight_set_close(ws);
    // A variant that exists but is broken is an error, not a silent fallback.
    write_text(fp16, "12345678");
    expect_weights_fail(dir, "fp16", LCM_ERR_FORMAT, fp16, NULL);
}

int main(void) {
    if (!mkdtemp(temp_root)) {
        fprintf(stderr, "FATAL: mkdtemp failed\n");
        return 2;
    }
    test_truncated_and_bad_lengths();
    test_bad_json();
    test_bad_entries();
    test_bad_shapes();
    test_bad_offsets();
    test_overlaps_and_duplicates();
    test_bad_metadata();
    test_files_on_disk();
    test_f16_every_value();
    test_bf16_values();
    test_all_dtypes();
    test_empty_headers();
    test_fixture_files();
    test_sharded();
    test_variants();
    nftw(temp_root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish();
}
