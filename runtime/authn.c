/*
 * authn.c - clients, passwords, sessions, login rate limiting and the
 * verified-token cache.
 *
 * Clients and sessions are rows in the shared store (tables authn_clients
 * and authn_sessions). Passwords are argon2id strings (crypto_pwhash_str);
 * a login for an unknown id verifies against a dummy hash of the same cost,
 * so the answer and its timing do not tell whether the id exists.
 *
 * A token names its session; a session is live while it is in the in-memory
 * session map (loaded at open: not revoked, not expired). Logout, removal of
 * a client and a role change take sessions out of the map at once, so every
 * binding sees the revocation on its next verify. The map is bounded
 * (MAX_SESSIONS; expired sessions are pruned when it fills) and so is each
 * client's share (MAX_CLIENT_SESSIONS; a new login ends its oldest session).
 *
 * Verified tokens are cached in a direct-mapped table of CACHE_SLOTS entries
 * keyed by BLAKE2b-256 of the token: a hit skips the Ed25519 check but
 * still checks expiry and the session map, so revocation is never cached.
 * A colliding insert evicts the slot's previous token (which is merely
 * verified again next time).
 *
 * Failed logins are counted per client id and per source address in a
 * fixed-size table keyed by a keyed SipHash of the name (so an attacker
 * cannot aim collisions), each entry a one-minute window: more than
 * login_fail_limit failures in the window -> TW_ERATE with the seconds left.
 *
 * Locks: `lock` guards the session map and the rate table, `cache_lock` the
 * token cache; argon2 and signature checks run outside both. Store calls are
 * made without holding either. At most MAX_HASHING argon2 computations run
 * at once (`hash_lock`): each holds pw_memlimit bytes (64 MiB by default),
 * so a burst of logins queues instead of exhausting memory.
 */
#include "authn.h"

#include "conn.h"
#include "hmap.h"
#include "log.h"
#include "token.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MOD "authn"
#define CACHE_SLOTS 4096
#define RATE_SLOTS 8192
#define RATE_PROBE 8
#define RATE_WINDOW_MS 60000
#define MAX_SESSIONS 65536
#define MAX_CLIENT_SESSIONS 64 /* a new one beyond this ends the client's oldest */
#define MAX_PASSWORD 1024
#define MAX_DISPLAY 256
#define MAX_HASHING 4 /* argon2 computations at once: each takes pw_memlimit bytes */

typedef struct session {
    char client_id[TW_ID_MAX];
    int64_t expires_ms;
    uint64_t seq; /* creation order, breaks ties between equal expiries */
} session;

typedef struct cache_entry {
    bool used;
    uint8_t key[32];
    tw_identity id;
} cache_entry;

typedef struct rate_entry {
    uint64_t tag;
    int64_t start_ms;
    int count;
} rate_entry;

struct tw_authn {
    tw_store *store;
    tw_authn_opts opts;
    uint8_t pk[TW_TOKEN_PK_BYTES];
    uint8_t sk[TW_TOKEN_SK_BYTES];
    char *dummy_hash;

    pthread_mutex_t lock;
    tw_hmap sessions; /* session id -> session* */
    uint64_t next_seq;
    uint64_t revoke_gen; /* bumped whenever a client's sessions are revoked */
    rate_entry rate[RATE_SLOTS];
    uint8_t rate_key[crypto_shorthash_KEYBYTES];

    pthread_mutex_t cache_lock;
    cache_entry cache[CACHE_SLOTS];

    pthread_mutex_t hash_lock; /* bounds concurrent argon2 work (memory) */
    pthread_cond_t hash_cv;
    int hashing;

    tw_runtime *rt; /* set by tw_authn_register_service: closes revoked sessions */
};

static const char *const migrations[] = {
    "CREATE TABLE authn_clients ("
    " id TEXT PRIMARY KEY,"
    " kind TEXT NOT NULL,"
    " role TEXT NOT NULL,"
    " display_name TEXT NOT NULL DEFAULT '',"
    " pw_hash TEXT,"
    " public_key TEXT,"
    " created INTEGER NOT NULL,"
    " updated INTEGER NOT NULL);"
    "CREATE TABLE authn_sessions ("
    " id TEXT PRIMARY KEY,"
    " client_id TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " expires INTEGER NOT NULL,"
    " revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX authn_sessions_client ON authn_sessions(client_id);",
};

static const char *const kind_names[] = {"consumer", "agent", "service"};

static const char *kind_name(tw_client_kind k)
{
    return (unsigned)k < 3 ? kind_names[k] : "consumer";
}

static int kind_parse(const char *s, tw_client_kind *k)
{
    for (int i = 0; s && i < 3; i++)
        if (strcmp(s, kind_names[i]) == 0) {
            *k = (tw_client_kind)i;
            return 0;
        }
    return TW_EINVAL;
}

static int64_t lifetime(const tw_authn *a, tw_client_kind k)
{
    return k == TW_KIND_CONSUMER ? a->opts.consumer_token_ms : a->opts.agent_token_ms;
}

/* ---- store jobs ---- */

typedef struct client_row {
    const char *id;
    bool found;
    tw_client_kind kind;
    tw_role role;
    char hash[crypto_pwhash_STRBYTES];
} client_row;

static int get_client_job(tw_store_tx *tx, void *arg)
{
    client_row *r = arg;
    sqlite3_stmt *st =
        tw_store_stmt(tx, "SELECT kind, role, pw_hash FROM authn_clients WHERE id = ?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        r->found = true;
        if (kind_parse((const char *)sqlite3_column_text(st, 0), &r->kind)) r->kind = 0;
        r->role = tw_role_parse((const char *)sqlite3_column_text(st, 1));
        const char *h = (const char *)sqlite3_column_text(st, 2);
        if (h) tw_strlcpy(r->hash, h, sizeof r->hash);
    }
    sqlite3_reset(st);
    return s == SQLITE_ROW || s == SQLITE_DONE ? 0 : TW_EDB;
}

static int get_client(tw_authn *a, const char *id, client_row *r)
{
    memset(r, 0, sizeof *r);
    r->id = id;
    return tw_store_read(a->store, get_client_job, r);
}

typedef struct session_row {
    const char *id, *client_id;
    int64_t created, expires;
} session_row;

static int put_session_job(tw_store_tx *tx, void *arg)
{
    session_row *r = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "INSERT INTO authn_sessions (id, client_id, created,"
                                         " expires) VALUES (?1, ?2, ?3, ?4)"
                                         " ON CONFLICT(id) DO UPDATE SET expires = excluded.expires"
                                         " WHERE revoked = 0");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->client_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, r->created);
    sqlite3_bind_int64(st, 4, r->expires);
    int s = sqlite3_step(st);
    sqlite3_reset(st);
    return s == SQLITE_DONE ? 0 : TW_EDB;
}

typedef struct revoke_ctx {
    const char *session_id; /* one session, or */
    const char *client_id;  /* every session of a client */
} revoke_ctx;

static int revoke_job(tw_store_tx *tx, void *arg)
{
    revoke_ctx *r = arg;
    sqlite3_stmt *st =
        r->session_id
            ? tw_store_stmt(tx, "UPDATE authn_sessions SET revoked = 1 WHERE id = ?1")
            : tw_store_stmt(tx, "UPDATE authn_sessions SET revoked = 1 WHERE client_id = ?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, r->session_id ? r->session_id : r->client_id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    sqlite3_reset(st);
    return s == SQLITE_DONE ? 0 : TW_EDB;
}

typedef struct load_ctx {
    tw_authn *a;
    int64_t now;
} load_ctx;

static int load_sessions_job(tw_store_tx *tx, void *arg)
{
    load_ctx *lc = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT id, client_id, expires FROM authn_sessions"
                                         " WHERE revoked = 0 AND expires > ?1"
                                         " ORDER BY expires DESC LIMIT ?2");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, lc->now);
    sqlite3_bind_int(st, 2, MAX_SESSIONS);
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        session *se = calloc(1, sizeof *se);
        const char *sid = (const char *)sqlite3_column_text(st, 0);
        const char *cid = (const char *)sqlite3_column_text(st, 1);
        if (!se || !sid || !cid || tw_strlcpy(se->client_id, cid, sizeof se->client_id)) {
            free(se);
            continue;
        }
        se->expires_ms = sqlite3_column_int64(st, 2);
        se->seq = UINT64_MAX / 2 - lc->a->next_seq++; /* rows come newest first */
        int err = 0;
        free(tw_hmap_put(&lc->a->sessions, sid, se, &err));
        if (err) {
            free(se);
            sqlite3_reset(st);
            return TW_ENOMEM;
        }
    }
    sqlite3_reset(st);
    return s == SQLITE_DONE ? 0 : TW_EDB;
}

/* Expired sessions are dead whatever their state: their rows go at start-up. */
static int purge_sessions_job(tw_store_tx *tx, void *arg)
{
    sqlite3_stmt *st = tw_store_stmt(tx, "DELETE FROM authn_sessions WHERE expires <= ?1");
    if (!st) return TW_EDB;
    sqlite3_bind_int64(st, 1, *(const int64_t *)arg);
    int s = sqlite3_step(st);
    sqlite3_reset(st);
    return s == SQLITE_DONE ? 0 : TW_EDB;
}

typedef struct count_ctx {
    const char *sql;
    const char *arg;
    int64_t n;
} count_ctx;

static int count_job(tw_store_tx *tx, void *arg)
{
    count_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, c->sql);
    if (!st) return TW_EDB;
    if (c->arg) sqlite3_bind_text(st, 1, c->arg, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) c->n = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return s == SQLITE_ROW ? 0 : TW_EDB;
}

/* ---- passwords ---- */

/* Waits for a slot: at most MAX_HASHING argon2 runs hold their memory at once. */
static void hash_enter(tw_authn *a)
{
    pthread_mutex_lock(&a->hash_lock);
    while (a->hashing >= MAX_HASHING)
        pthread_cond_wait(&a->hash_cv, &a->hash_lock);
    a->hashing++;
    pthread_mutex_unlock(&a->hash_lock);
}

static void hash_leave(tw_authn *a)
{
    pthread_mutex_lock(&a->hash_lock);
    a->hashing--;
    pthread_cond_signal(&a->hash_cv);
    pthread_mutex_unlock(&a->hash_lock);
}

static bool verify_password(tw_authn *a, const char *hash, const char *pw)
{
    hash_enter(a);
    bool ok = crypto_pwhash_str_verify(hash, pw, strlen(pw)) == 0;
    hash_leave(a);
    return ok;
}

static int hash_password(tw_authn *a, const char *pw, char out[crypto_pwhash_STRBYTES])
{
    hash_enter(a);
    int r = crypto_pwhash_str(out, pw, strlen(pw), a->opts.pw_opslimit, a->opts.pw_memlimit);
    hash_leave(a);
    if (r != 0) {
        tw_log_error(MOD, "password hashing failed (out of memory?)");
        return TW_ENOMEM;
    }
    return 0;
}

static bool password_ok(const char *pw)
{
    size_t n = pw ? strnlen(pw, MAX_PASSWORD + 1) : 0;
    return n > 0 && n <= MAX_PASSWORD;
}

/* ---- sessions ---- */

static bool session_live_locked(tw_authn *a, const char *sid, const char *client, int64_t now)
{
    const session *s = tw_hmap_get(&a->sessions, sid);
    return s && s->expires_ms > now && (!client || strcmp(s->client_id, client) == 0);
}

bool tw_authn_session_live(tw_authn *a, const char *session_id)
{
    if (!a || !session_id) return false;
    pthread_mutex_lock(&a->lock);
    bool live = session_live_locked(a, session_id, NULL, tw_now_ms());
    pthread_mutex_unlock(&a->lock);
    return live;
}

static void prune_sessions_locked(tw_authn *a, int64_t now)
{
    size_t pos = 0;
    const char *k;
    void *v;
    /* collect first: deleting while iterating an open-addressing map is unsafe */
    char(*dead)[TW_ID_MAX] = malloc(sizeof *dead * 1024);
    int n = 0;
    while (dead && n < 1024 && tw_hmap_next(&a->sessions, &pos, &k, &v))
        if (((session *)v)->expires_ms <= now) tw_strlcpy(dead[n++], k, TW_ID_MAX);
    for (int i = 0; i < n; i++)
        free(tw_hmap_del(&a->sessions, dead[i]));
    free(dead);
}

/*
 * When client_id already has MAX_CLIENT_SESSIONS live sessions, takes the
 * one that expires first out of the map and names it in oldest.
 */
static void oldest_if_over_locked(tw_authn *a, const char *client_id, int64_t now,
                                  char oldest[TW_ID_MAX])
{
    size_t pos = 0;
    const char *k, *first = NULL;
    void *v;
    int64_t first_exp = INT64_MAX;
    uint64_t first_seq = UINT64_MAX;
    int n = 0;
    while (tw_hmap_next(&a->sessions, &pos, &k, &v)) {
        const session *se = v;
        if (se->expires_ms <= now || strcmp(se->client_id, client_id) != 0) continue;
        n++;
        if (se->expires_ms < first_exp || (se->expires_ms == first_exp && se->seq < first_seq)) {
            first_exp = se->expires_ms;
            first_seq = se->seq;
            first = k;
        }
    }
    if (n < MAX_CLIENT_SESSIONS || !first) return;
    tw_strlcpy(oldest, first, TW_ID_MAX);
    free(tw_hmap_del(&a->sessions, oldest));
}

/* Creates (sid empty) or extends a session and signs a token for it. */
static uint64_t revoke_gen(tw_authn *a)
{
    pthread_mutex_lock(&a->lock);
    uint64_t g = a->revoke_gen;
    pthread_mutex_unlock(&a->lock);
    return g;
}

/*
 * Creates (sid empty) or extends a session and signs a token for it. gen0 is
 * revoke_gen() from before the caller read the client's row: if a removal or
 * role change revoked sessions since, the row is read again so a session
 * cannot slip in for a client that is gone or whose role changed.
 */
static int issue(tw_authn *a, const char *client_id, tw_role role, tw_client_kind kind,
                 uint64_t gen0, char sid[TW_ID_MAX], char **token, int64_t *expires_ms)
{
    int64_t now = tw_now_ms();
    tw_token_claims c = {0};
    tw_strlcpy(c.sub, client_id, sizeof c.sub);
    c.role = role;
    c.iat_ms = now;
    c.exp_ms = now + lifetime(a, kind);
    bool fresh = sid[0] == 0;
    if (fresh) tw_id_new("s", sid);
    tw_strlcpy(c.sid, sid, sizeof c.sid);

    session *se = calloc(1, sizeof *se);
    if (!se) return TW_ENOMEM;
    tw_strlcpy(se->client_id, client_id, sizeof se->client_id);
    se->expires_ms = c.exp_ms;

    pthread_mutex_lock(&a->lock);
    bool exists = tw_hmap_get(&a->sessions, sid) != NULL;
    if (!fresh && !exists) {
        pthread_mutex_unlock(&a->lock); /* revoked meanwhile */
        free(se);
        return TW_EAUTH;
    }
    if (fresh && a->sessions.len >= MAX_SESSIONS) prune_sessions_locked(a, now);
    bool full = fresh && a->sessions.len >= MAX_SESSIONS;
    char oldest[TW_ID_MAX] = "";
    if (fresh && !full) oldest_if_over_locked(a, client_id, now, oldest);
    se->seq = UINT64_MAX / 2 + a->next_seq++;
    pthread_mutex_unlock(&a->lock);
    if (full) {
        free(se);
        tw_log_warn(MOD, "session table full (%d live sessions)", MAX_SESSIONS);
        return TW_EFULL;
    }
    if (oldest[0]) {
        /* one client cannot fill the table: its oldest session ends */
        revoke_ctx r = {oldest, NULL};
        tw_store_exec(a->store, revoke_job, &r);
        if (a->rt) tw_conns_close_session(a->rt, oldest);
        tw_log_info(MOD, "'%s' has %d sessions: ended the oldest, %s", client_id,
                    MAX_CLIENT_SESSIONS, oldest);
    }

    /* durable before the token exists: a token always outlives a restart */
    session_row row = {sid, client_id, now, c.exp_ms};
    int rc = tw_store_exec(a->store, put_session_job, &row);
    if (rc == 0) rc = tw_token_issue(a->sk, &c, token);
    if (rc) {
        free(se);
        return rc;
    }
    pthread_mutex_lock(&a->lock);
    if (fresh || tw_hmap_get(&a->sessions, sid)) {
        int err = 0;
        free(tw_hmap_put(&a->sessions, sid, se, &err));
        if (err) rc = TW_ENOMEM;
        se = err ? se : NULL;
    } else {
        rc = TW_EAUTH; /* logged out while we were signing */
    }
    bool recheck = a->revoke_gen != gen0;
    pthread_mutex_unlock(&a->lock);
    free(se);
    if (rc == 0 && recheck) {
        client_row now_row;
        if (get_client(a, client_id, &now_row) != 0 || !now_row.found || now_row.role != role) {
            pthread_mutex_lock(&a->lock);
            free(tw_hmap_del(&a->sessions, sid));
            pthread_mutex_unlock(&a->lock);
            revoke_ctx r = {sid, NULL};
            tw_store_exec(a->store, revoke_job, &r);
            rc = TW_EAUTH;
        }
    }
    if (rc) {
        free(*token);
        *token = NULL;
        return rc;
    }
    if (expires_ms) *expires_ms = c.exp_ms;
    return 0;
}

/* Takes sessions out of the live map; returns their ids (malloc'd array). */
static int unlink_sessions(tw_authn *a, const char *client_id, char (**out)[TW_ID_MAX])
{
    pthread_mutex_lock(&a->lock);
    char(*ids)[TW_ID_MAX] = malloc(sizeof *ids * (a->sessions.len + 1));
    int n = 0;
    size_t pos = 0;
    const char *k;
    void *v;
    while (ids && tw_hmap_next(&a->sessions, &pos, &k, &v))
        if (strcmp(((session *)v)->client_id, client_id) == 0) tw_strlcpy(ids[n++], k, TW_ID_MAX);
    for (int i = 0; i < n; i++)
        free(tw_hmap_del(&a->sessions, ids[i]));
    a->revoke_gen++;
    pthread_mutex_unlock(&a->lock);
    *out = ids;
    return ids ? n : TW_ENOMEM;
}

/* Revokes every session of a client and closes their connections. */
static int revoke_client(tw_authn *a, const char *client_id)
{
    char(*ids)[TW_ID_MAX] = NULL;
    int n = unlink_sessions(a, client_id, &ids);
    revoke_ctx rc_ = {NULL, client_id};
    int rc = tw_store_exec(a->store, revoke_job, &rc_);
    for (int i = 0; a->rt && i < n; i++)
        tw_conns_close_session(a->rt, ids[i]);
    /* and the connections a client certificate authenticated (nng), which
     * have a session of their own that no token names */
    if (a->rt) tw_conns_close_client(a->rt, client_id, "x509-");
    free(ids);
    return n < 0 ? n : rc;
}

/* ---- rate limiting ---- */

static uint64_t rate_tag(tw_authn *a, const char *kind, const char *name)
{
    char buf[320];
    int n = snprintf(buf, sizeof buf, "%s:%s", kind, name);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const uint8_t *)buf, (unsigned long long)n, a->rate_key);
    uint64_t t;
    memcpy(&t, h, sizeof t);
    return t ? t : 1;
}

/*
 * The address part of a binding's remote string, as the key of the
 * per-address limit: "1.2.3.4:5678" -> "1.2.3.4"; "[2001:db8::1]:443" ->
 * its /64 ("2001:db8::"), since one IPv6 host commonly owns a whole /64.
 * Anything else (a unix path, "test") is used as it is.
 */
static void remote_key(const char *remote, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN + 8] = "";
    const char *colon = strrchr(remote, ':');
    if (remote[0] == '[') {
        const char *end = strchr(remote, ']');
        size_t len = end ? (size_t)(end - remote - 1) : 0;
        if (len < sizeof host) {
            memcpy(host, remote + 1, len);
            host[len] = 0;
        }
    } else if (colon && strchr(remote, ':') == colon) {
        size_t len = (size_t)(colon - remote);
        if (len < sizeof host) {
            memcpy(host, remote, len);
            host[len] = 0;
        }
    } else {
        tw_strlcpy(host, remote, sizeof host);
    }
    unsigned char a[16];
    if (inet_pton(AF_INET6, host, a) == 1) {
        memset(a + 8, 0, 8);
        if (inet_ntop(AF_INET6, a, host, sizeof host)) {
            tw_strlcpy(out, host, n);
            return;
        }
    }
    if (inet_pton(AF_INET, host, a) == 1) {
        tw_strlcpy(out, host, n);
        return;
    }
    tw_strlcpy(out, remote, n);
}

static bool rate_live(const rate_entry *e, int64_t now)
{
    return e->count > 0 && now - e->start_ms < RATE_WINDOW_MS;
}

static rate_entry *rate_find(tw_authn *a, uint64_t tag, int64_t now, bool create)
{
    rate_entry *victim = NULL;
    for (int i = 0; i < RATE_PROBE; i++) {
        rate_entry *e = &a->rate[(tag + (uint64_t)i) % RATE_SLOTS];
        if (e->tag == tag && rate_live(e, now)) return e;
        if (!rate_live(e, now)) {
            if (!victim || rate_live(victim, now)) victim = e;
        } else if (!victim || (rate_live(victim, now) && e->start_ms < victim->start_ms)) {
            victim = e; /* all busy: the oldest window goes */
        }
    }
    if (!create) return NULL;
    victim->tag = tag;
    victim->start_ms = now;
    victim->count = 0;
    return victim;
}

/* TW_ERATE with *retry_s when tag has used up its failures. */
static int rate_check_locked(tw_authn *a, uint64_t tag, int64_t now, int *retry_s)
{
    rate_entry *e = rate_find(a, tag, now, false);
    if (!e || e->count < a->opts.login_fail_limit) return 0;
    int64_t left = e->start_ms + RATE_WINDOW_MS - now;
    int s = (int)((left + 999) / 1000);
    if (retry_s && s > *retry_s) *retry_s = s;
    return TW_ERATE;
}

/* ---- configuration ---- */

int tw_authn_opts_from_config(json_t *section, tw_authn_opts *opts, char *err, size_t errlen)
{
    if (!opts) return TW_EINVAL;
    memset(opts, 0, sizeof *opts);
    if (err && errlen) err[0] = 0;
    if (!section || json_is_null(section)) return 0;
    if (!json_is_object(section)) {
        if (err) snprintf(err, errlen, "authn: must be an object");
        return TW_EINVAL;
    }
    static const struct {
        const char *key;
        int64_t min, max;
    } keys[] = {
        {"consumer_token_s", 60, 10LL * 366 * 86400},
        {"agent_token_s", 60, 10LL * 366 * 86400},
        {"login_fail_limit", 1, 1000},
    };
    const char *k;
    json_t *v;
    json_object_foreach(section, k, v)
    {
        size_t i = 0;
        while (i < 3 && strcmp(keys[i].key, k) != 0)
            i++;
        if (i == 3) {
            if (err) snprintf(err, errlen, "authn.%s: unknown setting", k);
            return TW_EINVAL;
        }
        json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
        if (n < keys[i].min || n > keys[i].max) {
            if (err)
                snprintf(err, errlen, "authn.%s: an integer from %lld to %lld", k,
                         (long long)keys[i].min, (long long)keys[i].max);
            return TW_EINVAL;
        }
        if (i == 0) opts->consumer_token_ms = (int64_t)n * 1000;
        if (i == 1) opts->agent_token_ms = (int64_t)n * 1000;
        if (i == 2) opts->login_fail_limit = (int)n;
    }
    return 0;
}

/* ---- open / close ---- */

static int write_admin_password(const char *data_dir, const char *pw)
{
    char path[1100];
    if (snprintf(path, sizeof path, "%s/admin.password", data_dir) >= (int)sizeof path)
        return TW_ETOOBIG;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        tw_log_error(MOD, "cannot write %s: %s", path, strerror(errno));
        return TW_EIO;
    }
    int rc = 0;
    size_t len = strlen(pw);
    if (fchmod(fd, 0600) != 0 || write(fd, pw, len) != (ssize_t)len || write(fd, "\n", 1) != 1 ||
        fsync(fd) != 0)
        rc = TW_EIO;
    close(fd);
    return rc;
}

static int create_first_admin(tw_authn *a, const char *data_dir, char **first_pw)
{
    uint8_t raw[18];
    randombytes_buf(raw, sizeof raw);
    char pw[sodium_base64_ENCODED_LEN(18, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    sodium_bin2base64(pw, sizeof pw, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    /* the file first: a crash in between leaves a stale file that the next
     * start overwrites, never an admin whose password nobody knows */
    int rc = write_admin_password(data_dir, pw);
    if (rc == 0)
        rc = tw_authn_add_client(a, "admin", TW_KIND_CONSUMER, TW_ROLE_ADMIN, "Administrator", pw);
    if (rc == 0 && first_pw) {
        *first_pw = strdup(pw);
        if (!*first_pw) rc = TW_ENOMEM;
    }
    sodium_memzero(pw, sizeof pw);
    if (rc == 0) tw_log_info(MOD, "created client 'admin'; its password is in admin.password");
    return rc;
}

int tw_authn_open(tw_store *s, const char *data_dir, const tw_authn_opts *opts, tw_authn **out,
                  char **first_admin_password)
{
    if (first_admin_password) *first_admin_password = NULL;
    if (!s || !data_dir || !out) return TW_EINVAL;
    if (sodium_init() < 0) return TW_ECRYPTO;

    /* the data directory holds secrets: owner only */
    struct stat st;
    if (stat(data_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        tw_log_error(MOD, "data directory %s: %s", data_dir, strerror(errno));
        return TW_EIO;
    }
    if ((st.st_mode & 077) && chmod(data_dir, st.st_mode & 0700) != 0) return TW_EIO;

    int rc = tw_store_migrate(s, "authn", migrations, sizeof migrations / sizeof migrations[0]);
    if (rc) return rc;

    tw_authn *a = calloc(1, sizeof *a);
    if (!a) return TW_ENOMEM;
    a->store = s;
    a->opts.consumer_token_ms = 24LL * 3600 * 1000;
    a->opts.agent_token_ms = 90LL * 24 * 3600 * 1000;
    a->opts.login_fail_limit = 10;
    a->opts.pw_opslimit = crypto_pwhash_OPSLIMIT_INTERACTIVE;
    a->opts.pw_memlimit = crypto_pwhash_MEMLIMIT_INTERACTIVE;
    if (opts) {
        if (opts->consumer_token_ms > 0) a->opts.consumer_token_ms = opts->consumer_token_ms;
        if (opts->agent_token_ms > 0) a->opts.agent_token_ms = opts->agent_token_ms;
        if (opts->login_fail_limit > 0) a->opts.login_fail_limit = opts->login_fail_limit;
        if (opts->pw_opslimit > 0) a->opts.pw_opslimit = opts->pw_opslimit;
        if (opts->pw_memlimit > 0) a->opts.pw_memlimit = opts->pw_memlimit;
    }
    if (a->opts.pw_opslimit < crypto_pwhash_OPSLIMIT_MIN)
        a->opts.pw_opslimit = crypto_pwhash_OPSLIMIT_MIN;
    if (a->opts.pw_memlimit < crypto_pwhash_MEMLIMIT_MIN)
        a->opts.pw_memlimit = crypto_pwhash_MEMLIMIT_MIN;
    pthread_mutex_init(&a->lock, NULL);
    pthread_mutex_init(&a->cache_lock, NULL);
    pthread_mutex_init(&a->hash_lock, NULL);
    pthread_cond_init(&a->hash_cv, NULL);
    tw_hmap_init(&a->sessions);
    randombytes_buf(a->rate_key, sizeof a->rate_key);

    if ((rc = tw_token_key_load(data_dir, a->pk, a->sk, NULL)) != 0) goto fail;

    /* the hash unknown ids are checked against: same cost as real ones */
    uint8_t rnd[16];
    char pw[33];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(pw, sizeof pw, rnd, sizeof rnd);
    a->dummy_hash = malloc(crypto_pwhash_STRBYTES);
    if (!a->dummy_hash) {
        rc = TW_ENOMEM;
        goto fail;
    }
    if ((rc = hash_password(a, pw, a->dummy_hash)) != 0) goto fail;

    load_ctx lc = {a, tw_now_ms()};
    if ((rc = tw_store_exec(s, purge_sessions_job, &lc.now)) != 0) goto fail;
    if ((rc = tw_store_read(s, load_sessions_job, &lc)) != 0) goto fail;

    count_ctx cc = {"SELECT count(*) FROM authn_clients", NULL, 0};
    if ((rc = tw_store_read(s, count_job, &cc)) != 0) goto fail;
    if (cc.n == 0 && (rc = create_first_admin(a, data_dir, first_admin_password)) != 0) goto fail;

    *out = a;
    return 0;
fail:
    tw_authn_close(a);
    return rc;
}

void tw_authn_close(tw_authn *a)
{
    if (!a) return;
    size_t pos = 0;
    const char *k;
    void *v;
    while (tw_hmap_next(&a->sessions, &pos, &k, &v))
        free(v);
    tw_hmap_fini(&a->sessions);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->cache_lock);
    pthread_mutex_destroy(&a->hash_lock);
    pthread_cond_destroy(&a->hash_cv);
    free(a->dummy_hash);
    sodium_memzero(a->sk, sizeof a->sk);
    sodium_memzero(a->cache, sizeof a->cache);
    free(a);
}

/* ---- login, verify, refresh, logout ---- */

int tw_authn_login(tw_authn *a, const char *client_id, const char *password, const char *remote,
                   char **token, int64_t *expires_ms, int *retry_after_s)
{
    if (retry_after_s) *retry_after_s = 0;
    if (token) *token = NULL;
    if (!a || !client_id || !password || !token) return TW_EINVAL;
    int64_t now = tw_now_ms();
    uint64_t id_tag = rate_tag(a, "id", client_id);
    char addr[TW_ID_MAX * 2] = "";
    if (remote && *remote) remote_key(remote, addr, sizeof addr);
    uint64_t addr_tag = addr[0] ? rate_tag(a, "addr", addr) : 0;

    pthread_mutex_lock(&a->lock);
    int rc = rate_check_locked(a, id_tag, now, retry_after_s);
    if (addr_tag && rate_check_locked(a, addr_tag, now, retry_after_s)) rc = TW_ERATE;
    pthread_mutex_unlock(&a->lock);
    if (rc) {
        tw_log_warn(MOD, "login of '%.64s' from %s refused: too many failures", client_id,
                    remote ? remote : "-");
        return rc;
    }

    uint64_t gen0 = revoke_gen(a);
    client_row row = {0};
    bool known = tw_client_id_valid(client_id) && get_client(a, client_id, &row) == 0 &&
                 row.found && row.hash[0] && row.role != TW_ROLE_NONE;
    bool ok = false;
    if (password_ok(password)) {
        const char *h = known ? row.hash : a->dummy_hash;
        ok = verify_password(a, h, password) && known;
    }
    if (!ok) {
        pthread_mutex_lock(&a->lock);
        rate_entry *e = rate_find(a, id_tag, now, true);
        e->count++;
        if (addr_tag) rate_find(a, addr_tag, now, true)->count++;
        pthread_mutex_unlock(&a->lock);
        tw_log_warn(MOD, "failed login of '%.64s' from %s", client_id, remote ? remote : "-");
        return TW_EAUTH;
    }
    pthread_mutex_lock(&a->lock);
    rate_entry *e = rate_find(a, id_tag, now, false);
    if (e) e->count = 0; /* the owner got in: their earlier typos are forgiven */
    pthread_mutex_unlock(&a->lock);

    char sid[TW_ID_MAX] = "";
    rc = issue(a, client_id, row.role, row.kind, gen0, sid, token, expires_ms);
    if (rc == 0) tw_log_info(MOD, "login of '%s' from %s", client_id, remote ? remote : "-");
    return rc;
}

static void token_key(const char *token, uint8_t key[32])
{
    crypto_generichash(key, 32, (const uint8_t *)token, strlen(token), NULL, 0);
}

int tw_authn_verify(tw_authn *a, const char *token, tw_identity *out)
{
    if (!a || !token || !out) return TW_EINVAL;
    if (strnlen(token, TW_TOKEN_MAX_LEN + 1) > TW_TOKEN_MAX_LEN) return TW_EAUTH;
    int64_t now = tw_now_ms();
    uint8_t key[32];
    token_key(token, key);
    uint32_t slot;
    memcpy(&slot, key, sizeof slot);
    slot %= CACHE_SLOTS;

    tw_identity id;
    pthread_mutex_lock(&a->cache_lock);
    cache_entry *ce = &a->cache[slot];
    bool hit = ce->used && memcmp(ce->key, key, sizeof key) == 0;
    if (hit) id = ce->id;
    pthread_mutex_unlock(&a->cache_lock);

    if (!hit) {
        tw_token_claims c;
        if (tw_token_check(a->pk, token, now, &c) != 0) return TW_EAUTH;
        memset(&id, 0, sizeof id);
        tw_strlcpy(id.client_id, c.sub, sizeof id.client_id);
        tw_strlcpy(id.session_id, c.sid, sizeof id.session_id);
        id.role = c.role;
        id.expires_ms = c.exp_ms;
    }
    if (id.expires_ms <= now) return TW_EAUTH;
    pthread_mutex_lock(&a->lock);
    bool live = session_live_locked(a, id.session_id, id.client_id, now);
    pthread_mutex_unlock(&a->lock);
    if (!live) {
        if (hit) {
            pthread_mutex_lock(&a->cache_lock);
            if (memcmp(ce->key, key, sizeof key) == 0) ce->used = false;
            pthread_mutex_unlock(&a->cache_lock);
        }
        return TW_EAUTH;
    }
    if (!hit) {
        pthread_mutex_lock(&a->cache_lock);
        ce->used = true;
        memcpy(ce->key, key, sizeof key);
        ce->id = id;
        pthread_mutex_unlock(&a->cache_lock);
    }
    *out = id;
    return 0;
}

int tw_authn_refresh(tw_authn *a, const char *token, char **new_token, int64_t *expires_ms)
{
    if (new_token) *new_token = NULL;
    if (!a || !token || !new_token) return TW_EINVAL;
    uint64_t gen0 = revoke_gen(a);
    tw_identity id;
    int rc = tw_authn_verify(a, token, &id);
    if (rc) return rc;
    client_row row;
    rc = get_client(a, id.client_id, &row);
    if (rc) return rc;
    if (!row.found || row.role == TW_ROLE_NONE) return TW_EAUTH;
    return issue(a, id.client_id, row.role, row.kind, gen0, id.session_id, new_token, expires_ms);
}

int tw_authn_logout(tw_authn *a, const char *session_id)
{
    if (!a || !session_id || !*session_id || strlen(session_id) >= TW_ID_MAX) return TW_EINVAL;
    pthread_mutex_lock(&a->lock);
    free(tw_hmap_del(&a->sessions, session_id));
    pthread_mutex_unlock(&a->lock);
    revoke_ctx r = {session_id, NULL};
    int rc = tw_store_exec(a->store, revoke_job, &r);
    if (rc == 0) tw_log_info(MOD, "session %s logged out", session_id);
    return rc;
}

/* ---- administration ---- */

typedef struct add_ctx {
    const char *id, *kind, *role, *display, *hash;
} add_ctx;

static int add_job(tw_store_tx *tx, void *arg)
{
    add_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "INSERT INTO authn_clients (id, kind, role,"
                                         " display_name, pw_hash, created, updated)"
                                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)"
                                         " ON CONFLICT(id) DO NOTHING");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, c->role, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, c->display, -1, SQLITE_STATIC);
    if (c->hash)
        sqlite3_bind_text(st, 5, c->hash, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);
    sqlite3_bind_int64(st, 6, tw_now_ms());
    int s = sqlite3_step(st);
    sqlite3_reset(st);
    if (s != SQLITE_DONE) return TW_EDB;
    return sqlite3_changes(tw_store_db(tx)) == 1 ? 0 : TW_EEXIST;
}

int tw_authn_add_client(tw_authn *a, const char *client_id, tw_client_kind kind, tw_role role,
                        const char *display_name, const char *password)
{
    if (!a || !tw_client_id_valid(client_id) || (unsigned)kind > TW_KIND_SERVICE ||
        role <= TW_ROLE_NONE || role >= TW_ROLE__COUNT)
        return TW_EINVAL;
    if (display_name && (strnlen(display_name, MAX_DISPLAY + 1) > MAX_DISPLAY ||
                         !tw_utf8_valid(display_name, strlen(display_name))))
        return TW_EINVAL;
    if (password && !password_ok(password)) return TW_EINVAL;
    char hash[crypto_pwhash_STRBYTES];
    if (password) {
        int rc = hash_password(a, password, hash);
        if (rc) return rc;
    }
    add_ctx c = {client_id, kind_name(kind), tw_role_name(role), display_name ? display_name : "",
                 password ? hash : NULL};
    int rc = tw_store_exec(a->store, add_job, &c);
    if (rc == 0) tw_log_info(MOD, "added client '%s' (%s, %s)", client_id, c.kind, c.role);
    return rc;
}

typedef struct update_ctx {
    const char *sql;
    const char *id, *value;
} update_ctx;

static int update_job(tw_store_tx *tx, void *arg)
{
    update_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, c->sql);
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    if (c->value) sqlite3_bind_text(st, 2, c->value, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, tw_now_ms());
    int s = sqlite3_step(st);
    sqlite3_reset(st);
    if (s != SQLITE_DONE) return TW_EDB;
    return sqlite3_changes(tw_store_db(tx)) >= 1 ? 0 : TW_ENOTFOUND;
}

/* A change that would leave no admin: the check and the change are one
 * writer job so two concurrent demotions cannot both pass. */
static int guarded_update_job(tw_store_tx *tx, void *arg)
{
    update_ctx *c = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT count(*) FROM authn_clients"
                                         " WHERE role = 'admin' AND id <> ?1");
    if (!st) return TW_EDB;
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    int64_t others = s == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (others < 0) return TW_EDB;
    bool stays_admin = c->value && strcmp(c->value, "admin") == 0;
    if (others == 0 && !stays_admin) {
        client_row r = {.id = c->id};
        int rc = get_client_job(tx, &r);
        if (rc) return rc;
        if (r.found && r.role == TW_ROLE_ADMIN) return TW_ECONFLICT;
    }
    return update_job(tx, c);
}

int tw_authn_remove_client(tw_authn *a, const char *client_id)
{
    if (!a || !tw_client_id_valid(client_id)) return TW_EINVAL;
    update_ctx c = {"DELETE FROM authn_clients WHERE id = ?1 AND ?3 IS NOT NULL", client_id, NULL};
    int rc = tw_store_exec(a->store, guarded_update_job, &c);
    if (rc) return rc;
    tw_log_info(MOD, "removed client '%s'", client_id);
    return revoke_client(a, client_id);
}

int tw_authn_set_password(tw_authn *a, const char *client_id, const char *password)
{
    if (!a || !tw_client_id_valid(client_id) || !password_ok(password)) return TW_EINVAL;
    char hash[crypto_pwhash_STRBYTES];
    int rc = hash_password(a, password, hash);
    if (rc) return rc;
    update_ctx c = {"UPDATE authn_clients SET pw_hash = ?2, updated = ?3 WHERE id = ?1", client_id,
                    hash};
    rc = tw_store_exec(a->store, update_job, &c);
    sodium_memzero(hash, sizeof hash);
    if (rc == 0) tw_log_info(MOD, "password of '%s' changed", client_id);
    return rc;
}

int tw_authn_set_role(tw_authn *a, const char *client_id, tw_role role)
{
    if (!a || !tw_client_id_valid(client_id) || role <= TW_ROLE_NONE || role >= TW_ROLE__COUNT)
        return TW_EINVAL;
    update_ctx c = {"UPDATE authn_clients SET role = ?2, updated = ?3 WHERE id = ?1", client_id,
                    tw_role_name(role)};
    int rc = tw_store_exec(a->store, guarded_update_job, &c);
    if (rc) return rc;
    tw_log_info(MOD, "role of '%s' is now %s", client_id, tw_role_name(role));
    /* tokens carry the role: the old ones must not outlive the change */
    return revoke_client(a, client_id);
}

static int list_job(tw_store_tx *tx, void *arg)
{
    json_t *arr = arg;
    sqlite3_stmt *st = tw_store_stmt(tx, "SELECT id, kind, role, display_name,"
                                         " pw_hash IS NOT NULL, created, updated"
                                         " FROM authn_clients ORDER BY id");
    if (!st) return TW_EDB;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        char created[TW_TIME_LEN], updated[TW_TIME_LEN];
        tw_time_format(sqlite3_column_int64(st, 5), created);
        tw_time_format(sqlite3_column_int64(st, 6), updated);
        json_t *o = json_pack("{s:s?, s:s?, s:s?, s:s?, s:b, s:s, s:s}", "clientID",
                              (const char *)sqlite3_column_text(st, 0), "kind",
                              (const char *)sqlite3_column_text(st, 1), "role",
                              (const char *)sqlite3_column_text(st, 2), "displayName",
                              (const char *)sqlite3_column_text(st, 3), "hasPassword",
                              sqlite3_column_int(st, 4), "created", created, "updated", updated);
        if (!o || json_array_append_new(arr, o) != 0) {
            sqlite3_reset(st);
            return TW_ENOMEM;
        }
    }
    sqlite3_reset(st);
    return s == SQLITE_DONE ? 0 : TW_EDB;
}

int tw_authn_list_clients(tw_authn *a, json_t **out)
{
    if (!a || !out) return TW_EINVAL;
    json_t *arr = json_array();
    if (!arr) return TW_ENOMEM;
    int rc = tw_store_read(a->store, list_job, arr);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int tw_authn_issue_token(tw_authn *a, const char *client_id, char **token, int64_t *expires_ms)
{
    if (token) *token = NULL;
    if (!a || !tw_client_id_valid(client_id) || !token) return TW_EINVAL;
    uint64_t gen0 = revoke_gen(a);
    client_row row;
    int rc = get_client(a, client_id, &row);
    if (rc) return rc;
    if (!row.found) return TW_ENOTFOUND;
    if (row.role == TW_ROLE_NONE) return TW_EINVAL;
    char sid[TW_ID_MAX] = "";
    rc = issue(a, client_id, row.role, row.kind, gen0, sid, token, expires_ms);
    if (rc == 0) tw_log_info(MOD, "issued a token for '%s'", client_id);
    return rc;
}

int tw_authn_client_identity(tw_authn *a, const char *client_id, tw_identity *out)
{
    if (!a || !out || !tw_client_id_valid(client_id)) return TW_EINVAL;
    client_row row;
    int rc = get_client(a, client_id, &row);
    if (rc) return rc;
    if (!row.found || row.role == TW_ROLE_NONE) return TW_EAUTH;
    memset(out, 0, sizeof *out);
    tw_strlcpy(out->client_id, client_id, sizeof out->client_id);
    tw_id_new("x509-", out->session_id); /* its own: a logout must cut only this one */
    out->role = row.role;
    return 0;
}

/* Used by authn_service.c (same module). */
void tw_authn__set_runtime(tw_authn *a, tw_runtime *rt);
tw_runtime *tw_authn__runtime(tw_authn *a);

void tw_authn__set_runtime(tw_authn *a, tw_runtime *rt)
{
    a->rt = rt;
}

tw_runtime *tw_authn__runtime(tw_authn *a)
{
    return a->rt;
}
