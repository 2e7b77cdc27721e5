/*
 * test_twin_values.c - the value store: latest value and timestamp per
 * (twin, kind, name), the changed flag, reads of all values, write-behind
 * (rows reach SQLite without the caller waiting, one job per batch, updates
 * coalesced), reload after a restart, deletion of a twin's values, and a
 * flood from several threads.
 */
#include "runtime/store.h"
#include "tw_test.h"
#include "twin/values.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fx {
    char dir[512];
    char db[600];
    tw_store *store;
    tw_values *v;
} fx;

static void open_values(fx *f, const tw_values_opts *o)
{
    tw_store_opts so = {.synchronous_normal = true};
    assert_int_equal(tw_store_open(f->db, &so, &f->store), 0);
    assert_int_equal(tw_values_open(f->store, o, &f->v), 0);
}

static void close_values(fx *f)
{
    tw_values_close(f->v);
    tw_store_close(f->store);
    f->v = NULL;
    f->store = NULL;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    tw_test_tmpdir(f->dir, "twin-values");
    snprintf(f->db, sizeof f->db, "%s/twind.db", f->dir);
    open_values(f, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->v) close_values(f);
    tw_test_rmdir(f->dir);
    free(f);
    return 0;
}

static int count_job(tw_store_tx *tx, void *arg)
{
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT COUNT(*) FROM twin_values");
    if (!st || sqlite3_step(st) != SQLITE_ROW) return TW_EDB;
    *(int *)arg = sqlite3_column_int(st, 0);
    return 0;
}

static int rows(fx *f)
{
    int n = -1;
    assert_int_equal(tw_store_read(f->store, count_job, &n), 0);
    return n;
}

static void test_set_get_changed(void **state)
{
    fx *f = *state;
    bool changed = false;
    json_t *v21 = json_real(21.5), *v22 = json_real(22.0), *v21b = json_real(21.5);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "temp", v21, 1000, &changed),
                     0);
    assert_true(changed); /* first value */
    json_t *got = NULL;
    int64_t ts = 0;
    assert_int_equal(tw_values_get(f->v, "dtw:a:t", TW_AFF_PROPERTY, "temp", &got, &ts), 0);
    assert_true(json_equal(got, v21));
    assert_int_equal(ts, 1000);
    json_decref(got);
    /* same value: unchanged but the timestamp moves */
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "temp", v21b, 2000, &changed),
                     0);
    assert_false(changed);
    assert_int_equal(tw_values_get(f->v, "dtw:a:t", TW_AFF_PROPERTY, "temp", &got, &ts), 0);
    assert_int_equal(ts, 2000);
    json_decref(got);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "temp", v22, 3000, &changed),
                     0);
    assert_true(changed);
    /* events always count as changed */
    json_t *ev = json_string("hot");
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_EVENT, "alarm", ev, 4000, &changed), 0);
    assert_true(changed);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_EVENT, "alarm", ev, 5000, &changed), 0);
    assert_true(changed);
    /* kinds are separate namespaces */
    assert_int_equal(tw_values_get(f->v, "dtw:a:t", TW_AFF_EVENT, "temp", &got, NULL),
                     TW_ENOTFOUND);
    assert_int_equal(tw_values_get(f->v, "dtw:a:t", TW_AFF_PROPERTY, "alarm", &got, NULL),
                     TW_ENOTFOUND);
    assert_int_equal(tw_values_get(f->v, "dtw:a:other", TW_AFF_PROPERTY, "temp", &got, NULL),
                     TW_ENOTFOUND);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_ACTION, "x", ev, 1, NULL), TW_EINVAL);
    /* all values, with and without timestamps */
    json_t *v_on = json_true();
    tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "on", v_on, 6000, NULL);
    json_t *all = NULL;
    assert_int_equal(tw_values_get_all(f->v, "dtw:a:t", TW_AFF_PROPERTY, false, &all), 0);
    assert_int_equal(json_object_size(all), 2);
    assert_true(json_equal(json_object_get(all, "temp"), v22));
    assert_true(json_is_true(json_object_get(all, "on")));
    json_decref(all);
    assert_int_equal(tw_values_get_all(f->v, "dtw:a:t", TW_AFF_EVENT, true, &all), 0);
    json_t *alarm = json_object_get(all, "alarm");
    assert_string_equal(json_string_value(json_object_get(alarm, "value")), "hot");
    assert_string_equal(json_string_value(json_object_get(alarm, "timestamp")),
                        "1970-01-01T00:00:05.000Z");
    json_decref(all);
    assert_int_equal(tw_values_get_all(f->v, "dtw:none:x", TW_AFF_PROPERTY, false, &all), 0);
    assert_int_equal(json_object_size(all), 0);
    json_decref(all);
    json_decref(v21);
    json_decref(v21b);
    json_decref(v22);
    json_decref(ev);
    json_decref(v_on);
}

static void test_write_behind_and_reload(void **state)
{
    fx *f = *state;
    for (int t = 0; t < 10; t++) {
        char id[32];
        snprintf(id, sizeof id, "dtw:a:t%d", t);
        for (int p = 0; p < 5; p++) {
            char name[16];
            snprintf(name, sizeof name, "p%d", p);
            for (int k = 0; k < 20; k++) { /* 20 updates per key coalesce */
                json_t *val = json_pack("{s:i,s:i}", "k", k, "t", t);
                assert_int_equal(
                    tw_values_set(f->v, id, TW_AFF_PROPERTY, name, val, 1000 + k, NULL), 0);
                json_decref(val);
            }
        }
    }
    assert_int_equal(tw_values_flush(f->v), 0);
    assert_int_equal(rows(f), 50);
    tw_values_stats st;
    tw_values_get_stats(f->v, &st);
    assert_int_equal(st.updates, 1000);
    assert_int_equal(st.entries, 50);
    assert_true(st.flushed >= 50 && st.flushed < 1000); /* coalesced */
    assert_true(st.batches >= 1);

    /* the flusher writes without an explicit flush */
    json_t *late = json_string("late");
    tw_values_set(f->v, "dtw:a:t0", TW_AFF_EVENT, "ev", late, 99, NULL);
    for (int i = 0; i < 500 && rows(f) != 51; i++)
        usleep(10000);
    assert_int_equal(rows(f), 51);
    json_decref(late);

    close_values(f);
    open_values(f, NULL);
    json_t *got = NULL;
    int64_t ts = 0;
    assert_int_equal(tw_values_get(f->v, "dtw:a:t7", TW_AFF_PROPERTY, "p3", &got, &ts), 0);
    assert_int_equal(json_integer_value(json_object_get(got, "k")), 19);
    assert_int_equal(json_integer_value(json_object_get(got, "t")), 7);
    assert_int_equal(ts, 1019);
    json_decref(got);
    assert_int_equal(tw_values_get(f->v, "dtw:a:t0", TW_AFF_EVENT, "ev", &got, &ts), 0);
    assert_string_equal(json_string_value(got), "late");
    json_decref(got);
    tw_values_stats st2;
    tw_values_get_stats(f->v, &st2);
    assert_int_equal(st2.entries, 51);
}

static void test_scalars_and_null_persist(void **state)
{
    fx *f = *state;
    json_t *vals[] = {json_null(), json_integer(-5), json_string("s"), json_false(),
                      json_pack("[i,i]", 1, 2)};
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof name, "v%d", i);
        tw_values_set(f->v, "dtw:a:s", TW_AFF_PROPERTY, name, vals[i], i, NULL);
    }
    close_values(f);
    open_values(f, NULL);
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof name, "v%d", i);
        json_t *got = NULL;
        assert_int_equal(tw_values_get(f->v, "dtw:a:s", TW_AFF_PROPERTY, name, &got, NULL), 0);
        assert_true(json_equal(got, vals[i]));
        json_decref(got);
        json_decref(vals[i]);
    }
}

static void test_delete_twin(void **state)
{
    fx *f = *state;
    json_t *one = json_integer(1);
    tw_values_set(f->v, "dtw:a:gone", TW_AFF_PROPERTY, "p", one, 1, NULL);
    tw_values_set(f->v, "dtw:a:gone", TW_AFF_EVENT, "e", one, 1, NULL);
    tw_values_set(f->v, "dtw:a:kept", TW_AFF_PROPERTY, "p", one, 1, NULL);
    assert_int_equal(tw_values_flush(f->v), 0);
    assert_int_equal(rows(f), 3);
    /* dirty again, then deleted before the next flush: nothing comes back */
    tw_values_set(f->v, "dtw:a:gone", TW_AFF_PROPERTY, "p", one, 2, NULL);
    assert_int_equal(tw_values_delete_twin(f->v, "dtw:a:gone"), 0);
    json_t *got = NULL;
    assert_int_equal(tw_values_get(f->v, "dtw:a:gone", TW_AFF_PROPERTY, "p", &got, NULL),
                     TW_ENOTFOUND);
    assert_int_equal(tw_values_flush(f->v), 0);
    assert_int_equal(rows(f), 1);
    tw_values_stats st;
    tw_values_get_stats(f->v, &st);
    assert_int_equal(st.entries, 1);
    close_values(f);
    open_values(f, NULL);
    assert_int_equal(tw_values_get(f->v, "dtw:a:gone", TW_AFF_EVENT, "e", &got, NULL),
                     TW_ENOTFOUND);
    assert_int_equal(tw_values_get(f->v, "dtw:a:kept", TW_AFF_PROPERTY, "p", &got, NULL), 0);
    json_decref(got);
    /* a deleted twin can come back */
    tw_values_set(f->v, "dtw:a:gone", TW_AFF_PROPERTY, "p", one, 3, NULL);
    assert_int_equal(tw_values_get(f->v, "dtw:a:gone", TW_AFF_PROPERTY, "p", &got, NULL), 0);
    json_decref(got);
    json_decref(one);
}

static void test_capacity(void **state)
{
    fx *f = *state;
    close_values(f);
    tw_values_opts o = {.max_entries = 3};
    open_values(f, &o);
    json_t *one = json_integer(1);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "a", one, 1, NULL), 0);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "b", one, 1, NULL), 0);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "c", one, 1, NULL), 0);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "d", one, 1, NULL), TW_EFULL);
    assert_int_equal(tw_values_set(f->v, "dtw:a:t", TW_AFF_PROPERTY, "a", one, 2, NULL), 0);
    json_decref(one);
}

typedef struct flood_arg {
    tw_values *v;
    int t;
} flood_arg;

static void *flood(void *arg)
{
    flood_arg *a = arg;
    char id[32];
    snprintf(id, sizeof id, "dtw:a:f%d", a->t);
    for (int i = 0; i < 20000; i++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", i % 50);
        json_t *val = json_integer(i);
        if (tw_values_set(a->v, id, TW_AFF_PROPERTY, name, val, i, NULL) != 0) abort();
        json_decref(val);
    }
    return NULL;
}

static void test_flood(void **state)
{
    fx *f = *state;
    close_values(f);
    tw_values_opts o = {.flush_ms = 5, .batch = 64};
    open_values(f, &o);
    pthread_t th[3];
    flood_arg fa[3];
    for (int i = 0; i < 3; i++) {
        fa[i] = (flood_arg){.v = f->v, .t = i};
        pthread_create(&th[i], NULL, flood, &fa[i]);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    close_values(f);
    open_values(f, NULL);
    for (int t = 0; t < 3; t++) {
        char id[32];
        snprintf(id, sizeof id, "dtw:a:f%d", t);
        for (int p = 0; p < 50; p++) {
            char name[16];
            snprintf(name, sizeof name, "p%d", p);
            json_t *got = NULL;
            assert_int_equal(tw_values_get(f->v, id, TW_AFF_PROPERTY, name, &got, NULL), 0);
            assert_int_equal(json_integer_value(got), 19950 + p); /* the last write */
            json_decref(got);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_set_get_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_behind_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scalars_and_null_persist, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_twin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
