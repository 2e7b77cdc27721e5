/*
 * test_json_scan.c - the member splitter and the lazy envelope built on it:
 * the scanner accepts only what Jansson accepts, with the same meaning; a
 * lazily parsed message reads, changes, encodes and copies exactly like one
 * built from a tree; concurrent first reads of a field are safe.
 */
#include "runtime/json_scan.h"
#include "runtime/msg.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Values the scanner must judge exactly as Jansson does when it accepts. */
static const char *const values[] = {
    "1",
    "-0",
    "0",
    "123456789012345678",
    "1234567890123456789",
    "-12.5e-3",
    "1E+2",
    "1e400",
    "1e300",
    "0.1",
    "01",
    "1.",
    ".5",
    "-",
    "+1",
    "1e",
    "true",
    "false",
    "null",
    "tru",
    "nul",
    "\"\"",
    "\"plain\"",
    "\"a\\\"b\"",
    "\"\\u00e9\"",
    "\"\\ud83d\\ude00\"",
    "\"\\ud83d\"",
    "\"\\ude00\"",
    "\"\\u0000\"",
    "\"\\x\"",
    "\"tab\there\"",
    "\"caf\xc3\xa9\"",
    "[]",
    "[1,2]",
    "[1,]",
    "[,1]",
    "{}",
    "{\"a\":1}",
    "{\"a\":1,\"a\":2}",
    "{\"a\":1,\"b\":{\"a\":2}}",
    "{\"a\" :1}",
    "[1, 2]",
    "{\"a\":[{\"b\":null}]}",
    "{\"\\u0061\":1}",
    "{a:1}",
    "[\"x\"",
    "{\"a\":1",
    "\"unterminated",
};

static void test_scanner_agrees_with_jansson(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[256];
        snprintf(buf, sizeof buf, "{\"k\":%s,\"z\":true}", values[i]);
        tw_jscan_member mem[4];
        size_t n = 0;
        bool ok = tw_jscan_object(buf, strlen(buf), 32, mem, 4, &n);
        json_t *j = json_loadb(buf, strlen(buf), JSON_REJECT_DUPLICATES, NULL);
        if (ok) {
            if (!j) fail_msg("scanner accepted what Jansson rejects: %s", buf);
            assert_int_equal(n, 2);
            assert_int_equal(mem[0].key_len, 1);
            assert_memory_equal(mem[0].key, "k", 1);
            assert_int_equal(mem[0].val_len, strlen(values[i]));
            json_t *v = json_loadb(mem[0].val, mem[0].val_len, JSON_DECODE_ANY, NULL);
            assert_non_null(v);
            assert_true(json_equal(v, json_object_get(j, "k")));
            json_decref(v);
            assert_memory_equal(mem[1].val, "true", 4);
        }
        json_decref(j);
    }
}

static void test_scanner_shapes(void **state)
{
    (void)state;
    tw_jscan_member mem[2];
    size_t n;
    /* whitespace between members is fine and left out of the values */
    const char *ws = " {\n \"a\" : [1,2] ,\t\"b\":\"x y\"\r\n} ";
    assert_true(tw_jscan_object(ws, strlen(ws), 32, mem, 2, &n));
    assert_int_equal(n, 2);
    assert_int_equal(mem[0].val_len, 5);
    assert_memory_equal(mem[0].val, "[1,2]", 5);
    assert_memory_equal(mem[1].val, "\"x y\"", 5);
    assert_false(mem[1].val_escaped);
    /* too many members for the caller's array */
    assert_false(tw_jscan_object("{\"a\":1,\"b\":2,\"c\":3}", 19, 32, mem, 2, &n));
    /* not an object, duplicate top-level keys, trailing bytes, whitespace inside a value */
    assert_false(tw_jscan_object("[1]", 3, 32, mem, 2, &n));
    assert_false(tw_jscan_object("{\"a\":1,\"a\":1}", 13, 32, mem, 2, &n));
    assert_false(tw_jscan_object("{\"\":1,\"\":1}", 11, 32, mem, 2, &n));
    assert_false(tw_jscan_object("{\"ab\":1,\"ab\":1}", 15, 32, mem, 2, &n));
    assert_true(tw_jscan_object("{\"ab\":1,\"ba\":1}", 15, 32, mem, 2, &n));
    assert_true(tw_jscan_object("{\"\":1,\"a\":1}", 12, 32, mem, 2, &n));
    assert_false(tw_jscan_object("{\"a\":1} x", 9, 32, mem, 2, &n));
    assert_false(tw_jscan_object("{\"a\":[1, 2]}", 12, 32, mem, 2, &n));
    /* nesting beyond max_depth (the object itself is level 1) */
    assert_false(tw_jscan_object("{\"a\":[[1]]}", 11, 2, mem, 2, &n));
    assert_true(tw_jscan_object("{\"a\":[[1]]}", 11, 3, mem, 2, &n));
    /* escapes are reported */
    assert_true(tw_jscan_object("{\"a\":\"\\n\"}", 10, 32, mem, 2, &n));
    assert_true(mem[0].val_escaped);
}

/* The UTF-8 check skips ASCII eight bytes at a time: what follows a run
 * must still be checked wherever it falls. */
static void test_utf8_after_ascii_runs(void **state)
{
    (void)state;
    assert_true(tw_utf8_valid("abcdefghij\xc3\xa9klmnopqrs", 21));
    for (size_t pre = 0; pre < 20; pre++) {
        char buf[32];
        memset(buf, 'a', pre);
        memcpy(buf + pre, "\xed\xa0\x80", 3); /* a surrogate */
        assert_false(tw_utf8_valid(buf, pre + 3));
        buf[pre] = (char)0xff;
        assert_false(tw_utf8_valid(buf, pre + 1));
        memcpy(buf + pre, "\xf0\x9f\x98\x80zz", 6);
        assert_true(tw_utf8_valid(buf, pre + 6));
    }
}

/* Strings are scanned eight bytes at a time: a quote, a backslash or a
 * control character must be seen at every offset of a word, next to bytes
 * that look like them in part (0x80 and up, 0x20, '"' + 1...), and a string
 * that ends right at the end of the text or of a word must end there. */
static void test_scanner_string_words(void **state)
{
    (void)state;
    static const char stops[] = {'"', '\\', '\x01', '\x1f', '\n'};
    static const char fills[] = {'a', ' ', '#', ']', '\x7f'};
    for (size_t len = 0; len < 24; len++) {
        for (size_t at = 0; at <= len; at++) {
            for (size_t si = 0; si < sizeof stops; si++) {
                for (size_t fi = 0; fi < sizeof fills; fi++) {
                    /* {"k":"<len bytes, stops[si] at `at` unless at == len>"} */
                    char buf[64];
                    size_t o = 0;
                    memcpy(buf, "{\"k\":\"", 6);
                    o = 6;
                    for (size_t i = 0; i < len; i++)
                        buf[o++] = i == at ? stops[si] : fills[fi];
                    buf[o++] = '"';
                    buf[o++] = '}';
                    tw_jscan_member mem[2];
                    size_t n = 0;
                    bool ok = tw_jscan_object(buf, o, 32, mem, 2, &n);
                    json_t *j = json_loadb(buf, o, JSON_REJECT_DUPLICATES, NULL);
                    if (ok != (j != NULL))
                        fail_msg("len %zu stop %d at %zu fill %d: scanner %d, Jansson %d", len,
                                 stops[si], at, fills[fi], ok, j != NULL);
                    if (ok) {
                        assert_int_equal(n, 1);
                        assert_int_equal(mem[0].val_len, len + 2);
                    }
                    json_decref(j);
                    /* the same text cut just after the closing quote */
                    ok = tw_jscan_object(buf, o - 1, 32, mem, 2, &n);
                    assert_false(ok);
                }
            }
        }
    }
    /* multi-byte UTF-8 (bytes 0x80 and up) is plain */
    const char *u = "{\"k\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc2\xa0\xc2\xa2\xdf\xbf\"}";
    tw_jscan_member mem[1];
    size_t n;
    assert_true(tw_jscan_object(u, strlen(u), 32, mem, 1, &n));
    assert_false(mem[0].val_escaped);
    assert_int_equal(mem[0].val_len, strlen(u) - 6); /* {"k": and } */
}

static tw_msg *parse_ok(const char *s)
{
    tw_msg *m = NULL;
    json_t *p = NULL;
    assert_int_equal(tw_msg_parse(s, strlen(s), NULL, &m, &p), 0);
    assert_null(p);
    return m;
}

static const char *event_text =
    "{\"type\":\"notification\",\"operation\":\"subscribeevent\",\"thingID\":\"t1\","
    "\"name\":\"e\",\"value\":{\"temp\":21.5,\"tags\":[\"a\",\"b\\\"c\"]},\"messageID\":\"m1\"}";

static void test_lazy_reads_and_raw(void **state)
{
    (void)state;
    tw_msg *m = parse_ok(event_text);
    assert_int_equal(tw_msg_get_type(m), TW_TYPE_NOTIFICATION);
    assert_int_equal(tw_msg_get_op(m), TW_OP_SUBSCRIBEEVENT);
    assert_string_equal(tw_msg_thing(m), "t1");
    assert_string_equal(tw_msg_name(m), "e");
    assert_string_equal(tw_msg_id(m), "m1");
    size_t len = 0;
    const char *raw = tw_msg_get_raw(m, "value", &len);
    const char *want = "{\"temp\":21.5,\"tags\":[\"a\",\"b\\\"c\"]}";
    assert_non_null(raw);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(raw, want, len);
    json_t *v = tw_msg_get(m, "value");
    assert_true(json_is_object(v));
    assert_true(json_real_value(json_object_get(v, "temp")) == 21.5);
    assert_ptr_equal(tw_msg_get(m, "value"), v); /* decoded once */
    assert_null(tw_msg_get(m, "input"));
    assert_null(tw_msg_get_raw(m, "input", NULL));
    /* the whole tree equals Jansson's */
    json_t *j = json_loads(event_text, 0, NULL);
    assert_true(json_equal(tw_msg_json(m), j));
    json_decref(j);
    tw_msg_unref(m);
}

/* Raw values lie back to back in the message: an integer must be read
 * within its own bytes (regression: "value":12,"inboxSeq":34 read 1234). */
static void test_lazy_adjacent_integers(void **state)
{
    (void)state;
    tw_msg *m = parse_ok("{\"type\":\"notification\",\"operation\":\"subscribeevent\","
                         "\"thingID\":\"t\",\"name\":\"n\",\"value\":12,\"inboxSeq\":34,"
                         "\"x\":-999999999999999999,\"y\":5,\"z\":0,\"w\":-0,"
                         "\"u\":999999999999999999}");
    assert_int_equal(json_integer_value(tw_msg_get(m, "value")), 12);
    assert_int_equal(json_integer_value(tw_msg_get(m, "z")), 0);
    assert_int_equal(json_integer_value(tw_msg_get(m, "w")), 0);
    assert_true(json_is_integer(tw_msg_get(m, "w")));
    assert_true(json_integer_value(tw_msg_get(m, "u")) == 999999999999999999LL);
    assert_int_equal(json_integer_value(tw_msg_get(m, "inboxSeq")), 34);
    assert_true(json_integer_value(tw_msg_get(m, "x")) == -999999999999999999LL);
    assert_int_equal(json_integer_value(tw_msg_get(m, "y")), 5);
    tw_msg_unref(m);
}

/* Differential: random envelopes whose members are drawn from tricky
 * values; every field read lazily (before any tree exists) and the tree
 * built afterwards must equal what Jansson reads from the same text. */
static void test_lazy_differential(void **state)
{
    (void)state;
    static const char *vals[] = {
        "0",
        "-0",
        "12",
        "-7",
        "3.5",
        "1e3",
        "-2.5E-3",
        "true",
        "false",
        "null",
        "\"s\"",
        "\"a\\\"b\"",
        "\"\\u00e9\"",
        "[1,2]",
        "{\"k\":1}",
        "[]",
        "{}",
        "123456789012345678",
        "\"x y\"",
        "[\"\\n\"]",
        "-999999999999999999",
        "\"\\ud83d\\ude00\"",
        "1.5e300",
        "[{\"a\":[null]}]",
    };
    const size_t nv = sizeof vals / sizeof vals[0];
    unsigned seed = 12345;
    int lazy_checked = 0;
    for (int iter = 0; iter < 5000; iter++) {
        char buf[2048];
        int n = snprintf(buf, sizeof buf,
                         "{\"type\":\"notification\",\"operation\":\"subscribeevent\","
                         "\"thingID\":\"t\",\"name\":\"n\"");
        int extra = (int)(rand_r(&seed) % 6);
        for (int i = 0; i < extra; i++)
            n += snprintf(buf + n, sizeof buf - (size_t)n, ",\"f%d\":%s", i,
                          vals[rand_r(&seed) % nv]);
        n += snprintf(buf + n, sizeof buf - (size_t)n, "}");
        tw_msg *m = parse_ok(buf);
        json_t *ref = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
        assert_non_null(ref);
        for (int i = 0; i < extra; i++) {
            char f[8];
            snprintf(f, sizeof f, "f%d", i);
            if (!json_equal(tw_msg_get(m, f), json_object_get(ref, f)))
                fail_msg("field %s differs in %s", f, buf);
            lazy_checked++;
        }
        if (!json_equal(tw_msg_json(m), ref)) fail_msg("tree differs for %s", buf);
        json_decref(ref);
        tw_msg_unref(m);
    }
    assert_true(lazy_checked > 1000);
}

static void test_lazy_set_del_encode(void **state)
{
    (void)state;
    tw_msg *m = parse_ok(event_text);
    assert_true(tw_msg_writable(m));
    assert_int_equal(tw_msg_set_str(m, "thingID", "dtw:a:t1"), 0);
    assert_int_equal(tw_msg_set_str(m, "senderID", "a"), 0);
    assert_int_equal(tw_msg_del(m, "messageID"), 0);
    assert_string_equal(tw_msg_thing(m), "dtw:a:t1");
    assert_string_equal(tw_msg_sender(m), "a");
    assert_null(tw_msg_id(m));
    assert_null(tw_msg_get_raw(m, "thingID", NULL)); /* changed: no raw text any more */
    assert_string_equal(json_string_value(tw_msg_get(m, "thingID")), "dtw:a:t1");
    size_t len;
    const char *enc = tw_msg_encode(m, &len);
    assert_non_null(enc);
    assert_int_equal(strlen(enc), len);
    assert_null(memchr(enc, '\n', len));
    json_t *got = json_loadb(enc, len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(got);
    json_t *want = json_loads(event_text, 0, NULL);
    json_object_set_new(want, "thingID", json_string("dtw:a:t1"));
    json_object_set_new(want, "senderID", json_string("a"));
    json_object_del(want, "messageID");
    assert_true(json_equal(got, want));
    /* frozen once encoded; the tree built afterwards says the same */
    assert_int_equal(tw_msg_set_str(m, "name", "x"), TW_EINVAL);
    assert_true(json_equal(tw_msg_json(m), want));
    /* a copy is private and writable */
    tw_msg *c = tw_msg_copy(m);
    assert_non_null(c);
    assert_int_equal(tw_msg_set_str(c, "name", "x"), 0);
    assert_string_equal(tw_msg_name(c), "x");
    assert_string_equal(tw_msg_name(m), "e");
    tw_msg_unref(c);
    json_decref(got);
    json_decref(want);
    tw_msg_unref(m);
}

static void test_lazy_extras_need_escaping(void **state)
{
    (void)state;
    tw_msg *m = parse_ok(event_text);
    assert_int_equal(tw_msg_set_str(m, "note", "a \"quoted\"\nline"), 0);
    assert_int_equal(tw_msg_set(m, "output", json_pack("{s:[i,f]}", "x", 1, 0.5)), 0);
    size_t len;
    const char *enc = tw_msg_encode(m, &len);
    json_t *got = json_loadb(enc, len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(got);
    assert_string_equal(json_string_value(json_object_get(got, "note")), "a \"quoted\"\nline");
    assert_int_equal(
        json_integer_value(json_array_get(json_object_get(json_object_get(got, "output"), "x"), 0)),
        1);
    assert_string_equal(json_string_value(json_object_get(got, "thingID")), "t1");
    json_decref(got);
    tw_msg_unref(m);
}

/* String fields set on a lazy message: read back, replaced, deleted, encoded
 * (plain ones directly, others escaped), and carried into the tree. */
/* Set strings and the encoding live in the message's own block while they
 * fit and are allocated apart once they do not: whichever, the message
 * reads and encodes the same (ASan watches the edges). Small and large
 * envelopes, parsed and built ones, few and many set strings. */
static void test_lazy_set_strings_any_size(void **state)
{
    (void)state;
    char big[3000];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char text[4096];
    for (int shape = 0; shape < 3; shape++) {
        for (size_t vlen = 0; vlen < 700; vlen += 37) {
            tw_msg *m;
            json_t *want;
            if (shape == 2) {
                m = tw_msg_new(TW_TYPE_RESPONSE, TW_OP_INVOKEACTION, "dtw:a:t", "go");
                want =
                    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "response", "operation",
                              "invokeaction", "thingID", "dtw:a:t", "name", "go", "messageID",
                              tw_msg_id(m), "created", json_string_value(tw_msg_get(m, "created")));
            } else {
                /* shape 1: an envelope too big for the encoding's room */
                snprintf(text, sizeof text,
                         "{\"type\":\"notification\",\"operation\":\"subscribeevent\","
                         "\"thingID\":\"t1\",\"name\":\"e\",\"value\":\"%.*s\"}",
                         shape == 1 ? 2000 : 10, big);
                m = parse_ok(text);
                want = json_loads(text, 0, NULL);
            }
            assert_non_null(want);
            char key[16];
            for (int i = 0; i < 6; i++) {
                size_t l = (vlen + (size_t)i * 11) % 600;
                char *val = strndup(big, l);
                snprintf(key, sizeof key, "k%d", i);
                assert_int_equal(tw_msg_set_str(m, key, val), 0);
                json_object_set_new(want, key, json_string(val));
                free(val);
            }
            assert_int_equal(tw_msg_set_str(m, "senderID", "agent"), 0);
            json_object_set_new(want, "senderID", json_string("agent"));
            assert_string_equal(tw_msg_sender(m), "agent");
            assert_int_equal(tw_msg_set_str(m, "k0", "again"), 0);
            json_object_set_new(want, "k0", json_string("again"));
            size_t len;
            const char *enc = tw_msg_encode(m, &len);
            assert_non_null(enc);
            assert_int_equal(strlen(enc), len);
            json_t *got = json_loadb(enc, len, JSON_REJECT_DUPLICATES, NULL);
            assert_non_null(got);
            assert_true(json_equal(got, want));
            assert_ptr_equal(tw_msg_encode(m, NULL), enc);
            assert_true(json_equal(tw_msg_json(m), want));
            json_decref(got);
            json_decref(want);
            tw_msg_unref(m);
        }
    }
}

static void test_lazy_string_fields(void **state)
{
    (void)state;
    tw_msg *m = parse_ok(event_text);
    assert_int_equal(tw_msg_set_str(m, "senderID", "first"), 0);
    assert_int_equal(tw_msg_set_str(m, "senderID", "agent-\xc3\xa9"), 0);
    assert_string_equal(tw_msg_sender(m), "agent-\xc3\xa9");
    assert_int_equal(tw_msg_set_str(m, "name", "e2"), 0);
    assert_int_equal(tw_msg_del(m, "name"), 0);
    assert_null(tw_msg_name(m));
    assert_null(tw_msg_get(m, "name"));
    assert_int_equal(tw_msg_set_str(m, "thingID", "tab\there"), 0); /* needs escaping */
    assert_string_equal(tw_msg_thing(m), "tab\there");
    json_t *s1 = tw_msg_get(m, "senderID");
    assert_string_equal(json_string_value(s1), "agent-\xc3\xa9");
    assert_ptr_equal(tw_msg_get(m, "senderID"), s1);
    size_t len;
    const char *enc = tw_msg_encode(m, &len);
    json_t *got = json_loadb(enc, len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(got);
    assert_string_equal(json_string_value(json_object_get(got, "senderID")), "agent-\xc3\xa9");
    assert_string_equal(json_string_value(json_object_get(got, "thingID")), "tab\there");
    assert_null(json_object_get(got, "name"));
    assert_true(json_equal(got, tw_msg_json(m)));
    json_decref(got);
    tw_msg_unref(m);
}

/* Built messages carry their fields as plain strings until a tree is
 * needed; names that need escaping still come out right. */
static void test_built_messages(void **state)
{
    (void)state;
    const char *things[] = {"dtw:a:t1", "with \"quote\"", "caf\xc3\xa9"};
    for (size_t i = 0; i < 3; i++) {
        tw_msg *m = tw_msg_new(TW_TYPE_RESPONSE, TW_OP_INVOKEACTION, things[i], "go");
        assert_non_null(m);
        assert_int_equal(tw_msg_get_type(m), TW_TYPE_RESPONSE);
        assert_string_equal(tw_msg_thing(m), things[i]);
        assert_non_null(tw_msg_id(m));
        assert_int_equal(tw_msg_set_status(m, TW_STATUS_COMPLETED), 0);
        assert_int_equal(tw_msg_status(m), TW_STATUS_COMPLETED);
        assert_int_equal(tw_msg_set_str(m, "correlationID", "c1"), 0);
        assert_int_equal(tw_msg_set(m, "output", json_pack("[i,s]", 1, "x\n")), 0);
        assert_string_equal(json_string_value(tw_msg_get(m, "type")), "response");
        assert_non_null(tw_msg_get(m, "created"));
        size_t len;
        const char *enc = tw_msg_encode(m, &len);
        tw_msg *back = NULL;
        json_t *p = NULL;
        assert_int_equal(tw_msg_parse(enc, len, NULL, &back, &p), 0);
        assert_string_equal(tw_msg_thing(back), things[i]);
        assert_string_equal(tw_msg_correlation(back), "c1");
        assert_int_equal(tw_msg_status(back), TW_STATUS_COMPLETED);
        assert_true(json_equal(tw_msg_json(back), tw_msg_json(m)));
        tw_msg_unref(back);
        tw_msg_unref(m);
    }
}

/* Keys that need escaping and many set fields still encode (through a
 * tree built for the purpose). */
static void test_lazy_odd_keys_and_many_fields(void **state)
{
    (void)state;
    tw_msg *m = parse_ok(event_text);
    assert_int_equal(tw_msg_set(m, "we\"ird", json_integer(1)), 0);
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        assert_int_equal(tw_msg_set(m, k, json_integer(i)), 0);
    }
    size_t len;
    const char *enc = tw_msg_encode(m, &len);
    assert_non_null(enc);
    json_t *got = json_loadb(enc, len, JSON_REJECT_DUPLICATES, NULL);
    assert_non_null(got);
    assert_int_equal(json_integer_value(json_object_get(got, "we\"ird")), 1);
    assert_int_equal(json_integer_value(json_object_get(got, "k39")), 39);
    assert_string_equal(json_string_value(json_object_get(got, "thingID")), "t1");
    json_decref(got);
    tw_msg_unref(m);
}

static void test_lazy_set_after_tree(void **state)
{
    (void)state;
    tw_msg *m = parse_ok(event_text);
    assert_non_null(tw_msg_json(m)); /* the tree first */
    assert_int_equal(tw_msg_set(m, "value", json_integer(7)), 0);
    assert_null(tw_msg_get_raw(m, "value", NULL));
    assert_int_equal(json_integer_value(tw_msg_get(m, "value")), 7);
    const char *enc = tw_msg_encode(m, NULL);
    assert_non_null(strstr(enc, "\"value\":7"));
    tw_msg_unref(m);
}

/* Envelopes outside the scanner's form still parse (through Jansson), and
 * invalid ones get the same problems either way. */
static void test_lazy_and_tree_paths_agree(void **state)
{
    (void)state;
    const char *pretty = "{\"type\": \"notification\", \"operation\": \"subscribeevent\",\n"
                         " \"thingID\": \"t\", \"name\": \"e\", \"value\": [1, 2]}";
    tw_msg *m = parse_ok(pretty);
    assert_int_equal(json_array_size(tw_msg_get(m, "value")), 2);
    tw_msg_unref(m);
    const char *esc = "{\"type\":\"notification\",\"operation\":\"subscribeevent\","
                      "\"thingID\":\"t\\u00e9\",\"name\":\"e\"}";
    m = parse_ok(esc);
    assert_string_equal(tw_msg_thing(m), "t\xc3\xa9");
    tw_msg_unref(m);
    const char *bad[] = {
        "{\"type\":\"notification\",\"operation\":\"subscribeevent\",\"name\":\"e\"}",
        "{\"type\":\"request\",\"operation\":\"writeproperty\",\"thingID\":\"t\",\"name\":\"p\"}",
        "{\"type\":\"request\",\"operation\":\"updatething\",\"input\":[]}",
        "{\"type\":7,\"operation\":\"ping\"}",
        "{\"type\":\"request\",\"operation\":\"ping\",\"error\":\"x\"}",
        "{\"type\":\"request\",\"operation\":\"nope\"}",
    };
    const char *fields[] = {"thingID", "input", "input", "type", "error", "operation"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tw_msg *x = NULL;
        json_t *p = NULL;
        assert_int_equal(tw_msg_parse(bad[i], strlen(bad[i]), NULL, &x, &p), TW_EINVAL);
        assert_null(x);
        assert_string_equal(json_string_value(json_object_get(p, "field")), fields[i]);
        json_decref(p);
    }
}

static void *reader(void *arg)
{
    tw_msg *m = arg;
    json_t *v = tw_msg_get(m, "value");
    json_t *all = tw_msg_json(m);
    const char *enc = tw_msg_encode(m, NULL);
    return v && all && enc && json_object_get(all, "value") == v ? m : NULL;
}

static void test_lazy_concurrent_first_reads(void **state)
{
    (void)state;
    for (int round = 0; round < 50; round++) {
        tw_msg *m = parse_ok(event_text);
        pthread_t th[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&th[i], NULL, reader, tw_msg_ref(m));
        for (int i = 0; i < 4; i++) {
            void *r;
            pthread_join(th[i], &r);
            assert_ptr_equal(r, m);
            tw_msg_unref(m);
        }
        tw_msg_unref(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scanner_agrees_with_jansson),
        cmocka_unit_test(test_scanner_shapes),
        cmocka_unit_test(test_scanner_string_words),
        cmocka_unit_test(test_utf8_after_ascii_runs),
        cmocka_unit_test(test_lazy_reads_and_raw),
        cmocka_unit_test(test_lazy_adjacent_integers),
        cmocka_unit_test(test_lazy_differential),
        cmocka_unit_test(test_lazy_set_del_encode),
        cmocka_unit_test(test_lazy_set_after_tree),
        cmocka_unit_test(test_lazy_odd_keys_and_many_fields),
        cmocka_unit_test(test_built_messages),
        cmocka_unit_test(test_lazy_string_fields),
        cmocka_unit_test(test_lazy_set_strings_any_size),
        cmocka_unit_test(test_lazy_extras_need_escaping),
        cmocka_unit_test(test_lazy_and_tree_paths_agree),
        cmocka_unit_test(test_lazy_concurrent_first_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
