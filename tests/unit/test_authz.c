/*
 * test_authz.c - the role table (every role x every operation x message
 * type, against an independent expectation), ownership of Things for agents
 * and services, and per-Thing allow/deny lists: deny wins, allow limits and
 * grants, clearing, persistence across a restart, bad input.
 */
#include "runtime/authz.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The expectation, written out as DESIGN.md section 7 says it. */
static bool expected(tw_role r, tw_op op)
{
    switch (op) {
    case TW_OP_LOGIN:
    case TW_OP_REFRESH:
    case TW_OP_LOGOUT:
    case TW_OP_PING:
        return true;
    case TW_OP_READPROPERTY:
    case TW_OP_READALLPROPERTIES:
    case TW_OP_READMULTIPLEPROPERTIES:
    case TW_OP_OBSERVEPROPERTY:
    case TW_OP_UNOBSERVEPROPERTY:
    case TW_OP_OBSERVEALLPROPERTIES:
    case TW_OP_UNOBSERVEALLPROPERTIES:
    case TW_OP_SUBSCRIBEEVENT:
    case TW_OP_UNSUBSCRIBEEVENT:
    case TW_OP_SUBSCRIBEALLEVENTS:
    case TW_OP_UNSUBSCRIBEALLEVENTS:
    case TW_OP_READEVENT:
    case TW_OP_READALLEVENTS:
        return r != TW_ROLE_NONE;
    case TW_OP_INVOKEACTION:
    case TW_OP_CANCELACTION:
    case TW_OP_QUERYACTION:
    case TW_OP_QUERYALLACTIONS:
        return r == TW_ROLE_OPERATOR || r == TW_ROLE_MANAGER || r == TW_ROLE_ADMIN ||
               r == TW_ROLE_SERVICE;
    case TW_OP_WRITEPROPERTY:
        return r == TW_ROLE_MANAGER || r == TW_ROLE_ADMIN;
    case TW_OP_UPDATETHING:
    case TW_OP_DELETETHING:
        return r == TW_ROLE_ADMIN || r == TW_ROLE_AGENT || r == TW_ROLE_SERVICE;
    default:
        return false;
    }
}

static void test_role_table(void **state)
{
    int checked = 0;
    for (int r = 0; r < TW_ROLE__COUNT; r++) {
        for (int op = 0; op < TW_OP__COUNT; op++) {
            bool want = op != TW_OP_NONE && expected((tw_role)r, (tw_op)op);
            bool got = tw_authz_role_allows((tw_role)r, TW_TYPE_REQUEST, (tw_op)op);
            if (want != got)
                fail_msg("role %s op %s: expected %d, got %d", tw_role_name((tw_role)r),
                         tw_op_name((tw_op)op), want, got);
            bool pub = r == TW_ROLE_AGENT || r == TW_ROLE_SERVICE;
            if (op != TW_OP_NONE) {
                assert_int_equal(tw_authz_role_allows((tw_role)r, TW_TYPE_RESPONSE, (tw_op)op),
                                 pub);
                assert_int_equal(tw_authz_role_allows((tw_role)r, TW_TYPE_NOTIFICATION, (tw_op)op),
                                 pub);
            }
            assert_false(tw_authz_role_allows((tw_role)r, TW_TYPE_NONE, (tw_op)op));
            checked++;
        }
    }
    assert_int_equal(checked, TW_ROLE__COUNT * TW_OP__COUNT);
    assert_false(tw_authz_role_allows(TW_ROLE__COUNT, TW_TYPE_REQUEST, TW_OP_PING));
}

static char *dir;
static tw_store *store;
static tw_authz *az;

static int setup(void **state)
{
    const char *base = getenv("TW_TEST_TMP");
    char tmpl[512], path[600];
    if (base) mkdir(base, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/authz-XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(tmpl));
    dir = strdup(tmpl);
    snprintf(path, sizeof path, "%s/twind.db", dir);
    assert_int_equal(tw_store_open(path, NULL, &store), 0);
    assert_int_equal(tw_authz_open(store, &az), 0);
    return 0;
}

static int teardown(void **state)
{
    tw_authz_close(az);
    tw_store_close(store);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
    return 0;
}

static tw_identity ident(const char *client, tw_role role)
{
    tw_identity id = {0};
    strcpy(id.client_id, client);
    strcpy(id.session_id, "s1");
    id.role = role;
    return id;
}

static int check(tw_role role, const char *client, tw_msg_type type, tw_op op, const char *thing,
                 const char *owner)
{
    tw_identity id = ident(client, role);
    tw_msg *m = tw_msg_new(type, op, thing, "x");
    assert_non_null(m);
    int rc = tw_authz_check(az, &id, m, owner);
    tw_msg_unref(m);
    return rc;
}

static void test_ownership(void **state)
{
    const char *lamp = "dtw:agent1:lamp";
    /* notifications and responses only from the owner */
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent1", TW_TYPE_NOTIFICATION, TW_OP_SUBSCRIBEEVENT, lamp, "agent1"),
        0);
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent2", TW_TYPE_NOTIFICATION, TW_OP_SUBSCRIBEEVENT, lamp, "agent1"),
        TW_EPERM);
    assert_int_equal(
        check(TW_ROLE_SERVICE, "agent1", TW_TYPE_RESPONSE, TW_OP_INVOKEACTION, lamp, "agent1"), 0);
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent2", TW_TYPE_RESPONSE, TW_OP_INVOKEACTION, lamp, "agent1"),
        TW_EPERM);
    /* an admin cannot forge an agent's event */
    assert_int_equal(
        check(TW_ROLE_ADMIN, "admin", TW_TYPE_NOTIFICATION, TW_OP_SUBSCRIBEEVENT, lamp, "agent1"),
        TW_EPERM);
    /* not in the directory: a twin id must name the sender, an agent-local id is its own */
    assert_int_equal(check(TW_ROLE_AGENT, "agent2", TW_TYPE_NOTIFICATION, TW_OP_OBSERVEPROPERTY,
                           "dtw:agent1:new", NULL),
                     TW_EPERM);
    assert_int_equal(check(TW_ROLE_AGENT, "agent1", TW_TYPE_NOTIFICATION, TW_OP_OBSERVEPROPERTY,
                           "dtw:agent1:new", NULL),
                     0);
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent2", TW_TYPE_NOTIFICATION, TW_OP_OBSERVEPROPERTY, "lamp", NULL),
        0);

    /* thing management: agents their own, admins any, managers none */
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent1", TW_TYPE_REQUEST, TW_OP_UPDATETHING, lamp, "agent1"), 0);
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent2", TW_TYPE_REQUEST, TW_OP_UPDATETHING, lamp, "agent1"),
        TW_EPERM);
    assert_int_equal(
        check(TW_ROLE_SERVICE, "svc", TW_TYPE_REQUEST, TW_OP_DELETETHING, lamp, "agent1"),
        TW_EPERM);
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent2", TW_TYPE_REQUEST, TW_OP_UPDATETHING, "lamp2", NULL), 0);
    assert_int_equal(
        check(TW_ROLE_ADMIN, "admin", TW_TYPE_REQUEST, TW_OP_DELETETHING, lamp, "agent1"), 0);
    assert_int_equal(
        check(TW_ROLE_MANAGER, "boss", TW_TYPE_REQUEST, TW_OP_DELETETHING, lamp, "agent1"),
        TW_EPERM);

    /* services invoke other Things' actions, agents do not */
    assert_int_equal(
        check(TW_ROLE_SERVICE, "svc", TW_TYPE_REQUEST, TW_OP_INVOKEACTION, lamp, "agent1"), 0);
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent2", TW_TYPE_REQUEST, TW_OP_INVOKEACTION, lamp, "agent1"),
        TW_EPERM);

    /* no identity: only the runtime operations everyone may send */
    tw_msg *m = tw_msg_new(TW_TYPE_REQUEST, TW_OP_PING, NULL, NULL);
    assert_int_equal(tw_authz_check(az, NULL, m, NULL), 0);
    tw_msg_unref(m);
    m = tw_msg_new(TW_TYPE_REQUEST, TW_OP_READPROPERTY, lamp, "on");
    assert_int_equal(tw_authz_check(az, NULL, m, "agent1"), TW_EPERM);
    tw_msg_unref(m);
}

static json_t *roles(const char *a, const char *b)
{
    json_t *arr = json_array();
    if (a) json_array_append_new(arr, json_string(a));
    if (b) json_array_append_new(arr, json_string(b));
    return arr;
}

static int set_acl(const char *thing, json_t *allow, json_t *deny)
{
    int rc = tw_authz_set_thing_acl(az, thing, allow, deny);
    json_decref(allow);
    json_decref(deny);
    return rc;
}

static void test_thing_lists(void **state)
{
    const char *lamp = "dtw:agent1:lamp", *door = "dtw:agent1:door";
#define REQ(role, op, thing) check(role, "user", TW_TYPE_REQUEST, op, thing, "agent1")

    /* deny viewers on the lamp: the door is untouched */
    assert_int_equal(set_acl(lamp, NULL, roles("viewer", NULL)), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_READPROPERTY, lamp), TW_EPERM);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_READPROPERTY, door), 0);
    assert_int_equal(REQ(TW_ROLE_OPERATOR, TW_OP_READPROPERTY, lamp), 0);
    /* runtime operations never depend on a Thing's lists */
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_PING, lamp), 0);

    /* allow only managers on the door: operators and admins are out */
    assert_int_equal(set_acl(door, roles("manager", NULL), NULL), 0);
    assert_int_equal(REQ(TW_ROLE_OPERATOR, TW_OP_INVOKEACTION, door), TW_EPERM);
    assert_int_equal(REQ(TW_ROLE_ADMIN, TW_OP_READPROPERTY, door), TW_EPERM);
    assert_int_equal(REQ(TW_ROLE_MANAGER, TW_OP_WRITEPROPERTY, door), 0);
    /* the owner agent still publishes for its Thing */
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent1", TW_TYPE_NOTIFICATION, TW_OP_SUBSCRIBEEVENT, door, "agent1"),
        0);
    assert_int_equal(
        check(TW_ROLE_AGENT, "agent1", TW_TYPE_REQUEST, TW_OP_UPDATETHING, door, "agent1"), 0);

    /* allow grants: viewers may operate the lamp, but not manage it */
    assert_int_equal(set_acl(lamp, roles("viewer", "operator"), NULL), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_INVOKEACTION, lamp), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_WRITEPROPERTY, lamp), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_DELETETHING, lamp), TW_EPERM);
    assert_int_equal(REQ(TW_ROLE_MANAGER, TW_OP_READPROPERTY, lamp), TW_EPERM);

    /* deny wins over allow */
    assert_int_equal(set_acl(lamp, roles("viewer", "operator"), roles("viewer", NULL)), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_READPROPERTY, lamp), TW_EPERM);
    assert_int_equal(REQ(TW_ROLE_OPERATOR, TW_OP_INVOKEACTION, lamp), 0);

    json_t *got = NULL;
    assert_int_equal(tw_authz_get_thing_acl(az, lamp, &got), 0);
    json_t *want = json_pack("{s:s, s:[s,s], s:[s]}", "thingID", lamp, "allow", "viewer",
                             "operator", "deny", "viewer");
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);

    /* the lists survive a restart */
    tw_authz_close(az);
    az = NULL;
    assert_int_equal(tw_authz_open(store, &az), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_READPROPERTY, lamp), TW_EPERM);
    assert_int_equal(REQ(TW_ROLE_OPERATOR, TW_OP_INVOKEACTION, door), TW_EPERM);

    /* clearing restores the table, also after a restart */
    assert_int_equal(set_acl(lamp, NULL, NULL), 0);
    assert_int_equal(set_acl(door, json_array(), json_array()), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_READPROPERTY, lamp), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_INVOKEACTION, lamp), TW_EPERM);
    assert_int_equal(REQ(TW_ROLE_OPERATOR, TW_OP_INVOKEACTION, door), 0);
    tw_authz_close(az);
    az = NULL;
    assert_int_equal(tw_authz_open(store, &az), 0);
    assert_int_equal(REQ(TW_ROLE_VIEWER, TW_OP_READPROPERTY, lamp), 0);
    assert_int_equal(tw_authz_get_thing_acl(az, lamp, &got), 0);
    assert_int_equal(json_array_size(json_object_get(got, "allow")), 0);
    json_decref(got);
#undef REQ
}

static void test_bad_lists(void **state)
{
    assert_int_equal(set_acl("dtw:a:b", roles("emperor", NULL), NULL), TW_EINVAL);
    assert_int_equal(set_acl("dtw:a:b", NULL, roles("none", NULL)), TW_EINVAL);
    assert_int_equal(set_acl("dtw:a:b", json_string("viewer"), NULL), TW_EINVAL);
    json_t *nums = json_pack("[i]", 3);
    assert_int_equal(set_acl("dtw:a:b", nums, NULL), TW_EINVAL);
    assert_int_equal(set_acl("", roles("viewer", NULL), NULL), TW_EINVAL);
    char big[TW_THING_ID_MAX + 10];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    assert_int_equal(set_acl(big, roles("viewer", NULL), NULL), TW_EINVAL);
    /* nothing was stored by a rejected call */
    json_t *got = NULL;
    assert_int_equal(tw_authz_get_thing_acl(az, "dtw:a:b", &got), 0);
    assert_int_equal(json_array_size(json_object_get(got, "allow")), 0);
    assert_int_equal(json_array_size(json_object_get(got, "deny")), 0);
    json_decref(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_table),
        cmocka_unit_test_setup_teardown(test_ownership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thing_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_lists, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
