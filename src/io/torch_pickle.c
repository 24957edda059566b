#include "io/torch_pickle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file.h"
#include "io/torch_unpickle.h"
#include "io/zip.h"

// ---- from the unpickled object to a tensor table ------------------------------------------------

typedef struct table {
    st_tensor *tensors;
    size_t count, capacity;
} table;

static void table_free(table *t) {
    for (size_t i = 0; i < t->count; i++) free((char *)t->tensors[i].name);
    free(t->tensors);
}

static lcm_status flatten(const unpickler *u, const value *dict, const char *prefix, int depth,
                          table *out) {
    if (depth > TORCH_MAX_DEPTH)
        return lcm_fail(LCM_ERR_FORMAT, "%s: dicts nested more than %d deep (at '%s')", u->label,
                        TORCH_MAX_DEPTH, prefix);
    for (size_t i = 0; i + 1 < dict->count; i += 2) {
        const value *key = dict->items[i], *val = dict->items[i + 1];
        if (key->kind != V_STRING || (val->kind != V_TENSOR && val->kind != V_DICT)) continue;
        char name[TORCH_MAX_NAME];
        if (snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", key->s) >=
                (int)sizeof name ||
            strlen(key->s) != key->len)
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensor name under '%s' is too long or has a NUL",
                            u->label, prefix);
        if (val->kind == V_DICT) {
            LCM_TRY(flatten(u, val, name, depth + 1, out));
            continue;
        }
        if (!unpickle_grow((void **)&out->tensors, &out->capacity, out->count + 1, sizeof *out->tensors))
            return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", u->label);
        st_tensor *t = &out->tensors[out->count];
        memset(t, 0, sizeof *t);
        if (!(t->name = strdup(name)))
            return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory", u->label);
        out->count++;
        t->dtype = val->dtype;
        t->ndim = val->ndim;
        memcpy(t->shape, val->shape, sizeof t->shape);
        t->numel = (int64_t)val->numel;
        t->data = val->storage->data + (uint64_t)val->i * st_dtype_size(val->dtype);
        t->nbytes = (size_t)val->numel * st_dtype_size(val->dtype);
    }
    return LCM_OK;
}

static bool holds_tensors(const value *dict) {
    for (size_t i = 1; i < dict->count; i += 2)
        if (dict->items[i]->kind == V_TENSOR) return true;
    return false;
}

// The state dict inside the saved object (see the header for the rule).
static const value *state_dict_of(const unpickler *u, const value *root) {
    if (holds_tensors(root)) return root;
    static const char *const keys[] = {"state_dict", "model", "module", "state"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        for (size_t i = 0; i + 1 < root->count; i += 2)
            if (root->items[i]->kind == V_STRING && !strcmp(root->items[i]->s, keys[k]) &&
                root->items[i + 1]->kind == V_DICT)
                return root->items[i + 1];
    (void)u;
    return root;
}

// The archive's top folder: the one holding data.pkl. torch names it after the file ("archive" in
// newer versions); every entry lives under it.
static lcm_status find_prefix(const zip_archive *zip, const char *label, char *prefix, size_t size) {
    const char *found = NULL;
    for (size_t i = 0; i < zip_count(zip); i++) {
        const char *name = zip_at(zip, i)->name;
        const char *slash = strchr(name, '/');
        if (slash && slash != name && !strcmp(slash + 1, "data.pkl")) {
            if (found)
                return lcm_fail(LCM_ERR_FORMAT, "%s: more than one data.pkl in the archive", label);
            found = name;
        }
    }
    if (!found)
        return lcm_fail(LCM_ERR_FORMAT, "%s: no PREFIX/data.pkl entry: not a torch.save checkpoint",
                        label);
    size_t len = (size_t)(strchr(found, '/') - found) + 1;
    if (len >= size) return lcm_fail(LCM_ERR_FORMAT, "%s: archive folder name too long", label);
    memcpy(prefix, found, len);
    prefix[len] = 0;
    return LCM_OK;
}

// Runs the next pickle in the stream with a fresh stack and memo (values stay allocated).
static lcm_status run_next(unpickler *u, value **result) {
    u->depth = 0;
    u->mark_count = 0;
    for (size_t i = 0; i < u->memo_capacity; i++) u->memo[i] = NULL;
    u->memo_entries = 0;
    return unpickle_run(u, result);
}

// What the table needs from a parsed object: the state dict flattened, or an error.
static lcm_status tensors_of(unpickler *u, const value *root, table *tab) {
    if (root->kind != V_DICT)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: the saved object is not a dict of tensors",
                        u->label);
    LCM_TRY(flatten(u, state_dict_of(u, root), "", 0, tab));
    if (tab->count == 0)
        return lcm_fail(LCM_ERR_FORMAT, "%s: the checkpoint holds no tensors", u->label);
    return LCM_OK;
}

// Hands the tensors to a new st_file and attaches the root's "__metadata__" strings. The unpickler
// must still be alive (the strings live in it); takes the mapping and buffers like st_open_table.
static lcm_status make_table(unpickler *u, const value *root, table *tab, void *mapping,
                             size_t size, void **buffers, size_t n_buffers, st_file **out) {
    st_file *f = NULL;
    LCM_TRY(st_open_table(u->label, tab->tensors, tab->count, mapping, size, buffers, n_buffers,
                          &f));
    tab->tensors = NULL;
    tab->count = 0;
    for (size_t i = 0; i + 1 < root->count; i += 2) {
        const value *k = root->items[i], *meta = root->items[i + 1];
        if (k->kind != V_STRING || strcmp(k->s, "__metadata__") || meta->kind != V_DICT) continue;
        for (size_t j = 0; j + 1 < meta->count; j += 2) {
            const value *mk = meta->items[j], *mv = meta->items[j + 1];
            if (mk->kind != V_STRING || mv->kind != V_STRING || strlen(mk->s) != mk->len ||
                strlen(mv->s) != mv->len)
                continue;
            lcm_status st = st_table_add_metadata(f, mk->s, mv->s);
            if (st != LCM_OK) {
                st_close(f);
                return st;
            }
        }
    }
    *out = f;
    return LCM_OK;
}

// torch < 1.6 ("legacy") files: five pickles in a row - the magic number, the format version
// (1001), system info, the object, the sorted list of storage keys - then, per key in that order,
// an int64 element count and the raw storage bytes.
static const uint8_t legacy_magic[15] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                         0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};

static lcm_status parse_legacy(unpickler *u, table *tab, value **root_out) {
    value *version = NULL, *info = NULL, *root = NULL, *keys = NULL;
    LCM_TRY(run_next(u, &version));
    if (version->kind != V_INT || version->i != 1001)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: legacy torch file of protocol version %lld "
                        "(only 1001 is supported)", u->label,
                        version->kind == V_INT ? (long long)version->i : -1LL);
    LCM_TRY(run_next(u, &info));
    for (size_t i = 0; info->kind == V_DICT && i + 1 < info->count; i += 2)
        if (info->items[i]->kind == V_STRING && !strcmp(info->items[i]->s, "little_endian") &&
            !(info->items[i + 1]->kind == V_BOOL && info->items[i + 1]->i))
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: only little-endian checkpoints are supported",
                            u->label);
    LCM_TRY(run_next(u, &root));
    LCM_TRY(run_next(u, &keys));
    if (keys->kind != V_LIST)
        return lcm_fail(LCM_ERR_FORMAT, "%s: legacy storage key list is missing", u->label);
    for (size_t k = 0; k < keys->count; k++) {
        const value *key = keys->items[k];
        value *storage = NULL;
        for (size_t i = 0; key->kind == V_STRING && i < u->storage_count && !storage; i++)
            if (!strcmp(u->storages[i].key, key->s)) storage = u->storages[i].storage;
        if (!storage || storage->data)
            return lcm_fail(LCM_ERR_FORMAT, "%s: legacy storage list names a storage the pickle "
                            "does not use, or names one twice (entry %zu)", u->label, k);
        const uint8_t *b = NULL;
        LCM_TRY(unpickle_take(u, 8, &b));
        uint64_t numel = unpickle_le(b, 8), bytes_needed = numel * st_dtype_size(storage->dtype);
        if (numel != storage->numel)
            return lcm_fail(LCM_ERR_FORMAT, "%s: legacy storage '%s' holds %llu elements, the "
                            "pickle says %llu", u->label, key->s, (unsigned long long)numel,
                            (unsigned long long)storage->numel);
        if (bytes_needed > (uint64_t)(u->end - u->p))
            return lcm_fail(LCM_ERR_FORMAT, "%s: legacy storage '%s' runs past the end of the file "
                            "(truncated?)", u->label, key->s);
        storage->data = u->p;
        u->p += bytes_needed;
    }
    for (size_t i = 0; i < u->storage_count; i++)
        if (!u->storages[i].storage->data)
            return lcm_fail(LCM_ERR_FORMAT, "%s: legacy storage '%s' has no data", u->label,
                            u->storages[i].key);
    *root_out = root;
    return tensors_of(u, root, tab);
}

static lcm_status open_legacy(const uint8_t *bytes, size_t size, const char *label, void *mapping,
                              st_file **out) {
    if (size < sizeof legacy_magic || memcmp(bytes, legacy_magic, sizeof legacy_magic)) {
        io_unmap_file(mapping, size);
        return lcm_fail(LCM_ERR_FORMAT, "%s: starts with a pickle but not with torch's legacy "
                        "magic number: not a torch checkpoint", label);
    }
    unpickler u;
    memset(&u, 0, sizeof u);
    u.label = label;
    u.prefix = "";
    u.legacy = true;
    u.start = bytes;
    u.p = bytes + sizeof legacy_magic;
    u.end = bytes + size;
    table tab = {0};
    value *root = NULL;
    lcm_status st = parse_legacy(&u, &tab, &root);
    if (st != LCM_OK) {
        table_free(&tab);
        unpickler_free(&u);
        io_unmap_file(mapping, size);
        return st;
    }
    st = make_table(&u, root, &tab, mapping, size, NULL, 0, out);
    unpickler_free(&u);
    return st;
}

// Parses everything; on success hands the tensors (and inflated buffers) to st_open_table.
static lcm_status open_archive(const uint8_t *bytes, size_t size, const char *label, void *mapping,
                               st_file **out) {
    *out = NULL;
    if (size >= 1 && bytes[0] == 0x80) return open_legacy(bytes, size, label, mapping, out);
    zip_archive *zip = NULL;
    unpickler u;
    memset(&u, 0, sizeof u);
    table tab = {0};
    char prefix[256];
    lcm_status st = zip_open_memory(bytes, size, label, &zip);
    if (st == LCM_OK) st = find_prefix(zip, label, prefix, sizeof prefix);
    const zip_entry *pkl = NULL;
    value *root = NULL;
    const uint8_t *pkl_bytes = NULL;
    uint8_t *pkl_copy = NULL;
    if (st == LCM_OK) {
        char name[300];
        snprintf(name, sizeof name, "%sbyteorder", prefix);
        const zip_entry *order = zip_find(zip, name);
        if (order && order->stored && !(order->size == 6 && !memcmp(order->data, "little", 6)))
            st = lcm_fail(LCM_ERR_UNSUPPORTED, "%s: only little-endian checkpoints are supported",
                          label);
        snprintf(name, sizeof name, "%sdata.pkl", prefix);
        pkl = zip_find(zip, name);
    }
    if (st == LCM_OK) st = zip_read(zip, pkl, &pkl_bytes, &pkl_copy);
    if (st == LCM_OK) {
        u.label = label;
        u.zip = zip;
        u.prefix = prefix;
        u.start = u.p = pkl_bytes;
        u.end = pkl_bytes + pkl->size;
        st = unpickle_run(&u, &root);
        if (st == LCM_OK) st = tensors_of(&u, root, &tab);
    }
    if (st == LCM_OK) {
        // The table takes the tensors, the mapping and the inflated buffers.
        void **buffers = u.buffers;
        size_t n_buffers = u.buffer_count;
        u.buffers = NULL;
        u.buffer_count = 0;
        st = make_table(&u, root, &tab, mapping, size, buffers, n_buffers, out);
        free(pkl_copy);
        unpickler_free(&u);
        zip_close(zip);
        return st;
    }
    free(pkl_copy);
    table_free(&tab);
    unpickler_free(&u);
    zip_close(zip);
    io_unmap_file(mapping, size);
    return st;
}

lcm_status torch_open_memory(const void *bytes, size_t size, const char *label, st_file **out) {
    return open_archive(bytes, size, label, NULL, out);
}

lcm_status torch_open(const char *path, st_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return lcm_fail(LCM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
        close(fd);
        return lcm_fail(LCM_ERR_IO, "%s: not a regular, non-empty file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map;
    lcm_status mapped = io_map_file(fd, size, path, &map);
    close(fd);
    if (mapped != LCM_OK) return mapped;
    return open_archive(map, size, path, map, out);
}

bool torch_is_checkpoint_name(const char *path) {
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/')) return false;
    return !strcasecmp(dot, ".pt") || !strcasecmp(dot, ".pth") || !strcasecmp(dot, ".ckpt") ||
           !strcasecmp(dot, ".bin");
}
