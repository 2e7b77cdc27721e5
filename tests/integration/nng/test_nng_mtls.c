/*
 * test_nng_mtls.c - mutual TLS on the nng binding, against a real twind.
 *
 * An agent with a certificate from `twind --issue-cert` connects over
 * tls+tcp with libtwin's nng transport (cert_file/key_file, no password, no
 * login message) and is its client at once: it publishes a TD, which lands
 * under its own id, and answers an action a password-authenticated consumer
 * invokes. Refused, each with a 401 problem and the link closed: a
 * certificate of a client that does not exist, a certificate with a valid
 * client id from another CA, and the certificate of a client removed
 * since. A connection without a certificate still logs in with a password
 * (the admin client of every test).
 *
 * The refused links end on the server's side; the tests read to that end
 * over TLS. And a TLS link whose server dies is noticed by the transport
 * even though nng 1.5 loses the end of it (the hang libtwin used to leave
 * to its keepalive).
 */
#include "harness.h"

#include "agents/sdk/transport.h"
#include "bindings/nng/nng_tls.h"

#include <nng/supplemental/tls/tls.h>
#include "runtime/tls.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* ---- a raw agent over libtwin's transport --------------------------------------- */

static tw_transport *cert_link(const twind_proc *d, const char *cert, const char *key)
{
    tw_client_opts o = {.url = d->url, .ca_file = d->ca, .cert_file = cert, .key_file = key};
    tw_transport *t = NULL;
    int rc = tw_transport_nng.connect(&o, 5000, &t);
    if (rc) fprintf(stderr, "connect with %s: %s\n", cert, tw_strerror(rc));
    return rc ? NULL : t;
}

static void link_free(tw_transport *t)
{
    tw_transport_nng.shutdown(t);
    tw_transport_nng.free(t);
}

static int send_json(tw_transport *t, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s) return TW_ENOMEM;
    size_t n = strlen(s);
    char *line = malloc(n + 2);
    memcpy(line, s, n);
    line[n] = '\n';
    int rc = tw_transport_nng.send(t, line, n + 1);
    free(line);
    free(s);
    return rc;
}

/* The next envelope, or NULL when the link ended. */
static json_t *recv_json(tw_transport *t)
{
    const char *line;
    size_t n;
    if (tw_transport_nng.recv(t, &line, &n) != 0) return NULL;
    return json_loadb(line, n, 0, NULL);
}

static int problem_status(json_t *j)
{
    return (int)json_integer_value(json_object_get(json_object_get(j, "error"), "status"));
}

/* A refused certificate: a 401 problem, then the server ends the link. */
static void expect_refused(const twind_proc *d, const char *cert, const char *key)
{
    tw_transport *t = cert_link(d, cert, key);
    assert_non_null(t);
    json_t *j = recv_json(t);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "failed");
    assert_int_equal(problem_status(j), 401);
    json_decref(j);
    /* whatever comes now is not served: the link ends */
    json_t *ping = json_pack("{s:s, s:s, s:s, s:s}", "type", "request", "operation",
                             "readallproperties", "thingID", "dtw:x:y", "correlationID", "r1");
    send_json(t, ping); /* may already fail */
    json_decref(ping);
    for (;;) {
        j = recv_json(t);
        if (!j) break;
        /* an answer to the request can only be a refusal */
        assert_int_equal(problem_status(j), 401);
        json_decref(j);
    }
    link_free(t);
}

static int issue_cert(const twind_proc *d, const char *id)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' --data '%s' --issue-cert '%s' >/dev/null 2>&1", TWIND_PATH,
             d->data, id);
    return system(cmd);
}

static void cert_paths(const twind_proc *d, const char *id, char *cert, char *key, size_t n)
{
    snprintf(cert, n, "%s/clients/%s.pem", d->data, id);
    snprintf(key, n, "%s/clients/%s.key", d->data, id);
}

/* ---- the consumer side ---------------------------------------------------------- */

typedef struct done {
    pthread_mutex_t mtx;
    tw_status status;
    json_t *output;
} done;

static void on_done(void *arg, tw_client *c, const tw_action_result *res)
{
    (void)c;
    done *d = arg;
    if (!tw_status_final(res->status)) return;
    pthread_mutex_lock(&d->mtx);
    d->status = res->status;
    d->output = json_incref(res->output);
    pthread_mutex_unlock(&d->mtx);
}

static bool is_done(void *arg)
{
    done *d = arg;
    pthread_mutex_lock(&d->mtx);
    bool f = d->status != TW_STATUS_NONE;
    pthread_mutex_unlock(&d->mtx);
    return f;
}

/* ---- tests ---------------------------------------------------------------------- */

#define WSS_URL "wss://127.0.0.1:0/twind"

/* twind on nng_url (NULL: tls+tcp), and a plain tcp:// listener. */
static int start_twind(twind_proc *d, const char *tag, const char *nng_url)
{
    memset(d, 0, sizeof *d);
    if (h_mkdtemp(d->dir, sizeof d->dir, tag)) return -1;
    snprintf(d->data, sizeof d->data, "%s/data", d->dir);
    return twind_start(d, nng_url);
}

static void agent_with_certificate(const char *nng_url)
{
    twind_proc d;
    assert_int_equal(start_twind(&d, "nng-mtls", nng_url), 0);
    tw_client *admin = h_admin(&d); /* a password login, on the same listener */
    assert_non_null(admin);
    assert_int_equal(h_add_client(admin, "mtls-agent", "agent", "agent", "unused-Passw0rd!"), 0);
    assert_int_equal(issue_cert(&d, "mtls-agent"), 0);
    char cert[800], key[800];
    cert_paths(&d, "mtls-agent", cert, key, sizeof cert);

    tw_transport *t = cert_link(&d, cert, key);
    assert_non_null(t);
    /* no login: the first envelope is already the agent's */
    json_t *td =
        json_pack("{s:s, s:s, s:s, s:{s:{s:s}}}", "@context", "https://www.w3.org/2022/wot/td/v1.1",
                  "id", "lamp", "title", "Lamp", "actions", "toggle", "title", "Toggle");
    json_t *up = json_pack("{s:s, s:s, s:s, s:s, s:o}", "type", "request", "operation",
                           "updatething", "thingID", "lamp", "correlationID", "u1", "input", td);
    assert_int_equal(send_json(t, up), 0);
    json_decref(up);
    json_t *j = recv_json(t);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "correlationID")), "u1");
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    /* the twin is named after the client of the certificate */
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "output"), "thingID")),
                        "dtw:mtls-agent:lamp");
    json_decref(j);

    /* a consumer invokes; the certificate agent gets the request and answers */
    done dn = {.status = TW_STATUS_NONE};
    pthread_mutex_init(&dn.mtx, NULL);
    json_t *in = json_pack("{s:i}", "level", 3);
    assert_int_equal(
        tw_consumer_invoke_async(admin, "dtw:mtls-agent:lamp", "toggle", in, 10000, on_done, &dn),
        0);
    json_decref(in);
    json_t *req = NULL;
    while ((req = recv_json(t)) != NULL) {
        const char *op = json_string_value(json_object_get(req, "operation"));
        if (op && strcmp(op, "invokeaction") == 0) break;
        json_decref(req);
    }
    assert_non_null(req);
    assert_string_equal(json_string_value(json_object_get(req, "name")), "toggle");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(req, "input"), "level")),
                     3);
    json_t *ans =
        json_pack("{s:s, s:s, s:O, s:O, s:O, s:s, s:{s:b}}", "type", "response", "operation",
                  "invokeaction", "thingID", json_object_get(req, "thingID"), "name",
                  json_object_get(req, "name"), "correlationID",
                  json_object_get(req, "correlationID"), "status", "completed", "output", "on", 1);
    json_decref(req);
    assert_int_equal(send_json(t, ans), 0);
    json_decref(ans);
    assert_true(h_wait(is_done, &dn, 10000));
    assert_int_equal(dn.status, TW_STATUS_COMPLETED);
    assert_true(json_is_true(json_object_get(dn.output, "on")));
    json_decref(dn.output);
    pthread_mutex_destroy(&dn.mtx);
    link_free(t);

    tw_client_close(admin);
    twind_stop(&d);
}

/* The agent's action handler: completes at once with {"on": true}. */
static void on_toggle(void *arg, tw_client *c, tw_req *r)
{
    (void)arg;
    (void)c;
    json_t *out = json_pack("{s:b}", "on", 1);
    tw_req_complete(r, out);
    json_decref(out);
}

/*
 * The same agent through the whole of libtwin: tw_client_opts with
 * cert_file/key_file and no password: the certificate alone is the
 * credential.
 */
static void test_libtwin_agent_with_certificate(void **state)
{
    (void)state;
    twind_proc d;
    assert_int_equal(twind_new(&d, "nng-mtls-lib"), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    assert_int_equal(h_add_client(admin, "mtls-lib", "agent", "agent", "unused-Passw0rd!"), 0);
    assert_int_equal(issue_cert(&d, "mtls-lib"), 0);
    char cert[800], key[800];
    cert_paths(&d, "mtls-lib", cert, key, sizeof cert);
    tw_client_opts o = {.url = d.url,
                        .ca_file = d.ca,
                        .cert_file = cert,
                        .key_file = key,
                        .reconnect_min_ms = 50,
                        .reconnect_max_ms = 500};
    tw_client *ag = NULL;
    assert_int_equal(tw_client_new(&o, &ag), 0);
    assert_int_equal(tw_client_wait_connected(ag, 15000), 0);
    char id[TW_ID_MAX];
    tw_client_get_id(ag, id);
    assert_string_equal(id, "mtls-lib");
    assert_int_equal(tw_agent_on_action(ag, "*", "toggle", on_toggle, NULL), 0);
    json_t *td =
        json_pack("{s:s, s:s, s:s, s:{s:{s:s}}}", "@context", "https://www.w3.org/2022/wot/td/v1.1",
                  "id", "lamp", "title", "Lamp", "actions", "toggle", "title", "Toggle");
    char *twin = NULL;
    assert_int_equal(tw_agent_publish_td(ag, td, &twin, NULL), 0);
    json_decref(td);
    assert_string_equal(twin, "dtw:mtls-lib:lamp");
    free(twin);
    tw_action_result r;
    assert_int_equal(tw_consumer_invoke(admin, "dtw:mtls-lib:lamp", "toggle", NULL, 10000, &r), 0);
    assert_true(json_is_true(json_object_get(r.output, "on")));
    tw_action_result_clear(&r);
    tw_client_close(ag);
    tw_client_close(admin);
    twind_stop(&d);
}

static void refused_certificates(const char *nng_url)
{
    twind_proc d;
    assert_int_equal(start_twind(&d, "nng-mtls-refused", nng_url), 0);
    tw_client *admin = h_admin(&d);
    assert_non_null(admin);
    char cert[800], key[800];

    /* a certificate of this CA for an id that is no client */
    assert_int_equal(issue_cert(&d, "mtls-ghost"), 0);
    cert_paths(&d, "mtls-ghost", cert, key, sizeof cert);
    expect_refused(&d, cert, key);

    /* a known client id, but a certificate from another CA */
    assert_int_equal(h_add_client(admin, "mtls-other", "agent", "agent", "unused-Passw0rd!"), 0);
    char other[700];
    snprintf(other, sizeof other, "%s/other-ca", d.dir);
    tw_tls_files of;
    assert_int_equal(tw_tls_ensure(other, &of), 0);
    char ocert[800], okey[800];
    snprintf(ocert, sizeof ocert, "%s/mtls-other.pem", other);
    snprintf(okey, sizeof okey, "%s/mtls-other.key", other);
    assert_int_equal(tw_tls_issue_client(&of, "mtls-other", 0, ocert, okey), 0);
    expect_refused(&d, ocert, okey);

    /* a client removed after its certificate was issued */
    assert_int_equal(h_add_client(admin, "mtls-gone", "agent", "agent", "unused-Passw0rd!"), 0);
    assert_int_equal(issue_cert(&d, "mtls-gone"), 0);
    cert_paths(&d, "mtls-gone", cert, key, sizeof cert);
    tw_transport *t = cert_link(&d, cert, key); /* accepted while it exists */
    assert_non_null(t);
    json_t *q = json_pack("{s:s, s:s, s:s, s:s}", "type", "request", "operation", "updatething",
                          "thingID", "x", "correlationID", "g1");
    json_object_set_new(q, "input",
                        json_pack("{s:s, s:s, s:s}", "@context",
                                  "https://www.w3.org/2022/wot/td/v1.1", "id", "x", "title", "X"));
    assert_int_equal(send_json(t, q), 0);
    json_decref(q);
    json_t *j = recv_json(t);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "completed");
    json_decref(j);
    json_t *in = json_pack("{s:s}", "clientID", "mtls-gone");
    tw_action_result r;
    assert_int_equal(tw_consumer_invoke(admin, "dtw:twind:authn", "removeClient", in, 10000, &r),
                     0);
    tw_action_result_clear(&r);
    json_decref(in);
    /* the live link of the removed client ends */
    for (;;) {
        j = recv_json(t);
        if (!j) break;
        json_decref(j);
    }
    link_free(t);
    expect_refused(&d, cert, key);

    /* and the password login is unaffected */
    tw_client *again = h_admin(&d);
    assert_non_null(again);
    tw_client_close(again);
    tw_client_close(admin);
    twind_stop(&d);
}

/*
 * A TLS link whose server dies (no close_notify, just the end of the TCP
 * connection) while the client has no receive outstanding, the way
 * libtwin's I/O thread sits between envelopes. nng 1.5's TLS stream reads
 * the socket on its own, meets the end, closes the socket's aios, and the
 * next receive then waits for ever (see agents/sdk/transport_nng.c). The
 * transport's probe must end that receive. Without the probe this test
 * hangs (until ctest's timeout).
 */
static void dead_server_seen(const char *nng_url)
{
    twind_proc d;
    assert_int_equal(start_twind(&d, "nng-tls-dead", nng_url), 0);
    tw_transport *t = cert_link(&d, NULL, NULL); /* no certificate, no login */
    assert_non_null(t);
    json_t *ping =
        json_pack("{s:s, s:s, s:s}", "type", "request", "operation", "ping", "correlationID", "p");
    assert_int_equal(send_json(t, ping), 0);
    json_decref(ping);
    json_t *j = recv_json(t);
    assert_non_null(j);
    json_decref(j);
    kill(d.pid, SIGKILL);
    /* the end of the connection arrives while no receive is outstanding (if
     * this pause were too short, the receive below would be outstanding
     * already and fail at once, which passes too) */
    h_sleep_ms(500);
    assert_null(recv_json(t));
    link_free(t);
    twind_reap_killed(&d);
}

/* A server whose certificate does not chain to ca_file is refused by the
 * client (the transport has no "insecure" switch). */
static void test_server_verified(void **state)
{
    (void)state;
    twind_proc d;
    assert_int_equal(twind_new(&d, "nng-tls-server"), 0);
    char other[700];
    snprintf(other, sizeof other, "%s/other-ca", d.dir);
    tw_tls_files of;
    assert_int_equal(tw_tls_ensure(other, &of), 0);
    tw_client_opts o = {.url = d.url, .ca_file = of.ca_cert};
    tw_transport *t = NULL;
    int rc = tw_transport_nng.connect(&o, 5000, &t);
    if (rc == 0) {
        /* the handshake runs on the first exchange */
        json_t *ping = json_pack("{s:s, s:s, s:s}", "type", "request", "operation", "ping",
                                 "correlationID", "p");
        rc = send_json(t, ping);
        json_decref(ping);
        json_t *j = rc ? NULL : recv_json(t);
        assert_null(j);
        link_free(t);
    }
    /* the right CA works */
    t = cert_link(&d, NULL, NULL);
    assert_non_null(t);
    link_free(t);
    twind_stop(&d);
}

static void test_agent_with_certificate(void **state)
{
    (void)state;
    agent_with_certificate(NULL);
}

static void test_agent_with_certificate_wss(void **state)
{
    (void)state;
    agent_with_certificate(WSS_URL);
}

static void test_refused_certificates(void **state)
{
    (void)state;
    refused_certificates(NULL);
}

static void test_refused_certificates_wss(void **state)
{
    (void)state;
    refused_certificates(WSS_URL);
}

static void test_dead_server_seen_over_tls(void **state)
{
    (void)state;
    dead_server_seen(NULL);
}

static void test_dead_server_seen_over_wss(void **state)
{
    (void)state;
    dead_server_seen(WSS_URL);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    (void)twind_restart; /* (harness.h) */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_with_certificate),
        cmocka_unit_test(test_agent_with_certificate_wss),
        cmocka_unit_test(test_refused_certificates),
        cmocka_unit_test(test_refused_certificates_wss),
        cmocka_unit_test(test_libtwin_agent_with_certificate),
        cmocka_unit_test(test_dead_server_seen_over_tls),
        cmocka_unit_test(test_dead_server_seen_over_wss),
        cmocka_unit_test(test_server_verified),
    };
    int failed = cmocka_run_group_tests_name("nng default TLS engine (mbedTLS)", tests, NULL, NULL);
    /*
     * Again with twind's GnuTLS engine for nng on the client side too: it is
     * process-wide, so a program that links the binding and libtwin runs
     * its clients on it. (Certificates of another CA are not in this pass:
     * a GnuTLS client only offers a certificate whose issuer the server's
     * request names, so it sends none and simply is not authenticated.)
     */
    if (tw_nng_tls_engine_use() != 0 || strcmp(nng_tls_engine_name(), "gnutls") != 0)
        return failed + 1;
    const struct CMUnitTest gnutls_tests[] = {
        cmocka_unit_test(test_agent_with_certificate),
        cmocka_unit_test(test_agent_with_certificate_wss),
        cmocka_unit_test(test_dead_server_seen_over_tls),
        cmocka_unit_test(test_dead_server_seen_over_wss),
        cmocka_unit_test(test_server_verified),
    };
    return failed +
           cmocka_run_group_tests_name("twind's GnuTLS engine for nng", gnutls_tests, NULL, NULL);
}
