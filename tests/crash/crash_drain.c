/*
 * crash_drain.c - kill -9 in the middle of a queue drain and check that
 * every action's row is still consistent: its status is the last entry of
 * its history, the history moves forward only, and a queued row has no
 * history of its own; then drain the rest after the restart.
 *
 *   crash_drain <seed>            parent: one fork / kill / verify round
 *   crash_drain child <dir>       the victim (normally forked, not run)
 *
 * The child queues N actions for one agent (acknowledged, so durable), writes
 * "ready", then drains the way the runtime does: claims a page (rows move to
 * `delivered` with one statement over the page), answers each action with
 * its row's seq at hand (`completed`, every third one `running` first), and
 * claims the next page while those write-behind updates are still in
 * flight. The parent SIGKILLs it a random 20-300 ms after "ready".
 *
 * After the kill, claims and answers that were not committed are lost,
 * which the store allows (an unanswered delivered action stays delivered; an
 * unclaimed one stays queued and is delivered again): what must hold is
 * that each row is one of the states the drain can leave, with a history
 * that says how it got there, and that the reopened queue hands out exactly
 * the rows still queued, in order.
 */
#include "runtime/queue.h"
#include "tests/crash/crash.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 20000
#define PAGE 256

static tw_action mk(long n)
{
    static char thing[] = "dtw:ag:t", agent[] = "ag", sender[] = "alice", name[] = "act";
    tw_action a;
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "drain-%ld", n);
    a.thing_id = thing;
    a.agent_id = agent;
    a.sender_id = sender;
    a.name = name;
    a.op = TW_OP_INVOKEACTION;
    a.expires_ms = tw_now_ms() + 3600 * 1000;
    return a;
}

static int open_queue(const char *dir, tw_store **s, tw_queue **q)
{
    char path[600];
    snprintf(path, sizeof path, "%s/twind.db", dir);
    if (tw_store_open(path, NULL, s) != 0) return -1;
    if (tw_queue_open(*s, q) != 0) {
        tw_store_close(*s);
        return -1;
    }
    return 0;
}

static int child_main(const char *dir)
{
    tw_store *s;
    tw_queue *q;
    if (open_queue(dir, &s, &q)) {
        fprintf(stderr, "child: cannot open %s\n", dir);
        return 2;
    }
    for (long i = 0; i < N; i++) {
        tw_action a = mk(i);
        if (tw_queue_push(q, &a, NULL, NULL)) return 2;
    }
    if (tw_store_flush(s)) return 2;
    char path[600];
    snprintf(path, sizeof path, "%s/ready", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 2;
    fclose(f);
    json_t *out = json_pack("{s:b}", "ok", 1);
    for (;;) {
        tw_action *got = NULL;
        int n = 0;
        if (tw_queue_fetch(q, "ag", 0, PAGE, &got, &n)) return 2;
        if (n == 0) break;
        for (int i = 0; i < n; i++) {
            if (got[i].seq % 3 == 0)
                tw_queue_update_seq(q, got[i].id, got[i].seq, TW_STATUS_RUNNING, NULL, NULL);
            tw_queue_update_seq(q, got[i].id, got[i].seq, TW_STATUS_COMPLETED, out, NULL);
        }
        tw_action_list_free(got, n);
    }
    for (;;)
        pause(); /* drained before the kill: wait for it anyway */
    return 0;
}

/* ---- parent --------------------------------------------------------------- */

static int rank(tw_status st)
{
    switch (st) {
    case TW_STATUS_QUEUED:
        return 0;
    case TW_STATUS_DELIVERED:
        return 1;
    case TW_STATUS_RUNNING:
        return 2;
    case TW_STATUS_COMPLETED:
        return 3;
    default:
        return -1;
    }
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

static int verify(const char *dir, long counts[4])
{
    tw_store *s;
    tw_queue *q;
    if (open_queue(dir, &s, &q)) {
        fprintf(stderr, "FAIL: cannot reopen %s\n", dir);
        return 1;
    }
    int bad = 0;
    check_arg ic = {{0}};
    if (tw_store_read(s, integrity_job, &ic) != 0 || strcmp(ic.result, "ok") != 0) {
        fprintf(stderr, "FAIL: integrity_check: %s\n", ic.result);
        bad++;
    }
    for (long i = 0; i < N && bad < 10; i++) {
        tw_action a = mk(i), *g = NULL;
        json_t *h = NULL;
        if (tw_queue_get(q, a.id, &g) != 0 || tw_queue_history(q, a.id, &h) != 0) {
            fprintf(stderr, "FAIL: %s: acknowledged, now missing\n", a.id);
            bad++;
            tw_action_free(g);
            continue;
        }
        int r = rank(g->status), prev = -1;
        size_t nh = json_array_size(h);
        const char *last = NULL;
        for (size_t k = 0; k < nh; k++) {
            last = json_string_value(json_object_get(json_array_get(h, k), "status"));
            int rk = rank(tw_status_parse(last));
            if (rk <= prev) {
                fprintf(stderr, "FAIL: %s: history goes back at entry %zu (%s)\n", a.id, k, last);
                bad++;
                break;
            }
            prev = rk;
        }
        if (r < 0 || !last || tw_status_parse(last) != g->status ||
            strcmp(json_string_value(json_object_get(json_array_get(h, 0), "status")), "queued") ||
            (g->status == TW_STATUS_QUEUED && nh != 1) ||
            (g->status == TW_STATUS_COMPLETED && !json_is_object(g->output))) {
            fprintf(stderr, "FAIL: %s: status %s, history of %zu ending in %s\n", a.id,
                    tw_status_name(g->status), nh, last ? last : "-");
            bad++;
        }
        if (r >= 0) counts[r]++;
        json_decref(h);
        tw_action_free(g);
    }
    /* The rows still queued come out in order, and nothing else does. */
    int64_t depth = -1, after = 0;
    long fetched = 0;
    tw_queue_depth(q, "ag", &depth);
    for (;;) {
        tw_action *got = NULL;
        int n = 0;
        if (tw_queue_fetch(q, "ag", 0, PAGE, &got, &n) != 0) {
            bad++;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (got[i].seq <= after) {
                fprintf(stderr, "FAIL: %s handed out out of order\n", got[i].id);
                bad++;
            }
            after = got[i].seq;
            tw_queue_update_seq(q, got[i].id, got[i].seq, TW_STATUS_COMPLETED, NULL, NULL);
        }
        fetched += n;
        tw_action_list_free(got, n);
        if (n == 0) break;
    }
    if (fetched != counts[0] || depth != counts[0]) {
        fprintf(stderr, "FAIL: %ld rows queued, depth %lld, %ld handed out after the restart\n",
                counts[0], (long long)depth, fetched);
        bad++;
    }
    tw_queue_depth(q, "ag", &depth);
    if (depth != 0) {
        fprintf(stderr, "FAIL: %lld rows left queued after draining\n", (long long)depth);
        bad++;
    }
    tw_queue_close(q);
    tw_store_close(s);
    return bad ? 1 : 0;
}

/* The child writes <dir>/ready once the drain is under way. */
static bool drain_started(const char *dir)
{
    char ready[600];
    snprintf(ready, sizeof ready, "%s/ready", dir);
    return access(ready, F_OK) == 0;
}

static int parent_main(unsigned seed)
{
    char dir[512];
    tw_test_tmpdir(dir, "crash_drain"); /* kept afterwards, for a post-mortem */
    srand(seed);
    int delay_ms = 20 + rand() % 281;
    if (crash_kill_child(dir, child_main, drain_started, "the drain started", delay_ms)) return 1;
    long counts[4] = {0};
    int rc = verify(dir, counts);
    printf("crash_drain seed %u: killed after %d ms; queued %ld, delivered %ld, running %ld, "
           "completed %ld: %s\n",
           seed, delay_ms, counts[0], counts[1], counts[2], counts[3],
           rc == 0 ? "consistent" : "NOT consistent");
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
