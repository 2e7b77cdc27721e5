/*
 * intern.c - the leaf table of intern.h: open addressing with linear
 * probing over (hash, leaf) slots, no tombstones (a sweep rebuilds the
 * table). Strings hash their bytes, numbers their 8 bytes, with the type
 * mixed in so 1 and 1.0 and "1" stay apart.
 */
#include "twin/intern.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct slot {
    uint64_t hash;
    json_t *leaf; /* NULL = empty */
} slot;

struct tw_intern {
    pthread_mutex_t mu;
    slot *slots;
    size_t cap, len;
    size_t len_after_sweep;
};

static uint64_t fnv(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t leaf_hash(const json_t *j)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)json_typeof(j);
    if (json_is_string(j)) return fnv(json_string_value(j), json_string_length(j), h);
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        return fnv(&v, sizeof v, h);
    }
    double d = json_real_value(j);
    return fnv(&d, sizeof d, h);
}

static bool leaf_equal(const json_t *a, const json_t *b)
{
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_string(a))
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    if (json_is_integer(a)) return json_integer_value(a) == json_integer_value(b);
    double x = json_real_value(a), y = json_real_value(b);
    return memcmp(&x, &y, sizeof x) == 0; /* -0.0 and 0.0 stay apart */
}

tw_intern *tw_intern_new(void)
{
    tw_intern *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    pthread_mutex_init(&in->mu, NULL);
    return in;
}

void tw_intern_free(tw_intern *in)
{
    if (!in) return;
    for (size_t i = 0; i < in->cap; i++)
        json_decref(in->slots[i].leaf);
    free(in->slots);
    pthread_mutex_destroy(&in->mu);
    free(in);
}

/* Puts (hash, leaf) in a table known to have room. */
static void place(slot *slots, size_t cap, uint64_t hash, json_t *leaf)
{
    size_t i = (size_t)hash & (cap - 1);
    while (slots[i].leaf)
        i = (i + 1) & (cap - 1);
    slots[i] = (slot){hash, leaf};
}

static bool grow(tw_intern *in)
{
    size_t cap = in->cap ? in->cap * 2 : 1024;
    slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return false;
    for (size_t i = 0; i < in->cap; i++)
        if (in->slots[i].leaf) place(slots, cap, in->slots[i].hash, in->slots[i].leaf);
    free(in->slots);
    in->slots = slots;
    in->cap = cap;
    return true;
}

/* The canonical leaf equal to j (borrowed), adding j if there is none. */
static json_t *canonical(tw_intern *in, json_t *j)
{
    uint64_t h = leaf_hash(j);
    if (in->cap) {
        for (size_t i = (size_t)h & (in->cap - 1); in->slots[i].leaf; i = (i + 1) & (in->cap - 1))
            if (in->slots[i].hash == h && leaf_equal(in->slots[i].leaf, j))
                return in->slots[i].leaf;
    }
    if ((in->len + 1) * 2 > in->cap && !grow(in)) return j; /* keep at most half full */
    place(in->slots, in->cap, h, json_incref(j));
    in->len++;
    return j;
}

static bool is_leaf(const json_t *j)
{
    return json_is_string(j) || json_is_integer(j) || json_is_real(j);
}

static void walk(tw_intern *in, json_t *node, int depth)
{
    if (depth > MAX_DEPTH) return;
    if (json_is_object(node)) {
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach(node, k, klen, v)
        {
            if (is_leaf(v)) {
                json_t *c = canonical(in, v);
                /* replaces the value of an existing key: iteration goes on */
                if (c != v) json_object_setn_nocheck(node, k, klen, c);
            } else {
                walk(in, v, depth + 1);
            }
        }
    } else if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v)
        {
            if (is_leaf(v)) {
                json_t *c = canonical(in, v);
                if (c != v) json_array_set(node, i, c);
            } else {
                walk(in, v, depth + 1);
            }
        }
    }
}

void tw_intern_tree(tw_intern *in, json_t *tree)
{
    pthread_mutex_lock(&in->mu);
    walk(in, tree, 0);
    pthread_mutex_unlock(&in->mu);
}

size_t tw_intern_sweep(tw_intern *in, int force)
{
    size_t dropped = 0;
    pthread_mutex_lock(&in->mu);
    if (force || in->len >= 2 * in->len_after_sweep + 1024) {
        slot *old = in->slots;
        size_t cap = in->cap;
        in->slots = calloc(cap ? cap : 1, sizeof *in->slots);
        if (!in->slots) {
            in->slots = old; /* keep everything; try again next time */
        } else {
            for (size_t i = 0; i < cap; i++) {
                json_t *leaf = old[i].leaf;
                if (!leaf) continue;
                /* only the table holds it: no TD, no reader can reach it */
                if (__atomic_load_n(&leaf->refcount, __ATOMIC_ACQUIRE) == 1) {
                    json_decref(leaf);
                    dropped++;
                } else {
                    place(in->slots, cap, old[i].hash, leaf);
                }
            }
            free(old);
            in->len -= dropped;
            in->len_after_sweep = in->len;
        }
    }
    pthread_mutex_unlock(&in->mu);
    return dropped;
}

size_t tw_intern_count(tw_intern *in)
{
    pthread_mutex_lock(&in->mu);
    size_t n = in->len;
    pthread_mutex_unlock(&in->mu);
    return n;
}
