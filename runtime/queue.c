/*
 * queue.c - durable action records, the offline action queue and the
 * per-client inbox, in SQLite through tw_store (DESIGN.md section 3).
 *
 * Tables (component "queue", see steps[] below):
 *   actions         one row per action; `seq` is the INTEGER PRIMARY KEY, so
 *                   rows are appended in queue order. The queue proper is two
 *                   partial indexes over `queued` rows: (agent_id, seq) for
 *                   the drain, a range scan, and (expires) for expiry; an
 *                   action recorded for an online agent never enters them.
 *                   (thing_id, created) serves list and fail_thing. `queued`
 *                   says the row went through the offline queue. `history`
 *                   holds the action's status changes as text, "status
 *                   time;" per change, appended by the statement that
 *                   changes the status. The first entry of a history is not
 *                   stored: it is the row's (first_status, created).
 *   action_history  (action_seq, hseq, status, time): status changes written
 *                   before schema version 2, by a trigger on actions, read
 *                   before the `history` column. The trigger cost a second
 *                   B-tree write, a max() lookup and a trigger frame per
 *                   status change, about a third of a drained action's
 *                   writes (callgrind, drain scenario); the text costs a few
 *                   bytes in a row that is rewritten anyway.
 *   inbox           notifications for offline clients, seq AUTOINCREMENT so
 *                   a replay cursor is never reused even after every entry
 *                   was acknowledged and deleted.
 *
 * One statement per job. The hot jobs (an invokeaction push, a record, an
 * update) each write with ONE statement, INSERT OR FAIL / UPDATE OR FAIL of
 * one row (history included): SQLite checks every
 * constraint before it writes, and with OR FAIL it needs no statement
 * journal, so a failure (a duplicate id) leaves nothing behind and the job
 * can go through tw_store_submit_atomic(), without a savepoint. That halves
 * the writer's work per push (the savepoint's page copies were a third of
 * it). Jobs with several statements (coalescing pushes, fetch, cancel,
 * expire, inbox) keep their savepoint.
 *
 * Durability. tw_queue_push() submits one writer job and reports through its
 * done callback, which the store calls only after the group commit: the
 * sender may be told `queued` from there and the row survives kill -9 (and
 * power loss under synchronous=FULL). record, update, inbox append and ack
 * are write-behind: they return once the job is submitted.
 *
 * Sequence numbers. seq values are assigned by counters that only the writer
 * thread touches (actions) or that are taken under a mutex together with the
 * submission (inbox, whose seq the caller gets back before the commit), so
 * they grow in submission order. Gaps (a rolled back job) are harmless.
 *
 * Answering update/cancel without waiting for the writer. tw_queue_update()
 * must say TW_ENOTFOUND or TW_ECONFLICT at once, yet the row it concerns may
 * sit in a write-behind job that is not committed yet (an agent on loopback
 * answers well within the few ms of a group commit). Reading only committed
 * state would answer "not found" to exactly the fast, common case. So the
 * queue keeps a small in-memory map, `pending`, of the actions whose status
 * changes are decided but not yet committed (action id -> latest decided
 * status, number of jobs still in flight). Every decision that moves an
 * action to a status is taken under q->mu: the map first, then committed
 * state (a read connection from callers, the writer's own connection from
 * jobs, which also sees every earlier job). Entries are dropped only after
 * the commit, under the same mutex, so a caller that does not find an entry
 * is guaranteed that the committed row is at least as new as every decision.
 * Jobs for the same action are submitted under q->mu in decision order.
 * Pushes stay out of the map: a pushed action exists for nobody until its
 * done callback says it is committed (the sender learns its status there). The
 * map holds in-flight work (bounded by PEND_MAX: beyond it the caller waits
 * for a flush, back-pressure), never the queue itself: a queue of a million
 * rows costs SQLite pages, not memory, and every fetch/expire/list is paged.
 *
 * Settled entries. Once the last job carrying a decision is committed, its
 * entry is not dropped but kept as the committed status ("settled"), for the
 * SETTLED_MAX most recent settlements (a ring). The answer to a drained or
 * live action comes moments after its claim or record committed; without
 * the entry, every answer cost a read transaction on a read connection
 * (whose page cache every commit invalidates). A decision whose job failed
 * is dropped instead (the database did not change). A miss still reads
 * committed state, outside q->mu: per hash slot, a counter of dropped
 * entries tells whether the read may have raced with a decision that was
 * committed and dropped meanwhile, and then it is read again under q->mu.
 * Pruning may delete a row whose final status is still remembered: an
 * update of it then answers TW_ECONFLICT rather than TW_ENOTFOUND.
 *
 * Fetch claims rows in a writer job (so two concurrent fetches of the same
 * agent can never hand out the same row: the writer runs one job at a time
 * and the second one sees the first one's `delivered`), and returns as soon
 * as that job ran, without waiting for its commit (write-behind, as the
 * header says). If the process dies before that commit the rows are still
 * `queued` and are delivered again: delivery is at least once.
 *
 * Inbox bounds: at most INBOX_MAX_PER_CLIENT entries per client (the oldest
 * are dropped as new ones arrive, with an exact per-client count cached in a
 * small writer-only table) and nothing older than INBOX_MAX_AGE_MS (pruned
 * from the writer at most once a minute, and never replayed).
 *
 * Ownership: returned tw_action values belong to the caller. tw_inbox_cb gets
 * a borrowed message: take a reference (tw_msg_ref) to keep it. When
 * tw_queue_push returns an error (TW_EEXPIRED, TW_EINVAL, ...) its done
 * callback is never called.
 *
 * Threads: every public function is thread-safe. None may be called from
 * inside a store job. From a done callback (the writer thread, between
 * transactions) all may be called but close: fetch/cancel/expire/fail_thing
 * then run inline on the writer, and get/list/history/replay read committed
 * state without first waiting for write-behind jobs.
 */
#include "queue.h"

#include "hmap.h"
#include "json_enc.h"
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MOD "queue"
#define PEND_MAX (1u << 18)
#define PEND_GENS 4096
#define SETTLED_MAX 16384
#define FETCH_MAX 10000
#define LIST_MAX 1000
#define PAGE 512
#define INBOX_MAX_PER_CLIENT 10000
#define INBOX_MAX_AGE_MS (7LL * 24 * 3600 * 1000)
#define INBOX_PRUNE_EVERY_MS 60000
#define INBOX_SLOTS 1024
#define SUPERSEDE_MAX 8

static const char *const steps[] = {
    "CREATE TABLE actions("
    " seq INTEGER PRIMARY KEY,"
    " id TEXT NOT NULL UNIQUE,"
    " thing_id TEXT NOT NULL,"
    " agent_id TEXT NOT NULL,"
    " sender_id TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " correlation_id TEXT,"
    " op TEXT NOT NULL,"
    " input TEXT,"
    " output TEXT,"
    " error TEXT,"
    " status TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL,"
    " expires INTEGER NOT NULL DEFAULT 0,"
    " queued INTEGER NOT NULL DEFAULT 0,"
    " first_status TEXT NOT NULL);"
    /* The queue proper: (agent, seq) and expiry over queued rows only. As
     * partial indexes they hold only what is waiting, so an action recorded
     * for an online agent never enters them, and a delivered one leaves. */
    "CREATE INDEX actions_agent ON actions(agent_id, seq) WHERE status='queued';"
    "CREATE INDEX actions_expiry ON actions(expires) WHERE status='queued';"
    "CREATE INDEX actions_thing ON actions(thing_id, created);"
    /* Coalescing looks only at queued property writes: a partial index keeps
     * that lookup O(log n) however many rows the thing has. */
    "CREATE INDEX actions_coalesce ON actions(thing_id, name)"
    " WHERE status='queued' AND op='writeproperty';"
    "CREATE TABLE action_history("
    " action_seq INTEGER NOT NULL,"
    " hseq INTEGER NOT NULL,"
    " status TEXT NOT NULL,"
    " time INTEGER NOT NULL,"
    " PRIMARY KEY(action_seq, hseq)) WITHOUT ROWID;"
    /* Version 1 recorded every status change with this trigger (dropped
     * by version 2). */
    "CREATE TRIGGER actions_moved AFTER UPDATE OF status ON actions BEGIN"
    " INSERT INTO action_history(action_seq, hseq, status, time)"
    " VALUES(new.seq, (SELECT coalesce(max(hseq), 0) + 1 FROM action_history"
    " WHERE action_seq = new.seq), new.status, new.updated); END;"
    "CREATE TABLE inbox("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " client_id TEXT NOT NULL,"
    " msg TEXT NOT NULL,"
    " created INTEGER NOT NULL);"
    "CREATE INDEX inbox_client ON inbox(client_id, seq);",
    /* 2: status changes are appended to actions.history, in the statement
     * that changes the status, instead of a trigger's row in action_history
     * (kept for rows written before; read first). */
    "ALTER TABLE actions ADD COLUMN history TEXT;"
    "DROP TRIGGER actions_moved;",
};

/* The SQL expression of actions.history with one more entry "status time;". */
#define HISTORY_ADD(st, time) "coalesce(history, '') || " #st " || ' ' || " #time " || ';'"

#define ACTION_COLS                                                                                \
    "seq, id, thing_id, agent_id, sender_id, name, correlation_id, op, input, output, error, "     \
    "status, created, updated, expires"

struct push_ctx;

typedef struct pend {
    tw_status st; /* latest decided status (committed once refs is 0) */
    int refs;     /* jobs in flight that carry a decision */
    bool lost;    /* a job that carried a decision failed: do not keep it */
    /* The action's record job while the writer has not taken it yet: later
     * status changes are folded into it instead of becoming jobs. */
    struct push_ctx *rec;
} pend;

typedef struct inbox_slot {
    char client[TW_ID_MAX];
    int64_t count; /* exact number of entries of `client`, -1 unknown */
} inbox_slot;

struct tw_queue {
    tw_store *store;

    pthread_mutex_t mu; /* pending map, fetch hand-over */
    pthread_cond_t cv;  /* a fetch job ran */
    tw_hmap pending;
    /* Bumped (under mu) whenever an entry whose id hashes to the slot is
     * dropped: an update reads committed state outside mu and trusts what it
     * read only if no entry of that id was dropped meanwhile. */
    uint32_t drops[PEND_GENS];
    size_t npend; /* entries with jobs in flight (refs > 0) */
    /* Settled entries (refs 0) in the order they settled; the oldest is
     * dropped when the ring is full. */
    char (*settled)[TW_ID_MAX];
    size_t settled_head, settled_len;

    pthread_mutex_t inbox_mu; /* inbox seq assignment + submission order */
    int64_t inbox_seq;
    atomic_int inbox_inflight;

    /* Writer-thread only. */
    pthread_t writer;
    atomic_bool writer_known;
    int64_t next_seq; /* actions.seq */
    int64_t inbox_pruned_ms;
    pthread_mutex_t prune_lock; /* one retention walk at a time */
    int64_t prune_cursor;       /* seq the walk has passed */
    inbox_slot *slots;
};

/* ---- small helpers ------------------------------------------------------ */

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char *dump_json(const json_t *j)
{
    return j ? tw_json_encode(j, NULL) : NULL; /* compact; any value */
}

static json_t *load_json(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    return t ? json_loads(t, JSON_DECODE_ANY, NULL) : NULL;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static int db_err(tw_store_tx *tx, int rc, const char *what)
{
    int prim = rc & 0xff;
    if (prim == SQLITE_CONSTRAINT) return TW_EEXIST;
    tw_log_error(MOD, "%s: %s", what, sqlite3_errmsg(tw_store_db(tx)));
    return TW_EDB;
}

/* Steps a statement that returns no rows. */
static int step_done(tw_store_tx *tx, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? 0 : db_err(tx, rc, what);
}

static bool on_writer(tw_queue *q)
{
    return atomic_load(&q->writer_known) && pthread_equal(q->writer, pthread_self());
}

static void action_clear(tw_action *a)
{
    free(a->thing_id);
    free(a->agent_id);
    free(a->sender_id);
    free(a->name);
    free(a->correlation_id);
    json_decref(a->input);
    json_decref(a->output);
    json_decref(a->error);
    memset(a, 0, sizeof *a);
}

void tw_action_free(tw_action *a)
{
    if (!a) return;
    action_clear(a);
    free(a);
}

void tw_action_list_free(tw_action *list, int n)
{
    if (!list) return;
    for (int i = 0; i < n; i++)
        action_clear(&list[i]);
    free(list);
}

static void set_time(json_t *o, const char *k, int64_t ms)
{
    char t[TW_TIME_LEN];
    tw_time_format(ms, t);
    json_object_set_new(o, k, json_string(t));
}

json_t *tw_action_json(const tw_action *a)
{
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "id", json_string(a->id));
    if (a->thing_id) json_object_set_new(o, "thingID", json_string(a->thing_id));
    if (a->name) json_object_set_new(o, "name", json_string(a->name));
    json_object_set_new(o, "status", json_string(tw_status_name(a->status)));
    if (a->output) json_object_set(o, "output", a->output);
    if (a->error) json_object_set(o, "error", a->error);
    set_time(o, "created", a->created_ms);
    set_time(o, "updated", a->updated_ms);
    if (a->expires_ms) set_time(o, "expires", a->expires_ms);
    if (a->correlation_id) json_object_set_new(o, "correlationID", json_string(a->correlation_id));
    if (a->sender_id) json_object_set_new(o, "senderID", json_string(a->sender_id));
    return o;
}

/* Reads a row selected with ACTION_COLS. */
static int action_from_row(sqlite3_stmt *st, tw_action *a)
{
    memset(a, 0, sizeof *a);
    a->seq = sqlite3_column_int64(st, 0);
    tw_strlcpy(a->id, (const char *)sqlite3_column_text(st, 1), sizeof a->id);
    a->thing_id = dup_str((const char *)sqlite3_column_text(st, 2));
    a->agent_id = dup_str((const char *)sqlite3_column_text(st, 3));
    a->sender_id = dup_str((const char *)sqlite3_column_text(st, 4));
    a->name = dup_str((const char *)sqlite3_column_text(st, 5));
    a->correlation_id = dup_str((const char *)sqlite3_column_text(st, 6));
    a->op = tw_op_parse((const char *)sqlite3_column_text(st, 7));
    a->input = load_json(st, 8);
    a->output = load_json(st, 9);
    a->error = load_json(st, 10);
    a->status = tw_status_parse((const char *)sqlite3_column_text(st, 11));
    a->created_ms = sqlite3_column_int64(st, 12);
    a->updated_ms = sqlite3_column_int64(st, 13);
    a->expires_ms = sqlite3_column_int64(st, 14);
    if (!a->thing_id || !a->agent_id || !a->sender_id || !a->name) {
        action_clear(a);
        return TW_ENOMEM;
    }
    return 0;
}

/* A growable array of actions, for pages read by jobs. */
typedef struct action_vec {
    tw_action *v;
    int n, cap;
} action_vec;

static tw_action *vec_push(action_vec *vec)
{
    if (vec->n == vec->cap) {
        int cap = vec->cap ? vec->cap * 2 : 16;
        tw_action *nv = realloc(vec->v, (size_t)cap * sizeof *nv);
        if (!nv) return NULL;
        vec->v = nv;
        vec->cap = cap;
    }
    return &vec->v[vec->n++];
}

/* Moves the row `seq` to st (optionally setting error), with its history. */
static int set_status(tw_store_tx *tx, tw_queue *q, int64_t seq, tw_status st, const char *error,
                      int64_t now)
{
    sqlite3_stmt *u = tw_store_stmt(
        tx, "UPDATE OR FAIL actions SET status=?2, updated=?3, error=coalesce(?4, error), "
            "history=" HISTORY_ADD(?2, ?3) " "
            "WHERE seq=?1");
    if (!u) return TW_EDB;
    sqlite3_bind_int64(u, 1, seq);
    sqlite3_bind_text(u, 2, tw_status_name(st), -1, SQLITE_STATIC);
    sqlite3_bind_int64(u, 3, now);
    bind_text(u, 4, error);
    return step_done(tx, u, "status update");
}

/* Takes q->mu. The store's writer may hold it from a job of a write-behind
 * batch it runs at idle priority (record_job): a thread that finds the
 * mutex busy lifts the writer first, or it could wait for as long as the
 * cores are busy (a priority inversion; found in review). */
static void q_lock(tw_queue *q)
{
    if (pthread_mutex_trylock(&q->mu) == 0) return;
    /* Lift, and again every millisecond: the writer may go idle (and take
     * the mutex) after a lift that found it at normal priority. */
    for (;;) {
        tw_store_lift(q->store);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (pthread_mutex_clocklock(&q->mu, CLOCK_MONOTONIC, &ts) == 0) return;
    }
}

/* ---- the pending map (q->mu held) --------------------------------------- */

static int pend_add(tw_queue *q, const char *id, tw_status st)
{
    pend *p = tw_hmap_get(&q->pending, id);
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p) return TW_ENOMEM;
        int err = 0;
        tw_hmap_put(&q->pending, id, p, &err);
        if (err) {
            free(p);
            return TW_ENOMEM;
        }
    }
    if (p->refs++ == 0) q->npend++;
    p->st = st;
    return 0;
}

static uint32_t *pend_drops(tw_queue *q, const char *id)
{
    return &q->drops[tw_hash_str(id) % PEND_GENS];
}

static void pend_drop(tw_queue *q, const char *id)
{
    free(tw_hmap_del(&q->pending, id));
    (*pend_drops(q, id))++;
}

/* A job that carried a decision about id finished; committed says whether
 * its transaction was. The last one settles the entry: it stays, as the
 * committed status, until SETTLED_MAX later settlements push it out. */
static void pend_release(tw_queue *q, const char *id, bool committed)
{
    pend *p = tw_hmap_get(&q->pending, id);
    if (!p || p->refs <= 0) return;
    if (!committed) p->lost = true;
    if (--p->refs > 0) return;
    q->npend--;
    if (p->lost || !q->settled) {
        pend_drop(q, id);
        return;
    }
    if (q->settled_len == SETTLED_MAX) {
        /* An entry revived since it was put in the ring is busy again (and
         * will come back when it settles): only idle ones go. */
        const char *old = q->settled[q->settled_head];
        pend *o = tw_hmap_get(&q->pending, old);
        if (o && o->refs == 0 && o != p) pend_drop(q, old);
        q->settled_head = (q->settled_head + 1) % SETTLED_MAX;
        q->settled_len--;
    }
    tw_strlcpy(q->settled[(q->settled_head + q->settled_len) % SETTLED_MAX], id, TW_ID_MAX);
    q->settled_len++;
}

/* The status an action will have once every decided change is committed:
 * the map's, else the committed one given by the caller. */
static tw_status decided(tw_queue *q, const char *id, tw_status committed)
{
    pend *p = tw_hmap_get(&q->pending, id);
    return p ? p->st : committed;
}

/* Waits (without q->mu) until the pending map has room; callers on the
 * writer thread cannot wait and get TW_EFULL. Called and returns with q->mu
 * held. */
static int pend_room(tw_queue *q)
{
    while (q->npend >= PEND_MAX) {
        if (on_writer(q)) return TW_EFULL;
        pthread_mutex_unlock(&q->mu);
        int rc = tw_store_flush(q->store);
        q_lock(q);
        if (rc < 0) return rc;
    }
    return 0;
}

/* ---- open / close ------------------------------------------------------- */

static int open_job(tw_store_tx *tx, void *arg)
{
    tw_queue *q = arg;
    q->writer = pthread_self();
    atomic_store(&q->writer_known, true);
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT coalesce(max(seq), 0) FROM actions");
    if (!st || sqlite3_step(st) != SQLITE_ROW) return TW_EDB;
    q->next_seq = sqlite3_column_int64(st, 0);
    st = tw_store_stmt(tx, "SELECT max(coalesce((SELECT seq FROM sqlite_sequence "
                           "WHERE name='inbox'), 0), coalesce((SELECT max(seq) FROM inbox), 0))");
    if (!st || sqlite3_step(st) != SQLITE_ROW) return TW_EDB;
    q->inbox_seq = sqlite3_column_int64(st, 0);
    return 0;
}

int tw_queue_open(tw_store *s, tw_queue **out)
{
    if (!s || !out) return TW_EINVAL;
    *out = NULL;
    int rc = tw_store_migrate(s, "queue", steps, (int)(sizeof steps / sizeof steps[0]));
    if (rc < 0) return rc;
    tw_queue *q = calloc(1, sizeof *q);
    if (!q) return TW_ENOMEM;
    q->slots = calloc(INBOX_SLOTS, sizeof *q->slots);
    q->settled = malloc(SETTLED_MAX * sizeof *q->settled);
    if (!q->slots || !q->settled) {
        free(q->slots);
        free(q->settled);
        free(q);
        return TW_ENOMEM;
    }
    q->store = s;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    pthread_mutex_init(&q->inbox_mu, NULL);
    pthread_mutex_init(&q->prune_lock, NULL);
    tw_hmap_init(&q->pending);
    /* Runs on the writer: learns its thread and the counters there. */
    rc = tw_store_exec(s, open_job, q);
    if (rc < 0) {
        tw_queue_close(q);
        return rc;
    }
    *out = q;
    return 0;
}

void tw_queue_close(tw_queue *q)
{
    if (!q) return;
    /* Every job of this queue was submitted before: once flushed, none of
     * them will touch q again. */
    tw_store_flush(q->store);
    size_t pos = 0;
    const char *k;
    void *v;
    while (tw_hmap_next(&q->pending, &pos, &k, &v))
        free(v);
    tw_hmap_fini(&q->pending);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->inbox_mu);
    pthread_mutex_destroy(&q->prune_lock);
    free(q->slots);
    free(q->settled);
    free(q);
}

/* ---- push --------------------------------------------------------------- */

typedef struct push_ctx {
    tw_queue *q;
    tw_queue_push_done done;
    void *arg;
    tw_action a; /* copy; input serialized in input_text */
    char *input_text;
    tw_status first; /* a record's first status */
    /* A record's status changes folded in before the writer took it
     * (record_fold): output and error as JSON text, the history entries
     * after the first, "status time;" each, as the history column holds. */
    char *output_text, *error_text, *history;
    int64_t now;
    tw_queue_push_result res;
    char superseded[SUPERSEDE_MAX][TW_ID_MAX];
    int nsuperseded;
} push_ctx;

static void push_ctx_free(push_ctx *c)
{
    action_clear(&c->a);
    free(c->input_text);
    free(c->output_text);
    free(c->error_text);
    free(c->history);
    free(c);
}

/* Inserts c's action; its status is c->a.status, its first status `first`. */
static int insert_action(tw_store_tx *tx, tw_queue *q, push_ctx *c, tw_status first, bool queued,
                         int64_t *seq_out)
{
    const tw_action *a = &c->a;
    sqlite3_stmt *st = tw_store_stmt(
        tx,
        "INSERT OR FAIL INTO actions(seq, id, thing_id, agent_id, sender_id, name, correlation_id, "
        "op, input, status, created, updated, expires, queued, first_status, output, error, "
        "history) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)");
    if (!st) return TW_EDB;
    int64_t seq = q->next_seq + 1;
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_text(st, 2, a->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, a->thing_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, a->agent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, a->sender_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, a->name, -1, SQLITE_STATIC);
    bind_text(st, 7, a->correlation_id);
    sqlite3_bind_text(st, 8, tw_op_name(a->op), -1, SQLITE_STATIC);
    bind_text(st, 9, c->input_text);
    sqlite3_bind_text(st, 10, tw_status_name(a->status), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, a->created_ms);
    sqlite3_bind_int64(st, 12, a->updated_ms);
    sqlite3_bind_int64(st, 13, a->expires_ms);
    sqlite3_bind_int(st, 14, queued ? 1 : 0);
    sqlite3_bind_text(st, 15, tw_status_name(first), -1, SQLITE_STATIC);
    bind_text(st, 16, c->output_text);
    bind_text(st, 17, c->error_text);
    bind_text(st, 18, c->history);
    int rc = step_done(tx, st, "action insert");
    if (rc < 0) return rc;
    q->next_seq = seq;
    *seq_out = seq;
    return 0;
}

static char *problem_text(int http, const char *slug, const char *title, const char *detail)
{
    json_t *p = tw_problem_new(http, slug, title, detail, NULL);
    char *t = dump_json(p);
    json_decref(p);
    return t;
}

static int push_job(tw_store_tx *tx, void *arg)
{
    push_ctx *c = arg;
    tw_queue *q = c->q;
    c->nsuperseded = 0;
    if (c->a.op == TW_OP_WRITEPROPERTY) {
        /* Coalesce: the older queued write of the same property is cancelled. */
        sqlite3_stmt *st = tw_store_stmt(tx, "SELECT seq, id FROM actions WHERE thing_id=?1 AND "
                                             "name=?2 AND status='queued' AND op='writeproperty' "
                                             "ORDER BY seq LIMIT 8");
        if (!st) return TW_EDB;
        sqlite3_bind_text(st, 1, c->a.thing_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, c->a.name, -1, SQLITE_STATIC);
        int64_t seqs[SUPERSEDE_MAX];
        int n = 0, rc;
        while (n < SUPERSEDE_MAX && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            const char *id = (const char *)sqlite3_column_text(st, 1);
            q_lock(q);
            bool take = !tw_status_final(decided(q, id, TW_STATUS_QUEUED)) &&
                        pend_add(q, id, TW_STATUS_CANCELLED) == 0;
            pthread_mutex_unlock(&q->mu);
            if (!take) continue;
            seqs[n] = sqlite3_column_int64(st, 0);
            tw_strlcpy(c->superseded[n], id, TW_ID_MAX);
            n++;
        }
        sqlite3_reset(st);
        c->nsuperseded = n; /* from here on, push_done releases them */
        if (n > 0) {
            char *err = problem_text(409, "superseded", "Action cancelled",
                                     "superseded by a newer write of the same property");
            for (int i = 0; i < n; i++) {
                rc = set_status(tx, q, seqs[i], TW_STATUS_CANCELLED, err, c->now);
                if (rc < 0) break;
            }
            free(err);
            if (rc < 0) return rc;
        }
    }
    return insert_action(tx, q, c, c->a.status, true, &c->res.seq);
}

static void push_done(void *arg, int rc)
{
    push_ctx *c = arg;
    tw_queue *q = c->q;
    c->res.rc = rc;
    if (rc < 0) c->res.seq = 0;
    if (c->nsuperseded > 0) {
        q_lock(q);
        for (int i = 0; i < c->nsuperseded; i++)
            pend_release(q, c->superseded[i], rc == 0);
        pthread_mutex_unlock(&q->mu);
    }
    if (rc == 0 && c->nsuperseded > 0)
        tw_strlcpy(c->res.superseded_id, c->superseded[c->nsuperseded - 1], TW_ID_MAX);
    if (c->done) c->done(c->arg, &c->res);
    push_ctx_free(c);
}

static int action_valid(const tw_action *a)
{
    if (!a || !a->id[0] || !a->thing_id || !a->agent_id || !a->sender_id || !a->name)
        return TW_EINVAL;
    if (a->op != TW_OP_INVOKEACTION && a->op != TW_OP_WRITEPROPERTY) return TW_EINVAL;
    if (strnlen(a->id, TW_ID_MAX) >= TW_ID_MAX) return TW_EINVAL;
    return 0;
}

/* A private copy of the strings of a (input is serialized by the caller). */
static int action_copy(tw_action *dst, const tw_action *a, tw_status st, int64_t now)
{
    memset(dst, 0, sizeof *dst);
    memcpy(dst->id, a->id, TW_ID_MAX);
    dst->thing_id = strdup(a->thing_id);
    dst->agent_id = strdup(a->agent_id);
    dst->sender_id = strdup(a->sender_id);
    dst->name = strdup(a->name);
    dst->correlation_id = dup_str(a->correlation_id);
    dst->op = a->op;
    dst->status = st;
    dst->created_ms = a->created_ms ? a->created_ms : now;
    dst->updated_ms = now;
    dst->expires_ms = a->expires_ms;
    if (!dst->thing_id || !dst->agent_id || !dst->sender_id || !dst->name ||
        (a->correlation_id && !dst->correlation_id)) {
        action_clear(dst);
        return TW_ENOMEM;
    }
    return 0;
}

static int record_job(tw_store_tx *tx, void *arg);
static void record_done(void *arg, int rc);

/* Registers a new action id in the pending map and submits its record job
 * rec, both under q->mu (see the header comment); until the writer takes
 * the job, the entry points at it (record_fold). Write-behind: nobody waits
 * for a recorded (live) action's commit. */
static int submit_record(tw_queue *q, push_ctx *rec, tw_status st)
{
    const char *id = rec->a.id;
    q_lock(q);
    int rc = pend_room(q);
    if (rc == 0 && tw_hmap_get(&q->pending, id)) rc = TW_EEXIST;
    if (rc == 0) rc = pend_add(q, id, st);
    if (rc == 0) {
        pend *p = tw_hmap_get(&q->pending, id);
        p->rec = rec;
        rc = tw_store_submit_behind(q->store, record_job, rec, record_done);
        if (rc < 0) {
            p->rec = NULL;
            pend_release(q, id, false);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int tw_queue_push(tw_queue *q, const tw_action *a, tw_queue_push_done done, void *arg)
{
    if (!q) return TW_EINVAL;
    int rc = action_valid(a);
    if (rc < 0) return rc;
    int64_t now = tw_now_ms();
    if (a->expires_ms != 0 && a->expires_ms <= now) return TW_EEXPIRED;
    push_ctx *c = calloc(1, sizeof *c);
    if (!c) return TW_ENOMEM;
    c->q = q;
    c->done = done;
    c->arg = arg;
    c->now = now;
    rc = action_copy(&c->a, a, TW_STATUS_QUEUED, now);
    if (rc < 0) {
        free(c);
        return rc;
    }
    if (a->input && !(c->input_text = dump_json(a->input))) {
        push_ctx_free(c);
        return TW_ENOMEM;
    }
    /* Not entered in the pending map: a pushed action does not exist for
     * anyone until its done callback says it is committed (the sender hears
     * of it only then), so nothing can ask about it earlier. A duplicate id
     * is refused by the UNIQUE index (done gets TW_EEXIST). */
    rc = c->a.op == TW_OP_WRITEPROPERTY ? tw_store_submit(q->store, push_job, c, push_done)
                                        : tw_store_submit_atomic(q->store, push_job, c, push_done);
    if (rc < 0) push_ctx_free(c);
    return rc;
}

/* ---- record ------------------------------------------------------------- */

static int record_job(tw_store_tx *tx, void *arg)
{
    push_ctx *c = arg;
    /* From here on nothing is folded into c: later changes become jobs. */
    q_lock(c->q);
    pend *p = tw_hmap_get(&c->q->pending, c->a.id);
    if (p && p->rec == c) p->rec = NULL;
    tw_status first = c->first;
    pthread_mutex_unlock(&c->q->mu);
    return insert_action(tx, c->q, c, first, false, &c->res.seq);
}

/* Folds a status change into a record job the writer has not taken yet
 * (q->mu held): an action answered before the writer got to its record
 * (busy with an earlier commit, lingering, or idle behind busy cores) is
 * written once, with its final status and history, instead of an insert
 * and an update (two rows' worth of writer work on the round trip's
 * cores). The
 * texts are the caller's and are taken over, unless it returns false (out
 * of memory: nothing changed, the caller submits an update job instead). */
static bool record_fold(push_ctx *rec, tw_status st, int64_t now, char *output, char *error)
{
    char entry[64];
    snprintf(entry, sizeof entry, "%s %lld;", tw_status_name(st), (long long)now);
    size_t old = rec->history ? strlen(rec->history) : 0, add = strlen(entry);
    char *h = realloc(rec->history, old + add + 1);
    if (!h) return false; /* nothing changed: the caller submits an update */
    memcpy(h + old, entry, add + 1);
    rec->history = h;
    rec->a.status = st;
    rec->a.updated_ms = now;
    if (output) {
        free(rec->output_text);
        rec->output_text = output;
    }
    if (error) {
        free(rec->error_text);
        rec->error_text = error;
    }
    return true;
}

static void record_done(void *arg, int rc)
{
    push_ctx *c = arg;
    if (rc < 0) tw_log_warn(MOD, "action %s not recorded: %s", c->a.id, tw_strerror(rc));
    q_lock(c->q);
    pend *p = tw_hmap_get(&c->q->pending, c->a.id);
    if (p && p->rec == c) p->rec = NULL; /* failed before the job ran */
    pend_release(c->q, c->a.id, rc == 0);
    pthread_mutex_unlock(&c->q->mu);
    push_ctx_free(c);
}

int tw_queue_record(tw_queue *q, const tw_action *a)
{
    if (!q) return TW_EINVAL;
    int rc = action_valid(a);
    if (rc < 0) return rc;
    int64_t now = tw_now_ms();
    push_ctx *c = calloc(1, sizeof *c);
    if (!c) return TW_ENOMEM;
    c->q = q;
    tw_status st = a->status != TW_STATUS_NONE ? a->status : TW_STATUS_DELIVERED;
    rc = action_copy(&c->a, a, st, now);
    if (rc < 0) {
        free(c);
        return rc;
    }
    if (a->input && !(c->input_text = dump_json(a->input))) {
        push_ctx_free(c);
        return TW_ENOMEM;
    }
    c->first = st;
    rc = submit_record(q, c, st);
    if (rc < 0) push_ctx_free(c);
    return rc;
}

/* ---- update ------------------------------------------------------------- */

typedef struct update_ctx {
    tw_queue *q;
    char id[TW_ID_MAX];
    tw_status st;
    char *output, *error;
    int64_t now;
    int64_t seq; /* the row's, when the caller knew it; else 0 */
} update_ctx;

static int update_job(tw_store_tx *tx, void *arg)
{
    update_ctx *c = arg;
    /* The final-status guard only matters if the row's insert failed or was
     * lost with a failed commit: decisions are already serialized. It is
     * spelled as comparisons: `status NOT IN (list)` builds an ephemeral
     * B-tree for the list on every run, which cost a third of this job. */
#define UPDATE_SET                                                                                 \
    "UPDATE OR FAIL actions SET status=?2, updated=?3, history=" HISTORY_ADD(                      \
        ?2, ?3) ", output=coalesce(?4, output), error=coalesce(?5, error) WHERE "
#define UPDATE_GUARD                                                                               \
    " AND status<>'completed' AND status<>'failed' AND status<>'expired' AND status<>'cancelled'"
    /* By seq (the rowid) when known: the lookup by id in its index was a
     * third of this job. */
    sqlite3_stmt *st = c->seq > 0 ? tw_store_stmt(tx, UPDATE_SET "seq=?6 AND id=?1" UPDATE_GUARD)
                                  : tw_store_stmt(tx, UPDATE_SET "id=?1" UPDATE_GUARD);
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    if (c->seq > 0) sqlite3_bind_int64(st, 6, c->seq);
    sqlite3_bind_text(st, 2, tw_status_name(c->st), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, c->now);
    bind_text(st, 4, c->output);
    bind_text(st, 5, c->error);
    return step_done(tx, st, "action update");
}

static void update_done(void *arg, int rc)
{
    update_ctx *c = arg;
    if (rc < 0) tw_log_warn(MOD, "action %s: update lost: %s", c->id, tw_strerror(rc));
    q_lock(c->q);
    pend_release(c->q, c->id, rc == 0);
    pthread_mutex_unlock(&c->q->mu);
    free(c->output);
    free(c->error);
    free(c);
}

typedef struct status_read {
    const char *id;
    tw_status st;
} status_read;

static int status_read_job(tw_store_tx *tx, void *arg)
{
    status_read *r = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT status FROM actions WHERE id=?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) return TW_ENOTFOUND;
    if (rc != SQLITE_ROW) return db_err(tx, rc, "status read");
    r->st = tw_status_parse((const char *)sqlite3_column_text(st, 0));
    return 0;
}

/* The status decided for action_id: the pending map's, else the committed
 * row's (TW_ENOTFOUND). Called and returns with q->mu held; *pp is the
 * map's entry afterwards, NULL if none. The committed row is read without
 * q->mu (a read takes a connection and a transaction: under the lock it
 * would serialize every answer and stall the writer's claims). What it
 * read is current unless a decision about this id was committed and
 * dropped from the map meanwhile, which bumps its drop counter: then it is
 * read again, under the lock, where no entry can be dropped. */
static int status_now(tw_queue *q, const char *action_id, pend **pp, tw_status *cur)
{
    pend *p = tw_hmap_get(&q->pending, action_id);
    *pp = p;
    if (p) {
        *cur = p->st;
        return 0;
    }
    uint32_t drops = *pend_drops(q, action_id);
    pthread_mutex_unlock(&q->mu);
    status_read r = {.id = action_id};
    int rc = tw_store_read(q->store, status_read_job, &r);
    q_lock(q);
    p = tw_hmap_get(&q->pending, action_id);
    *pp = p;
    if (p) {
        *cur = p->st; /* decided meanwhile: the map is newer than the read */
        return 0;
    }
    if (*pend_drops(q, action_id) != drops) {
        r.st = TW_STATUS_NONE;
        rc = tw_store_read(q->store, status_read_job, &r);
    }
    *cur = r.st;
    return rc;
}

int tw_queue_status(tw_queue *q, const tw_action *actions, int n, tw_status *out)
{
    if (!q || n < 0 || (n && (!actions || !out))) return TW_EINVAL;
    int misses = 0;
    q_lock(q);
    for (int i = 0; i < n; i++) {
        pend *p = tw_hmap_get(&q->pending, actions[i].id);
        out[i] = p ? p->st : TW_STATUS_NONE;
        misses += !p;
    }
    /* Rows the map does not know (settled long ago, or claimed inline on
     * the writer) are read one by one: rare, the map is asked first. */
    int rc = 0;
    for (int i = 0; i < n && misses; i++) {
        if (out[i] != TW_STATUS_NONE) continue;
        misses--;
        pend *p;
        int r = status_now(q, actions[i].id, &p, &out[i]);
        if (r == TW_ENOTFOUND)
            out[i] = TW_STATUS_NONE;
        else if (r < 0 && rc == 0)
            rc = r;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

int tw_queue_update(tw_queue *q, const char *action_id, tw_status st, json_t *output, json_t *error)
{
    return tw_queue_update_seq(q, action_id, 0, st, output, error);
}

int tw_queue_update_seq(tw_queue *q, const char *action_id, int64_t seq, tw_status st,
                        json_t *output, json_t *error)
{
    if (!q || !action_id || st <= TW_STATUS_NONE || st >= TW_STATUS__COUNT ||
        strnlen(action_id, TW_ID_MAX) >= TW_ID_MAX)
        return TW_EINVAL;
    update_ctx *c = calloc(1, sizeof *c);
    if (!c) return TW_ENOMEM;
    c->q = q;
    memcpy(c->id, action_id, strlen(action_id) + 1);
    c->st = st;
    c->now = tw_now_ms();
    c->seq = seq;
    if ((output && !(c->output = dump_json(output))) || (error && !(c->error = dump_json(error)))) {
        free(c->output);
        free(c->error);
        free(c);
        return TW_ENOMEM;
    }

    q_lock(q);
    int rc = pend_room(q);
    pend *p = NULL;
    tw_status cur = TW_STATUS_NONE;
    if (rc == 0) rc = status_now(q, action_id, &p, &cur);
    if (rc == 0 && tw_status_final(cur)) rc = TW_ECONFLICT;
    if (rc == 0 && p && p->rec && record_fold(p->rec, st, c->now, c->output, c->error)) {
        p->st = st; /* its record was not written yet: folded in */
        pthread_mutex_unlock(&q->mu);
        free(c);
        return 0;
    }
    if (rc == 0) rc = pend_add(q, action_id, st);
    if (rc == 0) {
        /* nobody waits for an update's commit: write-behind */
        rc = tw_store_submit_behind(q->store, update_job, c, update_done);
        if (rc < 0) pend_release(q, action_id, false);
    }
    pthread_mutex_unlock(&q->mu);
    if (rc < 0) {
        free(c->output);
        free(c->error);
        free(c);
    }
    return rc;
}

/* ---- fetch -------------------------------------------------------------- */

typedef struct fetch_ctx {
    tw_queue *q;
    const char *agent; /* the caller's, valid until `ran` */
    int64_t after, now;
    int max;
    action_vec got;
    int rc;
    bool ran;
    int refs; /* caller + done, under q->mu */
    char (*ids)[TW_ID_MAX];
    int nids;
} fetch_ctx;

static void fetch_unref(fetch_ctx *c)
{
    if (--c->refs > 0) return;
    tw_action_list_free(c->got.v, c->got.n);
    free(c->ids);
    free(c);
}

/* Moves the claimed page to `delivered`. Normally with one statement over
 * the page's seq range: it selects exactly the rows the page's SELECT did
 * (same agent, queued, not expired, and nothing else wrote in between: the
 * writer runs one job at a time), and one statement instead of one per row
 * saves opening the table's and indexes' cursors for every row (a third of
 * a claim's cost, callgrind). A page with a row left out (a
 * final status already decided for it) goes row by row. */
static int claim_rows(tw_store_tx *tx, fetch_ctx *c, bool whole_page)
{
    if (c->got.n == 0) return 0;
    int rc;
    if (whole_page) {
        sqlite3_stmt *u = tw_store_stmt(
            tx, "UPDATE OR FAIL actions SET status='delivered', updated=?1, "
                "history=" HISTORY_ADD('delivered', ?1) " WHERE agent_id=?2 "
                "AND status='queued' AND seq>=?3 AND seq<=?4 AND (expires=0 OR expires>?1)");
        if (!u) return TW_EDB;
        sqlite3_bind_int64(u, 1, c->now);
        sqlite3_bind_text(u, 2, c->agent, -1, SQLITE_STATIC);
        sqlite3_bind_int64(u, 3, c->got.v[0].seq);
        sqlite3_bind_int64(u, 4, c->got.v[c->got.n - 1].seq);
        rc = step_done(tx, u, "claim");
        if (rc == 0 && sqlite3_changes(tw_store_db(tx)) != c->got.n) {
            tw_log_error(MOD, "claim of %d rows changed %d", c->got.n,
                         sqlite3_changes(tw_store_db(tx)));
            rc = TW_EDB; /* the job's savepoint undoes it */
        }
        if (rc < 0) return rc;
    } else {
        for (int i = 0; i < c->got.n; i++) {
            rc = set_status(tx, c->q, c->got.v[i].seq, TW_STATUS_DELIVERED, NULL, c->now);
            if (rc < 0) return rc;
        }
    }
    for (int i = 0; i < c->got.n; i++) {
        c->got.v[i].status = TW_STATUS_DELIVERED;
        c->got.v[i].updated_ms = c->now;
    }
    return 0;
}

/* Claims the next page. With `track` (a job whose commit comes later), each
 * claimed row gets a pending `delivered` entry, decided under the same lock
 * as the check, so an answer racing with the claim sees one or the other. */
static int fetch_claim(tw_store_tx *tx, fetch_ctx *c, bool track)
{
    tw_queue *q = c->q;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT " ACTION_COLS " FROM actions WHERE agent_id=?1 "
                                         "AND status='queued' AND seq>?2 AND "
                                         "(expires=0 OR expires>?3) ORDER BY seq LIMIT ?4");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->agent, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->after);
    sqlite3_bind_int64(st, 3, c->now);
    sqlite3_bind_int(st, 4, c->max);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tw_action *a = vec_push(&c->got);
        if (!a) return TW_ENOMEM;
        if (action_from_row(st, a) < 0) {
            c->got.n--;
            return TW_ENOMEM;
        }
    }
    if (rc != SQLITE_DONE) return db_err(tx, rc, "fetch");
    sqlite3_reset(st);
    if (c->got.n == 0) return 0;
    if (track && !(c->ids = malloc((size_t)c->got.n * sizeof *c->ids))) return TW_ENOMEM;
    /* A final status may already be decided for a row (an update not yet
     * run): then it is not ours to deliver. One look at the map per page,
     * not per row: answers to earlier pages take q->mu all the time. */
    int kept = 0;
    q_lock(q);
    for (int i = 0; i < c->got.n; i++) {
        tw_action *a = &c->got.v[i];
        pend *p = tw_hmap_get(&q->pending, a->id);
        if ((p && tw_status_final(p->st)) ||
            (track && pend_add(q, a->id, TW_STATUS_DELIVERED) < 0)) {
            action_clear(a);
            continue;
        }
        if (track) {
            memcpy(c->ids[c->nids++], a->id, TW_ID_MAX);
        } else if (p && p->refs == 0) {
            /* The inline claim adds no entries (it is committed when exec
             * returns, or not at all): a settled one would go stale. A
             * queued row should have none anyway. */
            pend_drop(q, a->id);
        }
        if (kept++ != i) c->got.v[kept - 1] = *a;
    }
    pthread_mutex_unlock(&q->mu);
    bool whole = kept == c->got.n;
    c->got.n = kept;
    return claim_rows(tx, c, whole);
}

static int fetch_claim_job(tw_store_tx *tx, void *arg)
{
    return fetch_claim(tx, arg, false);
}

static int fetch_job(tw_store_tx *tx, void *arg)
{
    fetch_ctx *c = arg;
    int rc = fetch_claim(tx, c, true);
    tw_queue *q = c->q;
    q_lock(q);
    if (rc < 0) {
        /* The savepoint undoes the claim; fetch_done drops the entries. */
        tw_action_list_free(c->got.v, c->got.n);
        c->got = (action_vec){0};
    }
    c->rc = rc;
    c->ran = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

static void fetch_done(void *arg, int rc)
{
    fetch_ctx *c = arg;
    tw_queue *q = c->q;
    if (rc < 0 && c->rc == 0)
        tw_log_error(MOD, "claim of %d actions not committed: they stay queued", c->nids);
    q_lock(q);
    for (int i = 0; i < c->nids; i++)
        pend_release(q, c->ids[i], rc == 0);
    fetch_unref(c);
    pthread_mutex_unlock(&q->mu);
}

int tw_queue_fetch(tw_queue *q, const char *agent_id, int64_t after, int max, tw_action **out,
                   int *n)
{
    if (!q || !agent_id || !out || !n || max <= 0) return TW_EINVAL;
    *out = NULL;
    *n = 0;
    fetch_ctx *c = calloc(1, sizeof *c);
    if (!c) return TW_ENOMEM;
    c->q = q;
    c->agent = agent_id;
    c->after = after;
    c->max = max > FETCH_MAX ? FETCH_MAX : max;
    c->now = tw_now_ms();
    if (on_writer(q)) {
        /* From a done callback (the router drains a queue when a push
         * lands while its agent is online): exec runs the claim inline and
         * it is committed when exec returns, so no pending entries. */
        int rc = tw_store_exec(q->store, fetch_claim_job, c);
        if (rc == 0) {
            *out = c->got.v;
            *n = c->got.n;
        } else {
            tw_action_list_free(c->got.v, c->got.n);
        }
        free(c);
        return rc;
    }
    c->refs = 2;
    int rc = tw_store_submit(q->store, fetch_job, c, fetch_done);
    if (rc < 0) {
        free(c);
        return rc;
    }
    q_lock(q);
    while (!c->ran)
        pthread_cond_wait(&q->cv, &q->mu);
    rc = c->rc;
    if (rc == 0) {
        *out = c->got.v;
        *n = c->got.n;
        c->got = (action_vec){0};
    }
    fetch_unref(c);
    pthread_mutex_unlock(&q->mu);
    return rc;
}

/* ---- reads ---------------------------------------------------------------- */

/* Waits for write-behind jobs about action_id (or any action, NULL) so that
 * a read right after a record/update sees it. */
static void settle(tw_queue *q, const char *action_id)
{
    q_lock(q);
    pend *p = action_id ? tw_hmap_get(&q->pending, action_id) : NULL;
    bool busy = action_id ? p && p->refs > 0 : q->npend > 0;
    pthread_mutex_unlock(&q->mu);
    if (busy && !on_writer(q)) tw_store_flush(q->store);
}

typedef struct get_ctx {
    const char *id;
    tw_action *a;
    json_t *history;
} get_ctx;

static int get_job(tw_store_tx *tx, void *arg)
{
    get_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT " ACTION_COLS " FROM actions WHERE id=?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) return TW_ENOTFOUND;
    if (rc != SQLITE_ROW) return db_err(tx, rc, "get");
    c->a = malloc(sizeof *c->a);
    if (!c->a) return TW_ENOMEM;
    rc = action_from_row(st, c->a);
    if (rc < 0) {
        free(c->a);
        c->a = NULL;
    }
    return rc;
}

int tw_queue_get(tw_queue *q, const char *action_id, tw_action **out)
{
    if (!q || !action_id || !out) return TW_EINVAL;
    *out = NULL;
    settle(q, action_id);
    get_ctx c = {.id = action_id};
    int rc = tw_store_read(q->store, get_job, &c);
    if (rc == 0) *out = c.a;
    return rc;
}

static void history_add(json_t *h, const char *status, int64_t ms)
{
    json_t *e = json_object();
    json_object_set_new(e, "status", json_string(status));
    set_time(e, "time", ms);
    json_array_append_new(h, e);
}

/* Appends the entries of an actions.history text ("status time;..."). */
static int history_parse(json_t *h, const char *text)
{
    while (text && *text) {
        const char *sp = strchr(text, ' '), *end = sp ? strchr(sp, ';') : NULL;
        if (!end || sp - text >= 32) return TW_EDB;
        char status[32];
        memcpy(status, text, (size_t)(sp - text));
        status[sp - text] = 0;
        history_add(h, status, strtoll(sp + 1, NULL, 10));
        text = end + 1;
    }
    return 0;
}

static int history_job(tw_store_tx *tx, void *arg)
{
    get_ctx *c = arg;
    sqlite3_stmt *st =
        tw_store_stmt(tx, "SELECT seq, first_status, created, history FROM actions WHERE id=?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) return TW_ENOTFOUND;
    if (rc != SQLITE_ROW) return db_err(tx, rc, "history");
    int64_t seq = sqlite3_column_int64(st, 0);
    c->history = json_array();
    if (!c->history) return TW_ENOMEM;
    history_add(c->history, (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2));
    /* Changes written before schema version 2 are rows of action_history;
     * later ones are in the row's history column. */
    sqlite3_stmt *old = tw_store_stmt(tx, "SELECT status, time FROM action_history "
                                          "WHERE action_seq=?1 ORDER BY hseq");
    if (!old) return TW_EDB;
    sqlite3_bind_int64(old, 1, seq);
    while ((rc = sqlite3_step(old)) == SQLITE_ROW)
        history_add(c->history, (const char *)sqlite3_column_text(old, 0),
                    sqlite3_column_int64(old, 1));
    if (rc == SQLITE_DONE)
        rc = history_parse(c->history, (const char *)sqlite3_column_text(st, 3));
    else
        rc = db_err(tx, rc, "history");
    if (rc < 0) {
        json_decref(c->history);
        c->history = NULL;
        return rc;
    }
    return 0;
}

int tw_queue_history(tw_queue *q, const char *action_id, json_t **out)
{
    if (!q || !action_id || !out) return TW_EINVAL;
    *out = NULL;
    settle(q, action_id);
    get_ctx c = {.id = action_id};
    int rc = tw_store_read(q->store, history_job, &c);
    if (rc == 0) *out = c.history;
    return rc;
}

typedef struct list_ctx {
    const char *thing, *sender, *agent;
    int limit;
    action_vec got;
    int64_t count;
} list_ctx;

static int list_job(tw_store_tx *tx, void *arg)
{
    list_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT " ACTION_COLS " FROM actions WHERE thing_id=?1 "
                                         "AND (?2 IS NULL OR sender_id=?2) "
                                         "ORDER BY created DESC, seq DESC LIMIT ?3");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->thing, -1, SQLITE_STATIC);
    bind_text(st, 2, c->sender);
    sqlite3_bind_int(st, 3, c->limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        tw_action *a = vec_push(&c->got);
        if (!a) return TW_ENOMEM;
        if (action_from_row(st, a) < 0) {
            c->got.n--;
            return TW_ENOMEM;
        }
    }
    return rc == SQLITE_DONE ? 0 : db_err(tx, rc, "list");
}

int tw_queue_list(tw_queue *q, const char *thing_id, const char *sender_id, int limit,
                  tw_action **out, int *n)
{
    if (!q || !thing_id || !out || !n) return TW_EINVAL;
    *out = NULL;
    *n = 0;
    settle(q, NULL);
    list_ctx c = {.thing = thing_id, .sender = sender_id};
    c.limit = limit <= 0 || limit > LIST_MAX ? LIST_MAX : limit;
    int rc = tw_store_read(q->store, list_job, &c);
    if (rc < 0) {
        tw_action_list_free(c.got.v, c.got.n);
        return rc;
    }
    *out = c.got.v;
    *n = c.got.n;
    return 0;
}

static int depth_job(tw_store_tx *tx, void *arg)
{
    list_ctx *c = arg;
    sqlite3_stmt *st =
        c->agent ? tw_store_stmt(tx, "SELECT count(*) FROM actions WHERE agent_id=?1 AND "
                                     "status='queued'")
                 : tw_store_stmt(tx, "SELECT count(*) FROM actions WHERE status='queued'");
    if (!st) return TW_EDB;
    if (c->agent) sqlite3_bind_text(st, 1, c->agent, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) return db_err(tx, rc, "depth");
    c->count = sqlite3_column_int64(st, 0);
    return 0;
}

int tw_queue_depth(tw_queue *q, const char *agent_id, int64_t *n)
{
    if (!q || !n) return TW_EINVAL;
    settle(q, NULL);
    list_ctx c = {.agent = agent_id};
    int rc = tw_store_read(q->store, depth_job, &c);
    *n = rc == 0 ? c.count : 0;
    return rc;
}

/* ---- cancel, expire, fail_thing (durable, run on the writer) ------------- */

typedef struct final_ctx {
    tw_queue *q;
    const char *id;      /* cancel */
    const char *thing;   /* fail_thing */
    const char *problem; /* error text to store */
    tw_status to;
    int64_t now;
    int64_t cur_a, cur_b; /* page cursor */
    bool more;
    action_vec got;
} final_ctx;

/* Moves the selected rows (ACTION_COLS) of st to c->to, skipping those with
 * a final status already decided. */
static int finalize_rows(tw_store_tx *tx, final_ctx *c, sqlite3_stmt *st, int limit)
{
    tw_queue *q = c->q;
    int rc, seen = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        seen++;
        tw_action *a = vec_push(&c->got);
        if (!a) return TW_ENOMEM;
        if (action_from_row(st, a) < 0) {
            c->got.n--;
            return TW_ENOMEM;
        }
        /* Cursor on the index order (expires or created, then seq). */
        c->cur_a = c->thing ? a->created_ms : a->expires_ms;
        c->cur_b = a->seq;
        q_lock(q);
        bool take =
            !tw_status_final(decided(q, a->id, a->status)) && pend_add(q, a->id, c->to) == 0;
        pthread_mutex_unlock(&q->mu);
        if (!take) {
            action_clear(a);
            c->got.n--;
        }
    }
    if (rc != SQLITE_DONE) return db_err(tx, rc, "select");
    sqlite3_reset(st);
    c->more = seen == limit;
    json_t *err = c->problem ? json_loads(c->problem, 0, NULL) : NULL;
    for (int i = 0; i < c->got.n; i++) {
        tw_action *a = &c->got.v[i];
        rc = set_status(tx, q, a->seq, c->to, c->problem, c->now);
        if (rc < 0) break;
        a->status = c->to;
        a->updated_ms = c->now;
        if (err) {
            json_decref(a->error);
            a->error = json_incref(err);
        }
    }
    json_decref(err);
    return rc < 0 ? rc : 0;
}

/* Drops the pending entries the job added, once its exec returned. */
static void final_release(final_ctx *c, int rc)
{
    q_lock(c->q);
    for (int i = 0; i < c->got.n; i++)
        pend_release(c->q, c->got.v[i].id, rc == 0);
    pthread_mutex_unlock(&c->q->mu);
}

static int cancel_job(tw_store_tx *tx, void *arg)
{
    final_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT " ACTION_COLS " FROM actions WHERE id=?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    int rc = finalize_rows(tx, c, st, 1);
    if (rc < 0) return rc;
    if (c->got.n == 1) return 0;
    /* Not taken: unknown, or final (committed or decided). */
    st = tw_store_stmt(tx, "SELECT 1 FROM actions WHERE id=?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    return sqlite3_step(st) == SQLITE_ROW ? TW_ECONFLICT : TW_ENOTFOUND;
}

int tw_queue_cancel(tw_queue *q, const char *action_id, tw_action **out)
{
    if (!q || !action_id) return TW_EINVAL;
    if (out) *out = NULL;
    char *problem =
        problem_text(409, "cancelled", "Action cancelled", "the action was cancelled by request");
    final_ctx c = {.q = q, .id = action_id, .to = TW_STATUS_CANCELLED, .problem = problem};
    c.now = tw_now_ms();
    int rc = tw_store_exec(q->store, cancel_job, &c);
    final_release(&c, rc);
    free(problem);
    if (rc == 0 && c.got.n == 1 && out) {
        *out = malloc(sizeof **out);
        if (*out) {
            **out = c.got.v[0];
            c.got.n = 0;
        }
    }
    tw_action_list_free(c.got.v, c.got.n);
    return rc;
}

static int expire_job(tw_store_tx *tx, void *arg)
{
    final_ctx *c = arg;
    sqlite3_stmt *st =
        tw_store_stmt(tx, "SELECT " ACTION_COLS " FROM actions WHERE "
                          "status='queued' AND expires>0 AND expires<=?1 AND "
                          "(expires, seq) > (?2, ?3) ORDER BY expires, seq LIMIT ?4");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, c->now);
    sqlite3_bind_int64(st, 2, c->cur_a);
    sqlite3_bind_int64(st, 3, c->cur_b);
    sqlite3_bind_int(st, 4, PAGE);
    return finalize_rows(tx, c, st, PAGE);
}

static int fail_job(tw_store_tx *tx, void *arg)
{
    final_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(
        tx, "SELECT " ACTION_COLS " FROM actions WHERE thing_id=?1 AND status NOT IN "
            "('completed','failed','expired','cancelled') AND (created, seq) > (?2, ?3) "
            "ORDER BY created, seq LIMIT ?4");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->thing, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->cur_a);
    sqlite3_bind_int64(st, 3, c->cur_b);
    sqlite3_bind_int(st, 4, PAGE);
    return finalize_rows(tx, c, st, PAGE);
}

/* Runs job page by page (one committed transaction each) and calls cb for
 * every action it finalized, in the calling thread. */
static int finalize_pages(final_ctx *c, tw_store_job_fn job, tw_queue_action_cb cb, void *arg)
{
    int rc;
    c->cur_a = INT64_MIN;
    c->cur_b = INT64_MIN;
    do {
        c->got.n = 0;
        c->more = false;
        rc = tw_store_exec(c->q->store, job, c);
        final_release(c, rc);
        if (rc == 0 && cb)
            for (int i = 0; i < c->got.n; i++)
                cb(arg, &c->got.v[i]);
        for (int i = 0; i < c->got.n; i++)
            action_clear(&c->got.v[i]);
    } while (rc == 0 && c->more);
    free(c->got.v);
    return rc;
}

typedef struct due_ctx {
    int64_t now;
    bool any;
} due_ctx;

static int due_job(tw_store_tx *tx, void *arg)
{
    due_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT 1 FROM actions WHERE status='queued' AND "
                                         "expires>0 AND expires<=?1 LIMIT 1");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, c->now);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_err(tx, rc, "expiry check");
    c->any = rc == SQLITE_ROW;
    return 0;
}

int tw_queue_expire(tw_queue *q, int64_t now_ms, tw_queue_action_cb cb, void *arg)
{
    if (!q) return TW_EINVAL;
    /* Called periodically: when nothing is due (the usual case) and no
     * write is in flight, a look at the expiry index answers without
     * queueing a job behind the writer. */
    tw_store_stats stats;
    tw_store_get_stats(q->store, &stats);
    due_ctx due = {.now = now_ms};
    int rc = tw_store_read(q->store, due_job, &due);
    if (rc < 0) return rc;
    if (!due.any && stats.pending == 0) return 0;
    char *problem = problem_text(410, "expired", "Action expired",
                                 "the action expired before its agent could take it");
    final_ctx c = {.q = q, .to = TW_STATUS_EXPIRED, .problem = problem, .now = now_ms};
    rc = finalize_pages(&c, expire_job, cb, arg);
    free(problem);
    return rc;
}

int tw_queue_fail_thing(tw_queue *q, const char *thing_id, json_t *problem, tw_queue_action_cb cb,
                        void *arg)
{
    if (!q || !thing_id) return TW_EINVAL;
    char *text = problem ? dump_json(problem)
                         : problem_text(404, "not-found", "not found", "the thing was deleted");
    final_ctx c = {.q = q, .thing = thing_id, .to = TW_STATUS_FAILED, .problem = text};
    c.now = tw_now_ms();
    int rc = finalize_pages(&c, fail_job, cb, arg);
    free(text);
    return rc;
}

/* ---- inbox -------------------------------------------------------------- */

typedef struct inbox_ctx {
    tw_queue *q;
    int64_t seq; /* append: the entry; ack: up to */
    int64_t now;
    char *msg;
    char client[];
} inbox_ctx;

static inbox_slot *inbox_slot_of(tw_queue *q, const char *client)
{
    return &q->slots[tw_hash_str(client) % INBOX_SLOTS];
}

/* Drops entries older than INBOX_MAX_AGE_MS. Rows are in seq order, which
 * is time order, so this walks only the rows it deletes. */
static int inbox_prune_age(tw_store_tx *tx, tw_queue *q, int64_t now)
{
    q->inbox_pruned_ms = now;
    sqlite3_stmt *st =
        tw_store_stmt(tx, "SELECT seq FROM inbox WHERE created >= ?1 ORDER BY seq LIMIT 1");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, now - INBOX_MAX_AGE_MS);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_err(tx, rc, "inbox prune");
    int64_t keep_from = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : INT64_MAX;
    sqlite3_reset(st);
    st = tw_store_stmt(tx, "DELETE FROM inbox WHERE seq < ?1");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, keep_from);
    rc = step_done(tx, st, "inbox prune");
    if (rc == 0 && sqlite3_changes(tw_store_db(tx)) > 0)
        for (int i = 0; i < INBOX_SLOTS; i++)
            q->slots[i].count = -1; /* recount */
    return rc;
}

/* Keeps the newest INBOX_MAX_PER_CLIENT entries of a client. */
static int inbox_cap(tw_store_tx *tx, tw_queue *q, const char *client)
{
    inbox_slot *sl = inbox_slot_of(q, client);
    if (strcmp(sl->client, client) != 0 || sl->count < 0) {
        sqlite3_stmt *st = tw_store_stmt(tx, "SELECT count(*) FROM inbox WHERE client_id=?1");
        if (!st) return TW_EDB;
        sqlite3_bind_text(st, 1, client, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) return db_err(tx, rc, "inbox count");
        if (tw_strlcpy(sl->client, client, sizeof sl->client) < 0) sl->client[0] = 0;
        sl->count = sqlite3_column_int64(st, 0);
    } else {
        sl->count++; /* the entry just inserted */
    }
    if (sl->count <= INBOX_MAX_PER_CLIENT) return 0;
    sqlite3_stmt *st = tw_store_stmt(tx, "DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox "
                                         "WHERE client_id=?1 ORDER BY seq LIMIT ?2)");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, client, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sl->count - INBOX_MAX_PER_CLIENT);
    int rc = step_done(tx, st, "inbox cap");
    if (rc == 0) sl->count -= sqlite3_changes(tw_store_db(tx));
    return rc;
}

static int inbox_append_job(tw_store_tx *tx, void *arg)
{
    inbox_ctx *c = arg;
    sqlite3_stmt *st =
        tw_store_stmt(tx, "INSERT INTO inbox(seq, client_id, msg, created) VALUES(?1,?2,?3,?4)");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, c->seq);
    sqlite3_bind_text(st, 2, c->client, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, c->msg, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, c->now);
    int rc = step_done(tx, st, "inbox insert");
    if (rc < 0) return rc;
    rc = inbox_cap(tx, c->q, c->client);
    if (rc == 0 && c->now - c->q->inbox_pruned_ms >= INBOX_PRUNE_EVERY_MS)
        rc = inbox_prune_age(tx, c->q, c->now);
    return rc;
}

static void inbox_done(void *arg, int rc)
{
    inbox_ctx *c = arg;
    if (rc < 0) tw_log_warn(MOD, "inbox entry %lld lost: %s", (long long)c->seq, tw_strerror(rc));
    atomic_fetch_sub(&c->q->inbox_inflight, 1);
    free(c->msg);
    free(c);
}

static inbox_ctx *inbox_ctx_new(tw_queue *q, const char *client)
{
    size_t len = strlen(client);
    inbox_ctx *c = calloc(1, sizeof *c + len + 1);
    if (!c) return NULL;
    c->q = q;
    c->now = tw_now_ms();
    memcpy(c->client, client, len + 1);
    return c;
}

int tw_inbox_append(tw_queue *q, const char *client_id, tw_msg *m, int64_t *seq)
{
    if (!q || !client_id || !*client_id || !m) return TW_EINVAL;
    size_t len = 0;
    const char *enc = tw_msg_encode(m, &len);
    if (!enc) return TW_ENOMEM;
    inbox_ctx *c = inbox_ctx_new(q, client_id);
    if (!c || !(c->msg = strndup(enc, len))) {
        free(c);
        return TW_ENOMEM;
    }
    atomic_fetch_add(&q->inbox_inflight, 1);
    /* seq is taken and the job submitted under one lock: jobs run in seq
     * order, so the table's AUTOINCREMENT order matches the cursor. */
    pthread_mutex_lock(&q->inbox_mu);
    int64_t my_seq = q->inbox_seq + 1;
    c->seq = my_seq;
    int rc = tw_store_submit(q->store, inbox_append_job, c, inbox_done);
    if (rc == 0) q->inbox_seq = my_seq;
    pthread_mutex_unlock(&q->inbox_mu);
    if (rc < 0) {
        atomic_fetch_sub(&q->inbox_inflight, 1);
        free(c->msg);
        free(c);
        return rc;
    }
    if (seq) *seq = my_seq; /* not c->seq: the writer may have freed c already */
    return 0;
}

static int inbox_ack_job(tw_store_tx *tx, void *arg)
{
    inbox_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "DELETE FROM inbox WHERE client_id=?1 AND seq<=?2");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->client, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->seq);
    int rc = step_done(tx, st, "inbox ack");
    inbox_slot *sl = inbox_slot_of(c->q, c->client);
    if (rc == 0 && strcmp(sl->client, c->client) == 0 && sl->count >= 0)
        sl->count -= sqlite3_changes(tw_store_db(tx));
    return rc;
}

int tw_inbox_ack(tw_queue *q, const char *client_id, int64_t upto)
{
    if (!q || !client_id || !*client_id) return TW_EINVAL;
    inbox_ctx *c = inbox_ctx_new(q, client_id);
    if (!c) return TW_ENOMEM;
    c->seq = upto;
    atomic_fetch_add(&q->inbox_inflight, 1);
    int rc = tw_store_submit(q->store, inbox_ack_job, c, inbox_done);
    if (rc < 0) {
        atomic_fetch_sub(&q->inbox_inflight, 1);
        free(c);
    }
    return rc;
}

typedef struct replay_ctx {
    const char *client;
    int64_t after, since;
    int n;
    int64_t seqs[PAGE];
    char *msgs[PAGE];
} replay_ctx;

static int replay_job(tw_store_tx *tx, void *arg)
{
    replay_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT seq, msg FROM inbox WHERE client_id=?1 AND "
                                         "seq>?2 AND created>=?3 ORDER BY seq LIMIT ?4");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->client, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->after);
    sqlite3_bind_int64(st, 3, c->since);
    sqlite3_bind_int(st, 4, PAGE);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        c->seqs[c->n] = sqlite3_column_int64(st, 0);
        c->msgs[c->n] = strdup((const char *)sqlite3_column_text(st, 1));
        if (!c->msgs[c->n]) return TW_ENOMEM;
        c->n++;
    }
    return rc == SQLITE_DONE ? 0 : db_err(tx, rc, "inbox replay");
}

int tw_inbox_replay(tw_queue *q, const char *client_id, int64_t after, tw_inbox_cb cb, void *arg)
{
    if (!q || !client_id || !cb) return TW_EINVAL;
    /* Entries appended just before are write-behind: wait for them. */
    if (atomic_load(&q->inbox_inflight) > 0 && !on_writer(q)) tw_store_flush(q->store);
    replay_ctx *c = malloc(sizeof *c);
    if (!c) return TW_ENOMEM;
    c->client = client_id;
    c->after = after;
    c->since = tw_now_ms() - INBOX_MAX_AGE_MS;
    int rc;
    do {
        c->n = 0;
        rc = tw_store_read(q->store, replay_job, c);
        for (int i = 0; i < c->n; i++) {
            tw_msg *m = NULL;
            if (rc == 0) {
                int prc = tw_msg_parse(c->msgs[i], strlen(c->msgs[i]), NULL, &m, NULL);
                if (prc == 0) {
                    cb(arg, c->seqs[i], m);
                    tw_msg_unref(m);
                } else {
                    tw_log_warn(MOD, "inbox entry %lld unreadable, skipped", (long long)c->seqs[i]);
                }
                c->after = c->seqs[i];
            }
            free(c->msgs[i]);
        }
    } while (rc == 0 && c->n == PAGE);
    free(c);
    return rc;
}

/* ---- retention ------------------------------------------------------------ */

/*
 * Finished actions (and their history) older than the retention are deleted
 * oldest first, a page per call. Rows are visited in seq order, which is
 * creation order, so the walk stops at the first row young enough to keep;
 * an unfinished old row (delivered, never answered) is stepped over, and the
 * cursor remembers where the walk got to so those are not read again.
 */
typedef struct prune_ctx {
    tw_queue *q;
    int64_t cutoff;
    int64_t cursor;
    int deleted;
    bool done;
} prune_ctx;

static int prune_job(tw_store_tx *tx, void *arg)
{
    prune_ctx *c = arg;
    sqlite3_stmt *sel = tw_store_stmt(tx, "SELECT seq, created, status FROM actions WHERE seq > ?1 "
                                          "ORDER BY seq LIMIT 512");
    sqlite3_stmt *del_a = tw_store_stmt(tx, "DELETE FROM actions WHERE seq = ?1");
    sqlite3_stmt *del_h = tw_store_stmt(tx, "DELETE FROM action_history WHERE action_seq = ?1");
    if (!sel || !del_a || !del_h) return TW_EDB;
    sqlite3_bind_int64(sel, 1, c->cursor);
    int rc, rows = 0;
    int64_t kill[512];
    int nkill = 0;
    c->done = true;
    while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
        rows++;
        int64_t seq = sqlite3_column_int64(sel, 0), created = sqlite3_column_int64(sel, 1);
        if (created >= c->cutoff) break; /* everything after is younger */
        c->cursor = seq;
        if (tw_status_final(tw_status_parse((const char *)sqlite3_column_text(sel, 2))))
            kill[nkill++] = seq;
        if (rows == 512) c->done = false;
    }
    sqlite3_reset(sel);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_err(tx, rc, "prune select");
    for (int i = 0; i < nkill; i++) {
        sqlite3_reset(del_h); /* a statement must be reset before it is bound again */
        sqlite3_bind_int64(del_h, 1, kill[i]);
        if ((rc = step_done(tx, del_h, "prune history"))) return rc;
        sqlite3_reset(del_a);
        sqlite3_bind_int64(del_a, 1, kill[i]);
        if ((rc = step_done(tx, del_a, "prune action"))) return rc;
    }
    c->deleted += nkill;
    return 0;
}

int tw_queue_prune(tw_queue *q, int64_t older_than_ms, int max_pages, int *deleted)
{
    if (!q) return TW_EINVAL;
    pthread_mutex_lock(&q->prune_lock);
    prune_ctx c = {q, older_than_ms, q->prune_cursor, 0, false};
    int rc = 0;
    for (int page = 0; page < max_pages && !c.done && rc == 0; page++)
        rc = tw_store_exec(q->store, prune_job, &c);
    q->prune_cursor = c.cursor;
    pthread_mutex_unlock(&q->prune_lock);
    if (deleted) *deleted = c.deleted;
    return rc;
}
