/*
 * test_twin_directory.c - the TD directory on a real SQLite store: create vs
 * replace, registration info, rejected TDs change nothing, anonymous ids,
 * merge-patch with re-validation, ownership, deletion, pagination edges,
 * search filters, JSONPath queries and their errors, the change feed (live
 * and replayed, bounded), expiry, persistence across a restart, and
 * concurrent writers.
 */
#include "runtime/store.h"
#include "tw_test.h"
#include "twin/directory.h"
#include "twin/jsonpath.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct fx {
    char dir[512];
    char db[600];
    tw_store *store;
    tw_dir *d;
} fx;

static void open_dir(fx *f, const tw_dir_opts *o)
{
    tw_store_opts so = {.synchronous_normal = true};
    assert_int_equal(tw_store_open(f->db, &so, &f->store), 0);
    assert_int_equal(tw_dir_open(f->store, o, &f->d), 0);
}

static void close_dir(fx *f)
{
    tw_dir_close(f->d);
    tw_store_close(f->store);
    f->d = NULL;
    f->store = NULL;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    tw_test_tmpdir(f->dir, "twin-dir");
    snprintf(f->db, sizeof f->db, "%s/twind.db", f->dir);
    open_dir(f, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->d) close_dir(f);
    tw_test_rmdir(f->dir);
    free(f);
    return 0;
}

/* A valid TD with id, title, @type and one property named prop. */
static json_t *td_new(const char *id, const char *title, const char *type, const char *prop)
{
    json_t *td =
        json_pack("{s:s,s:s,s:{s:{s:s}},s:s,s:{s:{s:s,s:[{s:s}]}}}", "@context",
                  "https://www.w3.org/2022/wot/td/v1.1", "title", title, "securityDefinitions",
                  "nosec_sc", "scheme", "nosec", "security", "nosec_sc", "properties", prop, "type",
                  "number", "forms", "href", "https://example.com/p");
    if (id) json_object_set_new(td, "id", json_string(id));
    if (type) json_object_set_new(td, "@type", json_string(type));
    return td;
}

static void put_ok(fx *f, const char *id, json_t *td, const tw_dir_put_opts *o, bool want_created)
{
    bool created = !want_created;
    json_t *problem = NULL;
    int rc = tw_dir_put(f->d, id, td, o, &created, &problem);
    if (rc) {
        char *p = json_dumps(problem, JSON_INDENT(1));
        fail_msg("put %s: %d %s", id, rc, p);
    }
    assert_null(problem);
    assert_int_equal(created, want_created);
}

static void test_create_replace_get(void **state)
{
    fx *f = *state;
    json_t *td = td_new("urn:t:1", "One", "Lamp", "on");
    assert_int_equal(tw_dir_etag(f->d), 0);
    put_ok(f, "urn:t:1", td, NULL, true);
    uint64_t e1 = tw_dir_etag(f->d);
    assert_true(e1 > 0);
    json_t *got = NULL;
    assert_int_equal(tw_dir_get(f->d, "urn:t:1", &got), 0);
    assert_string_equal(json_string_value(json_object_get(got, "title")), "One");
    json_t *reg = json_object_get(got, "registration");
    assert_non_null(json_object_get(reg, "created"));
    assert_non_null(json_object_get(reg, "modified"));
    assert_non_null(json_object_get(reg, "retrieved"));
    assert_null(json_object_get(reg, "expires"));
    char created[64];
    snprintf(created, sizeof created, "%s", json_string_value(json_object_get(reg, "created")));
    json_decref(got);
    usleep(5000);

    json_object_set_new(td, "title", json_string("One again"));
    put_ok(f, "urn:t:1", td, NULL, false);
    assert_true(tw_dir_etag(f->d) > e1);
    assert_int_equal(tw_dir_get(f->d, "urn:t:1", &got), 0);
    assert_string_equal(json_string_value(json_object_get(got, "title")), "One again");
    reg = json_object_get(got, "registration");
    assert_string_equal(json_string_value(json_object_get(reg, "created")), created);
    assert_string_not_equal(json_string_value(json_object_get(reg, "modified")), created);
    json_decref(got);
    assert_int_equal(tw_dir_count(f->d), 1);

    /* the id may be omitted in the TD: it is added */
    json_t *noid = td_new(NULL, "Two", NULL, "x");
    put_ok(f, "urn:t:2", noid, NULL, true);
    assert_null(json_object_get(noid, "id")); /* the caller's TD is not modified */
    assert_int_equal(tw_dir_get(f->d, "urn:t:2", &got), 0);
    assert_string_equal(json_string_value(json_object_get(got, "id")), "urn:t:2");
    json_decref(got);
    json_decref(noid);
    assert_int_equal(tw_dir_get(f->d, "urn:nope", &got), TW_ENOTFOUND);
    assert_null(got);
    json_decref(td);
}

static void test_rejections_change_nothing(void **state)
{
    fx *f = *state;
    json_t *td = td_new("urn:t:1", "One", NULL, "on");
    put_ok(f, "urn:t:1", td, NULL, true);
    uint64_t etag = tw_dir_etag(f->d);

    json_t *bad = td_new("urn:t:1", "Bad", NULL, "on");
    json_object_del(bad, "security");
    json_object_set_new(bad, "title", json_integer(3));
    json_t *problem = NULL;
    assert_int_equal(tw_dir_put(f->d, "urn:t:1", bad, NULL, NULL, &problem), TW_EINVAL);
    assert_int_equal(json_integer_value(json_object_get(problem, "status")), 400);
    json_t *ve = json_object_get(problem, "validationErrors");
    assert_int_equal(json_array_size(ve), 2);
    json_decref(problem);
    assert_int_equal(tw_dir_etag(f->d), etag);
    json_t *got = NULL;
    assert_int_equal(tw_dir_get(f->d, "urn:t:1", &got), 0);
    assert_string_equal(json_string_value(json_object_get(got, "title")), "One");
    json_decref(got);
    json_decref(bad);

    /* id in the TD differs from the path */
    assert_int_equal(tw_dir_put(f->d, "urn:t:other", td, NULL, NULL, &problem), TW_EINVAL);
    assert_string_equal(json_string_value(json_object_get(problem, "field")), "/id");
    json_decref(problem);
    /* dtw: ids are agents' twins */
    json_t *twin = td_new("dtw:a:b", "T", NULL, "p");
    assert_int_equal(tw_dir_put(f->d, "dtw:a:b", twin, NULL, NULL, &problem), TW_EPERM);
    json_decref(problem);
    json_decref(twin);
    /* not an object, empty id */
    json_t *arr = json_array();
    assert_int_equal(tw_dir_put(f->d, "urn:x", arr, NULL, NULL, NULL), TW_EINVAL);
    assert_int_equal(tw_dir_put(f->d, "", td, NULL, NULL, NULL), TW_EINVAL);
    json_decref(arr);
    /* too big */
    tw_dir_close(f->d);
    tw_dir_opts o = {.max_td_bytes = 200};
    assert_int_equal(tw_dir_open(f->store, &o, &f->d), 0);
    json_t *big = td_new("urn:t:big", "Big", NULL, "p");
    json_object_set_new(big, "description",
                        json_string("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
    assert_int_equal(tw_dir_put(f->d, "urn:t:big", big, NULL, NULL, NULL), TW_ETOOBIG);
    assert_int_equal(tw_dir_get(f->d, "urn:t:big", &got), TW_ENOTFOUND);
    assert_int_equal(tw_dir_etag(f->d), etag); /* the sequence survived the reopen */
    json_decref(big);
    json_decref(td);
}

static void test_anonymous(void **state)
{
    fx *f = *state;
    json_t *td = td_new(NULL, "Anon", NULL, "p");
    char *id = NULL, *id2 = NULL;
    assert_int_equal(tw_dir_create_anonymous(f->d, td, NULL, &id, NULL), 0);
    assert_int_equal(tw_dir_create_anonymous(f->d, td, NULL, &id2, NULL), 0);
    assert_int_equal(strlen(id), strlen("urn:uuid:") + 36);
    assert_memory_equal(id, "urn:uuid:", 9);
    assert_int_equal(id[9 + 14], '4'); /* version 4 */
    assert_true(strchr("89ab", id[9 + 19]) != NULL);
    assert_string_not_equal(id, id2);
    json_t *got = NULL;
    assert_int_equal(tw_dir_get(f->d, id, &got), 0);
    assert_string_equal(json_string_value(json_object_get(got, "id")), id);
    json_decref(got);
    free(id);
    free(id2);
    json_object_set_new(td, "id", json_string("urn:x"));
    json_t *problem = NULL;
    assert_int_equal(tw_dir_create_anonymous(f->d, td, NULL, &id, &problem), TW_EINVAL);
    assert_null(id);
    json_decref(problem);
    json_decref(td);
}

static void test_patch(void **state)
{
    fx *f = *state;
    json_t *td = td_new("urn:t:1", "One", "Lamp", "on");
    put_ok(f, "urn:t:1", td, NULL, true);
    json_t *patch = json_pack("{s:s,s:n,s:{s:{s:s,s:[{s:s}]}}}", "title", "Patched", "@type",
                              "properties", "dim", "type", "integer", "forms", "href", "/dim");
    json_t *problem = NULL;
    assert_int_equal(tw_dir_patch(f->d, "urn:t:1", patch, NULL, &problem), 0);
    json_t *got = NULL;
    assert_int_equal(tw_dir_get(f->d, "urn:t:1", &got), 0);
    assert_string_equal(json_string_value(json_object_get(got, "title")), "Patched");
    assert_null(json_object_get(got, "@type"));
    json_t *props = json_object_get(got, "properties");
    assert_non_null(json_object_get(props, "on"));
    assert_non_null(json_object_get(props, "dim"));
    json_decref(got);
    json_decref(patch);
    uint64_t etag = tw_dir_etag(f->d);

    /* a patch that makes the TD invalid is rejected with the fields */
    patch = json_pack("{s:n,s:{s:{s:s}}}", "security", "properties", "on", "type", "decimal");
    assert_int_equal(tw_dir_patch(f->d, "urn:t:1", patch, NULL, &problem), TW_EINVAL);
    json_t *ve = json_object_get(problem, "validationErrors");
    assert_int_equal(json_array_size(ve), 2);
    json_decref(problem);
    json_decref(patch);
    assert_int_equal(tw_dir_etag(f->d), etag);
    /* the id cannot change; unknown things; non-object patches */
    patch = json_pack("{s:s}", "id", "urn:t:2");
    assert_int_equal(tw_dir_patch(f->d, "urn:t:1", patch, NULL, &problem), TW_EINVAL);
    json_decref(problem);
    assert_int_equal(tw_dir_patch(f->d, "urn:none", patch, NULL, &problem), TW_EINVAL);
    json_decref(problem);
    json_decref(patch);
    patch = json_pack("{s:s}", "title", "x");
    assert_int_equal(tw_dir_patch(f->d, "urn:none", patch, NULL, &problem), TW_ENOTFOUND);
    json_decref(problem);
    json_t *arr = json_array();
    assert_int_equal(tw_dir_patch(f->d, "urn:t:1", arr, NULL, &problem), TW_EINVAL);
    json_decref(problem);
    json_decref(arr);
    json_decref(patch);
    assert_int_equal(tw_dir_etag(f->d), etag);
    json_decref(td);
}

static void test_ownership(void **state)
{
    fx *f = *state;
    json_t *td = td_new("dtw:alice:lamp", "Alice's lamp", NULL, "on");
    tw_dir_put_opts alice = {.agent_id = "alice", .agent_td = td};
    tw_dir_put_opts bob = {.agent_id = "bob"};
    put_ok(f, "dtw:alice:lamp", td, &alice, true);
    json_t *problem = NULL;
    assert_int_equal(tw_dir_put(f->d, "dtw:alice:lamp", td, &bob, NULL, &problem), TW_EPERM);
    json_decref(problem);
    assert_int_equal(tw_dir_put(f->d, "dtw:alice:lamp", td, NULL, NULL, &problem), TW_EPERM);
    json_decref(problem);
    json_t *patch = json_pack("{s:s}", "title", "mine");
    assert_int_equal(tw_dir_patch(f->d, "dtw:alice:lamp", patch, "bob", &problem), TW_EPERM);
    json_decref(problem);
    assert_int_equal(tw_dir_patch(f->d, "dtw:alice:lamp", patch, NULL, &problem), TW_EPERM);
    json_decref(problem);
    assert_int_equal(tw_dir_patch(f->d, "dtw:alice:lamp", patch, "alice", &problem), 0);
    json_decref(patch);
    tw_dir_info info;
    json_t *stored = NULL, *agent_td = NULL;
    assert_int_equal(tw_dir_get_info(f->d, "dtw:alice:lamp", &info, &stored, &agent_td), 0);
    assert_string_equal(info.agent_id, "alice");
    assert_true(json_equal(agent_td, td));
    assert_string_equal(json_string_value(json_object_get(stored, "title")), "mine");
    json_decref(stored);
    json_decref(agent_td);
    assert_int_equal(tw_dir_delete(f->d, "dtw:alice:lamp", "bob"), TW_EPERM);
    assert_int_equal(tw_dir_delete(f->d, "dtw:alice:lamp", "alice"), 0);
    assert_int_equal(tw_dir_delete(f->d, "dtw:alice:lamp", "alice"), TW_ENOTFOUND);
    /* an admin deletes anything */
    put_ok(f, "dtw:alice:lamp", td, &alice, true);
    assert_int_equal(tw_dir_delete(f->d, "dtw:alice:lamp", NULL), 0);
    assert_int_equal(tw_dir_count(f->d), 0);
    json_decref(td);
}

/* 25 Things put in a scrambled order, ids urn:p:00 .. urn:p:24. */
static void put_25(fx *f)
{
    for (int i = 0; i < 25; i++) {
        int k = (i * 7) % 25;
        char id[32], title[32];
        snprintf(id, sizeof id, "urn:p:%02d", k);
        snprintf(title, sizeof title, "Thing %02d", k);
        json_t *td = td_new(id, title, k % 2 ? "Sensor" : "Lamp", k % 5 ? "temp" : "power");
        tw_dir_put_opts o = {.agent_id = k < 10 ? "" : (k < 20 ? "agent1" : "agent2")};
        put_ok(f, id, td, &o, true);
        json_decref(td);
    }
}

static void check_page(json_t *page, int first, int n)
{
    assert_int_equal(json_array_size(page), n);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "urn:p:%02d", first + i);
        json_t *td = json_array_get(page, (size_t)i);
        assert_string_equal(json_string_value(json_object_get(td, "id")), id);
        assert_non_null(json_object_get(td, "registration"));
    }
}

static void test_list_pagination(void **state)
{
    fx *f = *state;
    put_25(f);
    json_t *page = NULL;
    size_t total = 0;
    uint64_t etag = 0;
    assert_int_equal(tw_dir_list(f->d, 0, 10, &page, &total, &etag), 0);
    assert_int_equal(total, 25);
    assert_int_equal(etag, tw_dir_etag(f->d));
    check_page(page, 0, 10);
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 10, 10, &page, &total, NULL), 0);
    check_page(page, 10, 10);
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 20, 10, &page, &total, NULL), 0);
    check_page(page, 20, 5); /* the last page is short */
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 24, 1, &page, &total, NULL), 0);
    check_page(page, 24, 1);
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 25, 10, &page, &total, NULL), 0); /* at the end */
    check_page(page, 0, 0);
    assert_int_equal(total, 25);
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 1000000, 10, &page, &total, NULL), 0); /* past it */
    check_page(page, 0, 0);
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 3, 0, &page, &total, NULL), 0); /* limit 0 */
    check_page(page, 0, 0);
    assert_int_equal(total, 25);
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 0, SIZE_MAX, &page, NULL, NULL), 0); /* huge limit */
    check_page(page, 0, 25);
    json_decref(page);
    assert_int_equal(tw_dir_list(f->d, 13, SIZE_MAX, &page, NULL, NULL), 0);
    check_page(page, 13, 12);
    json_decref(page);
    /* deletes keep the order and the ranks right */
    assert_int_equal(tw_dir_delete(f->d, "urn:p:00", NULL), 0);
    assert_int_equal(tw_dir_delete(f->d, "urn:p:12", NULL), 0);
    assert_int_equal(tw_dir_list(f->d, 11, 2, &page, &total, NULL), 0);
    assert_int_equal(total, 23);
    assert_string_equal(json_string_value(json_object_get(json_array_get(page, 0), "id")),
                        "urn:p:13");
    assert_string_equal(json_string_value(json_object_get(json_array_get(page, 1), "id")),
                        "urn:p:14");
    json_decref(page);
}

static void test_search(void **state)
{
    fx *f = *state;
    put_25(f);
    json_t *page = NULL;
    size_t total = 0;
    tw_dir_filter by_type = {.type = "Sensor"};
    assert_int_equal(tw_dir_search(f->d, &by_type, 0, 100, &page, &total), 0);
    assert_int_equal(total, 12); /* odd numbers below 25 */
    assert_string_equal(json_string_value(json_object_get(json_array_get(page, 0), "id")),
                        "urn:p:01");
    json_decref(page);
    assert_int_equal(tw_dir_search(f->d, &by_type, 10, 100, &page, &total), 0);
    assert_int_equal(json_array_size(page), 2);
    assert_int_equal(total, 12);
    json_decref(page);
    tw_dir_filter by_title = {.title = "thing 1"}; /* case-insensitive substring */
    assert_int_equal(tw_dir_search(f->d, &by_title, 0, 100, &page, &total), 0);
    assert_int_equal(total, 10);
    json_decref(page);
    tw_dir_filter by_name = {.name = "power"};
    assert_int_equal(tw_dir_search(f->d, &by_name, 0, 100, &page, &total), 0);
    assert_int_equal(total, 5);
    json_decref(page);
    tw_dir_filter by_agent = {.agent = "agent2"};
    assert_int_equal(tw_dir_search(f->d, &by_agent, 0, 100, &page, &total), 0);
    assert_int_equal(total, 5);
    json_decref(page);
    tw_dir_filter no_agent = {.agent = "-"};
    assert_int_equal(tw_dir_search(f->d, &no_agent, 0, 100, &page, &total), 0);
    assert_int_equal(total, 10);
    json_decref(page);
    tw_dir_filter combined = {.type = "Lamp", .agent = "agent1", .name = "temp"};
    assert_int_equal(tw_dir_search(f->d, &combined, 0, 100, &page, &total), 0);
    assert_int_equal(total, 4); /* 12, 14, 16, 18 */
    json_decref(page);
    /* @type arrays, and more types than the index keeps per Thing */
    json_t *many = td_new("urn:p:many", "Many", NULL, "x");
    json_object_set_new(
        many, "@type",
        json_pack("[s,s,s,s,s,s,s,s]", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "Sensor"));
    put_ok(f, "urn:p:many", many, NULL, true);
    json_decref(many);
    tw_dir_filter t7 = {.type = "T7"};
    assert_int_equal(tw_dir_search(f->d, &t7, 0, 100, &page, &total), 0);
    assert_int_equal(total, 1);
    json_decref(page);
    assert_int_equal(tw_dir_search(f->d, &by_type, 0, 100, &page, &total), 0);
    assert_int_equal(total, 13);
    json_decref(page);
    assert_int_equal(tw_dir_delete(f->d, "urn:p:many", NULL), 0);
    tw_dir_filter none = {.type = "Nothing"};
    assert_int_equal(tw_dir_search(f->d, &none, 0, 100, &page, &total), 0);
    assert_int_equal(total, 0);
    assert_int_equal(json_array_size(page), 0);
    json_decref(page);
    assert_int_equal(tw_dir_search(f->d, NULL, 0, 3, &page, &total), 0);
    assert_int_equal(total, 25);
    assert_int_equal(json_array_size(page), 3);
    json_decref(page);
}

static void test_query(void **state)
{
    fx *f = *state;
    put_25(f);
    json_t *res = NULL, *problem = NULL;
    assert_int_equal(tw_dir_query(f->d, "$[?@['@type']=='Sensor'].id", &res, &problem), 0);
    assert_int_equal(json_array_size(res), 12);
    assert_string_equal(json_string_value(json_array_get(res, 0)), "urn:p:01");
    json_decref(res);
    assert_int_equal(tw_dir_query(f->d, "$[?@.properties.power].title", &res, NULL), 0);
    assert_int_equal(json_array_size(res), 5);
    json_decref(res);
    assert_int_equal(tw_dir_query(f->d, "$[?@.title > 'Thing 22'].id", &res, NULL), 0);
    assert_int_equal(json_array_size(res), 2);
    json_decref(res);
    assert_int_equal(tw_dir_query(f->d, "$..href", &res, NULL), 0);
    assert_int_equal(json_array_size(res), 25);
    json_decref(res);
    /* queries the @type index narrows give what a full scan gives, also for
     * @type arrays (which never equal a string) */
    json_t *arr_td = td_new("urn:p:arr", "Arr", NULL, "temp");
    json_object_set_new(arr_td, "@type", json_pack("[s,s]", "Sensor", "Lamp"));
    put_ok(f, "urn:p:arr", arr_td, NULL, true);
    json_decref(arr_td);
    static const char *const typed_queries[] = {
        "$[?@['@type']=='Sensor'].id",
        "$[?@['@type']=='Lamp' && @.properties.power].title",
        "$[?@['@type']=='Nothing']",
        "$[?(@.title > 'Thing 1' && @['@type']=='Sensor')].id",
    };
    json_t *all = NULL;
    assert_int_equal(tw_dir_list(f->d, 0, SIZE_MAX, &all, NULL, NULL), 0);
    for (size_t i = 0; i < json_array_size(all); i++) /* the TDs as stored */
        json_object_del(json_array_get(all, i), "registration");
    for (size_t q = 0; q < sizeof typed_queries / sizeof typed_queries[0]; q++) {
        tw_jsonpath *p = NULL;
        json_t *want = NULL, *got = NULL;
        assert_int_equal(tw_jsonpath_compile(typed_queries[q], &p, NULL, 0, NULL), 0);
        assert_non_null(tw_jsonpath_eq_hint(p, "@type"));
        assert_int_equal(tw_jsonpath_query(p, all, 1000, &want), 0);
        assert_int_equal(tw_dir_query(f->d, typed_queries[q], &got, NULL), 0);
        if (!json_equal(want, got)) fail_msg("%s: index and scan differ", typed_queries[q]);
        json_decref(want);
        json_decref(got);
        tw_jsonpath_free(p);
    }
    json_decref(all);
    assert_int_equal(tw_dir_delete(f->d, "urn:p:arr", NULL), 0);
    /* the snapshot follows writes */
    assert_int_equal(tw_dir_delete(f->d, "urn:p:01", NULL), 0);
    assert_int_equal(tw_dir_query(f->d, "$[?@['@type']=='Sensor'].id", &res, NULL), 0);
    assert_int_equal(json_array_size(res), 11);
    json_decref(res);
    /* registration info is not part of the queried TDs */
    assert_int_equal(tw_dir_query(f->d, "$..registration", &res, NULL), 0);
    assert_int_equal(json_array_size(res), 0);
    json_decref(res);
    /* errors name the offset */
    assert_int_equal(tw_dir_query(f->d, "$[?@.title ==]", &res, &problem), TW_EINVAL);
    assert_null(res);
    assert_int_equal(json_integer_value(json_object_get(problem, "status")), 400);
    assert_int_equal(json_integer_value(json_object_get(problem, "offset")), 13);
    assert_non_null(strstr(json_string_value(json_object_get(problem, "detail")), "offset 13"));
    assert_string_equal(json_string_value(json_object_get(problem, "field")), "query");
    json_decref(problem);
    /* too many results */
    tw_dir_close(f->d);
    tw_dir_opts o = {.max_query_results = 10};
    assert_int_equal(tw_dir_open(f->store, &o, &f->d), 0);
    assert_int_equal(tw_dir_query(f->d, "$[*].id", &res, &problem), TW_ETOOBIG);
    assert_int_equal(json_integer_value(json_object_get(problem, "status")), 413);
    json_decref(problem);
}

typedef struct seen {
    pthread_mutex_t mu;
    int n;
    uint64_t seq[64];
    int kind[64];
    char id[64][64];
    json_t *data[64];
} seen;

static void on_change(void *ctx, const tw_dir_change *ch)
{
    seen *s = ctx;
    pthread_mutex_lock(&s->mu);
    if (s->n < 64) {
        s->seq[s->n] = ch->seq;
        s->kind[s->n] = ch->kind;
        snprintf(s->id[s->n], 64, "%s", ch->id);
        s->data[s->n] = json_incref(ch->data);
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
}

static void seen_free(seen *s)
{
    for (int i = 0; i < s->n; i++)
        json_decref(s->data[i]);
    s->n = 0;
}

static void make_changes(fx *f)
{
    json_t *td = td_new("urn:c:1", "C1", NULL, "p");
    put_ok(f, "urn:c:1", td, NULL, true);
    json_t *patch = json_pack("{s:s}", "title", "C1 patched");
    assert_int_equal(tw_dir_patch(f->d, "urn:c:1", patch, NULL, NULL), 0);
    json_decref(patch);
    assert_int_equal(tw_dir_delete(f->d, "urn:c:1", NULL), 0);
    json_decref(td);
}

static void test_change_feed(void **state)
{
    fx *f = *state;
    seen live = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t h = 0;
    assert_int_equal(tw_dir_subscribe(f->d, on_change, &live, &h), 0);
    uint64_t before = tw_dir_etag(f->d);
    make_changes(f);
    assert_int_equal(live.n, 3);
    assert_int_equal(live.kind[0], TW_DIR_CREATED);
    assert_int_equal(live.kind[1], TW_DIR_UPDATED);
    assert_int_equal(live.kind[2], TW_DIR_DELETED);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(live.seq[i], before + 1 + (uint64_t)i);
        assert_string_equal(live.id[i], "urn:c:1");
    }
    assert_string_equal(json_string_value(json_object_get(live.data[0], "title")), "C1");
    assert_non_null(json_object_get(live.data[0], "properties")); /* the full TD */
    json_t *want_patch = json_pack("{s:s}", "title", "C1 patched");
    assert_true(json_equal(live.data[1], want_patch)); /* only the difference */
    json_decref(want_patch);
    assert_null(live.data[2]);

    /* replay from SQLite gives the same */
    seen replay = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t oldest = 0;
    assert_int_equal(tw_dir_changes(f->d, before, 0, 0, on_change, &replay, &oldest), 0);
    assert_int_equal(replay.n, 3);
    assert_true(oldest <= before + 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(replay.seq[i], live.seq[i]);
        assert_int_equal(replay.kind[i], live.kind[i]);
        assert_true(replay.data[i] == NULL ? live.data[i] == NULL
                                           : json_equal(replay.data[i], live.data[i]));
    }
    seen_free(&replay);
    /* after a given id; by kind; at most max */
    assert_int_equal(tw_dir_changes(f->d, before + 1, 0, 0, on_change, &replay, NULL), 0);
    assert_int_equal(replay.n, 2);
    assert_int_equal(replay.seq[0], before + 2);
    seen_free(&replay);
    assert_int_equal(
        tw_dir_changes(f->d, 0, TW_DIR_DELETED | TW_DIR_CREATED, 0, on_change, &replay, NULL), 0);
    assert_int_equal(replay.n, 2);
    assert_int_equal(replay.kind[0], TW_DIR_CREATED);
    assert_int_equal(replay.kind[1], TW_DIR_DELETED);
    seen_free(&replay);
    assert_int_equal(tw_dir_changes(f->d, 0, 0, 1, on_change, &replay, NULL), 0);
    assert_int_equal(replay.n, 1);
    seen_free(&replay);
    tw_dir_unsubscribe(f->d, h);
    make_changes(f);
    assert_int_equal(live.n, 3); /* no more live calls */
    seen_free(&live);
    assert_string_equal(tw_dir_change_name(TW_DIR_UPDATED), "thing_updated");
    assert_int_equal(tw_dir_change_parse("thing_deleted"), TW_DIR_DELETED);
    assert_int_equal(tw_dir_change_parse("thing_exploded"), 0);
}

/* The feed keeps the TD a Thing was created with, whatever happens later
 * (the row shares the Thing's TD until the first change, across restarts). */
static void test_change_feed_created_data(void **state)
{
    fx *f = *state;
    json_t *a = td_new("urn:f:a", "A1", NULL, "p"), *b = td_new("urn:f:b", "B1", NULL, "p");
    json_t *c = td_new("urn:f:c", "C1", NULL, "p");
    put_ok(f, "urn:f:a", a, NULL, true);
    put_ok(f, "urn:f:b", b, NULL, true);
    put_ok(f, "urn:f:c", c, NULL, true);
    close_dir(f); /* the bookkeeping survives a restart */
    open_dir(f, NULL);
    json_t *patch = json_pack("{s:s}", "title", "A2");
    assert_int_equal(tw_dir_patch(f->d, "urn:f:a", patch, NULL, NULL), 0);
    json_decref(patch);
    assert_int_equal(tw_dir_delete(f->d, "urn:f:b", NULL), 0);
    json_object_set_new(c, "title", json_string("C2"));
    put_ok(f, "urn:f:c", c, NULL, false);
    json_object_set_new(c, "title", json_string("C3"));
    put_ok(f, "urn:f:c", c, NULL, false);
    seen r = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(tw_dir_changes(f->d, 0, TW_DIR_CREATED, 0, on_change, &r, NULL), 0);
    assert_int_equal(r.n, 3);
    assert_string_equal(json_string_value(json_object_get(r.data[0], "title")), "A1");
    assert_string_equal(json_string_value(json_object_get(r.data[1], "title")), "B1");
    assert_string_equal(json_string_value(json_object_get(r.data[2], "title")), "C1");
    assert_non_null(json_object_get(r.data[1], "properties"));
    seen_free(&r);
    /* a Thing unchanged since its creation: its current TD */
    json_t *d = td_new("urn:f:d", "D1", NULL, "p");
    put_ok(f, "urn:f:d", d, NULL, true);
    assert_int_equal(tw_dir_changes(f->d, tw_dir_etag(f->d) - 1, 0, 0, on_change, &r, NULL), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.kind[0], TW_DIR_CREATED);
    assert_true(json_equal(r.data[0], d));
    seen_free(&r);
    json_decref(a);
    json_decref(b);
    json_decref(c);
    json_decref(d);
}

static void test_change_feed_bounded(void **state)
{
    fx *f = *state;
    tw_dir_close(f->d);
    tw_dir_opts o = {.max_changes = 5};
    assert_int_equal(tw_dir_open(f->store, &o, &f->d), 0);
    for (int i = 0; i < 4; i++)
        make_changes(f); /* 12 changes */
    seen replay = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t oldest = 0;
    assert_int_equal(tw_dir_changes(f->d, 0, 0, 0, on_change, &replay, &oldest), 0);
    assert_int_equal(replay.n, 5);
    assert_int_equal(oldest, 8);
    assert_int_equal(replay.seq[0], 8);
    assert_int_equal(replay.seq[4], 12);
    seen_free(&replay);
}

static void test_expiry(void **state)
{
    fx *f = *state;
    json_t *td = td_new("urn:e:1", "Expiring", NULL, "p");
    tw_dir_put_opts o = {.ttl_s = 1};
    put_ok(f, "urn:e:1", td, &o, true);
    /* the TD's own registration.ttl works too */
    json_t *td2 = td_new("urn:e:2", "Also", NULL, "p");
    json_object_set_new(td2, "registration", json_pack("{s:i}", "ttl", 2));
    put_ok(f, "urn:e:2", td2, NULL, true);
    json_t *keep = td_new("urn:e:3", "Forever", NULL, "p");
    put_ok(f, "urn:e:3", keep, NULL, true);
    json_t *got = NULL;
    assert_int_equal(tw_dir_get(f->d, "urn:e:2", &got), 0);
    json_t *reg = json_object_get(got, "registration");
    assert_int_equal(json_integer_value(json_object_get(reg, "ttl")), 2);
    assert_non_null(json_object_get(reg, "expires"));
    json_decref(got);
    size_t purged = 99;
    assert_int_equal(tw_dir_purge_expired(f->d, tw_now_ms(), &purged), 0);
    assert_int_equal(purged, 0);
    seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    uint64_t h;
    tw_dir_subscribe(f->d, on_change, &s, &h);
    assert_int_equal(tw_dir_purge_expired(f->d, tw_now_ms() + 1500, &purged), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.kind[0], TW_DIR_DELETED);
    assert_string_equal(s.id[0], "urn:e:1");
    assert_int_equal(tw_dir_purge_expired(f->d, tw_now_ms() + 5000, &purged), 0);
    assert_int_equal(purged, 1);
    assert_int_equal(tw_dir_count(f->d), 1);
    tw_dir_unsubscribe(f->d, h);
    seen_free(&s);
    json_decref(td);
    json_decref(td2);
    json_decref(keep);
}

static void test_persistence(void **state)
{
    fx *f = *state;
    put_25(f);
    json_t *patch = json_pack("{s:s}", "title", "Renamed");
    assert_int_equal(tw_dir_patch(f->d, "urn:p:05", patch, NULL, NULL), 0);
    json_decref(patch);
    assert_int_equal(tw_dir_delete(f->d, "urn:p:07", NULL), 0);
    json_t *agent_td = td_new("lamp", "Agent's own", NULL, "p");
    json_t *twin_td = td_new("dtw:ag:lamp", "Twin", NULL, "p");
    tw_dir_put_opts o = {.agent_id = "ag", .agent_td = agent_td, .ttl_s = 3600};
    put_ok(f, "dtw:ag:lamp", twin_td, &o, true);
    json_t *before = NULL;
    size_t total_before;
    assert_int_equal(tw_dir_list(f->d, 0, SIZE_MAX, &before, &total_before, NULL), 0);
    uint64_t etag = tw_dir_etag(f->d);
    tw_dir_info info_before;
    assert_int_equal(tw_dir_get_info(f->d, "dtw:ag:lamp", &info_before, NULL, NULL), 0);

    close_dir(f);
    open_dir(f, NULL);

    json_t *after = NULL;
    size_t total_after;
    assert_int_equal(tw_dir_list(f->d, 0, SIZE_MAX, &after, &total_after, NULL), 0);
    assert_int_equal(total_after, total_before);
    assert_int_equal(total_after, 25);
    assert_int_equal(tw_dir_etag(f->d), etag);
    for (size_t i = 0; i < total_after; i++) {
        json_t *a = json_deep_copy(json_array_get(before, i));
        json_t *b = json_deep_copy(json_array_get(after, i));
        json_object_del(json_object_get(a, "registration"), "retrieved");
        json_object_del(json_object_get(b, "registration"), "retrieved");
        assert_true(json_equal(a, b));
        json_decref(a);
        json_decref(b);
    }
    tw_dir_info info;
    json_t *atd = NULL;
    assert_int_equal(tw_dir_get_info(f->d, "dtw:ag:lamp", &info, NULL, &atd), 0);
    assert_string_equal(info.agent_id, "ag");
    assert_true(json_equal(atd, agent_td));
    assert_int_equal(info.created_ms, info_before.created_ms);
    assert_int_equal(info.expires_ms, info_before.expires_ms);
    assert_int_equal(info.seq, info_before.seq);
    json_decref(atd);
    /* the sequence continues */
    json_t *td = td_new("urn:p:99", "New", NULL, "p");
    put_ok(f, "urn:p:99", td, NULL, true);
    assert_int_equal(tw_dir_etag(f->d), etag + 1);
    seen replay = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(tw_dir_changes(f->d, etag - 2, 0, 0, on_change, &replay, NULL), 0);
    assert_int_equal(replay.n, 3);
    assert_int_equal(replay.kind[0], TW_DIR_DELETED); /* urn:p:07 */
    assert_int_equal(replay.kind[2], TW_DIR_CREATED); /* urn:p:99 */
    seen_free(&replay);
    /* the expiry survived too: purged an hour later, not before */
    size_t purged = 9;
    assert_int_equal(tw_dir_purge_expired(f->d, tw_now_ms() + 3000 * 1000, &purged), 0);
    assert_int_equal(purged, 0);
    assert_int_equal(tw_dir_purge_expired(f->d, tw_now_ms() + 3601 * 1000, &purged), 0);
    assert_int_equal(purged, 1);
    json_decref(td);
    json_decref(before);
    json_decref(after);
    json_decref(agent_td);
    json_decref(twin_td);
}

static void test_reload_many(void **state)
{
    fx *f = *state;
    /* enough Things for the parallel parse at start-up; nowait writes */
    for (int i = 0; i < 2500; i++) {
        char id[32], title[32];
        snprintf(id, sizeof id, "urn:m:%05d", i);
        snprintf(title, sizeof title, "M%d", i);
        json_t *td = td_new(id, title, i % 3 ? "A" : "B", "p");
        tw_dir_put_opts o = {.nowait = true, .take = true};
        assert_int_equal(tw_dir_put(f->d, id, td, &o, NULL, NULL), 0);
    }
    uint64_t etag = tw_dir_etag(f->d);
    close_dir(f);
    open_dir(f, NULL);
    assert_int_equal(tw_dir_count(f->d), 2500);
    assert_int_equal(tw_dir_etag(f->d), etag);
    json_t *page = NULL;
    assert_int_equal(tw_dir_list(f->d, 1234, 2, &page, NULL, NULL), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(page, 0), "title")),
                        "M1234");
    assert_string_equal(json_string_value(json_object_get(json_array_get(page, 1), "id")),
                        "urn:m:01235");
    json_decref(page);
    tw_dir_filter fb = {.type = "B"};
    size_t total = 0;
    assert_int_equal(tw_dir_search(f->d, &fb, 0, 0, &page, &total), 0);
    assert_int_equal(total, 834);
    json_decref(page);
}

typedef struct writer_arg {
    fx *f;
    int t;
} writer_arg;

static void *writer(void *arg)
{
    writer_arg *w = arg;
    for (int i = 0; i < 100; i++) {
        char id[64];
        snprintf(id, sizeof id, "urn:w:%d:%03d", w->t, i);
        json_t *td = td_new(id, "W", NULL, "p");
        if (tw_dir_put(w->f->d, id, td, NULL, NULL, NULL) != 0) abort();
        if (i % 10 == 0 && tw_dir_delete(w->f->d, id, NULL) != 0) abort();
        json_decref(td);
    }
    return NULL;
}

static void *reader(void *arg)
{
    fx *f = arg;
    for (int i = 0; i < 50; i++) {
        json_t *page = NULL, *res = NULL;
        tw_dir_list(f->d, (size_t)i, 20, &page, NULL, NULL);
        tw_dir_query(f->d, "$[?@.title=='W'].id", &res, NULL);
        json_decref(page);
        json_decref(res);
        tw_dir_filter tf = {.title = "w"};
        size_t total = 0;
        tw_dir_search(f->d, &tf, 0, 5, &page, &total);
        json_decref(page);
        tw_dir_query(f->d, "$[?@['@type']=='X'].id", &res, NULL);
        json_decref(res);
    }
    return NULL;
}

static void test_concurrent_writers(void **state)
{
    fx *f = *state;
    pthread_t th[5];
    writer_arg wa[4];
    for (int i = 0; i < 4; i++) {
        wa[i] = (writer_arg){.f = f, .t = i};
        pthread_create(&th[i], NULL, writer, &wa[i]);
    }
    pthread_create(&th[4], NULL, reader, f);
    for (int i = 0; i < 5; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(tw_dir_count(f->d), 360);
    assert_int_equal(tw_dir_etag(f->d), 440);
    close_dir(f);
    open_dir(f, NULL);
    assert_int_equal(tw_dir_count(f->d), 360);
    assert_int_equal(tw_dir_etag(f->d), 440);
}

/*
 * What tw_dir_put acknowledged survives kill -9: a child process registers
 * TDs (synchronous=FULL) and reports each acknowledged one on a pipe; the
 * parent kills it mid-stream and finds every acknowledged TD after reopening.
 */
static void test_kill9_keeps_acknowledged(void **state)
{
    char dir[512], db[600];
    tw_test_tmpdir(dir, "twin-kill");
    snprintf(db, sizeof db, "%s/twind.db", dir);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        tw_store *s = NULL;
        tw_dir *d = NULL;
        if (tw_store_open(db, NULL, &s) || tw_dir_open(s, NULL, &d)) _exit(2);
        for (int i = 0;; i++) {
            char id[32];
            snprintf(id, sizeof id, "urn:k:%06d", i);
            json_t *td = td_new(id, "K", NULL, "p");
            tw_dir_put_opts o = {.take = true};
            if (tw_dir_put(d, id, td, &o, NULL, NULL) != 0) _exit(3);
            if (write(fds[1], &i, sizeof i) != sizeof i) _exit(4);
        }
    }
    close(fds[1]);
    int last = -1, got;
    while (last < 40 && read(fds[0], &got, sizeof got) == sizeof got)
        last = got;
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    /* acknowledgements still in the pipe count too */
    while (read(fds[0], &got, sizeof got) == sizeof got)
        last = got;
    close(fds[0]);
    assert_true(WIFSIGNALED(status));
    assert_true(last >= 40);
    tw_store *s = NULL;
    tw_dir *d = NULL;
    assert_int_equal(tw_store_open(db, NULL, &s), 0);
    assert_int_equal(tw_dir_open(s, NULL, &d), 0);
    for (int i = 0; i <= last; i++) {
        char id[32];
        snprintf(id, sizeof id, "urn:k:%06d", i);
        if (tw_dir_get_info(d, id, NULL, NULL, NULL) != 0)
            fail_msg("acknowledged %s is gone after kill -9", id);
    }
    assert_true(tw_dir_count(d) >= (size_t)last + 1);
    tw_dir_close(d);
    tw_store_close(s);
    tw_test_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_replace_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejections_change_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anonymous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_patch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ownership, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_pagination, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_feed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_feed_created_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_feed_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_many, setup, teardown),
        cmocka_unit_test(test_kill9_keeps_acknowledged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
