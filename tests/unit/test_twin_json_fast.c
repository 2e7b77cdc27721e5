/*
 * test_twin_json_fast.c - the twin's JSON copy and encoder: what they
 * produce reads back equal (escapes, control characters, non-ASCII,
 * integers vs reals, extremes), copies are independent, and trees deeper
 * than the limit fail instead of recursing without bound.
 */
#include "twin/json_fast.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const DOCS[] = {
    "{}",
    "[]",
    "{\"a\":1,\"b\":-2,\"c\":9223372036854775807,\"d\":-9223372036854775807}",
    "{\"r\":[0.0,2.0,-0.5,1e300,1.7976931348623157e308,5e-324,0.1,85.5,1234567.0]}",
    "{\"s\":\"quote\\\" backslash\\\\ slash/ nl\\n cr\\r tab\\t bs\\b ff\\f nul\\u0000 "
    "ctl\\u001f del\\u007f\"}",
    "{\"\\u00e9t\\u00e9\":\"\\u65e5\\u672c\\ud83d\\ude00\",\"k\\\"ey\":true}",
    "{\"t\":true,\"f\":false,\"n\":null,\"nested\":{\"a\":[1,[2,[3,{\"x\":\"y\"}]]]}}",
    "\"just a string\"",
    "42",
    "[null,true,false,\"\",0,-0.0]",
};

static void test_roundtrip(void **state)
{
    for (size_t i = 0; i < sizeof DOCS / sizeof DOCS[0]; i++) {
        json_error_t e;
        json_t *j = json_loads(DOCS[i], JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
        if (!j) fail_msg("bad test doc %zu: %s", i, e.text);
        size_t len = 0;
        char *text = tw_json_encode(j, &len);
        assert_non_null(text);
        assert_int_equal(len, strlen(text)); /* NUL is escaped, never raw */
        json_t *back = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
        if (!back) fail_msg("doc %zu: encoded %s does not parse: %s", i, text, e.text);
        if (!json_equal(j, back)) fail_msg("doc %zu: %s read back differently", i, text);
        /* integers stay integers, reals stay reals */
        if (json_is_object(j) && json_object_get(j, "r"))
            assert_true(json_is_real(json_array_get(json_object_get(back, "r"), 1)));
        if (json_is_object(j) && json_object_get(j, "a"))
            assert_true(json_is_integer(json_object_get(back, "a")));
        json_t *copy = tw_json_copy(j);
        assert_true(json_equal(copy, j));
        json_decref(copy);
        json_decref(back);
        free(text);
        json_decref(j);
    }
}

static void test_exact_output(void **state)
{
    json_t *j = json_pack("{s:i,s:f,s:s,s:[b,n]}", "i", 3, "r", 2.0, "s", "a\"b\n", "l", 1);
    char *text = tw_json_encode(j, NULL);
    assert_string_equal(text, "{\"i\":3,\"r\":2.0,\"s\":\"a\\\"b\\n\",\"l\":[true,null]}");
    free(text);
    json_decref(j);
}

static void test_copy_is_independent(void **state)
{
    json_t *j = json_pack("{s:{s:[i]}}", "a", "b", 1);
    json_t *c = tw_json_copy(j);
    json_array_append_new(json_object_get(json_object_get(c, "a"), "b"), json_integer(2));
    json_object_set_new(c, "z", json_true());
    assert_int_equal(json_array_size(json_object_get(json_object_get(j, "a"), "b")), 1);
    assert_null(json_object_get(j, "z"));
    json_decref(c);
    json_decref(j);
    assert_null(tw_json_copy(NULL));
    assert_null(tw_json_encode(NULL, NULL));
}

static void test_depth_limit(void **state)
{
    json_t *root = json_array(), *cur = root;
    for (int i = 0; i < TW_JSON_FAST_MAX_DEPTH; i++) {
        json_t *n = json_array();
        json_array_append_new(cur, n);
        cur = n;
    }
    /* exactly at the limit: fine */
    char *text = tw_json_encode(root, NULL);
    assert_non_null(text);
    free(text);
    json_t *c = tw_json_copy(root);
    assert_non_null(c);
    json_decref(c);
    /* one deeper: refused */
    json_array_append_new(cur, json_array());
    assert_null(tw_json_encode(root, NULL));
    assert_null(tw_json_copy(root));
    json_decref(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_exact_output),
        cmocka_unit_test(test_copy_is_independent),
        cmocka_unit_test(test_depth_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
