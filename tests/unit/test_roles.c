/*
 * test_roles.c - authorization and authentication through the real router:
 * the loopback binding, the middleware chain, the in-memory twin, a real
 * store and the real authn/authz.
 *
 *  - every role against every request operation (an explicit table written
 *    from DESIGN.md section 7, not derived from authz.c), allowed and denied;
 *  - notifications only from the Thing's own agent;
 *  - the built-in dtw:twind:authn service: admins only; per-Thing lists set
 *    through it apply to the very next message;
 *  - login over the router, logout from one connection closing the others of
 *    that session (and not other sessions), removal of a client closing its
 *    connections, the 11th bad password within a minute answered 429.
 */
#include "bindings/loopback/loopback.h"
#include "runtime/authn.h"
#include "runtime/authz.h"
#include "runtime/router.h"
#include "runtime/runtime.h"
#include "runtime/twin_mem.h"
#include "tw_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

typedef struct fixture {
    char dir[512];
    tw_config cfg;
    tw_runtime *rt;
    tw_twin_mem *twin;
    tw_loop *loop;
    tw_authn *an;
    tw_authz *az;
    char *admin_pw;
    tw_loop_conn *ag; /* agent "ag", owner of dtw:ag:lamp */
} fixture;

static const char *TD = "{\"id\":\"lamp\",\"title\":\"Lamp\","
                        "\"properties\":{\"on\":{\"type\":\"boolean\"}},"
                        "\"actions\":{\"blink\":{}},"
                        "\"events\":{\"alarm\":{}}}";

static tw_loop_conn *client(fixture *f, const char *id, tw_role role)
{
    tw_loop_conn *c = tw_loop_connect(f->loop, "test");
    assert_non_null(c);
    assert_int_equal(tw_loop_identify(c, id, role), 0);
    return c;
}

static void say(tw_loop_conn *c, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tw_loop_inject_json(c, buf);
}

static tw_msg *next(tw_loop_conn *c)
{
    tw_msg *m = tw_loop_next(c, 5000);
    assert_non_null(m);
    return m;
}

static int error_status(tw_msg *m)
{
    json_t *e = tw_msg_get(m, "error");
    return e ? (int)json_integer_value(json_object_get(e, "status")) : 0;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tw_test_tmpdir(f->dir, "roles");
    tw_config_defaults(&f->cfg);
    snprintf(f->cfg.data_dir, sizeof f->cfg.data_dir, "%s", f->dir);
    f->cfg.store_sync_normal = true;
    char err[256];
    assert_int_equal(tw_runtime_new(&f->cfg, &f->rt, err, sizeof err), 0);
    tw_authn_opts ao = {0};
    ao.pw_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    ao.pw_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    assert_int_equal(tw_authn_open(tw_runtime_store(f->rt), f->dir, &ao, &f->an, &f->admin_pw), 0);
    assert_int_equal(tw_authz_open(tw_runtime_store(f->rt), &f->az), 0);
    tw_runtime_set_authn(f->rt, f->an, f->az);
    f->twin = tw_twin_mem_new();
    tw_runtime_set_twin(f->rt, tw_twin_mem_ops(), f->twin);
    assert_int_equal(tw_loop_new(f->rt, &f->loop), 0);
    assert_int_equal(tw_authn_register_service(f->an, f->rt), 0);
    assert_int_equal(tw_runtime_start(f->rt, err, sizeof err), 0);

    f->ag = client(f, "ag", TW_ROLE_AGENT);
    say(f->ag, "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":%s}", TD);
    tw_msg *r = next(f->ag);
    assert_int_equal(error_status(r), 0);
    tw_msg_unref(r);
    /* a value to read */
    say(f->ag, "{\"type\":\"notification\",\"operation\":\"observeproperty\","
               "\"thingID\":\"lamp\",\"name\":\"on\",\"value\":true}");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tw_loop_close(f->ag);
    tw_runtime_stop(f->rt);
    tw_authz_close(f->az);
    tw_authn_close(f->an);
    tw_runtime_free(f->rt);
    tw_twin_mem_free(f->twin);
    tw_config_free(&f->cfg);
    tw_test_rmdir(f->dir);
    free(f->admin_pw);
    free(f);
    return 0;
}

/*
 * Sends one request (correlationID "req") followed by a ping and returns the
 * error status answered to the request (0: no error) once the ping's answer
 * shows the router is done with it.
 */
static int request_status(tw_loop_conn *c, const char *json)
{
    static int serial;
    char ping[128];
    snprintf(ping, sizeof ping, "ping-%d", ++serial);
    tw_loop_inject_json(c, json);
    say(c, "{\"type\":\"request\",\"operation\":\"ping\",\"correlationID\":\"%s\"}", ping);
    int status = 0;
    for (;;) {
        tw_msg *m = next(c);
        const char *corr = tw_msg_correlation(m);
        bool done = tw_msg_get_op(m) == TW_OP_PING && corr && strcmp(corr, ping) == 0;
        if (corr && strcmp(corr, "req") == 0 && error_status(m) && !status)
            status = error_status(m);
        tw_msg_unref(m);
        if (done) return status;
    }
}

/* DESIGN.md section 7, written out. */
enum {
    V = 1 << TW_ROLE_VIEWER,
    O = 1 << TW_ROLE_OPERATOR,
    M = 1 << TW_ROLE_MANAGER,
    A = 1 << TW_ROLE_ADMIN,
    G = 1 << TW_ROLE_AGENT,
    S = 1 << TW_ROLE_SERVICE,
    ALL = V | O | M | A | G | S
};

static const struct {
    const char *op, *thing, *name, *input;
    unsigned allowed; /* roles */
} table[] = {
    {"ping", NULL, NULL, NULL, ALL},
    {"refresh", NULL, NULL, "{}", ALL},
    {"readproperty", "dtw:ag:lamp", "on", NULL, ALL},
    {"readallproperties", "dtw:ag:lamp", NULL, NULL, ALL},
    {"readmultipleproperties", "dtw:ag:lamp", NULL, "[\"on\"]", ALL},
    {"observeproperty", "dtw:ag:lamp", "on", NULL, ALL},
    {"unobserveproperty", "dtw:ag:lamp", "on", NULL, ALL},
    {"observeallproperties", "dtw:ag:lamp", NULL, NULL, ALL},
    {"unobserveallproperties", "dtw:ag:lamp", NULL, NULL, ALL},
    {"subscribeevent", "dtw:ag:lamp", "alarm", NULL, ALL},
    {"unsubscribeevent", "dtw:ag:lamp", "alarm", NULL, ALL},
    {"subscribeallevents", "dtw:ag:lamp", NULL, NULL, ALL},
    {"unsubscribeallevents", "dtw:ag:lamp", NULL, NULL, ALL},
    {"readevent", "dtw:ag:lamp", "alarm", NULL, ALL},
    {"readallevents", "dtw:ag:lamp", NULL, NULL, ALL},
    {"invokeaction", "dtw:ag:lamp", "blink", "1", O | M | A | S},
    {"queryaction", "dtw:ag:lamp", "blink", "{\"actionID\":\"a-none\"}", O | M | A | S},
    {"queryallactions", "dtw:ag:lamp", NULL, NULL, O | M | A | S},
    {"cancelaction", "dtw:ag:lamp", "blink", "{\"actionID\":\"a-none\"}", O | M | A | S},
    {"writeproperty", "dtw:ag:lamp", "on", "true", M | A},
    /* agents and services speak their own ids here: their own Things */
    {"updatething", NULL, NULL, "{\"id\":\"other\",\"title\":\"Other\"}", A | G | S},
    {"deletething", "gone", NULL, NULL, A | G | S},
    /* the admin service: the table lets operators reach it, it wants admins */
    {"invokeaction", "dtw:twind:authn", "listClients", NULL, A},
};

static const struct {
    const char *id;
    tw_role role;
} roles[] = {
    {"v1", TW_ROLE_VIEWER}, {"o1", TW_ROLE_OPERATOR}, {"m1", TW_ROLE_MANAGER},
    {"a1", TW_ROLE_ADMIN},  {"ag2", TW_ROLE_AGENT},   {"svc", TW_ROLE_SERVICE},
};

static void test_role_table_through_router(void **state)
{
    fixture *f = *state;
    int checked = 0;
    for (size_t r = 0; r < sizeof roles / sizeof roles[0]; r++) {
        tw_loop_conn *c = client(f, roles[r].id, roles[r].role);
        for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
            char buf[1024];
            int n = snprintf(buf, sizeof buf,
                             "{\"type\":\"request\",\"operation\":\"%s\",\"correlationID\":\"req\"",
                             table[i].op);
            if (table[i].thing)
                n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"thingID\":\"%s\"",
                              table[i].thing);
            if (table[i].name)
                n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"name\":\"%s\"", table[i].name);
            if (table[i].input)
                n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"input\":%s", table[i].input);
            snprintf(buf + n, sizeof buf - (size_t)n, "}");
            int st = request_status(c, buf);
            bool allowed = (table[i].allowed >> roles[r].role) & 1;
            if (allowed ? st == 403 || st == 401 : st != 403)
                fail_msg("%s %s %s: expected %s, got status %d", tw_role_name(roles[r].role),
                         table[i].op, table[i].thing ? table[i].thing : "",
                         allowed ? "allowed" : "403", st);
            checked++;
        }
        tw_loop_close(c);
    }
    assert_int_equal(checked,
                     (int)(sizeof roles / sizeof roles[0] * sizeof table / sizeof table[0]));
}

static uint64_t forbidden_count(fixture *f)
{
    tw_router_stats st;
    tw_router_get_stats(f->rt, &st);
    return st.rejected_by_status[2]; /* 403 */
}

static void test_notifications_only_from_owner(void **state)
{
    fixture *f = *state;
    tw_loop_conn *sub = client(f, "watcher", TW_ROLE_VIEWER);
    assert_int_equal(request_status(sub, "{\"type\":\"request\",\"operation\":\"subscribeevent\","
                                         "\"thingID\":\"dtw:ag:lamp\",\"name\":\"alarm\","
                                         "\"correlationID\":\"req\"}"),
                     0);
    /* consumers of every kind are refused, and nothing reaches the subscriber */
    const tw_role consumers[] = {TW_ROLE_VIEWER, TW_ROLE_OPERATOR, TW_ROLE_MANAGER, TW_ROLE_ADMIN};
    for (size_t i = 0; i < 4; i++) {
        tw_loop_conn *c = client(f, "forger", consumers[i]);
        uint64_t before = forbidden_count(f);
        say(c, "{\"type\":\"notification\",\"operation\":\"subscribeevent\","
               "\"thingID\":\"dtw:ag:lamp\",\"name\":\"alarm\",\"value\":\"fake\"}");
        assert_int_equal(request_status(c, "{\"type\":\"request\",\"operation\":\"ping\"}"), 0);
        assert_int_equal(forbidden_count(f), before + 1);
        assert_null(tw_loop_next(sub, 50));
        tw_loop_close(c);
    }
    /* the owner's event gets through */
    say(f->ag, "{\"type\":\"notification\",\"operation\":\"subscribeevent\",\"thingID\":\"lamp\","
               "\"name\":\"alarm\",\"value\":\"real\"}");
    tw_msg *m = next(sub);
    assert_string_equal(json_string_value(tw_msg_get(m, "value")), "real");
    assert_string_equal(tw_msg_sender(m), "ag");
    tw_msg_unref(m);
    tw_loop_close(sub);
}

static json_t *invoke_authn(tw_loop_conn *c, const char *action, const char *input, int *status)
{
    say(c,
        "{\"type\":\"request\",\"operation\":\"invokeaction\",\"thingID\":\"dtw:twind:authn\","
        "\"name\":\"%s\",\"correlationID\":\"svc\"%s%s}",
        action, input ? ",\"input\":" : "", input ? input : "");
    for (;;) {
        tw_msg *m = next(c);
        const char *corr = tw_msg_correlation(m);
        if (corr && strcmp(corr, "svc") == 0 && tw_msg_get_type(m) == TW_TYPE_RESPONSE) {
            *status = error_status(m);
            json_t *out = json_incref(tw_msg_get(m, "output"));
            tw_msg_unref(m);
            return out;
        }
        tw_msg_unref(m);
    }
}

static void test_acl_through_service(void **state)
{
    fixture *f = *state;
    tw_loop_conn *admin = client(f, "a1", TW_ROLE_ADMIN);
    tw_loop_conn *viewer = client(f, "v1", TW_ROLE_VIEWER);
    tw_loop_conn *oper = client(f, "o1", TW_ROLE_OPERATOR);
    const char *read = "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":"
                       "\"dtw:ag:lamp\",\"name\":\"on\",\"correlationID\":\"req\"}";
    const char *invoke = "{\"type\":\"request\",\"operation\":\"invokeaction\",\"thingID\":"
                         "\"dtw:ag:lamp\",\"name\":\"blink\",\"correlationID\":\"req\"}";
    assert_int_equal(request_status(viewer, read), 0);

    /* an operator cannot set lists; an admin can, effective at once */
    int st;
    json_t *out = invoke_authn(oper, "setThingACL",
                               "{\"thingID\":\"dtw:ag:lamp\",\"allow\":[\"operator\"]}", &st);
    assert_int_equal(st, 403);
    json_decref(out);
    out = invoke_authn(admin, "setThingACL", "{\"thingID\":\"dtw:ag:lamp\",\"deny\":[\"viewer\"]}",
                       &st);
    assert_int_equal(st, 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(out, "deny"), 0)),
                        "viewer");
    json_decref(out);
    assert_int_equal(request_status(viewer, read), 403); /* same connection, next message */
    assert_int_equal(request_status(oper, read), 0);

    /* allow grants viewers the lamp's actions; deny cleared */
    out = invoke_authn(admin, "setThingACL",
                       "{\"thingID\":\"dtw:ag:lamp\",\"allow\":[\"viewer\",\"operator\"]}", &st);
    assert_int_equal(st, 0);
    json_decref(out);
    assert_int_equal(request_status(viewer, invoke), 0);
    out = invoke_authn(admin, "getThingACL", "{\"thingID\":\"dtw:ag:lamp\"}", &st);
    assert_int_equal(st, 0);
    assert_int_equal(json_array_size(json_object_get(out, "allow")), 2);
    assert_int_equal(json_array_size(json_object_get(out, "deny")), 0);
    json_decref(out);

    /* bad input is a 400 naming the member, and changes nothing */
    out = invoke_authn(admin, "setThingACL", "{\"thingID\":\"dtw:ag:lamp\",\"deny\":[\"king\"]}",
                       &st);
    assert_int_equal(st, 400);
    json_decref(out);
    assert_int_equal(request_status(viewer, invoke), 0);
    /* the service's own Thing cannot be locked */
    out = invoke_authn(admin, "setThingACL",
                       "{\"thingID\":\"dtw:twind:authn\",\"deny\":[\"admin\"]}", &st);
    assert_int_equal(st, 400);
    json_decref(out);
    out = invoke_authn(admin, "listClients", NULL, &st);
    assert_int_equal(st, 0);
    json_decref(out);
    out = invoke_authn(admin, "nosuchaction", "{}", &st);
    assert_int_equal(st, 404);
    json_decref(out);

    /* clearing restores the table */
    out = invoke_authn(admin, "setThingACL", "{\"thingID\":\"dtw:ag:lamp\"}", &st);
    assert_int_equal(st, 0);
    json_decref(out);
    assert_int_equal(request_status(viewer, invoke), 403);
    assert_int_equal(request_status(viewer, read), 0);
    tw_loop_close(admin);
    tw_loop_close(viewer);
    tw_loop_close(oper);
}

/* Logs in over the router with a password (or a token); returns the token. */
static char *router_login(tw_loop_conn *c, const char *id, const char *pw, const char *token,
                          int *status)
{
    if (token)
        say(c,
            "{\"type\":\"request\",\"operation\":\"login\",\"correlationID\":\"l\","
            "\"input\":{\"token\":\"%s\"}}",
            token);
    else
        say(c,
            "{\"type\":\"request\",\"operation\":\"login\",\"correlationID\":\"l\","
            "\"input\":{\"login\":\"%s\",\"password\":\"%s\"}}",
            id, pw);
    tw_msg *m = next(c);
    *status = error_status(m);
    const char *t = json_string_value(json_object_get(tw_msg_get(m, "output"), "token"));
    char *copy = t ? strdup(t) : NULL;
    tw_msg_unref(m);
    return copy;
}

static void test_logout_cuts_the_session(void **state)
{
    fixture *f = *state;
    assert_int_equal(
        tw_authn_add_client(f->an, "dave", TW_KIND_CONSUMER, TW_ROLE_OPERATOR, "Dave", "davepw"),
        0);
    int st;
    tw_msg *m;
    tw_loop_conn *c1 = tw_loop_connect(f->loop, "10.1.1.1");
    tw_loop_conn *c2 = tw_loop_connect(f->loop, "10.1.1.2");
    tw_loop_conn *c3 = tw_loop_connect(f->loop, "10.1.1.3");
    char *tok = router_login(c1, "dave", "davepw", NULL, &st);
    assert_int_equal(st, 0);
    assert_non_null(tok);
    free(router_login(c2, NULL, NULL, tok, &st)); /* same session, another connection */
    assert_int_equal(st, 0);
    char *other = router_login(c3, "dave", "davepw", NULL, &st); /* a second session */
    assert_int_equal(st, 0);
    const char *read = "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":"
                       "\"dtw:ag:lamp\",\"name\":\"on\",\"correlationID\":\"req\"}";
    assert_int_equal(request_status(c2, read), 0);

    /* refresh over the router: a new token for the same session */
    say(c2,
        "{\"type\":\"request\",\"operation\":\"refresh\",\"correlationID\":\"rf\","
        "\"input\":{\"token\":\"%s\"}}",
        tok);
    m = next(c2);
    assert_int_equal(error_status(m), 0);
    const char *nt = json_string_value(json_object_get(tw_msg_get(m, "output"), "token"));
    assert_non_null(nt);
    char *refreshed = strdup(nt);
    tw_msg_unref(m);
    assert_string_not_equal(refreshed, tok);
    tw_identity a, b;
    assert_int_equal(tw_authn_verify(f->an, tok, &a), 0);
    assert_int_equal(tw_authn_verify(f->an, refreshed, &b), 0);
    assert_string_equal(a.session_id, b.session_id);

    say(c1, "{\"type\":\"request\",\"operation\":\"logout\",\"correlationID\":\"lo\"}");
    m = next(c1);
    assert_int_equal(error_status(m), 0);
    tw_msg_unref(m);
    assert_true(tw_loop_was_closed(c1));
    assert_true(tw_loop_was_closed(c2));
    assert_false(tw_loop_was_closed(c3));
    assert_int_equal(request_status(c3, read), 0);

    /* the token is dead for every binding: a new connection cannot use it */
    tw_loop_conn *c4 = tw_loop_connect(f->loop, "10.1.1.4");
    free(router_login(c4, NULL, NULL, tok, &st));
    assert_int_equal(st, 401);
    tw_identity id;
    assert_int_equal(tw_authn_verify(f->an, tok, &id), TW_EAUTH);
    assert_int_equal(tw_authn_verify(f->an, refreshed, &id), TW_EAUTH); /* same session */
    assert_int_equal(tw_authn_verify(f->an, other, &id), 0);
    free(refreshed);

    /* an admin removing dave closes the remaining session's connection */
    tw_loop_conn *admin = client(f, "a1", TW_ROLE_ADMIN);
    json_t *out = invoke_authn(admin, "removeClient", "{\"clientID\":\"dave\"}", &st);
    assert_int_equal(st, 0);
    json_decref(out);
    assert_true(tw_loop_was_closed(c3));
    assert_int_equal(tw_authn_verify(f->an, other, &id), TW_EAUTH);

    free(tok);
    free(other);
    tw_loop_close(c1);
    tw_loop_close(c2);
    tw_loop_close(c3);
    tw_loop_close(c4);
    tw_loop_close(admin);
}

static void test_admin_service_clients(void **state)
{
    fixture *f = *state;
    int st;
    /* the first admin logs in over the router and manages clients */
    tw_loop_conn *c = tw_loop_connect(f->loop, "10.2.2.2");
    char *tok = router_login(c, "admin", f->admin_pw, NULL, &st);
    assert_int_equal(st, 0);
    free(tok);
    json_t *out = invoke_authn(
        c, "addClient", "{\"clientID\":\"sensor9\",\"role\":\"agent\",\"kind\":\"agent\"}", &st);
    assert_int_equal(st, 0);
    json_decref(out);
    out = invoke_authn(c, "addClient", "{\"clientID\":\"sensor9\",\"role\":\"agent\"}", &st);
    assert_int_equal(st, 409);
    json_decref(out);
    out = invoke_authn(c, "addClient", "{\"clientID\":\"x y\",\"role\":\"agent\"}", &st);
    assert_int_equal(st, 400);
    json_decref(out);
    out = invoke_authn(c, "addClient", "{\"clientID\":\"z\",\"role\":\"pope\"}", &st);
    assert_int_equal(st, 400);
    json_decref(out);
    out = invoke_authn(c, "issueToken", "{\"clientID\":\"sensor9\"}", &st);
    assert_int_equal(st, 0);
    const char *agent_token = json_string_value(json_object_get(out, "token"));
    assert_non_null(agent_token);
    tw_identity id;
    assert_int_equal(tw_authn_verify(f->an, agent_token, &id), 0);
    assert_int_equal(id.role, TW_ROLE_AGENT);
    /* the agent connects with its token */
    tw_loop_conn *agent = tw_loop_connect(f->loop, "10.2.2.3");
    free(router_login(agent, NULL, NULL, agent_token, &st));
    assert_int_equal(st, 0);
    json_decref(out);
    out = invoke_authn(c, "listClients", NULL, &st);
    assert_int_equal(st, 0);
    assert_int_equal(json_array_size(out), 2);
    json_decref(out);
    out = invoke_authn(c, "setRole", "{\"clientID\":\"admin\",\"role\":\"viewer\"}", &st);
    assert_int_equal(st, 409); /* the last admin */
    json_decref(out);
    out = invoke_authn(c, "setPassword", "{\"clientID\":\"ghost\",\"password\":\"pw\"}", &st);
    assert_int_equal(st, 404);
    json_decref(out);
    tw_loop_close(agent);
    tw_loop_close(c);
}

static void test_brute_force_429(void **state)
{
    fixture *f = *state;
    int st;
    tw_loop_conn *c = tw_loop_connect(f->loop, "203.0.113.9");
    for (int i = 0; i < 10; i++) {
        free(router_login(c, "admin", "wrong", NULL, &st));
        assert_int_equal(st, 401);
    }
    free(router_login(c, "admin", "wrong", NULL, &st));
    assert_int_equal(st, 429);
    /* the right password does not help within the minute */
    char *tok = router_login(c, "admin", f->admin_pw, NULL, &st);
    assert_int_equal(st, 429);
    assert_null(tok);
    tw_loop_close(c);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_role_table_through_router), T(test_notifications_only_from_owner),
        T(test_acl_through_service),       T(test_logout_cuts_the_session),
        T(test_admin_service_clients),     T(test_brute_force_429),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
