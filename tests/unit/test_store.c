/*
 * test_store.c - the SQLite store: group commit, per-job savepoints, exec
 * results, the read pool, migrations, close, and concurrent submitters.
 *
 * Tests that need the writer to be busy use a "gate" job: it blocks the
 * writer thread inside its transaction until the test opens the gate, so
 * what is submitted meanwhile is known to land in the next batch, without
 * any dependence on machine speed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "runtime/store.h"

#include <errno.h>
#include <sched.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- fixtures ------------------------------------------------------------ */

typedef struct fx {
    char dir[512];
    char path[600];
    tw_store *s;
} fx;

static void make_tmpdir(char *out, size_t n)
{
    const char *base = getenv("TW_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0700);
    snprintf(out, n, "%s/test_store.XXXXXX", base);
    assert_non_null(mkdtemp(out));
}

static void rm_tree(const char *dir)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int create_t(tw_store_tx *tx, void *arg)
{
    return tw_store_sql(tx, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)");
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    make_tmpdir(f->dir, sizeof f->dir);
    snprintf(f->path, sizeof f->path, "%s/twind.db", f->dir);
    assert_int_equal(tw_store_open(f->path, NULL, &f->s), 0);
    assert_int_equal(tw_store_exec(f->s, create_t, NULL), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->s) tw_store_close(f->s);
    rm_tree(f->dir);
    free(f);
    return 0;
}

static void reopen(fx *f)
{
    tw_store_close(f->s);
    f->s = NULL;
    assert_int_equal(tw_store_open(f->path, NULL, &f->s), 0);
}

/* ---- jobs ---------------------------------------------------------------- */

typedef struct ins {
    int64_t id;
    int ret; /* what the job returns after inserting */
    int done_rc;
    int done_calls;
} ins;

static int insert_job(tw_store_tx *tx, void *arg)
{
    ins *a = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "INSERT INTO t(id, v) VALUES(?1, 'x')");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, a->id);
    if (sqlite3_step(st) != SQLITE_DONE) return TW_EDB;
    return a->ret;
}

static void ins_done(void *arg, int rc)
{
    ins *a = arg;
    a->done_rc = rc;
    a->done_calls++;
}

typedef struct count_arg {
    int64_t id; /* -1: all rows */
    int64_t n;
} count_arg;

static int count_job(tw_store_tx *tx, void *arg)
{
    count_arg *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT count(*) FROM t WHERE ?1 < 0 OR id = ?1");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, c->id);
    if (sqlite3_step(st) != SQLITE_ROW) return TW_EDB;
    c->n = sqlite3_column_int64(st, 0);
    return 0;
}

static int64_t count_rows(tw_store *s, int64_t id)
{
    count_arg c = {.id = id};
    assert_int_equal(tw_store_read(s, count_job, &c), 0);
    return c.n;
}

/* Blocks the writer until opened. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open;
    int64_t insert_id; /* > 0: insert this row before blocking */
} gate;

static void gate_init(gate *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static int gate_job(tw_store_tx *tx, void *arg)
{
    gate *g = arg;
    if (g->insert_id > 0) {
        ins a = {.id = g->insert_id};
        if (insert_job(tx, &a) < 0) return TW_EDB;
    }
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

static void gate_wait_entered(gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* ---- tests --------------------------------------------------------------- */

static void test_file_is_private(void **state)
{
    fx *f = *state;
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* SQLite gives the WAL and shared-memory files the database's mode */
    char side[700];
    snprintf(side, sizeof side, "%s-wal", f->path);
    assert_int_equal(stat(side, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(side, sizeof side, "%s-shm", f->path);
    assert_int_equal(stat(side, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_group_commit(void **state)
{
    fx *f = *state;
    enum { N = 3000 };
    gate g;
    gate_init(&g);
    assert_int_equal(tw_store_submit(f->s, gate_job, &g, NULL), 0);
    gate_wait_entered(&g);

    tw_store_stats before;
    tw_store_get_stats(f->s, &before);
    ins *a = calloc(N, sizeof *a);
    for (int i = 0; i < N; i++) {
        a[i].id = i + 1;
        a[i].done_rc = 1;
        assert_int_equal(tw_store_submit(f->s, insert_job, &a[i], ins_done), 0);
    }
    tw_store_stats mid;
    tw_store_get_stats(f->s, &mid);
    assert_true(mid.pending >= N); /* nothing of it committed while the gate is shut */
    assert_int_equal(count_rows(f->s, -1), 0);

    gate_open(&g);
    assert_int_equal(tw_store_flush(f->s), 0);
    tw_store_stats after;
    tw_store_get_stats(f->s, &after);
    for (int i = 0; i < N; i++) {
        assert_int_equal(a[i].done_calls, 1);
        assert_int_equal(a[i].done_rc, 0);
    }
    assert_int_equal(count_rows(f->s, -1), N);
    /* N jobs queued behind the gate share commits: with max_batch 4096 they
     * all fit in one batch (plus the gate's and the flush's). */
    assert_true(after.commits - before.commits <= 3);
    assert_true(after.jobs - before.jobs >= N);
    assert_int_equal(after.pending, 0);
    free(a);
}

static void test_max_batch(void **state)
{
    fx *f = *state;
    tw_store_close(f->s);
    tw_store_opts o = {.max_batch = 10};
    assert_int_equal(tw_store_open(f->path, &o, &f->s), 0);
    gate g;
    gate_init(&g);
    assert_int_equal(tw_store_submit(f->s, gate_job, &g, NULL), 0);
    gate_wait_entered(&g);
    tw_store_stats before;
    tw_store_get_stats(f->s, &before);
    ins a[100];
    for (int i = 0; i < 100; i++) {
        a[i] = (ins){.id = i + 1};
        assert_int_equal(tw_store_submit(f->s, insert_job, &a[i], NULL), 0);
    }
    gate_open(&g);
    assert_int_equal(tw_store_flush(f->s), 0);
    tw_store_stats after;
    tw_store_get_stats(f->s, &after);
    /* gate batch + 100 jobs + flush job in batches of at most 10 */
    assert_true(after.commits - before.commits >= 10);
    assert_int_equal(count_rows(f->s, -1), 100);
}

static int64_t elapsed_ms(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Write-behind jobs wait for company while nothing else is pending; any
 * other job, a flush or close commits them at once, in one transaction. */
static void test_write_behind(void **state)
{
    fx *f = *state;
    tw_store_close(f->s);
    tw_store_opts o = {.behind_linger_ms = 600000}; /* never by time, in this test */
    assert_int_equal(tw_store_open(f->path, &o, &f->s), 0);
    tw_store_stats before;
    tw_store_get_stats(f->s, &before);
    ins a[50];
    for (int i = 0; i < 50; i++) {
        a[i] = (ins){.id = i + 1, .done_rc = 1};
        assert_int_equal(tw_store_submit_behind(f->s, insert_job, &a[i], ins_done), 0);
    }
    usleep(200 * 1000);
    assert_int_equal(count_rows(f->s, -1), 0); /* still gathering */
    tw_store_stats mid;
    tw_store_get_stats(f->s, &mid);
    assert_int_equal(mid.pending, 50);
    assert_int_equal(a[0].done_calls, 0);

    /* an ordinary job ends the wait: all of them in one commit */
    ins urgent = {.id = 1000};
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(tw_store_exec(f->s, insert_job, &urgent), 0);
    assert_true(elapsed_ms(&t0) < 60000);
    assert_int_equal(count_rows(f->s, -1), 51);
    tw_store_stats after;
    tw_store_get_stats(f->s, &after);
    assert_int_equal(after.commits - before.commits, 1);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(a[i].done_calls, 1);
        assert_int_equal(a[i].done_rc, 0);
    }

    /* so does a flush */
    ins b = {.id = 2000};
    assert_int_equal(tw_store_submit_behind(f->s, insert_job, &b, ins_done), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_true(elapsed_ms(&t0) < 60000);
    assert_int_equal(b.done_calls, 1);

    /* and close: nothing submitted is lost */
    ins c = {.id = 3000};
    assert_int_equal(tw_store_submit_behind(f->s, insert_job, &c, NULL), 0);
    reopen(f);
    assert_int_equal(count_rows(f->s, 3000), 1);

    /* without a linger (the default) they commit by themselves, at once */
    ins d = {.id = 4000};
    assert_int_equal(tw_store_submit_behind(f->s, insert_job, &d, NULL), 0);
    for (int i = 0; i < 500 && count_rows(f->s, 4000) == 0; i++)
        usleep(10 * 1000);
    assert_int_equal(count_rows(f->s, 4000), 1);
}

/* ---- writer priority -------------------------------------------------------- */

typedef struct policy_rec {
    gate g; /* blocks the job when g.open is false and block is set */
    bool block;
    pid_t tid;        /* the writer's */
    int policy;       /* sched_getscheduler of the writer while the job ran */
    int done_policy;  /* and while its done callback ran */
    bool hold_sqlite; /* hold an SQLite mutex while blocked */
    int done_calls;
} policy_rec;

static int policy_job(tw_store_tx *tx, void *arg)
{
    (void)tx;
    policy_rec *r = arg;
    r->tid = gettid();
    r->policy = sched_getscheduler(0);
    /* holding an SQLite mutex while blocked, as the writer may inside SQLite */
    sqlite3_mutex *m = r->hold_sqlite ? sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_APP1) : NULL;
    if (m) sqlite3_mutex_enter(m);
    int rc = r->block ? gate_job(tx, &r->g) : 0;
    if (m) sqlite3_mutex_leave(m);
    return rc;
}

static void *enter_app1(void *arg)
{
    (void)arg;
    sqlite3_mutex *m = sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_APP1);
    sqlite3_mutex_enter(m);
    sqlite3_mutex_leave(m);
    return NULL;
}

static void policy_done(void *arg, int rc)
{
    (void)rc;
    policy_rec *r = arg;
    r->done_policy = sched_getscheduler(0);
    __atomic_store_n(&r->done_calls, r->done_calls + 1, __ATOMIC_RELEASE);
}

static void *probe_main(void *arg)
{
    struct sched_param sp = {0};
    *(bool *)arg =
        sched_setscheduler(0, SCHED_IDLE, &sp) == 0 && sched_setscheduler(0, SCHED_OTHER, &sp) == 0;
    return NULL;
}

/* Whether this process may leave SCHED_IDLE (root in CI: yes). */
static bool idle_allowed(void)
{
    bool ok = false;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, probe_main, &ok), 0);
    pthread_join(t, NULL);
    return ok;
}

static void wait_done(policy_rec *r)
{
    for (int i = 0; i < 6000 && __atomic_load_n(&r->done_calls, __ATOMIC_ACQUIRE) == 0; i++)
        usleep(5 * 1000);
    assert_int_equal(r->done_calls, 1);
}

/* A batch of write-behind jobs runs at SCHED_IDLE; anything someone waits
 * for at SCHED_OTHER, and submitting it lifts a writer that is busy with an
 * idle batch at once; no_idle_priority keeps the writer at SCHED_OTHER. */
static void test_idle_priority_for_write_behind(void **state)
{
    fx *f = *state;
    int idle = idle_allowed() ? SCHED_IDLE : SCHED_OTHER;
    /* a generous lateness bound: none of these batches may count as late,
     * however slowly this machine wakes the writer */
    tw_store_close(f->s);
    tw_store_opts big = {.idle_max_wait_ms = 600000};
    assert_int_equal(tw_store_open(f->path, &big, &f->s), 0);

    policy_rec b = {0};
    assert_int_equal(tw_store_submit_behind(f->s, policy_job, &b, policy_done), 0);
    wait_done(&b); /* alone in its batch: no flush, which would join it */
    assert_int_equal(b.policy, idle);
    assert_int_equal(b.done_policy, SCHED_OTHER); /* done callbacks take callers' locks */

    policy_rec u = {0};
    assert_int_equal(tw_store_exec(f->s, policy_job, &u), 0);
    assert_int_equal(u.policy, SCHED_OTHER);

    /* an idle batch is running (blocked in its job) when an ordinary job is
     * submitted: the writer is lifted before the submitter returns */
    policy_rec blk = {.block = true};
    gate_init(&blk.g);
    assert_int_equal(tw_store_submit_behind(f->s, policy_job, &blk, policy_done), 0);
    gate_wait_entered(&blk.g);
    int while_idle = sched_getscheduler(blk.tid);
    policy_rec after = {0};
    int rc = tw_store_submit(f->s, policy_job, &after, policy_done);
    int lifted = sched_getscheduler(blk.tid);
    gate_open(&blk.g); /* before any assertion: teardown must not wait for it */
    assert_int_equal(rc, 0);
    assert_int_equal(tw_store_flush(f->s), 0); /* `after` lives on this stack */
    assert_int_equal(blk.policy, idle);
    assert_int_equal(while_idle, idle);
    assert_int_equal(lifted, SCHED_OTHER);
    assert_int_equal(after.policy, SCHED_OTHER);

    /* tw_store_lift does it for a thread about to wait for a lock an idle
     * job holds (the queue's q_lock) */
    policy_rec held = {.block = true};
    gate_init(&held.g);
    assert_int_equal(tw_store_submit_behind(f->s, policy_job, &held, policy_done), 0);
    gate_wait_entered(&held.g);
    while_idle = sched_getscheduler(held.tid);
    tw_store_lift(f->s);
    lifted = sched_getscheduler(held.tid);
    gate_open(&held.g);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(while_idle, idle);
    assert_int_equal(lifted, SCHED_OTHER);

    /* so does any thread that finds an SQLite mutex busy (the idle writer
     * may hold the WAL's shared-memory mutex, or the page cache's) */
    policy_rec sq = {.block = true, .hold_sqlite = true};
    gate_init(&sq.g);
    assert_int_equal(tw_store_submit_behind(f->s, policy_job, &sq, policy_done), 0);
    gate_wait_entered(&sq.g);
    while_idle = sched_getscheduler(sq.tid);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, enter_app1, NULL), 0);
    lifted = while_idle;
    for (int i = 0; i < 2000 && lifted != SCHED_OTHER; i++) { /* until t tried: up to 10 s */
        usleep(5 * 1000);
        lifted = sched_getscheduler(sq.tid);
    }
    gate_open(&sq.g);
    pthread_join(t, NULL);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(while_idle, idle);
    assert_int_equal(lifted, SCHED_OTHER);

    /* a batch mixing both kinds: normal priority */
    tw_store_close(f->s);
    tw_store_opts o = {.behind_linger_ms = 600000, .idle_max_wait_ms = 600000};
    assert_int_equal(tw_store_open(f->path, &o, &f->s), 0);
    policy_rec m1 = {0}, m2 = {0};
    assert_int_equal(tw_store_submit_behind(f->s, policy_job, &m1, policy_done), 0);
    assert_int_equal(tw_store_exec(f->s, policy_job, &m2), 0);
    assert_int_equal(m1.done_calls, 1);
    assert_int_equal(m1.policy, SCHED_OTHER);

    /* and the option */
    tw_store_close(f->s);
    tw_store_opts n = {.no_idle_priority = true};
    assert_int_equal(tw_store_open(f->path, &n, &f->s), 0);
    policy_rec nb = {0};
    assert_int_equal(tw_store_submit_behind(f->s, policy_job, &nb, policy_done), 0);
    wait_done(&nb);
    assert_int_equal(nb.policy, SCHED_OTHER);
}

/* An idle batch that runs past opts.idle_max_wait_ms (starved by busy
 * cores) is lifted by the store's watchdog, with nothing else submitted. */
static void test_idle_writer_watchdog(void **state)
{
    fx *f = *state;
    tw_store_close(f->s);
    tw_store_opts o = {.idle_max_wait_ms = 200};
    assert_int_equal(tw_store_open(f->path, &o, &f->s), 0);
    if (!idle_allowed()) {
        /* Without the right to leave SCHED_IDLE the writer never takes it,
         * so there is nothing to watch: check that instead. */
        policy_rec r = {0};
        assert_int_equal(tw_store_submit_behind(f->s, policy_job, &r, policy_done), 0);
        wait_done(&r);
        assert_int_equal(r.policy, SCHED_OTHER);
        return;
    }
    bool watched = false;
    /* A batch the writer took later than the bound never ran idle; try
     * again until one did (a slow machine only costs rounds). */
    for (int round = 0; round < 50 && !watched; round++) {
        policy_rec r = {.block = true};
        gate_init(&r.g);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0); /* before the batch can begin */
        assert_int_equal(tw_store_submit_behind(f->s, policy_job, &r, policy_done), 0);
        gate_wait_entered(&r.g);
        int lifted = r.policy;
        for (int i = 0; i < 2000 && r.policy == SCHED_IDLE && lifted == SCHED_IDLE; i++) {
            usleep(5 * 1000); /* up to 10 s; the watchdog acts after 200-300 ms */
            lifted = sched_getscheduler(r.tid);
        }
        double waited = elapsed_ms(&t0);
        gate_open(&r.g);
        assert_int_equal(tw_store_flush(f->s), 0);
        if (r.policy != SCHED_IDLE) continue;
        assert_int_equal(lifted, SCHED_OTHER);
        assert_true(waited >= 200); /* not before the bound, on any machine */
        watched = true;
    }
    assert_true(watched);
}

static void test_savepoint_isolation(void **state)
{
    fx *f = *state;
    gate g;
    gate_init(&g);
    assert_int_equal(tw_store_submit(f->s, gate_job, &g, NULL), 0);
    gate_wait_entered(&g);
    ins a = {.id = 1}, b = {.id = 2, .ret = TW_EINVAL}, c = {.id = 3},
        dup = {.id = 3}; /* fails: primary key */
    assert_int_equal(tw_store_submit(f->s, insert_job, &a, ins_done), 0);
    assert_int_equal(tw_store_submit(f->s, insert_job, &b, ins_done), 0);
    assert_int_equal(tw_store_submit(f->s, insert_job, &c, ins_done), 0);
    assert_int_equal(tw_store_submit(f->s, insert_job, &dup, ins_done), 0);
    gate_open(&g);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(a.done_rc, 0);
    assert_int_equal(b.done_rc, TW_EINVAL);
    assert_int_equal(c.done_rc, 0);
    assert_int_equal(dup.done_rc, TW_EDB);
    assert_int_equal(count_rows(f->s, 1), 1);
    assert_int_equal(count_rows(f->s, 2), 0); /* rolled back alone */
    assert_int_equal(count_rows(f->s, 3), 1);
    reopen(f); /* and it is durable */
    assert_int_equal(count_rows(f->s, -1), 2);
}

static int ret_job(tw_store_tx *tx, void *arg)
{
    return *(int *)arg;
}

static void test_exec_returns_job_rc(void **state)
{
    fx *f = *state;
    int v = TW_ECONFLICT;
    assert_int_equal(tw_store_exec(f->s, ret_job, &v), TW_ECONFLICT);
    v = 0;
    assert_int_equal(tw_store_exec(f->s, ret_job, &v), 0);
    v = 7; /* positive results mean success */
    assert_int_equal(tw_store_exec(f->s, ret_job, &v), 0);
    ins a = {.id = 42, .ret = TW_ENOTFOUND};
    assert_int_equal(tw_store_exec(f->s, insert_job, &a), TW_ENOTFOUND);
    assert_int_equal(count_rows(f->s, 42), 0);
    a.ret = 0;
    assert_int_equal(tw_store_exec(f->s, insert_job, &a), 0);
    assert_int_equal(count_rows(f->s, 42), 1);
}

static void test_read_sees_snapshot_not_blocked(void **state)
{
    fx *f = *state;
    ins a = {.id = 1};
    assert_int_equal(tw_store_exec(f->s, insert_job, &a), 0);
    /* The writer is inside a transaction that inserted row 2. */
    gate g;
    gate_init(&g);
    g.insert_id = 2;
    assert_int_equal(tw_store_submit(f->s, gate_job, &g, NULL), 0);
    gate_wait_entered(&g);
    /* A reader is neither blocked by it nor sees it. */
    assert_int_equal(count_rows(f->s, -1), 1);
    assert_int_equal(count_rows(f->s, 2), 0);
    gate_open(&g);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(count_rows(f->s, 2), 1);
}

static int write_in_read_job(tw_store_tx *tx, void *arg)
{
    sqlite3_stmt *st = tw_store_stmt(tx, "INSERT INTO t(id, v) VALUES(99, 'no')");
    if (!st) return TW_EDB;
    return sqlite3_step(st) == SQLITE_DONE ? 0 : TW_EDB;
}

static void test_read_is_read_only(void **state)
{
    fx *f = *state;
    assert_int_equal(tw_store_read(f->s, write_in_read_job, NULL), TW_EDB);
    assert_int_equal(count_rows(f->s, 99), 0);
}

typedef struct reader_arg {
    tw_store *s;
    int ok;
    pthread_barrier_t *bar;
} reader_arg;

static int slow_read_job(tw_store_tx *tx, void *arg)
{
    reader_arg *r = arg;
    /* Hold the connection while every other reader asks for one too. */
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT count(*) FROM t");
    if (!st || sqlite3_step(st) != SQLITE_ROW) return TW_EDB;
    int64_t n = sqlite3_column_int64(st, 0);
    return n == 5 ? 0 : TW_EINVAL;
    (void)r;
}

static void *reader_main(void *p)
{
    reader_arg *r = p;
    pthread_barrier_wait(r->bar);
    for (int i = 0; i < 200; i++)
        if (tw_store_read(r->s, slow_read_job, r) == 0) r->ok++;
    return NULL;
}

static void test_read_pool_many_threads(void **state)
{
    fx *f = *state;
    for (int i = 1; i <= 5; i++) {
        ins a = {.id = i};
        assert_int_equal(tw_store_exec(f->s, insert_job, &a), 0);
    }
    enum { T = 12 }; /* more threads than pooled connections */
    pthread_t th[T];
    reader_arg ra[T];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, T);
    for (int i = 0; i < T; i++) {
        ra[i] = (reader_arg){.s = f->s, .bar = &bar};
        pthread_create(&th[i], NULL, reader_main, &ra[i]);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(ra[i].ok, 200);
    }
    pthread_barrier_destroy(&bar);
}

static int stmt_cache_job(tw_store_tx *tx, void *arg)
{
    sqlite3_stmt *a = tw_store_stmt(tx, "SELECT ?1");
    sqlite3_bind_int(a, 1, 5);
    if (sqlite3_step(a) != SQLITE_ROW) return TW_EDB;
    char sql[] = "SELECT ?1"; /* same text, other buffer */
    sqlite3_stmt *b = tw_store_stmt(tx, sql);
    if (a != b) return TW_EINVAL;
    /* reset and unbound: the parameter is NULL again */
    if (sqlite3_step(b) != SQLITE_ROW) return TW_EDB;
    if (sqlite3_column_type(b, 0) != SQLITE_NULL) return TW_EINVAL;
    if (tw_store_stmt(tx, "SELECT nonsense FROM nowhere") != NULL) return TW_EINVAL;
    return 0;
}

static void test_stmt_cache(void **state)
{
    fx *f = *state;
    assert_int_equal(tw_store_exec(f->s, stmt_cache_job, NULL), 0);
    assert_int_equal(tw_store_read(f->s, stmt_cache_job, NULL), 0);
}

/* Two inserts, then a failure: breaks the promise of an atomic job. */
static int two_inserts_then_fail(tw_store_tx *tx, void *arg)
{
    ins *a = arg;
    ins first = {.id = a->id}, second = {.id = a->id + 1};
    if (insert_job(tx, &first) < 0 || insert_job(tx, &second) < 0) return TW_EDB;
    return TW_EINVAL;
}

static void test_atomic_jobs(void **state)
{
    fx *f = *state;
    gate g;
    gate_init(&g);
    assert_int_equal(tw_store_submit(f->s, gate_job, &g, NULL), 0);
    gate_wait_entered(&g);
    /* Atomic jobs that keep their promise share the batch with others; a
     * duplicate key fails alone (the INSERT wrote nothing). */
    ins a = {.id = 10, .done_rc = 1}, dup = {.id = 10, .done_rc = 1}, b = {.id = 11, .done_rc = 1};
    assert_int_equal(tw_store_submit_atomic(f->s, insert_job, &a, ins_done), 0);
    assert_int_equal(tw_store_submit_atomic(f->s, insert_job, &dup, ins_done), 0);
    assert_int_equal(tw_store_submit(f->s, insert_job, &b, ins_done), 0);
    gate_open(&g);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(a.done_rc, 0);
    assert_int_equal(dup.done_rc, TW_EDB);
    assert_int_equal(b.done_rc, 0);
    assert_int_equal(count_rows(f->s, 10), 1);
    assert_int_equal(count_rows(f->s, 11), 1);

    /* One that fails after writing: its whole batch is undone and says so,
     * jobs after it run in a new transaction. */
    gate_init(&g);
    assert_int_equal(tw_store_submit(f->s, gate_job, &g, NULL), 0);
    gate_wait_entered(&g);
    ins before = {.id = 20, .done_rc = 1}, liar = {.id = 30, .done_rc = 1},
        after = {.id = 40, .done_rc = 1};
    assert_int_equal(tw_store_submit(f->s, insert_job, &before, ins_done), 0);
    assert_int_equal(tw_store_submit_atomic(f->s, two_inserts_then_fail, &liar, ins_done), 0);
    assert_int_equal(tw_store_submit(f->s, insert_job, &after, ins_done), 0);
    gate_open(&g);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(before.done_rc, TW_EDB); /* told the truth: not stored */
    assert_int_equal(count_rows(f->s, 20), 0);
    assert_int_not_equal(liar.done_rc, 0);
    assert_int_equal(count_rows(f->s, 30), 0);
    assert_int_equal(count_rows(f->s, 31), 0);
    assert_int_equal(after.done_rc, 0);
    assert_int_equal(count_rows(f->s, 40), 1);
}

/* ---- migrations ---------------------------------------------------------- */

typedef struct ver_arg {
    const char *component;
    int v;
} ver_arg;

static int version_job(tw_store_tx *tx, void *arg)
{
    ver_arg *a = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT version FROM schema_version WHERE component=?1");
    sqlite3_bind_text(st, 1, a->component, -1, SQLITE_STATIC);
    a->v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    return 0;
}

static int version_of(tw_store *s, const char *c)
{
    ver_arg a = {.component = c};
    assert_int_equal(tw_store_read(s, version_job, &a), 0);
    return a.v;
}

static void test_migrate_once_and_resume(void **state)
{
    fx *f = *state;
    /* Non-idempotent steps: running one twice fails ("table exists"). */
    const char *steps[] = {
        "CREATE TABLE m1(a INTEGER)",
        "CREATE TABLE m2(b INTEGER); INSERT INTO m1(a) VALUES(1)",
        "ALTER TABLE m2 ADD COLUMN c TEXT",
    };
    assert_int_equal(tw_store_migrate(f->s, "comp", steps, 1), 0);
    assert_int_equal(version_of(f->s, "comp"), 1);
    assert_int_equal(tw_store_migrate(f->s, "comp", steps, 1), 0); /* nothing to do */
    reopen(f);
    assert_int_equal(tw_store_migrate(f->s, "comp", steps, 3), 0);
    assert_int_equal(version_of(f->s, "comp"), 3);
    reopen(f);
    assert_int_equal(tw_store_migrate(f->s, "comp", steps, 3), 0);
    /* A second component has its own version. */
    assert_int_equal(version_of(f->s, "other"), 0);
    /* A database newer than the code is refused. */
    assert_int_equal(tw_store_migrate(f->s, "comp", steps, 2), TW_EINVAL);
}

static void test_migrate_failing_step(void **state)
{
    fx *f = *state;
    const char *steps[] = {
        "CREATE TABLE f1(a INTEGER)",
        "CREATE TABLE f2(a INTEGER); THIS IS NOT SQL",
    };
    assert_int_not_equal(tw_store_migrate(f->s, "bad", steps, 2), 0);
    assert_int_equal(version_of(f->s, "bad"), 1);
    /* The failed step left nothing behind: f2 does not exist. */
    const char *fixed[] = {steps[0], "CREATE TABLE f2(a INTEGER)"};
    assert_int_equal(tw_store_migrate(f->s, "bad", fixed, 2), 0);
    assert_int_equal(version_of(f->s, "bad"), 2);
}

/* ---- close ----------------------------------------------------------------- */

static void test_close_flushes(void **state)
{
    fx *f = *state;
    enum { N = 2000 };
    ins *a = calloc(N, sizeof *a);
    for (int i = 0; i < N; i++) {
        a[i].id = i + 1;
        a[i].done_rc = 1;
        assert_int_equal(tw_store_submit(f->s, insert_job, &a[i], ins_done), 0);
    }
    tw_store_close(f->s); /* no flush before */
    f->s = NULL;
    for (int i = 0; i < N; i++) {
        assert_int_equal(a[i].done_calls, 1);
        assert_int_equal(a[i].done_rc, 0);
    }
    assert_int_equal(tw_store_open(f->path, NULL, &f->s), 0);
    assert_int_equal(count_rows(f->s, -1), N);
    free(a);
}

typedef struct closer {
    tw_store *s;
} closer;

static void *close_main(void *p)
{
    closer *c = p;
    tw_store_close(c->s);
    return NULL;
}

typedef struct late {
    tw_store *s;
    int submit_rc;
    int exec_rc;
} late;

/* A done callback that runs while close drains: submitting and exec are
 * refused. */
static void late_done(void *arg, int rc)
{
    late *l = arg;
    l->submit_rc = tw_store_submit(l->s, ret_job, &l->submit_rc, NULL);
    int zero = 0;
    l->exec_rc = tw_store_exec(l->s, ret_job, &zero);
}

static int late_job(tw_store_tx *tx, void *arg)
{
    return 0;
}

static void test_submit_after_close(void **state)
{
    fx *f = *state;
    gate g;
    gate_init(&g);
    assert_int_equal(tw_store_submit(f->s, gate_job, &g, NULL), 0);
    gate_wait_entered(&g);
    late l = {.s = f->s, .submit_rc = 1, .exec_rc = 1};
    int zero = 0;
    assert_int_equal(tw_store_submit(f->s, late_job, &l, late_done), 0);
    ins kept = {.id = 77};
    assert_int_equal(tw_store_submit(f->s, insert_job, &kept, ins_done), 0);

    closer c = {.s = f->s};
    pthread_t th;
    pthread_create(&th, NULL, close_main, &c);
    /* Wait until close has started: submissions are refused from then on. */
    int rc;
    while ((rc = tw_store_submit(f->s, ret_job, &zero, NULL)) == 0)
        usleep(1000);
    assert_int_equal(rc, TW_ECLOSED);
    gate_open(&g);
    pthread_join(th, NULL);
    f->s = NULL;
    assert_int_equal(l.submit_rc, TW_ECLOSED);
    assert_int_equal(l.exec_rc, TW_ECLOSED);
    assert_int_equal(kept.done_calls, 1); /* submitted before: committed */
    assert_int_equal(kept.done_rc, 0);
    assert_int_equal(tw_store_open(f->path, NULL, &f->s), 0);
    assert_int_equal(count_rows(f->s, 77), 1);
}

/* ---- re-entry from the writer thread ------------------------------------ */

typedef struct reentry {
    tw_store *s;
    int exec_rc, flush_rc, nested_rc;
    ins row;
} reentry;

static int nested_exec_job(tw_store_tx *tx, void *arg)
{
    reentry *r = arg;
    int zero = 0;
    r->nested_rc = tw_store_exec(r->s, ret_job, &zero); /* from a job: refused */
    return 0;
}

static void reentry_done(void *arg, int rc)
{
    reentry *r = arg;
    /* From a done callback: exec runs inline and is committed on return. */
    r->exec_rc = tw_store_exec(r->s, insert_job, &r->row);
    r->flush_rc = tw_store_flush(r->s);
}

static void test_exec_from_done_and_job(void **state)
{
    fx *f = *state;
    reentry r = {.s = f->s, .exec_rc = 1, .flush_rc = 1, .nested_rc = 1, .row = {.id = 555}};
    assert_int_equal(tw_store_submit(f->s, nested_exec_job, &r, reentry_done), 0);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(r.nested_rc, TW_EBUSY);
    assert_int_equal(r.exec_rc, 0);
    assert_int_equal(r.flush_rc, TW_EBUSY);
    assert_int_equal(count_rows(f->s, 555), 1);
    /* an inline job that fails leaves nothing */
    r.row = (ins){.id = 556, .ret = TW_EINVAL};
    assert_int_equal(tw_store_submit(f->s, nested_exec_job, &r, reentry_done), 0);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(r.exec_rc, TW_EINVAL);
    assert_int_equal(count_rows(f->s, 556), 0);
}

/* ---- concurrency ----------------------------------------------------------- */

typedef struct producer {
    tw_store *s;
    int base, n;
    ins *a;
    int failures;
} producer;

static void *producer_main(void *p)
{
    producer *pr = p;
    for (int i = 0; i < pr->n; i++) {
        pr->a[i].id = pr->base + i;
        /* every 10th job waits for its commit, the others are write-behind */
        int rc = (i % 10 == 0) ? tw_store_exec(pr->s, insert_job, &pr->a[i])
                               : tw_store_submit(pr->s, insert_job, &pr->a[i], ins_done);
        if (rc) pr->failures++;
    }
    return NULL;
}

static void test_concurrent_submitters(void **state)
{
    fx *f = *state;
    enum { T = 4, N = 5000 };
    pthread_t th[T];
    producer pr[T];
    for (int t = 0; t < T; t++) {
        pr[t] = (producer){.s = f->s, .base = 1 + t * N, .n = N};
        pr[t].a = calloc(N, sizeof(ins));
        pthread_create(&th[t], NULL, producer_main, &pr[t]);
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
    assert_int_equal(tw_store_flush(f->s), 0);
    for (int t = 0; t < T; t++) {
        assert_int_equal(pr[t].failures, 0);
        for (int i = 0; i < N; i++)
            if (i % 10) {
                assert_int_equal(pr[t].a[i].done_calls, 1);
                assert_int_equal(pr[t].a[i].done_rc, 0);
            }
        free(pr[t].a);
    }
    assert_int_equal(count_rows(f->s, -1), T * N);
    tw_store_stats st;
    tw_store_get_stats(f->s, &st);
    assert_int_equal(st.pending, 0);
}

static void test_open_errors(void **state)
{
    fx *f = *state;
    tw_store *s = NULL;
    char bad[700];
    snprintf(bad, sizeof bad, "%s/no/such/dir/db", f->dir);
    assert_int_not_equal(tw_store_open(bad, NULL, &s), 0);
    assert_null(s);
    assert_int_equal(tw_store_open(NULL, NULL, &s), TW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_is_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_priority_for_write_behind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_writer_watchdog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_savepoint_isolation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_returns_job_rc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_jobs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_sees_snapshot_not_blocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_is_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_pool_many_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stmt_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_once_and_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_failing_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_after_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_submitters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_from_done_and_job, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
