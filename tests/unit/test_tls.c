/*
 * test_tls.c - the runtime's CA and server certificate: first-start
 * generation, file permissions, reuse on restart, renewal near expiry,
 * re-issue on a host rename or a lost CA, and client certificates for
 * mutual TLS (issue, verify, reject foreign, expired-purpose and CA certs).
 * The real handshake is tests/integration/tls.
 */
#include "runtime/tls.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DAY 86400

static char *tmpdir(void)
{
    const char *base = getenv("TW_TEST_TMP");
    char tmpl[512];
    if (base) mkdir(base, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/tls-XXXXXX", base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    return strdup(d);
}

static void rm_rf(const char *dir)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = malloc(65536);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

static void assert_mode(const char *path, unsigned mode)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, mode);
}

static gnutls_x509_crt_t load(const char *path)
{
    gnutls_datum_t d;
    assert_true(gnutls_load_file(path, &d) >= 0);
    gnutls_x509_crt_t crt;
    assert_int_equal(gnutls_x509_crt_init(&crt), 0);
    assert_int_equal(gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM), 0);
    gnutls_free(d.data);
    return crt;
}

static const tw_tls_opts host_opts = {0, 0, 0, "twind-test.example"};

static void test_first_start_and_permissions(void **state)
{
    char *dir = tmpdir();
    tw_tls_files f;
    unsigned changes = 0;
    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, &changes), 0);
    assert_int_equal(changes, TW_TLS_NEW_CA | TW_TLS_NEW_SERVER);

    assert_mode(f.dir, 0700);
    assert_mode(f.ca_key, 0600);
    assert_mode(f.server_key, 0600);
    assert_mode(f.ca_cert, 0644);
    assert_mode(f.server_cert, 0644);

    int64_t now = time(NULL), ca_na, srv_na;
    assert_int_equal(tw_tls_cert_not_after(f.ca_cert, &ca_na), 0);
    assert_int_equal(tw_tls_cert_not_after(f.server_cert, &srv_na), 0);
    assert_true(ca_na > now + 3649LL * DAY && ca_na <= now + 3650LL * DAY + 60);
    assert_true(srv_na > now + 364LL * DAY && srv_na <= now + 365LL * DAY + 60);

    /* The server certificate chains to the CA and names every SAN. */
    gnutls_x509_crt_t ca = load(f.ca_cert), srv = load(f.server_cert);
    unsigned status = 1;
    assert_true(gnutls_x509_crt_verify(srv, &ca, 1, 0, &status) >= 0);
    assert_int_equal(status, 0);
    assert_true(gnutls_x509_crt_check_hostname(srv, "localhost"));
    assert_true(gnutls_x509_crt_check_hostname(srv, "127.0.0.1"));
    assert_true(gnutls_x509_crt_check_hostname(srv, "::1"));
    assert_true(gnutls_x509_crt_check_hostname(srv, "twind-test.example"));
    assert_false(gnutls_x509_crt_check_hostname(srv, "example.org"));
    unsigned crit;
    assert_true(gnutls_x509_crt_get_ca_status(ca, &crit) > 0);
    assert_false(gnutls_x509_crt_get_ca_status(srv, &crit) > 0);
    gnutls_x509_crt_deinit(ca);
    gnutls_x509_crt_deinit(srv);

    /* The keys are PKCS#8 PEM. */
    char *key = slurp(f.server_key, NULL);
    assert_non_null(strstr(key, "-----BEGIN PRIVATE KEY-----"));
    free(key);

    rm_rf(dir);
    free(dir);
}

static void test_reuse_on_restart(void **state)
{
    char *dir = tmpdir();
    tw_tls_files f;
    unsigned changes = 0;
    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, &changes), 0);
    size_t l1, l2;
    char *ca1 = slurp(f.ca_cert, &l1), *srv1 = slurp(f.server_cert, &l2);

    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, &changes), 0);
    assert_int_equal(changes, 0);
    char *ca2 = slurp(f.ca_cert, NULL), *srv2 = slurp(f.server_cert, NULL);
    assert_string_equal(ca1, ca2);
    assert_string_equal(srv1, srv2);

    /* A key made readable by others is tightened on load. */
    assert_int_equal(chmod(f.server_key, 0644), 0);
    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, &changes), 0);
    assert_int_equal(changes, 0);
    assert_mode(f.server_key, 0600);

    free(ca1);
    free(ca2);
    free(srv1);
    free(srv2);
    rm_rf(dir);
    free(dir);
}

static void test_renewal_near_expiry(void **state)
{
    char *dir = tmpdir();
    tw_tls_files f;
    unsigned changes = 0;
    /* A server certificate with 20 days left... */
    tw_tls_opts short_lived = host_opts;
    short_lived.server_days = 20;
    assert_int_equal(tw_tls_ensure_opts(dir, &short_lived, &f, &changes), 0);
    char *ca1 = slurp(f.ca_cert, NULL), *srv1 = slurp(f.server_cert, NULL);
    int64_t na;
    assert_int_equal(tw_tls_cert_not_after(f.server_cert, &na), 0);
    assert_true(na < time(NULL) + 21LL * DAY);

    /* ...is kept while the threshold is under 20 days... */
    tw_tls_opts lenient = host_opts;
    lenient.renew_days = 10;
    assert_int_equal(tw_tls_ensure_opts(dir, &lenient, &f, &changes), 0);
    assert_int_equal(changes, 0);

    /* ...and renewed by the default 30-day rule, under the same CA. */
    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, &changes), 0);
    assert_int_equal(changes, TW_TLS_NEW_SERVER);
    assert_int_equal(tw_tls_cert_not_after(f.server_cert, &na), 0);
    assert_true(na > time(NULL) + 364LL * DAY);
    char *ca2 = slurp(f.ca_cert, NULL), *srv2 = slurp(f.server_cert, NULL);
    assert_string_equal(ca1, ca2);
    assert_string_not_equal(srv1, srv2);

    free(ca1);
    free(ca2);
    free(srv1);
    free(srv2);
    rm_rf(dir);
    free(dir);
}

static void test_ca_renewal_near_expiry(void **state)
{
    char *dir = tmpdir();
    tw_tls_files f;
    unsigned changes = 0;
    tw_tls_opts short_ca = host_opts;
    short_ca.ca_days = 20;
    short_ca.server_days = 10;
    short_ca.renew_days = 5;
    assert_int_equal(tw_tls_ensure_opts(dir, &short_ca, &f, &changes), 0);
    char *ca1 = slurp(f.ca_cert, NULL);
    /* a CA with 20 days left is replaced under the default 30-day rule, and
     * the server certificate with it */
    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, &changes), 0);
    assert_int_equal(changes, TW_TLS_NEW_CA | TW_TLS_NEW_SERVER);
    char *ca2 = slurp(f.ca_cert, NULL);
    assert_string_not_equal(ca1, ca2);
    int64_t na;
    assert_int_equal(tw_tls_cert_not_after(f.ca_cert, &na), 0);
    assert_true(na > time(NULL) + 3649LL * DAY);
    free(ca1);
    free(ca2);
    rm_rf(dir);
    free(dir);
}

static void test_reissue_on_rename_and_lost_ca(void **state)
{
    char *dir = tmpdir();
    tw_tls_files f;
    unsigned changes = 0;
    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, &changes), 0);

    /* The host was renamed: the server certificate must name the new host. */
    tw_tls_opts renamed = {0, 0, 0, "other-host.example"};
    assert_int_equal(tw_tls_ensure_opts(dir, &renamed, &f, &changes), 0);
    assert_int_equal(changes, TW_TLS_NEW_SERVER);
    gnutls_x509_crt_t srv = load(f.server_cert);
    assert_true(gnutls_x509_crt_check_hostname(srv, "other-host.example"));
    gnutls_x509_crt_deinit(srv);

    /* The CA key is lost: a new CA, and a server certificate it signed. */
    char *ca1 = slurp(f.ca_cert, NULL);
    assert_int_equal(unlink(f.ca_key), 0);
    assert_int_equal(tw_tls_ensure_opts(dir, &renamed, &f, &changes), 0);
    assert_int_equal(changes, TW_TLS_NEW_CA | TW_TLS_NEW_SERVER);
    char *ca2 = slurp(f.ca_cert, NULL);
    assert_string_not_equal(ca1, ca2);
    gnutls_x509_crt_t ca = load(f.ca_cert);
    srv = load(f.server_cert);
    unsigned status = 1;
    assert_true(gnutls_x509_crt_verify(srv, &ca, 1, 0, &status) >= 0);
    assert_int_equal(status, 0);
    gnutls_x509_crt_deinit(ca);
    gnutls_x509_crt_deinit(srv);

    /* A garbage server certificate is replaced too. */
    FILE *fp = fopen(f.server_cert, "w");
    fputs("not a certificate\n", fp);
    fclose(fp);
    assert_int_equal(tw_tls_ensure_opts(dir, &renamed, &f, &changes), 0);
    assert_int_equal(changes, TW_TLS_NEW_SERVER);

    free(ca1);
    free(ca2);
    rm_rf(dir);
    free(dir);
}

static void test_client_certificates(void **state)
{
    char *dir = tmpdir(), *other = tmpdir();
    tw_tls_files f, g;
    assert_int_equal(tw_tls_ensure_opts(dir, &host_opts, &f, NULL), 0);
    assert_int_equal(tw_tls_ensure_opts(other, &host_opts, &g, NULL), 0);

    char crt[1200], key[1200], fcrt[1200], fkey[1200];
    snprintf(crt, sizeof crt, "%s/alice.pem", dir);
    snprintf(key, sizeof key, "%s/alice.key", dir);
    snprintf(fcrt, sizeof fcrt, "%s/mallory.pem", other);
    snprintf(fkey, sizeof fkey, "%s/mallory.key", other);
    assert_int_equal(tw_tls_issue_client(&f, "alice", 30, crt, key), 0);
    assert_int_equal(tw_tls_issue_client(&g, "mallory", 30, fcrt, fkey), 0);
    assert_mode(key, 0600);
    assert_int_equal(tw_tls_issue_client(&f, "not a client id", 30, crt, key), TW_EINVAL);

    tw_tls_verifier *v = NULL;
    assert_int_equal(tw_tls_verifier_new(f.ca_cert, &v), 0);
    char id[TW_ID_MAX];
    size_t len;

    char *pem = slurp(crt, &len);
    assert_int_equal(tw_tls_verify_client_pem(v, pem, len, id), 0);
    assert_string_equal(id, "alice");
    free(pem);

    /* signed by another runtime's CA */
    pem = slurp(fcrt, &len);
    assert_int_equal(tw_tls_verify_client_pem(v, pem, len, id), TW_EAUTH);
    assert_string_equal(id, "");
    free(pem);

    /* the server certificate is not for client authentication */
    pem = slurp(f.server_cert, &len);
    assert_int_equal(tw_tls_verify_client_pem(v, pem, len, id), TW_EAUTH);
    free(pem);

    /* the CA itself is not a client */
    pem = slurp(f.ca_cert, &len);
    assert_int_equal(tw_tls_verify_client_pem(v, pem, len, id), TW_EAUTH);
    free(pem);

    /* DER chain form, as a TLS session hands it over */
    gnutls_x509_crt_t c = load(crt);
    gnutls_datum_t der;
    assert_int_equal(gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_DER, &der), 0);
    assert_int_equal(tw_tls_verify_client(v, &der, 1, id), 0);
    assert_string_equal(id, "alice");
    der.data[der.size / 2] ^= 0x40; /* a flipped bit breaks the signature or the parse */
    assert_int_equal(tw_tls_verify_client(v, &der, 1, id), TW_EAUTH);
    gnutls_free(der.data);
    gnutls_x509_crt_deinit(c);
    assert_int_equal(tw_tls_verify_client(v, NULL, 0, id), TW_EAUTH);

    tw_tls_verifier_free(v);
    rm_rf(dir);
    rm_rf(other);
    free(dir);
    free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_start_and_permissions),
        cmocka_unit_test(test_reuse_on_restart),
        cmocka_unit_test(test_renewal_near_expiry),
        cmocka_unit_test(test_ca_renewal_near_expiry),
        cmocka_unit_test(test_reissue_on_rename_and_lost_ca),
        cmocka_unit_test(test_client_certificates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
