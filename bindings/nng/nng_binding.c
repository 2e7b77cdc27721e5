/*
 * nng_binding.c - the nng binding: listeners, the connection table, the
 * housekeeping thread and the tw_binding_ops the runtime calls.
 *
 * Why nng byte streams (nng_stream_listener) and not an SP socket
 * ------------------------------------------------------------------
 * The requirements are: one authenticated identity per connection; the
 * runtime pushes a message to exactly one connection and no other can get
 * it; authorization is the runtime's; a slow connection has a bounded queue
 * with a stated policy; nothing is retried silently.
 *
 *  - pub/sub (pub0/sub0) filters at the subscriber: every subscriber gets
 *    every message and discards what it does not want. That is disclosure,
 *    not authorization. Ruled out.
 *  - req/rep, surveyor and bus cannot address one peer from the server side
 *    (rep only answers; bus broadcasts).
 *  - pair1 in polyamorous mode can address a pipe (nng_msg_set_pipe) and
 *    tell pipes apart (nng_pipe_notify), but its per-pipe send path is a
 *    non-blocking put into a small queue that discards the message when the
 *    queue is full (counted only in a socket-wide statistic), and a message
 *    whose pipe id is 0 goes to whichever pipe is first. A dropped action or
 *    action status that nobody hears about breaks store-and-forward, and the
 *    mode is deprecated upstream.
 *  - Raw SP sockets keep the same per-pipe queues and the same drops.
 *
 * nng's stream API gives the parts that are worth having from nng - its
 * transports (tcp, TLS 1.2/1.3 - here over GnuTLS, see nng_tls.h - ipc, ws,
 * wss), URL parsing and the aio machinery on nng's own threads - and one
 * nng_stream per peer. Each stream is exactly one tw_conn: addressing is by
 * construction (a message is written to that stream and no other),
 * identity is per stream (the `login` envelope goes through
 * tw_router_handle, whose login handler calls tw_conn_set_identity; or a
 * client certificate, see below), and the send queue is ours: a bounded
 * ring bounded in messages and in bytes, with an explicit policy
 * (nng_conn.c: full -> TW_EFULL and the connection is closed; nothing
 * dropped without the peer noticing, nothing resent). The price is our own framing, which is
 * trivial (newline-delimited JSON, nng_frame.h) and lets a sender batch many envelopes into one
 * write.
 *
 * tcp:// and ipc:// listeners (loopback and local: where latency is the
 * point) run on the binding's own sockets instead, with the same framing,
 * send queue and policy: nng's stream callbacks cost two thread hand-offs
 * per received envelope, which was most of an action's round trip. See
 * nng_direct.c for the measurements; `"direct": false` turns it off.
 *
 * Connection table: a tw_conn's bdata holds (slot, generation) instead of a
 * pointer, because the router may call send() with a tw_conn whose nng side
 * is already gone. send() looks the slot up under a read lock and takes a
 * reference; a stale generation means TW_ECLOSED. The table has max_conns
 * slots, which is also the bound on open connections.
 *
 * Housekeeping thread: frees dead connections (their aios cannot be freed
 * from their own callbacks), closes connections that did not log in
 * within login_timeout_ms, those past a write deadline (a write stuck
 * on a peer that does not read, a closing connection that cannot flush:
 * nng_conn.c, "Write deadlines") and TLS streams whose peer is gone though
 * nng never said (nng_conn.c, "A dead TLS stream"), and tells refused
 * client certificates why before closing their connections.
 *
 * Mutual TLS (tls+tcp:// and wss:// listeners)
 * --------------------------------------------
 * Listeners ask for a client certificate but do not require one
 * (NNG_TLS_AUTH_MODE_OPTIONAL, the runtime's CA as trust anchor). nng 1.5.2
 * only reports whether a peer verified, not which certificate it showed,
 * so the TLS streams run on our GnuTLS engine for nng (nng_tls.h), which
 * hands the peer's chain to peer_cb() when the handshake completes and
 * before any envelope of the connection is routed. The chain is checked
 * like the HTTP binding's (tw_tls_verify_client: this CA, valid now,
 * client-auth purpose, CN a client id) and the client must exist
 * (tw_authn_client_identity); the connection then has that identity with
 * no login message, and an agent's queued actions start draining at once.
 * A certificate that fails either check is refused: a 401 problem, then
 * the connection is closed by the housekeeping thread (peer_cb may run
 * under the stream's lock and cannot write to it). No certificate: the
 * password or token login as before. (A wss:// stream is a websocket over
 * TLS whose TLS stream nng keeps to itself; the engine finds it by the
 * peer's address, see nng_tls.c.)
 */
#include "nng_int.h"
#include "nng_tls.h"
#include "runtime/authn.h"
#include "runtime/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <nng/supplemental/tls/tls.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MOD "nng"

#define DEFAULT_SEND_QUEUE 16384
#define DEFAULT_SEND_QUEUE_BYTES (64 * 1024 * 1024)
#define DEFAULT_WRITE_TIMEOUT_MS 30000
#define DEFAULT_MAX_CONNS 10000
#define DEFAULT_LOGIN_TIMEOUT_MS 10000
#define DEFAULT_POLL_SPIN_US 100
#define MAX_REFUSALS 256

/* A connection whose client certificate was refused: the housekeeping
 * thread tells it why, then closes it on its next pass. */
typedef struct refusal {
    uint64_t key; /* (generation << 32) | slot */
    int status;   /* the problem's status (401) */
    char detail[160];
    int64_t told_ms; /* 0: not told yet */
} refusal;

/*
 * The binding with what only this file uses: nng_conn.c sees the nng_bind
 * (its first member), this file casts back (bx()).
 */
typedef struct nng_bindx {
    nng_bind nb;
    tw_tls_verifier *verifier; /* client certificates: NULL when off */
    /* under nb.hk_mtx */
    refusal refused[MAX_REFUSALS];
    int nrefused;
} nng_bindx;

static nng_bindx *bx(nng_bind *nb)
{
    return (nng_bindx *)nb;
}

/* ---- connection table ------------------------------------------------- */

int nng_slot_alloc(nng_bind *nb, const char *bound, uint32_t *slot, uint32_t *gen)
{
    int rc = TW_EFULL;
    pthread_rwlock_wrlock(&nb->slots_lock);
    if (nb->nfree > 0) {
        *slot = nb->free_slots[--nb->nfree];
        *gen = ++nb->slots[*slot].gen;
        rc = 0;
    }
    pthread_rwlock_unlock(&nb->slots_lock);
    if (rc)
        tw_log_warn(MOD, "refusing a connection on %s: %d connections open", bound, nb->max_conns);
    return rc;
}

void nng_slot_set(nng_bind *nb, uint32_t slot, nconn *c)
{
    pthread_rwlock_wrlock(&nb->slots_lock);
    nb->slots[slot].c = c;
    pthread_rwlock_unlock(&nb->slots_lock);
}

void nng_slot_free(nng_bind *nb, uint32_t slot)
{
    pthread_rwlock_wrlock(&nb->slots_lock);
    nb->slots[slot].c = NULL;
    nb->free_slots[nb->nfree++] = slot;
    pthread_rwlock_unlock(&nb->slots_lock);
}

void nng_slot_release(nng_bind *nb, nconn *c)
{
    bool mine = false;
    pthread_rwlock_wrlock(&nb->slots_lock);
    if (nb->slots[c->slot].c == c) {
        nb->slots[c->slot].c = NULL;
        nb->free_slots[nb->nfree++] = c->slot;
        mine = true;
    }
    pthread_rwlock_unlock(&nb->slots_lock);
    if (mine) {
        atomic_fetch_sub(&nb->nconns, 1);
        nconn_unref(c);
    }
}

/* The live nconn of a tw_conn, referenced, or NULL. */
static nconn *lookup(nng_bind *nb, tw_conn *tc)
{
    uint64_t v = (uint64_t)(uintptr_t)tw_conn_bdata(tc);
    uint32_t slot = (uint32_t)(v & 0xffffffffu), gen = (uint32_t)(v >> 32);
    nconn *c = NULL;
    if (slot >= (uint32_t)nb->max_conns) return NULL;
    pthread_rwlock_rdlock(&nb->slots_lock);
    if (nb->slots[slot].gen == gen && nb->slots[slot].c && nb->slots[slot].c->conn == tc)
        c = nconn_ref(nb->slots[slot].c);
    pthread_rwlock_unlock(&nb->slots_lock);
    return c;
}

/* The live nconn of a (slot, generation) key, referenced, or NULL. */
static nconn *lookup_key(nng_bind *nb, uint64_t key)
{
    uint32_t slot = (uint32_t)(key & 0xffffffffu), gen = (uint32_t)(key >> 32);
    nconn *c = NULL;
    if (slot >= (uint32_t)nb->max_conns) return NULL;
    pthread_rwlock_rdlock(&nb->slots_lock);
    if (nb->slots[slot].gen == gen && nb->slots[slot].c) c = nconn_ref(nb->slots[slot].c);
    pthread_rwlock_unlock(&nb->slots_lock);
    return c;
}

/* ---- client certificates ---------------------------------------------- */

static void refuse(nng_bind *nb, uint64_t key, int status, const char *detail)
{
    nng_bindx *x = bx(nb);
    pthread_mutex_lock(&nb->hk_mtx);
    if (x->nrefused < MAX_REFUSALS) {
        refusal *r = &x->refused[x->nrefused++];
        r->key = key;
        r->status = status;
        r->told_ms = 0;
        snprintf(r->detail, sizeof r->detail, "%s", detail);
    }
    /* (a full list: the connection stays unauthenticated and the login
     * timeout closes it) */
    pthread_cond_signal(&nb->hk_cond);
    pthread_mutex_unlock(&nb->hk_mtx);
}

/*
 * The handshake of a tls+tcp connection is done (nng_tls.h: on an nng
 * thread holding the stream's lock, before any of its data is routed).
 * A verified certificate of a known client authenticates the connection as
 * that client, exactly like the HTTP binding's client certificates; a
 * certificate that does not verify, or of a client that does not exist (any
 * more), gets the connection refused. No certificate: the connection logs
 * in with a password or token as before.
 */
static void peer_cb(void *arg, uint64_t key, const gnutls_datum_t *chain, unsigned n)
{
    nng_bind *nb = arg;
    if (n == 0) return;
    char id[TW_ID_MAX];
    if (tw_tls_verify_client(bx(nb)->verifier, chain, n, id) != 0) {
        tw_log_warn(MOD, "a client certificate not valid for this runtime was refused");
        refuse(nb, key, 401, "the client certificate is not valid for this runtime");
        return;
    }
    tw_authn *an = tw_runtime_authn(nb->rt);
    tw_identity ident;
    int rc = an ? tw_authn_client_identity(an, id, &ident) : TW_EUNSUPPORTED;
    nconn *c = rc == 0 ? lookup_key(nb, key) : NULL;
    if (c) rc = tw_conn_set_identity(c->conn, &ident);
    if (rc == 0 && c) {
        tw_log_info(MOD, "connection %llu (%s) authenticated as '%s' by its certificate",
                    (unsigned long long)tw_conn_serial(c->conn), c->remote, id);
    } else if (rc != 0) {
        tw_log_warn(MOD, "client certificate of '%.64s' refused: %s", id, tw_strerror(rc));
        refuse(nb, key, 401, "the client of this certificate is not known");
    }
    if (c) nconn_unref(c);
}

/* Housekeeping: tell refused connections why, close them a pass later (so
 * the problem has left). */
static void handle_refusals(nng_bind *nb)
{
    nng_bindx *x = bx(nb);
    refusal due[MAX_REFUSALS];
    int64_t now = tw_mono_us() / 1000;
    pthread_mutex_lock(&nb->hk_mtx);
    int n = 0, kept = 0;
    for (int i = 0; i < x->nrefused; i++) {
        refusal *r = &x->refused[i];
        if (r->told_ms && now - r->told_ms < 200) {
            x->refused[kept++] = *r; /* not yet */
            continue;
        }
        due[n++] = *r;
        if (!r->told_ms) {
            x->refused[kept] = *r;
            x->refused[kept++].told_ms = now;
        }
    }
    x->nrefused = kept;
    pthread_mutex_unlock(&nb->hk_mtx);
    for (int i = 0; i < n; i++) {
        nconn *c = lookup_key(nb, due[i].key);
        if (!c) continue;
        if (due[i].told_ms) {
            nconn_close(c, "client certificate refused");
        } else {
            tw_msg *m = tw_msg_new(TW_TYPE_RESPONSE, TW_OP_NONE, NULL, NULL);
            if (m) {
                tw_msg_set_status(m, TW_STATUS_FAILED);
                tw_msg_set(m, "error",
                           tw_problem_new(due[i].status, "unauthenticated", "not authenticated",
                                          due[i].detail, NULL));
                nconn_send(c, m, false);
                tw_msg_unref(m);
            }
        }
        nconn_unref(c);
    }
}

/* ---- housekeeping ----------------------------------------------------- */

void nng_reap_push(nng_bind *nb, nconn *c)
{
    pthread_mutex_lock(&nb->hk_mtx);
    c->reap_next = nb->reap;
    nb->reap = c;
    pthread_cond_signal(&nb->hk_cond);
    pthread_mutex_unlock(&nb->hk_mtx);
}

static void reap_all(nng_bind *nb)
{
    pthread_mutex_lock(&nb->hk_mtx);
    nconn *list = nb->reap;
    nb->reap = NULL;
    pthread_mutex_unlock(&nb->hk_mtx);
    while (list) {
        nconn *next = list->reap_next;
        nconn_free(list);
        list = next;
    }
}

/* Closes connections that did not log in in time, those past a write
 * deadline (nconn_overdue) and streams whose peer is gone without their
 * telling (nconn_peer_lost). At most 64 a pass: the rest wait a second. */
static void expire_conns(nng_bind *nb)
{
    int64_t limit = tw_now_ms() - nb->login_timeout_ms;
    int64_t now = tw_mono_us() / 1000;
    nconn *stack[64];
    const char *why[64];
    static const char login_why[] = "no login in time";
    static const char lost_why[] = "the peer is gone (the stream never said)";
    int n = 0;
    pthread_rwlock_rdlock(&nb->slots_lock);
    for (int i = 0; i < nb->max_conns && n < 64; i++) {
        nconn *c = nb->slots[i].c;
        if (!c) continue;
        const char *w = nconn_overdue(c, now);
        if (!w && c->opened_ms < limit && !tw_conn_identity(c->conn)) w = login_why;
        if (!w && nconn_peer_lost(c, now)) w = lost_why;
        if (w) {
            why[n] = w;
            stack[n++] = nconn_ref(c);
        }
    }
    pthread_rwlock_unlock(&nb->slots_lock);
    for (int i = 0; i < n; i++) {
        if (why[i] == login_why) {
            nconn_close(stack[i], why[i]);
        } else if (why[i] == lost_why) { /* an ordinary end, found late */
            tw_log_debug(MOD, "closing connection %llu (%s): %s",
                         (unsigned long long)tw_conn_serial(stack[i]->conn), stack[i]->remote,
                         why[i]);
            nconn_close(stack[i], NULL);
        } else { /* a peer that does not read: worth a warning */
            tw_log_warn(MOD, "closing connection %llu (%s): %s",
                        (unsigned long long)tw_conn_serial(stack[i]->conn), stack[i]->remote,
                        why[i]);
            nconn_close(stack[i], NULL);
        }
        nconn_unref(stack[i]);
    }
}

/* A second, or less when a write deadline is shorter (tests), so that a
 * deadline is kept to within a fraction of itself. */
static int64_t scan_interval_us(const nng_bind *nb)
{
    int64_t us = nb->write_timeout_ms * 1000 / 4;
    return us < 1000000 ? (us < 10000 ? 10000 : us) : 1000000;
}

static void *hk_main(void *arg)
{
    nng_bind *nb = arg;
    int64_t next_scan = 0;
    pthread_mutex_lock(&nb->hk_mtx);
    while (!nb->hk_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t wait_ns = scan_interval_us(nb) * 1000;
        ts.tv_sec += (time_t)(wait_ns / 1000000000);
        ts.tv_nsec += (long)(wait_ns % 1000000000);
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        if (!nb->reap) pthread_cond_timedwait(&nb->hk_cond, &nb->hk_mtx, &ts);
        pthread_mutex_unlock(&nb->hk_mtx);
        reap_all(nb);
        handle_refusals(nb);
        if (tw_mono_us() >= next_scan) {
            expire_conns(nb);
            next_scan = tw_mono_us() + scan_interval_us(nb);
        }
        pthread_mutex_lock(&nb->hk_mtx);
    }
    pthread_mutex_unlock(&nb->hk_mtx);
    reap_all(nb);
    return NULL;
}

/* ---- listeners -------------------------------------------------------- */

static void accept_start(nng_listener_ent *le)
{
    if (atomic_load(&le->nb->stopping)) return;
    nng_stream_listener_accept(le->l, le->accept_aio);
}

static void retry_cb(void *arg)
{
    nng_listener_ent *le = arg;
    if (nng_aio_result(le->retry_aio) == 0) accept_start(le);
}

static bool needs_tls(const char *url)
{
    return strncmp(url, "tls+tcp://", 10) == 0 || strncmp(url, "wss://", 6) == 0;
}

static void accept_cb(void *arg)
{
    nng_listener_ent *le = arg;
    nng_bind *nb = le->nb;
    int rv = nng_aio_result(le->accept_aio);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED || atomic_load(&nb->stopping)) {
        if (rv == 0) nng_stream_free(nng_aio_get_output(le->accept_aio, 0));
        return;
    }
    if (rv != 0) {
        /* e.g. out of file descriptors: back off a little instead of spinning */
        tw_log_warn(MOD, "accept on %s: %s", le->bound, nng_strerror(rv));
        nng_sleep_aio(100, le->retry_aio);
        return;
    }
    nng_stream *st = nng_aio_get_output(le->accept_aio, 0);
    uint32_t slot, gen;
    nconn *c = NULL;
    if (nng_slot_alloc(nb, le->bound, &slot, &gen) != 0) {
        nng_stream_free(st);
    } else if (nconn_start(nb, st, -1, NULL, slot, gen, &c) != 0) {
        nng_slot_free(nb, slot);
        nng_stream_free(st);
    } else {
        atomic_fetch_add(&nb->nconns, 1);
        nng_slot_set(nb, slot, c);
        /* before the first read: the handshake happens on it */
        if (bx(nb)->verifier && needs_tls(le->url))
            tw_nng_tls_watch(st, peer_cb, nb, ((uint64_t)gen << 32) | slot);
        nconn_begin(c);
    }
    accept_start(le);
}

static bool is_loopback_host(const char *url)
{
    const char *h = strstr(url, "://");
    if (!h) return false;
    h += 3;
    return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
           strncmp(h, "[::1]:", 6) == 0;
}

static int check_url(const char *url)
{
    if (strncmp(url, "tls+tcp://", 10) == 0 || strncmp(url, "wss://", 6) == 0 ||
        strncmp(url, "ipc://", 6) == 0)
        return 0;
    if (strncmp(url, "tcp://", 6) == 0 || strncmp(url, "ws://", 5) == 0) {
        if (is_loopback_host(url)) return 0;
        tw_log_error(MOD, "%s: plain tcp:// and ws:// are allowed on loopback only", url);
        return TW_EINVAL;
    }
    tw_log_error(MOD, "%s: unsupported scheme (tls+tcp, tcp, ipc, ws, wss)", url);
    return TW_EINVAL;
}

/* Reads a whole PEM file (at most 64 KiB) into a new string. */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        tw_log_error(MOD, "%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (buf) buf[n] = 0;
    return buf;
}

/*
 * Client certificates: asked for, not required, checked against the
 * runtime's CA (ca.pem). Without a readable CA the listeners do server
 * authentication only.
 */
static void tls_client_auth(nng_bind *nb)
{
    char ca[1200];
    snprintf(ca, sizeof ca, "%s/tls/ca.pem", nb->data_dir);
    char *pem = read_pem(ca);
    int rv = pem ? nng_tls_config_ca_chain(nb->tls, pem, NULL) : NNG_ENOENT;
    free(pem);
    if (rv == 0) rv = nng_tls_config_auth_mode(nb->tls, NNG_TLS_AUTH_MODE_OPTIONAL);
    if (rv == 0 && tw_tls_verifier_new(ca, &bx(nb)->verifier) != 0) rv = NNG_ECRYPTO;
    if (rv != 0) {
        tw_log_warn(MOD, "%s: %s: client certificates are not accepted", ca, nng_strerror(rv));
        nng_tls_config_auth_mode(nb->tls, NNG_TLS_AUTH_MODE_NONE);
    }
}

/* The server certificate and key that twind's main created (tw_tls_ensure),
 * on the GnuTLS engine (nng_tls.h), which lets client certificates name
 * their client. */
static int tls_load(nng_bind *nb)
{
    char cert[1200], key[1200];
    snprintf(cert, sizeof cert, "%s/tls/server.pem", nb->data_dir);
    snprintf(key, sizeof key, "%s/tls/server.key", nb->data_dir);
    if (tw_nng_tls_engine_use() != 0) return TW_ECRYPTO;
    char *cp = read_pem(cert), *kp = cp ? read_pem(key) : NULL;
    int rv = NNG_ENOMEM;
    if (cp && kp && (rv = nng_tls_config_alloc(&nb->tls, NNG_TLS_MODE_SERVER)) == 0)
        rv = nng_tls_config_own_cert(nb->tls, cp, kp, NULL);
    free(cp);
    if (kp) sodium_memzero(kp, 65536);
    free(kp);
    if (rv != 0) {
        tw_log_error(MOD, "TLS certificate %s: %s", cert, nng_strerror(rv));
        return TW_ECRYPTO;
    }
    tls_client_auth(nb);
    return 0;
}

void nng_listener_set_bound(nng_listener_ent *le, int port)
{
    snprintf(le->bound, sizeof le->bound, "%s", le->url);
    if (port <= 0) return;
    /* replace the port of the URL by the bound one */
    const char *hs = strstr(le->url, "://") + 3;
    const char *colon = hs[0] == '[' ? strstr(hs, "]:") : strchr(hs, ':');
    if (colon && hs[0] == '[') colon++;
    if (colon) {
        const char *rest = colon + 1;
        while (*rest >= '0' && *rest <= '9')
            rest++;
        snprintf(le->bound, sizeof le->bound, "%.*s:%d%s", (int)(colon - le->url), le->url, port,
                 rest);
    }
}

static int listener_open(nng_bind *nb, nng_listener_ent *le)
{
    if (nb->dx && nng_direct_url(le->url)) return nng_direct_listen(nb->dx, le);
    int rv = nng_stream_listener_alloc(&le->l, le->url);
    if (rv != 0) {
        tw_log_error(MOD, "%s: %s", le->url, nng_strerror(rv));
        return TW_EINVAL;
    }
    if (needs_tls(le->url)) {
        if (!nb->tls && tls_load(nb) != 0) return TW_ECRYPTO;
        rv = nng_stream_listener_set_ptr(le->l, NNG_OPT_TLS_CONFIG, nb->tls);
        if (rv != 0) {
            tw_log_error(MOD, "%s: TLS: %s", le->url, nng_strerror(rv));
            return TW_ECRYPTO;
        }
    }
    /* one envelope must not wait for an ACK (Nagle + delayed ACK = 40 ms) */
    nng_stream_listener_set_bool(le->l, NNG_OPT_TCP_NODELAY, true);
    if (strncmp(le->url, "ws", 2) == 0) {
        /* envelopes, not SP messages: bound the websocket frame like a body */
        nng_stream_listener_set_size(le->l, NNG_OPT_WS_RECVMAXFRAME, nb->lim.max_bytes);
        nng_stream_listener_set_size(le->l, NNG_OPT_RECVMAXSZ, nb->lim.max_bytes + 4096);
    }
    if ((rv = nng_stream_listener_listen(le->l)) != 0) {
        tw_log_error(MOD, "cannot listen on %s: %s", le->url, nng_strerror(rv));
        return TW_EIO;
    }
    int port = 0;
    if (nng_stream_listener_get_int(le->l, NNG_OPT_TCP_BOUND_PORT, &port) != 0) port = 0;
    nng_listener_set_bound(le, port);
    tw_log_info(MOD, "listening on %s", le->bound);
    if (nng_aio_alloc(&le->accept_aio, accept_cb, le) != 0 ||
        nng_aio_alloc(&le->retry_aio, retry_cb, le) != 0)
        return TW_ENOMEM;
    accept_start(le);
    return 0;
}

static void write_url_file(nng_bind *nb)
{
    char path[1100], tmp[1110];
    snprintf(path, sizeof path, "%s/nng.url", nb->data_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        tw_log_warn(MOD, "%s: %s", tmp, strerror(errno));
        return;
    }
    for (int i = 0; i < nb->nls; i++)
        fprintf(f, "%s\n", nb->ls[i].bound);
    if (fclose(f) != 0 || rename(tmp, path) != 0) tw_log_warn(MOD, "%s: %s", path, strerror(errno));
}

/* ---- ops -------------------------------------------------------------- */

static int op_start(tw_binding *b)
{
    nng_bind *nb = b->impl;
    atomic_store(&nb->stopping, false);
    nb->hk_stop = false;
    if (pthread_create(&nb->hk, NULL, hk_main, nb) != 0) return TW_ENOMEM;
    nb->hk_started = true;
    bool any_direct = false;
    for (int i = 0; i < nb->nls; i++)
        any_direct |= nb->direct && nng_direct_url(nb->ls[i].url);
    if (any_direct && !nb->dx) {
        int rc = nng_direct_new(nb, nb->io_threads, nb->poll_spin_us, &nb->dx);
        if (rc == 0) rc = nng_direct_start(nb->dx);
        if (rc != 0) return rc;
    }
    for (int i = 0; i < nb->nls; i++) {
        int rc = listener_open(nb, &nb->ls[i]);
        if (rc != 0) return rc;
    }
    write_url_file(nb);
    return 0;
}

static void op_stop(tw_binding *b)
{
    nng_bind *nb = b->impl;
    atomic_store(&nb->stopping, true);
    for (int i = 0; i < nb->nls; i++) {
        nng_listener_ent *le = &nb->ls[i];
        if (le->l) nng_stream_listener_close(le->l);
        if (le->accept_aio) nng_aio_stop(le->accept_aio);
        if (le->retry_aio) nng_aio_stop(le->retry_aio);
    }
    if (nb->dx) nng_direct_close_listeners(nb->dx);
    /* close every connection, then wait for their callbacks to finish */
    for (;;) {
        nconn *c = NULL;
        pthread_rwlock_rdlock(&nb->slots_lock);
        for (int i = 0; i < nb->max_conns && !c; i++)
            if (nb->slots[i].c) c = nconn_ref(nb->slots[i].c);
        pthread_rwlock_unlock(&nb->slots_lock);
        if (!c) break;
        nconn_close(c, NULL);
        nconn_unref(c);
    }
    /* their callbacks drop the last references; the housekeeping thread
     * frees them (bounded wait: a wedged peer must not hang shutdown) */
    for (int i = 0; i < 500 && atomic_load(&nb->nlive) > 0; i++) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&nb->nlive) > 0)
        tw_log_warn(MOD, "%d connections still busy at stop", atomic_load(&nb->nlive));
    if (nb->dx) nng_direct_stop(nb->dx);
    if (nb->hk_started) {
        pthread_mutex_lock(&nb->hk_mtx);
        nb->hk_stop = true;
        pthread_cond_signal(&nb->hk_cond);
        pthread_mutex_unlock(&nb->hk_mtx);
        pthread_join(nb->hk, NULL);
        nb->hk_started = false;
    }
}

static int op_send(tw_binding *b, tw_conn *tc, tw_msg *m)
{
    nng_bind *nb = b->impl;
    nconn *c = lookup(nb, tc);
    if (!c) return TW_ECLOSED;
    int rc = nconn_send(c, m, true);
    nconn_unref(c);
    return rc;
}

static void op_close_conn(tw_binding *b, tw_conn *tc)
{
    nng_bind *nb = b->impl;
    nconn *c = lookup(nb, tc);
    if (!c) {
        tw_conn_close(tc);
        return;
    }
    nconn_close(c, "session closed");
    nconn_unref(c);
}

/* Appends one form per listener with these ops to the affordance's forms. */
static int add_form(nng_bind *nb, json_t *obj, const char *const *ops, int nops)
{
    json_t *forms = json_object_get(obj, "forms");
    if (!json_is_array(forms)) {
        forms = json_array();
        if (!forms || json_object_set_new(obj, "forms", forms) != 0) return TW_ENOMEM;
    }
    for (int i = 0; i < nb->nls; i++) {
        json_t *op = json_array();
        for (int k = 0; op && k < nops; k++)
            json_array_append_new(op, json_string(ops[k]));
        json_t *f = op ? json_pack("{s:s, s:s, s:s, s:o}", "href", nb->ls[i].bound, "contentType",
                                   "application/json", "subprotocol", "twind-nng", "op", op)
                       : NULL;
        if (!f || json_array_append_new(forms, f) != 0) return TW_ENOMEM;
    }
    return 0;
}

/*
 * The nng forms of a twin TD: every listener URL, with the operations TD 1.1
 * allows at each level. The envelope itself names thing and affordance, so
 * all forms of one listener share its href.
 */
static int op_add_forms(tw_binding *b, json_t *twin_td)
{
    nng_bind *nb = b->impl;
    static const char *const thing_ops[] = {"readallproperties",    "readmultipleproperties",
                                            "observeallproperties", "unobserveallproperties",
                                            "subscribeallevents",   "unsubscribeallevents",
                                            "queryallactions"};
    static const char *const prop_ops[] = {"readproperty", "observeproperty", "unobserveproperty",
                                           "writeproperty"};
    static const char *const action_ops[] = {"invokeaction", "queryaction", "cancelaction"};
    static const char *const event_ops[] = {"subscribeevent", "unsubscribeevent"};
    int rc = add_form(nb, twin_td, thing_ops, 7);
    const char *k;
    json_t *aff;
    json_object_foreach(json_object_get(twin_td, "properties"), k, aff)
    {
        if (!rc && json_is_object(aff))
            rc =
                add_form(nb, aff, prop_ops, json_is_true(json_object_get(aff, "readOnly")) ? 3 : 4);
    }
    json_object_foreach(json_object_get(twin_td, "actions"), k, aff)
    {
        if (!rc && json_is_object(aff)) rc = add_form(nb, aff, action_ops, 3);
    }
    json_object_foreach(json_object_get(twin_td, "events"), k, aff)
    {
        if (!rc && json_is_object(aff)) rc = add_form(nb, aff, event_ops, 2);
    }
    return rc;
}

static void op_destroy(tw_binding *b)
{
    nng_bind *nb = b->impl;
    if (!nb) return;
    reap_all(nb);
    nng_direct_free(nb->dx);
    for (int i = 0; i < nb->nls; i++) {
        nng_listener_ent *le = &nb->ls[i];
        if (le->fd >= 0) close(le->fd);
        if (le->accept_aio) nng_aio_free(le->accept_aio);
        if (le->retry_aio) nng_aio_free(le->retry_aio);
        if (le->l) nng_stream_listener_free(le->l);
    }
    if (nb->tls) nng_tls_config_free(nb->tls);
    if (bx(nb)->verifier) tw_tls_verifier_free(bx(nb)->verifier);
    pthread_rwlock_destroy(&nb->slots_lock);
    pthread_mutex_destroy(&nb->hk_mtx);
    pthread_cond_destroy(&nb->hk_cond);
    free(nb->ls);
    free(nb->slots);
    free(nb->free_slots);
    free(nb);
    b->impl = NULL;
}

static const tw_binding_ops nng_ops = {
    .name = "nng",
    .start = op_start,
    .stop = op_stop,
    .send = op_send,
    .close_conn = op_close_conn,
    .add_forms = op_add_forms,
    .destroy = op_destroy,
};

/* ---- creation --------------------------------------------------------- */

static int get_int(json_t *section, const char *key, int64_t def, int64_t min, int64_t max,
                   int64_t *out)
{
    json_t *v = section ? json_object_get(section, key) : NULL;
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        tw_log_error(MOD, "config nng.%s: an integer in [%lld, %lld] is expected", key,
                     (long long)min, (long long)max);
        return TW_EINVAL;
    }
    *out = json_integer_value(v);
    return 0;
}

/* One poller below 4 CPUs: a round trip between two connections then
 * meets one poller, which a spin keeps awake (nng_direct.c, "Busy
 * polling"); on 2 cores a second poller gained no events/s and lost the
 * spin's gain. Two from 4 CPUs up. */
static int64_t default_io_threads(void)
{
    return nng_usable_cpus() >= 4 ? 2 : 1;
}

int tw_nng_binding_new(tw_runtime *rt, json_t *section, tw_binding **out)
{
    if (section && !json_is_object(section)) {
        tw_log_error(MOD, "config nng: an object is expected");
        return TW_EINVAL;
    }
    const tw_config *cfg = tw_runtime_config(rt);
    int64_t max_body = cfg && cfg->max_body ? (int64_t)cfg->max_body : TW_MSG_MAX_BYTES_DEFAULT;
    /* the bytes bound holds a couple of the largest envelopes at least */
    int64_t sqb_min = 2 * max_body;
    int64_t sqb_def = DEFAULT_SEND_QUEUE_BYTES > sqb_min ? DEFAULT_SEND_QUEUE_BYTES : sqb_min;
    int64_t sq, sqb, mc, lt, iot, spin, wt;
    if (get_int(section, "send_queue", DEFAULT_SEND_QUEUE, 16, 1 << 24, &sq) ||
        get_int(section, "send_queue_bytes", sqb_def, sqb_min, (int64_t)1 << 40, &sqb) ||
        get_int(section, "write_timeout_ms", DEFAULT_WRITE_TIMEOUT_MS, 100, 3600000, &wt) ||
        get_int(section, "max_conns", DEFAULT_MAX_CONNS, 1, 1 << 20, &mc) ||
        get_int(section, "login_timeout_ms", DEFAULT_LOGIN_TIMEOUT_MS, 100, 3600000, &lt) ||
        get_int(section, "io_threads", default_io_threads(), 1, 64, &iot) ||
        get_int(section, "poll_spin_us", DEFAULT_POLL_SPIN_US, 0, 10000, &spin))
        return TW_EINVAL;
    json_t *direct = section ? json_object_get(section, "direct") : NULL;
    if (direct && !json_is_boolean(direct)) {
        tw_log_error(MOD, "config nng.direct: true or false is expected");
        return TW_EINVAL;
    }
    json_t *listen = section ? json_object_get(section, "listen") : NULL;
    if (listen && json_is_string(listen)) {
        /* a single URL is accepted as well as an array */
    } else if (listen && (!json_is_array(listen) || json_array_size(listen) > 16)) {
        tw_log_error(MOD, "config nng.listen: an array of at most 16 URLs is expected");
        return TW_EINVAL;
    }
    const tw_config *c0 = tw_runtime_config(rt);
    if (c0 && sq < 2 * (int64_t)c0->drain_window)
        tw_log_warn(MOD,
                    "nng.send_queue %lld is below twice the drain window (%d): an agent "
                    "reconnecting to a full queue may be cut off as a slow consumer",
                    (long long)sq, c0->drain_window);
    nng_bindx *x = calloc(1, sizeof *x);
    if (!x) return TW_ENOMEM;
    nng_bind *nb = &x->nb;
    nb->rt = rt;
    nb->send_queue = (size_t)sq;
    nb->send_queue_bytes = (size_t)sqb;
    nb->write_timeout_ms = wt;
    nb->max_conns = (int)mc;
    nb->login_timeout_ms = lt;
    nb->io_threads = (int)iot;
    nb->poll_spin_us = (int)spin;
    nb->direct = !direct || json_is_true(direct);
    nb->lim.max_bytes = (size_t)max_body;
    nb->lim.max_depth = cfg && cfg->max_depth ? cfg->max_depth : TW_MSG_MAX_DEPTH_DEFAULT;
    snprintf(nb->data_dir, sizeof nb->data_dir, "%s", cfg ? cfg->data_dir : ".");
    pthread_rwlock_init(&nb->slots_lock, NULL);
    pthread_mutex_init(&nb->hk_mtx, NULL);
    pthread_cond_init(&nb->hk_cond, NULL);
    atomic_init(&nb->nconns, 0);
    atomic_init(&nb->nlive, 0);
    atomic_init(&nb->stopping, false);

    size_t nurls = !listen ? 1 : json_is_string(listen) ? 1 : json_array_size(listen);
    nb->ls = calloc(nurls ? nurls : 1, sizeof *nb->ls);
    nb->slots = calloc((size_t)nb->max_conns, sizeof *nb->slots);
    nb->free_slots = calloc((size_t)nb->max_conns, sizeof *nb->free_slots);
    int rc = 0;
    if (!nb->ls || !nb->slots || !nb->free_slots) {
        rc = TW_ENOMEM;
        goto fail;
    }
    for (int i = nb->max_conns - 1; i >= 0; i--)
        nb->free_slots[nb->nfree++] = (uint32_t)i;
    for (size_t i = 0; i < nurls; i++) {
        const char *url = !listen                  ? TW_NNG_DEFAULT_URL
                          : json_is_string(listen) ? json_string_value(listen)
                                                   : json_string_value(json_array_get(listen, i));
        if (!url || strlen(url) >= sizeof nb->ls[i].url) {
            tw_log_error(MOD, "config nng.listen[%zu]: a URL string is expected", i);
            rc = TW_EINVAL;
            goto fail;
        }
        if ((rc = check_url(url)) != 0) goto fail;
        snprintf(nb->ls[i].url, sizeof nb->ls[i].url, "%s", url);
        snprintf(nb->ls[i].bound, sizeof nb->ls[i].bound, "%s", url);
        nb->ls[i].nb = nb;
        nb->ls[i].fd = -1;
        nb->nls++;
    }
    if ((rc = tw_runtime_add_binding(rt, &nng_ops, nb, &nb->b)) != 0) goto fail;
    if (out) *out = nb->b;
    return 0;
fail:
    pthread_rwlock_destroy(&nb->slots_lock);
    pthread_mutex_destroy(&nb->hk_mtx);
    pthread_cond_destroy(&nb->hk_cond);
    free(nb->ls);
    free(nb->slots);
    free(nb->free_slots);
    free(nb);
    return rc;
}

json_t *tw_nng_binding_urls(tw_binding *b)
{
    nng_bind *nb = b->impl;
    json_t *a = json_array();
    for (int i = 0; a && i < nb->nls; i++)
        json_array_append_new(a, json_string(nb->ls[i].bound));
    return a;
}
