/*
 * test_config.c - defaults, loading, and errors that name FILE:LINE:COLUMN.
 */
#include "runtime/config.h"
#include "tw_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static char dir[512], path[600];

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_defaults(void **state)
{
    tw_config c;
    tw_config_defaults(&c);
    assert_string_equal(c.data_dir, "./twind-data");
    assert_int_equal(c.max_body, 1024 * 1024);
    assert_int_equal(c.max_depth, 32);
    assert_int_equal(c.queue_ttl_ms, 3600 * 1000);
    assert_int_equal(c.store_linger_ms, 20);
    assert_true(c.store_idle_priority);
    tw_config_free(&c);
}

static void test_load(void **state)
{
    write_file(
        "{\"data\": \"/var/lib/twind\", \"rate\": 5, \"queue_ttl_s\": 60, \"store_linger_ms\": 3,\n"
        " \"store_idle_priority\": false, \"http\": {\"http\": \"127.0.0.1:8080\"}}");
    tw_config c;
    tw_config_defaults(&c);
    char err[700];
    assert_int_equal(tw_config_load(&c, path, err, sizeof err), 0);
    assert_string_equal(c.data_dir, "/var/lib/twind");
    assert_true(c.rate == 5);
    assert_int_equal(c.queue_ttl_ms, 60000);
    assert_int_equal(c.store_linger_ms, 3);
    assert_false(c.store_idle_priority);
    assert_string_equal(json_string_value(json_object_get(tw_config_section(&c, "http"), "http")),
                        "127.0.0.1:8080");
    assert_null(tw_config_section(&c, "nng"));
    tw_config_free(&c);
}

static void expect_error(const char *text, const char *where)
{
    write_file(text);
    tw_config c;
    tw_config_defaults(&c);
    char err[700], want[700];
    assert_int_equal(tw_config_load(&c, path, err, sizeof err), TW_EINVAL);
    snprintf(want, sizeof want, "%s:%s", path, where);
    assert_memory_equal(err, want, strlen(want));
    tw_config_free(&c);
}

static void test_errors_name_line_and_column(void **state)
{
    expect_error("{\n  \"rate\": 5,\n  \"burst\": ,\n}", "3:12:"); /* syntax */
    expect_error("{\n  \"data\": 7\n}", "2:3: 'data' must be a string");
    expect_error("{\"rate\": 1,\n\n    \"burst\": \"lots\"}", "3:5: 'burst' must be a number");
    expect_error("[1]", "1:1: the configuration must be a JSON object");
    expect_error("{\"middleware\": \"log\"}", "1:2: 'middleware' must be an array");
    expect_error("{\"store_linger_ms\": 1e12}", "1:2: 'store_linger_ms' must be a number");
    expect_error("{\"store_linger_ms\": -1}", "1:2: 'store_linger_ms' must be a number");
    expect_error("{\"store_idle_priority\": 1}",
                 "1:2: 'store_idle_priority' must be true or false");
}

static void test_missing_file(void **state)
{
    tw_config c;
    tw_config_defaults(&c);
    char err[700];
    assert_int_equal(tw_config_load(&c, "/nonexistent/twind.json", err, sizeof err), TW_EINVAL);
    assert_non_null(strstr(err, "/nonexistent/twind.json"));
    tw_config_free(&c);
}

int main(void)
{
    tw_test_tmpdir(dir, "config");
    snprintf(path, sizeof path, "%s/twind.json", dir);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_errors_name_line_and_column),
        cmocka_unit_test(test_missing_file),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tw_test_rmdir(dir);
    return rc;
}
