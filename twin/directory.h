/*
 * directory.h - the Thing Description directory: every TD the runtime knows,
 * in memory for lookups, listing and search, persisted in SQLite.
 *
 * The directory keeps, per Thing id, the TD consumers see (for an agent's
 * Thing: the derived twin TD), the owner's agent id ("" for a TD registered
 * through the W3C TDD API by an admin), the agent's original TD and the W3C
 * Discovery registration info (created, modified, expires, ttl). Entries are
 * held in an order-statistic tree sorted by id, so a page at any offset costs
 * O(log n + limit) and search never touches SQLite (@type values are
 * indexed per Thing; JSONPath runs over a cached array of every TD, rebuilt
 * after writes, split over threads). Stored TDs are immutable: a replace or
 * patch installs a new object. Ids starting with "dtw:" are agents' twins:
 * only their agent writes them (an admin may delete them).
 *
 * Writes (put, patch, delete, purge) are validated first (td_validate.h: a
 * rejected TD changes nothing), then applied in memory and written to SQLite
 * through the store's single writer; they return once the change is durable
 * (unless tw_dir_put_opts.nowait). Every write gets the next value of the
 * change sequence: the sequence is the directory's ETag, and every change is
 * appended to a bounded change feed (thing_created with the full TD,
 * thing_updated with the RFC 7396 merge patch from the old to the new TD,
 * thing_deleted with none), kept in SQLite for replay after a given sequence
 * and pushed in-process to subscribers.
 *
 * Ownership: TDs passed in are borrowed (copied when stored). TDs returned
 * (tw_dir_get, tw_dir_list, tw_dir_search) are new references the caller owns,
 * but their nested members are shared with the directory: treat them as
 * read-only (json_deep_copy() before modifying). Query results likewise.
 *
 * Thread-safety: every function is thread-safe (a reader-writer lock: reads
 * run concurrently, writes are serialised). Subscriber callbacks run on the
 * writing thread while the directory's write lock is held, in sequence order:
 * they must be quick, must not block and must not call into the directory.
 */
#ifndef TW_TWIN_DIRECTORY_H
#define TW_TWIN_DIRECTORY_H

#include "runtime/store.h"
#include "runtime/tw.h"

#include <jansson.h>

typedef struct tw_dir tw_dir;

typedef struct tw_dir_opts {
    size_t max_things;        /* directory capacity; default 1,000,000 (TW_EFULL beyond) */
    size_t max_changes;       /* change feed rows kept in SQLite; default 10,000 */
    size_t max_td_bytes;      /* encoded TD size limit; default 1 MiB (TW_ETOOBIG) */
    size_t max_query_results; /* JSONPath result nodes; default 100,000 (TW_ETOOBIG) */
} tw_dir_opts;

/* Opens the directory on store s (borrowed; must outlive the directory):
 * migrates the "twin_dir" tables and loads every stored TD into memory.
 * opts may be NULL for the defaults. */
int tw_dir_open(tw_store *s, const tw_dir_opts *opts, tw_dir **out);
/* Waits for pending writes, frees everything. Subscribers must be gone. */
void tw_dir_close(tw_dir *d);

/* Options of a write. All optional (a zeroed struct or NULL). */
typedef struct tw_dir_put_opts {
    const char *agent_id; /* owner; NULL or "" = directory-only TD (no agent) */
    json_t *agent_td;     /* the agent's original TD (borrowed), kept beside the twin TD */
    int64_t ttl_s;        /* registration ttl in seconds; 0 = the TD's registration.ttl,
                             or none (never expires) */
    bool skip_validate;   /* the caller validated already (twin TDs derived in-process) */
    bool nowait;          /* do not wait for the commit (bulk loads, benchmarks) */
    bool take;            /* td is handed over (its reference is stolen, also on errors)
                             and stored without a copy */
} tw_dir_put_opts;

/*
 * Creates or replaces the TD with id `id` (td borrowed and copied, unless
 * opts->take). If td has an "id" member it must equal id (TW_EINVAL); if it
 * has none, id is added. A
 * "registration" member in td is not stored: registration info is the
 * directory's (its "ttl", if present, is used as the ttl). *created tells
 * whether the Thing was new (HTTP 201) or replaced (204); may be NULL.
 * Errors: TW_EINVAL with *problem a 400 problem carrying
 * "validationErrors":[{field,description}]; TW_ETOOBIG; TW_EFULL; TW_EDB.
 * problem may be NULL. Replacing a Thing owned by another agent, or writing
 * a "dtw:" id without an agent: TW_EPERM (403 problem).
 */
int tw_dir_put(tw_dir *d, const char *id, json_t *td, const tw_dir_put_opts *opts, bool *created,
               json_t **problem);

/* Registers td (which must have no "id") under a new id "urn:uuid:<v4>";
 * *id_out (malloc'd) names it. Same errors as tw_dir_put. */
int tw_dir_create_anonymous(tw_dir *d, json_t *td, const tw_dir_put_opts *opts, char **id_out,
                            json_t **problem);

/* Applies an RFC 7396 merge patch to a stored TD, validates the result and
 * replaces it. The id cannot be changed by the patch (TW_EINVAL).
 * TW_ENOTFOUND when there is no such Thing. agent_id: as in tw_dir_put_opts
 * (the owner must match; NULL = admin). */
int tw_dir_patch(tw_dir *d, const char *id, const json_t *patch, const char *agent_id,
                 json_t **problem);

/* Deletes a Thing (and emits thing_deleted). agent_id NULL = admin (any
 * Thing); otherwise it must own the Thing (TW_EPERM). TW_ENOTFOUND if absent. */
int tw_dir_delete(tw_dir *d, const char *id, const char *agent_id);

/* The TD with "registration":{created,modified,expires?,ttl?,retrieved}
 * (RFC 3339; retrieved = now). TW_ENOTFOUND if absent or expired (expired
 * Things are purged, with thing_deleted, by tw_dir_purge_expired, which the
 * twin runs every second). */
int tw_dir_get(tw_dir *d, const char *id, json_t **td_out);

/* What the directory keeps about one Thing beside its TD. */
typedef struct tw_dir_info {
    char agent_id[TW_ID_MAX]; /* "" for a directory-only TD */
    int64_t created_ms;
    int64_t modified_ms;
    int64_t expires_ms; /* 0 = never */
    int64_t ttl_s;      /* 0 = none */
    uint64_t seq;       /* change sequence of the last write to this Thing */
} tw_dir_info;

/* Info and, if the out pointers are not NULL, new references to the stored
 * TD (without registration) and the agent's original TD (NULL if none). */
int tw_dir_get_info(tw_dir *d, const char *id, tw_dir_info *info, json_t **td_out,
                    json_t **agent_td_out);

/* Number of Things. */
size_t tw_dir_count(tw_dir *d);

/* The current change sequence: bumps on every write; use it as the ETag of
 * the listing ("W/\"<seq>\""). 0 for a directory never written. */
uint64_t tw_dir_etag(tw_dir *d);

/*
 * A page of the listing, sorted by id (byte order): a new array of at most
 * limit TDs (with registration info) starting at offset. Offset past the end
 * gives an empty array; limit 0 gives an empty array; a huge limit is capped
 * at the number of Things. *total (may be NULL) is the number of Things and
 * *etag (may be NULL) the sequence the page was read at.
 */
int tw_dir_list(tw_dir *d, size_t offset, size_t limit, json_t **page, size_t *total,
                uint64_t *etag);

/* Filters of tw_dir_search; NULL or "" members match everything. All given
 * filters must match. */
typedef struct tw_dir_filter {
    const char *type;  /* exact match of the TD's @type (string or any array item) */
    const char *title; /* case-insensitive substring of title */
    const char *name;  /* a property, action or event with this name */
    const char *agent; /* owner agent id; "-" matches directory-only TDs */
} tw_dir_filter;

/* Like tw_dir_list over the Things that match f (total = matches). */
int tw_dir_search(tw_dir *d, const tw_dir_filter *f, size_t offset, size_t limit, json_t **page,
                  size_t *total);

/*
 * Evaluates a JSONPath query (grammar in jsonpath.h) over the array of every
 * stored TD (sorted by id, without registration info) and returns a new array
 * of the matched nodes. Bad query: TW_EINVAL with *problem a 400 problem whose
 * detail names the offset where parsing failed ("field" is "query"). More
 * than max_query_results nodes: TW_ETOOBIG.
 */
int tw_dir_query(tw_dir *d, const char *jsonpath, json_t **result, json_t **problem);

/* Deletes every Thing whose registration expired before now_ms (emitting
 * thing_deleted for each); *purged (may be NULL) counts them. */
int tw_dir_purge_expired(tw_dir *d, int64_t now_ms, size_t *purged);

/* The change feed. */
typedef enum {
    TW_DIR_CREATED = 1, /* thing_created */
    TW_DIR_UPDATED = 2, /* thing_updated */
    TW_DIR_DELETED = 4, /* thing_deleted */
} tw_dir_change_kind;

/* "thing_created", "thing_updated", "thing_deleted". */
const char *tw_dir_change_name(tw_dir_change_kind k);
/* 0 when unknown. */
tw_dir_change_kind tw_dir_change_parse(const char *name);

typedef struct tw_dir_change {
    uint64_t seq; /* the SSE event id */
    tw_dir_change_kind kind;
    const char *id; /* the Thing */
    json_t *data;   /* created: the full TD; updated: the merge patch; deleted: NULL */
    int64_t ts_ms;
} tw_dir_change;

/* Called once per change; ch and its members are borrowed for the call. */
typedef void (*tw_dir_change_fn)(void *ctx, const tw_dir_change *ch);

/*
 * Replays stored changes with seq > after, oldest first, whose kind is in
 * kinds (a mask of tw_dir_change_kind; 0 = all), at most max (0 = no limit).
 * Read from SQLite in the calling thread. *oldest (may be NULL) is the oldest
 * seq still kept: if after+1 < oldest, some changes were dropped (the feed is
 * bounded) and the client should re-list.
 */
int tw_dir_changes(tw_dir *d, uint64_t after, int kinds, size_t max, tw_dir_change_fn fn, void *ctx,
                   uint64_t *oldest);

/*
 * Registers fn for every new change (see thread-safety above). *handle
 * identifies the registration for tw_dir_unsubscribe. Live changes are
 * pushed before they are committed, so to serve a client that resumes
 * after sequence N without a gap or a duplicate: subscribe first and buffer
 * what arrives, replay tw_dir_changes(after N) up to the first buffered seq,
 * then send the buffer.
 */
int tw_dir_subscribe(tw_dir *d, tw_dir_change_fn fn, void *ctx, uint64_t *handle);
void tw_dir_unsubscribe(tw_dir *d, uint64_t handle);

#endif
