/*
 * test_twin_jsonpath.c - the JSONPath subset of twin/jsonpath.h: every
 * production of the grammar against a fixed document (results compared in
 * document order), filter semantics (numbers vs strings, missing operands,
 * &&, ||, !, grouping), limits, and syntax errors that name the offset
 * where parsing failed.
 */
#include "runtime/tw.h"
#include "twin/jsonpath.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

static const char DOC[] =
    "{\"store\":{\"book\":["
    "{\"category\":\"reference\",\"author\":\"Nigel Rees\",\"title\":\"Sayings of the "
    "Century\",\"price\":8.95},"
    "{\"category\":\"fiction\",\"author\":\"Evelyn Waugh\",\"title\":\"Sword of Honour\","
    "\"price\":12.99},"
    "{\"category\":\"fiction\",\"author\":\"Herman Melville\",\"title\":\"Moby Dick\","
    "\"isbn\":\"0-553-21311-3\",\"price\":8.99},"
    "{\"category\":\"fiction\",\"author\":\"J. R. R. Tolkien\",\"title\":\"The Lord of the "
    "Rings\",\"isbn\":\"0-395-19395-8\",\"price\":22.99}],"
    "\"bicycle\":{\"color\":\"red\",\"price\":399}},"
    "\"things\":[{\"id\":\"a\",\"@type\":\"Lamp\",\"n\":1,\"flag\":true,\"nil\":null},"
    "{\"id\":\"b\",\"@type\":[\"Sensor\",\"Lamp\"],\"n\":2.5},"
    "{\"id\":\"c\",\"@type\":\"Sensor\",\"n\":\"3\"}],"
    "\"o\":{\"k k\":1,\"\\u00e9\":2,\"quote'\":3}}";

static json_t *doc(void)
{
    json_error_t e;
    json_t *d = json_loads(DOC, 0, &e);
    if (!d) fail_msg("bad DOC: %s at %d", e.text, e.position);
    return d;
}

/* Runs q on DOC and compares the result array with the JSON text want. */
static void check(const char *q, const char *want)
{
    tw_jsonpath *p = NULL;
    char err[200];
    size_t off = 0;
    int rc = tw_jsonpath_compile(q, &p, err, sizeof err, &off);
    if (rc) fail_msg("%s: did not compile: %s", q, err);
    json_t *d = doc(), *res = NULL;
    assert_int_equal(tw_jsonpath_query(p, d, 1000, &res), 0);
    json_t *w = json_loads(want, 0, NULL);
    assert_non_null(w);
    if (!json_equal(res, w)) {
        char *got = json_dumps(res, JSON_COMPACT);
        fail_msg("%s: got %s, want %s", q, got, want);
    }
    json_decref(w);
    json_decref(res);
    json_decref(d);
    tw_jsonpath_free(p);
}

static void check_syntax_error(const char *q)
{
    tw_jsonpath *p = NULL;
    assert_int_equal(tw_jsonpath_compile(q, &p, NULL, 0, NULL), TW_EINVAL);
    assert_null(p);
}

static void test_members(void **state)
{
    check("$.store.bicycle.color", "[\"red\"]");
    check("$['store']['bicycle']['color']", "[\"red\"]");
    check("$[\"store\"].bicycle[\"price\"]", "[399]");
    check("$.store.nothing", "[]");
    check("$.o['k k']", "[1]");
    check("$.o['\\u00e9']", "[2]");
    check("$.o.\xc3\xa9", "[2]"); /* non-ASCII names need no quotes */
    check("$.o['quote\\'']", "[3]");
    check("$.things[0]['@type']", "[\"Lamp\"]");
    check("$.things[0].@type", "[\"Lamp\"]");
    check(" $ .store .bicycle [ 'color' ] ", "[\"red\"]");
    check_syntax_error("$. store");
}

static void test_indexes_and_slices(void **state)
{
    check("$.store.book[0].author", "[\"Nigel Rees\"]");
    check("$.store.book[-1].author", "[\"J. R. R. Tolkien\"]");
    check("$.store.book[4]", "[]");
    check("$.store.book[-5]", "[]");
    check("$.store.book[0,2].price", "[8.95,8.99]");
    check("$.store.book[1:3].price", "[12.99,8.99]");
    check("$.store.book[:2].price", "[8.95,12.99]");
    check("$.store.book[2:].price", "[8.99,22.99]");
    check("$.store.book[-2:].price", "[8.99,22.99]");
    check("$.store.book[3:1].price", "[]");
    check("$.store[0]", "[]"); /* index on an object selects nothing */
}

static void test_wildcards_and_descent(void **state)
{
    check("$.store.bicycle.*", "[\"red\",399]");
    check("$.things[*].id", "[\"a\",\"b\",\"c\"]");
    check("$..author",
          "[\"Nigel Rees\",\"Evelyn Waugh\",\"Herman Melville\",\"J. R. R. Tolkien\"]");
    check("$.store..price", "[8.95,12.99,8.99,22.99,399]");
    check("$..book[2].isbn", "[\"0-553-21311-3\"]");
    check("$..['isbn']", "[\"0-553-21311-3\",\"0-395-19395-8\"]");
    check("$.things..*", "[{\"id\":\"a\",\"@type\":\"Lamp\",\"n\":1,\"flag\":true,\"nil\":null},"
                         "{\"id\":\"b\",\"@type\":[\"Sensor\",\"Lamp\"],\"n\":2.5},"
                         "{\"id\":\"c\",\"@type\":\"Sensor\",\"n\":\"3\"},"
                         "\"a\",\"Lamp\",1,true,null,\"b\",[\"Sensor\",\"Lamp\"],2.5,"
                         "\"Sensor\",\"Lamp\",\"c\",\"Sensor\",\"3\"]");
}

static void test_filters(void **state)
{
    check("$.store.book[?@.price < 10].title", "[\"Sayings of the Century\",\"Moby Dick\"]");
    check("$.store.book[?(@.price >= 12.99)].price", "[12.99,22.99]");
    check("$.store.book[?@.isbn].title", "[\"Moby Dick\",\"The Lord of the Rings\"]");
    check("$.store.book[?!@.isbn].price", "[8.95,12.99]");
    check("$.store.book[?@.category == 'fiction' && @.price < 20].price", "[12.99,8.99]");
    check("$.store.book[?@.price < 9 || @.price > 20].price", "[8.95,8.99,22.99]");
    check("$.store.book[?!(@.price < 9 || @.price > 20)].price", "[12.99]");
    check("$.store.book[?@.author > 'J'].author", "[\"Nigel Rees\",\"J. R. R. Tolkien\"]");
    check("$.store.book[?@.price == 8.95].price", "[8.95]");
    check("$.things[?@.n == 1].id", "[\"a\"]");
    check("$.things[?@.n == 1.0].id", "[\"a\"]");    /* 1 == 1.0 */
    check("$.things[?@.n < 3].id", "[\"a\",\"b\"]"); /* "3" is a string: not < 3 */
    check("$.things[?@.n == '3'].id", "[\"c\"]");
    check("$.things[?@.flag == true].id", "[\"a\"]");
    check("$.things[?@.nil == null].id", "[\"a\"]");
    check("$.things[?@.missing == null].id", "[]"); /* missing is not null */
    check("$.things[?@.missing == @.other].id", "[\"a\",\"b\",\"c\"]");
    check("$.things[?@.missing != 1].id", "[\"a\",\"b\",\"c\"]");
    check("$.things[?@['@type'] == 'Sensor'].id", "[\"c\"]");
    check("$.things[?@['@type'][0] == 'Sensor'].id", "[\"b\"]");
    check("$.things[?@.id == $.things[2].id].n", "[\"3\"]");
    check("$..[?@.color].price", "[399]");
    check("$.things[?@.id=='a',?@.id=='c'].id", "[\"a\",\"c\"]");
    check("$.things[?@.n<=2.5].id", "[\"a\",\"b\"]");
    check("$.things[?@.n>1].id", "[\"b\"]");
    check("$.things[?@.id != 'b'].id", "[\"a\",\"c\"]");
    check("$.things[?@.id == \"b\"].id", "[\"b\"]");
    check("$.store.book[?@.price > -1e3].price", "[8.95,12.99,8.99,22.99]");
}

static void check_error(const char *q, size_t want_off, const char *want_text, int want_rc)
{
    tw_jsonpath *p = (tw_jsonpath *)1;
    char err[200] = "";
    size_t off = 9999;
    int rc = tw_jsonpath_compile(q, &p, err, sizeof err, &off);
    if (rc != want_rc) fail_msg("%s: rc %d, want %d (%s)", q, rc, want_rc, err);
    assert_null(p);
    if (off != want_off) fail_msg("%s: offset %zu, want %zu (%s)", q, off, want_off, err);
    if (!strstr(err, want_text)) fail_msg("%s: message \"%s\" lacks \"%s\"", q, err, want_text);
    char prefix[40];
    snprintf(prefix, sizeof prefix, "at offset %zu", want_off);
    if (strncmp(err, prefix, strlen(prefix)) != 0) fail_msg("%s: message \"%s\"", q, err);
}

static void test_errors(void **state)
{
    check_error("", 0, "starts with '$'", TW_EINVAL);
    check_error("store", 0, "starts with '$'", TW_EINVAL);
    check_error("$.", 2, "member name", TW_EINVAL);
    check_error("$.1abc", 2, "member name", TW_EINVAL);
    check_error("$[", 2, "expected a selector", TW_EINVAL);
    check_error("$['a'", 5, "expected ']'", TW_EINVAL);
    check_error("$['a", 2, "unterminated string", TW_EINVAL);
    check_error("$['a\\q']", 5, "unknown escape", TW_EINVAL);
    check_error("$['\\ud800']", 9, "surrogate", TW_EINVAL);
    check_error("$[1:2:3]", 5, "steps", TW_EINVAL);
    check_error("$[01]", 2, "leading zero", TW_EINVAL);
    check_error("$[99999999999999999999]", 2, "out of range", TW_EINVAL);
    check_error("$.a b", 4, "expected '.', '..' or '['", TW_EINVAL);
    check_error("$[?@.a ==]", 9, "expected @, $", TW_EINVAL);
    check_error("$[?@.a == 1", 11, "expected ']'", TW_EINVAL);
    check_error("$[?(@.a == 1]", 12, "expected ')'", TW_EINVAL);
    check_error("$[?@..a]", 4, "singular paths", TW_EINVAL);
    check_error("$[?@.*]", 4, "singular paths", TW_EINVAL);
    check_error("$[?@[*]]", 5, "singular paths", TW_EINVAL);
    check_error("$[?'a']", 6, "comparison operator", TW_EINVAL);
    check_error("$[?@.a = 1]", 7, "expected ',' or ']'", TW_EINVAL);
    check_error("$[?@.a == 1.]", 12, "digit after '.'", TW_EINVAL);
    check_error("$[?@.a == tru]", 10, "expected @, $", TW_EINVAL);
}

static void test_limits(void **state)
{
    char *q = malloc(TW_JSONPATH_MAX_LEN + 10);
    memset(q, 'a', TW_JSONPATH_MAX_LEN + 9);
    q[0] = '$';
    q[1] = '.';
    q[TW_JSONPATH_MAX_LEN + 9] = '\0';
    tw_jsonpath *p = NULL;
    assert_int_equal(tw_jsonpath_compile(q, &p, NULL, 0, NULL), TW_ETOOBIG);
    /* many selectors: over the node budget */
    size_t n = 0;
    n += (size_t)sprintf(q, "$[");
    for (int i = 0; i < TW_JSONPATH_MAX_NODES; i++)
        n += (size_t)sprintf(q + n, "%d,", i % 10);
    sprintf(q + n, "0]");
    char err[100];
    assert_int_equal(tw_jsonpath_compile(q, &p, err, sizeof err, NULL), TW_ETOOBIG);
    assert_non_null(strstr(err, "too complex"));
    /* deep nesting of parentheses */
    n = (size_t)sprintf(q, "$[?");
    for (int i = 0; i < 40; i++)
        q[n++] = '(';
    q[n] = '\0';
    strcat(q, "@.a");
    assert_int_equal(tw_jsonpath_compile(q, &p, err, sizeof err, NULL), TW_ETOOBIG);
    assert_non_null(strstr(err, "nested"));
    free(q);
}

static int stop_after_two(void *ctx, json_t *node)
{
    int *n = ctx;
    return ++*n == 2 ? 42 : 0;
}

static void test_eval_stops_and_max(void **state)
{
    tw_jsonpath *p = NULL;
    assert_int_equal(tw_jsonpath_compile("$..price", &p, NULL, 0, NULL), 0);
    json_t *d = doc(), *res = NULL;
    int n = 0;
    assert_int_equal(tw_jsonpath_eval(p, d, stop_after_two, &n), 42);
    assert_int_equal(n, 2);
    assert_int_equal(tw_jsonpath_query(p, d, 3, &res), TW_ETOOBIG);
    assert_null(res);
    assert_int_equal(tw_jsonpath_query(p, d, 5, &res), 0);
    assert_int_equal(json_array_size(res), 5);
    json_decref(res);
    json_decref(d);
    tw_jsonpath_free(p);
}

static void test_step_budget(void **state)
{
    tw_jsonpath *p = NULL;
    assert_int_equal(tw_jsonpath_compile("$..[?@.price > 0]", &p, NULL, 0, NULL), 0);
    json_t *d = doc(), *res = NULL;
    assert_int_equal(tw_jsonpath_query(p, d, 100, &res), 0);
    assert_int_equal(json_array_size(res), 5);
    json_decref(res);
    tw_jsonpath_set_budget(p, 10); /* the document has more nodes than that */
    assert_int_equal(tw_jsonpath_query(p, d, 100, &res), TW_ETOOBIG);
    assert_null(res);
    json_decref(d);
    tw_jsonpath_free(p);
    /* also when split over threads */
    json_t *big = json_array();
    for (int i = 0; i < 5000; i++)
        json_array_append_new(big, json_pack("{s:i}", "n", i));
    assert_int_equal(tw_jsonpath_compile("$[?@.n >= 0].n", &p, NULL, 0, NULL), 0);
    assert_int_equal(tw_jsonpath_query_parallel(p, big, 10000, 2, &res), 0);
    assert_int_equal(json_array_size(res), 5000);
    json_decref(res);
    tw_jsonpath_set_budget(p, 1000);
    assert_int_equal(tw_jsonpath_query_parallel(p, big, 10000, 2, &res), TW_ETOOBIG);
    assert_null(res);
    tw_jsonpath_free(p);
    json_decref(big);
}

static const char *hint(const char *q)
{
    static tw_jsonpath *p;
    tw_jsonpath_free(p);
    p = NULL;
    assert_int_equal(tw_jsonpath_compile(q, &p, NULL, 0, NULL), 0);
    return tw_jsonpath_eq_hint(p, "@type");
}

static void test_index_hint(void **state)
{
    assert_string_equal(hint("$[?@['@type']=='Lamp']"), "Lamp");
    assert_string_equal(hint("$[?(@.@type == \"Lamp\")].id"), "Lamp");
    assert_string_equal(hint("$[?'Lamp' == @['@type']]"), "Lamp");
    assert_string_equal(hint("$[?@.n > 1 && (@['@type']=='Lamp' && @.x)]"), "Lamp");
    assert_null(hint("$[?@['@type']=='Lamp' || @.n > 1]")); /* not required */
    assert_null(hint("$[?!(@['@type']=='Lamp')]"));
    assert_null(hint("$[?@['@type'] != 'Lamp']"));
    assert_null(hint("$[?@['@type'][0]=='Lamp']"));
    assert_null(hint("$[?@['@type']==1]"));
    assert_null(hint("$[?@['@type']=='Lamp' && @.id == $[0].id]")); /* uses $ */
    assert_null(hint("$..[?@['@type']=='Lamp']"));
    assert_null(hint("$[*]"));
    assert_null(hint("$"));
    hint("$"); /* frees the last one */
}

static void test_root_only(void **state)
{
    tw_jsonpath *p = NULL;
    assert_int_equal(tw_jsonpath_compile("$", &p, NULL, 0, NULL), 0);
    json_t *d = doc(), *res = NULL;
    assert_int_equal(tw_jsonpath_query(p, d, 10, &res), 0);
    assert_int_equal(json_array_size(res), 1);
    assert_true(json_array_get(res, 0) == d);
    json_decref(res);
    json_decref(d);
    tw_jsonpath_free(p);
}

static void test_parallel_matches_sequential(void **state)
{
    json_t *big = json_array();
    for (int i = 0; i < 10000; i++)
        json_array_append_new(big, json_pack("{s:i,s:s,s:{s:i}}", "n", i, "t",
                                             i % 3 ? "Lamp" : "Sensor", "p", "v", i % 7));
    static const char *const queries[] = {
        "$[?@.t=='Sensor' && @.p.v > 3].n",
        "$[*].p.v",
        "$[?@.n >= 9990]",
        "$[?@.n < 0]",
        "$..v", /* not split: same path as sequential */
        "$[5,6].n",
    };
    for (size_t q = 0; q < sizeof queries / sizeof queries[0]; q++) {
        tw_jsonpath *p = NULL;
        assert_int_equal(tw_jsonpath_compile(queries[q], &p, NULL, 0, NULL), 0);
        json_t *seq = NULL, *par = NULL;
        assert_int_equal(tw_jsonpath_query(p, big, 100000, &seq), 0);
        for (int t = 1; t <= 4; t++) {
            assert_int_equal(tw_jsonpath_query_parallel(p, big, 100000, t, &par), 0);
            if (!json_equal(seq, par)) fail_msg("%s with %d threads differs", queries[q], t);
            json_decref(par);
        }
        json_decref(seq);
        tw_jsonpath_free(p);
    }
    /* the result bound holds across parts */
    tw_jsonpath *p = NULL;
    json_t *res = NULL;
    assert_int_equal(tw_jsonpath_compile("$[*].n", &p, NULL, 0, NULL), 0);
    assert_int_equal(tw_jsonpath_query_parallel(p, big, 9999, 2, &res), TW_ETOOBIG);
    assert_null(res);
    assert_int_equal(tw_jsonpath_query_parallel(p, big, 10000, 2, &res), 0);
    assert_int_equal(json_array_size(res), 10000);
    json_decref(res);
    tw_jsonpath_free(p);
    json_decref(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root_only),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_indexes_and_slices),
        cmocka_unit_test(test_wildcards_and_descent),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_eval_stops_and_max),
        cmocka_unit_test(test_parallel_matches_sequential),
        cmocka_unit_test(test_step_budget),
        cmocka_unit_test(test_index_hint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
