/*
 * test_twin_intern.c - the leaf table: equal string and number leaves of
 * different trees become one shared leaf, trees stay equal to what they
 * were, types are never mixed up, sweeping drops only unreferenced leaves,
 * and concurrent interning is safe; in the directory, stored TDs share them.
 */
#include "runtime/store.h"
#include "tw_test.h"
#include "twin/directory.h"
#include "twin/intern.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char DOC[] =
    "{\"a\":\"number\",\"b\":[\"number\",1,1.0,\"1\",0.0,-0.0,true,null],"
    "\"c\":{\"d\":\"number\",\"e\":12345678901234,\"f\":2.5},\"g\":[[\"x\"]]}";

static json_t *J(void)
{
    return json_loads(DOC, 0, NULL);
}

static void test_shares_equal_leaves(void **state)
{
    tw_intern *in = tw_intern_new();
    json_t *t1 = J(), *t2 = J(), *orig = J();
    tw_intern_tree(in, t1);
    tw_intern_tree(in, t2);
    assert_true(json_equal(t1, orig));
    assert_true(json_equal(t2, orig));
    /* the same leaf object everywhere it is equal */
    json_t *a1 = json_object_get(t1, "a"), *a2 = json_object_get(t2, "a");
    assert_ptr_equal(a1, a2);
    assert_ptr_equal(a1, json_array_get(json_object_get(t1, "b"), 0));
    assert_ptr_equal(a1, json_object_get(json_object_get(t2, "c"), "d"));
    assert_ptr_equal(json_object_get(json_object_get(t1, "c"), "e"),
                     json_object_get(json_object_get(t2, "c"), "e"));
    assert_ptr_equal(json_array_get(json_array_get(json_object_get(t1, "g"), 0), 0),
                     json_array_get(json_array_get(json_object_get(t2, "g"), 0), 0));
    /* 1, 1.0, "1", 0.0 and -0.0 stay distinct (and keep their types) */
    json_t *b = json_object_get(t1, "b");
    assert_true(json_is_integer(json_array_get(b, 1)));
    assert_true(json_is_real(json_array_get(b, 2)));
    assert_true(json_is_string(json_array_get(b, 3)));
    assert_ptr_not_equal(json_array_get(b, 4), json_array_get(b, 5));
    /* number, 1, 1.0, "1", 0.0, -0.0, 12345678901234, 2.5, x */
    assert_int_equal(tw_intern_count(in), 9);
    json_decref(t1);
    json_decref(t2);
    json_decref(orig);
    tw_intern_free(in);
}

static void test_sweep(void **state)
{
    tw_intern *in = tw_intern_new();
    json_t *t1 = J(), *t2 = json_pack("{s:s,s:s}", "k", "number", "u", "unique");
    tw_intern_tree(in, t1);
    tw_intern_tree(in, t2);
    assert_int_equal(tw_intern_count(in), 10);
    assert_int_equal(tw_intern_sweep(in, 0), 0); /* not doubled: nothing done */
    json_decref(t1);
    /* only t2's leaves ("number", "unique") are still used */
    assert_int_equal(tw_intern_sweep(in, 1), 8);
    assert_int_equal(tw_intern_count(in), 2);
    assert_string_equal(json_string_value(json_object_get(t2, "k")), "number");
    /* a swept leaf comes back as a new canonical one */
    json_t *t3 = J();
    tw_intern_tree(in, t3);
    assert_ptr_equal(json_object_get(t3, "a"), json_object_get(t2, "k"));
    assert_int_equal(tw_intern_count(in), 10);
    json_decref(t2);
    json_decref(t3);
    assert_int_equal(tw_intern_sweep(in, 1), 10);
    assert_int_equal(tw_intern_count(in), 0);
    tw_intern_free(in);
}

static void test_grows(void **state)
{
    tw_intern *in = tw_intern_new();
    json_t *arr = json_array();
    for (int i = 0; i < 20000; i++)
        json_array_append_new(arr, json_integer(i % 5000));
    tw_intern_tree(in, arr);
    assert_int_equal(tw_intern_count(in), 5000);
    assert_ptr_equal(json_array_get(arr, 7), json_array_get(arr, 5007));
    assert_int_equal(json_integer_value(json_array_get(arr, 19999)), 4999);
    json_decref(arr);
    tw_intern_free(in);
}

static void *worker(void *arg)
{
    tw_intern *in = arg;
    for (int i = 0; i < 300; i++) {
        json_t *t = J();
        tw_intern_tree(in, t);
        json_t *copy = json_copy(t); /* readers take references */
        json_decref(t);
        if (i % 50 == 0) tw_intern_sweep(in, 1);
        json_decref(copy);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    tw_intern *in = tw_intern_new();
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, worker, in);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    tw_intern_sweep(in, 1);
    assert_int_equal(tw_intern_count(in), 0);
    tw_intern_free(in);
}

static void test_directory_shares_leaves(void **state)
{
    char dir[512], db[600];
    tw_test_tmpdir(dir, "twin-intern");
    snprintf(db, sizeof db, "%s/twind.db", dir);
    tw_store *s = NULL;
    tw_dir *d = NULL;
    tw_store_opts so = {.synchronous_normal = true};
    assert_int_equal(tw_store_open(db, &so, &s), 0);
    assert_int_equal(tw_dir_open(s, NULL, &d), 0);
    for (int i = 0; i < 2; i++) {
        char id[32];
        snprintf(id, sizeof id, "urn:i:%d", i);
        json_t *td = json_pack("{s:s,s:s,s:{s:{s:s}},s:s,s:{s:{s:s,s:s,s:[{s:s}]}}}", "@context",
                               "https://www.w3.org/2022/wot/td/v1.1", "title", "Same model",
                               "securityDefinitions", "nosec_sc", "scheme", "nosec", "security",
                               "nosec_sc", "properties", "temp", "type", "number", "unit", "cel",
                               "forms", "href", "/temp");
        assert_int_equal(tw_dir_put(d, id, td, NULL, NULL, NULL), 0);
        json_decref(td);
    }
    json_t *a = NULL, *b = NULL;
    assert_int_equal(tw_dir_get_info(d, "urn:i:0", NULL, &a, NULL), 0);
    assert_int_equal(tw_dir_get_info(d, "urn:i:1", NULL, &b, NULL), 0);
    json_t *ta = json_object_get(json_object_get(json_object_get(a, "properties"), "temp"), "unit");
    json_t *tb = json_object_get(json_object_get(json_object_get(b, "properties"), "temp"), "unit");
    assert_ptr_equal(ta, tb);
    assert_ptr_equal(json_object_get(a, "title"), json_object_get(b, "title"));
    assert_ptr_not_equal(json_object_get(a, "id"), json_object_get(b, "id"));
    json_decref(a);
    json_decref(b);
    /* after a restart too */
    tw_dir_close(d);
    assert_int_equal(tw_dir_open(s, NULL, &d), 0);
    assert_int_equal(tw_dir_get_info(d, "urn:i:0", NULL, &a, NULL), 0);
    assert_int_equal(tw_dir_get_info(d, "urn:i:1", NULL, &b, NULL), 0);
    assert_ptr_equal(json_object_get(a, "title"), json_object_get(b, "title"));
    json_decref(a);
    json_decref(b);
    tw_dir_close(d);
    tw_store_close(s);
    tw_test_rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shares_equal_leaves),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_grows),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_directory_shares_leaves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
