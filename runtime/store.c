/*
 * store.c - the one SQLite database of a data directory, with a single
 * group-committing writer thread and a pool of read-only connections.
 *
 * Writes. Every write is a job. tw_store_submit() appends the job to a FIFO
 * list under a mutex and signals the writer; it never touches the disk. The
 * writer thread takes ALL pending jobs (up to max_batch), opens one
 * transaction (BEGIN IMMEDIATE), runs each job inside its own SAVEPOINT (a
 * job that returns < 0 is rolled back to its savepoint, alone), commits once,
 * and only then calls each job's done callback and wakes the threads waiting
 * in tw_store_exec(). With synchronous=FULL a commit costs one or two fsyncs,
 * so the more submitters there are, the more jobs share each fsync: that is
 * what lets durable, acknowledged writes run at tens of thousands per second.
 * Jobs run in submission order, so a job sees the effects of every job
 * submitted before it.
 *
 * The savepoint is the expensive part of a small job: SQLite copies every
 * page the job modifies into the savepoint journal (and frees the copies on
 * RELEASE). A job submitted with tw_store_submit_atomic() promises that it
 * leaves nothing behind when it fails (typically one INSERT OR FAIL whose
 * constraints SQLite checks before writing) and runs without one. The store
 * checks the promise with sqlite3_total_changes64(): a failed atomic job
 * that did change rows makes the writer roll back the whole transaction, so
 * its batch reports TW_EDB rather than committing half a job.
 *
 * Write-behind. A job submitted with tw_store_submit_behind() is one nobody
 * waits for (a live action's row, a status update). With behind_linger_ms
 * set (config store_linger_ms), while only such jobs are pending the writer
 * lets them gather for up to that long after the first one before it
 * commits, so a steady trickle costs one transaction and one fsync per few
 * milliseconds instead of one per job. Any other job (or a flush, or close)
 * ends the wait at once and is committed together with them, in order.
 * Measured on 2 cores in interleaved runs at normal priority, 5 ms raised
 * an action round trip's p99 from 340-420 to 700-780 us (the bigger
 * commits take a core in bursts); with the idle priority below it no
 * longer does. The default is 20 ms since the nng pollers busy-poll (see
 * bindings/nng/nng_direct.c): with one core kept by a spinning poller, an
 * idle writer that wakes for every few rows keeps switching the other core
 * between processes, and 20 ms took an action round trip from 71-76 to
 * 61-62 us p50, p99 from 300-315 to 216-230 us, twind's CPU per round trip
 * from 75-90 to 62-66 us (twin-bench nng_rtt). A crash loses at most the
 * rows of the last 20 ms more than before; they are rows nobody waits for
 * (a live action's row, a status update), and a read of an action first
 * settles it (queue.c).
 *
 * Priority. A batch of write-behind jobs only (config store_idle_priority,
 * on by default) runs its jobs and its commit with the writer at
 * SCHED_IDLE: it gets a core only when no other thread wants one, and any
 * thread that wakes takes the core from it at once (at normal priority a
 * commit burst holds the core for up to a scheduler slice, which on 2 cores
 * showed up in the round trip's p99). While the round trips keep the cores
 * busy, jobs gather behind the idle writer, so it also commits more per
 * transaction and fsync: twind's CPU per action round trip fell from
 * 96-121 to 77-96 us (twin-bench nng_rtt, twind_cpu_per_rtt), p99 from
 * 338-422 to 207-486 us, nng_drain rose from 21.8k to 26.8k actions/s.
 * Whoever could wait for an idle writer lifts it back to SCHED_OTHER
 * (tw_store_lift): the submitter of anything someone waits for (an
 * ordinary job, exec, flush, close); the queue when it finds its mutex busy
 * (a job of an idle batch may hold it: a priority inversion otherwise, found
 * in review); a write-behind submission once the idle batch is later than
 * opts.idle_max_wait_ms (100) or 4096 jobs wait; and a watchdog thread,
 * which every half bound lifts an idle batch that has run past the bound
 * (the backstop for locks the writer may hold inside SQLite or malloc: a
 * second review found SQLite's memory-statistics mutex, now off). The
 * writer is never idle while it holds s->mu, and goes back to normal
 * priority itself before the done callbacks (they take the callers'
 * locks). Leaving SCHED_IDLE needs CAP_SYS_NICE or RLIMIT_NICE >= 20:
 * store open tries both moves on a throwaway thread and, if either fails,
 * keeps the writer at normal priority.
 *
 * The pending list is bounded (MAX_PENDING jobs): beyond that tw_store_submit
 * answers TW_EFULL, a decision for the caller (back-pressure) rather than
 * unbounded memory growth.
 *
 * Reads. tw_store_read() runs the job in the calling thread on a read-only
 * connection taken from a small pool (created on demand, at most MAX_READERS;
 * when all are busy the caller waits). The job runs inside a deferred read
 * transaction so it sees one consistent snapshot; WAL readers never block the
 * writer and the writer never blocks them.
 *
 * Checkpoints. The writer's connection does not checkpoint (a checkpoint
 * copies WAL pages into the database file and fsyncs it: on the writer it
 * would stall every commit queued behind it). Its WAL hook wakes a
 * checkpointer thread with a connection of its own once the WAL holds
 * CKPT_FRAMES frames; PASSIVE checkpoints never block the writer. Only past
 * CKPT_HARD_FRAMES (128 MiB, the checkpointer is not keeping up) does the
 * writer help, which slows it down: back-pressure instead of a WAL without
 * bounds.
 *
 * Statements. Each connection caches its prepared statements keyed by SQL
 * text (prepared with SQLITE_PREPARE_PERSISTENT). A statement handed out by
 * tw_store_stmt() is reset and unbound first, and every statement a job used
 * is reset again when the job ends, so no job leaves a read transaction open
 * behind it (that would stop WAL checkpoints).
 *
 * Ownership: tw_store owns its connections and statements; a tw_store_tx is
 * only valid during the job it was given to. All public functions are
 * thread-safe. A job must not call tw_store_exec/flush/migrate/close (it
 * would wait for itself): they detect that and return TW_EBUSY. A done
 * callback runs on the writer thread between transactions, so there
 * tw_store_exec runs its job at once, inline, in a transaction of its own
 * (the router drains an agent's queue from a push's done callback);
 * tw_store_flush answers TW_EBUSY there and tw_store_close refuses (logged).
 */
#include "store.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <unistd.h>

#define MOD "store"
#define MAX_READERS 8
#define MAX_PENDING (1u << 20)
#define STMT_BUCKETS 64
#define BUSY_TIMEOUT_MS 5000
/* WAL frames (2 KiB pages) after which the checkpointer thread is woken, and
 * after which the writer checkpoints itself because it is falling behind. */
#define CKPT_FRAMES 4096
#define CKPT_HARD_FRAMES 65536
/* The writer takes idle priority for a write-behind batch only while fewer
 * jobs than this wait (and its oldest job waited less than
 * opts.idle_max_wait_ms); a job submitted past either bound lifts it. */
#define IDLE_MAX_BACKLOG 4096

/* ---- statement cache ---------------------------------------------------- */

typedef struct cached_stmt {
    sqlite3_stmt *st;
    uint32_t hash;
    bool used;                /* handed out during the current job */
    struct cached_stmt *next; /* bucket chain */
    struct cached_stmt *next_used;
} cached_stmt;

struct tw_store_tx {
    tw_store *store;
    sqlite3 *db;
    cached_stmt *buckets[STMT_BUCKETS];
    /* Fast path: the address a statement was last asked for (SQL is
     * nearly always a literal), checked by text before it is trusted. */
    struct {
        const char *sql;
        cached_stmt *c;
    } recent[STMT_BUCKETS];
    cached_stmt *used; /* statements handed out during the current job */
    struct tw_store_tx *next_free;
};

static uint32_t hash_text(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

sqlite3 *tw_store_db(tw_store_tx *tx)
{
    return tx->db;
}

static cached_stmt *stmt_lookup(tw_store_tx *tx, const char *sql)
{
    size_t r = ((uintptr_t)sql >> 3) % STMT_BUCKETS;
    cached_stmt *c = tx->recent[r].c;
    if (tx->recent[r].sql == sql && strcmp(sqlite3_sql(c->st), sql) == 0) return c;
    uint32_t h = hash_text(sql);
    for (c = tx->buckets[h % STMT_BUCKETS]; c; c = c->next)
        if (c->hash == h && strcmp(sqlite3_sql(c->st), sql) == 0) break;
    if (c) {
        tx->recent[r].sql = sql;
        tx->recent[r].c = c;
    }
    return c;
}

sqlite3_stmt *tw_store_stmt(tw_store_tx *tx, const char *sql)
{
    cached_stmt *c = stmt_lookup(tx, sql);
    if (!c) {
        uint32_t h = hash_text(sql);
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v3(tx->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
        if (rc != SQLITE_OK || !st) {
            tw_log_error(MOD, "prepare failed: %s: %s", sqlite3_errmsg(tx->db), sql);
            sqlite3_finalize(st);
            return NULL;
        }
        c = calloc(1, sizeof *c);
        if (!c) {
            sqlite3_finalize(st);
            return NULL;
        }
        c->st = st;
        c->hash = h;
        c->next = tx->buckets[h % STMT_BUCKETS];
        tx->buckets[h % STMT_BUCKETS] = c;
    }
    sqlite3_reset(c->st);
    sqlite3_clear_bindings(c->st);
    if (!c->used) {
        c->used = true;
        c->next_used = tx->used;
        tx->used = c;
    }
    return c->st;
}

/* Resets every statement the finished job used, so none keeps a transaction
 * or a read cursor open. */
static void tx_end_job(tw_store_tx *tx)
{
    for (cached_stmt *c = tx->used; c; c = c->next_used) {
        sqlite3_reset(c->st);
        c->used = false;
    }
    tx->used = NULL;
}

int tw_store_sql(tw_store_tx *tx, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(tx->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        tw_log_error(MOD, "%s: %.200s", err ? err : "error", sql);
        sqlite3_free(err);
        return TW_EDB;
    }
    return 0;
}

/* Runs one of the writer's own control statements (BEGIN, SAVEPOINT, ...). */
static int tx_ctl(tw_store_tx *tx, const char *sql)
{
    sqlite3_stmt *st = tw_store_stmt(tx, sql);
    if (!st) return TW_EDB;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        tw_log_error(MOD, "%s: %s", sql, sqlite3_errmsg(tx->db));
        return TW_EDB;
    }
    return 0;
}

static void tx_free(tw_store_tx *tx)
{
    if (!tx) return;
    for (int i = 0; i < STMT_BUCKETS; i++) {
        cached_stmt *c = tx->buckets[i];
        while (c) {
            cached_stmt *n = c->next;
            sqlite3_finalize(c->st);
            free(c);
            c = n;
        }
    }
    if (tx->db) sqlite3_close(tx->db);
    free(tx);
}

static int tx_open(tw_store *s, const char *path, bool readonly, tw_store_tx **out);

/* ---- the store ---------------------------------------------------------- */

typedef struct job {
    tw_store_job_fn fn;
    void *arg;
    tw_store_done_fn done;
    struct exec_wait *wait; /* tw_store_exec's waiter, or NULL */
    bool atomic;            /* tw_store_submit_atomic: no savepoint */
    bool behind;            /* tw_store_submit_behind: may wait for company */
    int64_t since;          /* mono us of its submission (write-behind jobs) */
    int rc;
    struct job *next;
} job;

typedef struct exec_wait {
    int rc;
    bool finished;
} exec_wait;

struct tw_store {
    char *path;
    tw_store_opts opts;

    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* writer: jobs arrived or closing */
    pthread_cond_t done_cv; /* exec waiters: a batch was committed */
    job *head, *tail;
    size_t npending_list; /* jobs in the list */
    size_t nurgent;       /* of them, not write-behind */
    int64_t behind_since; /* mono us: the oldest write-behind job in the list */
    bool closing;
    uint64_t submitted, committed, commits;

    pthread_t writer;
    /* Priority (see the header comment). */
    bool idle_ok;             /* the writer may take SCHED_IDLE and leave it again */
    atomic_int writer_tid;    /* set before the first job */
    atomic_bool writer_idle;  /* an idle batch runs and nobody lifted it yet */
    atomic_bool idle_batch;   /* the writer went idle for this batch, not back yet */
    atomic_llong idle_since;  /* mono us when the current idle batch began */
    atomic_uint lift_gen;     /* bumped by every lift request */
    atomic_bool lift_failed;  /* logged once */
    int64_t idle_max_wait_us; /* opts.idle_max_wait_ms */
    pthread_t wd;             /* the watchdog, when idle_ok */
    pthread_mutex_t wdmu;
    pthread_cond_t wdcv;
    bool wd_stop;
    tw_store_tx *wtx; /* writer connection, touched only by the writer thread */
    bool in_job;      /* writer thread only: a job function is running */

    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    tw_store_tx *rfree; /* idle read connections */
    int nreaders;       /* read connections opened */

    /* Checkpoints run on their own thread and connection. */
    pthread_t ckpt;
    bool ckpt_started;
    sqlite3 *cdb;
    pthread_mutex_t ckmu;
    pthread_cond_t ckcv;
    bool ckpt_want, ckpt_stop;
    uint64_t checkpoints;
};

/* Called by SQLite on the writer thread after each commit with the WAL's
 * size in frames. Replaces wal_autocheckpoint. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    tw_store *s = arg;
    if (frames >= CKPT_HARD_FRAMES) {
        /* The checkpointer cannot keep up (or a long reader pins the WAL):
         * do a share of the work here, which slows the writer down. */
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    } else if (frames >= CKPT_FRAMES) {
        pthread_mutex_lock(&s->ckmu);
        s->ckpt_want = true;
        pthread_cond_signal(&s->ckcv);
        pthread_mutex_unlock(&s->ckmu);
    }
    return SQLITE_OK;
}

/* Moves the writer (its own thread, or tid) to policy; the first failure
 * is logged. */
static void set_policy(tw_store *s, pid_t tid, int policy)
{
    struct sched_param sp = {0};
    if (sched_setscheduler(tid, policy, &sp) != 0 && !atomic_exchange(&s->lift_failed, true))
        tw_log_warn(MOD, "writer priority: %s (later failures not logged)", strerror(errno));
}

void tw_store_lift(tw_store *s)
{
    if (!s || !s->idle_ok) return;
    atomic_fetch_add(&s->lift_gen, 1);
    if (atomic_exchange(&s->writer_idle, false))
        set_policy(s, atomic_load(&s->writer_tid), SCHED_OTHER);
}

/* The idle writer's watchdog (see "Priority"): every half bound it lifts an
 * idle batch that has run longer than the bound, whatever the flags say. */
static void *wd_main(void *arg)
{
    tw_store *s = arg;
    pthread_mutex_lock(&s->wdmu);
    while (!s->wd_stop) {
        int64_t due = tw_mono_us() + s->idle_max_wait_us / 2;
        struct timespec ts = {.tv_sec = (time_t)(due / 1000000),
                              .tv_nsec = (long)(due % 1000000) * 1000};
        pthread_cond_timedwait(&s->wdcv, &s->wdmu, &ts);
        if (atomic_load(&s->idle_batch) &&
            tw_mono_us() - atomic_load(&s->idle_since) >= s->idle_max_wait_us) {
            atomic_fetch_add(&s->lift_gen, 1);
            atomic_store(&s->writer_idle, false);
            set_policy(s, atomic_load(&s->writer_tid), SCHED_OTHER);
        }
    }
    pthread_mutex_unlock(&s->wdmu);
    return NULL;
}

static void wd_stop(tw_store *s)
{
    pthread_mutex_lock(&s->wdmu);
    s->wd_stop = true;
    pthread_cond_signal(&s->wdcv);
    pthread_mutex_unlock(&s->wdmu);
    pthread_join(s->wd, NULL);
}

static void *ckpt_main(void *arg)
{
    tw_store *s = arg;
    pthread_mutex_lock(&s->ckmu);
    for (;;) {
        while (!s->ckpt_want && !s->ckpt_stop)
            pthread_cond_wait(&s->ckcv, &s->ckmu);
        if (s->ckpt_stop) break;
        s->ckpt_want = false;
        pthread_mutex_unlock(&s->ckmu);
        int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            tw_log_warn(MOD, "checkpoint: %s", sqlite3_errmsg(s->cdb));
        pthread_mutex_lock(&s->ckmu);
        s->checkpoints++;
    }
    pthread_mutex_unlock(&s->ckmu);
    return NULL;
}

static int tx_open(tw_store *s, const char *path, bool readonly, tw_store_tx **out)
{
    tw_store_tx *tx = calloc(1, sizeof *tx);
    if (!tx) return TW_ENOMEM;
    tx->store = s;
    int flags = SQLITE_OPEN_NOMUTEX |
                (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(path, &tx->db, flags, NULL);
    if (rc != SQLITE_OK) {
        tw_log_error(MOD, "open %s: %s", path, tx->db ? sqlite3_errmsg(tx->db) : "out of memory");
        tx_free(tx);
        return TW_EDB;
    }
    sqlite3_busy_timeout(tx->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(tx->db, 1);
    if (readonly) {
        if (tw_store_sql(tx, "PRAGMA query_only=ON") < 0) {
            tx_free(tx);
            return TW_EDB;
        }
    }
    *out = tx;
    return 0;
}

static bool on_writer(tw_store *s)
{
    return pthread_equal(pthread_self(), s->writer);
}

/* Runs one batch of jobs in one transaction; returns after the done
 * callbacks ran and waiters were woken. */
static void run_batch(tw_store *s, job *batch, size_t n, bool idle)
{
    tw_store_tx *tx = s->wtx;
    bool in_tx = tx_ctl(tx, "BEGIN IMMEDIATE") == 0;
    job *first_in_tx = batch; /* jobs of the current transaction start here */

    for (job *j = batch; j; j = j->next) {
        if (!in_tx) {
            /* A previous job's failure aborted the whole transaction
             * (SQLite does that on e.g. SQLITE_FULL): start a new one. */
            in_tx = tx_ctl(tx, "BEGIN IMMEDIATE") == 0;
            first_in_tx = j;
            if (!in_tx) {
                j->rc = TW_EDB;
                continue;
            }
        }
        if (!j->atomic && tx_ctl(tx, "SAVEPOINT job") < 0) {
            j->rc = TW_EDB;
            tx_end_job(tx);
            continue;
        }
        sqlite3_int64 changes = sqlite3_total_changes64(tx->db);
        s->in_job = true;
        j->rc = j->fn(tx, j->arg);
        s->in_job = false;
        tx_end_job(tx);
        if (j->rc > 0) j->rc = 0;
        if (j->atomic && j->rc < 0 && !sqlite3_get_autocommit(tx->db) &&
            sqlite3_total_changes64(tx->db) != changes) {
            /* An "atomic" job failed after writing: without a savepoint the
             * only safe undo is the whole transaction. */
            tw_log_error(MOD, "an atomic job failed after changing rows; rolling back its batch");
            tx_ctl(tx, "ROLLBACK");
        }
        if (sqlite3_get_autocommit(tx->db)) {
            /* The transaction is gone: everything since first_in_tx is lost. */
            tw_log_error(MOD, "transaction aborted by a job: %s", sqlite3_errmsg(tx->db));
            for (job *k = first_in_tx; k; k = k->next) {
                k->rc = TW_EDB;
                if (k == j) break;
            }
            in_tx = false;
            continue;
        }
        if (j->atomic) continue;
        if (j->rc < 0) tx_ctl(tx, "ROLLBACK TO job");
        tx_ctl(tx, "RELEASE job");
    }
    if (in_tx) {
        if (tx_ctl(tx, "COMMIT") < 0) {
            tw_log_error(MOD, "commit of %zu jobs failed", n);
            if (!sqlite3_get_autocommit(tx->db)) tx_ctl(tx, "ROLLBACK");
            for (job *k = first_in_tx; k; k = k->next)
                k->rc = TW_EDB;
        }
    }

    if (idle) { /* done callbacks take the callers' locks: normal priority */
        atomic_store(&s->writer_idle, false);
        set_policy(s, 0, SCHED_OTHER);
        atomic_store(&s->idle_batch, false);
    }
    for (job *j = batch; j; j = j->next)
        if (j->done) j->done(j->arg, j->rc);

    pthread_mutex_lock(&s->mu);
    s->committed += n;
    s->commits++;
    bool wake = false;
    for (job *j = batch; j; j = j->next) {
        if (j->wait) {
            j->wait->rc = j->rc;
            j->wait->finished = true;
            wake = true;
        }
    }
    if (wake) pthread_cond_broadcast(&s->done_cv);
    pthread_mutex_unlock(&s->mu);

    while (batch) {
        job *nx = batch->next;
        free(batch);
        batch = nx;
    }
}

static void *idle_probe_main(void *arg)
{
    struct sched_param sp = {0};
    *(bool *)arg =
        sched_setscheduler(0, SCHED_IDLE, &sp) == 0 && sched_setscheduler(0, SCHED_OTHER, &sp) == 0;
    return NULL;
}

/* Whether a thread of this process may go to SCHED_IDLE and come back
 * (coming back needs CAP_SYS_NICE or RLIMIT_NICE >= 20), tried on a thread
 * of its own: a writer stuck at idle priority would starve under load. */
static bool idle_allowed(void)
{
    bool ok = false;
    pthread_t t;
    if (pthread_create(&t, NULL, idle_probe_main, &ok) != 0) return false;
    pthread_join(t, NULL);
    return ok;
}

static void *writer_main(void *arg)
{
    tw_store *s = arg;
    size_t max = (size_t)s->opts.max_batch;
    atomic_store(&s->writer_tid, gettid());
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->head && !s->closing)
            pthread_cond_wait(&s->work_cv, &s->mu);
        if (!s->head) { /* closing and drained */
            pthread_mutex_unlock(&s->mu);
            break;
        }
        if (!s->nurgent && !s->closing) { /* write-behind only: let it gather */
            int64_t due = s->behind_since + (int64_t)s->opts.behind_linger_ms * 1000;
            int64_t now = tw_mono_us();
            if (now < due) {
                struct timespec ts = {.tv_sec = (time_t)(due / 1000000),
                                      .tv_nsec = (long)(due % 1000000) * 1000};
                pthread_cond_timedwait(&s->work_cv, &s->mu, &ts);
                pthread_mutex_unlock(&s->mu);
                continue;
            }
        }
        job *batch = s->head, *last = s->head;
        size_t n = 1;
        while (n < max && last->next) {
            last = last->next;
            n++;
        }
        s->head = last->next;
        if (!s->head) s->tail = NULL;
        last->next = NULL;
        s->npending_list -= n;
        bool urgent = false;
        for (job *j = batch; j; j = j->next)
            if (!j->behind) {
                s->nurgent--;
                urgent = true;
            }
        if (s->head) s->behind_since = tw_mono_us(); /* (the rest waited already) */
        bool idle = s->idle_ok && !urgent && !s->nurgent && !s->closing &&
                    s->npending_list < IDLE_MAX_BACKLOG &&
                    tw_mono_us() - batch->since < s->idle_max_wait_us;
        unsigned gen = atomic_load(&s->lift_gen);
        pthread_mutex_unlock(&s->mu);
        if (idle) {
            /* Never at idle priority while holding s->mu. Published before
             * the move, checked after it: a lift asked for since the
             * decision (lift_gen), or one that took writer_idle before the
             * move took effect, is honoured here; any later one finds
             * writer_idle set and lifts the writer itself. */
            atomic_store(&s->idle_since, tw_mono_us());
            atomic_store(&s->idle_batch, true);
            atomic_store(&s->writer_idle, true);
            set_policy(s, 0, SCHED_IDLE);
            if (atomic_load(&s->lift_gen) != gen || !atomic_load(&s->writer_idle)) {
                atomic_store(&s->writer_idle, false);
                set_policy(s, 0, SCHED_OTHER);
            }
        }
        run_batch(s, batch, n, idle);
    }
    return NULL;
}

/* Creates the file with mode 0600 before SQLite sees it: SQLite would create
 * it with the process umask, and gives the -wal/-shm files the same mode as
 * the database. */
static int create_private(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        tw_log_error(MOD, "create %s: %s", path, strerror(errno));
        return TW_EIO;
    }
    close(fd);
    return 0;
}

/* ---- SQLite's mutexes and the idle writer ------------------------------ */

/* Every SQLite mutex of the process goes through lifting_enter: one that is
 * busy may be held by an idle writer (the WAL's shared-memory mutex at
 * BEGIN and COMMIT, the page cache's statistics mutex on any allocation; a
 * third review saw reads wait 150-200 ms on the first), so the thread that
 * finds it busy lifts every idle writer before it waits, as q_lock does.
 * The stores are found in a small registry; its lock is taken only on that
 * slow path and by open and close. */
#define LIFT_SLOTS 16
static sqlite3_mutex_methods real_mutex;
static pthread_rwlock_t lift_reg_lock = PTHREAD_RWLOCK_INITIALIZER;
static tw_store *lift_reg[LIFT_SLOTS];
static bool sqlite_ready; /* the wrapper and the statistics setting took */

static void lifting_enter(sqlite3_mutex *m)
{
    if (real_mutex.xMutexTry(m) == SQLITE_OK) return;
    pthread_rwlock_rdlock(&lift_reg_lock);
    for (int i = 0; i < LIFT_SLOTS; i++)
        if (lift_reg[i]) tw_store_lift(lift_reg[i]);
    pthread_rwlock_unlock(&lift_reg_lock);
    real_mutex.xMutexEnter(m);
}

/* Before SQLite is initialized (the first store open normally is): the
 * mutex wrapper above, and no memory statistics, whose process-wide mutex
 * around every allocation is one more such lock (and a cost; nothing here
 * reads them). If SQLite was already initialized by someone else, neither
 * can be set, and the writer never goes idle. */
static void sqlite_setup(void)
{
    /* Configuring only works before initialization: if SQLite is in use
     * already, leave it alone. The default mutex methods are filled in by
     * the first initialization, so initialize and shut down once (nothing
     * is open yet) to read them, then install the wrapper. */
    int rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc == SQLITE_OK) rc = sqlite3_initialize();
    if (rc == SQLITE_OK) rc = sqlite3_shutdown();
    if (rc == SQLITE_OK) rc = sqlite3_config(SQLITE_CONFIG_GETMUTEX, &real_mutex);
    if (rc == SQLITE_OK && (!real_mutex.xMutexTry || !real_mutex.xMutexEnter)) rc = SQLITE_MISUSE;
    if (rc == SQLITE_OK) {
        sqlite3_mutex_methods wrap = real_mutex;
        wrap.xMutexEnter = lifting_enter;
        rc = sqlite3_config(SQLITE_CONFIG_MUTEX, &wrap);
    }
    sqlite_ready = rc == SQLITE_OK;
    if (!sqlite_ready)
        tw_log_warn(
            MOD, "SQLite was in use before the store (%d): the writer keeps normal priority", rc);
}

/* Adds s to the registry (false: full, then its writer never goes idle)
 * or takes it out; once out, no lifting_enter refers to it any more. */
static bool lift_register(tw_store *s, bool on)
{
    bool done = false;
    pthread_rwlock_wrlock(&lift_reg_lock);
    for (int i = 0; i < LIFT_SLOTS && !done; i++)
        if (lift_reg[i] == (on ? NULL : s)) {
            lift_reg[i] = on ? s : NULL;
            done = true;
        }
    pthread_rwlock_unlock(&lift_reg_lock);
    return done;
}

int tw_store_open(const char *path, const tw_store_opts *opts, tw_store **out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_setup);
    if (!path || !out) return TW_EINVAL;
    *out = NULL;
    int rc = create_private(path);
    if (rc < 0) return rc;

    tw_store *s = calloc(1, sizeof *s);
    if (!s) return TW_ENOMEM;
    if (opts) s->opts = *opts;
    if (s->opts.max_batch <= 0) s->opts.max_batch = 4096;
    s->path = strdup(path);
    if (!s->path) {
        free(s);
        return TW_ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    /* the write-behind linger and the idle watchdog wait on the monotonic clock */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->work_cv, &ca);
    pthread_cond_init(&s->done_cv, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->rcv, NULL);
    pthread_mutex_init(&s->ckmu, NULL);
    pthread_cond_init(&s->ckcv, &ca);
    pthread_mutex_init(&s->wdmu, NULL);
    pthread_cond_init(&s->wdcv, &ca);
    pthread_condattr_destroy(&ca);
    s->idle_ok =
        !s->opts.no_idle_priority && sqlite_ready && idle_allowed() && lift_register(s, true);
    s->idle_max_wait_us =
        (int64_t)(s->opts.idle_max_wait_ms > 0 ? s->opts.idle_max_wait_ms : 100) * 1000;

    rc = tx_open(s, path, false, &s->wtx);
    if (rc == 0) {
        const char *pragmas =
            s->opts.synchronous_normal ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL";
        /* page_size only takes effect on a new database (before WAL is on).
         * 2 KiB rather than 4: every page a job modifies is copied into the
         * job's savepoint journal, and most jobs touch one leaf per index;
         * halving the copy cut the writer's instructions by 15 % (callgrind,
         * enqueue scenario). journal_mode returns a row; sqlite3_exec
         * handles that. */
        if (tw_store_sql(s->wtx, "PRAGMA page_size=2048") < 0 ||
            tw_store_sql(s->wtx, "PRAGMA journal_mode=WAL") < 0 ||
            tw_store_sql(s->wtx, pragmas) < 0 ||
            tw_store_sql(s->wtx, "PRAGMA foreign_keys=ON") < 0 ||
            tw_store_sql(s->wtx, "PRAGMA temp_store=MEMORY") < 0 ||
            tw_store_sql(s->wtx, "PRAGMA cache_size=-16384") < 0 ||
            /* the WAL file shrinks back to 64 MiB after a reset */
            tw_store_sql(s->wtx, "PRAGMA journal_size_limit=67108864") < 0 ||

            tw_store_sql(s->wtx, "CREATE TABLE IF NOT EXISTS schema_version("
                                 "component TEXT PRIMARY KEY, version INTEGER NOT NULL)") < 0)
            rc = TW_EDB;
    }
    if (rc == 0) {
        sqlite3_stmt *st = NULL;
        /* Check WAL really is on (it is not on e.g. some network file systems). */
        if (sqlite3_prepare_v2(s->wtx->db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(st, 0);
            if (!mode || strcmp(mode, "wal") != 0) {
                tw_log_error(MOD, "%s: WAL mode not available (%s)", path, mode ? mode : "?");
                rc = TW_EDB;
            }
        } else {
            rc = TW_EDB;
        }
        sqlite3_finalize(st);
    }
    if (rc == 0) {
        /* A checkpoint copies WAL pages into the database and fsyncs it: on
         * the writer it would stall every commit queued behind it, so it runs
         * on a thread of its own (PASSIVE: it never blocks the writer). */
        if (sqlite3_open_v2(path, &s->cdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
            tw_log_error(MOD, "open %s: %s", path, s->cdb ? sqlite3_errmsg(s->cdb) : "no memory");
            rc = TW_EDB;
        } else {
            sqlite3_busy_timeout(s->cdb, BUSY_TIMEOUT_MS);
            sqlite3_wal_hook(s->wtx->db, wal_hook, s);
            if (pthread_create(&s->ckpt, NULL, ckpt_main, s) != 0)
                rc = TW_ENOMEM;
            else
                s->ckpt_started = true;
        }
    }
    if (rc == 0 && s->idle_ok && pthread_create(&s->wd, NULL, wd_main, s) != 0) {
        lift_register(s, false);
        s->idle_ok = false; /* no watchdog, no idle priority */
    }
    bool wd_started = rc == 0 && s->idle_ok;
    if (rc == 0 && pthread_create(&s->writer, NULL, writer_main, s) != 0) rc = TW_ENOMEM;
    if (rc < 0) {
        if (wd_started) wd_stop(s);
        if (s->idle_ok) lift_register(s, false);
        if (s->ckpt_started) {
            pthread_mutex_lock(&s->ckmu);
            s->ckpt_stop = true;
            pthread_cond_signal(&s->ckcv);
            pthread_mutex_unlock(&s->ckmu);
            pthread_join(s->ckpt, NULL);
        }
        if (s->cdb) sqlite3_close(s->cdb);
        pthread_mutex_destroy(&s->ckmu);
        pthread_cond_destroy(&s->ckcv);
        pthread_mutex_destroy(&s->wdmu);
        pthread_cond_destroy(&s->wdcv);
        tx_free(s->wtx);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->work_cv);
        pthread_cond_destroy(&s->done_cv);
        pthread_mutex_destroy(&s->rmu);
        pthread_cond_destroy(&s->rcv);
        free(s->path);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void tw_store_close(tw_store *s)
{
    if (!s) return;
    if (on_writer(s)) {
        tw_log_error(MOD, "tw_store_close called from the writer thread; ignored");
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    tw_store_lift(s); /* someone waits now: the rest at normal priority */
    pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->writer, NULL); /* the writer drains the list before it exits */
    if (s->idle_ok) {
        wd_stop(s);
        lift_register(s, false);
    }

    pthread_mutex_lock(&s->ckmu);
    s->ckpt_stop = true;
    pthread_cond_signal(&s->ckcv);
    pthread_mutex_unlock(&s->ckmu);
    pthread_join(s->ckpt, NULL);

    pthread_mutex_lock(&s->rmu);
    if (s->nreaders && !s->rfree) tw_log_warn(MOD, "closing with read connections still in use");
    while (s->rfree) {
        tw_store_tx *tx = s->rfree;
        s->rfree = tx->next_free;
        tx_free(tx);
    }
    pthread_mutex_unlock(&s->rmu);
    sqlite3_close(s->cdb);
    /* Last: the last connection to close checkpoints and removes the WAL. */
    tx_free(s->wtx);
    pthread_mutex_destroy(&s->ckmu);
    pthread_cond_destroy(&s->ckcv);
    pthread_mutex_destroy(&s->wdmu);
    pthread_cond_destroy(&s->wdcv);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->work_cv);
    pthread_cond_destroy(&s->done_cv);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->rcv);
    free(s->path);
    free(s);
}

static int enqueue(tw_store *s, tw_store_job_fn fn, void *arg, tw_store_done_fn done,
                   exec_wait *wait, bool atomic, bool behind)
{
    if (!s || !fn) return TW_EINVAL;
    job *j = malloc(sizeof *j);
    if (!j) return TW_ENOMEM;
    *j =
        (job){.fn = fn, .arg = arg, .done = done, .wait = wait, .atomic = atomic, .behind = behind};
    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        free(j);
        return TW_ECLOSED;
    }
    if (s->npending_list >= MAX_PENDING) {
        pthread_mutex_unlock(&s->mu);
        free(j);
        return TW_EFULL;
    }
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    bool first = s->npending_list++ == 0;
    s->submitted++;
    if (j->behind) {
        j->since = tw_mono_us();
        if (first) s->behind_since = j->since;
        /* an idle writer starved for too long, or too far behind: lift it */
        if (atomic_load(&s->writer_idle) &&
            (s->npending_list >= IDLE_MAX_BACKLOG ||
             j->since - atomic_load(&s->idle_since) >= s->idle_max_wait_us))
            tw_store_lift(s);
    } else {
        s->nurgent++;
        tw_store_lift(s); /* someone waits for this one */
    }
    /* a write-behind job joining others wakes nobody: the writer is
     * lingering, or busy and takes it next */
    if (!j->behind || first) pthread_cond_signal(&s->work_cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int tw_store_submit(tw_store *s, tw_store_job_fn fn, void *arg, tw_store_done_fn done)
{
    return enqueue(s, fn, arg, done, NULL, false, false);
}

int tw_store_submit_atomic(tw_store *s, tw_store_job_fn fn, void *arg, tw_store_done_fn done)
{
    return enqueue(s, fn, arg, done, NULL, true, false);
}

int tw_store_submit_behind(tw_store *s, tw_store_job_fn fn, void *arg, tw_store_done_fn done)
{
    return enqueue(s, fn, arg, done, NULL, true, true);
}

/* tw_store_exec from a done callback: the writer is between transactions,
 * so the job runs now in a transaction of its own. */
static int exec_inline(tw_store *s, tw_store_job_fn fn, void *arg)
{
    pthread_mutex_lock(&s->mu);
    bool closing = s->closing;
    pthread_mutex_unlock(&s->mu);
    if (closing) return TW_ECLOSED;
    tw_store_tx *tx = s->wtx;
    if (tx_ctl(tx, "BEGIN IMMEDIATE") < 0) return TW_EDB;
    s->in_job = true;
    int rc = fn(tx, arg);
    s->in_job = false;
    tx_end_job(tx);
    if (rc > 0) rc = 0;
    if (sqlite3_get_autocommit(tx->db)) {
        tw_log_error(MOD, "transaction aborted by a job: %s", sqlite3_errmsg(tx->db));
        return TW_EDB;
    }
    if (rc == 0 && tx_ctl(tx, "COMMIT") < 0) rc = TW_EDB;
    if (!sqlite3_get_autocommit(tx->db)) tx_ctl(tx, "ROLLBACK");
    pthread_mutex_lock(&s->mu);
    s->submitted++;
    s->committed++;
    s->commits++;
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int tw_store_exec(tw_store *s, tw_store_job_fn fn, void *arg)
{
    if (!s || !fn) return TW_EINVAL;
    if (on_writer(s)) {
        if (!s->in_job) return exec_inline(s, fn, arg);
        tw_log_error(MOD, "tw_store_exec called from a job (would deadlock)");
        return TW_EBUSY;
    }
    exec_wait w = {0};
    int rc = enqueue(s, fn, arg, NULL, &w, false, false);
    if (rc < 0) return rc;
    pthread_mutex_lock(&s->mu);
    while (!w.finished)
        pthread_cond_wait(&s->done_cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return w.rc;
}

static int noop_job(tw_store_tx *tx, void *arg)
{
    return 0;
}

int tw_store_flush(tw_store *s)
{
    if (!s) return TW_EINVAL;
    if (on_writer(s)) return TW_EBUSY; /* the jobs before it wait behind us */
    /* Jobs run and commit in submission order, so once this empty job is
     * committed every job submitted before it is too. */
    return tw_store_exec(s, noop_job, NULL);
}

int tw_store_read(tw_store *s, tw_store_job_fn fn, void *arg)
{
    if (!s || !fn) return TW_EINVAL;
    tw_store_tx *tx = NULL;
    pthread_mutex_lock(&s->rmu);
    for (;;) {
        if (s->rfree) {
            tx = s->rfree;
            s->rfree = tx->next_free;
            break;
        }
        if (s->nreaders < MAX_READERS) {
            s->nreaders++; /* reserve the slot, open outside the lock */
            break;
        }
        pthread_cond_wait(&s->rcv, &s->rmu);
    }
    pthread_mutex_unlock(&s->rmu);
    if (!tx) {
        int rc = tx_open(s, s->path, true, &tx);
        if (rc < 0) {
            pthread_mutex_lock(&s->rmu);
            s->nreaders--;
            pthread_cond_signal(&s->rcv);
            pthread_mutex_unlock(&s->rmu);
            return rc;
        }
    }

    int rc = tx_ctl(tx, "BEGIN");
    if (rc == 0) {
        rc = fn(tx, arg);
        tx_end_job(tx);
        if (!sqlite3_get_autocommit(tx->db)) tx_ctl(tx, "COMMIT");
    }

    pthread_mutex_lock(&s->rmu);
    tx->next_free = s->rfree;
    s->rfree = tx;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
    return rc > 0 ? 0 : rc;
}

/* ---- migrations --------------------------------------------------------- */

typedef struct migrate_step {
    const char *component;
    const char *sql;
    int version; /* the version this step brings the component to */
    int current; /* out: the version found */
} migrate_step;

static int read_version(tw_store_tx *tx, const char *component, int *out)
{
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT version FROM schema_version WHERE component=?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, component, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = sqlite3_column_int(st, 0);
        return 0;
    }
    if (rc == SQLITE_DONE) {
        *out = 0;
        return 0;
    }
    return TW_EDB;
}

static int migrate_job(tw_store_tx *tx, void *arg)
{
    migrate_step *m = arg;
    int rc = read_version(tx, m->component, &m->current);
    if (rc < 0) return rc;
    if (m->current >= m->version) return 0; /* already applied */
    if (m->current != m->version - 1) return TW_EINVAL;
    rc = tw_store_sql(tx, m->sql);
    if (rc < 0) return rc;
    sqlite3_stmt *st = tw_store_stmt(tx, "INSERT INTO schema_version(component, version) "
                                         "VALUES(?1, ?2) ON CONFLICT(component) "
                                         "DO UPDATE SET version=excluded.version");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, m->component, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, m->version);
    return sqlite3_step(st) == SQLITE_DONE ? 0 : TW_EDB;
}

static int version_read_job(tw_store_tx *tx, void *arg)
{
    migrate_step *m = arg;
    return read_version(tx, m->component, &m->current);
}

int tw_store_migrate(tw_store *s, const char *component, const char *const *steps, int nsteps)
{
    if (!s || !component || !*component || nsteps < 0 || (nsteps > 0 && !steps)) return TW_EINVAL;
    migrate_step m = {.component = component};
    int rc = tw_store_read(s, version_read_job, &m);
    if (rc < 0) return rc;
    if (m.current > nsteps) {
        tw_log_error(MOD, "%s: schema version %d is newer than this build knows (%d)", component,
                     m.current, nsteps);
        return TW_EINVAL;
    }
    for (int v = m.current; v < nsteps; v++) {
        m.sql = steps[v];
        m.version = v + 1;
        rc = tw_store_exec(s, migrate_job, &m);
        if (rc < 0) {
            tw_log_error(MOD, "%s: migration to version %d failed: %s", component, v + 1,
                         tw_strerror(rc));
            return rc;
        }
        if (m.current < v) return TW_EINVAL; /* cannot happen: versions only grow */
        if (m.current == v) tw_log_info(MOD, "%s: schema at version %d", component, v + 1);
    }
    return 0;
}

void tw_store_get_stats(tw_store *s, tw_store_stats *out)
{
    pthread_mutex_lock(&s->mu);
    out->commits = s->commits;
    out->jobs = s->committed;
    out->pending = s->submitted - s->committed;
    pthread_mutex_unlock(&s->mu);
}
