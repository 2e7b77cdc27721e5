/*
 * test_queue.c - action records, the durable offline queue and the inbox:
 * durability across reopen, drain order and paging, coalescing, expiry,
 * cancel/update conflicts, decided statuses, fail_thing, history, list, depth, inbox
 * replay/ack/cursor/bounds, and two concurrent fetchers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "runtime/queue.h"

#include <sqlite3.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct fx {
    char dir[512];
    char path[600];
    tw_store *s;
    tw_queue *q;
} fx;

static void fx_open(fx *f)
{
    assert_int_equal(tw_store_open(f->path, NULL, &f->s), 0);
    assert_int_equal(tw_queue_open(f->s, &f->q), 0);
}

static void fx_close(fx *f)
{
    tw_queue_close(f->q);
    tw_store_close(f->s);
    f->q = NULL;
    f->s = NULL;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    const char *base = getenv("TW_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdir(base, 0700);
    snprintf(f->dir, sizeof f->dir, "%s/test_queue.XXXXXX", base);
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/twind.db", f->dir);
    fx_open(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->q) fx_close(f);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* A stack action; strings are borrowed. */
static tw_action mk(const char *id, const char *agent, const char *thing, const char *name,
                    tw_op op)
{
    tw_action a;
    memset(&a, 0, sizeof a);
    snprintf(a.id, sizeof a.id, "%s", id);
    a.agent_id = (char *)agent;
    a.thing_id = (char *)thing;
    a.name = (char *)name;
    a.sender_id = "alice";
    a.op = op;
    a.expires_ms = tw_now_ms() + 3600 * 1000;
    return a;
}

typedef struct push_wait {
    int calls;
    tw_queue_push_result res;
} push_wait;

static void on_pushed(void *arg, const tw_queue_push_result *res)
{
    push_wait *w = arg;
    w->calls++;
    w->res = *res;
}

/* Pushes and waits for the durable acknowledgement. */
static tw_queue_push_result push_sync(fx *f, const tw_action *a)
{
    push_wait w = {0};
    assert_int_equal(tw_queue_push(f->q, a, on_pushed, &w), 0);
    assert_int_equal(tw_store_flush(f->s), 0); /* done runs before flush returns */
    assert_int_equal(w.calls, 1);
    return w.res;
}

static tw_action *get(fx *f, const char *id)
{
    tw_action *a = NULL;
    assert_int_equal(tw_queue_get(f->q, id, &a), 0);
    assert_non_null(a);
    return a;
}

static void test_push_durable_then_visible_after_reopen(void **state)
{
    fx *f = *state;
    tw_action a = mk("act-1", "agent1", "dtw:agent1:lamp", "toggle", TW_OP_INVOKEACTION);
    a.input = json_pack("{s:i, s:s}", "level", 7, "note", "héllo");
    a.correlation_id = "corr-9";
    tw_queue_push_result r = push_sync(f, &a);
    assert_int_equal(r.rc, 0);
    assert_true(r.seq > 0);
    assert_string_equal(r.superseded_id, "");

    fx_close(f);
    fx_open(f);
    tw_action *g = get(f, "act-1");
    assert_int_equal(g->status, TW_STATUS_QUEUED);
    assert_int_equal(g->seq, r.seq);
    assert_string_equal(g->agent_id, "agent1");
    assert_string_equal(g->thing_id, "dtw:agent1:lamp");
    assert_string_equal(g->name, "toggle");
    assert_string_equal(g->sender_id, "alice");
    assert_string_equal(g->correlation_id, "corr-9");
    assert_int_equal(g->op, TW_OP_INVOKEACTION);
    assert_int_equal(g->expires_ms, a.expires_ms);
    assert_true(json_equal(g->input, a.input));
    int64_t depth = -1;
    assert_int_equal(tw_queue_depth(f->q, "agent1", &depth), 0);
    assert_int_equal(depth, 1);

    /* seq keeps growing across a reopen */
    tw_action b = mk("act-2", "agent1", "dtw:agent1:lamp", "toggle", TW_OP_INVOKEACTION);
    tw_queue_push_result r2 = push_sync(f, &b);
    assert_true(r2.seq > r.seq);
    tw_action_free(g);
    json_decref(a.input);
}

static void test_push_rejects(void **state)
{
    fx *f = *state;
    push_wait w = {0};
    tw_action a = mk("old", "agent1", "dtw:agent1:t", "act", TW_OP_INVOKEACTION);
    a.expires_ms = tw_now_ms() - 1;
    assert_int_equal(tw_queue_push(f->q, &a, on_pushed, &w), TW_EEXPIRED);
    a = mk("", "agent1", "dtw:agent1:t", "act", TW_OP_INVOKEACTION);
    assert_int_equal(tw_queue_push(f->q, &a, on_pushed, &w), TW_EINVAL);
    a = mk("x", "agent1", "dtw:agent1:t", "act", TW_OP_READPROPERTY);
    assert_int_equal(tw_queue_push(f->q, &a, on_pushed, &w), TW_EINVAL);
    a = mk("x", NULL, "dtw:agent1:t", "act", TW_OP_INVOKEACTION);
    assert_int_equal(tw_queue_push(f->q, &a, on_pushed, &w), TW_EINVAL);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(w.calls, 0); /* refused pushes never call back */
    tw_action *g = NULL;
    assert_int_equal(tw_queue_get(f->q, "old", &g), TW_ENOTFOUND);

    /* A duplicate id: refused at once while the first is in flight, and by
     * the database once it is committed. */
    a = mk("dup", "agent1", "dtw:agent1:t", "act", TW_OP_INVOKEACTION);
    push_wait w1 = {0}, w2 = {0};
    assert_int_equal(tw_queue_push(f->q, &a, on_pushed, &w1), 0);
    int rc = tw_queue_push(f->q, &a, on_pushed, &w2);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(w1.res.rc, 0);
    if (rc == 0)
        assert_int_equal(w2.res.rc, TW_EEXIST);
    else
        assert_int_equal(rc, TW_EEXIST);
    assert_int_equal(push_sync(f, &a).rc, TW_EEXIST);
}

static void test_fetch_order_and_cursor(void **state)
{
    fx *f = *state;
    char id[32];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "a%d", i);
        tw_action a = mk(id, i % 2 ? "agentB" : "agentA", "dtw:x:t", "act", TW_OP_INVOKEACTION);
        a.input = json_integer(i);
        assert_int_equal(tw_queue_push(f->q, &a, NULL, NULL), 0);
        json_decref(a.input);
    }
    assert_int_equal(tw_store_flush(f->s), 0);
    tw_action *got = NULL;
    int n = 0;
    assert_int_equal(tw_queue_fetch(f->q, "agentA", 0, 3, &got, &n), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(json_integer_value(got[i].input), i * 2);
        assert_int_equal(got[i].status, TW_STATUS_DELIVERED);
        if (i) assert_true(got[i].seq > got[i - 1].seq);
    }
    /* A cursor past the second skips the third as well as the rest before. */
    int64_t cursor = got[1].seq;
    tw_action_list_free(got, n);
    assert_int_equal(tw_queue_fetch(f->q, "agentA", cursor, 10, &got, &n), 0);
    assert_int_equal(n, 2); /* a6, a8: a4 was delivered by the first fetch */
    assert_int_equal(json_integer_value(got[0].input), 6);
    assert_int_equal(json_integer_value(got[1].input), 8);
    tw_action_list_free(got, n);
    assert_int_equal(tw_queue_fetch(f->q, "agentA", 0, 10, &got, &n), 0);
    assert_int_equal(n, 0);
    tw_action_list_free(got, n);

    int64_t d;
    assert_int_equal(tw_queue_depth(f->q, "agentA", &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(tw_queue_depth(f->q, "agentB", &d), 0);
    assert_int_equal(d, 5);
    assert_int_equal(tw_queue_depth(f->q, NULL, &d), 0);
    assert_int_equal(d, 5);

    /* A fetched action reads back as delivered, with its history. */
    tw_action *g = get(f, "a0");
    assert_int_equal(g->status, TW_STATUS_DELIVERED);
    tw_action_free(g);
    json_t *h = NULL;
    assert_int_equal(tw_queue_history(f->q, "a0", &h), 0);
    assert_int_equal(json_array_size(h), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 0), "status")),
                        "queued");
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 1), "status")),
                        "delivered");
    int64_t ms;
    assert_int_equal(
        tw_time_parse(json_string_value(json_object_get(json_array_get(h, 1), "time")), &ms), 0);
    json_decref(h);
    assert_int_equal(tw_queue_history(f->q, "nope", &h), TW_ENOTFOUND);
}

static void test_coalescing(void **state)
{
    fx *f = *state;
    tw_action w1 = mk("w1", "ag", "dtw:ag:lamp", "brightness", TW_OP_WRITEPROPERTY);
    w1.input = json_integer(10);
    assert_int_equal(push_sync(f, &w1).rc, 0);
    tw_action other = mk("w-other", "ag", "dtw:ag:lamp", "color", TW_OP_WRITEPROPERTY);
    assert_int_equal(push_sync(f, &other).rc, 0);
    tw_action inv = mk("i1", "ag", "dtw:ag:lamp", "brightness", TW_OP_INVOKEACTION);
    assert_int_equal(push_sync(f, &inv).rc, 0);

    tw_action w2 = mk("w2", "ag", "dtw:ag:lamp", "brightness", TW_OP_WRITEPROPERTY);
    w2.input = json_integer(20);
    tw_queue_push_result r = push_sync(f, &w2);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.superseded_id, "w1");

    tw_action *g = get(f, "w1");
    assert_int_equal(g->status, TW_STATUS_CANCELLED);
    assert_non_null(g->error);
    tw_action_free(g);
    g = get(f, "w-other"); /* other property: untouched */
    assert_int_equal(g->status, TW_STATUS_QUEUED);
    tw_action_free(g);

    /* An update of the cancelled one is refused. */
    assert_int_equal(tw_queue_update(f->q, "w1", TW_STATUS_RUNNING, NULL, NULL), TW_ECONFLICT);

    /* Drain: only the latest write of brightness is delivered. */
    tw_action *got;
    int n;
    assert_int_equal(tw_queue_fetch(f->q, "ag", 0, 10, &got, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(got[0].id, "w-other");
    assert_string_equal(got[1].id, "i1");
    assert_string_equal(got[2].id, "w2");
    assert_int_equal(json_integer_value(got[2].input), 20);
    tw_action_list_free(got, n);

    /* A delivered write is not coalesced any more. */
    tw_action w3 = mk("w3", "ag", "dtw:ag:lamp", "brightness", TW_OP_WRITEPROPERTY);
    r = push_sync(f, &w3);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.superseded_id, "");
    g = get(f, "w2");
    assert_int_equal(g->status, TW_STATUS_DELIVERED);
    tw_action_free(g);
    json_decref(w1.input);
    json_decref(w2.input);
}

typedef struct seen {
    int n;
    char ids[16][TW_ID_MAX];
    tw_status st[16];
    bool had_error[16];
} seen;

static void on_action(void *arg, const tw_action *a)
{
    seen *s = arg;
    if (s->n < 16) {
        snprintf(s->ids[s->n], TW_ID_MAX, "%s", a->id);
        s->st[s->n] = a->status;
        s->had_error[s->n] = a->error != NULL;
    }
    s->n++;
}

static void test_expiry(void **state)
{
    fx *f = *state;
    int64_t now = tw_now_ms();
    tw_action a = mk("e1", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    a.expires_ms = now + 10000;
    assert_int_equal(push_sync(f, &a).rc, 0);
    tw_action b = mk("e2", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    b.expires_ms = now + 20000;
    assert_int_equal(push_sync(f, &b).rc, 0);
    tw_action c = mk("never", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    c.expires_ms = 0;
    assert_int_equal(push_sync(f, &c).rc, 0);

    seen s = {0};
    assert_int_equal(tw_queue_expire(f->q, now, on_action, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(tw_queue_expire(f->q, now + 15000, on_action, &s), 0);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.ids[0], "e1");
    assert_int_equal(s.st[0], TW_STATUS_EXPIRED);
    assert_true(s.had_error[0]);
    tw_action *g = get(f, "e1");
    assert_int_equal(g->status, TW_STATUS_EXPIRED);
    tw_action_free(g);
    /* Expired rows are never fetched; the others still are. */
    tw_action *got;
    int n;
    assert_int_equal(tw_queue_fetch(f->q, "ag", 0, 10, &got, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(got[0].id, "e2");
    assert_string_equal(got[1].id, "never");
    tw_action_list_free(got, n);
    /* Only queued rows expire. */
    s.n = 0;
    assert_int_equal(tw_queue_expire(f->q, now + 100000, on_action, &s), 0);
    assert_int_equal(s.n, 0);
}

static void test_fetch_skips_expired(void **state)
{
    fx *f = *state;
    tw_action a = mk("soon", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    int rc;
    int margin = 300;
    do { /* a push must be accepted before its expiry: retry with more room */
        a.expires_ms = tw_now_ms() + margin;
        margin *= 2;
    } while ((rc = push_sync(f, &a).rc) == TW_EEXPIRED);
    assert_int_equal(rc, 0);
    while (tw_now_ms() <= a.expires_ms)
        usleep(20000);
    tw_action *got;
    int n;
    assert_int_equal(tw_queue_fetch(f->q, "ag", 0, 10, &got, &n), 0);
    assert_int_equal(n, 0);
    tw_action_list_free(got, n);
    seen s = {0};
    assert_int_equal(tw_queue_expire(f->q, tw_now_ms(), on_action, &s), 0);
    assert_int_equal(s.n, 1);
}

static void test_expire_many_pages(void **state)
{
    fx *f = *state;
    int64_t now = tw_now_ms();
    char id[32];
    for (int i = 0; i < 1300; i++) {
        snprintf(id, sizeof id, "x%d", i);
        tw_action a = mk(id, "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
        a.expires_ms = now + 1000 + (i % 7);
        assert_int_equal(tw_queue_push(f->q, &a, NULL, NULL), 0);
    }
    seen s = {0};
    assert_int_equal(tw_queue_expire(f->q, now + 5000, on_action, &s), 0);
    assert_int_equal(s.n, 1300);
    int64_t d;
    assert_int_equal(tw_queue_depth(f->q, NULL, &d), 0);
    assert_int_equal(d, 0);
}

static void test_cancel(void **state)
{
    fx *f = *state;
    tw_action a = mk("c1", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    assert_int_equal(push_sync(f, &a).rc, 0);
    tw_action *out = NULL;
    assert_int_equal(tw_queue_cancel(f->q, "c1", &out), 0);
    assert_non_null(out);
    assert_int_equal(out->status, TW_STATUS_CANCELLED);
    assert_non_null(out->error);
    tw_action_free(out);
    out = NULL;
    assert_int_equal(tw_queue_cancel(f->q, "c1", &out), TW_ECONFLICT);
    assert_null(out);
    assert_int_equal(tw_queue_cancel(f->q, "nope", &out), TW_ENOTFOUND);

    /* A delivered action can be cancelled, a completed one cannot. */
    tw_action b = mk("c2", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    b.status = TW_STATUS_DELIVERED;
    assert_int_equal(tw_queue_record(f->q, &b), 0);
    assert_int_equal(tw_queue_cancel(f->q, "c2", NULL), 0);
    tw_action c = mk("c3", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    assert_int_equal(tw_queue_record(f->q, &c), 0);
    assert_int_equal(tw_queue_update(f->q, "c3", TW_STATUS_COMPLETED, NULL, NULL), 0);
    assert_int_equal(tw_queue_cancel(f->q, "c3", NULL), TW_ECONFLICT);
    tw_action *g = get(f, "c3");
    assert_int_equal(g->status, TW_STATUS_COMPLETED);
    tw_action_free(g);
    /* the cancelled one is not delivered */
    tw_action *got;
    int n;
    assert_int_equal(tw_queue_fetch(f->q, "ag", 0, 10, &got, &n), 0);
    assert_int_equal(n, 0);
    tw_action_list_free(got, n);
}

/* tw_queue_status: what the drain asks after registering a claimed batch.
 * A cancel or a failure decided after the claim counts at once, before its
 * write is committed; the committed row answers after a reopen (nothing
 * in memory); an unknown id is NONE. */
static void test_status_sees_decisions(void **state)
{
    fx *f = *state;
    const char *ids[] = {"s1", "s2", "s3"};
    for (int i = 0; i < 3; i++) {
        tw_action a = mk(ids[i], "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
        assert_int_equal(push_sync(f, &a).rc, 0);
    }
    tw_action *got;
    int n;
    assert_int_equal(tw_queue_fetch(f->q, "ag", 0, 10, &got, &n), 0);
    assert_int_equal(n, 3);
    /* decided, not committed yet: no flush in between */
    assert_int_equal(tw_queue_cancel(f->q, "s2", NULL), 0);
    assert_int_equal(tw_queue_update_seq(f->q, "s3", got[2].seq, TW_STATUS_COMPLETED, NULL, NULL),
                     0);
    tw_action probe[4];
    memcpy(probe, got, 3 * sizeof *got);
    probe[3] = mk("nope", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    tw_status st[4];
    assert_int_equal(tw_queue_status(f->q, probe, 4, st), 0);
    assert_int_equal(st[0], TW_STATUS_DELIVERED);
    assert_int_equal(st[1], TW_STATUS_CANCELLED);
    assert_int_equal(st[2], TW_STATUS_COMPLETED);
    assert_int_equal(st[3], TW_STATUS_NONE);
    tw_action_list_free(got, n);
    /* committed, and nothing of it in memory */
    fx_close(f);
    fx_open(f);
    tw_action a = mk("s2", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    assert_int_equal(tw_queue_status(f->q, &a, 1, st), 0);
    assert_int_equal(st[0], TW_STATUS_CANCELLED);
    assert_int_equal(tw_queue_status(f->q, NULL, 0, NULL), 0);
}

static void test_record_update_without_waiting(void **state)
{
    fx *f = *state;
    tw_action a = mk("r1", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    a.status = TW_STATUS_DELIVERED;
    a.expires_ms = 0;
    /* No flush in between: the updates are answered before the record is
     * committed. */
    assert_int_equal(tw_queue_record(f->q, &a), 0);
    assert_int_equal(tw_queue_update(f->q, "r1", TW_STATUS_RUNNING, NULL, NULL), 0);
    json_t *out = json_pack("{s:b}", "ok", 1);
    assert_int_equal(tw_queue_update(f->q, "r1", TW_STATUS_COMPLETED, out, NULL), 0);
    assert_int_equal(tw_queue_update(f->q, "r1", TW_STATUS_FAILED, NULL, NULL), TW_ECONFLICT);
    assert_int_equal(tw_queue_update(f->q, "unknown", TW_STATUS_RUNNING, NULL, NULL), TW_ENOTFOUND);
    tw_action *g = get(f, "r1"); /* get sees write-behind rows */
    assert_int_equal(g->status, TW_STATUS_COMPLETED);
    assert_true(json_equal(g->output, out));
    tw_action_free(g);
    json_t *h;
    assert_int_equal(tw_queue_history(f->q, "r1", &h), 0);
    assert_int_equal(json_array_size(h), 3);
    const char *want[] = {"delivered", "running", "completed"};
    for (int i = 0; i < 3; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(h, i), "status")),
                            want[i]);
    json_decref(h);

    /* after commit and a reopen, the conflict is still detected */
    fx_close(f);
    fx_open(f);
    assert_int_equal(tw_queue_update(f->q, "r1", TW_STATUS_RUNNING, NULL, NULL), TW_ECONFLICT);
    json_decref(out);
}

/* The store lingers (as with store_linger_ms), so the record job is still
 * waiting when the answers come: they are folded into it, and the action
 * is written once, final status, output, error and history included. */
static void test_record_folds_answers_while_waiting(void **state)
{
    fx *f = *state;
    fx_close(f);
    tw_store_opts o = {.behind_linger_ms = 600000}; /* only a flush ends the wait */
    assert_int_equal(tw_store_open(f->path, &o, &f->s), 0);
    assert_int_equal(tw_queue_open(f->s, &f->q), 0);

    tw_action a = mk("f1", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    a.status = TW_STATUS_DELIVERED;
    a.expires_ms = 0;
    assert_int_equal(tw_queue_record(f->q, &a), 0);
    json_t *out = json_pack("{s:i}", "n", 7);
    assert_int_equal(tw_queue_update(f->q, "f1", TW_STATUS_RUNNING, NULL, NULL), 0);
    assert_int_equal(tw_queue_update(f->q, "f1", TW_STATUS_COMPLETED, out, NULL), 0);
    assert_int_equal(tw_queue_update(f->q, "f1", TW_STATUS_FAILED, NULL, NULL), TW_ECONFLICT);
    tw_store_stats st;
    tw_store_get_stats(f->s, &st);
    assert_int_equal(st.pending, 1); /* one job: the record, with both answers in it */

    /* a second action: its record is taken by a flush before it is answered,
     * so its answer becomes a job of its own */
    tw_action b = mk("f2", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    b.status = TW_STATUS_DELIVERED;
    b.expires_ms = 0;
    assert_int_equal(tw_queue_record(f->q, &b), 0);
    assert_int_equal(tw_store_flush(f->s), 0);
    json_t *err = json_pack("{s:i,s:s}", "status", 500, "title", "boom");
    assert_int_equal(tw_queue_update(f->q, "f2", TW_STATUS_FAILED, NULL, err), 0);
    tw_store_get_stats(f->s, &st);
    assert_int_equal(st.pending, 1);

    /* both survive a reopen as if every change had been a row update */
    fx_close(f);
    fx_open(f);
    tw_action *g = get(f, "f1");
    assert_int_equal(g->status, TW_STATUS_COMPLETED);
    assert_true(json_equal(g->output, out));
    assert_null(g->error);
    tw_action_free(g);
    json_t *h;
    assert_int_equal(tw_queue_history(f->q, "f1", &h), 0);
    const char *want[] = {"delivered", "running", "completed"};
    assert_int_equal(json_array_size(h), 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(h, i), "status")),
                            want[i]);
    json_decref(h);
    g = get(f, "f2");
    assert_int_equal(g->status, TW_STATUS_FAILED);
    assert_true(json_equal(g->error, err));
    tw_action_free(g);
    assert_int_equal(tw_queue_history(f->q, "f2", &h), 0);
    assert_int_equal(json_array_size(h), 2);
    json_decref(h);
    assert_int_equal(tw_queue_update(f->q, "f1", TW_STATUS_RUNNING, NULL, NULL), TW_ECONFLICT);
    json_decref(out);
    json_decref(err);
}

/* Answers come right after a decision is committed (a drained action
 * completes moments after its claim): the queue answers them from what it
 * remembers of recent decisions, and must agree with the database however
 * many decisions came since. */
static void test_update_after_commit_many_decisions(void **state)
{
    fx *f = *state;
    enum { N = 20000 }; /* more than the queue remembers */
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "m%d", i);
        tw_action a = mk(id, "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
        a.status = TW_STATUS_DELIVERED;
        a.expires_ms = 0;
        assert_int_equal(tw_queue_record(f->q, &a), 0);
        if (i % 2 == 0)
            assert_int_equal(tw_queue_update(f->q, id, TW_STATUS_COMPLETED, NULL, NULL), 0);
    }
    assert_int_equal(tw_store_flush(f->s), 0);
    /* the oldest decisions are long forgotten, the newest remembered */
    const int probe[] = {0, 1, N / 2, N / 2 + 1, N - 2, N - 1};
    for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
        snprintf(id, sizeof id, "m%d", probe[k]);
        if (probe[k] % 2 == 0) {
            assert_int_equal(tw_queue_update(f->q, id, TW_STATUS_FAILED, NULL, NULL), TW_ECONFLICT);
        } else {
            assert_int_equal(tw_queue_update(f->q, id, TW_STATUS_RUNNING, NULL, NULL), 0);
            assert_int_equal(tw_queue_update(f->q, id, TW_STATUS_COMPLETED, NULL, NULL), 0);
            assert_int_equal(tw_queue_update(f->q, id, TW_STATUS_RUNNING, NULL, NULL),
                             TW_ECONFLICT);
        }
    }
    assert_int_equal(tw_queue_update(f->q, "m-none", TW_STATUS_RUNNING, NULL, NULL), TW_ENOTFOUND);

    /* drained rows: claimed (committed), then answered */
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "d%d", i);
        tw_action a = mk(id, "ag2", "dtw:ag2:t", "act", TW_OP_INVOKEACTION);
        assert_int_equal(push_sync(f, &a).rc, 0);
    }
    tw_action *got = NULL;
    int n = 0;
    assert_int_equal(tw_queue_fetch(f->q, "ag2", 0, 10, &got, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(tw_store_flush(f->s), 0);
    /* the drain answers with the row's seq at hand (d0, d1), or without */
    for (int i = 0; i < n; i++)
        assert_int_equal(tw_queue_update_seq(f->q, got[i].id, i < 2 ? got[i].seq : 0,
                                             TW_STATUS_COMPLETED, NULL, NULL),
                         0);
    assert_int_equal(tw_queue_update(f->q, got[0].id, TW_STATUS_RUNNING, NULL, NULL), TW_ECONFLICT);
    tw_action_list_free(got, n);
    fx_close(f);
    fx_open(f);
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "d%d", i);
        tw_action *g = get(f, id);
        assert_int_equal(g->status, TW_STATUS_COMPLETED);
        tw_action_free(g);
    }
    json_t *h;
    assert_int_equal(tw_queue_history(f->q, "d1", &h), 0);
    assert_int_equal(json_array_size(h), 3);
    const char *want[] = {"queued", "delivered", "completed"};
    for (int i = 0; i < 3; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(h, i), "status")),
                            want[i]);
    json_decref(h);
}

/* The queue's schema as version 1 created it (status history written by a
 * trigger into action_history), to check the migration. */
static const char *const v1_steps[] = {
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
};

/* A database written by schema version 1 keeps its histories: the rows of
 * action_history come first, the changes after the upgrade follow. */
static void test_history_across_schema_upgrade(void **state)
{
    fx *f = *state;
    fx_close(f);
    char side[700];
    unlink(f->path);
    snprintf(side, sizeof side, "%s-wal", f->path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", f->path);
    unlink(side);
    assert_int_equal(tw_store_open(f->path, NULL, &f->s), 0);
    assert_int_equal(tw_store_migrate(f->s, "queue", v1_steps, 1), 0);
    tw_store_close(f->s);
    f->s = NULL;
    /* version 1 rows: queued, then delivered by the trigger */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_exec(db,
                     "INSERT INTO actions(seq, id, thing_id, agent_id, sender_id, name, op, "
                     "status, created, updated, expires, queued, first_status) VALUES(1, 'old1', "
                     "'dtw:ag:t', 'ag', 'alice', 'act', 'invokeaction', 'queued', 1000, 1000, 0, "
                     "1, 'queued');"
                     "UPDATE actions SET status='delivered', updated=2000 WHERE seq=1;",
                     NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    fx_open(f); /* upgrades to the current version */
    assert_int_equal(tw_queue_update(f->q, "old1", TW_STATUS_RUNNING, NULL, NULL), 0);
    assert_int_equal(tw_queue_update(f->q, "old1", TW_STATUS_COMPLETED, NULL, NULL), 0);
    assert_int_equal(tw_queue_update(f->q, "old1", TW_STATUS_FAILED, NULL, NULL), TW_ECONFLICT);
    fx_close(f);
    fx_open(f);
    json_t *h;
    assert_int_equal(tw_queue_history(f->q, "old1", &h), 0);
    const char *want[] = {"queued", "delivered", "running", "completed"};
    assert_int_equal(json_array_size(h), 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(h, i), "status")),
                            want[i]);
    assert_string_equal(json_string_value(json_object_get(json_array_get(h, 1), "time")),
                        "1970-01-01T00:00:02.000Z");
    json_decref(h);
    tw_action *g = get(f, "old1");
    assert_int_equal(g->status, TW_STATUS_COMPLETED);
    tw_action_free(g);
}

static void test_fail_thing(void **state)
{
    fx *f = *state;
    tw_action a = mk("f1", "ag", "dtw:ag:gone", "act", TW_OP_INVOKEACTION);
    assert_int_equal(push_sync(f, &a).rc, 0);
    tw_action b = mk("f2", "ag", "dtw:ag:gone", "act", TW_OP_INVOKEACTION);
    b.status = TW_STATUS_RUNNING;
    assert_int_equal(tw_queue_record(f->q, &b), 0);
    tw_action c = mk("f3", "ag", "dtw:ag:gone", "act", TW_OP_INVOKEACTION);
    assert_int_equal(tw_queue_record(f->q, &c), 0);
    assert_int_equal(tw_queue_update(f->q, "f3", TW_STATUS_COMPLETED, NULL, NULL), 0);
    tw_action d = mk("f4", "ag", "dtw:ag:stays", "act", TW_OP_INVOKEACTION);
    assert_int_equal(push_sync(f, &d).rc, 0);

    json_t *problem = tw_problem_new(404, "thing-deleted", "Thing deleted", NULL, NULL);
    seen s = {0};
    assert_int_equal(tw_queue_fail_thing(f->q, "dtw:ag:gone", problem, on_action, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.st[0], TW_STATUS_FAILED);
    assert_true(s.had_error[0]);
    tw_action *g = get(f, "f1");
    assert_int_equal(g->status, TW_STATUS_FAILED);
    assert_true(json_equal(g->error, problem));
    tw_action_free(g);
    g = get(f, "f3");
    assert_int_equal(g->status, TW_STATUS_COMPLETED);
    tw_action_free(g);
    g = get(f, "f4");
    assert_int_equal(g->status, TW_STATUS_QUEUED);
    tw_action_free(g);
    json_decref(problem);
}

static void test_list(void **state)
{
    fx *f = *state;
    char id[32];
    for (int i = 0; i < 6; i++) {
        snprintf(id, sizeof id, "l%d", i);
        tw_action a = mk(id, "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
        a.sender_id = i % 2 ? "bob" : "alice";
        a.created_ms = 1000000 + i;
        assert_int_equal(tw_queue_record(f->q, &a), 0);
    }
    tw_action other = mk("l-other", "ag", "dtw:ag:other", "act", TW_OP_INVOKEACTION);
    assert_int_equal(tw_queue_record(f->q, &other), 0);
    tw_action *got;
    int n;
    assert_int_equal(tw_queue_list(f->q, "dtw:ag:t", NULL, 100, &got, &n), 0);
    assert_int_equal(n, 6);
    assert_string_equal(got[0].id, "l5"); /* newest first */
    assert_string_equal(got[5].id, "l0");
    tw_action_list_free(got, n);
    assert_int_equal(tw_queue_list(f->q, "dtw:ag:t", "bob", 2, &got, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(got[0].id, "l5");
    assert_string_equal(got[1].id, "l3");
    tw_action_list_free(got, n);
    assert_int_equal(tw_queue_list(f->q, "dtw:ag:none", NULL, 10, &got, &n), 0);
    assert_int_equal(n, 0);
    tw_action_list_free(got, n);
}

static void test_action_json(void **state)
{
    tw_action a = mk("j1", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    a.status = TW_STATUS_COMPLETED;
    a.created_ms = 1700000000123;
    a.updated_ms = 1700000001000;
    a.expires_ms = 0;
    a.output = json_integer(5);
    a.correlation_id = "c-1";
    json_t *j = tw_action_json(&a);
    assert_string_equal(json_string_value(json_object_get(j, "id")), "j1");
    assert_string_equal(json_string_value(json_object_get(j, "thingID")), "dtw:ag:t");
    assert_string_equal(json_string_value(json_object_get(j, "name")), "act");
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    assert_int_equal(json_integer_value(json_object_get(j, "output")), 5);
    assert_string_equal(json_string_value(json_object_get(j, "created")),
                        "2023-11-14T22:13:20.123Z");
    assert_string_equal(json_string_value(json_object_get(j, "updated")),
                        "2023-11-14T22:13:21.000Z");
    assert_null(json_object_get(j, "expires"));
    assert_null(json_object_get(j, "error"));
    assert_string_equal(json_string_value(json_object_get(j, "correlationID")), "c-1");
    assert_string_equal(json_string_value(json_object_get(j, "senderID")), "alice");
    json_decref(j);
    json_decref(a.output);
}

static void test_fetch_paging_many_rows(void **state)
{
    fx *f = *state;
    enum { N = 2500 };
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "p%05d", i);
        tw_action a = mk(id, "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
        a.input = json_integer(i);
        assert_int_equal(tw_queue_push(f->q, &a, NULL, NULL), 0);
        json_decref(a.input);
    }
    assert_int_equal(tw_store_flush(f->s), 0);
    int64_t d;
    assert_int_equal(tw_queue_depth(f->q, "ag", &d), 0);
    assert_int_equal(d, N);
    int next = 0, pages = 0;
    int64_t after = 0;
    for (;;) {
        tw_action *got;
        int n;
        assert_int_equal(tw_queue_fetch(f->q, "ag", after, 100, &got, &n), 0);
        if (n == 0) {
            tw_action_list_free(got, n);
            break;
        }
        assert_true(n <= 100);
        for (int i = 0; i < n; i++)
            assert_int_equal(json_integer_value(got[i].input), next++);
        after = got[n - 1].seq;
        tw_action_list_free(got, n);
        pages++;
    }
    assert_int_equal(next, N);
    assert_int_equal(pages, N / 100);
    assert_int_equal(tw_queue_depth(f->q, "ag", &d), 0);
    assert_int_equal(d, 0);
}

typedef struct fetcher {
    tw_queue *q;
    int n;
    int *seen; /* indexed by input */
    int errors;
} fetcher;

static void *fetcher_main(void *p)
{
    fetcher *fe = p;
    for (;;) {
        tw_action *got;
        int n;
        if (tw_queue_fetch(fe->q, "ag", 0, 7, &got, &n) != 0) {
            fe->errors++;
            break;
        }
        for (int i = 0; i < n; i++)
            fe->seen[json_integer_value(got[i].input)]++;
        fe->n += n;
        tw_action_list_free(got, n);
        if (n == 0) break;
    }
    return NULL;
}

static void test_concurrent_fetchers_never_share(void **state)
{
    fx *f = *state;
    enum { N = 2000 };
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "cf%d", i);
        tw_action a = mk(id, "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
        a.input = json_integer(i);
        assert_int_equal(tw_queue_push(f->q, &a, NULL, NULL), 0);
        json_decref(a.input);
    }
    assert_int_equal(tw_store_flush(f->s), 0);
    int *seen1 = calloc(N, sizeof(int)), *seen2 = calloc(N, sizeof(int));
    fetcher a = {.q = f->q, .seen = seen1}, b = {.q = f->q, .seen = seen2};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, fetcher_main, &a);
    pthread_create(&t2, NULL, fetcher_main, &b);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(a.errors + b.errors, 0);
    assert_int_equal(a.n + b.n, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(seen1[i] + seen2[i], 1);
    free(seen1);
    free(seen2);
}

/* The router drains an agent's queue from a push's done callback when the
 * agent came online meanwhile: fetch works there (on the writer thread). */
typedef struct drain_in_done {
    tw_queue *q;
    int rc, n;
    char first[TW_ID_MAX];
} drain_in_done;

static void drain_on_pushed(void *arg, const tw_queue_push_result *res)
{
    drain_in_done *d = arg;
    tw_action *got = NULL;
    d->rc = tw_queue_fetch(d->q, "ag", 0, 10, &got, &d->n);
    if (d->n > 0) snprintf(d->first, sizeof d->first, "%s", got[0].id);
    tw_action_list_free(got, d->n);
}

static void test_fetch_from_done_callback(void **state)
{
    fx *f = *state;
    tw_action a = mk("dd1", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    drain_in_done d = {.q = f->q, .rc = 1};
    assert_int_equal(tw_queue_push(f->q, &a, drain_on_pushed, &d), 0);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(d.rc, 0);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.first, "dd1");
    tw_action *g = get(f, "dd1");
    assert_int_equal(g->status, TW_STATUS_DELIVERED);
    tw_action_free(g);
}

/* ---- inbox ---------------------------------------------------------------- */

typedef struct replayed {
    int n;
    int64_t seqs[64];
    char names[64][32];
    int64_t last;
} replayed;

static void on_entry(void *arg, int64_t seq, tw_msg *m)
{
    replayed *r = arg;
    if (r->n < 64) {
        r->seqs[r->n] = seq;
        snprintf(r->names[r->n], 32, "%s", tw_msg_name(m) ? tw_msg_name(m) : "");
    }
    assert_true(seq > r->last); /* increasing */
    r->last = seq;
    r->n++;
}

static tw_msg *note(const char *name)
{
    tw_msg *m = tw_msg_new(TW_TYPE_NOTIFICATION, TW_OP_INVOKEACTION, "dtw:ag:t", name);
    assert_non_null(m);
    tw_msg_set_status(m, TW_STATUS_COMPLETED);
    tw_msg_set_str(m, "correlationID", "c1");
    return m;
}

static void append(fx *f, const char *client, const char *name, int64_t *seq)
{
    tw_msg *m = note(name);
    assert_int_equal(tw_inbox_append(f->q, client, m, seq), 0);
    tw_msg_unref(m);
}

static void test_inbox_replay_ack_cursor(void **state)
{
    fx *f = *state;
    int64_t s1, s2, s3, s4;
    append(f, "c1", "one", &s1);
    append(f, "c2", "other", &s4);
    append(f, "c1", "two", &s2);
    append(f, "c1", "three", &s3);
    assert_true(s1 < s4 && s4 < s2 && s2 < s3);

    replayed r = {0};
    /* no flush: replay sees the write-behind entries */
    assert_int_equal(tw_inbox_replay(f->q, "c1", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 3);
    assert_string_equal(r.names[0], "one");
    assert_string_equal(r.names[2], "three");
    assert_int_equal(r.seqs[0], s1);
    assert_int_equal(r.seqs[2], s3);

    memset(&r, 0, sizeof r);
    assert_int_equal(tw_inbox_replay(f->q, "c1", s1, on_entry, &r), 0);
    assert_int_equal(r.n, 2);
    assert_string_equal(r.names[0], "two");

    assert_int_equal(tw_inbox_ack(f->q, "c1", s2), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_inbox_replay(f->q, "c1", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.names[0], "three");
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_inbox_replay(f->q, "c2", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 1); /* other clients untouched */

    /* Everything acknowledged, then a reopen: cursors never go back. */
    assert_int_equal(tw_inbox_ack(f->q, "c1", s3), 0);
    assert_int_equal(tw_inbox_ack(f->q, "c2", s4), 0);
    fx_close(f);
    fx_open(f);
    int64_t s5;
    append(f, "c1", "four", &s5);
    assert_true(s5 > s3);
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_inbox_replay(f->q, "c1", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.names[0], "four");
}

static void test_inbox_bounded_per_client(void **state)
{
    fx *f = *state;
    enum { N = 10150 };
    int64_t first = 0, seq = 0;
    tw_msg *m = note("n");
    for (int i = 0; i < N; i++) {
        assert_int_equal(tw_inbox_append(f->q, "busy", m, &seq), 0);
        if (i == 0) first = seq;
    }
    tw_msg_unref(m);
    append(f, "quiet", "q", NULL);
    replayed r = {0};
    assert_int_equal(tw_inbox_replay(f->q, "busy", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 10000);
    assert_int_equal(r.seqs[0], first + (N - 10000)); /* the oldest went */
    assert_int_equal(r.last, seq);
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_inbox_replay(f->q, "quiet", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 1);
}

typedef struct old_entry {
    int64_t created;
    const char *client;
} old_entry;

static int insert_old_entry(tw_store_tx *tx, void *arg)
{
    old_entry *o = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "INSERT INTO inbox(client_id, msg, created) "
                                         "VALUES(?1, ?2, ?3)");
    if (!st) return TW_EDB;
    tw_msg *m = note("ancient");
    sqlite3_bind_text(st, 1, o->client, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, tw_msg_encode(m, NULL), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, o->created);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : TW_EDB;
    tw_msg_unref(m);
    return rc;
}

static int count_inbox(tw_store_tx *tx, void *arg)
{
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT count(*) FROM inbox");
    if (!st || sqlite3_step(st) != SQLITE_ROW) return TW_EDB;
    *(int64_t *)arg = sqlite3_column_int64(st, 0);
    return 0;
}

static void test_inbox_drops_week_old_entries(void **state)
{
    fx *f = *state;
    /* An entry from eight days ago, written behind the queue's back. */
    tw_queue_close(f->q);
    old_entry o = {.created = tw_now_ms() - 8LL * 24 * 3600 * 1000, .client = "c1"};
    assert_int_equal(tw_store_exec(f->s, insert_old_entry, &o), 0);
    assert_int_equal(tw_queue_open(f->s, &f->q), 0);

    replayed r = {0};
    assert_int_equal(tw_inbox_replay(f->q, "c1", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 0); /* never replayed */
    int64_t n = 0;
    assert_int_equal(tw_store_read(f->s, count_inbox, &n), 0);
    assert_int_equal(n, 1);
    /* and pruned by the writer on the next append */
    append(f, "c2", "fresh", NULL);
    assert_int_equal(tw_store_flush(f->s), 0);
    assert_int_equal(tw_store_read(f->s, count_inbox, &n), 0);
    assert_int_equal(n, 1);
    memset(&r, 0, sizeof r);
    assert_int_equal(tw_inbox_replay(f->q, "c2", 0, on_entry, &r), 0);
    assert_int_equal(r.n, 1);
}

/* Retention: finished actions older than the cutoff go, with their history;
 * unfinished old ones and young ones stay; more than a page is walked. */
static void test_prune_finished(void **state)
{
    fx *f = *state;
    int64_t now = tw_now_ms(), old = now - 10 * 24 * 3600 * 1000LL;
    char id[32];
    for (int i = 0; i < 600; i++) { /* more than one page of 512 */
        snprintf(id, sizeof id, "old%d", i);
        tw_action a = mk(id, "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
        a.status = TW_STATUS_DELIVERED;
        a.expires_ms = 0;
        a.created_ms = a.updated_ms = old + i;
        assert_int_equal(tw_queue_record(f->q, &a), 0);
        if (i != 7) /* old7 never gets an answer */
            assert_int_equal(tw_queue_update(f->q, id, TW_STATUS_COMPLETED, NULL, NULL), 0);
    }
    tw_action young = mk("young", "ag", "dtw:ag:t", "act", TW_OP_INVOKEACTION);
    young.status = TW_STATUS_DELIVERED;
    young.expires_ms = 0;
    young.created_ms = young.updated_ms = now;
    assert_int_equal(tw_queue_record(f->q, &young), 0);
    assert_int_equal(tw_queue_update(f->q, "young", TW_STATUS_COMPLETED, NULL, NULL), 0);
    assert_int_equal(tw_store_flush(f->s), 0);

    int deleted = 0;
    assert_int_equal(tw_queue_prune(f->q, now - 7 * 24 * 3600 * 1000LL, 1, &deleted), 0);
    assert_int_equal(deleted, 511); /* one page: 512 rows, one of them unfinished */

    assert_int_equal(tw_queue_prune(f->q, now - 7 * 24 * 3600 * 1000LL, 8, &deleted), 0);
    assert_int_equal(deleted, 88);
    tw_action *a = NULL;
    assert_int_equal(tw_queue_get(f->q, "old0", &a), TW_ENOTFOUND);
    assert_int_equal(tw_queue_get(f->q, "old599", &a), TW_ENOTFOUND);
    json_t *h = NULL;
    assert_int_equal(tw_queue_history(f->q, "old0", &h), TW_ENOTFOUND);
    tw_action *kept = get(f, "old7");
    assert_int_equal(kept->status, TW_STATUS_DELIVERED);
    tw_action_free(kept);
    kept = get(f, "young");
    tw_action_free(kept);
    /* nothing more to do */
    assert_int_equal(tw_queue_prune(f->q, now - 7 * 24 * 3600 * 1000LL, 8, &deleted), 0);
    assert_int_equal(deleted, 0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_push_durable_then_visible_after_reopen),
        T(test_push_rejects),
        T(test_fetch_order_and_cursor),
        T(test_coalescing),
        T(test_expiry),
        T(test_fetch_skips_expired),
        T(test_expire_many_pages),
        T(test_cancel),
        T(test_status_sees_decisions),
        T(test_record_update_without_waiting),
        T(test_record_folds_answers_while_waiting),
        T(test_update_after_commit_many_decisions),
        T(test_history_across_schema_upgrade),
        T(test_fail_thing),
        T(test_list),
        T(test_action_json),
        T(test_fetch_paging_many_rows),
        T(test_concurrent_fetchers_never_share),
        T(test_fetch_from_done_callback),
        T(test_inbox_replay_ack_cursor),
        T(test_inbox_bounded_per_client),
        T(test_inbox_drops_week_old_entries),
        T(test_prune_finished),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
