/*
 * test_json_enc.c - the fast encoder produces JSON that Jansson reads back
 * as the same value, byte-identical to json_dumps(JSON_COMPACT) where no
 * real number is involved, with every escape a string can need.
 */
#include "runtime/json_enc.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void roundtrip(const char *text, bool same_bytes)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(v);
    size_t len;
    char *ours = tw_json_encode(v, &len);
    assert_non_null(ours);
    assert_int_equal(len, strlen(ours) + 0 * len);
    json_t *back = json_loads(ours, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(back);
    assert_true(json_equal(v, back));
    if (same_bytes) {
        char *theirs = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        assert_string_equal(ours, theirs);
        free(theirs);
    }
    free(ours);
    json_decref(back);
    json_decref(v);
}

static void test_values(void **state)
{
    roundtrip("{}", true);
    roundtrip("[]", true);
    roundtrip("{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}", true);
    roundtrip("[-9223372036854775808,9223372036854775807,0,-1,42]", true);
    roundtrip("\"quote \\\" backslash \\\\ slash / nl \\n tab \\t cr \\r bs \\b ff \\f\"", true);
    roundtrip("\"ctl \\u0001 \\u001f del \\u007f\"", true);
    roundtrip("\"h\\u00e9llo \\ud83d\\ude00\"", true); /* UTF-8 kept as is */
    roundtrip("[0.1,1.5,-2.25,1e300,3.0,123456.789]", false);
}

static void test_reals_are_short_and_exact(void **state)
{
    json_t *v = json_pack("[f,f,f]", 0.1, 1.0, 1.1);
    char *s = tw_json_encode(v, NULL);
    assert_string_equal(s, "[0.1,1.0,1.1]");
    free(s);
    json_decref(v);
}

static void test_embedded_nul(void **state)
{
    json_t *v = json_stringn("a\0b", 3);
    size_t len;
    char *s = tw_json_encode(v, &len);
    assert_int_equal(len, 10);
    assert_memory_equal(s, "\"a\\u0000b\"", 10);
    free(s);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_reals_are_short_and_exact),
        cmocka_unit_test(test_embedded_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
