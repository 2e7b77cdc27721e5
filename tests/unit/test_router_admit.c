/*
 * test_router_admit.c - tw_router_admit() / tw_router_admit_done(), the
 * router's checks for a read a binding answers itself (the HTTP binding's
 * direct read path): the same chain as tw_router_handle() (authz, rate,
 * validate, a stage's copy on change) and the same counts in
 * tw_router_get_stats().
 */
#include "runtime/router.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#include <cmocka.h>

#include "tw_loop_runtime.h"

typedef tw_loop_runtime fixture;

static const char *TD = "{\"id\":\"lamp\",\"title\":\"Lamp\","
                        "\"properties\":{\"on\":{\"type\":\"boolean\"}}}";

static int setup_with(void **state, const char *extra)
{
    fixture *f = calloc(1, sizeof *f);
    tw_test_tmpdir(f->dir, "admit");
    tw_loop_runtime_open(f, extra);
    json_t *td = json_loads(TD, 0, NULL);
    char *twin_id = NULL;
    json_t *problem = NULL;
    assert_int_equal(tw_twin_mem_ops()->update_thing(f->twin, "ag", td, &twin_id, &problem), 0);
    free(twin_id);
    json_decref(td);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, NULL);
}

static int setup_rate(void **state)
{
    return setup_with(state, "{\"rate\": 0.01, \"burst\": 2}");
}

static int teardown(void **state)
{
    fixture *f = *state;
    tw_loop_runtime_close(f);
    tw_test_rmdir(f->dir);
    free(f);
    return 0;
}

static tw_msg *read_req(const char *thing, const char *name, const char *sender)
{
    tw_msg *m = tw_msg_new(TW_TYPE_REQUEST, TW_OP_READPROPERTY, thing, name);
    assert_non_null(m);
    if (sender) assert_int_equal(tw_msg_set_str(m, "senderID", sender), 0);
    return m;
}

/* Admits m from c and finishes with status (0: the chain's); returns the
 * admit result and the call's status. */
static int admit(fixture *f, tw_loop_conn *c, tw_msg *m, int status, int *out_status)
{
    tw_mw_call call;
    int rc = tw_router_admit(f->rt, tw_loop_conn_get(c), m, &call);
    if (rc) assert_non_null(call.problem);
    *out_status = call.status;
    tw_router_admit_done(&call, status);
    return rc;
}

static void test_admit_checks_and_counts(void **state)
{
    fixture *f = *state;
    tw_loop_conn *v = tw_loop_connect(f->loop, "test");
    assert_int_equal(tw_loop_identify(v, "v1", TW_ROLE_VIEWER), 0);
    tw_router_stats before, after;
    tw_router_get_stats(f->rt, &before);

    int st = 0;
    /* allowed: the caller answers (200) */
    tw_msg *m = read_req("dtw:ag:lamp", "on", "v1");
    assert_int_equal(admit(f, v, m, 200, &st), 0);
    assert_int_equal(st, 200);
    /* a stage that changes the message (authn stamps another sender) works
     * on a copy: the caller's message is left as it was */
    tw_msg *other = read_req("dtw:ag:lamp", "on", "someone-else");
    tw_msg_ref(other); /* a second holder: not writable */
    assert_int_equal(admit(f, v, other, 200, &st), 0);
    assert_string_equal(tw_msg_sender(other), "someone-else");
    tw_msg_unref(other);
    tw_msg_unref(other);
    /* unknown property and Thing: the validate stage's 404 */
    tw_msg *nope = read_req("dtw:ag:lamp", "nope", "v1");
    assert_int_not_equal(admit(f, v, nope, 0, &st), 0);
    assert_int_equal(st, 404);
    tw_msg_unref(nope);
    nope = read_req("dtw:ag:none", "on", "v1");
    assert_int_not_equal(admit(f, v, nope, 0, &st), 0);
    assert_int_equal(st, 404);
    tw_msg_unref(nope);
    /* unauthenticated: the authn stage's 401 */
    tw_loop_conn *anon = tw_loop_connect(f->loop, "anon");
    assert_int_not_equal(admit(f, anon, m, 0, &st), 0);
    assert_int_equal(st, 401);
    tw_msg_unref(m);

    tw_router_get_stats(f->rt, &after);
    assert_true(after.by_type[TW_TYPE_REQUEST] - before.by_type[TW_TYPE_REQUEST] >= 5);
    assert_true(after.rejected_by_status[3] - before.rejected_by_status[3] >= 2); /* 404 */
    assert_true(after.rejected_by_status[1] - before.rejected_by_status[1] >= 1); /* 401 */
    assert_true(after.delivered - before.delivered >= 5);
    uint64_t n0 = 0, n1 = 0;
    for (int i = 0; i < 12; i++) {
        n0 += before.latency_hist[i];
        n1 += after.latency_hist[i];
    }
    assert_true(n1 - n0 >= 5);
    tw_loop_close(anon);
    tw_loop_close(v);
}

static void test_admit_rate_limited(void **state)
{
    fixture *f = *state;
    tw_loop_conn *v = tw_loop_connect(f->loop, "test");
    assert_int_equal(tw_loop_identify(v, "busy", TW_ROLE_VIEWER), 0);
    tw_msg *m = read_req("dtw:ag:lamp", "on", "busy");
    int st = 0, last = 0;
    for (int i = 0; i < 5; i++) {
        if (admit(f, v, m, 200, &st)) {
            last = st;
            break;
        }
    }
    assert_int_equal(last, 429);
    tw_msg_unref(m);
    tw_loop_close(v);
}

static void test_admit_forbidden(void **state)
{
    fixture *f = *state;
    /* the role table: a viewer may read but not invoke (authz runs before
     * validate, so the missing action does not matter) */
    tw_loop_conn *v = tw_loop_connect(f->loop, "test");
    assert_int_equal(tw_loop_identify(v, "v2", TW_ROLE_VIEWER), 0);
    tw_msg *m = tw_msg_new(TW_TYPE_REQUEST, TW_OP_INVOKEACTION, "dtw:ag:lamp", "blink");
    assert_int_equal(tw_msg_set_str(m, "senderID", "v2"), 0);
    int st = 0;
    assert_int_not_equal(admit(f, v, m, 0, &st), 0);
    assert_int_equal(st, 403);
    tw_msg_unref(m);
    tw_loop_close(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_admit_checks_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admit_rate_limited, setup_rate, teardown),
        cmocka_unit_test_setup_teardown(test_admit_forbidden, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
