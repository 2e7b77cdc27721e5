/*
 * store.h - the one SQLite database of a data directory (DESIGN.md section 6).
 *
 * WAL mode, synchronous=FULL. A single writer thread owns every write: callers
 * submit jobs, the writer runs all pending jobs inside one transaction (each
 * in its own SAVEPOINT, so a failing job rolls back alone) and commits them as
 * a group. A caller that needs durability either waits (tw_store_exec) or is
 * called back after the commit (tw_store_submit's done). Reads run in the
 * calling thread on a pooled read-only connection (WAL readers never block
 * the writer).
 *
 * Schema: every module versions its own tables with tw_store_migrate().
 *
 * All functions are thread-safe. Job functions run on the writer thread (or
 * the reading thread for tw_store_read) and must not call back into the
 * store's blocking functions.
 */
#ifndef TW_STORE_H
#define TW_STORE_H

#include "tw.h"

#include <sqlite3.h>

typedef struct tw_store tw_store;
/* A job's view of its connection; valid only during the job. */
typedef struct tw_store_tx tw_store_tx;

typedef struct tw_store_opts {
    int max_batch;           /* jobs per transaction at most; default 4096 */
    bool synchronous_normal; /* for tests/benchmarks only: NORMAL instead of FULL */
    /* how long write-behind jobs may wait for company (tw_store_submit_behind);
     * 0 (the default): not at all */
    int behind_linger_ms;
    /* keep the writer at normal priority for write-behind batches too
     * (see store.c, "Priority") */
    bool no_idle_priority;
    /* an idle batch later than this is lifted to normal priority; 0: 100 */
    int idle_max_wait_ms;
} tw_store_opts;

/* Opens (creating if needed, mode 0600) the database at path. opts may be NULL. */
int tw_store_open(const char *path, const tw_store_opts *opts, tw_store **out);
/* Commits everything submitted so far, stops the writer, closes. */
void tw_store_close(tw_store *s);

/* A job: return 0 to keep its changes, a negative TW_E* to roll them back. */
typedef int (*tw_store_job_fn)(tw_store_tx *tx, void *arg);
/* Called on the writer thread once the job's transaction is durable (rc is
 * the job's result, or TW_EDB if the commit failed). */
typedef void (*tw_store_done_fn)(void *arg, int rc);

/* Queues a write job. done may be NULL (write-behind). Never blocks on I/O;
 * returns TW_ECLOSED after close started. */
int tw_store_submit(tw_store *s, tw_store_job_fn fn, void *arg, tw_store_done_fn done);
/* Like tw_store_submit, for a job that never leaves a partial change behind
 * when it fails (one statement whose constraints are all checked before it
 * writes, e.g. INSERT OR FAIL of one row): it runs without a SAVEPOINT of its
 * own, which spares copying every page it touches into the savepoint
 * journal. Should such a job fail after changing rows anyway, the store rolls
 * back the whole transaction and its jobs report TW_EDB (nothing is lost
 * silently). */
int tw_store_submit_atomic(tw_store *s, tw_store_job_fn fn, void *arg, tw_store_done_fn done);
/* Like tw_store_submit_atomic, for a write-behind job nobody waits for: while
 * only such jobs are pending, the writer lets them gather for up to
 * opts.behind_linger_ms (if set) before it commits them together. Any other
 * job, a flush or close commits them at once. */
int tw_store_submit_behind(tw_store *s, tw_store_job_fn fn, void *arg, tw_store_done_fn done);
/* Runs a write job and waits until it is committed; returns the job's result. */
int tw_store_exec(tw_store *s, tw_store_job_fn fn, void *arg);
/* Runs a read-only job in the calling thread. */
int tw_store_read(tw_store *s, tw_store_job_fn fn, void *arg);
/* Waits until every job submitted before the call is committed. */
int tw_store_flush(tw_store *s);

/* The connection of a job, for sqlite3_* calls. */
sqlite3 *tw_store_db(tw_store_tx *tx);
/* A prepared statement for sql, cached per connection and reset before it is
 * returned; do not finalize it. NULL on error (logged). sql should be a
 * string literal: the cache is keyed by its text. */
sqlite3_stmt *tw_store_stmt(tw_store_tx *tx, const char *sql);
/* Executes SQL without results (DDL, etc.). */
int tw_store_sql(tw_store_tx *tx, const char *sql);

/*
 * Brings the tables of `component` to version nsteps by running steps[v] for
 * every version v not yet applied, each step in its own committed
 * transaction. Blocking; call at start-up.
 */
int tw_store_migrate(tw_store *s, const char *component, const char *const *steps, int nsteps);

/* Puts the writer back to normal priority if it runs a write-behind batch
 * at idle priority (store.c, "Priority"). For a thread about to wait for
 * something the writer may hold (a lock its jobs take). Thread-safe, cheap
 * when there is nothing to do. */
void tw_store_lift(tw_store *s);

/* Statistics for /metrics and benchmarks. */
typedef struct tw_store_stats {
    uint64_t commits;
    uint64_t jobs;
    uint64_t pending; /* jobs submitted but not committed */
} tw_store_stats;
void tw_store_get_stats(tw_store *s, tw_store_stats *out);

#endif
