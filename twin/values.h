/*
 * values.h - the value store: the latest value and timestamp of every
 * property and event of every twin.
 *
 * Updates (agent notifications, through the router) only touch memory: a
 * hash of twins, each with a hash of (kind, name) -> {value, ts}. Changed
 * entries are marked dirty; a background flusher collects the dirty set every
 * flush period (or as soon as it grows past the batch size) and writes it to
 * SQLite as ONE store job per batch (write-behind). Updates that arrive
 * between two flushes coalesce, so an agent flooding updates never waits on
 * SQLite and the store sees at most one row write per key per batch.
 * tw_values_open() reloads every stored value; tw_values_close() flushes.
 *
 * A property update whose value equals the stored one (json_equal) still
 * refreshes the timestamp, but reports changed=false.
 *
 * Ownership: values passed in are borrowed and kept by reference (callers
 * must not modify them afterwards: message values are immutable); values
 * returned are new references, to be treated as read-only.
 *
 * Thread-safety: every function is thread-safe.
 */
#ifndef TW_TWIN_VALUES_H
#define TW_TWIN_VALUES_H

#include "runtime/store.h"
#include "runtime/twin_ops.h"

typedef struct tw_values tw_values;

typedef struct tw_values_opts {
    int flush_ms;       /* write-behind period; default 100 */
    size_t batch;       /* dirty entries that trigger an early flush; default 8192 */
    size_t max_entries; /* total (twin, kind, name) keys; default 10,000,000 (TW_EFULL) */
} tw_values_opts;

/* Opens the value store on s (borrowed; must outlive it): migrates the
 * "twin_values" tables, reloads values, starts the flusher. */
int tw_values_open(tw_store *s, const tw_values_opts *opts, tw_values **out);
/* Stops the flusher after a final flush and frees everything. */
void tw_values_close(tw_values *v);

/* Stores a value. kind is TW_AFF_PROPERTY or TW_AFF_EVENT (TW_EINVAL
 * otherwise). *changed (may be NULL): the value differs from the stored one
 * (always true for events and for a first value). */
int tw_values_set(tw_values *v, const char *twin_id, tw_aff_kind kind, const char *name,
                  json_t *value, int64_t ts_ms, bool *changed);

/* The latest value and its timestamp; TW_ENOTFOUND when none. ts may be NULL. */
int tw_values_get(tw_values *v, const char *twin_id, tw_aff_kind kind, const char *name,
                  json_t **value, int64_t *ts_ms);

/* A new object {name: value} of every value of that kind of a twin (empty
 * object when none). If with_ts, each member is {"value":..,"timestamp":..}. */
int tw_values_get_all(tw_values *v, const char *twin_id, tw_aff_kind kind, bool with_ts,
                      json_t **out);

/* Deletes every value of a twin (memory now, SQLite in the next batch). */
int tw_values_delete_twin(tw_values *v, const char *twin_id);

/* Writes every dirty value now and waits for the commit. */
int tw_values_flush(tw_values *v);

typedef struct tw_values_stats {
    uint64_t updates; /* tw_values_set calls */
    uint64_t flushed; /* rows written */
    uint64_t batches; /* store jobs submitted */
    size_t entries;   /* keys in memory */
} tw_values_stats;
void tw_values_get_stats(tw_values *v, tw_values_stats *out);

#endif
