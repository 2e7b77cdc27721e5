/*
 * test_token.c - PASETO v4.public against the official test vectors
 * (github.com/paseto-standard/test-vectors, v4.json, 4-S-1..3), tampering,
 * twind's claims (round trip, expiry, wrong key) and the key file.
 */
#include "runtime/token.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char SEED_HEX[] = "b4cbfb43df4ce210727d953e4a713307fa19bb7d9f85041438d9e11b942a3774";
static const char PK_HEX[] = "1eb9dbbbbc047c03fd70604e0071f0987e16b28b757225c11f00415d0e20b1a2";
static const char MSG[] =
    "{\"data\":\"this is a signed message\",\"exp\":\"2022-01-01T00:00:00+00:00\"}";
static const char FOOTER[] = "{\"kid\":\"zVhMiPBP9fRf2snEcT7gFTioeA9COcNy9DfgL1W60haN\"}";
static const char IMPLICIT[] = "{\"test-vector\":\"4-S-3\"}";
static const char TOK_S1[] =
    "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCs"
    "wMDowMCJ9bg_XBBzds8lTZShVlwwKSgeKpLT3yukTw6JUz3W4h_ExsQV-"
    "P0V54zemZDcAxFaSeef1QlXEFtkqxT1ciiQEDA";
static const char TOK_S2[] =
    "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCs"
    "wMDowMCJ9v3Jt8mx_TdM2ceTGoqwrh4yDFn0XsHvvV_D0DtwQxVrJEBMl0F2caAdgnpKlt4p7xBnx1HcO-"
    "SPo8FPp214HDw"
    ".eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9";
static const char TOK_S3[] =
    "v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCs"
    "wMDowMCJ9NPWciuD3d0o5eXJXG5pJy-DiVEoyPYWs1YSTwWHNJq6DZD3je5gf-"
    "0M4JR9ipdUSJbIovzmBECeaWmaqcaP0DQ"
    ".eyJraWQiOiJ6VmhNaVBCUDlmUmYyc25FY1Q3Z0ZUaW9lQTlDT2NOeTlEZmdMMVc2MGhhTiJ9";

static uint8_t pk[32], sk[64];

static int setup_keys(void **state)
{
    uint8_t seed[32], pk_expect[32];
    assert_int_equal(sodium_hex2bin(seed, 32, SEED_HEX, 64, NULL, NULL, NULL), 0);
    assert_int_equal(sodium_hex2bin(pk_expect, 32, PK_HEX, 64, NULL, NULL, NULL), 0);
    assert_int_equal(tw_token_keypair_from_seed(seed, pk, sk), 0);
    assert_memory_equal(pk, pk_expect, 32);
    return 0;
}

static void sign_vector(const char *footer, const char *implicit, const char *expect)
{
    char *tok = NULL;
    assert_int_equal(tw_paseto_v4_sign(sk, (const uint8_t *)MSG, strlen(MSG),
                                       (const uint8_t *)footer, footer ? strlen(footer) : 0,
                                       (const uint8_t *)implicit, implicit ? strlen(implicit) : 0,
                                       &tok),
                     0);
    assert_string_equal(tok, expect);
    free(tok);
}

static void verify_vector(const char *tok, const char *footer, const char *implicit)
{
    uint8_t *m = NULL, *f = NULL;
    size_t mlen = 0, flen = 0;
    assert_int_equal(tw_paseto_v4_verify(pk, tok, (const uint8_t *)implicit,
                                         implicit ? strlen(implicit) : 0, &m, &mlen, &f, &flen),
                     0);
    assert_int_equal(mlen, strlen(MSG));
    assert_memory_equal(m, MSG, mlen);
    assert_int_equal(m[mlen], 0);
    if (footer) {
        assert_non_null(f);
        assert_int_equal(flen, strlen(footer));
        assert_memory_equal(f, footer, flen);
    } else {
        assert_null(f);
    }
    free(m);
    free(f);
}

static void test_vectors_sign(void **state)
{
    sign_vector(NULL, NULL, TOK_S1);
    sign_vector(FOOTER, NULL, TOK_S2);
    sign_vector(FOOTER, IMPLICIT, TOK_S3);
}

static void test_vectors_verify(void **state)
{
    verify_vector(TOK_S1, NULL, NULL);
    verify_vector(TOK_S2, FOOTER, NULL);
    verify_vector(TOK_S3, FOOTER, IMPLICIT);
}

static int verify_rc(const char *tok, const char *implicit)
{
    uint8_t *m = NULL, *f = NULL;
    size_t mlen = 0, flen = 0;
    int rc = tw_paseto_v4_verify(pk, tok, (const uint8_t *)implicit,
                                 implicit ? strlen(implicit) : 0, &m, &mlen, &f, &flen);
    free(m);
    free(f);
    return rc;
}

/* Every single-character change anywhere in a token must be rejected. */
static void test_tamper_every_position(void **state)
{
    const char *toks[] = {TOK_S1, TOK_S2};
    for (int t = 0; t < 2; t++) {
        size_t n = strlen(toks[t]);
        char *copy = strdup(toks[t]);
        for (size_t i = 0; i < n; i++) {
            char orig = copy[i];
            copy[i] = orig == 'A' ? 'B' : 'A';
            /* A change of the last character's unused low bits is caught as
             * non-canonical base64 or as a signature failure: both reject. */
            assert_int_not_equal(verify_rc(copy, NULL), 0);
            copy[i] = orig;
        }
        assert_int_equal(verify_rc(copy, NULL), 0);
        free(copy);
    }
}

static void test_malformed(void **state)
{
    char buf[1024];
    /* wrong implicit assertion, or one missing */
    assert_int_equal(verify_rc(TOK_S3, NULL), TW_EAUTH);
    assert_int_equal(verify_rc(TOK_S2, IMPLICIT), TW_EAUTH);
    /* footer dropped from a footer token, footer added to a footer-less one */
    snprintf(buf, sizeof buf, "%.*s", (int)(strchr(TOK_S2 + 10, '.') - TOK_S2), TOK_S2);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    snprintf(buf, sizeof buf, "%s.eyJraWQiOiJ4In0", TOK_S1);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    /* other versions and purposes */
    snprintf(buf, sizeof buf, "v4.local.%s", TOK_S1 + 10);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    snprintf(buf, sizeof buf, "v3.public.%s", TOK_S1 + 10);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    snprintf(buf, sizeof buf, "V4.PUBLIC.%s", TOK_S1 + 10);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    /* padding, empty or extra parts, short payload */
    snprintf(buf, sizeof buf, "%s=", TOK_S1);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    snprintf(buf, sizeof buf, "%s.", TOK_S1);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    snprintf(buf, sizeof buf, "%s.e30", TOK_S2);
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    assert_int_equal(verify_rc("v4.public.", NULL), TW_EAUTH);
    assert_int_equal(verify_rc("v4.public.AAAA", NULL), TW_EAUTH);
    assert_int_equal(verify_rc("", NULL), TW_EAUTH);
    /* standard base64 alphabet instead of base64url */
    snprintf(buf, sizeof buf, "%s", TOK_S1);
    for (char *p = buf; *p; p++)
        if (*p == '_') *p = '/';
    assert_int_equal(verify_rc(buf, NULL), TW_EAUTH);
    /* over the length bound */
    char *big = malloc(TW_TOKEN_MAX_LEN + 100);
    memset(big, 'A', TW_TOKEN_MAX_LEN + 99);
    memcpy(big, "v4.public.", 10);
    big[TW_TOKEN_MAX_LEN + 99] = 0;
    assert_int_equal(verify_rc(big, NULL), TW_EAUTH);
    free(big);
}

static void test_wrong_key(void **state)
{
    uint8_t pk2[32], sk2[64];
    crypto_sign_keypair(pk2, sk2);
    uint8_t *m = NULL;
    size_t mlen = 0;
    assert_int_equal(tw_paseto_v4_verify(pk2, TOK_S1, NULL, 0, &m, &mlen, NULL, NULL), TW_EAUTH);
    assert_null(m);
}

static tw_token_claims claims(int64_t now, int64_t life)
{
    tw_token_claims c = {0};
    strcpy(c.sub, "alice");
    strcpy(c.sid, "s-123");
    c.role = TW_ROLE_OPERATOR;
    c.iat_ms = now;
    c.exp_ms = now + life;
    return c;
}

static void test_claims_round_trip(void **state)
{
    int64_t now = tw_now_ms();
    tw_token_claims c = claims(now, 3600 * 1000), got;
    char *tok = NULL;
    assert_int_equal(tw_token_issue(sk, &c, &tok), 0);
    assert_non_null(strstr(tok, "v4.public."));
    assert_int_equal(tw_token_check(pk, tok, now, &got), 0);
    assert_string_equal(got.sub, "alice");
    assert_string_equal(got.sid, "s-123");
    assert_int_equal(got.role, TW_ROLE_OPERATOR);
    assert_int_equal(got.iat_ms, c.iat_ms);
    assert_int_equal(got.exp_ms, c.exp_ms);

    /* The payload is the JSON claims with RFC 3339 times. */
    uint8_t *m = NULL;
    size_t mlen = 0;
    assert_int_equal(tw_paseto_v4_verify(pk, tok, NULL, 0, &m, &mlen, NULL, NULL), 0);
    json_t *o = json_loadb((const char *)m, mlen, 0, NULL);
    assert_non_null(o);
    int64_t exp;
    assert_int_equal(tw_time_parse(json_string_value(json_object_get(o, "exp")), &exp), 0);
    assert_int_equal(exp, c.exp_ms);
    json_decref(o);
    free(m);
    free(tok);
}

static void test_claims_expired_and_wrong_key(void **state)
{
    int64_t now = tw_now_ms();
    tw_token_claims c = claims(now - 7200 * 1000, 3600 * 1000), got;
    char *tok = NULL;
    assert_int_equal(tw_token_issue(sk, &c, &tok), 0);
    assert_int_equal(tw_token_check(pk, tok, now, &got), TW_EEXPIRED);
    /* expiry is exclusive: at exp the token is no longer valid */
    assert_int_equal(tw_token_check(pk, tok, c.exp_ms, &got), TW_EEXPIRED);
    assert_int_equal(tw_token_check(pk, tok, c.exp_ms - 1, &got), 0);
    uint8_t pk2[32], sk2[64];
    crypto_sign_keypair(pk2, sk2);
    assert_int_equal(tw_token_check(pk2, tok, c.exp_ms - 1, &got), TW_EAUTH);
    free(tok);
}

static void test_claims_rejects_bad_payloads(void **state)
{
    const char *bad[] = {
        "[]",
        "{}",
        "{\"sub\":\"alice\",\"sid\":\"s\",\"role\":\"emperor\",\"iat\":\"2026-01-01T00:00:00Z\","
        "\"exp\":\"2099-01-01T00:00:00Z\"}",
        "{\"sub\":\"al ice\",\"sid\":\"s\",\"role\":\"admin\",\"iat\":\"2026-01-01T00:00:00Z\","
        "\"exp\":\"2099-01-01T00:00:00Z\"}",
        "{\"sub\":\"alice\",\"sid\":\"s\",\"role\":\"admin\",\"iat\":\"2026-01-01T00:00:00Z\","
        "\"exp\":\"soon\"}",
        "{\"sub\":\"alice\",\"sub\":\"root\",\"sid\":\"s\",\"role\":\"admin\",\"iat\":"
        "\"2026-01-01T00:00:00Z\",\"exp\":\"2099-01-01T00:00:00Z\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *tok = NULL;
        tw_token_claims got;
        assert_int_equal(
            tw_paseto_v4_sign(sk, (const uint8_t *)bad[i], strlen(bad[i]), NULL, 0, NULL, 0, &tok),
            0);
        assert_int_equal(tw_token_check(pk, tok, tw_now_ms(), &got), TW_EAUTH);
        free(tok);
    }
    /* A valid claims set with a footer someone added is refused too. */
    const char *ok = "{\"sub\":\"alice\",\"sid\":\"s\",\"role\":\"admin\",\"iat\":"
                     "\"2026-01-01T00:00:00Z\",\"exp\":\"2099-01-01T00:00:00Z\"}";
    char *tok = NULL;
    tw_token_claims got;
    assert_int_equal(tw_paseto_v4_sign(sk, (const uint8_t *)ok, strlen(ok), NULL, 0, NULL, 0, &tok),
                     0);
    assert_int_equal(tw_token_check(pk, tok, tw_now_ms(), &got), 0);
    free(tok);
    assert_int_equal(tw_paseto_v4_sign(sk, (const uint8_t *)ok, strlen(ok), (const uint8_t *)"{}",
                                       2, NULL, 0, &tok),
                     0);
    assert_int_equal(tw_token_check(pk, tok, tw_now_ms(), &got), TW_EAUTH);
    free(tok);
}

static char *tmpdir(void)
{
    const char *base = getenv("TW_TEST_TMP");
    char tmpl[512];
    if (base) mkdir(base, 0700);
    snprintf(tmpl, sizeof tmpl, "%s/token-XXXXXX", base ? base : "/tmp");
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

static void test_key_file(void **state)
{
    char *dir = tmpdir();
    uint8_t pk1[32], sk1[64], pk2[32], sk2[64];
    bool created = false;
    assert_int_equal(tw_token_key_load(dir, pk1, sk1, &created), 0);
    assert_true(created);

    char path[1200];
    struct stat st;
    snprintf(path, sizeof path, "%s/keys", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    snprintf(path, sizeof path, "%s/keys/token.key", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 32);

    /* Same key on restart; a token signed before verifies after. */
    char *tok = NULL;
    tw_token_claims c = claims(tw_now_ms(), 60000), got;
    assert_int_equal(tw_token_issue(sk1, &c, &tok), 0);
    assert_int_equal(tw_token_key_load(dir, pk2, sk2, &created), 0);
    assert_false(created);
    assert_memory_equal(pk1, pk2, 32);
    assert_int_equal(tw_token_check(pk2, tok, tw_now_ms(), &got), 0);
    free(tok);

    /* Loose permissions are tightened. */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(tw_token_key_load(dir, pk2, sk2, NULL), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* A damaged key file is an error, never silently replaced. */
    assert_int_equal(truncate(path, 10), 0);
    assert_int_not_equal(tw_token_key_load(dir, pk2, sk2, NULL), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 10);

    rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_sign),
        cmocka_unit_test(test_vectors_verify),
        cmocka_unit_test(test_tamper_every_position),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_claims_round_trip),
        cmocka_unit_test(test_claims_expired_and_wrong_key),
        cmocka_unit_test(test_claims_rejects_bad_payloads),
        cmocka_unit_test(test_key_file),
    };
    return cmocka_run_group_tests(tests, setup_keys, NULL);
}
