/*
 * test_nng_e2e.c - agents and consumers over nng against a real twind.
 *
 *   roundtrip       agent + consumer: TD, directory, values, events,
 *                   property observation, sync/async actions with progress,
 *                   property write, cancel, query
 *   offline_queue   an action to an offline agent is queued; the agent
 *                   connects and completes it; the consumer, offline
 *                   meanwhile, gets the final status from its inbox
 *   isolation       a second agent neither receives nor can answer the
 *                   first agent's requests, nor query them
 *   restart         twind restarts on the same port; agent and consumer
 *                   reconnect by themselves, TDs and subscriptions return
 *   protocol        the raw wire: bad JSON and requests before login get
 *                   problems; an oversized line gets 413 and a close
 *   slow_consumer   a consumer that stops reading is disconnected when its
 *                   bounded queue fills, and the agent is unaffected
 *   sync_timeout_names_action
 *                   a synchronous invoke or write that times out before
 *                   twind said `delivered` still names its action, which
 *                   the consumer then queries and cancels
 *   clean_close     (tls+tcp:// only) every closed client ends its link with
 *                   a TLS close_notify, as twind's debug log tells
 */
#include "harness.h"

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* ---- shared observation state ---------------------------------------------------- */

typedef struct obs {
    pthread_mutex_t mtx;
    int events, props, requests, statuses;
    json_t *last_event, *last_prop;
    tw_status last_status;
    char action_id[TW_ID_MAX];
    json_t *final_output;
    tw_status final_status;
    bool saw_running;
    tw_req *held; /* a request kept to answer later */
} obs;

static void obs_init(obs *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_init(&o->mtx, NULL);
}

static void obs_fini(obs *o)
{
    json_decref(o->last_event);
    json_decref(o->last_prop);
    json_decref(o->final_output);
    pthread_mutex_destroy(&o->mtx);
}

static void on_event(void *arg, tw_client *c, const char *thing, const char *name, json_t *value,
                     json_t *env)
{
    obs *o = arg;
    pthread_mutex_lock(&o->mtx);
    o->events++;
    json_decref(o->last_event);
    o->last_event = json_incref(value);
    pthread_mutex_unlock(&o->mtx);
}

static void on_prop(void *arg, tw_client *c, const char *thing, const char *name, json_t *value,
                    json_t *env)
{
    obs *o = arg;
    pthread_mutex_lock(&o->mtx);
    o->props++;
    json_decref(o->last_prop);
    o->last_prop = json_incref(value);
    pthread_mutex_unlock(&o->mtx);
}

static void on_status(void *arg, tw_client *c, const tw_action_result *r)
{
    obs *o = arg;
    pthread_mutex_lock(&o->mtx);
    o->statuses++;
    o->last_status = r->status;
    if (r->action_id[0]) tw_strlcpy(o->action_id, r->action_id, sizeof o->action_id);
    if (r->status == TW_STATUS_RUNNING) o->saw_running = true;
    if (tw_status_final(r->status)) {
        o->final_status = r->status;
        json_decref(o->final_output);
        o->final_output = r->output ? json_incref(r->output) : NULL;
    }
    pthread_mutex_unlock(&o->mtx);
}

static void on_echo(void *arg, tw_client *c, tw_req *r)
{
    obs *o = arg;
    pthread_mutex_lock(&o->mtx);
    o->requests++;
    pthread_mutex_unlock(&o->mtx);
    tw_req_complete(r, tw_req_input(r));
}

static void on_hold(void *arg, tw_client *c, tw_req *r)
{
    obs *o = arg;
    pthread_mutex_lock(&o->mtx);
    o->requests++;
    o->held = r;
    pthread_mutex_unlock(&o->mtx);
}

static void on_write(void *arg, tw_client *c, tw_req *r)
{
    obs *o = arg;
    pthread_mutex_lock(&o->mtx);
    o->requests++;
    json_decref(o->last_prop);
    o->last_prop = json_incref(tw_req_input(r));
    pthread_mutex_unlock(&o->mtx);
    tw_req_complete(r, NULL);
}

typedef struct {
    obs *o;
    int n;
} count_arg;

static bool events_at_least(void *a)
{
    count_arg *ca = a;
    pthread_mutex_lock(&ca->o->mtx);
    bool ok = ca->o->events >= ca->n;
    pthread_mutex_unlock(&ca->o->mtx);
    return ok;
}

static bool props_at_least(void *a)
{
    count_arg *ca = a;
    pthread_mutex_lock(&ca->o->mtx);
    bool ok = ca->o->props >= ca->n;
    pthread_mutex_unlock(&ca->o->mtx);
    return ok;
}

static bool requests_at_least(void *a)
{
    count_arg *ca = a;
    pthread_mutex_lock(&ca->o->mtx);
    bool ok = ca->o->requests >= ca->n;
    pthread_mutex_unlock(&ca->o->mtx);
    return ok;
}

static bool has_final(void *a)
{
    obs *o = a;
    pthread_mutex_lock(&o->mtx);
    bool ok = o->final_status != TW_STATUS_NONE;
    pthread_mutex_unlock(&o->mtx);
    return ok;
}

static bool has_held(void *a)
{
    obs *o = a;
    pthread_mutex_lock(&o->mtx);
    bool ok = o->held != NULL;
    pthread_mutex_unlock(&o->mtx);
    return ok;
}

static bool has_action_id(void *a)
{
    obs *o = a;
    pthread_mutex_lock(&o->mtx);
    bool ok = o->action_id[0] != 0;
    pthread_mutex_unlock(&o->mtx);
    return ok;
}

static json_t *test_td(const char *id)
{
    return json_pack("{s:s, s:s, s:s,"
                     " s:{s:{s:s, s:b}, s:{s:s}},"
                     " s:{s:{s:{s:s}}},"
                     " s:{s:{}, s:{}, s:{}, s:{s:b}}}",
                     "@context", "https://www.w3.org/2022/wot/td/v1.1", "id", id, "title",
                     "test thing", "properties", "temp", "type", "number", "readOnly", 1, "level",
                     "type", "integer", "events", "alarm", "data", "type", "string", "actions",
                     "echo", "slow", "work", "probe", "safe", 1);
}

static tw_client *make_client(twind_proc *d, tw_client *admin, const char *id, const char *kind,
                              const char *role)
{
    assert_int_equal(h_add_client(admin, id, kind, role, "pw-of-a-test-client"), 0);
    tw_client *c = h_client(d, id, "pw-of-a-test-client");
    assert_non_null(c);
    return c;
}

/* ---- roundtrip ----------------------------------------------------------------- */

typedef struct {
    tw_req *r;
    json_t *out;
} answer_later;

static void *answer_thread(void *arg)
{
    answer_later *al = arg;
    tw_req_progress(al->r, NULL);
    h_sleep_ms(50);
    tw_req_complete(al->r, al->out);
    json_decref(al->out);
    return NULL;
}

static void test_roundtrip(void **state)
{
    twind_proc d;
    assert_int_equal(twind_new(&d, "nng-roundtrip"), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    obs ao, co;
    obs_init(&ao);
    obs_init(&co);
    tw_client *agent = make_client(&d, admin, "ag1", "agent", "agent");
    tw_client *cons = make_client(&d, admin, "co1", "consumer", "manager");
    assert_int_equal(tw_agent_on_action(agent, "t1", "echo", on_echo, &ao), 0);
    assert_int_equal(tw_agent_on_action(agent, "t1", "slow", on_hold, &ao), 0);
    assert_int_equal(tw_agent_on_write(agent, "t1", "level", on_write, &ao), 0);
    json_t *td = test_td("t1");
    char *twin_id = NULL;
    assert_int_equal(tw_agent_publish_td(agent, td, &twin_id, NULL), 0);
    assert_string_equal(twin_id, "dtw:ag1:t1");
    free(twin_id);
    json_decref(td);

    /* directory */
    json_t *v = NULL;
    assert_int_equal(tw_consumer_get_thing(cons, "dtw:ag1:t1", &v), 0);
    assert_string_equal(json_string_value(json_object_get(v, "title")), "test thing");
    assert_string_equal(json_string_value(json_object_get(v, "id")), "dtw:ag1:t1");
    json_decref(v);
    assert_int_equal(tw_consumer_get_thing(cons, "dtw:ag1:nope", &v), TW_ENOTFOUND);
    json_t *q = json_pack("{s:s}", "title", "test thing");
    assert_int_equal(tw_consumer_search(cons, q, &v), 0);
    char *s = json_dumps(v, JSON_COMPACT);
    assert_non_null(strstr(s, "dtw:ag1:t1"));
    free(s);
    json_decref(v);
    json_decref(q);
    assert_int_equal(tw_consumer_list_things(cons, 0, 100, &v), 0);
    s = json_dumps(v, JSON_COMPACT);
    assert_non_null(strstr(s, "dtw:ag1:t1"));
    free(s);
    json_decref(v);

    /* events and properties */
    assert_int_equal(tw_consumer_subscribe_event(cons, "dtw:ag1:t1", "alarm", on_event, &co, NULL),
                     0);
    assert_int_equal(tw_consumer_observe_property(cons, "dtw:ag1:t1", "temp", on_prop, &co, NULL),
                     0);
    v = json_real(21.5);
    assert_int_equal(tw_agent_publish_property(agent, "t1", "temp", v), 0);
    json_decref(v);
    v = json_string("too hot");
    assert_int_equal(tw_agent_publish_event(agent, "t1", "alarm", v), 0);
    json_decref(v);
    count_arg one = {&co, 1};
    assert_true(h_wait(events_at_least, &one, 5000));
    assert_true(h_wait(props_at_least, &one, 5000));
    assert_string_equal(json_string_value(co.last_event), "too hot");
    assert_true(json_real_value(co.last_prop) == 21.5);
    assert_int_equal(tw_consumer_read_property(cons, "dtw:ag1:t1", "temp", &v), 0);
    assert_true(json_number_value(v) == 21.5);
    json_decref(v);
    assert_int_equal(tw_consumer_read_event(cons, "dtw:ag1:t1", "alarm", &v), 0);
    json_decref(v);

    /* synchronous action */
    tw_action_result res;
    json_t *in = json_pack("{s:s, s:[i,i]}", "say", "hi", "list", 1, 2);
    assert_int_equal(tw_consumer_invoke(cons, "dtw:ag1:t1", "echo", in, 5000, &res), 0);
    assert_int_equal(res.status, TW_STATUS_COMPLETED);
    assert_true(json_equal(in, res.output));
    char echo_id[TW_ID_MAX];
    tw_strlcpy(echo_id, res.action_id, sizeof echo_id);
    assert_true(echo_id[0] != 0);
    tw_action_result_clear(&res);
    json_decref(in);
    /* the action store is written behind: the final status lands shortly */
    for (int i = 0; i < 200; i++) {
        assert_int_equal(tw_consumer_query_action(cons, echo_id, &v), 0);
        if (strcmp(json_string_value(json_object_get(v, "status")), "completed") == 0) break;
        json_decref(v);
        v = NULL;
        h_sleep_ms(10);
    }
    assert_non_null(v);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "completed");
    json_decref(v);

    /* asynchronous action answered later from another thread, with progress */
    in = json_integer(5);
    assert_int_equal(
        tw_consumer_invoke_async(cons, "dtw:ag1:t1", "slow", in, 10000, on_status, &co), 0);
    json_decref(in);
    assert_true(h_wait(has_held, &ao, 5000));
    answer_later al = {ao.held, json_pack("{s:s}", "result", "late")};
    ao.held = NULL;
    pthread_t th;
    pthread_create(&th, NULL, answer_thread, &al);
    assert_true(h_wait(has_final, &co, 5000));
    pthread_join(th, NULL);
    assert_int_equal(co.final_status, TW_STATUS_COMPLETED);
    assert_true(co.saw_running);
    assert_string_equal(json_string_value(json_object_get(co.final_output, "result")), "late");

    /* property write */
    v = json_integer(7);
    assert_int_equal(tw_consumer_write_property(cons, "dtw:ag1:t1", "level", v, 5000, &res), 0);
    assert_int_equal(res.status, TW_STATUS_COMPLETED);
    tw_action_result_clear(&res);
    json_decref(v);
    assert_int_equal(json_integer_value(ao.last_prop), 7);

    /* cancel: the agent holds the request, the consumer cancels it */
    obs c2;
    obs_init(&c2);
    assert_int_equal(
        tw_consumer_invoke_async(cons, "dtw:ag1:t1", "slow", NULL, 10000, on_status, &c2), 0);
    assert_true(h_wait(has_held, &ao, 5000));
    assert_true(h_wait(has_action_id, &c2, 5000));
    assert_int_equal(tw_consumer_cancel(cons, c2.action_id), 0);
    assert_true(h_wait(has_final, &c2, 5000));
    assert_int_equal(c2.final_status, TW_STATUS_CANCELLED);
    for (int i = 0; i < 100 && !tw_req_cancelled(ao.held); i++)
        h_sleep_ms(20);
    assert_true(tw_req_cancelled(ao.held));
    assert_int_equal(tw_consumer_cancel(cons, c2.action_id), TW_ECONFLICT);
    tw_req_fail(ao.held, TW_ECONFLICT, "cancelled");
    ao.held = NULL;
    obs_fini(&c2);

    /* an unknown action is refused by the runtime, not sent */
    assert_int_equal(tw_consumer_invoke(cons, "dtw:ag1:t1", "nope", NULL, 5000, NULL),
                     TW_ENOTFOUND);

    tw_client_close(cons);
    tw_client_close(agent);
    tw_client_close(admin);
    obs_fini(&ao);
    obs_fini(&co);
    twind_stop(&d);
}

/* ---- offline queue and inbox replay --------------------------------------------- */

static void test_offline_queue(void **state)
{
    twind_proc d;
    assert_int_equal(twind_new(&d, "nng-offline"), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    tw_client *agent = make_client(&d, admin, "ag2", "agent", "agent");
    json_t *td = test_td("t2");
    assert_int_equal(tw_agent_publish_td(agent, td, NULL, NULL), 0);
    json_decref(td);
    tw_client_close(agent); /* offline */

    assert_int_equal(h_add_client(admin, "co2", "consumer", "operator", "pw-of-a-test-client"), 0);
    tw_client *cons = h_client(&d, "co2", "pw-of-a-test-client");
    assert_non_null(cons);
    /* Closing the client does not wait for twind to see the connection go:
     * until it does, an invoke is delivered (to a dying connection), not
     * queued. The safe action `probe` is an RPC: refused as not connected
     * (TW_EOFFLINE) once twind knows the agent is offline, unanswered before. */
    int probe = TW_ETIMEDOUT;
    for (int i = 0; i < 300 && probe == TW_ETIMEDOUT; i++) /* up to 30 s */
        probe = tw_consumer_invoke(cons, "dtw:ag2:t2", "probe", NULL, 100, NULL);
    assert_int_equal(probe, TW_EOFFLINE);
    obs co;
    obs_init(&co);
    json_t *in = json_pack("{s:i}", "job", 42);
    assert_int_equal(tw_consumer_invoke_async(cons, "dtw:ag2:t2", "work", in, 0, on_status, &co),
                     0);
    json_decref(in);
    assert_true(h_wait(has_action_id, &co, 5000));
    for (int i = 0; i < 500 && co.last_status != TW_STATUS_QUEUED; i++)
        h_sleep_ms(10);
    assert_int_equal(co.last_status, TW_STATUS_QUEUED);
    char aid[TW_ID_MAX];
    tw_strlcpy(aid, co.action_id, sizeof aid);
    tw_client_close(cons); /* the consumer goes away too */
    obs_fini(&co);

    /* the agent returns and completes the queued action */
    obs ao;
    obs_init(&ao);
    tw_client_opts o = {
        .url = d.url, .ca_file = d.ca, .client_id = "ag2", .password = "pw-of-a-test-client"};
    assert_int_equal(tw_client_new(&o, &agent), 0);
    assert_int_equal(tw_agent_on_action(agent, "t2", "work", on_echo, &ao), 0);
    count_arg one = {&ao, 1};
    assert_true(h_wait(requests_at_least, &one, 10000));

    /* the consumer returns: the final status comes from its inbox */
    obs back;
    obs_init(&back);
    tw_client_opts co_opts = {.url = d.url,
                              .ca_file = d.ca,
                              .client_id = "co2",
                              .password = "pw-of-a-test-client",
                              .on_action_status = on_status,
                              .action_status_arg = &back};
    assert_int_equal(tw_client_new(&co_opts, &cons), 0);
    assert_true(h_wait(has_final, &back, 10000));
    assert_int_equal(back.final_status, TW_STATUS_COMPLETED);
    assert_string_equal(back.action_id, aid);
    assert_int_equal(json_integer_value(json_object_get(back.final_output, "job")), 42);
    assert_true(tw_client_inbox_cursor(cons) > 0);
    json_t *st = NULL;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(tw_consumer_query_action(cons, aid, &st), 0);
        if (strcmp(json_string_value(json_object_get(st, "status")), "completed") == 0) break;
        json_decref(st);
        st = NULL;
        h_sleep_ms(10);
    }
    assert_non_null(st);
    json_decref(st);
    assert_int_equal(ao.requests, 1); /* delivered once, not twice */

    tw_client_close(cons);
    tw_client_close(agent);
    tw_client_close(admin);
    obs_fini(&ao);
    obs_fini(&back);
    twind_stop(&d);
}

/* ---- isolation between agents --------------------------------------------------- */

static void test_isolation(void **state)
{
    twind_proc d;
    assert_int_equal(twind_new(&d, "nng-isolation"), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    obs a1, a2, co;
    obs_init(&a1);
    obs_init(&a2);
    obs_init(&co);
    tw_client *ag1 = make_client(&d, admin, "ag3a", "agent", "agent");
    tw_client *ag2 = make_client(&d, admin, "ag3b", "agent", "agent");
    tw_client *cons = make_client(&d, admin, "co3", "consumer", "operator");
    assert_int_equal(tw_agent_on_action(ag1, "*", "*", on_hold, &a1), 0);
    assert_int_equal(tw_agent_on_action(ag2, "*", "*", on_hold, &a2), 0);
    json_t *td = test_td("shared"); /* the same local id for both agents */
    assert_int_equal(tw_agent_publish_td(ag1, td, NULL, NULL), 0);
    assert_int_equal(tw_agent_publish_td(ag2, td, NULL, NULL), 0);
    json_decref(td);

    assert_int_equal(
        tw_consumer_invoke_async(cons, "dtw:ag3a:shared", "work", NULL, 10000, on_status, &co), 0);
    assert_true(h_wait(has_held, &a1, 5000));
    assert_true(h_wait(has_action_id, &co, 5000));

    /* the other agent forges an answer with the action's id */
    json_t *forged =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:{s:b}}", "type", "response", "operation",
                  "invokeaction", "thingID", "shared", "name", "work", "correlationID",
                  co.action_id, "status", "completed", "output", "forged", 1);
    assert_int_equal(tw_client_send_raw(ag2, forged), 0);
    json_decref(forged);
    /* and cannot read its status either */
    json_t *st = NULL;
    assert_int_not_equal(tw_consumer_query_action(ag2, co.action_id, &st), 0);
    json_decref(st);
    h_sleep_ms(200);
    assert_int_equal(co.final_status, TW_STATUS_NONE); /* the forgery changed nothing */

    json_t *real = json_pack("{s:b}", "real", 1);
    tw_req_complete(a1.held, real);
    json_decref(real);
    assert_true(h_wait(has_final, &co, 5000));
    assert_int_equal(co.final_status, TW_STATUS_COMPLETED);
    assert_true(json_is_true(json_object_get(co.final_output, "real")));
    assert_null(json_object_get(co.final_output, "forged"));
    assert_int_equal(a2.requests, 0);
    assert_int_equal(a1.requests, 1);

    tw_client_close(cons);
    tw_client_close(ag1);
    tw_client_close(ag2);
    tw_client_close(admin);
    obs_fini(&a1);
    obs_fini(&a2);
    obs_fini(&co);
    twind_stop(&d);
}

/* ---- restart -------------------------------------------------------------------- */

static int g_states[8];
static pthread_mutex_t g_states_mtx = PTHREAD_MUTEX_INITIALIZER;
static void on_state(void *arg, tw_client *c, tw_client_state s)
{
    pthread_mutex_lock(&g_states_mtx);
    g_states[s]++;
    pthread_mutex_unlock(&g_states_mtx);
}

static void test_restart(void **state)
{
    twind_proc d;
    assert_int_equal(twind_new(&d, "nng-restart"), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    assert_int_equal(h_add_client(admin, "ag4", "agent", "agent", "pw-of-a-test-client"), 0);
    assert_int_equal(h_add_client(admin, "co4", "consumer", "operator", "pw-of-a-test-client"), 0);
    tw_client_close(admin);
    obs ao, co;
    obs_init(&ao);
    obs_init(&co);
    tw_client_opts o = {.url = d.url,
                        .ca_file = d.ca,
                        .client_id = "ag4",
                        .password = "pw-of-a-test-client",
                        .reconnect_min_ms = 50,
                        .reconnect_max_ms = 400,
                        .dispatch_inline = true, /* the agent answers on its I/O thread */
                        .on_state = on_state};
    tw_client *agent, *cons;
    assert_int_equal(tw_client_new(&o, &agent), 0);
    o.client_id = "co4";
    o.on_state = NULL;
    o.dispatch_inline = false;
    assert_int_equal(tw_client_new(&o, &cons), 0);
    assert_int_equal(tw_client_wait_connected(agent, 10000), 0);
    assert_int_equal(tw_client_wait_connected(cons, 10000), 0);
    assert_int_equal(tw_agent_on_action(agent, "t4", "echo", on_echo, &ao), 0);
    json_t *td = test_td("t4");
    assert_int_equal(tw_agent_publish_td(agent, td, NULL, NULL), 0);
    json_decref(td);
    assert_int_equal(tw_consumer_observe_property(cons, "dtw:ag4:t4", "temp", on_prop, &co, NULL),
                     0);

    assert_int_equal(twind_restart(&d), 0);
    /* both notice, come back by themselves and resync */
    tw_client_stats st;
    for (int i = 0; i < 500; i++) {
        tw_client_get_stats(cons, &st);
        if (st.reconnects > 0 && tw_client_get_state(cons) == TW_CLIENT_CONNECTED &&
            tw_client_get_state(agent) == TW_CLIENT_CONNECTED)
            break;
        h_sleep_ms(20);
    }
    assert_true(st.reconnects > 0);
    assert_int_equal(tw_client_wait_connected(agent, 10000), 0);
    assert_int_equal(tw_client_wait_connected(cons, 10000), 0);
    /* the state callbacks run on the client's callback thread, a little
     * after the state itself changed: wait for them (up to 10 s) */
    int connected = 0, disconnected = 0;
    for (int i = 0; i < 500 && (connected < 2 || disconnected < 1); i++) {
        pthread_mutex_lock(&g_states_mtx);
        connected = g_states[TW_CLIENT_CONNECTED];
        disconnected = g_states[TW_CLIENT_DISCONNECTED];
        pthread_mutex_unlock(&g_states_mtx);
        if (connected < 2 || disconnected < 1) h_sleep_ms(20);
    }
    assert_true(connected >= 2);
    assert_true(disconnected >= 1);
    h_sleep_ms(200); /* the resync envelopes are processed */

    json_t *v = json_real(3.5);
    count_arg one = {&co, 1};
    for (int i = 0; i < 50 && !props_at_least(&one); i++) {
        tw_agent_publish_property(agent, "t4", "temp", v);
        h_sleep_ms(100);
    }
    json_decref(v);
    assert_true(props_at_least(&one));
    tw_action_result res;
    json_t *in = json_string("again");
    assert_int_equal(tw_consumer_invoke(cons, "dtw:ag4:t4", "echo", in, 5000, &res), 0);
    assert_true(json_equal(in, res.output));
    tw_action_result_clear(&res);
    json_decref(in);

    tw_client_close(cons);
    tw_client_close(agent);
    obs_fini(&ao);
    obs_fini(&co);
    twind_stop(&d);
}

/* ---- the raw wire ------------------------------------------------------------------ */

typedef struct raw {
    nng_stream_dialer *d;
    nng_stream *s;
    nng_aio *aio;
    char buf[1 << 16];
    size_t len;
} raw;

/* The raw wire over the plain loopback listener: nng 1.5's TLS client stream
 * can miss the end of a connection the server closed (a receive started
 * after the TCP error never completes), and these tests wait for exactly
 * that end. libtwin guards against it with its keepalive. */
static void raw_open(raw *r, const twind_proc *d)
{
    memset(r, 0, sizeof *r);
    assert_true(d->plain_url[0] != 0);
    assert_int_equal(nng_stream_dialer_alloc(&r->d, d->plain_url), 0);
    assert_int_equal(nng_aio_alloc(&r->aio, NULL, NULL), 0);
    nng_aio_set_timeout(r->aio, 5000);
    nng_stream_dialer_dial(r->d, r->aio);
    nng_aio_wait(r->aio);
    assert_int_equal(nng_aio_result(r->aio), 0);
    r->s = nng_aio_get_output(r->aio, 0);
}

static int raw_send(raw *r, const char *data, size_t len)
{
    while (len) {
        nng_iov iov = {(void *)data, len};
        nng_aio_set_iov(r->aio, 1, &iov);
        nng_stream_send(r->s, r->aio);
        nng_aio_wait(r->aio);
        if (nng_aio_result(r->aio)) return nng_aio_result(r->aio);
        data += nng_aio_count(r->aio);
        len -= nng_aio_count(r->aio);
    }
    return 0;
}

/* The next line as JSON, or NULL when the stream ended. */
static json_t *raw_recv(raw *r)
{
    for (;;) {
        char *nl = memchr(r->buf, '\n', r->len);
        if (nl) {
            json_t *j = json_loadb(r->buf, (size_t)(nl - r->buf), 0, NULL);
            r->len -= (size_t)(nl - r->buf) + 1;
            memmove(r->buf, nl + 1, r->len);
            return j;
        }
        if (r->len == sizeof r->buf) return NULL;
        nng_iov iov = {r->buf + r->len, sizeof r->buf - r->len};
        nng_aio_set_iov(r->aio, 1, &iov);
        nng_stream_recv(r->s, r->aio);
        nng_aio_wait(r->aio);
        if (nng_aio_result(r->aio)) return NULL;
        r->len += nng_aio_count(r->aio);
    }
}

static void raw_close(raw *r)
{
    nng_stream_close(r->s);
    nng_aio_free(r->aio);
    nng_stream_free(r->s);
    nng_stream_dialer_free(r->d);
}

static int problem_status(json_t *j)
{
    return (int)json_integer_value(json_object_get(json_object_get(j, "error"), "status"));
}

static void test_protocol(void **state)
{
    twind_proc d;
    assert_int_equal(twind_new(&d, "nng-protocol"), 0);
    raw r;
    raw_open(&r, &d);
    /* not JSON */
    const char *bad = "this is not json\n";
    assert_int_equal(raw_send(&r, bad, strlen(bad)), 0);
    json_t *j = raw_recv(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "failed");
    assert_int_equal(problem_status(j), 400);
    json_decref(j);
    /* a request before login, batched with a ping on one line each */
    const char *two = "{\"type\":\"request\",\"operation\":\"readallproperties\",\"thingID\":"
                      "\"dtw:x:y\",\"correlationID\":\"c1\"}\n\n"
                      "{\"type\":\"request\",\"operation\":\"bogus\",\"correlationID\":\"c2\"}\n";
    assert_int_equal(raw_send(&r, two, strlen(two)), 0);
    j = raw_recv(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "correlationID")), "c1");
    assert_int_equal(problem_status(j), 401);
    json_decref(j);
    j = raw_recv(&r);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "correlationID")), "c2");
    assert_int_equal(problem_status(j), 400);
    json_decref(j);
    /* a wrong password */
    const char *login = "{\"type\":\"request\",\"operation\":\"login\",\"correlationID\":\"l1\","
                        "\"input\":{\"login\":\"admin\",\"password\":\"wrong\"}}\n";
    assert_int_equal(raw_send(&r, login, strlen(login)), 0);
    j = raw_recv(&r);
    assert_non_null(j);
    assert_int_equal(problem_status(j), 401);
    json_decref(j);
    /* a line longer than max_body: 413, then the server closes */
    size_t big = 1100 * 1024;
    char *huge = malloc(big + 1);
    memset(huge, 'x', big);
    huge[0] = '"';
    huge[big - 1] = '"';
    huge[big] = '\n';
    raw_send(&r, huge, big + 1);
    free(huge);
    j = raw_recv(&r);
    assert_non_null(j);
    assert_int_equal(problem_status(j), 413);
    json_decref(j);
    assert_null(raw_recv(&r)); /* closed */
    raw_close(&r);
    twind_stop(&d);
}

/* ---- slow consumer -------------------------------------------------------------- */

static void test_slow_consumer(void **state)
{
    twind_proc d;
    memset(&d, 0, sizeof d);
    assert_int_equal(h_mkdtemp(d.dir, sizeof d.dir, "nng-slow"), 0);
    snprintf(d.data, sizeof d.data, "%s/data", d.dir);
    snprintf(d.config, sizeof d.config, "%s/twind.json", d.dir);
    FILE *f = fopen(d.config, "w");
    assert_non_null(f);
    fprintf(f, "{\"nng\": {\"send_queue\": 64%s}, \"rate\": 1000000, \"burst\": 1000000}\n",
            h_nng_extra());
    fclose(f);
    assert_int_equal(twind_start(&d, NULL), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    tw_client *agent = make_client(&d, admin, "ag5", "agent", "agent");
    json_t *td = test_td("t5");
    assert_int_equal(tw_agent_publish_td(agent, td, NULL, NULL), 0);
    json_decref(td);

    /* a consumer on the raw wire that subscribes and then never reads */
    raw r;
    raw_open(&r, &d);
    char line[512];
    snprintf(
        line, sizeof line,
        "{\"type\":\"request\",\"operation\":\"login\",\"correlationID\":\"l\","
        "\"input\":{\"login\":\"admin\",\"password\":\"%s\"}}\n"
        "{\"type\":\"request\",\"operation\":\"subscribeallevents\",\"correlationID\":\"s\"}\n",
        d.admin_pw);
    assert_int_equal(raw_send(&r, line, strlen(line)), 0);
    json_t *j = raw_recv(&r);
    assert_int_equal(problem_status(j), 0);
    json_decref(j);
    j = raw_recv(&r);
    assert_string_equal(json_string_value(json_object_get(j, "correlationID")), "s");
    json_decref(j);

    /* flood: more than the socket buffers and the 64-message queue hold */
    json_t *v = json_pack("{s:s}", "pad",
                          "................................................"
                          "................................................");
    int sent = 0;
    for (int i = 0; i < 200000; i++)
        if (tw_agent_publish_event(agent, "t5", "alarm", v) == 0) sent++;
    json_decref(v);
    assert_true(sent > 100000);
    /* a round trip on the agent's connection: the runtime has routed every
     * event before it (same stream, in order) while the reader read nothing */
    td = test_td("t5b");
    assert_int_equal(tw_agent_publish_td(agent, td, NULL, NULL), 0);
    json_decref(td);
    /* the server gave up on the reader: draining ends in a closed stream */
    int lines = 0;
    while ((j = raw_recv(&r)) != NULL) {
        json_decref(j);
        lines++;
    }
    assert_true(lines < sent);
    raw_close(&r);
    /* the agent was not affected */
    assert_int_equal(tw_client_get_state(agent), TW_CLIENT_CONNECTED);
    json_t *out = NULL;
    assert_int_equal(tw_consumer_get_thing(admin, "dtw:ag5:t5", &out), 0);
    json_decref(out);
    tw_client_close(agent);
    tw_client_close(admin);
    twind_stop(&d);
}

/* ---- a large inbox replay through a small send queue -------------------------------- */

typedef struct replay_obs {
    pthread_mutex_t mtx;
    int queued, finals, completed;
} replay_obs;

static void on_replay_status(void *arg, tw_client *c, const tw_action_result *r)
{
    replay_obs *o = arg;
    pthread_mutex_lock(&o->mtx);
    if (r->status == TW_STATUS_QUEUED) o->queued++;
    if (tw_status_final(r->status)) o->finals++;
    if (r->status == TW_STATUS_COMPLETED) o->completed++;
    pthread_mutex_unlock(&o->mtx);
}

static bool replay_queued(void *a)
{
    replay_obs *o = a;
    pthread_mutex_lock(&o->mtx);
    bool ok = o->queued >= 300;
    pthread_mutex_unlock(&o->mtx);
    return ok;
}

static bool replay_done(void *a)
{
    replay_obs *o = a;
    pthread_mutex_lock(&o->mtx);
    bool ok = o->finals >= 300;
    pthread_mutex_unlock(&o->mtx);
    return ok;
}

static void test_big_replay(void **state)
{
    twind_proc d;
    memset(&d, 0, sizeof d);
    assert_int_equal(h_mkdtemp(d.dir, sizeof d.dir, "nng-replay"), 0);
    snprintf(d.data, sizeof d.data, "%s/data", d.dir);
    snprintf(d.config, sizeof d.config, "%s/twind.json", d.dir);
    FILE *f = fopen(d.config, "w");
    assert_non_null(f);
    /* 300 actions leave 600 statuses in the inbox, replayed through a queue
     * of 400 messages. (With exactly 300 the 300 `queued` answers plus one
     * keepalive answer could overflow it when the machine is loaded: the
     * connection was then closed as a slow consumer and the test timed out.) */
    fprintf(f, "{\"nng\": {\"send_queue\": 400%s}, \"rate\": 1e6, \"burst\": 1e6}\n",
            h_nng_extra());
    fclose(f);
    assert_int_equal(twind_start(&d, NULL), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    tw_client *agent = make_client(&d, admin, "ag6", "agent", "agent");
    json_t *td = test_td("t6");
    assert_int_equal(tw_agent_publish_td(agent, td, NULL, NULL), 0);
    json_decref(td);
    assert_int_equal(h_add_client(admin, "co6", "consumer", "operator", "pw-of-a-test-client"), 0);
    tw_client_close(agent);
    tw_client_close(admin);
    /* The agent must be offline for every one of the 300 invocations. Its
     * close is asynchronous on the server's side (an invocation racing it is
     * delivered to the closing connection instead of queued), so restart
     * twind: afterwards the agent is certainly not connected. */
    assert_int_equal(twind_restart(&d), 0);
    admin = h_admin(&d);
    assert_non_null(admin);
    tw_client *cons = h_client(&d, "co6", "pw-of-a-test-client");
    assert_non_null(cons);
    replay_obs ro = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    for (int i = 0; i < 300; i++)
        assert_int_equal(
            tw_consumer_invoke_async(cons, "dtw:ag6:t6", "work", NULL, 0, on_replay_status, &ro),
            0);
    assert_true(h_wait(replay_queued, &ro, 60000));
    tw_client_close(cons);

    obs ao;
    obs_init(&ao);
    tw_client_opts o = {
        .url = d.url, .ca_file = d.ca, .client_id = "ag6", .password = "pw-of-a-test-client"};
    assert_int_equal(tw_client_new(&o, &agent), 0);
    assert_int_equal(tw_agent_on_action(agent, "t6", "work", on_echo, &ao), 0);
    count_arg all = {&ao, 300};
    assert_true(h_wait(requests_at_least, &all, 60000));
    h_sleep_ms(300); /* the last answers reach the inbox */

    replay_obs back = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
    tw_client_opts co = {.url = d.url,
                         .ca_file = d.ca,
                         .client_id = "co6",
                         .password = "pw-of-a-test-client",
                         .on_action_status = on_replay_status,
                         .action_status_arg = &back};
    assert_int_equal(tw_client_new(&co, &cons), 0);
    assert_true(h_wait(replay_done, &back, 60000));
    assert_int_equal(back.completed, 300);
    tw_client_close(cons);
    tw_client_close(agent);
    tw_client_close(admin);
    obs_fini(&ao);
    twind_stop(&d);
}

/* ---- limits: connection count and login timeout ---------------------------------- */

static void test_limits(void **state)
{
    twind_proc d;
    memset(&d, 0, sizeof d);
    assert_int_equal(h_mkdtemp(d.dir, sizeof d.dir, "nng-limits"), 0);
    snprintf(d.data, sizeof d.data, "%s/data", d.dir);
    snprintf(d.config, sizeof d.config, "%s/twind.json", d.dir);
    FILE *f = fopen(d.config, "w");
    assert_non_null(f);
    fprintf(f, "{\"nng\": {\"max_conns\": 2, \"login_timeout_ms\": 300%s}}\n", h_nng_extra());
    fclose(f);
    assert_int_equal(twind_start(&d, NULL), 0);
    raw r1, r2, r3;
    raw_open(&r1, &d);
    raw_open(&r2, &d);
    /* a ping on each proves both are served (and not yet timed out) */
    const char *ping = "{\"type\":\"request\",\"operation\":\"ping\",\"correlationID\":\"p\"}\n";
    assert_int_equal(raw_send(&r1, ping, strlen(ping)), 0);
    json_t *j = raw_recv(&r1);
    assert_non_null(j);
    json_decref(j);
    /* the third is over max_conns: accepted by TCP, closed at once */
    raw_open(&r3, &d);
    raw_send(&r3, ping, strlen(ping));
    assert_null(raw_recv(&r3));
    raw_close(&r3);
    /* nobody logged in: both are closed after the login timeout */
    int64_t t0 = tw_mono_us();
    assert_null(raw_recv(&r1));
    assert_null(raw_recv(&r2));
    assert_true(tw_mono_us() - t0 < 10 * 1000000); /* bound, not a speed figure */
    raw_close(&r1);
    raw_close(&r2);
    twind_stop(&d);
}

/* ---- a synchronous call that times out still names its action --------------- */

/* The synchronous invoke and write_property are quiet ("progress": false):
 * twind sends no `delivered` for a live action until its sweep. One that
 * times out before then asks twind for its action by correlationID, so the
 * caller can query and cancel it. The sweep is an hour away here: without
 * the question the result has no id (as before the fix). */
static void test_sync_timeout_names_action(void **state)
{
    twind_proc d;
    memset(&d, 0, sizeof d);
    assert_int_equal(h_mkdtemp(d.dir, sizeof d.dir, "nng-timeout-id"), 0);
    snprintf(d.data, sizeof d.data, "%s/data", d.dir);
    snprintf(d.config, sizeof d.config, "%s/twind.json", d.dir);
    FILE *f = fopen(d.config, "w");
    assert_non_null(f);
    const char *extra = h_nng_extra() + strspn(h_nng_extra(), " ,");
    fprintf(f, "{\"sweep_ms\": 3600000%s%s%s}\n", extra[0] ? ", \"nng\": {" : "", extra,
            extra[0] ? "}" : "");
    fclose(f);
    assert_int_equal(twind_start(&d, NULL), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    obs ao;
    obs_init(&ao);
    tw_client *agent = make_client(&d, admin, "ag1", "agent", "agent");
    tw_client *cons = make_client(&d, admin, "co1", "consumer", "manager");
    assert_int_equal(tw_agent_on_action(agent, "t1", "slow", on_hold, &ao), 0);
    assert_int_equal(tw_agent_on_write(agent, "t1", "level", on_hold, &ao), 0);
    json_t *td = test_td("t1");
    assert_int_equal(tw_agent_publish_td(agent, td, NULL, NULL), 0);
    json_decref(td);

    /* invoke: times out, names the action; query and cancel it */
    tw_action_result res;
    assert_int_equal(tw_consumer_invoke(cons, "dtw:ag1:t1", "slow", NULL, 200, &res), TW_ETIMEDOUT);
    assert_true(res.action_id[0] != 0);
    assert_int_equal(res.status, TW_STATUS_DELIVERED);
    tw_action_result_clear(&res);
    assert_true(h_wait(has_held, &ao, 5000));
    json_t *v = NULL;
    assert_int_equal(tw_consumer_query_action(cons, res.action_id, &v), 0);
    assert_string_equal(json_string_value(json_object_get(v, "status")), "delivered");
    json_decref(v);
    assert_int_equal(tw_consumer_cancel(cons, res.action_id), 0);
    for (int i = 0; i < 100 && !tw_req_cancelled(ao.held); i++)
        h_sleep_ms(20);
    assert_true(tw_req_cancelled(ao.held));
    tw_req_fail(ao.held, TW_ECONFLICT, "cancelled");
    ao.held = NULL;

    /* write_property the same */
    v = json_integer(3);
    assert_int_equal(tw_consumer_write_property(cons, "dtw:ag1:t1", "level", v, 200, &res),
                     TW_ETIMEDOUT);
    json_decref(v);
    assert_true(res.action_id[0] != 0);
    assert_true(h_wait(has_held, &ao, 5000));
    assert_int_equal(tw_consumer_cancel(cons, res.action_id), 0);
    for (int i = 0; i < 100 && !tw_req_cancelled(ao.held); i++)
        h_sleep_ms(20);
    assert_true(tw_req_cancelled(ao.held));
    tw_req_fail(ao.held, TW_ECONFLICT, "cancelled");
    ao.held = NULL;

    tw_client_close(cons);
    tw_client_close(agent);
    tw_client_close(admin);
    obs_fini(&ao);
    twind_stop(&d);
}

/* ---- a closed client says so: TLS close_notify ------------------------------------ */

/* The lines of twind's log that hold s. */
static int log_count(const twind_proc *d, const char *s)
{
    char log[600], line[4096];
    snprintf(log, sizeof log, "%s/twind.log", d->dir);
    FILE *f = fopen(log, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, s) != NULL;
    if (f) fclose(f);
    return n;
}

#define CLEAN_CLOSES 40

static void test_clean_close(void **state)
{
    const char *m = getenv("TW_E2E_MAIN");
    if (m && strcmp(m, "tls") != 0) return; /* TLS only */
    /* twind logs at debug how each connection ended (nng_conn.c, rx_cb) */
    const char *lvl = getenv("TW_TEST_LOG");
    char *saved = lvl ? strdup(lvl) : NULL;
    setenv("TW_TEST_LOG", "debug", 1);
    twind_proc d;
    int rc = twind_new(&d, "nng-close");
    if (saved)
        setenv("TW_TEST_LOG", saved, 1);
    else
        unsetenv("TW_TEST_LOG");
    free(saved);
    assert_int_equal(rc, 0);
    for (int i = 0; i < CLEAN_CLOSES; i++) {
        tw_client *c = h_admin(&d);
        assert_non_null(c);
        tw_client_close(c);
    }
    static const char clean[] = "ended by the peer: Object closed"; /* close_notify */
    static const char bare[] = "ended by the peer: Connection shutdown";
    static const char lost[] = "the peer is gone"; /* bare, found by the probe */
    for (int i = 0; i < 1500; i++) {               /* 30 s */
        if (log_count(&d, clean) + log_count(&d, bare) + log_count(&d, lost) >= CLEAN_CLOSES) break;
        h_sleep_ms(20);
    }
    /* libtwin's close aborted the receive first; nng's TLS layer then
     * closed the socket, on another thread, and when that came first (some
     * 15 % of closes on a quiet machine) the close_notify was lost: twind
     * saw a bare end, which it missed while busy (test_nng_peer_gone) */
    assert_int_equal(log_count(&d, bare) + log_count(&d, lost), 0);
    assert_int_equal(log_count(&d, clean), CLEAN_CLOSES);
    twind_stop(&d);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_offline_queue),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_protocol),
        cmocka_unit_test(test_slow_consumer),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_big_replay),
        cmocka_unit_test(test_sync_timeout_names_action),
        cmocka_unit_test(test_clean_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
