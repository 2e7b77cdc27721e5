/*
 * intern.h - one shared copy of each string and number leaf of the stored
 * TDs.
 *
 * A fleet's TDs repeat the same leaves thousands of times ("number",
 * "readproperty", units, titles of the same model's affordances). The
 * directory hands every TD it stores to tw_intern_tree(), which replaces each
 * string and number leaf by the canonical equal one, so those leaves exist
 * once however many TDs use them. This relies on stored TDs being immutable
 * (directory.h): a shared leaf is never modified. The table holds one
 * reference per canonical leaf; tw_intern_sweep() drops the leaves no TD
 * uses any more (reference count 1: only the table can reach them).
 *
 * Thread-safe (one mutex).
 */
#ifndef TW_TWIN_INTERN_H
#define TW_TWIN_INTERN_H

#include <jansson.h>
#include <stddef.h>

typedef struct tw_intern tw_intern;

tw_intern *tw_intern_new(void);
void tw_intern_free(tw_intern *in);

/* Canonicalises the leaves of tree, which the caller must own exclusively
 * (no other reference to it or its containers). Never fails: a leaf that
 * cannot be added (out of memory) is simply kept as it is. */
void tw_intern_tree(tw_intern *in, json_t *tree);

/* Drops canonical leaves only the table still references; returns how many.
 * With force false it only runs when the table doubled since the last sweep. */
size_t tw_intern_sweep(tw_intern *in, int force);

/* Canonical leaves held. */
size_t tw_intern_count(tw_intern *in);

#endif
