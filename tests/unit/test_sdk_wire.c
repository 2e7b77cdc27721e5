/*
 * test_sdk_wire.c - libtwin's envelopes on the wire, against a fake runtime:
 * a bare nng stream listener in this process that answers the login and
 * every request with "completed", records what the client publishes, and
 * sends it notifications. No twind: these tests look at the exact bytes
 * libtwin writes and at what its callbacks get from given bytes.
 *
 * What they pin down: values published fast are packed into runs of the
 * send queue and must still leave in order with none lost; values are
 * written by hand, so strings that need escapes (quotes, backslashes,
 * control characters, non-ASCII) and every JSON type must come out meaning
 * exactly what went in; action requests and agent answers, also written by
 * hand, carry their input and output exactly; the view callbacks and the
 * classic ones see the same notification.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agents/sdk/libtwin.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the fake runtime -------------------------------------------------------------- */

typedef struct fake {
    nng_stream_listener *l;
    nng_stream *st;
    char url[64];
    pthread_t thr;
    pthread_mutex_t mtx; /* guards writes to st and the record below */
    pthread_cond_t cond;
    json_t *published; /* notifications the client sent, in order */
    atomic_bool stop;
} fake;

static void fake_write(fake *f, const char *buf, size_t len)
{
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    pthread_mutex_lock(&f->mtx);
    while (len) {
        nng_iov iov = {(void *)buf, len};
        nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(f->st, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio)) break;
        buf += nng_aio_count(aio);
        len -= nng_aio_count(aio);
    }
    pthread_mutex_unlock(&f->mtx);
    nng_aio_free(aio);
}

static void fake_send_json(fake *f, json_t *env)
{
    char *s = json_dumps(env, JSON_COMPACT);
    assert_non_null(s);
    size_t n = strlen(s);
    s = realloc(s, n + 2);
    s[n] = '\n';
    fake_write(f, s, n + 1);
    free(s);
}

static void fake_answer(fake *f, json_t *req)
{
    const char *op = json_string_value(json_object_get(req, "operation"));
    json_t *r =
        json_pack("{s:s, s:s, s:O, s:s}", "type", "response", "operation", op ? op : "",
                  "correlationID", json_object_get(req, "correlationID"), "status", "completed");
    if (op && strcmp(op, "login") == 0)
        json_object_set_new(r, "output",
                            json_pack("{s:s, s:s}", "token", "session", "clientID", "wire"));
    if (op && strcmp(op, "invokeaction") == 0) { /* an echo, which also says what it got */
        json_t *in = json_object_get(req, "input");
        if (in) json_object_set(r, "output", in);
        json_object_set(r, "actionID", json_object_get(req, "correlationID"));
        json_object_set(r, "thingID", json_object_get(req, "thingID"));
        json_object_set(r, "name", json_object_get(req, "name"));
    }
    fake_send_json(f, r);
    json_decref(r);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_stream_listener_accept(f->l, aio);
    nng_aio_wait(aio);
    if (nng_aio_result(aio)) {
        nng_aio_free(aio);
        return NULL;
    }
    f->st = nng_aio_get_output(aio, 0);
    pthread_mutex_lock(&f->mtx);
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->mtx);
    size_t cap = 1 << 20, len = 0, off = 0;
    char *buf = malloc(cap);
    for (;;) {
        char *nl;
        while ((nl = memchr(buf + off, '\n', len - off)) != NULL) {
            json_error_t err;
            json_t *j = json_loadb(buf + off, (size_t)(nl - buf - off), JSON_ALLOW_NUL, &err);
            off = (size_t)(nl - buf) + 1;
            if (!j) fail_msg("the client wrote a line that is not JSON: %s", err.text);
            const char *type = json_string_value(json_object_get(j, "type"));
            if (type && strcmp(type, "request") == 0) {
                fake_answer(f, j);
            } else {
                pthread_mutex_lock(&f->mtx);
                json_array_append(f->published, j);
                pthread_cond_broadcast(&f->cond);
                pthread_mutex_unlock(&f->mtx);
            }
            json_decref(j);
        }
        memmove(buf, buf + off, len - off);
        len -= off;
        off = 0;
        /* a receive started after nng_stream_close() may never complete
         * (nng 1.5), so the reader polls a stop flag instead of relying on
         * the close to wake it */
        nng_iov iov = {buf + len, cap - len};
        nng_aio_set_iov(aio, 1, &iov);
        nng_aio_set_timeout(aio, 100);
        nng_stream_recv(f->st, aio);
        nng_aio_wait(aio);
        int rv = nng_aio_result(aio);
        if (rv == NNG_ETIMEDOUT && !atomic_load(&f->stop)) continue;
        if (rv) break;
        len += nng_aio_count(aio);
    }
    free(buf);
    nng_aio_free(aio);
    return NULL;
}

static void fake_start(fake *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mtx, NULL);
    pthread_cond_init(&f->cond, NULL);
    f->published = json_array();
    assert_int_equal(nng_stream_listener_alloc(&f->l, "tcp://127.0.0.1:0"), 0);
    assert_int_equal(nng_stream_listener_listen(f->l), 0);
    int port = 0;
    nng_stream_listener_get_int(f->l, NNG_OPT_TCP_BOUND_PORT, &port);
    snprintf(f->url, sizeof f->url, "tcp://127.0.0.1:%d", port);
    pthread_create(&f->thr, NULL, fake_main, f);
}

static void fake_stop(fake *f)
{
    atomic_store(&f->stop, true);
    if (f->st) nng_stream_close(f->st);
    nng_stream_listener_close(f->l);
    pthread_join(f->thr, NULL);
    if (f->st) nng_stream_free(f->st);
    nng_stream_listener_free(f->l);
    json_decref(f->published);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mtx);
}

/* Waits until the fake recorded n notifications (or a generous safety limit
 * passed, which the assertion after it then reports). */
static size_t fake_wait_published(fake *f, size_t n)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    pthread_mutex_lock(&f->mtx);
    while (json_array_size(f->published) < n)
        if (pthread_cond_timedwait(&f->cond, &f->mtx, &ts)) break;
    size_t got = json_array_size(f->published);
    pthread_mutex_unlock(&f->mtx);
    return got;
}

static tw_client *client_up(fake *f, bool inline_cb)
{
    tw_client_opts o = {.url = f->url,
                        .client_id = "wire",
                        .password = "pw",
                        .keepalive_ms = -1,
                        .dispatch_inline = inline_cb};
    tw_client *c = NULL;
    assert_int_equal(tw_client_new(&o, &c), 0);
    assert_int_equal(tw_client_wait_connected(c, 30000), 0);
    return c;
}

/* ---- publishing ---------------------------------------------------------------------- */

/* 100,000 events published as fast as the queue takes them (so runs of many
 * envelopes form), interleaved with property values: every one arrives,
 * once, in the order published, each a complete envelope. */
static void test_batched_publish_order(void **state)
{
    (void)state;
    fake f;
    fake_start(&f);
    tw_client *c = client_up(&f, false);
    const long n = 100000;
    for (long i = 0; i < n; i++) {
        json_t *v = json_integer(i);
        int rc = i % 1000 == 999 ? tw_agent_publish_property(c, "t", "p", v)
                                 : tw_agent_publish_event(c, "t", "e", v);
        json_decref(v);
        assert_int_equal(rc, 0);
    }
    assert_int_equal(fake_wait_published(&f, (size_t)n), n);
    for (long i = 0; i < n; i++) {
        json_t *e = json_array_get(f.published, (size_t)i);
        assert_string_equal(json_string_value(json_object_get(e, "type")), "notification");
        assert_string_equal(json_string_value(json_object_get(e, "operation")),
                            i % 1000 == 999 ? "observeproperty" : "subscribeevent");
        assert_string_equal(json_string_value(json_object_get(e, "thingID")), "t");
        assert_non_null(json_string_value(json_object_get(e, "messageID")));
        assert_non_null(json_string_value(json_object_get(e, "timestamp")));
        assert_int_equal(json_integer_value(json_object_get(e, "value")), i);
    }
    tw_client_stats st;
    tw_client_get_stats(c, &st);
    assert_int_equal(st.dropped, 0);
    assert_true(st.sent >= (uint64_t)n);
    tw_client_close(c);
    fake_stop(&f);
}

/* Values of every JSON type, and names and strings that need escaping, come
 * out meaning exactly what went in. */
static void test_values_roundtrip(void **state)
{
    (void)state;
    fake f;
    fake_start(&f);
    tw_client *c = client_up(&f, false);
    const char nul_in[] = "a\0b";
    json_t *values =
        json_pack("[s, s, s, s, s, s, I, I, I, i, f, f, b, b, n, {s:[i, s, {}], s:s}, [], {}, o]",
                  "plain", "quote \" and backslash \\ and slash /", "\n\r\t\b\f\x01\x1f\x7f",
                  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "", "</script>",
                  (json_int_t)INT64_MIN, (json_int_t)INT64_MAX, (json_int_t)-1, 0, 2.17, -1e-300, 1,
                  0, "k", 1, "x\"y", "q\\", "\u2028", json_stringn(nul_in, 3));
    assert_non_null(values);
    size_t nv = json_array_size(values);
    for (size_t i = 0; i < nv; i++)
        assert_int_equal(
            tw_agent_publish_event(c, "thing \"x\"\\", "na\tme", json_array_get(values, i)), 0);
    assert_int_equal(tw_agent_publish_event(c, "t", "none", NULL), 0); /* no value: null */
    assert_int_equal(fake_wait_published(&f, nv + 1), nv + 1);
    for (size_t i = 0; i < nv; i++) {
        json_t *e = json_array_get(f.published, i);
        assert_string_equal(json_string_value(json_object_get(e, "thingID")), "thing \"x\"\\");
        assert_string_equal(json_string_value(json_object_get(e, "name")), "na\tme");
        if (!json_equal(json_object_get(e, "value"), json_array_get(values, i))) {
            char *want = json_dumps(json_array_get(values, i), JSON_ENCODE_ANY);
            char *got = json_dumps(json_object_get(e, "value"), JSON_ENCODE_ANY);
            fail_msg("value %zu: sent %s, received %s", i, want, got);
        }
    }
    assert_true(json_is_null(json_object_get(json_array_get(f.published, nv), "value")));
    json_decref(values);
    tw_client_close(c);
    fake_stop(&f);
}

/* Inputs of every kind reach the runtime exactly (the fake echoes them as
 * the output, which also checks the response is read back exactly). */
static void test_invoke_roundtrip(void **state)
{
    (void)state;
    fake f;
    fake_start(&f);
    tw_client *c = client_up(&f, false);
    json_t *inputs =
        json_pack("[s, {s:s, s:[i, f, b, n]}, I, o]", "say \"hi\"\n\\ caf\xc3\xa9", "k\"ey",
                  "v\tal", "list", -7, 0.1, 1, (json_int_t)INT64_MIN, json_array());
    assert_non_null(inputs);
    for (size_t i = 0; i < json_array_size(inputs); i++) {
        tw_action_result res;
        json_t *in = json_array_get(inputs, i);
        assert_int_equal(tw_consumer_invoke(c, "dtw:a:t \"1\"", "ec\\ho", in, 30000, &res), 0);
        assert_int_equal(res.status, TW_STATUS_COMPLETED);
        assert_true(json_equal(res.output, in));
        tw_action_result_clear(&res);
    }
    /* ids and names that are not UTF-8 are refused at once, not sent */
    assert_int_equal(tw_consumer_invoke(c, "dtw:a:\xff", "echo", NULL, 30000, NULL), TW_EINVAL);
    assert_int_equal(tw_consumer_invoke(c, "dtw:a:t", "ec\xc3", NULL, 30000, NULL), TW_EINVAL);
    assert_int_equal(tw_agent_publish_event(c, "t", "\xed\xa0\x80", NULL), TW_EINVAL);
    /* no input: none sent, none echoed */
    tw_action_result res;
    assert_int_equal(tw_consumer_invoke(c, "dtw:a:t", "echo", NULL, 30000, &res), 0);
    assert_null(res.output);
    tw_action_result_clear(&res);
    json_decref(inputs);
    tw_client_close(c);
    fake_stop(&f);
}

/* An agent's answers (progress, then completion) as the runtime gets them. */
static void answer_cb(void *arg, tw_client *c, tw_req *r)
{
    (void)arg;
    (void)c;
    json_t *p = json_pack("{s:s}", "step", "half \"way\"");
    tw_req_progress(r, p);
    json_decref(p);
    json_t *out = json_pack("{s:O, s:s}", "in", tw_req_input(r), "note", "tab\there\x01");
    tw_req_complete(r, out);
    json_decref(out);
}

static void test_agent_answers(void **state)
{
    (void)state;
    fake f;
    fake_start(&f);
    tw_client *c = client_up(&f, false);
    assert_int_equal(tw_agent_on_action(c, "t\"q", "act", answer_cb, NULL), 0);
    json_t *in = json_pack("{s:s}", "x", "\\y\"");
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O}", "type", "request", "operation",
                            "invokeaction", "thingID", "t\"q", "name", "act", "correlationID",
                            "a-1", "senderID", "someone", "input", in);
    fake_send_json(&f, req);
    assert_int_equal(fake_wait_published(&f, 2), 2);
    json_t *prog = json_array_get(f.published, 0), *done = json_array_get(f.published, 1);
    assert_string_equal(json_string_value(json_object_get(prog, "type")), "notification");
    assert_string_equal(json_string_value(json_object_get(prog, "status")), "running");
    assert_string_equal(json_string_value(json_object_get(json_object_get(prog, "output"), "step")),
                        "half \"way\"");
    assert_string_equal(json_string_value(json_object_get(done, "type")), "response");
    assert_string_equal(json_string_value(json_object_get(done, "operation")), "invokeaction");
    assert_string_equal(json_string_value(json_object_get(done, "thingID")), "t\"q");
    assert_string_equal(json_string_value(json_object_get(done, "name")), "act");
    assert_string_equal(json_string_value(json_object_get(done, "correlationID")), "a-1");
    assert_string_equal(json_string_value(json_object_get(done, "status")), "completed");
    json_t *want = json_pack("{s:O, s:s}", "in", in, "note", "tab\there\x01");
    assert_true(json_equal(json_object_get(done, "output"), want));
    json_decref(want);
    json_decref(req);
    json_decref(in);
    tw_client_close(c);
    fake_stop(&f);
}

/* ---- receiving ------------------------------------------------------------------------ */

typedef struct seen {
    atomic_int n;
    char thing[64], name[64], ts[64];
    bool property;
    json_t *value, *env, *text_value;
} seen;

static void view_cb(void *arg, tw_client *c, const tw_notification *n)
{
    (void)c;
    seen *s = arg;
    snprintf(s->thing, sizeof s->thing, "%s", tw_notification_thing(n));
    snprintf(s->name, sizeof s->name, "%s", tw_notification_name(n));
    const char *ts = tw_notification_timestamp(n);
    snprintf(s->ts, sizeof s->ts, "%s", ts ? ts : "");
    s->property = tw_notification_is_property(n);
    json_decref(s->value);
    s->value = json_deep_copy(tw_notification_value(n));
    size_t tl = 0;
    const char *text = tw_notification_value_text(n, &tl);
    json_decref(s->text_value);
    s->text_value = text ? json_loadb(text, tl, JSON_DECODE_ANY, NULL) : NULL;
    json_decref(s->env);
    s->env = json_deep_copy(tw_notification_envelope(n));
    atomic_fetch_add(&s->n, 1);
}

static void classic_cb(void *arg, tw_client *c, const char *thing, const char *name, json_t *value,
                       json_t *env)
{
    (void)c;
    seen *s = arg;
    snprintf(s->thing, sizeof s->thing, "%s", thing);
    snprintf(s->name, sizeof s->name, "%s", name);
    json_decref(s->value);
    s->value = json_deep_copy(value);
    json_decref(s->env);
    s->env = json_deep_copy(env);
    atomic_fetch_add(&s->n, 1);
}

static void wait_seen(seen *s, int n)
{
    for (int i = 0; i < 6000 && atomic_load(&s->n) < n; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(atomic_load(&s->n), n);
}

static void run_receive(bool inline_cb)
{
    fake f;
    fake_start(&f);
    tw_client *c = client_up(&f, inline_cb);
    seen ev = {0}, pr = {0}, cl = {0};
    assert_int_equal(tw_consumer_subscribe_event_view(c, "dtw:a:t", "e", view_cb, &ev, NULL), 0);
    assert_int_equal(tw_consumer_observe_property_view(c, "*", "*", view_cb, &pr, NULL), 0);
    assert_int_equal(tw_consumer_subscribe_event(c, "dtw:a:t", "*", classic_cb, &cl, NULL), 0);
    json_t *value =
        json_pack("{s:s, s:[i, f, n]}", "s", "tab\there \"q\" \\ caf\xc3\xa9", "a", 1, 0.5);
    json_t *note = json_pack("{s:s, s:s, s:s, s:s, s:O, s:s}", "type", "notification", "operation",
                             "subscribeevent", "thingID", "dtw:a:t", "name", "e", "value", value,
                             "timestamp", "2026-01-02T03:04:05.678Z");
    fake_send_json(&f, note);
    wait_seen(&ev, 1);
    wait_seen(&cl, 1);
    assert_string_equal(ev.thing, "dtw:a:t");
    assert_string_equal(ev.name, "e");
    assert_string_equal(ev.ts, "2026-01-02T03:04:05.678Z");
    assert_false(ev.property);
    assert_true(json_equal(ev.value, value));
    /* the raw text, where the parser kept it, means the same value */
    if (ev.text_value) assert_true(json_equal(ev.text_value, value));
    assert_true(json_equal(ev.env, note));
    assert_string_equal(cl.thing, "dtw:a:t");
    assert_true(json_equal(cl.value, value));
    assert_true(json_equal(cl.env, note));
    /* a property value without a value member: the view says null */
    json_t *prop = json_pack("{s:s, s:s, s:s, s:s}", "type", "notification", "operation",
                             "observeproperty", "thingID", "dtw:b:u", "name", "p");
    fake_send_json(&f, prop);
    wait_seen(&pr, 1);
    assert_true(pr.property);
    assert_string_equal(pr.thing, "dtw:b:u");
    assert_true(json_is_null(pr.value));
    assert_int_equal(atomic_load(&ev.n), 1); /* not an event */
    json_decref(prop);
    json_decref(note);
    json_decref(value);
    tw_client_close(c);
    fake_stop(&f);
    seen *all[] = {&ev, &pr, &cl};
    for (int i = 0; i < 3; i++) {
        json_decref(all[i]->value);
        json_decref(all[i]->env);
        json_decref(all[i]->text_value);
    }
}

static void test_receive_callback_thread(void **state)
{
    (void)state;
    run_receive(false);
}

static void test_receive_inline(void **state)
{
    (void)state;
    run_receive(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_publish_order),   cmocka_unit_test(test_values_roundtrip),
        cmocka_unit_test(test_invoke_roundtrip),        cmocka_unit_test(test_agent_answers),
        cmocka_unit_test(test_receive_callback_thread), cmocka_unit_test(test_receive_inline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
