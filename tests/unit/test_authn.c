/*
 * test_authn.c - clients, passwords, sessions and tokens on a real store:
 * first start (admin password, permissions of every secret), login,
 * verify, refresh, logout (cached tokens too), expired / tampered /
 * wrong-key tokens, sessions across a restart, brute-force limits per id
 * and per address (the 11th bad password within a minute gets TW_ERATE,
 * whether the id exists or not), client administration.
 */
#include "runtime/authn.h"
#include "runtime/token.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct fx {
    char dir[512];
    tw_store *store;
    tw_authn *an;
    char *admin_pw;
    tw_authn_opts opts;
} fx;

static void open_all(fx *f, char **first_pw)
{
    char path[600];
    snprintf(path, sizeof path, "%s/twind.db", f->dir);
    tw_store_opts so = {0};
    so.synchronous_normal = true;
    assert_int_equal(tw_store_open(path, &so, &f->store), 0);
    assert_int_equal(tw_authn_open(f->store, f->dir, &f->opts, &f->an, first_pw), 0);
}

static void close_all(fx *f)
{
    tw_authn_close(f->an);
    tw_store_close(f->store);
    f->an = NULL;
    f->store = NULL;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    const char *base = getenv("TW_TEST_TMP");
    if (base) mkdir(base, 0700);
    snprintf(f->dir, sizeof f->dir, "%s/authn-XXXXXX", base ? base : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    chmod(f->dir, 0755); /* authn must make it owner-only */
    f->opts.pw_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    f->opts.pw_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    open_all(f, &f->admin_pw);
    assert_non_null(f->admin_pw);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    if (f->an) close_all(f);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f->admin_pw);
    free(f);
    return 0;
}

static void assert_mode(const char *dir, const char *name, unsigned mode)
{
    char path[700];
    snprintf(path, sizeof path, "%s%s%s", dir, name ? "/" : "", name ? name : "");
    struct stat st;
    if (stat(path, &st) != 0) fail_msg("%s is missing", path);
    if ((st.st_mode & 0777) != mode)
        fail_msg("%s has mode %o, expected %o", path, st.st_mode & 0777, mode);
}

static char *login(fx *f, const char *id, const char *pw, int expect)
{
    char *tok = NULL;
    int64_t exp = 0;
    int retry = 0;
    int64_t before = tw_now_ms();
    int rc = tw_authn_login(f->an, id, pw, "10.0.0.1", &tok, &exp, &retry);
    if (rc != expect)
        fail_msg("login %s: expected %d, got %d (%s)", id, expect, rc, tw_strerror(rc));
    if (rc == 0) {
        assert_non_null(tok);
        assert_true(exp > before);
    } else {
        assert_null(tok);
    }
    return tok;
}

static void test_first_start(void **state)
{
    fx *f = *state;
    /* every secret is owner-only */
    assert_mode(f->dir, NULL, 0700);
    assert_mode(f->dir, "admin.password", 0600);
    assert_mode(f->dir, "keys", 0700);
    assert_mode(f->dir, "keys/token.key", 0600);
    assert_mode(f->dir, "twind.db", 0600);

    /* admin.password holds the password returned once */
    char path[700], buf[200] = "";
    snprintf(path, sizeof path, "%s/admin.password", f->dir);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof buf, fp));
    fclose(fp);
    buf[strcspn(buf, "\n")] = 0;
    assert_string_equal(buf, f->admin_pw);
    assert_true(strlen(f->admin_pw) >= 20);

    char *tok = login(f, "admin", f->admin_pw, 0);
    tw_identity id;
    assert_int_equal(tw_authn_verify(f->an, tok, &id), 0);
    assert_string_equal(id.client_id, "admin");
    assert_int_equal(id.role, TW_ROLE_ADMIN);
    assert_true(id.session_id[0] != 0);
    assert_true(tw_authn_session_live(f->an, id.session_id));
    free(tok);

    /* a restart makes no second admin and keeps the password */
    close_all(f);
    char *again = (char *)"sentinel";
    open_all(f, &again);
    assert_null(again);
    free(login(f, "admin", f->admin_pw, 0));
}

static void test_wrong_password_and_unknown_id(void **state)
{
    fx *f = *state;
    login(f, "admin", "wrong", TW_EAUTH);
    login(f, "nobody", "wrong", TW_EAUTH);
    login(f, "not a valid id", "x", TW_EAUTH);
    login(f, "admin", "", TW_EAUTH);
    /* the error does not depend on whether the id exists */
    assert_int_equal(
        tw_authn_add_client(f->an, "tokenonly", TW_KIND_AGENT, TW_ROLE_AGENT, NULL, NULL), 0);
    login(f, "tokenonly", "anything", TW_EAUTH);
}

static void test_refresh_and_logout(void **state)
{
    fx *f = *state;
    char *t1 = login(f, "admin", f->admin_pw, 0);
    char *other = login(f, "admin", f->admin_pw, 0); /* a second session */
    tw_identity a, b, o;
    assert_int_equal(tw_authn_verify(f->an, t1, &a), 0);
    assert_int_equal(tw_authn_verify(f->an, other, &o), 0);
    assert_string_not_equal(a.session_id, o.session_id);

    char *t2 = NULL;
    int64_t exp = 0;
    assert_int_equal(tw_authn_refresh(f->an, t1, &t2, &exp), 0);
    assert_string_not_equal(t1, t2);
    assert_int_equal(tw_authn_verify(f->an, t2, &b), 0);
    assert_string_equal(a.session_id, b.session_id);
    assert_true(b.expires_ms >= a.expires_ms);

    /* logout revokes every token of the session at once, cached or not */
    assert_int_equal(tw_authn_verify(f->an, t1, &a), 0); /* cached now */
    assert_int_equal(tw_authn_logout(f->an, a.session_id), 0);
    assert_false(tw_authn_session_live(f->an, a.session_id));
    assert_int_equal(tw_authn_verify(f->an, t1, &a), TW_EAUTH);
    assert_int_equal(tw_authn_verify(f->an, t2, &b), TW_EAUTH);
    char *t3 = NULL;
    assert_int_equal(tw_authn_refresh(f->an, t2, &t3, &exp), TW_EAUTH);
    assert_null(t3);
    /* the other session is untouched */
    assert_int_equal(tw_authn_verify(f->an, other, &o), 0);

    /* and it stays revoked after a restart, while the other survives */
    close_all(f);
    open_all(f, NULL);
    assert_int_equal(tw_authn_verify(f->an, t2, &b), TW_EAUTH);
    assert_int_equal(tw_authn_verify(f->an, other, &o), 0);
    free(t1);
    free(t2);
    free(other);
}

static void test_bad_tokens(void **state)
{
    fx *f = *state;
    char *tok = login(f, "admin", f->admin_pw, 0);
    tw_identity id;
    assert_int_equal(tw_authn_verify(f->an, tok, &id), 0);

    /* tampered: one character of the payload changed */
    char *bad = strdup(tok);
    bad[20] = bad[20] == 'A' ? 'B' : 'A';
    assert_int_equal(tw_authn_verify(f->an, bad, &id), TW_EAUTH);
    free(bad);
    assert_int_equal(tw_authn_verify(f->an, "", &id), TW_EAUTH);
    assert_int_equal(tw_authn_verify(f->an, "v4.public.", &id), TW_EAUTH);

    /* signed by another key, for a live session */
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    tw_token_claims c = {0};
    strcpy(c.sub, "admin");
    tw_strlcpy(c.sid, id.session_id, sizeof c.sid);
    c.role = TW_ROLE_ADMIN;
    c.iat_ms = tw_now_ms();
    c.exp_ms = c.iat_ms + 3600000;
    char *forged = NULL;
    assert_int_equal(tw_token_issue(sk, &c, &forged), 0);
    assert_int_equal(tw_authn_verify(f->an, forged, &id), TW_EAUTH);
    free(forged);

    /* signed with the runtime's own key but expired (session still live) */
    bool created;
    assert_int_equal(tw_token_key_load(f->dir, pk, sk, &created), 0);
    assert_false(created);
    c.iat_ms = tw_now_ms() - 7200000;
    c.exp_ms = c.iat_ms + 3600000;
    char *expired = NULL;
    assert_int_equal(tw_token_issue(sk, &c, &expired), 0);
    assert_int_equal(tw_authn_verify(f->an, expired, &id), TW_EAUTH);
    char *fresh = NULL;
    int64_t exp;
    assert_int_equal(tw_authn_refresh(f->an, expired, &fresh, &exp), TW_EAUTH);
    /* the same claims unexpired verify: the key really is the runtime's */
    c.exp_ms = tw_now_ms() + 3600000;
    char *good = NULL;
    assert_int_equal(tw_token_issue(sk, &c, &good), 0);
    assert_int_equal(tw_authn_verify(f->an, good, &id), 0);
    /* a session id that was never issued */
    strcpy(c.sid, "s-made-up");
    char *nosession = NULL;
    assert_int_equal(tw_token_issue(sk, &c, &nosession), 0);
    assert_int_equal(tw_authn_verify(f->an, nosession, &id), TW_EAUTH);
    free(expired);
    free(good);
    free(nosession);
    free(tok);
}

static void test_token_lifetimes(void **state)
{
    fx *f = *state;
    close_all(f);
    f->opts.consumer_token_ms = 1; /* expires as soon as it is made */
    f->opts.agent_token_ms = 5LL * 24 * 3600 * 1000;
    open_all(f, NULL);
    char *tok = login(f, "admin", f->admin_pw, 0);
    usleep(5000);
    tw_identity id;
    assert_int_equal(tw_authn_verify(f->an, tok, &id), TW_EAUTH);
    free(tok);

    assert_int_equal(
        tw_authn_add_client(f->an, "sensor1", TW_KIND_AGENT, TW_ROLE_AGENT, "Sensor", NULL), 0);
    int64_t exp = 0, before = tw_now_ms();
    assert_int_equal(tw_authn_issue_token(f->an, "sensor1", &tok, &exp), 0);
    assert_true(exp >= before + f->opts.agent_token_ms);
    assert_int_equal(tw_authn_verify(f->an, tok, &id), 0);
    assert_string_equal(id.client_id, "sensor1");
    assert_int_equal(id.role, TW_ROLE_AGENT);
    assert_int_equal(id.expires_ms, exp);
    free(tok);
    assert_int_equal(tw_authn_issue_token(f->an, "ghost", &tok, &exp), TW_ENOTFOUND);
}

static void test_brute_force_per_id(void **state)
{
    fx *f = *state;
    char *tok = NULL;
    int64_t exp;
    int retry = 0;
    for (int i = 0; i < 10; i++)
        assert_int_equal(tw_authn_login(f->an, "admin", "guess", NULL, &tok, &exp, &retry),
                         TW_EAUTH);
    /* the 11th within the minute is refused, even with the right password */
    assert_int_equal(tw_authn_login(f->an, "admin", "guess", NULL, &tok, &exp, &retry), TW_ERATE);
    assert_true(retry >= 1 && retry <= 60);
    retry = 0;
    assert_int_equal(tw_authn_login(f->an, "admin", f->admin_pw, NULL, &tok, &exp, &retry),
                     TW_ERATE);
    assert_null(tok);
    assert_true(retry >= 1);

    /* an id that does not exist behaves the same */
    for (int i = 0; i < 10; i++)
        assert_int_equal(tw_authn_login(f->an, "ghost", "guess", NULL, &tok, &exp, &retry),
                         TW_EAUTH);
    assert_int_equal(tw_authn_login(f->an, "ghost", "guess", NULL, &tok, &exp, &retry), TW_ERATE);

    /* other ids are not affected */
    assert_int_equal(
        tw_authn_add_client(f->an, "bob", TW_KIND_CONSUMER, TW_ROLE_VIEWER, "Bob", "bobpw"), 0);
    assert_int_equal(tw_authn_login(f->an, "bob", "bobpw", NULL, &tok, &exp, &retry), 0);
    free(tok);
}

static void test_brute_force_per_address(void **state)
{
    fx *f = *state;
    char *tok = NULL, id[32];
    int64_t exp;
    int retry = 0;
    assert_int_equal(
        tw_authn_add_client(f->an, "carol", TW_KIND_CONSUMER, TW_ROLE_VIEWER, NULL, "carolpw"), 0);
    /* one address spraying many ids */
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "user%d", i);
        assert_int_equal(tw_authn_login(f->an, id, "x", "192.0.2.7", &tok, &exp, &retry), TW_EAUTH);
    }
    assert_int_equal(tw_authn_login(f->an, "carol", "carolpw", "192.0.2.7", &tok, &exp, &retry),
                     TW_ERATE);
    assert_true(retry >= 1 && retry <= 60);
    /* the port is not part of the address: new connections do not help */
    for (int i = 0; i < 10; i++) {
        char remote[64], who[32];
        snprintf(remote, sizeof remote, "198.51.100.3:%d", 40000 + i);
        snprintf(who, sizeof who, "p%d", i);
        assert_int_equal(tw_authn_login(f->an, who, "x", remote, &tok, &exp, &retry), TW_EAUTH);
    }
    assert_int_equal(
        tw_authn_login(f->an, "carol", "carolpw", "198.51.100.3:50000", &tok, &exp, &retry),
        TW_ERATE);
    /* nor are the addresses of one IPv6 /64 */
    for (int i = 0; i < 10; i++) {
        char remote[64], who[32];
        snprintf(remote, sizeof remote, "[2001:db8:1:2::%x]:443", i + 1);
        snprintf(who, sizeof who, "v6user%d", i);
        assert_int_equal(tw_authn_login(f->an, who, "x", remote, &tok, &exp, &retry), TW_EAUTH);
    }
    assert_int_equal(
        tw_authn_login(f->an, "carol", "carolpw", "[2001:db8:1:2:ffff::9]:80", &tok, &exp, &retry),
        TW_ERATE);
    /* carol from elsewhere is fine */
    assert_int_equal(tw_authn_login(f->an, "carol", "carolpw", "192.0.2.8", &tok, &exp, &retry), 0);
    free(tok);
}

static void test_administration(void **state)
{
    fx *f = *state;
    tw_authn *an = f->an;
    assert_int_equal(
        tw_authn_add_client(an, "dave", TW_KIND_CONSUMER, TW_ROLE_OPERATOR, "Dave", "davepw"), 0);
    assert_int_equal(tw_authn_add_client(an, "dave", TW_KIND_CONSUMER, TW_ROLE_VIEWER, NULL, "x"),
                     TW_EEXIST);
    assert_int_equal(tw_authn_add_client(an, "-bad", TW_KIND_CONSUMER, TW_ROLE_VIEWER, NULL, "x"),
                     TW_EINVAL);
    assert_int_equal(tw_authn_add_client(an, "eve", TW_KIND_CONSUMER, TW_ROLE_NONE, NULL, "x"),
                     TW_EINVAL);
    assert_int_equal(tw_authn_add_client(an, "eve", TW_KIND_CONSUMER, TW_ROLE_VIEWER, NULL, ""),
                     TW_EINVAL);

    json_t *list = NULL;
    assert_int_equal(tw_authn_list_clients(an, &list), 0);
    assert_int_equal(json_array_size(list), 2);
    json_t *d = json_array_get(list, 1);
    assert_string_equal(json_string_value(json_object_get(d, "clientID")), "dave");
    assert_string_equal(json_string_value(json_object_get(d, "role")), "operator");
    assert_string_equal(json_string_value(json_object_get(d, "kind")), "consumer");
    assert_string_equal(json_string_value(json_object_get(d, "displayName")), "Dave");
    assert_true(json_is_true(json_object_get(d, "hasPassword")));
    char *dump = json_dumps(list, 0);
    assert_null(strstr(dump, "argon2")); /* no hashes */
    free(dump);
    json_decref(list);

    /* password change */
    char *tok = login(f, "dave", "davepw", 0);
    assert_int_equal(tw_authn_set_password(an, "dave", "newpw"), 0);
    login(f, "dave", "davepw", TW_EAUTH);
    free(login(f, "dave", "newpw", 0));
    assert_int_equal(tw_authn_set_password(an, "ghost", "pw"), TW_ENOTFOUND);

    /* a role change revokes tokens that carry the old role */
    tw_identity id;
    assert_int_equal(tw_authn_verify(an, tok, &id), 0);
    assert_int_equal(tw_authn_set_role(an, "dave", TW_ROLE_MANAGER), 0);
    assert_int_equal(tw_authn_verify(an, tok, &id), TW_EAUTH);
    free(tok);
    tok = login(f, "dave", "newpw", 0);
    assert_int_equal(tw_authn_verify(an, tok, &id), 0);
    assert_int_equal(id.role, TW_ROLE_MANAGER);

    /* removal revokes too */
    assert_int_equal(tw_authn_remove_client(an, "dave"), 0);
    assert_int_equal(tw_authn_verify(an, tok, &id), TW_EAUTH);
    login(f, "dave", "newpw", TW_EAUTH);
    assert_int_equal(tw_authn_remove_client(an, "dave"), TW_ENOTFOUND);
    free(tok);

    /* the last admin stays */
    assert_int_equal(tw_authn_remove_client(an, "admin"), TW_ECONFLICT);
    assert_int_equal(tw_authn_set_role(an, "admin", TW_ROLE_VIEWER), TW_ECONFLICT);
    assert_int_equal(tw_authn_add_client(an, "root2", TW_KIND_CONSUMER, TW_ROLE_ADMIN, NULL, "r"),
                     0);
    assert_int_equal(tw_authn_set_role(an, "admin", TW_ROLE_VIEWER), 0);
    assert_int_equal(tw_authn_remove_client(an, "root2"), TW_ECONFLICT);
}

static void test_sessions_per_client_bounded(void **state)
{
    fx *f = *state;
    /* 64 live sessions per client: the 65th ends the oldest, not the table */
    char *first = login(f, "admin", f->admin_pw, 0);
    tw_identity id;
    assert_int_equal(tw_authn_verify(f->an, first, &id), 0);
    for (int i = 1; i < 64; i++)
        free(login(f, "admin", f->admin_pw, 0));
    assert_int_equal(tw_authn_verify(f->an, first, &id), 0);
    char *last = login(f, "admin", f->admin_pw, 0);
    assert_int_equal(tw_authn_verify(f->an, first, &id), TW_EAUTH);
    assert_int_equal(tw_authn_verify(f->an, last, &id), 0);
    free(first);
    free(last);
}

static void test_client_identity(void **state)
{
    fx *f = *state;
    tw_identity id;
    assert_int_equal(
        tw_authn_add_client(f->an, "meter", TW_KIND_AGENT, TW_ROLE_AGENT, "Meter", NULL), 0);
    assert_int_equal(tw_authn_client_identity(f->an, "meter", &id), 0);
    assert_string_equal(id.client_id, "meter");
    assert_int_equal(id.role, TW_ROLE_AGENT);
    assert_true(strncmp(id.session_id, "x509-", 5) == 0);
    tw_identity id2;
    assert_int_equal(tw_authn_client_identity(f->an, "meter", &id2), 0);
    assert_string_not_equal(id.session_id, id2.session_id);
    assert_int_equal(tw_authn_set_role(f->an, "meter", TW_ROLE_SERVICE), 0);
    assert_int_equal(tw_authn_client_identity(f->an, "meter", &id), 0);
    assert_int_equal(id.role, TW_ROLE_SERVICE); /* the current role, not a stale one */
    assert_int_equal(tw_authn_remove_client(f->an, "meter"), 0);
    assert_int_equal(tw_authn_client_identity(f->an, "meter", &id), TW_EAUTH);
    assert_int_equal(tw_authn_client_identity(f->an, "bad id", &id), TW_EINVAL);
}

static void test_opts_from_config(void **state)
{
    tw_authn_opts o;
    char err[128];
    assert_int_equal(tw_authn_opts_from_config(NULL, &o, err, sizeof err), 0);
    assert_int_equal(o.consumer_token_ms, 0); /* 0: the defaults of tw_authn_open */
    json_t *sec = json_pack("{s:i, s:i, s:i}", "consumer_token_s", 3600, "agent_token_s", 86400,
                            "login_fail_limit", 5);
    assert_int_equal(tw_authn_opts_from_config(sec, &o, err, sizeof err), 0);
    assert_int_equal(o.consumer_token_ms, 3600000);
    assert_int_equal(o.agent_token_ms, 86400000);
    assert_int_equal(o.login_fail_limit, 5);
    json_decref(sec);
    const char *bad[] = {"{\"consumer_token_s\": 1}", "{\"agent_token_s\": \"long\"}",
                         "{\"login_fail_limit\": 0}", "{\"tokens\": 5}", "[]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sec = json_loads(bad[i], 0, NULL);
        err[0] = 0;
        assert_int_equal(tw_authn_opts_from_config(sec, &o, err, sizeof err), TW_EINVAL);
        assert_true(strncmp(err, "authn", 5) == 0);
        json_decref(sec);
    }

    /* a limit of 5 from the config applies */
    fx *f = *state;
    close_all(f);
    f->opts.login_fail_limit = 5;
    open_all(f, NULL);
    char *tok = NULL;
    int64_t exp;
    int retry;
    for (int i = 0; i < 5; i++)
        assert_int_equal(tw_authn_login(f->an, "admin", "x", NULL, &tok, &exp, &retry), TW_EAUTH);
    assert_int_equal(tw_authn_login(f->an, "admin", "x", NULL, &tok, &exp, &retry), TW_ERATE);
}

/* Revocation is immediate under concurrency: a verify that starts after
 * tw_authn_logout() returned never succeeds, whatever other threads cache. */
#define NSESS 4
typedef struct race {
    fx *f;
    char *tok[NSESS];
    atomic_bool revoked[NSESS];
    atomic_int violations, ok;
    atomic_bool stop;
} race;

static void *verifier(void *arg)
{
    race *r = arg;
    while (!atomic_load(&r->stop)) {
        for (int i = 0; i < NSESS; i++) {
            bool was_revoked = atomic_load(&r->revoked[i]);
            tw_identity id;
            int rc = tw_authn_verify(r->f->an, r->tok[i], &id);
            if (rc == 0 && was_revoked) atomic_fetch_add(&r->violations, 1);
            if (rc == 0) atomic_fetch_add(&r->ok, 1);
            if (rc != 0 && rc != TW_EAUTH) atomic_fetch_add(&r->violations, 1);
        }
    }
    return NULL;
}

static void test_concurrent_verify_and_logout(void **state)
{
    fx *f = *state;
    race *r = calloc(1, sizeof *r);
    r->f = f;
    for (int i = 0; i < NSESS; i++)
        r->tok[i] = login(f, "admin", f->admin_pw, 0);
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&th[i], NULL, verifier, r), 0);
    while (atomic_load(&r->ok) < 1000)
        usleep(1000);
    for (int i = 0; i < NSESS; i++) {
        tw_identity id;
        assert_int_equal(tw_authn_verify(f->an, r->tok[i], &id), 0);
        assert_int_equal(tw_authn_logout(f->an, id.session_id), 0);
        atomic_store(&r->revoked[i], true);
        int seen = atomic_load(&r->ok);
        while (atomic_load(&r->ok) == seen && i + 1 < NSESS)
            usleep(100); /* let the others keep verifying live sessions */
    }
    usleep(2000);
    atomic_store(&r->stop, true);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&r->violations), 0);
    for (int i = 0; i < NSESS; i++)
        free(r->tok[i]);
    free(r);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_first_start),
        T(test_wrong_password_and_unknown_id),
        T(test_refresh_and_logout),
        T(test_bad_tokens),
        T(test_token_lifetimes),
        T(test_brute_force_per_id),
        T(test_brute_force_per_address),
        T(test_administration),
        T(test_concurrent_verify_and_logout),
        T(test_opts_from_config),
        T(test_sessions_per_client_bounded),
        T(test_client_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
