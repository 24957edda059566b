// The PyTorch checkpoint reader (io/zip.c + io/torch_pickle.c).
//
// The fixture's torch.save file must give exactly the tensors of its safetensors twin. Checkpoints
// built byte by byte below check the positive path of the builder itself (so the refusals that
// follow fail for the reason they claim), then hostile variants: a pickle calling os.system,
// unknown globals, forbidden opcodes, truncated and overlapping zips, storages and tensors out of
// range, deep nesting. Each must be refused with the right status and a message naming the file
// and the offending thing.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "io/safetensors.h"
#include "io/torch_pickle.h"
#include "io/torch_write.h"
#include "io/weights.h"
#include "io/zip.h"
#include "testutil.h"

// ---- byte buffers ---------------------------------------------------------------------------

typedef struct buf {
    unsigned char *data;
    size_t len, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->data = realloc(b->data, b->cap);
        if (!b->data) exit(2);
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}
static void put_byte(buf *b, unsigned v) {
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}
static void put_le(buf *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) put_byte(b, (unsigned)(v >> (8 * i)) & 0xFF);
}
static void put_str(buf *b, const char *s) { put(b, s, strlen(s)); }

// ---- a minimal zip writer (stored or deflated entries) -----------------------------------------

typedef struct zip_in {
    const char *name;
    const void *data;
    size_t len;
    bool deflate;
} zip_in;

static size_t raw_deflate(const void *src, size_t len, unsigned char **out) {
    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, 9, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) exit(2);
    size_t cap = deflateBound(&s, (uLong)len) + 16;
    *out = malloc(cap);
    s.next_in = (Bytef *)src;
    s.avail_in = (uInt)len;
    s.next_out = *out;
    s.avail_out = (uInt)cap;
    if (deflate(&s, Z_FINISH) != Z_STREAM_END) exit(2);
    size_t n = s.total_out;
    deflateEnd(&s);
    return n;
}

// zip64: write the central directory the way miniz does for archives over 4 GiB: sizes and local
// header offsets as 0xFFFFFFFF with the real values in a ZIP64 extra field, and a ZIP64 end record
// + locator before an end record whose counts and offsets are saturated.
static buf make_zip_ex(const zip_in *entries, int count, bool zip64) {
    buf z = {0}, dir = {0};
    for (int i = 0; i < count; i++) {
        const zip_in *e = &entries[i];
        unsigned char *packed = NULL;
        size_t csize = e->len;
        const void *payload = e->data;
        if (e->deflate) {
            csize = raw_deflate(e->data, e->len, &packed);
            payload = packed;
        }
        uint32_t crc = (uint32_t)crc32(0, e->data, (uInt)e->len);
        size_t offset = z.len;
        size_t name_len = strlen(e->name);
        put_le(&z, 0x04034b50, 4);
        put_le(&z, 20, 2);
        put_le(&z, 0, 2);
        put_le(&z, e->deflate ? 8 : 0, 2);
        put_le(&z, 0, 4); // time, date
        put_le(&z, crc, 4);
        put_le(&z, csize, 4);
        put_le(&z, e->len, 4);
        put_le(&z, name_len, 2);
        put_le(&z, 0, 2);
        put(&z, e->name, name_len);
        put(&z, payload, csize);
        put_le(&dir, 0x02014b50, 4);
        put_le(&dir, 20, 2);
        put_le(&dir, 20, 2);
        put_le(&dir, 0, 2);
        put_le(&dir, e->deflate ? 8 : 0, 2);
        put_le(&dir, 0, 4);
        put_le(&dir, crc, 4);
        put_le(&dir, zip64 ? 0xFFFFFFFFu : csize, 4);
        put_le(&dir, zip64 ? 0xFFFFFFFFu : e->len, 4);
        put_le(&dir, name_len, 2);
        put_le(&dir, zip64 ? 28 : 0, 2);
        put_le(&dir, 0, 2);
        put_le(&dir, 0, 2);
        put_le(&dir, 0, 2);
        put_le(&dir, 0, 4);
        put_le(&dir, zip64 ? 0xFFFFFFFFu : offset, 4);
        put(&dir, e->name, name_len);
        if (zip64) {
            put_le(&dir, 0x0001, 2);
            put_le(&dir, 24, 2);
            put_le(&dir, e->len, 8);
            put_le(&dir, csize, 8);
            put_le(&dir, offset, 8);
        }
        free(packed);
    }
    size_t dir_offset = z.len;
    put(&z, dir.data, dir.len);
    if (zip64) {
        size_t record = z.len;
        put_le(&z, 0x06064b50, 4);
        put_le(&z, 44, 8);
        put_le(&z, 45, 2);
        put_le(&z, 45, 2);
        put_le(&z, 0, 4);
        put_le(&z, 0, 4);
        put_le(&z, (uint64_t)count, 8);
        put_le(&z, (uint64_t)count, 8);
        put_le(&z, dir.len, 8);
        put_le(&z, dir_offset, 8);
        put_le(&z, 0x07064b50, 4);
        put_le(&z, 0, 4);
        put_le(&z, record, 8);
        put_le(&z, 1, 4);
    }
    put_le(&z, 0x06054b50, 4);
    put_le(&z, 0, 2);
    put_le(&z, 0, 2);
    put_le(&z, zip64 ? 0xFFFF : (uint64_t)count, 2);
    put_le(&z, zip64 ? 0xFFFF : (uint64_t)count, 2);
    put_le(&z, zip64 ? 0xFFFFFFFFu : dir.len, 4);
    put_le(&z, zip64 ? 0xFFFFFFFFu : dir_offset, 4);
    put_le(&z, 0, 2);
    free(dir.data);
    return z;
}

static buf make_zip(const zip_in *entries, int count) { return make_zip_ex(entries, count, false); }

// ---- pickles --------------------------------------------------------------------------------

static void p_unicode(buf *p, const char *s) {
    put_byte(p, 'X');
    put_le(p, strlen(s), 4);
    put_str(p, s);
}
static void p_int(buf *p, int v) {
    put_byte(p, 'J');
    put_le(p, (uint32_t)v, 4);
}
static void p_global(buf *p, const char *module, const char *name) {
    put_byte(p, 'c');
    put_str(p, module);
    put_byte(p, '\n');
    put_str(p, name);
    put_byte(p, '\n');
}

// A tensor the way torch pickles it: _rebuild_tensor_v2((storage pid), offset, size, stride, False,
// OrderedDict()). ndim <= 3.
typedef struct tensor_spec {
    const char *name, *storage_type, *key;
    int storage_numel, offset, ndim;
    int size[3], stride[3];
    bool legacy; // torch < 1.6 persistent id: a sixth element, view metadata (None)
} tensor_spec;

static void p_tensor(buf *p, const tensor_spec *t) {
    p_global(p, "torch._utils", "_rebuild_tensor_v2");
    put_byte(p, '(');
    put_byte(p, '(');
    p_unicode(p, "storage");
    p_global(p, "torch", t->storage_type);
    p_unicode(p, t->key);
    p_unicode(p, "cpu");
    p_int(p, t->storage_numel);
    if (t->legacy) put_byte(p, 'N');
    put_byte(p, 't');
    put_byte(p, 'Q');
    p_int(p, t->offset);
    put_byte(p, '(');
    for (int d = 0; d < t->ndim; d++) p_int(p, t->size[d]);
    put_byte(p, 't');
    put_byte(p, '(');
    for (int d = 0; d < t->ndim; d++) p_int(p, t->stride[d]);
    put_byte(p, 't');
    put_byte(p, 0x89);
    p_global(p, "collections", "OrderedDict");
    put_byte(p, ')');
    put_byte(p, 'R');
    put_byte(p, 't');
    put_byte(p, 'R');
}

// {"state_dict": {name: tensor}, "epoch": 3} with the state dict as an OrderedDict carrying a BUILD
// state, like a Lightning checkpoint.
static buf p_checkpoint(const tensor_spec *t) {
    buf p = {0};
    put_byte(&p, 0x80);
    put_byte(&p, 2);
    put_byte(&p, '}');
    put_byte(&p, '(');
    p_unicode(&p, "state_dict");
    p_global(&p, "collections", "OrderedDict");
    put_byte(&p, ')');
    put_byte(&p, 'R');
    put_byte(&p, 'q');
    put_byte(&p, 1);
    p_unicode(&p, t->name);
    p_tensor(&p, t);
    put_byte(&p, 's');
    put_byte(&p, '}');
    put_byte(&p, 'b'); // BUILD with an (empty) state dict, as for state_dict()._metadata
    p_unicode(&p, "epoch");
    put_byte(&p, 'K');
    put_byte(&p, 3);
    put_byte(&p, 'u');
    put_byte(&p, '.');
    return p;
}

static const float storage_values[6] = {1, 2, 3, 4, 5, 6};

// A whole archive "ck/data.pkl" + "ck/data/0" (the six floats) + "ck/version".
static buf archive_ex(const buf *pickle, size_t storage_bytes, bool deflate, bool zip64) {
    zip_in entries[3] = {
        {"ck/data.pkl", pickle->data, pickle->len, deflate},
        {"ck/data/0", storage_values, storage_bytes, deflate},
        {"ck/version", "3\n", 2, false},
    };
    return make_zip_ex(entries, 3, zip64);
}

static buf archive_with(const buf *pickle, size_t storage_bytes, bool deflate) {
    return archive_ex(pickle, storage_bytes, deflate, false);
}

static lcm_status open_bytes(const buf *b, st_file **out) {
    return torch_open_memory(b->data, b->len, "test.ckpt", out);
}

// Expects a refusal with `status` whose message names the file and contains `needle`.
static void expect_refused(const char *what, const buf *b, lcm_status status, const char *needle) {
    st_file *f = NULL;
    lcm_clear_error();
    lcm_status st = open_bytes(b, &f);
    const char *msg = lcm_last_error();
    CHECK(st == status && f == NULL, "%s: expected %s, got %s (%s)", what, lcm_status_name(status),
          lcm_status_name(st), msg);
    CHECK(strstr(msg, "test.ckpt") && strstr(msg, needle), "%s: message '%s' should name the file "
          "and '%s'", what, msg, needle);
    fprintf(stderr, "refused %-28s %s\n", what, msg);
    st_close(f);
}

static const tensor_spec good = {"w", "FloatStorage", "0", 6, 0, 2, {2, 3, 0}, {3, 1, 0}, false};

static void test_handmade_valid(void) {
    for (int variant = 0; variant < 3; variant++) {
        int deflate = variant == 1, zip64 = variant == 2;
        buf p = p_checkpoint(&good);
        buf z = archive_ex(&p, sizeof storage_values, deflate, zip64);
        st_file *f = NULL;
        CHECK_OK(open_bytes(&z, &f));
        const st_tensor *t = f ? st_find(f, "w") : NULL;
        CHECK(f && st_count(f) == 1 && t, "handmade checkpoint (deflate %d, zip64 %d): tensor 'w' "
              "found", deflate, zip64);
        if (t) {
            float got[6] = {0};
            CHECK(t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3,
                  "tensor 'w' is F32 [2, 3]");
            CHECK_OK(st_read_f32(f, t, got));
            CHECK(!memcmp(got, storage_values, sizeof got), "tensor 'w' values");
            // Stored entries are zero-copy: the data pointer lies inside the archive bytes.
            bool inside = (const unsigned char *)t->data >= z.data &&
                          (const unsigned char *)t->data < z.data + z.len;
            CHECK(inside == !deflate, "data is %s the archive (deflate %d)",
                  deflate ? "copied out of" : "mapped inside", deflate);
        }
        st_close(f);
        free(p.data);
        free(z.data);
    }
    // A view into the middle of the storage (offset 2, [2, 2]).
    tensor_spec view = good;
    view.offset = 2;
    view.size[0] = 2, view.size[1] = 2, view.stride[0] = 2;
    buf p = p_checkpoint(&view);
    buf z = archive_with(&p, sizeof storage_values, false);
    st_file *f = NULL;
    CHECK_OK(open_bytes(&z, &f));
    if (f) {
        float got[4];
        CHECK_OK(st_read_f32(f, st_find(f, "w"), got));
        CHECK(got[0] == 3 && got[3] == 6, "offset view reads elements 2..5");
    }
    st_close(f);
    free(p.data);
    free(z.data);
}

static void test_hostile_pickles(void) {
    // os.system via __reduce__: GLOBAL 'os system' + REDUCE.
    buf p = {0};
    put_byte(&p, 0x80);
    put_byte(&p, 2);
    p_global(&p, "os", "system");
    p_unicode(&p, "touch /tmp/lcm_pwned");
    put_byte(&p, 0x85);
    put_byte(&p, 'R');
    put_byte(&p, '.');
    buf z = archive_with(&p, sizeof storage_values, false);
    expect_refused("os.system reduce", &z, LCM_ERR_UNSUPPORTED, "os.system");
    free(p.data);
    free(z.data);

    // The same through STACK_GLOBAL (protocol 4 style), with another module.
    p = (buf){0};
    put_byte(&p, 0x80);
    put_byte(&p, 4);
    put_byte(&p, 0x8c);
    put_byte(&p, 10);
    put_str(&p, "subprocess");
    put_byte(&p, 0x8c);
    put_byte(&p, 5);
    put_str(&p, "Popen");
    put_byte(&p, 0x93);
    put_byte(&p, '.');
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("STACK_GLOBAL subprocess", &z, LCM_ERR_UNSUPPORTED, "subprocess.Popen");
    free(p.data);
    free(z.data);

    // A torch global that is not whitelisted, inside an otherwise valid checkpoint.
    tensor_spec t = good;
    t.storage_type = "UntypedStorageX";
    p = p_checkpoint(&t);
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("unknown torch global", &z, LCM_ERR_UNSUPPORTED, "torch.UntypedStorageX");
    free(p.data);
    free(z.data);

    // Forbidden opcodes: INST ('i') and NEWOBJ (0x81).
    const unsigned char inst[] = {0x80, 2, 'i', 'o', 's', '\n', 's', 'y', 's', 't', 'e', 'm', '\n', '.'};
    p = (buf){0};
    put(&p, inst, sizeof inst);
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("INST opcode", &z, LCM_ERR_UNSUPPORTED, "opcode 0x69");
    free(p.data);
    free(z.data);

    // A sparse memo index far beyond the pickle's size (would make a reader allocate 128 MB).
    const unsigned char sparse[] = {0x80, 2, '}', 'r', 0xff, 0xff, 0xff, 0x00, '.'};
    p = (buf){0};
    put(&p, sparse, sizeof sparse);
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("huge memo index", &z, LCM_ERR_FORMAT, "memo index 16777215");
    free(p.data);
    free(z.data);

    // One dict pushed (BINGET) more times than the stack may hold.
    p = (buf){0};
    put_byte(&p, 0x80);
    put_byte(&p, 2);
    put_byte(&p, '}');
    put_byte(&p, 'q');
    put_byte(&p, 0);
    for (unsigned i = 0; i <= TORCH_MAX_STACK; i++) {
        put_byte(&p, 'h');
        put_byte(&p, 0);
    }
    put_byte(&p, '.');
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("stack flood", &z, LCM_ERR_FORMAT, "refusing it");
    free(p.data);
    free(z.data);

    // Deep nesting: 100 dicts inside each other.
    p = (buf){0};
    put_byte(&p, 0x80);
    put_byte(&p, 2);
    for (int i = 0; i < 100; i++) {
        put_byte(&p, '}');
        p_unicode(&p, "a");
    }
    put_byte(&p, '}');
    for (int i = 0; i < 100; i++) put_byte(&p, 's');
    put_byte(&p, '.');
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("100-deep dicts", &z, LCM_ERR_FORMAT, "nested more than");
    free(p.data);
    free(z.data);

    // Unbounded MARKs.
    p = (buf){0};
    put_byte(&p, 0x80);
    put_byte(&p, 2);
    for (int i = 0; i < 10000; i++) put_byte(&p, '(');
    put_byte(&p, '.');
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("10000 MARKs", &z, LCM_ERR_FORMAT, "MARK");
    free(p.data);
    free(z.data);

    // A pickle cut short (no STOP).
    tensor_spec ok = good;
    p = p_checkpoint(&ok);
    p.len -= 3;
    z = archive_with(&p, sizeof storage_values, false);
    expect_refused("pickle without STOP", &z, LCM_ERR_FORMAT, "truncated");
    free(p.data);
    free(z.data);
}

static void test_out_of_range_storages(void) {
    struct {
        const char *what;
        tensor_spec spec;
        size_t storage_bytes;
        lcm_status status;
        const char *needle;
    } cases[] = {
        {"storage larger than entry", good, 5 * sizeof(float), LCM_ERR_FORMAT, "only 20 bytes"},
        {"tensor past storage end", {"w", "FloatStorage", "0", 6, 1, 2, {2, 3, 0}, {3, 1, 0}, false},
         sizeof storage_values, LCM_ERR_FORMAT, "does not fit its storage"},
        {"huge offset", {"w", "FloatStorage", "0", 6, 0x7fffffff, 1, {1, 0, 0}, {1, 0, 0}, false},
         sizeof storage_values, LCM_ERR_FORMAT, "does not fit its storage"},
        {"missing storage entry", {"w", "FloatStorage", "7", 6, 0, 2, {2, 3, 0}, {3, 1, 0}, false},
         sizeof storage_values, LCM_ERR_FORMAT, "ck/data/7"},
        {"key with a path", {"w", "FloatStorage", "../0", 6, 0, 2, {2, 3, 0}, {3, 1, 0}, false},
         sizeof storage_values, LCM_ERR_FORMAT, "not a plain name"},
        {"transposed strides", {"w", "FloatStorage", "0", 6, 0, 2, {2, 3, 0}, {1, 2, 0}, false},
         sizeof storage_values, LCM_ERR_UNSUPPORTED, "not contiguous"},
        {"negative size", {"w", "FloatStorage", "0", 6, 0, 2, {-2, 3, 0}, {3, 1, 0}, false},
         sizeof storage_values, LCM_ERR_FORMAT, "_rebuild_tensor_v2"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf p = p_checkpoint(&cases[i].spec);
        buf z = archive_with(&p, cases[i].storage_bytes, false);
        expect_refused(cases[i].what, &z, cases[i].status, cases[i].needle);
        free(p.data);
        free(z.data);
    }
}

static void test_broken_zips(void) {
    buf p = p_checkpoint(&good);
    buf z = archive_with(&p, sizeof storage_values, false);
    // Every truncation of a valid archive must be refused cleanly (the end record is gone or its
    // offsets point past the end).
    int refused = 0, total = 0;
    for (size_t cut = 0; cut < z.len; cut += 7) {
        st_file *f = NULL;
        buf t = {z.data, cut, cut};
        lcm_status st = open_bytes(&t, &f);
        total++;
        refused += st != LCM_OK && f == NULL && strstr(lcm_last_error(), "test.ckpt");
        st_close(f);
    }
    CHECK(refused == total, "all %d truncated archives refused (%d were)", total, refused);
    buf t = {z.data, z.len - 1, z.len - 1};
    expect_refused("archive missing its last byte", &t, LCM_ERR_FORMAT, "end-of-central-directory");

    // Overlap: the first central entry claims 10 more bytes, which run into the second entry's
    // local header.
    buf o = {malloc(z.len), z.len, z.len};
    memcpy(o.data, z.data, z.len);
    size_t dir_offset = (size_t)o.data[o.len - 6] | (size_t)o.data[o.len - 5] << 8;
    for (int field = 20; field <= 24; field += 4) {
        unsigned char *v = o.data + dir_offset + field;
        uint32_t n = (uint32_t)v[0] | (uint32_t)v[1] << 8;
        n += 10;
        v[0] = (unsigned char)n;
        v[1] = (unsigned char)(n >> 8);
    }
    expect_refused("overlapping entries", &o, LCM_ERR_FORMAT, "overlap");
    free(o.data);

    // Not a torch archive: a zip without data.pkl.
    zip_in plain[1] = {{"readme.txt", "hello", 5, false}};
    buf r = make_zip(plain, 1);
    expect_refused("zip without data.pkl", &r, LCM_ERR_FORMAT, "data.pkl");
    free(r.data);

    // A pickle that is not torch's legacy format.
    const unsigned char not_torch[] = {0x80, 2, 'K', 1, '.'};
    buf l = {(unsigned char *)not_torch, sizeof not_torch, sizeof not_torch};
    expect_refused("plain pickle", &l, LCM_ERR_FORMAT, "legacy magic");
    free(p.data);
    free(z.data);
}

// ---- the legacy (torch < 1.6) format -------------------------------------------------------------

// magic, version 1001, {"little_endian": True}, the checkpoint, ["0"], then int64 count + data.
static buf legacy_file(const tensor_spec *t, int64_t stored_numel, size_t data_bytes) {
    static const unsigned char magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                          0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};
    static const unsigned char version[] = {0x80, 0x02, 'M', 0xe9, 0x03, '.'};
    buf f = {0};
    put(&f, magic, sizeof magic);
    put(&f, version, sizeof version);
    put_byte(&f, 0x80);
    put_byte(&f, 2);
    put_byte(&f, '}');
    p_unicode(&f, "little_endian");
    put_byte(&f, 0x88);
    put_byte(&f, 's');
    put_byte(&f, '.');
    buf p = p_checkpoint(t);
    put(&f, p.data, p.len);
    free(p.data);
    put_byte(&f, 0x80);
    put_byte(&f, 2);
    put_byte(&f, ']');
    put_byte(&f, '(');
    p_unicode(&f, "0");
    put_byte(&f, 'e');
    put_byte(&f, '.');
    put_le(&f, (uint64_t)stored_numel, 8);
    put(&f, storage_values, data_bytes);
    return f;
}

static void test_legacy_format(void) {
    tensor_spec t = good;
    t.legacy = true;
    buf f = legacy_file(&t, 6, sizeof storage_values);
    st_file *file = NULL;
    CHECK_OK(open_bytes(&f, &file));
    const st_tensor *w = file ? st_find(file, "w") : NULL;
    float got[6] = {0};
    if (w) CHECK_OK(st_read_f32(file, w, got));
    CHECK(w && w->ndim == 2 && w->shape[1] == 3 && !memcmp(got, storage_values, sizeof got),
          "legacy checkpoint: tensor 'w' [2, 3] with the stored values");
    st_close(file);
    free(f.data);
    // Truncated storage data, a count that disagrees with the pickle, a storage view.
    f = legacy_file(&t, 6, sizeof storage_values - 4);
    expect_refused("legacy data truncated", &f, LCM_ERR_FORMAT, "past the end");
    free(f.data);
    f = legacy_file(&t, 5, sizeof storage_values);
    expect_refused("legacy count mismatch", &f, LCM_ERR_FORMAT, "the pickle says 6");
    free(f.data);
    f = legacy_file(&t, 6, sizeof storage_values);
    // Turn the view-metadata None into True (anything but None is a view).
    for (size_t i = 0; i + 1 < f.len; i++)
        if (f.data[i] == 'N' && f.data[i + 1] == 't') {
            f.data[i] = 0x88;
            break;
        }
    expect_refused("legacy storage view", &f, LCM_ERR_UNSUPPORTED, "views");
    free(f.data);
    // Every cut of a valid legacy file is refused cleanly.
    f = legacy_file(&t, 6, sizeof storage_values);
    int refused = 0, total = 0;
    for (size_t cut = 0; cut < f.len; cut += 5) {
        st_file *x = NULL;
        buf c = {f.data, cut, cut};
        total++;
        refused += open_bytes(&c, &x) != LCM_OK && x == NULL;
        st_close(x);
    }
    CHECK(refused == total, "all %d truncated legacy files refused (%d were)", total, refused);
    free(f.data);
}

static const char *strip_module(const char *name) {
    return strncmp(name, "module.", 7) ? name : name + 7;
}

static void test_fixture_matches_safetensors(void) {
    char pt_path[1024], st_path_buf[1024];
    test_path(pt_path, sizeof pt_path, "%s/normalbae/scannet_tiny.pt", test_fixtures());
    test_path(st_path_buf, sizeof st_path_buf, "%s/normalbae/normalbae.safetensors", test_fixtures());
    st_file *pt = NULL, *sf = NULL;
    CHECK_OK(torch_open(pt_path, &pt));
    CHECK_OK(st_open(st_path_buf, &sf));
    if (!pt || !sf) goto done;
    CHECK(st_count(pt) == st_count(sf), "%zu tensors in the .pt, %zu in the .safetensors",
          st_count(pt), st_count(sf));
    size_t matched = 0;
    for (size_t i = 0; i < st_count(sf); i++) {
        const st_tensor *want = st_at(sf, i);
        const st_tensor *got = NULL;
        for (size_t j = 0; j < st_count(pt) && !got; j++)
            if (!strcmp(strip_module(st_at(pt, j)->name), strip_module(want->name))) got = st_at(pt, j);
        if (!got) {
            CHECK(false, "tensor '%s' missing from the .pt", want->name);
            continue;
        }
        bool same = got->dtype == want->dtype && got->ndim == want->ndim &&
                    !memcmp(got->shape, want->shape, sizeof(int64_t) * (size_t)want->ndim) &&
                    got->nbytes == want->nbytes && !memcmp(got->data, want->data, want->nbytes);
        CHECK(same, "tensor '%s' identical in both files", want->name);
        matched += same;
    }
    fprintf(stderr, "scannet_tiny.pt: %zu/%zu tensors bit-identical to normalbae.safetensors\n",
            matched, st_count(sf));
    // Through a weight set too, as models load it.
    weight_set *ws = NULL;
    CHECK_OK(weight_set_open_file(pt_path, &ws));
    CHECK(ws && weight_set_count(ws) == st_count(sf), "weight set over the .pt sees every tensor");
    weight_set_close(ws);
done:
    st_close(pt);
    st_close(sf);
}

// `test_torch_pickle --write-seeds DIR` writes the handmade checkpoints (stored and deflated) as the
// seed corpus of fuzz/fuzz_torch_pickle.c (fuzz/corpus/fuzz_torch_pickle/).
static int write_seeds(const char *dir) {
    static const char *const names[3] = {"stored", "deflated", "zip64"};
    for (int variant = 0; variant < 3; variant++) {
        buf p = p_checkpoint(&good);
        buf z = archive_ex(&p, sizeof storage_values, variant == 1, variant == 2);
        char path[1024];
        test_path(path, sizeof path, "%s/state_dict_%s.ckpt", dir, names[variant]);
        FILE *fp = fopen(path, "wb");
        if (!fp || fwrite(z.data, 1, z.len, fp) != z.len || fclose(fp) != 0) return 1;
        free(p.data);
        free(z.data);
    }
    tensor_spec t = good;
    t.legacy = true;
    buf f = legacy_file(&t, 6, sizeof storage_values);
    char path[1024];
    test_path(path, sizeof path, "%s/state_dict_legacy.pt", dir);
    FILE *fp = fopen(path, "wb");
    bool ok = fp && fwrite(f.data, 1, f.len, fp) == f.len;
    if (fp) ok = fclose(fp) == 0 && ok;
    free(f.data);
    return ok ? 0 : 1;
}

// The writer: the fixture's safetensors weights written as a Lightning-style .ckpt and as a plain
// state-dict .pt read back bit-identical, with every stored tensor 64-byte aligned (zero-copy).
static void test_writer_round_trip(void) {
    char st_path_buf[1024], out[256];
    test_path(st_path_buf, sizeof st_path_buf, "%s/normalbae/normalbae.safetensors", test_fixtures());
    st_file *src = NULL;
    CHECK_OK(st_open(st_path_buf, &src));
    if (!src) return;
    for (int wrap = 0; wrap <= 1; wrap++) {
        snprintf(out, sizeof out, "/tmp/lcm_test_torch_write_%d_%s", (int)getpid(),
                 wrap ? "model.ckpt" : "weights.pt");
        CHECK_OK(torch_write_checkpoint(out, "archive", src, wrap));
        st_file *back = NULL;
        CHECK_OK(torch_open(out, &back));
        size_t same = 0, aligned = 0;
        for (size_t i = 0; back && i < st_count(src); i++) {
            const st_tensor *a = st_at(src, i), *b = st_find(back, a->name);
            same += b && b->dtype == a->dtype && b->ndim == a->ndim &&
                    !memcmp(b->shape, a->shape, sizeof(int64_t) * (size_t)a->ndim) &&
                    b->nbytes == a->nbytes && !memcmp(b->data, a->data, a->nbytes);
            aligned += b && (uintptr_t)b->data % 64 == 0;
        }
        CHECK(back && st_count(back) == st_count(src) && same == st_count(src),
              "written %s: %zu/%zu tensors read back identical", out, same, st_count(src));
        CHECK(aligned == st_count(src), "written %s: %zu/%zu tensors 64-byte aligned", out, aligned,
              st_count(src));
        st_close(back);
        unlink(out);
    }
    // Metadata survives a wrapped round trip (the golden file's `info`, with U8 tensors too).
    char golden_path[1024];
    test_path(golden_path, sizeof golden_path, "%s/normalbae/golden/normalbae.safetensors",
              test_fixtures());
    st_file *golden = NULL;
    CHECK_OK(st_open(golden_path, &golden));
    if (golden) {
        snprintf(out, sizeof out, "/tmp/lcm_test_torch_write_%d_meta.ckpt", (int)getpid());
        CHECK_OK(torch_write_checkpoint(out, "archive", golden, true));
        st_file *back = NULL;
        CHECK_OK(torch_open(out, &back));
        const char *want = st_metadata(golden, "info"), *got = back ? st_metadata(back, "info") : NULL;
        CHECK(want && got && !strcmp(want, got) && st_metadata_count(back) == st_metadata_count(golden),
              "metadata 'info' round-trips through a .ckpt");
        CHECK(back && st_count(back) == st_count(golden), "every golden tensor (F32 and U8) written");
        st_close(back);
        unlink(out);
        st_close(golden);
    }
    // U32 has no torch storage type: refused, naming the tensor.
    st_tensor *t = calloc(1, sizeof *t);
    static const uint32_t one = 1;
    *t = (st_tensor){.name = strdup("counts"), .dtype = ST_U32, .ndim = 1, .shape = {1}, .numel = 1,
                     .data = &one, .nbytes = 4};
    st_file *u32 = NULL;
    CHECK_OK(st_open_table("u32 table", t, 1, NULL, 0, NULL, 0, &u32));
    lcm_status st = u32 ? torch_write_checkpoint("/tmp/lcm_never_written.pt", "a", u32, false)
                        : LCM_ERR_INTERNAL;
    CHECK(st == LCM_ERR_UNSUPPORTED && strstr(lcm_last_error(), "counts"),
          "U32 tensor refused by the writer: %s", lcm_last_error());
    st_close(u32);
    st_close(src);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return write_seeds(argv[2]);
    test_handmade_valid();
    test_hostile_pickles();
    test_out_of_range_storages();
    test_broken_zips();
    test_legacy_format();
    test_fixture_matches_safetensors();
    test_writer_round_trip();
    return test_finish();
}
