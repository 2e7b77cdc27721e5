/*
 * dir_int.h - what the files of the directory share (directory.c: entries,
 * writes, reads, search; dir_tree.c: the order-statistic tree; dir_feed.c:
 * the change feed). Not for other modules: they use directory.h.
 *
 * Locking: tw_dir.lock (a rwlock) guards by_id, type_ids, the tree, seq,
 * next_expiry and the listeners; snap_mu serialises rebuilding the scan
 * array and the JSONPath snapshot (taken before the read lock, never after).
 */
#ifndef TW_TWIN_DIR_INT_H
#define TW_TWIN_DIR_INT_H

#include "runtime/hmap.h"
#include "twin/directory.h"
#include "twin/intern.h"

#include <pthread.h>

#define MOD "twin.dir"

typedef struct entry {
    char *id;
    json_t *td;     /* immutable once stored */
    char *agent_td; /* the agent's TD, compact JSON (parsed on demand), or NULL */
    tw_dir_info info;
    /* @type values as small ids (tw_dir.type_ids), for search without
     * touching the TD; types_more: more than TYPES_MAX, look in the TD */
    uint8_t ntypes;
    bool types_more;
    uint32_t types[6];
    /* seq of this Thing's thing_created row while that row's data is still
     * NULL (the TD is the one in twin_things); 0 once filled in */
    uint64_t create_seq;
    /* treap */
    struct entry *l, *r;
    uint32_t prio;
    size_t size;
} entry;

/* An entry in the scan array: its @type ids copied so a scan by type reads
 * one contiguous array. */
typedef struct snap_item {
    entry *e;
    uint32_t types[6];
    uint8_t ntypes;
    bool types_more;
} snap_item;

typedef struct listener {
    uint64_t handle;
    tw_dir_change_fn fn;
    void *ctx;
} listener;

struct tw_dir {
    tw_store *store;
    tw_dir_opts opts;
    pthread_rwlock_t lock;
    tw_hmap by_id;    /* id -> entry* */
    tw_hmap type_ids; /* @type value -> (uintptr_t) small id; grows only */
    uint32_t ntype_ids;
    entry *root; /* treap by id */
    uint64_t seq;
    uint64_t rng;
    int64_t next_expiry; /* earliest registration expiry (0 = none); may be early */
    tw_intern *intern;   /* shared string and number leaves of the stored TDs */
    listener *listeners;
    size_t nlisteners;
    uint64_t next_handle;
    /* Built on demand after writes, under snap_mu (then read under the read
     * lock): the entries in id order as one array with their @type ids
     * inline, for searches that scan (no tree walk, no TD touched), and the
     * array of every TD for JSONPath queries. */
    pthread_mutex_t snap_mu;
    struct snap_item *items;
    size_t nitems, cap_items;
    uint64_t items_seq;
    bool items_valid;
    json_t *snap;
    uint64_t snap_seq;
    /* the TDs of one @type for narrowed JSONPath queries (the last type
     * asked for), valid for tsnap_seq */
    json_t *tsnap;
    char *tsnap_type;
    uint64_t tsnap_seq;
};

/* ---- dir_tree.c: a treap ordered by id whose nodes count their subtree,
 * so the k-th entry is found in O(log n). Callers hold the write lock to
 * change it and at least the read lock to walk it. */

size_t dir_tree_size(const entry *t);
/* Inserts e (prio set, size 1, no children); returns the new root. */
entry *dir_tree_insert(entry *t, entry *e);
/* Unlinks the entry with that id (not freed); returns the new root. */
entry *dir_tree_erase(entry *t, const char *id);
/* Puts e in place of the entry with e's id; returns the new root. */
entry *dir_tree_replace(entry *t, entry *e);
typedef bool (*dir_visit_fn)(void *ctx, entry *e); /* false = stop */
/* In-order walk from rank `from`; false if fn stopped it. */
bool dir_tree_walk(entry *t, size_t from, dir_visit_fn fn, void *ctx);

/* ---- dir_feed.c ---- */

/* Tells every subscriber about the change with sequence d->seq (write lock
 * held). */
void dir_notify(tw_dir *d, tw_dir_change_kind kind, const char *id, json_t *data, int64_t ts);

#endif
