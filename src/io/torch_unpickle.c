// The whitelist unpickler of torch checkpoints (io/torch_unpickle.h).
#include "io/torch_unpickle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

bool unpickle_grow(void **array, size_t *capacity, size_t needed, size_t item) {
    if (needed <= *capacity) return true;
    size_t cap = *capacity ? *capacity : 16;
    while (cap < needed) cap *= 2;
    void *p = realloc(*array, cap * item);
    if (!p) return false;
    *array = p;
    *capacity = cap;
    return true;
}

static lcm_status out_of_memory(const unpickler *u) {
    if (u->all_count >= TORCH_MAX_VALUES || u->depth >= TORCH_MAX_STACK)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle creates more than %u objects or stacks more "
                        "than %u values; refusing it", u->label, TORCH_MAX_VALUES, TORCH_MAX_STACK);
    return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "%s: out of memory reading the pickle", u->label);
}

static value *new_value(unpickler *u, value_kind kind) {
    // A hostile pickle of one-byte opcodes would otherwise cost ~150 bytes of memory per byte.
    if (u->all_count >= TORCH_MAX_VALUES) return NULL;
    if (!unpickle_grow((void **)&u->all, &u->all_capacity, u->all_count + 1, sizeof *u->all)) return NULL;
    value *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    u->all[u->all_count++] = v;
    return v;
}

static bool append_item(value *container, value *item) {
    if (!unpickle_grow((void **)&container->items, &container->capacity, container->count + 1,
               sizeof *container->items))
        return false;
    container->items[container->count++] = item;
    return true;
}

void unpickler_free(unpickler *u) {
    for (size_t i = 0; i < u->all_count; i++) {
        free(u->all[i]->s);
        free(u->all[i]->items);
        free(u->all[i]);
    }
    free(u->all);
    free(u->stack);
    free(u->memo);
    for (size_t i = 0; i < u->storage_count; i++) free(u->storages[i].key);
    free(u->storages);
    for (size_t i = 0; i < u->buffer_count; i++) free(u->buffers[i]);
    free(u->buffers);
}

// ---- stack helpers --------------------------------------------------------------------------

// Values below the topmost MARK belong to an enclosing construct; opcodes must not pop them.
static size_t stack_floor(const unpickler *u) {
    return u->mark_count ? u->marks[u->mark_count - 1] : 0;
}

static lcm_status push(unpickler *u, value *v) {
    if (!v || u->depth >= TORCH_MAX_STACK || !unpickle_grow((void **)&u->stack, &u->stack_capacity, u->depth + 1, sizeof *u->stack))
        return out_of_memory(u);
    u->stack[u->depth++] = v;
    return LCM_OK;
}

static lcm_status pop(unpickler *u, const char *op, value **out) {
    if (u->depth <= stack_floor(u))
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle opcode %s pops an empty stack", u->label, op);
    *out = u->stack[--u->depth];
    return LCM_OK;
}

static lcm_status top(unpickler *u, const char *op, value **out) {
    if (u->depth <= stack_floor(u))
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle opcode %s needs a value on the stack", u->label,
                        op);
    *out = u->stack[u->depth - 1];
    return LCM_OK;
}

// Removes the topmost MARK; *first is the stack index of the first value above it.
static lcm_status pop_mark(unpickler *u, const char *op, size_t *first) {
    if (!u->mark_count)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle opcode %s without a MARK", u->label, op);
    *first = u->marks[--u->mark_count];
    return LCM_OK;
}

lcm_status unpickle_take(unpickler *u, size_t n, const uint8_t **bytes) {
    if ((size_t)(u->end - u->p) < n)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle data ends in the middle of an opcode (truncated)",
                        u->label);
    *bytes = u->p;
    u->p += n;
    return LCM_OK;
}

uint64_t unpickle_le(const uint8_t *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

// ---- opcodes ------------------------------------------------------------------------------------

static lcm_status push_int(unpickler *u, int64_t i) {
    value *v = new_value(u, V_INT);
    if (v) v->i = i;
    return push(u, v);
}

static lcm_status push_string(unpickler *u, uint64_t len) {
    const uint8_t *b = NULL;
    if (len > (uint64_t)(u->end - u->p))
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle string of %llu bytes runs past the end", u->label,
                        (unsigned long long)len);
    LCM_TRY(unpickle_take(u, (size_t)len, &b));
    value *v = new_value(u, V_STRING);
    if (!v || !(v->s = malloc((size_t)len + 1))) return out_of_memory(u);
    memcpy(v->s, b, (size_t)len);
    v->s[len] = 0;
    v->len = (size_t)len;
    return push(u, v);
}

static lcm_status make_tuple(unpickler *u, size_t first) {
    value *t = new_value(u, V_TUPLE);
    if (!t) return out_of_memory(u);
    for (size_t i = first; i < u->depth; i++)
        if (!append_item(t, u->stack[i])) return out_of_memory(u);
    u->depth = first;
    return push(u, t);
}

static lcm_status tuple_n(unpickler *u, size_t n, const char *op) {
    if (u->depth - stack_floor(u) < n)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle opcode %s needs %zu values", u->label, op, n);
    return make_tuple(u, u->depth - n);
}

static const struct {
    const char *name;
    st_dtype dtype;
} storage_types[] = {
    {"FloatStorage", ST_F32}, {"HalfStorage", ST_F16},  {"BFloat16Storage", ST_BF16},
    {"DoubleStorage", ST_F64}, {"LongStorage", ST_I64}, {"IntStorage", ST_I32},
    {"ShortStorage", ST_I16}, {"CharStorage", ST_I8},   {"ByteStorage", ST_U8},
    {"BoolStorage", ST_BOOL},
};

static lcm_status push_global(unpickler *u, const char *module, const char *name) {
    value *v = new_value(u, V_GLOBAL);
    if (!v) return out_of_memory(u);
    if (!strcmp(module, "collections") && !strcmp(name, "OrderedDict")) {
        v->global = G_ORDERED_DICT;
    } else if (!strcmp(module, "torch._utils") && !strcmp(name, "_rebuild_tensor_v2")) {
        v->global = G_REBUILD_TENSOR_V2;
    } else if (!strcmp(module, "torch._utils") && !strcmp(name, "_rebuild_parameter")) {
        v->global = G_REBUILD_PARAMETER;
    } else {
        size_t k = 0, n = sizeof storage_types / sizeof storage_types[0];
        if (!strcmp(module, "torch"))
            while (k < n && strcmp(name, storage_types[k].name)) k++;
        if (strcmp(module, "torch") || k == n)
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s: pickle refers to global '%.100s.%.100s', which is not allowed (a "
                            "checkpoint may only use collections.OrderedDict, "
                            "torch._utils._rebuild_tensor_v2/_rebuild_parameter and torch storage "
                            "types; refusing to load it)",
                            u->label, module, name);
        v->global = G_STORAGE_TYPE;
        v->dtype = storage_types[k].dtype;
    }
    return push(u, v);
}

// GLOBAL: "module\nname\n" inline.
static lcm_status op_global(unpickler *u) {
    char parts[2][256];
    for (int k = 0; k < 2; k++) {
        const uint8_t *nl = memchr(u->p, '\n', (size_t)(u->end - u->p));
        if (!nl)
            return lcm_fail(LCM_ERR_FORMAT, "%s: pickle GLOBAL is not newline-terminated", u->label);
        size_t len = (size_t)(nl - u->p);
        if (len >= sizeof parts[k]) len = sizeof parts[k] - 1; // too long for any allowed name
        memcpy(parts[k], u->p, len);
        parts[k][len] = 0;
        if (memchr(parts[k], 0, len)) parts[k][0] = '?';
        u->p = nl + 1;
    }
    return push_global(u, parts[0], parts[1]);
}

static lcm_status op_stack_global(unpickler *u) {
    value *name = NULL, *module = NULL;
    LCM_TRY(pop(u, "STACK_GLOBAL", &name));
    LCM_TRY(pop(u, "STACK_GLOBAL", &module));
    if (name->kind != V_STRING || module->kind != V_STRING)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle STACK_GLOBAL needs two strings", u->label);
    return push_global(u, module->s, name->s);
}

static lcm_status memo_put(unpickler *u, uint64_t index) {
    value *v = NULL;
    LCM_TRY(top(u, "PUT", &v));
    // Picklers number memo slots 0, 1, 2, ... and every PUT takes at least one byte, so a real
    // index is below the pickle's size; a larger one would only make us allocate.
    if (index >= TORCH_MAX_MEMO || index >= (uint64_t)(u->end - u->start))
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle memo index %llu is too large", u->label,
                        (unsigned long long)index);
    size_t old = u->memo_capacity;
    if (!unpickle_grow((void **)&u->memo, &u->memo_capacity, (size_t)index + 1, sizeof *u->memo))
        return out_of_memory(u);
    for (size_t i = old; i < u->memo_capacity; i++) u->memo[i] = NULL;
    if (!u->memo[index]) u->memo_entries++;
    u->memo[index] = v;
    return LCM_OK;
}

static lcm_status memo_get(unpickler *u, uint64_t index) {
    if (index >= u->memo_capacity || !u->memo[index])
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle reads memo slot %llu, which was never set",
                        u->label, (unsigned long long)index);
    return push(u, u->memo[index]);
}

// SETITEM(S) / APPEND(S): the values from `first` up go into the container just below them, which
// must itself lie above the enclosing MARK.
static lcm_status fill_container(unpickler *u, bool many, size_t per_item, value_kind kind,
                                 const char *op) {
    size_t first = 0;
    if (many) {
        LCM_TRY(pop_mark(u, op, &first));
    } else {
        if (u->depth - stack_floor(u) < per_item + 1)
            return lcm_fail(LCM_ERR_FORMAT, "%s: pickle %s needs %zu values", u->label, op,
                            per_item + 1);
        first = u->depth - per_item;
    }
    if (first == 0 || first - 1 < stack_floor(u) || u->stack[first - 1]->kind != kind)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle %s on something that is not a %s", u->label, op,
                        kind == V_DICT ? "dict" : "list");
    if ((u->depth - first) % per_item)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle %s with an odd number of values", u->label, op);
    value *container = u->stack[first - 1];
    for (size_t i = first; i < u->depth; i++)
        if (!append_item(container, u->stack[i])) return out_of_memory(u);
    u->depth = first;
    return LCM_OK;
}

static lcm_status add_storage(unpickler *u, const char *key, st_dtype dtype, uint64_t numel,
                              const uint8_t *data, value **out) {
    value *s = new_value(u, V_STORAGE);
    if (!s || !unpickle_grow((void **)&u->storages, &u->storage_capacity, u->storage_count + 1,
                    sizeof *u->storages))
        return out_of_memory(u);
    s->dtype = dtype;
    s->numel = numel;
    s->data = data;
    char *key_copy = strdup(key);
    if (!key_copy) return out_of_memory(u);
    u->storages[u->storage_count++] = (loaded_storage){key_copy, s};
    *out = s;
    return LCM_OK;
}

// BINPERSID: ('storage', STORAGE_TYPE, KEY, LOCATION, NUMEL) -> the storage in PREFIX/data/KEY.
// Legacy files add a sixth element, view metadata, which must be None (storage views are refused).
static lcm_status op_persistent_id(unpickler *u) {
    value *pid = NULL;
    LCM_TRY(pop(u, "BINPERSID", &pid));
    if (u->legacy && pid->kind == V_TUPLE && pid->count == 6) {
        if (pid->items[5]->kind != V_NONE)
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: legacy storage views are not supported",
                            u->label);
        pid->count = 5;
    }
    if (pid->kind != V_TUPLE || pid->count != 5 || pid->items[0]->kind != V_STRING ||
        strcmp(pid->items[0]->s, "storage") || pid->items[1]->kind != V_GLOBAL ||
        pid->items[1]->global != G_STORAGE_TYPE || pid->items[2]->kind != V_STRING ||
        pid->items[4]->kind != V_INT || pid->items[4]->i < 0)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: pickle persistent id is not ('storage', torch.<Type>Storage, key, "
                        "location, numel)", u->label);
    const char *key = pid->items[2]->s;
    st_dtype dtype = pid->items[1]->dtype;
    uint64_t numel = (uint64_t)pid->items[4]->i;
    for (size_t i = 0; i < u->storage_count; i++)
        if (!strcmp(u->storages[i].key, key)) {
            value *s = u->storages[i].storage;
            if (s->dtype != dtype || s->numel != numel)
                return lcm_fail(LCM_ERR_FORMAT, "%s: storage '%s' is referenced with two different "
                                "types or sizes", u->label, key);
            return push(u, s);
        }
    if (u->legacy) {
        if (strlen(key) > 64)
            return lcm_fail(LCM_ERR_FORMAT, "%s: storage key '%.64s...' is too long", u->label, key);
        value *s = NULL;
        LCM_TRY(add_storage(u, key, dtype, numel, NULL, &s));
        return push(u, s);
    }
    char entry_name[512];
    if (strlen(key) > 64 || strchr(key, '/') ||
        snprintf(entry_name, sizeof entry_name, "%sdata/%s", u->prefix, key) >= (int)sizeof entry_name)
        return lcm_fail(LCM_ERR_FORMAT, "%s: storage key '%.64s' is not a plain name", u->label, key);
    const zip_entry *e = zip_find(u->zip, entry_name);
    if (!e)
        return lcm_fail(LCM_ERR_FORMAT, "%s: storage '%s' has no zip entry '%s'", u->label, key,
                        entry_name);
    size_t elem = st_dtype_size(dtype);
    if (numel > e->size / elem)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: storage '%s' claims %llu elements of %zu bytes but its entry '%s' has "
                        "only %llu bytes",
                        u->label, key, (unsigned long long)numel, elem, entry_name,
                        (unsigned long long)e->size);
    const uint8_t *content;
    uint8_t *copy;
    LCM_TRY(zip_read(u->zip, e, &content, &copy));
    if (copy) {
        if (!unpickle_grow((void **)&u->buffers, &u->buffer_capacity, u->buffer_count + 1,
                  sizeof *u->buffers)) {
            free(copy);
            return out_of_memory(u);
        }
        u->buffers[u->buffer_count++] = copy;
    }
    value *s = NULL;
    LCM_TRY(add_storage(u, key, dtype, numel, content, &s));
    return push(u, s);
}

static bool is_int_tuple(const value *v, int max_len) {
    if (v->kind != V_TUPLE || v->count > (size_t)max_len) return false;
    for (size_t i = 0; i < v->count; i++)
        if (v->items[i]->kind != V_INT || v->items[i]->i < 0) return false;
    return true;
}

// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
static lcm_status rebuild_tensor(unpickler *u, const value *args, value **out) {
    if (args->count < 6 || args->count > 7 || args->items[0]->kind != V_STORAGE ||
        args->items[1]->kind != V_INT || args->items[1]->i < 0 ||
        !is_int_tuple(args->items[2], ST_MAX_DIMS) || !is_int_tuple(args->items[3], ST_MAX_DIMS) ||
        args->items[2]->count != args->items[3]->count)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: _rebuild_tensor_v2 arguments are not (storage, offset >= 0, size, "
                        "stride, ...) with at most %d non-negative dims",
                        u->label, ST_MAX_DIMS);
    const value *storage = args->items[0], *size = args->items[2], *stride = args->items[3];
    value *t = new_value(u, V_TENSOR);
    if (!t) return out_of_memory(u);
    t->dtype = storage->dtype;
    t->ndim = (int)size->count;
    uint64_t numel = 1, expected_stride = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        uint64_t n = (uint64_t)size->items[d]->i;
        t->shape[d] = (int64_t)n;
        // Contiguous (row-major); a dimension of size 1 may have any stride, as in torch.
        if (n != 1 && (uint64_t)stride->items[d]->i != expected_stride && numel != 0)
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s: a tensor is not contiguous (stride %lld in dim %d, expected %llu); "
                            "only contiguous tensors are supported",
                            u->label, (long long)stride->items[d]->i, d,
                            (unsigned long long)expected_stride);
        if (n && numel > UINT64_MAX / 2 / n)
            return lcm_fail(LCM_ERR_FORMAT, "%s: tensor size overflows", u->label);
        numel *= n;
        expected_stride = numel ? numel : 1;
    }
    uint64_t offset = (uint64_t)args->items[1]->i;
    if (offset > storage->numel || numel > storage->numel - offset)
        return lcm_fail(LCM_ERR_FORMAT,
                        "%s: tensor of %llu elements at offset %llu does not fit its storage of "
                        "%llu elements",
                        u->label, (unsigned long long)numel, (unsigned long long)offset,
                        (unsigned long long)storage->numel);
    t->numel = numel;
    t->i = (int64_t)offset;
    t->storage = args->items[0];
    *out = t;
    return LCM_OK;
}

static lcm_status op_reduce(unpickler *u) {
    value *args = NULL, *callable = NULL;
    LCM_TRY(pop(u, "REDUCE", &args));
    LCM_TRY(pop(u, "REDUCE", &callable));
    if (callable->kind != V_GLOBAL || args->kind != V_TUPLE)
        return lcm_fail(LCM_ERR_FORMAT, "%s: pickle REDUCE of something that is not an allowed "
                        "global with an argument tuple", u->label);
    value *result = NULL;
    switch (callable->global) {
    case G_ORDERED_DICT:
        if (args->count != 0)
            return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: OrderedDict built from arguments is not "
                            "supported", u->label);
        result = new_value(u, V_DICT);
        break;
    case G_REBUILD_TENSOR_V2: LCM_TRY(rebuild_tensor(u, args, &result)); break;
    case G_REBUILD_PARAMETER:
        if (args->count < 1 || args->items[0]->kind != V_TENSOR)
            return lcm_fail(LCM_ERR_FORMAT, "%s: _rebuild_parameter without a tensor", u->label);
        result = args->items[0];
        break;
    case G_STORAGE_TYPE:
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: pickle calls a torch storage type, which is not "
                        "supported", u->label);
    }
    return push(u, result);
}

// BUILD sets an object's state; torch uses it for a state dict's `_metadata` attribute, which only
// matters to torch's module loading, so the state is dropped.
static lcm_status op_build(unpickler *u) {
    value *state = NULL, *target = NULL;
    LCM_TRY(pop(u, "BUILD", &state));
    LCM_TRY(top(u, "BUILD", &target));
    if (target->kind != V_DICT)
        return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: pickle BUILD on an object other than a dict",
                        u->label);
    return LCM_OK;
}

lcm_status unpickle_run(unpickler *u, value **result) {
    for (;;) {
        const uint8_t *b = NULL;
        LCM_TRY(unpickle_take(u, 1, &b));
        uint8_t op = *b;
        switch (op) {
        case 0x80: LCM_TRY(unpickle_take(u, 1, &b)); // PROTO
            if (*b < 2 || *b > 5)
                return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: pickle protocol %u is not supported",
                                u->label, *b);
            break;
        case 0x95: LCM_TRY(unpickle_take(u, 8, &b)); break; // FRAME: a size hint
        case '.': return top(u, "STOP", result);   // STOP
        case '(': // MARK
            if (u->mark_count == TORCH_MAX_MARKS)
                return lcm_fail(LCM_ERR_FORMAT, "%s: pickle nests more than %d MARKs", u->label,
                                TORCH_MAX_MARKS);
            u->marks[u->mark_count++] = u->depth;
            break;
        case '}': LCM_TRY(push(u, new_value(u, V_DICT))); break;  // EMPTY_DICT
        case ']': LCM_TRY(push(u, new_value(u, V_LIST))); break;  // EMPTY_LIST
        case ')': LCM_TRY(push(u, new_value(u, V_TUPLE))); break; // EMPTY_TUPLE
        case 'N': LCM_TRY(push(u, new_value(u, V_NONE))); break;  // NONE
        case 0x88: case 0x89: { // NEWTRUE, NEWFALSE
            value *v = new_value(u, V_BOOL);
            if (v) v->i = op == 0x88;
            LCM_TRY(push(u, v));
            break;
        }
        case 'K': LCM_TRY(unpickle_take(u, 1, &b)); LCM_TRY(push_int(u, b[0])); break;           // BININT1
        case 'M': LCM_TRY(unpickle_take(u, 2, &b)); LCM_TRY(push_int(u, (int64_t)unpickle_le(b, 2))); break; // BININT2
        case 'J': LCM_TRY(unpickle_take(u, 4, &b)); LCM_TRY(push_int(u, (int32_t)unpickle_le(b, 4))); break; // BININT
        case 0x8a: { // LONG1: n-byte little-endian two's complement
            LCM_TRY(unpickle_take(u, 1, &b));
            int n = b[0];
            if (n > 8)
                return lcm_fail(LCM_ERR_UNSUPPORTED, "%s: pickle integer of %d bytes is too large",
                                u->label, n);
            LCM_TRY(unpickle_take(u, (size_t)n, &b));
            uint64_t v = unpickle_le(b, n);
            if (n > 0 && n < 8 && (b[n - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * n);
            LCM_TRY(push_int(u, (int64_t)v));
            break;
        }
        case 'G': { // BINFLOAT: big-endian double
            LCM_TRY(unpickle_take(u, 8, &b));
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | b[i];
            value *v = new_value(u, V_FLOAT);
            if (v) memcpy(&v->f, &bits, sizeof v->f);
            LCM_TRY(push(u, v));
            break;
        }
        case 'X': LCM_TRY(unpickle_take(u, 4, &b)); LCM_TRY(push_string(u, unpickle_le(b, 4))); break; // BINUNICODE
        case 0x8c: LCM_TRY(unpickle_take(u, 1, &b)); LCM_TRY(push_string(u, b[0])); break; // SHORT_BINUNICODE
        case 0x8d: LCM_TRY(unpickle_take(u, 8, &b)); LCM_TRY(push_string(u, unpickle_le(b, 8))); break; // BINUNICODE8
        case 'T': LCM_TRY(unpickle_take(u, 4, &b)); LCM_TRY(push_string(u, unpickle_le(b, 4))); break; // BINSTRING
        case 'U': LCM_TRY(unpickle_take(u, 1, &b)); LCM_TRY(push_string(u, b[0])); break; // SHORT_BINSTRING
        case 'B': LCM_TRY(unpickle_take(u, 4, &b)); LCM_TRY(push_string(u, unpickle_le(b, 4))); break; // BINBYTES
        case 'C': LCM_TRY(unpickle_take(u, 1, &b)); LCM_TRY(push_string(u, b[0])); break; // SHORT_BINBYTES
        case 't': { // TUPLE
            size_t first = 0;
            LCM_TRY(pop_mark(u, "TUPLE", &first));
            LCM_TRY(make_tuple(u, first));
            break;
        }
        case 0x85: LCM_TRY(tuple_n(u, 1, "TUPLE1")); break;
        case 0x86: LCM_TRY(tuple_n(u, 2, "TUPLE2")); break;
        case 0x87: LCM_TRY(tuple_n(u, 3, "TUPLE3")); break;
        case 's': LCM_TRY(fill_container(u, false, 2, V_DICT, "SETITEM")); break;
        case 'u': LCM_TRY(fill_container(u, true, 2, V_DICT, "SETITEMS")); break;
        case 'a': LCM_TRY(fill_container(u, false, 1, V_LIST, "APPEND")); break;
        case 'e': LCM_TRY(fill_container(u, true, 1, V_LIST, "APPENDS")); break;
        case 'q': LCM_TRY(unpickle_take(u, 1, &b)); LCM_TRY(memo_put(u, b[0])); break;    // BINPUT
        case 'r': LCM_TRY(unpickle_take(u, 4, &b)); LCM_TRY(memo_put(u, unpickle_le(b, 4))); break; // LONG_BINPUT
        case 0x94: LCM_TRY(memo_put(u, u->memo_entries)); break; // MEMOIZE
        case 'h': LCM_TRY(unpickle_take(u, 1, &b)); LCM_TRY(memo_get(u, b[0])); break;    // BINGET
        case 'j': LCM_TRY(unpickle_take(u, 4, &b)); LCM_TRY(memo_get(u, unpickle_le(b, 4))); break; // LONG_BINGET
        case '0': { // POP
            value *v = NULL;
            LCM_TRY(pop(u, "POP", &v));
            break;
        }
        case 'c': LCM_TRY(op_global(u)); break;         // GLOBAL
        case 0x93: LCM_TRY(op_stack_global(u)); break;  // STACK_GLOBAL
        case 'R': LCM_TRY(op_reduce(u)); break;         // REDUCE
        case 'b': LCM_TRY(op_build(u)); break;          // BUILD
        case 'Q': LCM_TRY(op_persistent_id(u)); break;  // BINPERSID
        default:
            return lcm_fail(LCM_ERR_UNSUPPORTED,
                            "%s: pickle opcode 0x%02x ('%c') at byte %zu is not allowed in a torch "
                            "checkpoint",
                            u->label, op, op >= 0x20 && op < 0x7f ? op : '?',
                            (size_t)(u->p - 1 - u->start));
        }
    }
}
