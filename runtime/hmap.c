/*
 * hmap.c - open addressing with linear probing. Deletions leave tombstones
 * that are dropped at the next resize; the table grows at 70 % occupancy
 * (live + tombstones) so probes stay short.
 */
#include "hmap.h"

#include <stdlib.h>
#include <string.h>

static char tombstone_key;
#define TOMBSTONE (&tombstone_key)

struct tw_hmap_slot {
    char *key; /* NULL empty, TOMBSTONE deleted */
    uint64_t hash;
    void *value;
};

uint64_t tw_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

void tw_hmap_init(tw_hmap *m)
{
    memset(m, 0, sizeof *m);
}

void tw_hmap_fini(tw_hmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMBSTONE) free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static struct tw_hmap_slot *find(const tw_hmap *m, const char *key, uint64_t h)
{
    if (!m->cap) return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct tw_hmap_slot *s = &m->slots[i];
        if (!s->key) return NULL;
        if (s->key != TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0) return s;
    }
}

void *tw_hmap_get(const tw_hmap *m, const char *key)
{
    struct tw_hmap_slot *s = find(m, key, tw_hash_str(key));
    return s ? s->value : NULL;
}

static int resize(tw_hmap *m, size_t cap)
{
    struct tw_hmap_slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        struct tw_hmap_slot *s = &m->slots[i];
        if (!s->key || s->key == TOMBSTONE) continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->len;
    return 0;
}

void *tw_hmap_put(tw_hmap *m, const char *key, void *value, int *err)
{
    uint64_t h = tw_hash_str(key);
    if (err) *err = 0;
    struct tw_hmap_slot *s = find(m, key, h);
    if (s) {
        void *old = s->value;
        s->value = value;
        return old;
    }
    if ((m->used + 1) * 10 >= m->cap * 7) {
        size_t cap = m->cap ? m->cap : 16;
        while ((m->len + 1) * 10 >= cap * 7 / 2)
            cap *= 2;
        if (resize(m, cap)) {
            if (err) *err = -1;
            return NULL;
        }
    }
    char *k = strdup(key);
    if (!k) {
        if (err) *err = -1;
        return NULL;
    }
    size_t mask = m->cap - 1, i = h & mask;
    while (m->slots[i].key && m->slots[i].key != TOMBSTONE)
        i = (i + 1) & mask;
    if (!m->slots[i].key) m->used++;
    m->slots[i] = (struct tw_hmap_slot){k, h, value};
    m->len++;
    return NULL;
}

void *tw_hmap_del(tw_hmap *m, const char *key)
{
    struct tw_hmap_slot *s = find(m, key, tw_hash_str(key));
    if (!s) return NULL;
    void *v = s->value;
    free(s->key);
    s->key = TOMBSTONE;
    s->value = NULL;
    m->len--;
    return v;
}

int tw_hmap_next(const tw_hmap *m, size_t *pos, const char **key, void **value)
{
    for (; *pos < m->cap; (*pos)++) {
        struct tw_hmap_slot *s = &m->slots[*pos];
        if (s->key && s->key != TOMBSTONE) {
            if (key) *key = s->key;
            if (value) *value = s->value;
            (*pos)++;
            return 1;
        }
    }
    return 0;
}
