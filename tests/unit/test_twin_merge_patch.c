/*
 * test_twin_merge_patch.c - RFC 7396: every example of Appendix A and the
 * section 3 example, inputs left untouched, and diff() producing patches
 * that turn one TD into another.
 */
#include "twin/merge_patch.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <string.h>

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY, &e);
    if (!j) fail_msg("bad test JSON %s: %s", s, e.text);
    return j;
}

static void check(const char *target, const char *patch, const char *expected)
{
    json_t *t = J(target), *p = J(patch), *x = J(expected);
    json_t *t_before = json_deep_copy(t), *p_before = json_deep_copy(p);
    json_t *r = tw_merge_patch_apply(t, p);
    assert_non_null(r);
    if (!json_equal(r, x)) {
        char *got = json_dumps(r, JSON_ENCODE_ANY | JSON_COMPACT);
        fail_msg("%s + %s: got %s, want %s", target, patch, got, expected);
    }
    assert_true(json_equal(t, t_before)); /* inputs unchanged */
    assert_true(json_equal(p, p_before));
    json_decref(r);
    json_decref(t);
    json_decref(p);
    json_decref(x);
    json_decref(t_before);
    json_decref(p_before);
}

static void test_rfc7396_appendix_a(void **state)
{
    check("{\"a\":\"b\"}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
    check("{\"a\":\"b\"}", "{\"b\":\"c\"}", "{\"a\":\"b\",\"b\":\"c\"}");
    check("{\"a\":\"b\"}", "{\"a\":null}", "{}");
    check("{\"a\":\"b\",\"b\":\"c\"}", "{\"a\":null}", "{\"b\":\"c\"}");
    check("{\"a\":[\"b\"]}", "{\"a\":\"c\"}", "{\"a\":\"c\"}");
    check("{\"a\":\"c\"}", "{\"a\":[\"b\"]}", "{\"a\":[\"b\"]}");
    check("{\"a\":{\"b\":\"c\"}}", "{\"a\":{\"b\":\"d\",\"c\":null}}", "{\"a\":{\"b\":\"d\"}}");
    check("{\"a\":[{\"b\":\"c\"}]}", "{\"a\":[1]}", "{\"a\":[1]}");
    check("[\"a\",\"b\"]", "[\"c\",\"d\"]", "[\"c\",\"d\"]");
    check("{\"a\":\"b\"}", "[\"c\"]", "[\"c\"]");
    check("{\"a\":\"foo\"}", "null", "null");
    check("{\"a\":\"foo\"}", "\"bar\"", "\"bar\"");
    check("{\"e\":null}", "{\"a\":1}", "{\"e\":null,\"a\":1}");
    check("[1,2]", "{\"a\":\"b\",\"c\":null}", "{\"a\":\"b\"}");
    check("{}", "{\"a\":{\"bb\":{\"ccc\":null}}}", "{\"a\":{\"bb\":{}}}");
}

static void test_rfc7396_section3(void **state)
{
    check("{\"title\":\"Goodbye!\",\"author\":{\"givenName\":\"John\",\"familyName\":\"Doe\"},"
          "\"tags\":[\"example\",\"sample\"],\"content\":\"This will be unchanged\"}",
          "{\"title\":\"Hello!\",\"phoneNumber\":\"+01-123-456-7890\","
          "\"author\":{\"familyName\":null},\"tags\":[\"example\"]}",
          "{\"title\":\"Hello!\",\"author\":{\"givenName\":\"John\"},\"tags\":[\"example\"],"
          "\"content\":\"This will be unchanged\",\"phoneNumber\":\"+01-123-456-7890\"}");
}

static void test_absent_target(void **state)
{
    json_t *p = J("{\"a\":{\"b\":null,\"c\":1}}");
    json_t *r = tw_merge_patch_apply(NULL, p);
    json_t *x = J("{\"a\":{\"c\":1}}");
    assert_true(json_equal(r, x));
    json_decref(r);
    json_decref(x);
    json_decref(p);
}

static void roundtrip(const char *from, const char *to, const char *want_patch)
{
    json_t *f = J(from), *t = J(to);
    json_t *p = tw_merge_patch_diff(f, t);
    assert_non_null(p);
    if (want_patch) {
        json_t *w = J(want_patch);
        if (!json_equal(p, w)) {
            char *got = json_dumps(p, JSON_COMPACT);
            fail_msg("diff %s -> %s: got %s, want %s", from, to, got, want_patch);
        }
        json_decref(w);
    }
    json_t *r = tw_merge_patch_apply(f, p);
    assert_true(json_equal(r, t));
    json_decref(r);
    json_decref(p);
    json_decref(f);
    json_decref(t);
}

static void test_diff(void **state)
{
    roundtrip("{\"a\":1}", "{\"a\":1}", "{}");
    roundtrip("{\"a\":1,\"b\":2}", "{\"a\":1}", "{\"b\":null}");
    roundtrip("{\"a\":1}", "{\"a\":2,\"c\":[1]}", "{\"a\":2,\"c\":[1]}");
    roundtrip("{\"p\":{\"x\":{\"type\":\"number\"},\"y\":{}}}",
              "{\"p\":{\"x\":{\"type\":\"integer\"},\"y\":{}}}",
              "{\"p\":{\"x\":{\"type\":\"integer\"}}}");
    roundtrip("{\"a\":[1,2,3]}", "{\"a\":[1,2]}", "{\"a\":[1,2]}");
    roundtrip("{\"a\":{\"b\":1}}", "{\"a\":\"s\"}", "{\"a\":\"s\"}");
    roundtrip("{\"a\":\"s\"}", "{\"a\":{\"b\":1}}", "{\"a\":{\"b\":1}}");
    /* a realistic TD change: title, one property added, one removed */
    roundtrip(
        "{\"id\":\"urn:x\",\"title\":\"Lamp\",\"properties\":{\"on\":{\"type\":\"boolean\"},"
        "\"dim\":{\"type\":\"integer\"}}}",
        "{\"id\":\"urn:x\",\"title\":\"Lamp 2\",\"properties\":{\"on\":{\"type\":\"boolean\"},"
        "\"color\":{\"type\":\"string\"}}}",
        "{\"title\":\"Lamp 2\",\"properties\":{\"dim\":null,\"color\":{\"type\":\"string\"}}}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7396_appendix_a),
        cmocka_unit_test(test_rfc7396_section3),
        cmocka_unit_test(test_absent_target),
        cmocka_unit_test(test_diff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
