/*
 * hmap.h - a string-keyed hash map (open addressing, linear probing,
 * tombstones) used by the registry, the router and the rate limiter.
 *
 * The map copies keys; values are borrowed pointers. Not thread-safe: the
 * owner locks. Iteration order is unspecified.
 */
#ifndef TW_HMAP_H
#define TW_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tw_hmap {
    struct tw_hmap_slot *slots;
    size_t cap;  /* power of two, or 0 */
    size_t len;  /* live entries */
    size_t used; /* live + tombstones */
} tw_hmap;

void tw_hmap_init(tw_hmap *m);
void tw_hmap_fini(tw_hmap *m); /* frees keys, not values */
void *tw_hmap_get(const tw_hmap *m, const char *key);
/* Inserts or replaces; returns the previous value (or NULL). *err set to -1
 * on allocation failure (then nothing changed). */
void *tw_hmap_put(tw_hmap *m, const char *key, void *value, int *err);
void *tw_hmap_del(tw_hmap *m, const char *key);
/* Iteration: start with *pos = 0; returns 0 when done. */
int tw_hmap_next(const tw_hmap *m, size_t *pos, const char **key, void **value);
uint64_t tw_hash_str(const char *s);

#endif
