/*
 * test_msg.c - the envelope: parsing, every rejection (each naming its
 * field), building responses, one-time shared encoding, ids and times.
 */
#include "runtime/msg.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *field_of(json_t *p)
{
    return json_string_value(json_object_get(p, "field"));
}

static int status_of(json_t *p)
{
    return (int)json_integer_value(json_object_get(p, "status"));
}

/* Parses s expecting rejection; returns the problem (caller frees). */
static json_t *rejected(const char *s, int want_rc)
{
    tw_msg *m = NULL;
    json_t *p = NULL;
    int rc = tw_msg_parse(s, strlen(s), NULL, &m, &p);
    assert_int_equal(rc, want_rc);
    assert_null(m);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "type")) + 0,
                        json_string_value(json_object_get(p, "type")));
    assert_non_null(json_object_get(p, "title"));
    return p;
}

static void expect_field(const char *s, const char *field)
{
    json_t *p = rejected(s, TW_EINVAL);
    assert_int_equal(status_of(p), 400);
    assert_string_equal(field_of(p), field);
    json_decref(p);
}

static void test_parse_valid(void **state)
{
    const char *s = "{\"type\":\"request\",\"operation\":\"invokeaction\",\"thingID\":\"dtw:a:t\","
                    "\"name\":\"go\",\"input\":{\"x\":1},\"correlationID\":\"c1\"}";
    tw_msg *m = NULL;
    json_t *p = NULL;
    assert_int_equal(tw_msg_parse(s, strlen(s), NULL, &m, &p), 0);
    assert_null(p);
    assert_int_equal(tw_msg_get_type(m), TW_TYPE_REQUEST);
    assert_int_equal(tw_msg_get_op(m), TW_OP_INVOKEACTION);
    assert_string_equal(tw_msg_thing(m), "dtw:a:t");
    assert_string_equal(tw_msg_name(m), "go");
    assert_string_equal(tw_msg_correlation(m), "c1");
    assert_int_equal(json_integer_value(json_object_get(tw_msg_get(m, "input"), "x")), 1);
    tw_msg_unref(m);
}

static void test_rejections(void **state)
{
    expect_field("[1,2]", "");
    expect_field("\"hello\"", "");
    expect_field("{\"type\":", "");                                      /* malformed */
    expect_field("{\"operation\":\"ping\"}", "type");                    /* missing type */
    expect_field("{\"type\":\"bogus\",\"operation\":\"ping\"}", "type"); /* unknown type */
    /* near misses of the names, which are told apart by their first bytes */
    static const char *const near[] = {"",        "r",        "re",          "req",
                                       "resp",    "requests", "n",           "notify",
                                       "Request", "responsE", "notificatioN"};
    for (size_t i = 0; i < sizeof near / sizeof near[0]; i++) {
        char buf[128];
        snprintf(buf, sizeof buf, "{\"type\":\"%s\",\"operation\":\"ping\"}", near[i]);
        expect_field(buf, "type");
    }
    expect_field("{\"type\":7,\"operation\":\"ping\"}", "type"); /* wrong type */
    expect_field("{\"type\":\"request\"}", "operation");         /* missing op */
    expect_field("{\"type\":\"request\",\"operation\":\"explode\"}", "operation");
    expect_field("{\"type\":\"request\",\"operation\":\"invokeaction\",\"name\":\"x\"}", "thingID");
    expect_field("{\"type\":\"request\",\"operation\":\"invokeaction\",\"thingID\":\"t\"}", "name");
    expect_field("{\"type\":\"request\",\"operation\":\"writeproperty\",\"thingID\":\"t\","
                 "\"name\":\"p\"}",
                 "input");
    expect_field(
        "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":5,\"name\":\"p\"}",
        "thingID");
    expect_field("{\"type\":\"request\",\"operation\":\"ping\",\"correlationID\":[]}",
                 "correlationID");
    expect_field("{\"type\":\"request\",\"operation\":\"ping\",\"expires\":\"tomorrow\"}",
                 "expires");
    expect_field("{\"type\":\"response\",\"operation\":\"invokeaction\",\"status\":\"great\","
                 "\"correlationID\":\"c\"}",
                 "status");
    expect_field("{\"type\":\"response\",\"operation\":\"invokeaction\"}", "correlationID");
    expect_field("{\"type\":\"notification\",\"operation\":\"subscribeevent\",\"name\":\"e\"}",
                 "thingID");
    expect_field("{\"type\":\"request\",\"operation\":\"updatething\",\"input\":\"td\"}", "input");
    expect_field("{\"type\":\"request\",\"operation\":\"ping\",\"error\":\"x\"}", "error");
    /* duplicate keys are ambiguous: rejected */
    expect_field("{\"type\":\"request\",\"type\":\"request\",\"operation\":\"ping\"}", "");
}

/* Every field whose type the envelope fixes is recognised by its key (a
 * number there is refused, naming it), and keys that differ from one in a
 * byte, or in length, are ordinary members (accepted). */
static void test_typed_fields_by_key(void **state)
{
    static const char *const typed[] = {"type",      "operation", "thingID",       "name",
                                        "messageID", "senderID",  "correlationID", "created",
                                        "timestamp", "expires",   "status",        "error"};
    for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++) {
        char buf[256];
        snprintf(buf, sizeof buf, "{\"type\":\"request\",\"operation\":\"ping\",\"x\":1,\"%s\":5}",
                 typed[i]);
        if (strcmp(typed[i], "type") == 0 || strcmp(typed[i], "operation") == 0) {
            expect_field(buf, ""); /* (a duplicate key) */
        } else {
            expect_field(buf, typed[i]);
        }
        size_t n = strlen(typed[i]);
        for (size_t at = 0; at < n; at++) {
            char key[32];
            memcpy(key, typed[i], n + 1);
            key[at] = key[at] == 'Z' ? 'Y' : 'Z';
            snprintf(buf, sizeof buf, "{\"type\":\"request\",\"operation\":\"ping\",\"%s\":5}",
                     key);
            tw_msg *m = NULL;
            assert_int_equal(tw_msg_parse(buf, strlen(buf), NULL, &m, NULL), 0);
            assert_int_equal(json_integer_value(tw_msg_get(m, key)), 5);
            tw_msg_unref(m);
        }
    }
    /* "input" is recognised too: an updatething's must be an object */
    expect_field("{\"type\":\"request\",\"operation\":\"updatething\",\"input\":5}", "input");
    tw_msg *m = NULL;
    const char *ok = "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":{}}";
    assert_int_equal(tw_msg_parse(ok, strlen(ok), NULL, &m, NULL), 0);
    tw_msg_unref(m);
    /* the length limits of thingID, name and correlationID, at the limit */
    char big[700], buf[1024];
    memset(big, 'a', sizeof big);
    static const struct {
        const char *field;
        int max;
    } lim[] = {{"thingID", 255}, {"name", 255}, {"correlationID", 127}};
    for (size_t i = 0; i < 3; i++) {
        for (int len = lim[i].max; len <= lim[i].max + 1; len++) {
            snprintf(buf, sizeof buf,
                     "{\"type\":\"request\",\"operation\":\"readproperty\",\"thingID\":\"t\","
                     "\"name\":\"n\",\"%s\":\"%.*s\"}",
                     lim[i].field, len, big);
            if (i < 2) /* (replace the short one: no duplicate key) */
                memcpy(strstr(buf, i == 0 ? "\"thingID\":\"t\"" : "\"name\":\"n\""),
                       i == 0 ? "\"thingiD\":\"t\"" : "\"namE\":\"n\"", i == 0 ? 13 : 10);
            if (len == lim[i].max) {
                m = NULL;
                assert_int_equal(tw_msg_parse(buf, strlen(buf), NULL, &m, NULL), 0);
                tw_msg_unref(m);
            } else {
                expect_field(buf, lim[i].field);
            }
        }
    }
}

static void test_invalid_utf8(void **state)
{
    const char bad[] = "{\"type\":\"request\",\"operation\":\"ping\",\"name\":\"\xC3\x28\"}";
    json_t *p = rejected(bad, TW_EINVAL);
    assert_non_null(strstr(json_string_value(json_object_get(p, "detail")), "UTF-8"));
    json_decref(p);
    assert_false(tw_utf8_valid("\xED\xA0\x80", 3));     /* surrogate */
    assert_false(tw_utf8_valid("\xC0\xAF", 2));         /* overlong */
    assert_false(tw_utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_true(tw_utf8_valid("h\xC3\xA9llo \xF0\x9F\x98\x80", 11));
}

static void test_depth_limit(void **state)
{
    char buf[512];
    int n = 0;
    n += snprintf(buf + n, sizeof buf - (size_t)n,
                  "{\"type\":\"request\",\"operation\":\"ping\",\"input\":");
    for (int i = 0; i < 33; i++)
        buf[n++] = '[';
    for (int i = 0; i < 33; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    json_t *p = rejected(buf, TW_EINVAL);
    assert_non_null(strstr(json_string_value(json_object_get(p, "detail")), "deeper"));
    json_decref(p);
    /* exactly at the limit passes: 1 (envelope) + 31 arrays = 32 */
    n = snprintf(buf, sizeof buf, "{\"type\":\"request\",\"operation\":\"ping\",\"input\":");
    for (int i = 0; i < 31; i++)
        buf[n++] = '[';
    for (int i = 0; i < 31; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    tw_msg *m = NULL;
    assert_int_equal(tw_msg_parse(buf, strlen(buf), NULL, &m, NULL), 0);
    tw_msg_unref(m);
    /* brackets inside strings do not count */
    const char *s = "{\"type\":\"request\",\"operation\":\"ping\",\"input\":\"[[[[[[[[[[[[[[[[[["
                    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}";
    assert_int_equal(tw_msg_parse(s, strlen(s), NULL, &m, NULL), 0);
    tw_msg_unref(m);
}

static void test_size_limit(void **state)
{
    tw_msg_limits lim = {.max_bytes = 64, .max_depth = 0};
    const char *s =
        "{\"type\":\"request\",\"operation\":\"ping\",\"input\":\"0123456789012345678\"}";
    tw_msg *m = NULL;
    json_t *p = NULL;
    assert_int_equal(tw_msg_parse(s, strlen(s), &lim, &m, &p), TW_ETOOBIG);
    assert_int_equal(status_of(p), 413);
    json_decref(p);
    lim.max_bytes = 1024;
    assert_int_equal(tw_msg_parse(s, strlen(s), &lim, &m, NULL), 0);
    tw_msg_unref(m);
}

static void test_build_response(void **state)
{
    tw_msg *req = tw_msg_new(TW_TYPE_REQUEST, TW_OP_READPROPERTY, "dtw:a:t", "temp");
    tw_msg_set_str(req, "correlationID", "abc");
    tw_msg *r = tw_msg_new_response(req, TW_STATUS_COMPLETED);
    assert_int_equal(tw_msg_get_type(r), TW_TYPE_RESPONSE);
    assert_int_equal(tw_msg_get_op(r), TW_OP_READPROPERTY);
    assert_string_equal(tw_msg_correlation(r), "abc");
    assert_string_equal(tw_msg_thing(r), "dtw:a:t");
    assert_int_equal(tw_msg_status(r), TW_STATUS_COMPLETED);
    assert_non_null(tw_msg_id(r));
    assert_string_not_equal(tw_msg_id(r), tw_msg_id(req));
    tw_msg *e = tw_msg_new_error(req, tw_problem_from_error(TW_ENOTFOUND, "gone", "name"));
    assert_int_equal(tw_msg_status(e), TW_STATUS_FAILED);
    assert_int_equal(status_of(tw_msg_get(e, "error")), 404);
    /* what we build passes our own validation */
    json_t *p = NULL;
    assert_int_equal(tw_msg_validate(tw_msg_json(r), &p), 0);
    assert_int_equal(tw_msg_validate(tw_msg_json(e), &p), 0);
    tw_msg_unref(e);
    tw_msg_unref(r);
    tw_msg_unref(req);
}

static void test_encode_once_and_freeze(void **state)
{
    tw_msg *m = tw_msg_new(TW_TYPE_NOTIFICATION, TW_OP_SUBSCRIBEEVENT, "dtw:a:t", "e");
    assert_true(tw_msg_writable(m));
    assert_int_equal(tw_msg_set(m, "value", json_integer(42)), 0);
    size_t len1, len2;
    const char *a = tw_msg_encode(m, &len1);
    const char *b = tw_msg_encode(m, &len2);
    assert_ptr_equal(a, b); /* the same shared buffer */
    assert_int_equal(len1, strlen(a));
    assert_non_null(strstr(a, "\"value\":42"));
    /* encoded messages are frozen */
    assert_false(tw_msg_writable(m));
    assert_int_equal(tw_msg_set_str(m, "name", "other"), TW_EINVAL);
    tw_msg *copy = tw_msg_copy(m);
    assert_true(tw_msg_writable(copy));
    assert_int_equal(tw_msg_set_str(copy, "name", "other"), 0);
    assert_string_equal(tw_msg_name(copy), "other");
    assert_string_equal(tw_msg_name(m), "e");
    tw_msg_unref(copy);
    /* shared messages are frozen too */
    tw_msg *n = tw_msg_new(TW_TYPE_REQUEST, TW_OP_PING, NULL, NULL);
    tw_msg_ref(n);
    assert_int_equal(tw_msg_set_str(n, "name", "x"), TW_EINVAL);
    tw_msg_unref(n);
    tw_msg_unref(n);
    tw_msg_unref(m);
}

static tw_msg *shared;
static const char *seen[8];

static void *encoder(void *arg)
{
    seen[(intptr_t)arg] = tw_msg_encode(shared, NULL);
    return NULL;
}

static void test_concurrent_encode(void **state)
{
    shared = tw_msg_new(TW_TYPE_NOTIFICATION, TW_OP_OBSERVEPROPERTY, "dtw:a:t", "p");
    tw_msg_set(shared, "value", json_string("v"));
    pthread_t t[8];
    for (intptr_t i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, encoder, (void *)i);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    for (int i = 1; i < 8; i++)
        assert_ptr_equal(seen[0], seen[i]);
    tw_msg_unref(shared);
}

/* Message blocks are kept for reuse per thread. Messages parsed on one
 * thread and freed on another, in bursts larger than any cache, in threads
 * that then exit: every message reads as it was parsed (no block is handed
 * out twice), and under ASan/LeakSanitizer nothing leaks and no block is
 * touched after it was freed. */
#define HANDOFF 1500
static tw_msg *handoff[HANDOFF];

static void *parse_burst(void *arg)
{
    intptr_t round = (intptr_t)arg;
    for (int i = 0; i < HANDOFF; i++) {
        char s[200];
        int n = snprintf(s, sizeof s,
                         "{\"type\":\"notification\",\"operation\":\"subscribeevent\","
                         "\"thingID\":\"t%d\",\"name\":\"e\",\"value\":%ld}",
                         i, (long)round * HANDOFF + i);
        assert_int_equal(tw_msg_parse(s, (size_t)n, NULL, &handoff[i], NULL), 0);
        tw_msg_set_str(handoff[i], "senderID", "agent");
    }
    return NULL;
}

static void *free_burst(void *arg)
{
    intptr_t round = (intptr_t)arg;
    for (int i = 0; i < HANDOFF; i++) {
        char want[16];
        snprintf(want, sizeof want, "t%d", i);
        assert_string_equal(tw_msg_thing(handoff[i]), want);
        assert_int_equal(json_integer_value(tw_msg_get(handoff[i], "value")), round * HANDOFF + i);
        assert_non_null(tw_msg_encode(handoff[i], NULL));
        tw_msg_unref(handoff[i]);
    }
    return NULL;
}

static void test_blocks_across_threads(void **state)
{
    for (intptr_t round = 0; round < 4; round++) {
        pthread_t p, f;
        /* rounds 0, 1: parsed and freed on new threads; 2, 3: parsed here
         * (reusing what this thread freed in round 1... if any) */
        if (round < 2) {
            pthread_create(&p, NULL, parse_burst, (void *)round);
            pthread_join(p, NULL);
        } else {
            parse_burst((void *)round);
        }
        if (round % 2 == 0) {
            pthread_create(&f, NULL, free_burst, (void *)round);
            pthread_join(f, NULL);
        } else {
            free_burst((void *)round);
        }
    }
}

static void test_ops_and_statuses(void **state)
{
    for (int op = 1; op < TW_OP__COUNT; op++)
        assert_int_equal(tw_op_parse(tw_op_name((tw_op)op)), op);
    /* near misses and odd first bytes are no operation */
    static const char *const no[] = {"",
                                     "a",
                                     "z",
                                     "{",
                                     "`",
                                     "Ping",
                                     "\xc3\xa9",
                                     "subscribeeven",
                                     "pin",
                                     "subscribeeventx",
                                     "readallevent",
                                     "updateThing",
                                     "pingg"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_int_equal(tw_op_parse(no[i]), TW_OP_NONE);
    assert_int_equal(tw_op_parse(NULL), TW_OP_NONE);
    for (int s = 1; s < TW_STATUS__COUNT; s++)
        assert_int_equal(tw_status_parse(tw_status_name((tw_status)s)), s);
    assert_string_equal(tw_status_wot(TW_STATUS_QUEUED), "pending");
    assert_string_equal(tw_status_wot(TW_STATUS_EXPIRED), "failed");
    assert_true(tw_status_final(TW_STATUS_CANCELLED));
    assert_false(tw_status_final(TW_STATUS_DELIVERED));
}

static void test_ids_and_times(void **state)
{
    char a[TW_ID_MAX], b[TW_ID_MAX];
    tw_id_new("a-", a);
    tw_id_new("a-", b);
    assert_string_not_equal(a, b);
    assert_int_equal(strlen(a), 2 + 26); /* 128 random bits in base32 */
    char ts[TW_TIME_LEN];
    tw_time_format(1700000000123, ts);
    assert_string_equal(ts, "2023-11-14T22:13:20.123Z");
    int64_t ms;
    assert_int_equal(tw_time_parse(ts, &ms), 0);
    assert_int_equal(ms, 1700000000123);
    assert_int_equal(tw_time_parse("2023-11-14T23:13:20.5+01:00", &ms), 0);
    assert_int_equal(ms, 1700000000500);
    assert_int_equal(tw_time_parse("2023-11-14", &ms), TW_EINVAL);
    assert_int_equal(tw_time_parse("2023-13-14T00:00:00Z", &ms), TW_EINVAL);
    assert_int_equal(tw_time_parse("2023-11-14T00:00:00Zjunk", &ms), TW_EINVAL);
}

/* A string set with tw_msg_set, read back and set again with
 * tw_msg_set_str: the old value is forgotten only after the new one was
 * copied (it used to be copied from freed memory; found in review, ASan
 * reports it without the fix). */
static void test_set_str_from_own_value(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"request\",\"operation\":\"invokeaction\",\"thingID\":\"dtw:a:t\","
                    "\"name\":\"go\",\"input\":{\"x\":1},\"correlationID\":\"c1\"}";
    tw_msg *m = NULL;
    assert_int_equal(tw_msg_parse(s, strlen(s), NULL, &m, NULL), 0);
    tw_msg_set(m, "note", json_string("a value long enough to be its own allocation"));
    const char *own = json_string_value(tw_msg_get(m, "note"));
    assert_non_null(own);
    tw_msg_set_str(m, "note", own);
    assert_string_equal(json_string_value(tw_msg_get(m, "note")),
                        "a value long enough to be its own allocation");
    tw_msg_set_str(m, "note", json_string_value(tw_msg_get(m, "note"))); /* its own stamp */
    assert_string_equal(json_string_value(tw_msg_get(m, "note")),
                        "a value long enough to be its own allocation");
    size_t len;
    const char *enc = tw_msg_encode(m, &len);
    assert_non_null(strstr(enc, "\"note\":\"a value long enough to be its own allocation\""));
    tw_msg_unref(m);
}

static void test_problem_shape(void **state)
{
    json_t *p = tw_problem_from_error(TW_ERATE, "slow down", NULL);
    assert_string_equal(json_string_value(json_object_get(p, "type")),
                        "urn:twind:problem:rate-limited");
    assert_int_equal(status_of(p), 429);
    assert_string_equal(json_string_value(json_object_get(p, "detail")), "slow down");
    json_decref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),         cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_typed_fields_by_key), cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_depth_limit),         cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_build_response),      cmocka_unit_test(test_encode_once_and_freeze),
        cmocka_unit_test(test_concurrent_encode),   cmocka_unit_test(test_blocks_across_threads),
        cmocka_unit_test(test_ops_and_statuses),    cmocka_unit_test(test_ids_and_times),
        cmocka_unit_test(test_problem_shape),       cmocka_unit_test(test_set_str_from_own_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
