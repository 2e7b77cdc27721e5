/*
 * test_twin_twin.c - the twin inside a real runtime: twin TD derivation
 * (ids, security, the agent's forms replaced by every binding's forms),
 * updatething/deletething through the router, values from agent
 * notifications answering reads, the lookup the router uses, the
 * dtw:twind:directory service, and everything back after a restart.
 */
#include "bindings/loopback/loopback.h"
#include "runtime/router.h"
#include "runtime/runtime.h"
#include "tw_test.h"
#include "twin/td_validate.h"
#include "twin/twin.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An agent's TD, with its own forms and base that must not leak. */
static const char TD[] =
    "{\"@context\":\"https://www.w3.org/2022/wot/td/v1.1\",\"id\":\"lamp\",\"title\":\"Lamp\","
    "\"@type\":\"Light\",\"base\":\"http://192.168.1.7/\","
    "\"securityDefinitions\":{\"nosec_sc\":{\"scheme\":\"nosec\"}},\"security\":\"nosec_sc\","
    "\"forms\":[{\"href\":\"http://192.168.1.7/all\",\"op\":\"readallproperties\"}],"
    "\"properties\":{\"on\":{\"type\":\"boolean\","
    "\"forms\":[{\"href\":\"http://192.168.1.7/on\"}]},"
    "\"watts\":{\"type\":\"number\",\"readOnly\":true}},"
    "\"actions\":{\"blink\":{\"twind:maxTTL\":60},\"status\":{\"safe\":true},"
    "\"now\":{\"twind:queueable\":false},"
    "\"big\":{\"title\":\"Big\",\"description\":\"many members\",\"@type\":\"X\",\"safe\":true,"
    "\"idempotent\":true,\"synchronous\":false,\"input\":{\"type\":\"string\"},"
    "\"output\":{\"type\":\"string\"},\"twind:maxTTL\":5,\"twind:queueable\":false}},"
    "\"events\":{\"alarm\":{\"data\":{\"type\":\"string\"}}}}";

/* A binding that only adds forms, like the HTTP and nng bindings do. */
static int fb_start(tw_binding *b)
{
    return 0;
}
static void fb_stop(tw_binding *b) {}
static int fb_send(tw_binding *b, tw_conn *c, tw_msg *m)
{
    return 0;
}
static void fb_destroy(tw_binding *b) {}

static json_t *form(const char *id, const char *name, const char *op)
{
    char href[512];
    snprintf(href, sizeof href, "test://twind/%s/%s", id, name ? name : "");
    return json_pack("{s:s,s:s}", "href", href, "op", op);
}

static int fb_add_forms(tw_binding *b, json_t *td)
{
    const char *id = json_string_value(json_object_get(td, "id"));
    static const struct {
        const char *member, *op;
    } kinds[] = {
        {"properties", "readproperty"}, {"actions", "invokeaction"}, {"events", "subscribeevent"}};
    for (int k = 0; k < 3; k++) {
        const char *name;
        json_t *aff;
        json_object_foreach(json_object_get(td, kinds[k].member), name, aff)
        {
            json_t *forms = json_object_get(aff, "forms");
            if (!forms) json_object_set_new(aff, "forms", forms = json_array());
            json_array_append_new(forms, form(id, name, kinds[k].op));
        }
    }
    json_t *forms = json_object_get(td, "forms");
    if (!forms) json_object_set_new(td, "forms", forms = json_array());
    json_array_append_new(forms, form(id, NULL, "readallproperties"));
    return 0;
}

static const tw_binding_ops FORMS_BINDING = {
    .name = "testforms",
    .start = fb_start,
    .stop = fb_stop,
    .send = fb_send,
    .add_forms = fb_add_forms,
    .destroy = fb_destroy,
};

typedef struct fixture {
    char dir[512];
    tw_config cfg;
    tw_runtime *rt;
    tw_loop *loop;
    tw_twin *twin;
} fixture;

static void fx_open(fixture *f)
{
    tw_config_defaults(&f->cfg);
    snprintf(f->cfg.data_dir, sizeof f->cfg.data_dir, "%s", f->dir);
    f->cfg.store_sync_normal = true;
    char err[256];
    assert_int_equal(tw_runtime_new(&f->cfg, &f->rt, err, sizeof err), 0);
    assert_int_equal(tw_runtime_add_binding(f->rt, &FORMS_BINDING, NULL, NULL), 0);
    assert_int_equal(tw_loop_new(f->rt, &f->loop), 0);
    assert_int_equal(tw_twin_open(f->rt, &f->twin), 0);
    tw_runtime_set_twin(f->rt, tw_twin_ops_table(), f->twin);
    assert_int_equal(tw_runtime_start(f->rt, err, sizeof err), 0);
}

static void fx_close(fixture *f)
{
    tw_runtime_stop(f->rt);
    tw_twin_close(f->twin);
    tw_runtime_free(f->rt);
    tw_config_free(&f->cfg);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tw_test_tmpdir(f->dir, "twin");
    fx_open(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    fx_close(f);
    tw_test_rmdir(f->dir);
    free(f);
    return 0;
}

static tw_loop_conn *client(fixture *f, const char *id, tw_role role)
{
    tw_loop_conn *c = tw_loop_connect(f->loop, "test");
    assert_non_null(c);
    assert_int_equal(tw_loop_identify(c, id, role), 0);
    return c;
}

static void say(tw_loop_conn *c, const char *fmt, ...)
{
    char buf[8192];
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

static tw_loop_conn *agent_with_lamp(fixture *f)
{
    tw_loop_conn *ag = client(f, "ag", TW_ROLE_AGENT);
    say(ag, "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":%s}", TD);
    tw_msg *r = next(ag);
    assert_int_equal(error_status(r), 0);
    assert_string_equal(json_string_value(json_object_get(tw_msg_get(r, "output"), "thingID")),
                        "dtw:ag:lamp");
    tw_msg_unref(r);
    return ag;
}

/* Every href in td, as one string, to look for leaks. */
static void collect_hrefs(json_t *j, char *out, size_t n)
{
    const char *k;
    json_t *v;
    size_t i;
    if (json_is_object(j)) {
        json_object_foreach(j, k, v)
        {
            if (strcmp(k, "href") == 0 && json_is_string(v)) {
                strncat(out, json_string_value(v), n - strlen(out) - 1);
                strncat(out, " ", n - strlen(out) - 1);
            } else {
                collect_hrefs(v, out, n);
            }
        }
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v) collect_hrefs(v, out, n);
    }
}

static void test_derive(void **state)
{
    fixture *f = *state;
    json_t *td = json_loads(TD, 0, NULL), *twin = NULL;
    assert_int_equal(tw_twin_derive(f->rt, "ag", td, &twin), 0);
    assert_string_equal(json_string_value(json_object_get(twin, "id")), "dtw:ag:lamp");
    assert_string_equal(json_string_value(json_object_get(twin, "title")), "Lamp");
    assert_string_equal(json_string_value(json_object_get(twin, "@type")), "Light");
    assert_null(json_object_get(twin, "base"));
    assert_string_equal(json_string_value(json_object_get(twin, "security")), "bearer_sc");
    json_t *sc = json_object_get(json_object_get(twin, "securityDefinitions"), "bearer_sc");
    assert_string_equal(json_string_value(json_object_get(sc, "scheme")), "bearer");
    assert_string_equal(json_string_value(json_object_get(sc, "format")), "paseto");
    assert_null(json_object_get(json_object_get(twin, "securityDefinitions"), "nosec_sc"));
    char hrefs[4096] = "";
    collect_hrefs(twin, hrefs, sizeof hrefs);
    assert_null(strstr(hrefs, "192.168.1.7")); /* the agent's forms are gone */
    assert_non_null(strstr(hrefs, "test://twind/dtw:ag:lamp/on"));
    assert_non_null(strstr(hrefs, "test://twind/dtw:ag:lamp/watts"));
    assert_non_null(strstr(hrefs, "test://twind/dtw:ag:lamp/blink"));
    assert_non_null(strstr(hrefs, "test://twind/dtw:ag:lamp/alarm"));
    json_t *on_forms =
        json_object_get(json_object_get(json_object_get(twin, "properties"), "on"), "forms");
    assert_int_equal(json_array_size(on_forms), 1);
    assert_int_equal(json_array_size(json_object_get(twin, "forms")), 1);
    /* hints and schemas are kept */
    json_t *blink = json_object_get(json_object_get(twin, "actions"), "blink");
    assert_int_equal(json_integer_value(json_object_get(blink, "twind:maxTTL")), 60);
    /* the twin TD is a valid TD 1.1 */
    json_t *errors = NULL;
    if (tw_td_validate(twin, 0, &errors)) fail_msg("%s", json_dumps(errors, JSON_INDENT(1)));
    /* the agent's TD is untouched */
    assert_string_equal(json_string_value(json_object_get(td, "id")), "lamp");
    json_decref(twin);
    /* without a runtime: no forms, still a twin */
    assert_int_equal(tw_twin_derive(NULL, "ag", td, &twin), 0);
    assert_null(json_object_get(twin, "forms"));
    json_decref(twin);
    /* bad input */
    char longid[400];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    json_object_set_new(td, "id", json_string(longid));
    assert_int_equal(tw_twin_derive(f->rt, "ag", td, &twin), TW_EINVAL);
    json_object_del(td, "id");
    assert_int_equal(tw_twin_derive(f->rt, "ag", td, &twin), TW_EINVAL);
    assert_null(twin);
    json_decref(td);
}

static void test_updatething_and_lookup(void **state)
{
    fixture *f = *state;
    tw_loop_conn *ag = agent_with_lamp(f);
    tw_dir *d = tw_twin_dir(f->twin);
    tw_dir_info info;
    json_t *stored = NULL, *agent_td = NULL;
    assert_int_equal(tw_dir_get_info(d, "dtw:ag:lamp", &info, &stored, &agent_td), 0);
    assert_string_equal(info.agent_id, "ag");
    json_t *orig = json_loads(TD, 0, NULL);
    assert_true(json_equal(agent_td, orig)); /* the agent's TD is kept as sent */
    assert_string_equal(json_string_value(json_object_get(stored, "security")), "bearer_sc");
    json_decref(orig);
    json_decref(stored);
    json_decref(agent_td);

    const tw_twin_ops *ops = tw_twin_ops_table();
    tw_aff_info a;
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_ACTION, NULL, &a), 0);
    assert_string_equal(a.agent_id, "ag");
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_ACTION, "status", &a), 0);
    assert_true(a.safe);
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_ACTION, "blink", &a), 0);
    assert_false(a.safe);
    assert_true(a.queueable);
    assert_int_equal(a.max_ttl_ms, 60000);
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_ACTION, "now", &a), 0);
    assert_false(a.queueable);
    assert_false(a.safe);
    assert_int_equal(a.max_ttl_ms, 0);
    /* an affordance with many members is read the same */
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_ACTION, "big", &a), 0);
    assert_true(a.safe);
    assert_false(a.queueable);
    assert_false(a.read_only);
    assert_int_equal(a.max_ttl_ms, 5000);
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_PROPERTY, "on", &a), 0);
    assert_false(a.read_only);
    assert_false(a.safe);
    assert_true(a.queueable);
    assert_int_equal(a.max_ttl_ms, 0);
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_PROPERTY, "watts", &a), 0);
    assert_true(a.read_only);
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:lamp", TW_AFF_PROPERTY, "blink", &a),
                     TW_ENOTFOUND);
    assert_int_equal(ops->lookup(f->twin, "dtw:ag:none", TW_AFF_PROPERTY, NULL, &a), TW_ENOTFOUND);

    /* republishing the same TD (agents do on every connect) changes nothing */
    uint64_t etag = tw_dir_etag(d);
    say(ag, "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":%s}", TD);
    tw_msg *r = next(ag);
    assert_int_equal(error_status(r), 0);
    tw_msg_unref(r);
    assert_int_equal(tw_dir_etag(d), etag);
    json_t *changed = json_loads(TD, 0, NULL);
    json_object_set_new(changed, "title", json_string("Lamp 2"));
    char *twin_id = NULL;
    assert_int_equal(ops->update_thing(f->twin, "ag", changed, &twin_id, NULL), 0);
    assert_string_equal(twin_id, "dtw:ag:lamp");
    free(twin_id);
    json_decref(changed);
    assert_int_equal(tw_dir_etag(d), etag + 1);

    /* an invalid TD is rejected with its fields and stores nothing */
    etag = tw_dir_etag(d);
    say(ag, "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":{\"@context\":"
            "\"https://www.w3.org/2022/wot/td/v1.1\",\"id\":\"bad\",\"properties\":{\"p\":"
            "{\"type\":\"decimal\"}}}}");
    r = next(ag);
    assert_int_equal(error_status(r), 400);
    json_t *ve = json_object_get(tw_msg_get(r, "error"), "validationErrors");
    assert_int_equal(json_array_size(ve), 2); /* /title and /properties/p/type */
    tw_msg_unref(r);
    assert_int_equal(tw_dir_etag(d), etag);
    assert_int_equal(tw_dir_get_info(d, "dtw:ag:bad", NULL, NULL, NULL), TW_ENOTFOUND);

    /* a directory-only TD has no agent */
    json_t *dtd =
        json_pack("{s:s,s:s,s:{s:{s:s}},s:s}", "@context", "https://www.w3.org/2022/wot/td/v1.1",
                  "title", "Plain", "securityDefinitions", "n", "scheme", "nosec", "security", "n");
    assert_int_equal(tw_dir_put(d, "urn:plain", dtd, NULL, NULL, NULL), 0);
    assert_int_equal(ops->lookup(f->twin, "urn:plain", TW_AFF_PROPERTY, NULL, &a), 0);
    assert_string_equal(a.agent_id, "");
    json_decref(dtd);
    tw_loop_close(ag);
}

static void test_values_and_reads(void **state)
{
    fixture *f = *state;
    tw_loop_conn *ag = agent_with_lamp(f);
    tw_loop_conn *viewer = client(f, "vic", TW_ROLE_VIEWER);
    say(ag, "{\"type\":\"notification\",\"operation\":\"observeproperty\",\"thingID\":\"lamp\","
            "\"name\":\"on\",\"value\":true}");
    say(ag, "{\"type\":\"notification\",\"operation\":\"observeproperty\",\"thingID\":\"lamp\","
            "\"name\":\"watts\",\"value\":7.5}");
    say(ag, "{\"type\":\"notification\",\"operation\":\"subscribeevent\",\"thingID\":\"lamp\","
            "\"name\":\"alarm\",\"value\":\"hot\"}");
    /* not declared in the TD: not stored */
    say(ag, "{\"type\":\"notification\",\"operation\":\"observeproperty\",\"thingID\":\"lamp\","
            "\"name\":\"ghost\",\"value\":1}");
    json_t *v = NULL;
    assert_int_equal(
        tw_values_get(tw_twin_values(f->twin), "dtw:ag:lamp", TW_AFF_PROPERTY, "ghost", &v, NULL),
        TW_ENOTFOUND);

    say(viewer, "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":\"dtw:ag:lamp\","
                "\"name\":\"on\",\"correlationID\":\"r1\"}");
    tw_msg *r = next(viewer);
    assert_int_equal(error_status(r), 0);
    assert_true(json_is_true(tw_msg_get(r, "output")));
    tw_msg_unref(r);
    say(viewer, "{\"type\":\"request\",\"operation\":\"readallproperties\","
                "\"thingID\":\"dtw:ag:lamp\",\"correlationID\":\"r2\"}");
    r = next(viewer);
    json_t *out = tw_msg_get(r, "output");
    assert_int_equal(json_object_size(out), 2);
    assert_true(json_number_value(json_object_get(out, "watts")) == 7.5);
    tw_msg_unref(r);
    say(viewer, "{\"type\":\"request\",\"operation\":\"readmultipleproperties\","
                "\"thingID\":\"dtw:ag:lamp\",\"input\":[\"watts\",\"nope\"],"
                "\"correlationID\":\"r3\"}");
    r = next(viewer);
    out = tw_msg_get(r, "output");
    assert_int_equal(json_object_size(out), 1);
    assert_non_null(json_object_get(out, "watts"));
    tw_msg_unref(r);
    say(viewer, "{\"type\":\"request\",\"operation\":\"readevent\",\"thingID\":\"dtw:ag:lamp\","
                "\"name\":\"alarm\",\"correlationID\":\"r4\"}");
    r = next(viewer);
    assert_string_equal(json_string_value(tw_msg_get(r, "output")), "hot");
    tw_msg_unref(r);
    say(viewer, "{\"type\":\"request\",\"operation\":\"readallevents\","
                "\"thingID\":\"dtw:ag:lamp\",\"correlationID\":\"r5\"}");
    r = next(viewer);
    assert_int_equal(json_object_size(tw_msg_get(r, "output")), 1);
    tw_msg_unref(r);
    /* unknown property and unknown thing: 404 */
    say(viewer, "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":\"dtw:ag:lamp\","
                "\"name\":\"nope\",\"correlationID\":\"r6\"}");
    r = next(viewer);
    assert_int_equal(error_status(r), 404);
    tw_msg_unref(r);
    say(viewer, "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":\"dtw:ag:x\","
                "\"name\":\"on\",\"correlationID\":\"r7\"}");
    r = next(viewer);
    assert_int_equal(error_status(r), 404);
    tw_msg_unref(r);

    /* values and TD survive a restart */
    tw_loop_close(ag);
    tw_loop_close(viewer);
    uint64_t etag = tw_dir_etag(tw_twin_dir(f->twin));
    fx_close(f);
    fx_open(f);
    /* the restart itself writes nothing (the service TD is unchanged) */
    assert_int_equal(tw_dir_etag(tw_twin_dir(f->twin)), etag);
    viewer = client(f, "vic", TW_ROLE_VIEWER);
    say(viewer, "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":\"dtw:ag:lamp\","
                "\"name\":\"watts\",\"correlationID\":\"r8\"}");
    r = next(viewer);
    assert_int_equal(error_status(r), 0);
    assert_true(json_number_value(tw_msg_get(r, "output")) == 7.5);
    tw_msg_unref(r);
    tw_loop_close(viewer);
}

static void test_deletething(void **state)
{
    fixture *f = *state;
    tw_loop_conn *ag = agent_with_lamp(f);
    say(ag, "{\"type\":\"notification\",\"operation\":\"observeproperty\",\"thingID\":\"lamp\","
            "\"name\":\"on\",\"value\":true}");
    /* another agent cannot delete it: its "lamp" is its own (absent) Thing */
    tw_loop_conn *other = client(f, "other", TW_ROLE_AGENT);
    say(other, "{\"type\":\"request\",\"operation\":\"deletething\",\"thingID\":\"lamp\"}");
    tw_msg *r = next(other);
    assert_int_equal(error_status(r), 404);
    tw_msg_unref(r);
    assert_int_equal(tw_twin_ops_table()->delete_thing(f->twin, "other", "dtw:ag:lamp", NULL),
                     TW_EPERM);
    say(ag, "{\"type\":\"request\",\"operation\":\"deletething\",\"thingID\":\"lamp\"}");
    r = next(ag);
    assert_int_equal(error_status(r), 0);
    tw_msg_unref(r);
    assert_int_equal(tw_dir_get_info(tw_twin_dir(f->twin), "dtw:ag:lamp", NULL, NULL, NULL),
                     TW_ENOTFOUND);
    json_t *v = NULL;
    assert_int_equal(
        tw_values_get(tw_twin_values(f->twin), "dtw:ag:lamp", TW_AFF_PROPERTY, "on", &v, NULL),
        TW_ENOTFOUND);
    tw_loop_close(ag);
    tw_loop_close(other);
}

static tw_msg *call_directory(tw_loop_conn *c, const char *action, const char *input)
{
    say(c,
        "{\"type\":\"request\",\"operation\":\"invokeaction\",\"thingID\":\"" TW_TWIN_DIRECTORY_ID
        "\",\"name\":\"%s\",\"input\":%s,\"correlationID\":\"d1\"}",
        action, input);
    return next(c);
}

static void test_directory_service(void **state)
{
    fixture *f = *state;
    tw_loop_conn *ag = agent_with_lamp(f);
    tw_loop_conn *op = client(f, "opal", TW_ROLE_OPERATOR);
    /* the service's own TD is in the directory */
    json_t *std = NULL;
    assert_int_equal(tw_dir_get(tw_twin_dir(f->twin), TW_TWIN_DIRECTORY_ID, &std), 0);
    assert_non_null(json_object_get(json_object_get(std, "actions"), "listThings"));
    json_decref(std);

    tw_msg *r = call_directory(op, "listThings", "{\"limit\":10}");
    assert_int_equal(error_status(r), 0);
    json_t *out = tw_msg_get(r, "output");
    assert_int_equal(json_integer_value(json_object_get(out, "total")), 2);
    json_t *things = json_object_get(out, "things");
    assert_int_equal(json_array_size(things), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(things, 0), "id")),
                        "dtw:ag:lamp"); /* sorted by id */
    tw_msg_unref(r);
    r = call_directory(op, "listThings", "{\"offset\":1,\"limit\":10}");
    assert_int_equal(json_array_size(json_object_get(tw_msg_get(r, "output"), "things")), 1);
    tw_msg_unref(r);
    r = call_directory(op, "getThing", "{\"id\":\"dtw:ag:lamp\"}");
    assert_string_equal(json_string_value(json_object_get(tw_msg_get(r, "output"), "title")),
                        "Lamp");
    tw_msg_unref(r);
    r = call_directory(op, "getThing", "{\"id\":\"dtw:ag:nope\"}");
    assert_int_equal(error_status(r), 404);
    tw_msg_unref(r);
    r = call_directory(op, "search", "{\"type\":\"Light\"}");
    out = tw_msg_get(r, "output");
    assert_int_equal(json_integer_value(json_object_get(out, "total")), 1);
    tw_msg_unref(r);
    r = call_directory(op, "search", "{\"agent\":\"twind\"}");
    assert_int_equal(json_integer_value(json_object_get(tw_msg_get(r, "output"), "total")), 1);
    tw_msg_unref(r);
    r = call_directory(op, "search", "{\"jsonpath\":\"$[?@.title=='Lamp'].id\"}");
    out = tw_msg_get(r, "output");
    assert_string_equal(json_string_value(json_array_get(json_object_get(out, "results"), 0)),
                        "dtw:ag:lamp");
    tw_msg_unref(r);
    /* bad input: 400 naming the member */
    r = call_directory(op, "search", "{\"jsonpath\":\"$[\"}");
    assert_int_equal(error_status(r), 400);
    assert_string_equal(json_string_value(json_object_get(tw_msg_get(r, "error"), "field")),
                        "input.jsonpath");
    tw_msg_unref(r);
    r = call_directory(op, "listThings", "{\"limit\":-1}");
    assert_int_equal(error_status(r), 400);
    assert_string_equal(json_string_value(json_object_get(tw_msg_get(r, "error"), "field")),
                        "input.limit");
    tw_msg_unref(r);
    r = call_directory(op, "getThing", "{}");
    assert_int_equal(error_status(r), 400);
    tw_msg_unref(r);
    r = call_directory(op, "explode", "{}");
    assert_int_equal(error_status(r), 404);
    tw_msg_unref(r);
    tw_loop_close(ag);
    tw_loop_close(op);
}

/* Opens a runtime whose config file holds `config`; returns tw_twin_open's rc. */
static int open_with_config(const char *dir, const char *config, tw_config *cfg, tw_runtime **rt,
                            tw_twin **twin)
{
    char path[600], err[256];
    snprintf(path, sizeof path, "%s/twind.json", dir);
    FILE *fp = fopen(path, "w");
    fputs(config, fp);
    fclose(fp);
    tw_config_defaults(cfg);
    assert_int_equal(tw_config_load(cfg, path, err, sizeof err), 0);
    snprintf(cfg->data_dir, sizeof cfg->data_dir, "%s/data", dir);
    cfg->store_sync_normal = true;
    assert_int_equal(tw_runtime_new(cfg, rt, err, sizeof err), 0);
    return tw_twin_open(*rt, twin);
}

static void test_config_limits(void **state)
{
    char dir[512];
    tw_test_tmpdir(dir, "twin-config");
    tw_config cfg;
    tw_runtime *rt = NULL;
    tw_twin *twin = NULL;
    assert_int_equal(open_with_config(dir, "{\"twin\":{\"max_things\":2}}", &cfg, &rt, &twin), 0);
    /* the service TD is one of the two */
    json_t *td = json_loads(TD, 0, NULL);
    char *id = NULL;
    assert_int_equal(tw_twin_ops_table()->update_thing(twin, "ag", td, &id, NULL), 0);
    free(id);
    json_object_set_new(td, "id", json_string("lamp2"));
    json_t *problem = NULL;
    assert_int_equal(tw_twin_ops_table()->update_thing(twin, "ag", td, &id, &problem), TW_EFULL);
    assert_int_equal(json_integer_value(json_object_get(problem, "status")), 503);
    json_decref(problem);
    json_decref(td);
    tw_twin_close(twin);
    tw_runtime_free(rt);
    tw_config_free(&cfg);
    /* bad values are refused, not ignored */
    assert_int_equal(open_with_config(dir, "{\"twin\":{\"max_changes\":-5}}", &cfg, &rt, &twin),
                     TW_EINVAL);
    assert_null(twin);
    tw_runtime_free(rt);
    tw_config_free(&cfg);
    assert_int_equal(open_with_config(dir, "{\"twin\":[]}", &cfg, &rt, &twin), TW_EINVAL);
    tw_runtime_free(rt);
    tw_config_free(&cfg);
    tw_test_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_derive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_updatething_and_lookup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_values_and_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deletething, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_service, setup, teardown),
        cmocka_unit_test(test_config_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
