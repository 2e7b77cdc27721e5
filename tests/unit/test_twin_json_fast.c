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
    json_t *c = tw_json_copy(root);
    assert_non_null(c);
    json_decref(c);
    /* one deeper: refused */
    json_array_append_new(cur, json_array());
    assert_null(tw_json_copy(root));
    json_decref(root);
}

static json_t *jansson_read(const char *text, size_t len)
{
    return json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
}

static void test_decode_matches_jansson(void **state)
{
    for (size_t i = 0; i < sizeof DOCS / sizeof DOCS[0]; i++) {
        json_t *want = jansson_read(DOCS[i], strlen(DOCS[i]));
        json_t *got = tw_json_decode(DOCS[i], strlen(DOCS[i]));
        assert_non_null(got);
        if (!json_equal(want, got)) fail_msg("doc %zu decodes differently", i);
        /* and what we encode, we read back */
        char *text = tw_json_encode(got, NULL);
        json_t *again = tw_json_decode(text, strlen(text));
        assert_true(json_equal(again, want));
        json_decref(again);
        free(text);
        json_decref(want);
        json_decref(got);
    }
    static const char *const BAD[] = {
        "",
        "{",
        "[1,]",
        "{\"a\"}",
        "{\"a\":}",
        "\"\\x\"",
        "tru",
        "01",
        "1.",
        "-",
        "1e",
        "[1 2]",
        "1 2",
        "{\"a\":1,}",
        "\"\x01\"",
        "\"\xff\"",
        "\"\xc0\xaf\"",
        "\"\\udc00\"",
        "\"\xed\xa0\x80\"",
        "\"abc",
        "[\"\\ud800\"]",
        "nul",
        "{1:2}",
        "1e999",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        json_t *got = tw_json_decode(BAD[i], strlen(BAD[i]));
        if (got) fail_msg("accepted bad input #%zu: %s", i, BAD[i]);
        json_t *j = jansson_read(BAD[i], strlen(BAD[i]));
        if (j) fail_msg("jansson accepts bad input #%zu (the test is wrong)", i);
    }
    /* nesting deeper than the limit */
    char deep[200];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    assert_null(tw_json_decode(deep, sizeof deep));
    json_t *j = jansson_read(deep, sizeof deep); /* jansson allows 2048 levels */
    assert_non_null(j);
    json_decref(j);
}

/* Random mutations of a TD-like document: whatever jansson accepts we
 * accept equal, whatever it rejects we reject (integers out of range aside). */
static void test_decode_mutations(void **state)
{
    static const char BASE[] =
        "{\"@context\":\"https://www.w3.org/2022/wot/td/v1.1\",\"id\":\"urn:x:1\","
        "\"title\":\"T\\u00e9 \\\"q\\\"\",\"n\":[1,-2.5e3,0,true,false,null],"
        "\"properties\":{\"p\":{\"type\":\"number\",\"minimum\":-40.0,\"forms\":"
        "[{\"href\":\"https://h/p\"}]}}}";
    static const char ALPHABET[] = "{}[],:\"\\ 0123456789-+.eEtrufalsn\x01\xc3\xa9\xff";
    unsigned seed = 12345;
    size_t len = strlen(BASE);
    char buf[sizeof BASE + 8];
    int accepted = 0;
    for (int round = 0; round < 20000; round++) {
        memcpy(buf, BASE, len);
        size_t n = len;
        int edits = 1 + rand_r(&seed) % 3;
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rand_r(&seed) % n;
            int op = rand_r(&seed) % 3;
            char c = ALPHABET[(size_t)rand_r(&seed) % (sizeof ALPHABET - 1)];
            if (op == 0) {
                buf[at] = c; /* replace */
            } else if (op == 1 && n > 1) {
                memmove(buf + at, buf + at + 1, n - at - 1); /* delete */
                n--;
            } else if (n < sizeof buf - 1) {
                memmove(buf + at + 1, buf + at, n - at); /* insert */
                buf[at] = c;
                n++;
            }
        }
        json_t *want = jansson_read(buf, n), *got = tw_json_decode(buf, n);
        if (want) {
            accepted++;
            if (!got || !json_equal(want, got))
                fail_msg("round %d: jansson accepts, we %s: %.*s", round, got ? "differ" : "reject",
                         (int)n, buf);
        } else if (got) {
            fail_msg("round %d: jansson rejects, we accept: %.*s", round, (int)n, buf);
        }
        json_decref(want);
        json_decref(got);
    }
    assert_true(accepted > 100); /* the mutations were not all fatal */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_exact_output),
        cmocka_unit_test(test_copy_is_independent),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_decode_matches_jansson),
        cmocka_unit_test(test_decode_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
