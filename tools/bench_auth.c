/*
 * bench_auth.c - scenario `auth`: the cost of authentication and
 * authorization on the request path.
 *
 * Figures:
 *   paseto_sign_per_s       v4.public tokens signed (Ed25519)
 *   verify_uncached_per_s   tw_authn_verify of distinct tokens (signature
 *                           check, claims parse, session check, cache fill)
 *   verify_cached_per_s     tw_authn_verify of one token again and again
 *                           (BLAKE2b lookup + session check): what every
 *                           HTTP request with a bearer token pays
 *   authz_check_per_s       tw_authz_check of a request on a Thing with
 *                           allow/deny lists
 *   login_ms                one password login with the production argon2id
 *                           cost (64 MiB, OPSLIMIT_INTERACTIVE)
 */
#include "bench.h"

#include "runtime/authn.h"
#include "runtime/authz.h"
#include "runtime/log.h"
#include "runtime/token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int run_auth(const tw_bench_args *args)
{
    tw_log_set_level(TW_LOG_WARN);
    char path[1200];
    snprintf(path, sizeof path, "%s/twind.db", args->workdir);
    tw_store_opts so = {0};
    so.synchronous_normal = true;
    tw_store *store = NULL;
    tw_authn *an = NULL;
    tw_authz *az = NULL;
    char *admin_pw = NULL;
    if (tw_store_open(path, &so, &store) ||
        tw_authn_open(store, args->workdir, NULL, &an, &admin_pw) || tw_authz_open(store, &az)) {
        fprintf(stderr, "auth: cannot open the store\n");
        return 1;
    }
    int n = (int)(20000 * args->scale);
    if (n < 100) n = 100;

    /* a live session to sign tokens for */
    int64_t t0 = tw_mono_us(), exp = 0;
    char *tok = NULL;
    int rc = tw_authn_login(an, "admin", admin_pw, "bench", &tok, &exp, NULL);
    double login_ms = (double)(tw_mono_us() - t0) / 1000.0;
    tw_identity id;
    if (rc || tw_authn_verify(an, tok, &id)) {
        fprintf(stderr, "auth: login failed: %s\n", tw_strerror(rc));
        return 1;
    }
    tw_bench_report("auth", "login_ms", login_ms, "ms");

    uint8_t pk[TW_TOKEN_PK_BYTES], sk[TW_TOKEN_SK_BYTES];
    tw_token_key_load(args->workdir, pk, sk, NULL);
    tw_token_claims c = {0};
    strcpy(c.sub, "admin");
    tw_strlcpy(c.sid, id.session_id, sizeof c.sid);
    c.role = TW_ROLE_ADMIN;
    c.iat_ms = tw_now_ms();
    c.exp_ms = id.expires_ms;
    char **toks = calloc((size_t)n, sizeof *toks);
    t0 = tw_mono_us();
    for (int i = 0; i < n; i++)
        tw_token_issue(sk, &c, &toks[i]);
    double secs = (double)(tw_mono_us() - t0) / 1e6;
    tw_bench_report("auth", "paseto_sign_per_s", n / secs, "1/s");

    int bad = 0;
    t0 = tw_mono_us();
    for (int i = 0; i < n; i++)
        bad += tw_authn_verify(an, toks[i], &id) != 0;
    secs = (double)(tw_mono_us() - t0) / 1e6;
    tw_bench_report("auth", "verify_uncached_per_s", n / secs, "1/s");

    int m = n * 20;
    t0 = tw_mono_us();
    for (int i = 0; i < m; i++)
        bad += tw_authn_verify(an, tok, &id) != 0;
    secs = (double)(tw_mono_us() - t0) / 1e6;
    tw_bench_report("auth", "verify_cached_per_s", m / secs, "1/s");

    json_t *allow = json_pack("[s,s]", "operator", "manager"), *deny = json_pack("[s]", "viewer");
    tw_authz_set_thing_acl(az, "dtw:ag:lamp", allow, deny);
    json_decref(allow);
    json_decref(deny);
    tw_msg *msg = tw_msg_new(TW_TYPE_REQUEST, TW_OP_INVOKEACTION, "dtw:ag:lamp", "blink");
    tw_identity op = {0};
    strcpy(op.client_id, "o1");
    op.role = TW_ROLE_OPERATOR;
    t0 = tw_mono_us();
    for (int i = 0; i < m; i++)
        bad += tw_authz_check(az, &op, msg, "ag") != 0;
    secs = (double)(tw_mono_us() - t0) / 1e6;
    tw_bench_report("auth", "authz_check_per_s", m / secs, "1/s");
    tw_msg_unref(msg);

    for (int i = 0; i < n; i++)
        free(toks[i]);
    free(toks);
    free(tok);
    free(admin_pw);
    tw_authz_close(az);
    tw_authn_close(an);
    tw_store_close(store);
    if (bad) fprintf(stderr, "auth: %d checks failed unexpectedly\n", bad);
    return bad ? 1 : 0;
}

TW_BENCH_SCENARIO(auth,
                  "token signing and verification (cached and not), authz checks, argon2id login",
                  run_auth)
