/*
 * crash_enqueue.c - kill -9 in the middle of a stream of durable enqueues
 * and check that no acknowledged action was lost.
 *
 *   crash_enqueue <seed>            parent: one fork / kill / verify round
 *   crash_enqueue child <dir>       the victim (normally forked, not run)
 *
 * The child opens a store and a queue in <dir> (synchronous=FULL) and
 * pushes actions (3 invokeaction : 1 writeproperty) from PRODUCERS threads as fast as it can, each
 * keeping up to INFLIGHT pushes outstanding, so that at any instant thousands are submitted but not
 * yet committed. Only from a push's done callback (that is, after the group commit) does the id go
 * to the "acked" log; a logger thread writes the log with write() and fdatasync()s it before taking
 * the next batch, so what the log says was acknowledged is only ever a subset of what the queue
 * acknowledged, and is on disk. Logging happens off the writer thread so it does not slow the
 * commits down and shrink the window of work in flight.
 *
 * The parent waits until the log shows the child is acknowledging, lets it
 * run a further random 50-400 ms, SIGKILLs it, then reopens the database
 * (WAL recovery), and checks that every id in the log is in the queue with
 * status `queued` and exactly the input it was pushed with, that the
 * database passes integrity_check, and that the reopened queue accepts new
 * pushes after the old ones. Exit status 0 only if all of that holds.
 */
#include "runtime/queue.h"
#include "tests/crash/crash.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PRODUCERS 4
#define INFLIGHT 2000
#define MAX_PUSHES 2000000

/* ---- the action a given id stands for ----------------------------------- */

static void make_id(char *out, int thread, long n)
{
    snprintf(out, TW_ID_MAX, "crash-%d-%ld", thread, n);
}

/* The input is derived from the id, so the parent can check it intact. */
static json_t *input_of(int thread, long n)
{
    char pad[200];
    for (size_t i = 0; i < sizeof pad - 1; i++)
        pad[i] = (char)('a' + (n + (long)i) % 26);
    pad[sizeof pad - 1] = 0;
    return json_pack("{s:i, s:I, s:s, s:[i,i,i]}", "thread", thread, "n", (json_int_t)n, "pad", pad,
                     "v", (int)(n % 7), (int)(n % 11), (int)(n % 13));
}

/* Every 4th action is a property write (its own property, so nothing is
 * coalesced): those jobs run in a savepoint, the others without, and both
 * kinds share the same group commits. */
static void op_of(int thread, long n, tw_op *op, char name[32])
{
    *op = n % 4 == 3 ? TW_OP_WRITEPROPERTY : TW_OP_INVOKEACTION;
    if (*op == TW_OP_WRITEPROPERTY)
        snprintf(name, 32, "prop-%d-%ld", thread, n);
    else
        snprintf(name, 32, "act");
}

static const char *thing_of(int thread)
{
    static const char *const things[] = {"dtw:agent:t0", "dtw:agent:t1", "dtw:agent:t2",
                                         "dtw:agent:t3"};
    return things[thread % 4];
}

/* ---- child ---------------------------------------------------------------- */

typedef struct child {
    tw_queue *q;
    int log_fd;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the logger has ids to write / a slot freed */
    char *buf;         /* acknowledged ids, newline separated */
    size_t len, cap;
    atomic_int inflight[PRODUCERS];
    atomic_long failures;
} child;

typedef struct push_arg {
    child *c;
    int thread;
    char id[TW_ID_MAX];
} push_arg;

static void on_pushed(void *arg, const tw_queue_push_result *res)
{
    push_arg *p = arg;
    child *c = p->c;
    pthread_mutex_lock(&c->mu);
    if (res->rc == 0) {
        size_t n = strlen(p->id);
        if (c->len + n + 1 > c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 1 << 16;
            while (cap < c->len + n + 1)
                cap *= 2;
            char *nb = realloc(c->buf, cap);
            if (!nb) abort();
            c->buf = nb;
            c->cap = cap;
        }
        memcpy(c->buf + c->len, p->id, n);
        c->buf[c->len + n] = '\n';
        c->len += n + 1;
    } else {
        atomic_fetch_add(&c->failures, 1);
    }
    atomic_fetch_sub(&c->inflight[p->thread], 1);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    free(p);
}

static void *logger_main(void *arg)
{
    child *c = arg;
    char *mine = NULL;
    size_t mine_cap = 0;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (c->len == 0)
            pthread_cond_wait(&c->cv, &c->mu);
        /* take the batch, leave an empty buffer behind */
        char *b = c->buf;
        size_t n = c->len, bcap = c->cap;
        c->buf = mine;
        c->cap = mine_cap;
        c->len = 0;
        mine = b;
        mine_cap = bcap;
        pthread_mutex_unlock(&c->mu);
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(c->log_fd, mine + off, n - off);
            if (w < 0) {
                if (errno == EINTR) continue;
                perror("acked log");
                _exit(3);
            }
            off += (size_t)w;
        }
        if (fdatasync(c->log_fd) != 0) {
            perror("fdatasync");
            _exit(3);
        }
    }
    return NULL;
}

typedef struct producer {
    child *c;
    int thread;
} producer;

static void *producer_main(void *arg)
{
    producer *pr = arg;
    child *c = pr->c;
    tw_action a;
    memset(&a, 0, sizeof a);
    a.agent_id = "agent";
    a.thing_id = (char *)thing_of(pr->thread);
    a.sender_id = "crasher";
    char name[32];
    a.name = name;
    for (long n = 0; n < MAX_PUSHES / PRODUCERS; n++) {
        op_of(pr->thread, n, &a.op, name);
        pthread_mutex_lock(&c->mu);
        while (atomic_load(&c->inflight[pr->thread]) >= INFLIGHT)
            pthread_cond_wait(&c->cv, &c->mu);
        pthread_mutex_unlock(&c->mu);
        push_arg *p = malloc(sizeof *p);
        if (!p) abort();
        p->c = c;
        p->thread = pr->thread;
        make_id(p->id, pr->thread, n);
        memcpy(a.id, p->id, TW_ID_MAX);
        a.input = input_of(pr->thread, n);
        a.expires_ms = tw_now_ms() + 24 * 3600 * 1000LL;
        atomic_fetch_add(&c->inflight[pr->thread], 1);
        int rc = tw_queue_push(c->q, &a, on_pushed, p);
        json_decref(a.input);
        if (rc != 0) {
            fprintf(stderr, "push: %s\n", tw_strerror(rc));
            _exit(4);
        }
    }
    return NULL;
}

static int child_main(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/twind.db", dir);
    tw_store *s;
    tw_queue *q;
    if (tw_store_open(path, NULL, &s) != 0 || tw_queue_open(s, &q) != 0) {
        fprintf(stderr, "child: cannot open %s\n", path);
        return 2;
    }
    child *c = calloc(1, sizeof *c);
    c->q = q;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    snprintf(path, sizeof path, "%s/acked.log", dir);
    c->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (c->log_fd < 0) {
        perror(path);
        return 2;
    }
    pthread_t lt, pt[PRODUCERS];
    producer pr[PRODUCERS];
    pthread_create(&lt, NULL, logger_main, c);
    for (int i = 0; i < PRODUCERS; i++) {
        pr[i] = (producer){c, i};
        pthread_create(&pt[i], NULL, producer_main, &pr[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(pt[i], NULL);
    for (;;)
        pause(); /* wait for the kill */
    return 0;
}

/* ---- parent --------------------------------------------------------------- */

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : 0;
}

typedef struct check_arg {
    char result[64];
} check_arg;

static int integrity_job(tw_store_tx *tx, void *arg)
{
    check_arg *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "PRAGMA integrity_check");
    if (!st || sqlite3_step(st) != SQLITE_ROW) return TW_EDB;
    snprintf(c->result, sizeof c->result, "%s", (const char *)sqlite3_column_text(st, 0));
    return 0;
}

static void on_new_push(void *arg, const tw_queue_push_result *res)
{
    *(tw_queue_push_result *)arg = *res;
}

static int verify(const char *dir, long *acked_out, int64_t *rows_out)
{
    char path[600];
    snprintf(path, sizeof path, "%s/twind.db", dir);
    tw_store *s;
    tw_queue *q;
    if (tw_store_open(path, NULL, &s) != 0 || tw_queue_open(s, &q) != 0) {
        fprintf(stderr, "FAIL: the database does not reopen after the kill\n");
        return 1;
    }
    int bad = 0;
    check_arg ic = {{0}};
    if (tw_store_read(s, integrity_job, &ic) != 0 || strcmp(ic.result, "ok") != 0) {
        fprintf(stderr, "FAIL: integrity_check: %s\n", ic.result);
        bad++;
    }

    snprintf(path, sizeof path, "%s/acked.log", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return 1;
    }
    char line[256];
    long acked = 0;
    int64_t max_seq = 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        if (n == 0 || line[n - 1] != '\n') break; /* a torn last line */
        line[n - 1] = 0;
        int thread;
        long num;
        if (sscanf(line, "crash-%d-%ld", &thread, &num) != 2) {
            fprintf(stderr, "FAIL: garbage in the acked log: %s\n", line);
            bad++;
            continue;
        }
        acked++;
        tw_action *a = NULL;
        int rc = tw_queue_get(q, line, &a);
        if (rc != 0) {
            if (bad++ < 10)
                fprintf(stderr, "FAIL: acknowledged %s lost (%s)\n", line, tw_strerror(rc));
            continue;
        }
        json_t *want = input_of(thread, num);
        tw_op op;
        char name[32];
        op_of(thread, num, &op, name);
        if (a->status != TW_STATUS_QUEUED || !json_equal(a->input, want) || a->op != op ||
            strcmp(a->name, name) != 0 || strcmp(a->thing_id, thing_of(thread)) != 0 ||
            strcmp(a->agent_id, "agent") != 0) {
            if (bad++ < 10)
                fprintf(stderr, "FAIL: %s came back altered (status %s)\n", line,
                        tw_status_name(a->status));
        }
        if (a->seq > max_seq) max_seq = a->seq;
        json_decref(want);
        tw_action_free(a);
    }
    fclose(f);

    int64_t rows = 0;
    tw_queue_depth(q, "agent", &rows);
    if (rows < acked) {
        fprintf(stderr, "FAIL: %lld queued rows for %ld acknowledged\n", (long long)rows, acked);
        bad++;
    }
    /* The recovered queue goes on: a new push lands after every old row. */
    tw_action a;
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "after-crash");
    a.agent_id = "agent";
    a.thing_id = "dtw:agent:t0";
    a.sender_id = "crasher";
    a.name = "act";
    a.op = TW_OP_INVOKEACTION;
    tw_queue_push_result res = {.rc = 1};
    if (tw_queue_push(q, &a, on_new_push, &res) != 0 || tw_store_flush(s) != 0 || res.rc != 0 ||
        res.seq <= max_seq) {
        fprintf(stderr, "FAIL: push after recovery (rc %d, seq %lld <= %lld)\n", res.rc,
                (long long)res.seq, (long long)max_seq);
        bad++;
    }
    tw_queue_close(q);
    tw_store_close(s);
    *acked_out = acked;
    *rows_out = rows;
    return bad ? 1 : 0;
}

/* Acknowledgements flow once the child's log of them is not empty. */
static bool acks_flow(const char *dir)
{
    char logpath[600];
    snprintf(logpath, sizeof logpath, "%s/acked.log", dir);
    return file_size(logpath) > 0;
}

static int parent_main(unsigned seed)
{
    char dir[512];
    tw_test_tmpdir(dir, "crash_enqueue"); /* kept afterwards, for a post-mortem */
    /* a random while after acknowledgements flow: the kill lands mid-stream */
    srand(seed);
    int delay_ms = 50 + rand() % 351;
    if (crash_kill_child(dir, child_main, acks_flow, "acknowledging anything", delay_ms)) return 1;
    long acked = 0;
    int64_t rows = 0;
    int rc = verify(dir, &acked, &rows);
    printf("crash_enqueue seed %u: killed after %d ms; %ld acknowledged, %s; %lld rows "
           "queued (unacknowledged ones may or may not be there)\n",
           seed, delay_ms, acked, rc == 0 ? "all present and intact" : "NOT all present and intact",
           (long long)rows);
    if (acked == 0) rc = 1;
    crash_cleanup(dir, rc);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "child") == 0) return child_main(argv[2]);
    if (argc == 2) return parent_main((unsigned)strtoul(argv[1], NULL, 10));
    fprintf(stderr, "usage: %s <seed> | child <dir>\n", argv[0]);
    return 2;
}
