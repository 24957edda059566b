// The symbol and merge tables of the CLIP tokenizer (text/clip_tokenizer_internal.h): open
// addressing over interned BPE symbols, so that the BPE loop compares and looks up integers.
#include "text/clip_tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static uint64_t hash_bytes(const char *s, size_t n) { // FNV-1a
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_pair(int32_t left, int32_t right) { // splitmix64 finalizer
    uint64_t h = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static bool symbol_equals(const symbol_table *t, int32_t index, const char *s, size_t n) {
    return t->length[index] == n && memcmp(t->text + t->offset[index], s, n) == 0;
}

int32_t clip_symbol_find(const symbol_table *t, const char *s, size_t n) {
    if (t->slot_count == 0) return -1;
    size_t mask = t->slot_count - 1;
    for (size_t slot = hash_bytes(s, n) & mask;; slot = (slot + 1) & mask) {
        int32_t index = t->slots[slot];
        if (index < 0) return -1;
        if (symbol_equals(t, index, s, n)) return index;
    }
}

static lcm_status symbol_rehash(symbol_table *t, size_t slot_count) {
    int32_t *slots = malloc(slot_count * sizeof *slots);
    if (!slots) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for the symbol table");
    for (size_t i = 0; i < slot_count; i++) slots[i] = -1;
    for (int32_t index = 0; index < t->count; index++) {
        size_t slot = hash_bytes(t->text + t->offset[index], t->length[index]) & (slot_count - 1);
        while (slots[slot] >= 0) slot = (slot + 1) & (slot_count - 1);
        slots[slot] = index;
    }
    free(t->slots);
    t->slots = slots;
    t->slot_count = slot_count;
    return LCM_OK;
}

// Returns the index of symbol s, adding it (with no vocab id) when new.
lcm_status clip_symbol_intern(symbol_table *t, const char *s, size_t n, int32_t *index) {
    int32_t found = clip_symbol_find(t, s, n);
    if (found >= 0) {
        *index = found;
        return LCM_OK;
    }
    if (n > UINT32_MAX || t->count >= INT32_MAX / 4)
        return lcm_fail(LCM_ERR_FORMAT, "tokenizer: too many or too long symbols");
    if (t->count == t->cap) {
        int32_t cap = t->cap ? t->cap * 2 : 1024;
        size_t *offset = realloc(t->offset, (size_t)cap * sizeof *offset);
        if (offset) t->offset = offset;
        uint32_t *length = realloc(t->length, (size_t)cap * sizeof *length);
        if (length) t->length = length;
        int32_t *token_id = realloc(t->token_id, (size_t)cap * sizeof *token_id);
        if (token_id) t->token_id = token_id;
        if (!offset || !length || !token_id)
            return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for the symbol table");
        t->cap = cap;
    }
    if (t->text_len + n > t->text_cap) {
        size_t cap = t->text_cap ? t->text_cap : 1 << 16;
        while (cap < t->text_len + n) cap *= 2;
        char *text = realloc(t->text, cap);
        if (!text) return lcm_fail(LCM_ERR_OUT_OF_MEMORY, "tokenizer: out of memory for the symbol table");
        t->text = text;
        t->text_cap = cap;
    }
    // Keep the table at most half full so that probe chains stay short.
    if ((size_t)(t->count + 1) * 2 > t->slot_count)
        LCM_TRY(symbol_rehash(t, t->slot_count ? t->slot_count * 2 : 1 << 12));

    int32_t added = t->count++;
    memcpy(t->text + t->text_len, s, n);
    t->offset[added] = t->text_len;
    t->length[added] = (uint32_t)n;
    t->token_id[added] = -1;
    t->text_len += n;
    size_t mask = t->slot_count - 1;
    size_t slot = hash_bytes(s, n) & mask;
    while (t->slots[slot] >= 0) slot = (slot + 1) & mask;
    t->slots[slot] = added;
    *index = added;
    return LCM_OK;
}

void clip_symbol_table_free(symbol_table *t) {
    free(t->text);
    free(t->offset);
    free(t->length);
    free(t->token_id);
    free(t->slots);
}

const merge_rule *clip_merge_find(const merge_table *m, int32_t left, int32_t right) {
    size_t mask = m->slot_count - 1;
    for (size_t slot = hash_pair(left, right) & mask;; slot = (slot + 1) & mask) {
        const merge_rule *rule = &m->slots[slot];
        if (rule->left < 0) return NULL;
        if (rule->left == left && rule->right == right) return rule;
    }
}

// Like Python's dict(zip(merges, range(n))): a repeated pair keeps the rank of its last line.
void clip_merge_insert(merge_table *m, merge_rule rule) {
    size_t mask = m->slot_count - 1;
    size_t slot = hash_pair(rule.left, rule.right) & mask;
    while (m->slots[slot].left >= 0 &&
           !(m->slots[slot].left == rule.left && m->slots[slot].right == rule.right))
        slot = (slot + 1) & mask;
    m->slots[slot] = rule;
}
